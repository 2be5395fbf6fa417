"""The device's MQTT client: status, telemetry, events and commands, with store-and-forward.

::

    client = TelemetryClient(TelemetryConfig.load("telemetry.yaml"), command_handler=handle)
    client.start()                          # connects in the background; the broker may be down
    client.publish_event(Event(label="happy", probabilities=probs, latency_ms=4.1))
    client.publish_telemetry(Telemetry(interval_s=60, inferences=120, ...))
    client.close(flush_timeout=5)           # on SIGTERM: flush, publish "offline", disconnect

Delivery
--------
Every event, error, telemetry report and command ack is written to the :class:`~.outbox.Outbox`
(SQLite on disk) before anything else happens, and deleted only when the broker has it: for QoS 1
when its PUBACK arrives (paho's ``on_publish`` with the message id; not a PUBACK saying that nobody
subscribes, see "No subscriber" below), for QoS 0 when paho has
written it to the socket. A background thread (the pump) hands rows to paho in ``seq`` order, at
most ``max_inflight`` at a time, whenever the client is connected; after a reconnect it goes on
where it stopped (paho re-sends its unacknowledged QoS 1 messages itself), and after a restart it
starts from the oldest row on disk. Delivery is at-least-once: a crash between the broker's ack and
the delete means one duplicate, never a loss. With ``outbox_sync: full`` (the default) that holds
for a power cut too; with ``normal`` only for a crash of the process (see :mod:`.outbox`).

Status is state, not a stream, so it skips the outbox: on every connect the client publishes a
retained ``online`` status (ahead of any backlog) and registers a retained ``offline`` last will,
which the broker publishes if the connection dies; :meth:`TelemetryClient.close` publishes
``offline`` with reason ``"shutdown"`` itself before disconnecting cleanly.

Commands arrive on ``.../cmd``; a worker thread runs the handler one command at a time and puts a
``command_ack`` on ``.../cmd/ack`` into the outbox (parsing and acks: :mod:`.commands`). A
command over ``max_command_bytes`` or nested too deeply is refused before it is parsed; a handler
that raises, an invalid command or a missing handler give ``ok: false`` acks, and whatever else
goes wrong with one message is caught and acked on its own. The pump and the command worker run
under a :class:`~edgewise.edge.supervisor.Supervisor`: a worker that dies anyway is restarted with
backoff, and the restarts are reported in every telemetry payload (``thread_restarts``).

The client speaks MQTT v5 and, with ``protocol: auto``, falls back to 3.1.1 when the broker
refuses v5. Reconnects back off exponentially from ``reconnect_min_s`` to ``reconnect_max_s``. A
broker that cannot be reached is logged once as a warning (host, port and the reason), then again
only after 2, 4, 8... failed attempts or every 10 minutes, and an info line says when the
connection is made and after how many attempts.

No subscriber
-------------
An MQTT 5 broker that has nobody to deliver a QoS 1 message to still acknowledges it, with PUBACK
reason code 0x10 ("No matching subscribers"), and drops it. That happens before the cloud's ingest
worker first subscribes, and after a broker restart: Mosquitto 2.0.11 restores the worker's
persistent session but not its ``$share/...`` subscription until the worker subscribes again. So a
PUBACK 0x10 is not a delivery: the row stays in the outbox and its *topic* is put on hold. Rows on a
held topic wait behind the held one (nothing more of that topic is sent); other topics go on as
before. After ``no_subscriber_retry_min_s`` (1 s) the pump sends the topic's oldest row alone as a
probe: a 0x10 again doubles the wait, up to ``no_subscriber_retry_max_s`` (30 s); a success (any
row of the topic acknowledged with 0x00) ends the hold, and the held rows go out again in ``seq``
order. While nobody subscribes a topic costs one message per wait, never a busy loop, and its rows
stay in the outbox under its usual limits (a full outbox drops the oldest rows by its policy and
counts them in ``dropped``). Telemetry reports the ``outbox_depth``;
:attr:`TelemetryClient.held_topics` names the topics on hold; the log says when a hold begins (a
warning), after 2, 4, 8... refused probes or every 10 minutes, and when it ends (info). Order: rows
of a topic that were already in flight when the first 0x10 came back are not called back, so if a
subscriber appears just then some of them may arrive before held ones that came first; nothing is
lost, and the cloud dedupes by ``id``.

A PUBACK 0x97 ("Quota exceeded", a limit that passes) is treated the same way. Any other failure
code (0x80 and up: 0x87 not authorized, 0x90 topic name invalid, 0x95 packet too large, 0x99
payload format invalid...) means the broker will never take that message: it is logged as a
warning and deleted (not counted in ``dropped``, which counts the outbox's own evictions), and the
rows after it go on. QoS 0 messages get no PUBACK, and MQTT 3.1.1 has no reason codes: for those
nothing changes. The hold is kept in memory only: after a restart the outbox is sent from its
oldest row and a topic without subscribers is found out again. :meth:`~TelemetryClient.flush` and
:meth:`~TelemetryClient.close` do not wait for them when nothing else is left (a daemon with no
cloud listening still stops at once); what is still held stays on disk for the next start.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from pydantic import ValidationError

from edgewise.config import format_validation_error
from edgewise.edge.supervisor import Supervisor
from edgewise.edge.telemetry.commands import CommandHandler, CommandRunner
from edgewise.edge.telemetry.config import TelemetryConfig
from edgewise.edge.telemetry.login import apply_login, send_immediately
from edgewise.edge.telemetry.outbox import Outbox, OutboxRow
from edgewise.edge.telemetry.schema import (
    CommandAck,
    ErrorEvent,
    Event,
    ModelRef,
    Payload,
    PayloadError,
    Status,
    Telemetry,
    encode,
)
from edgewise.edge.telemetry.topics import Topics
from edgewise.errors import EdgewiseError

log = logging.getLogger(__name__)

EVENT_QOS = 1
STATUS_QOS = 1
CMD_QOS = 1
_UNSUPPORTED_PROTOCOL = 132  # MQTT v5 reason code; paho maps a v3 CONNACK "refused: protocol" to it
_AUTH_REFUSED = (134, 135)  # bad user name or password, not authorized (v3 codes 4 and 5 map here)
_RETRY_LOG_EVERY_S = 600.0  # during an outage, a line at least this often (and after 2, 4, 8... tries)
# PUBACK reason codes that leave the message in the outbox and put its topic on hold: the broker
# took it but had no subscriber for it (0x10), or is over a quota that passes (0x97).
_HOLD_CODES = (0x10, 0x97)
_PEEK_PAGE = 256  # outbox rows read at a time when many are skipped (held topics, in flight)
PUMP, COMMANDS = "telemetry-pump", "telemetry-commands"  # worker names, as in ``thread_restarts``


class TelemetryError(EdgewiseError):
    """The telemetry client cannot do what was asked (closed, not started)."""


class BrokerRefusedError(TelemetryError):
    """The broker refused the connection (bad credentials, not authorized)."""


# --------------------------------------------------------------------------------------------------
# Connection attempts


class _Session(mqtt.Client):
    """paho's client, keeping why the last connection attempt failed (paho's ``on_connect_fail``
    callback is not told)."""

    last_error: OSError | None = None

    def reconnect(self) -> MQTTErrorCode:
        try:
            return super().reconnect()
        except OSError as exc:
            self.last_error = exc
            raise


class _Outage:
    """Logs failed connection attempts without flooding: the first one as a warning with the
    broker's address and the reason, then after 2, 4, 8... attempts or every 10 minutes, and how
    long it lasted once connected."""

    def __init__(self, where: str, min_s: float, max_s: float) -> None:
        self.where, self.min_s, self.max_s = where, min_s, max_s
        self.attempts = 0
        self._first = self._last_line = 0.0

    def failed(self, error: BaseException | None) -> None:
        now = time.monotonic()
        self.attempts += 1
        reason = _reason(error)
        delay = min(self.min_s * 2 ** (self.attempts - 1), self.max_s)  # paho's backoff, as it waits
        if self.attempts == 1:
            self._first = self._last_line = now
            log.warning(
                "telemetry: cannot connect to the MQTT broker at %s: %s; retrying with backoff (%g s up to %g s)",
                self.where,
                reason,
                self.min_s,
                self.max_s,
            )
        elif self.attempts & (self.attempts - 1) == 0 or now - self._last_line >= _RETRY_LOG_EVERY_S:
            self._last_line = now
            log.warning(
                "telemetry: still no connection to %s after %d attempts in %.0f s (%s); next attempt in %.1f s",
                self.where,
                self.attempts,
                now - self._first,
                reason,
                delay,
            )

    def connected(self) -> str:
        """`` after N failed attempts in T s`` when there were any (and start counting afresh)."""
        if not self.attempts:
            return ""
        note = f" after {self.attempts} failed attempt(s) in {time.monotonic() - self._first:.0f} s"
        self.attempts = 0
        return note


@dataclass
class _Hold:
    """A topic the broker had no subscriber for: its rows wait in the outbox, one probe at a time."""

    first: int  # the lowest seq held or skipped on this topic: sending resumes from here
    delay: float  # the wait before the next probe (doubles after each one the broker refuses)
    retry_at: float
    since: float
    reason: str
    probes: int = 0
    probe_mid: int | None = None  # the probe paho holds now
    last_line: float = 0.0


def _reason(error: BaseException | None) -> str:
    if error is None:
        return "connection failed"
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return str(error) or type(error).__name__


# --------------------------------------------------------------------------------------------------
# Client


class TelemetryClient:
    """MQTT telemetry for one device (see the module docstring for delivery guarantees).

    The outbox is opened at construction (so a bad outbox file fails early); :meth:`start`
    connects in the background. Publishing before :meth:`start` or while the broker is away only
    stores the message; it goes out once connected. The pump and the command worker run under
    ``supervisor`` (a process shares one, so that telemetry reports every restart) or the
    client's own.
    """

    def __init__(
        self,
        config: TelemetryConfig | Mapping[str, Any],
        *,
        command_handler: CommandHandler | None = None,
        model: ModelRef | Mapping[str, str] | None = None,
        supervisor: Supervisor | None = None,
    ) -> None:
        self.config = config if isinstance(config, TelemetryConfig) else TelemetryConfig.load(config)
        self.topics = Topics(self.config.fleet, self.config.device)
        self.command_handler = command_handler
        self._model = ModelRef.model_validate(model) if model is not None else None
        self._started_at = time.monotonic()
        self.outbox = Outbox(
            self.config.outbox_path,
            max_rows=self.config.outbox_max_rows,
            max_bytes=self.config.outbox_max_bytes,
            synchronous=self.config.outbox_sync,
        )
        self._protocol = (
            MQTTProtocolVersion.MQTTv311 if self.config.protocol == "3.1.1" else MQTTProtocolVersion.MQTTv5
        )
        self._mqtt: mqtt.Client | None = None
        self._connected = threading.Event()  # CONNACK received: the pump may publish
        self._ready = threading.Event()  # and the command subscription is acknowledged
        self._cmd_sub_mid: int | None = None
        self._wake = threading.Event()
        self._acks: queue.SimpleQueue = queue.SimpleQueue()  # (mid, reason_code) from on_publish
        self._delivered = threading.Condition()
        self._telemetry_lock = threading.Lock()
        # Pump-thread state: which outbox rows paho holds, by message id.
        self._handed: dict[int, tuple[int, str]] = {}  # mid -> (seq, topic)
        self._handed_seqs: set[int] = set()
        self._qos0: dict[int, tuple[int, mqtt.MQTTMessageInfo]] = {}  # seq -> (mid, info)
        self._cursor = 0  # highest seq handed to paho (or skipped on a held topic), in order
        self._holds: dict[str, _Hold] = {}  # topics the broker had no subscriber for (PUBACK 0x10)
        self._fallback_requested = False
        self._refused: BrokerRefusedError | None = None
        self._last_refusal: str | None = None
        self._commands: queue.Queue = queue.Queue()
        self._runner = CommandRunner(source=self.topics.cmd, max_bytes=self.config.max_command_bytes)
        self._own_supervisor = supervisor is None
        self.supervisor = supervisor if supervisor is not None else Supervisor()
        self._outage = _Outage(
            f"{self.config.host}:{self.config.port}", self.config.reconnect_min_s, self.config.reconnect_max_s
        )
        self._pump_thread: threading.Thread | None = None
        self._command_thread: threading.Thread | None = None
        self._stop_pump = False
        self._closing = False
        self._closed = False
        self._close_result = False

    # ----------------------------------------------------------------------------------------------
    # Life cycle

    def start(self) -> TelemetryClient:
        """Connect in the background (retrying with backoff) and start delivering the outbox."""
        self._check_open()
        if self._pump_thread is not None:
            return self
        self._mqtt = self._make_client()
        self._mqtt.connect_async(self.config.host, self.config.port, keepalive=self.config.keepalive_s)
        self._mqtt.loop_start()
        self._pump_thread = self.supervisor.spawn(PUMP, self._pump)
        self._command_thread = self.supervisor.spawn(COMMANDS, self._command_loop)
        return self

    def wait_connected(self, timeout: float) -> bool:
        """True once connected, with the online status published and commands subscribed (the
        broker acknowledged the subscription); False after ``timeout``. Raises BrokerRefusedError
        if the broker refused the credentials (the client keeps retrying in the background)."""
        deadline = time.monotonic() + timeout
        while True:
            if self._ready.is_set():
                return True
            if self._refused is not None:
                raise self._refused
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self._ready.wait(min(remaining, 0.05))

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    @property
    def held_topics(self) -> tuple[str, ...]:
        """Topics on hold: the broker had no subscriber for their last message (PUBACK 0x10, or a
        quota, 0x97), so their messages wait in the outbox (see the module docstring)."""
        return tuple(sorted(tuple(self._holds)))

    @property
    def protocol(self) -> str:
        """The MQTT version in use (or being tried): ``"5"`` or ``"3.1.1"``."""
        return "5" if self._protocol == MQTTProtocolVersion.MQTTv5 else "3.1.1"

    def flush(self, timeout: float) -> bool:
        """Wait until the outbox is empty (everything acked); False if ``timeout`` passed first, or
        at once when every row left is on a topic nobody subscribes to (they wait for a subscriber
        on disk, see the module docstring: a daemon with no cloud listening still stops promptly)."""
        deadline = time.monotonic() + timeout
        self._wake.set()
        with self._delivered:
            while self.outbox.depth() > 0:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                if self._holds and self.outbox.topics() <= set(tuple(self._holds)):
                    return False
                self._delivered.wait(min(remaining, 0.1))
        return True

    def close(self, flush_timeout: float = 5.0) -> bool:
        """Shut down cleanly: finish the running command (later ones get ``ok: false`` acks), flush
        the outbox for up to ``flush_timeout`` s, publish a retained ``offline`` status, disconnect.

        Returns True if the outbox was empty at the end; what is left stays on disk for the next
        start. Safe to call twice. On SIGTERM, let the signal handler only set a flag or an Event
        and call this from the main loop: a handler that calls it while its thread is inside a
        ``publish_*`` call would wait on a lock that thread holds.
        """
        if self._closed:
            return self._close_result
        deadline = time.monotonic() + flush_timeout
        self._closing = True
        if self._command_thread is not None:
            self._commands.put(None)
            self.supervisor.join(COMMANDS, max(0.0, deadline - time.monotonic()))
        if self._mqtt is not None:
            self.flush(max(0.0, deadline - time.monotonic()))
        if self._mqtt is not None:
            if self._connected.is_set():
                info = self._mqtt.publish(
                    self.topics.status, self._status("offline", "shutdown"), qos=STATUS_QOS, retain=True
                )
                self._wait_published(info, max(1.0, deadline - time.monotonic()))
            self._mqtt.disconnect()
            self._mqtt.loop_stop()
            self._stop_pump = True
            self._wake.set()
            self.supervisor.join(PUMP, 5)
        if self._own_supervisor:
            self.supervisor.stop(timeout=1)
        self._ready.clear()
        self._connected.clear()
        left = self.outbox.depth()
        if left:
            log.info(
                "telemetry: %d message(s) left in the outbox %s for the next start", left, self.outbox.path
            )
        self.outbox.close()
        self._closed = True
        self._close_result = left == 0
        return self._close_result

    def __enter__(self) -> TelemetryClient:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ----------------------------------------------------------------------------------------------
    # Publishing

    def publish_event(self, event: Event | None = None, **fields: Any) -> Event:
        """Store an inference result for delivery on ``.../events`` (QoS 1). ``model`` defaults to
        the deployed model given to :meth:`set_status`."""
        event = _build(Event, event, fields)
        if event.model is None and self._model is not None:
            event = event.model_copy(update={"model": self._model})
        self._put(self.topics.events, event, EVENT_QOS, "event")
        return event

    def publish_error(self, error: ErrorEvent | str, **fields: Any) -> ErrorEvent:
        """Store an error report for ``.../events`` (QoS 1): ``publish_error("mic gone", code="audio")``."""
        if isinstance(error, str):
            error = _build(ErrorEvent, None, {"message": error, **fields})
        else:
            error = _build(ErrorEvent, error, fields)
        if error.model is None and self._model is not None:
            error = error.model_copy(update={"model": self._model})
        self._put(self.topics.events, error, EVENT_QOS, "error")
        return error

    def publish_telemetry(self, telemetry: Telemetry | None = None, **fields: Any) -> Telemetry:
        """Store a telemetry report for ``.../telemetry`` (``telemetry_qos``). The client fills in
        ``outbox_depth``, ``dropped`` (messages the full outbox dropped since the last report) and
        ``thread_restarts`` (from the supervisor)."""
        self._check_open()
        telemetry = _build(Telemetry, telemetry, fields)
        with self._telemetry_lock:  # two reports at once must not both claim the same drops
            drops = self.outbox.unreported_drops()
            update = {
                "outbox_depth": self.outbox.depth(),
                "dropped": drops,
                "thread_restarts": self.supervisor.restarts(),
            }
            telemetry = telemetry.model_copy(update=update)
            self._put(self.topics.telemetry, telemetry, self.config.telemetry_qos, "telemetry")
            self.outbox.mark_reported(drops)
        return telemetry

    def set_status(self, *, model: ModelRef | Mapping[str, str] | None) -> Status:
        """Record the deployed model and, when connected, publish the retained ``online`` status."""
        self._check_open()
        self._model = ModelRef.model_validate(model) if model is not None else None
        payload = self._status("online")
        if self._mqtt is not None and self._connected.is_set():
            self._mqtt.publish(self.topics.status, payload, qos=STATUS_QOS, retain=True)
        return Status.model_validate_json(payload)

    @property
    def model(self) -> ModelRef | None:
        return self._model

    def _put(self, topic: str, payload: Payload, qos: int, kind: str) -> int:
        self._check_open()
        seq = self.outbox.put(topic, encode(payload), qos=qos, retain=False, kind=kind)
        self._wake.set()
        return seq

    def _check_open(self) -> None:
        if self._closed or (self._closing and threading.current_thread() is not self._command_thread):
            raise TelemetryError("the telemetry client is closed")

    def _status(self, state: str, reason: str | None = None) -> bytes:
        uptime = time.monotonic() - self._started_at
        return encode(Status(state=state, reason=reason, model=self._model, uptime_s=round(uptime, 3)))

    # ----------------------------------------------------------------------------------------------
    # paho client and callbacks (these run on paho's network thread and must never raise)

    def _make_client(self) -> _Session:
        cfg = self.config
        client = _Session(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=cfg.resolved_client_id,
            protocol=self._protocol,
            reconnect_on_failure=True,
        )
        client.suppress_exceptions = True
        # paho logs every failed reconnect attempt at ERROR; this client reports the outage once
        # itself, so paho's own lines are kept for -vv (DEBUG) only.
        paho_log = logging.getLogger(f"{__name__}.paho")
        if paho_log.level == logging.NOTSET and not log.isEnabledFor(logging.DEBUG):
            paho_log.setLevel(logging.CRITICAL)
        client.enable_logger(paho_log)
        client.reconnect_delay_set(cfg.reconnect_min_s, cfg.reconnect_max_s)
        password = cfg.password.get_secret_value() if cfg.password else None
        apply_login(client, username=cfg.username, password=password, tls=cfg.tls)
        send_immediately(client)
        client.on_pre_connect = self._on_pre_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        self._set_will(client)
        return client

    def _set_will(self, client: mqtt.Client) -> None:
        will = self._status("offline", "connection lost")
        client.will_set(self.topics.status, will, qos=STATUS_QOS, retain=True)

    def _on_pre_connect(self, client: mqtt.Client, userdata: Any) -> None:
        try:
            self._set_will(client)  # fresh uptime and model in the will of every connection
        except Exception:  # pragma: no cover - defensive: never kill paho's thread
            log.exception("telemetry: could not update the last will")

    def _on_connect_fail(self, client: _Session, userdata: Any) -> None:
        try:
            if not self._closing:
                self._outage.failed(client.last_error)
        except Exception:  # pragma: no cover
            log.exception("telemetry: error in on_connect_fail")

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:  # noqa: ANN001
        try:
            if reason_code.is_failure:
                self._connect_refused(reason_code)
                return
            self._refused = None
            self._last_refusal = None
            client.publish(self.topics.status, self._status("online"), qos=STATUS_QOS, retain=True)
            self._cmd_sub_mid = client.subscribe(self.topics.cmd, qos=CMD_QOS)[1]
            log.info(
                "telemetry: connected to %s:%d (MQTT %s) as %s%s",
                self.config.host,
                self.config.port,
                self.protocol,
                self.config.resolved_client_id,
                self._outage.connected(),
            )
            self._connected.set()
            self._wake.set()
        except Exception:
            log.exception("telemetry: error in on_connect")

    def _connect_refused(self, reason_code: Any) -> None:
        where = f"{self.config.host}:{self.config.port}"
        if (
            reason_code.value == _UNSUPPORTED_PROTOCOL
            and self.config.protocol == "auto"
            and self.protocol == "5"
        ):
            log.info("telemetry: broker %s refused MQTT v5; falling back to 3.1.1", where)
            self._fallback_requested = True
            self._wake.set()
            return
        message = f"MQTT broker {where} refused the connection: {reason_code}"
        if reason_code.value in _AUTH_REFUSED:
            user = "no username" if self.config.username is None else f"username {self.config.username!r}"
            message += f" ({user}; check 'username' and 'password' in the telemetry config)"
            self._refused = BrokerRefusedError(message)
        if message != self._last_refusal:
            log.error("telemetry: %s; retrying with backoff", message)
            self._last_refusal = message

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:  # noqa: ANN001
        try:
            if mid != self._cmd_sub_mid:
                return
            if any(rc.is_failure for rc in reason_codes):
                log.error(
                    "telemetry: the broker refused the subscription to %s: %s", self.topics.cmd, reason_codes
                )
            self._ready.set()
        except Exception:  # pragma: no cover
            log.exception("telemetry: error in on_subscribe")

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:  # noqa: ANN001
        try:
            was_connected = self._connected.is_set()
            self._ready.clear()
            self._connected.clear()
            self._wake.set()
            if was_connected and not self._closing:
                log.warning("telemetry: disconnected from broker (%s); reconnecting", reason_code)
        except Exception:  # pragma: no cover
            log.exception("telemetry: error in on_disconnect")

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:  # noqa: ANN001
        # Called with paho's message lock held: only hand the id over, never block here.
        self._acks.put((mid, reason_code))
        self._wake.set()

    def _on_message(self, client, userdata, message: mqtt.MQTTMessage) -> None:  # noqa: ANN001
        try:
            if message.topic != self.topics.cmd:
                return
            if message.retain:
                log.warning(
                    "telemetry: ignoring a retained command on %s (clear it on the broker)", message.topic
                )
                return
            self._commands.put(bytes(message.payload))
        except Exception:  # pragma: no cover
            log.exception("telemetry: error in on_message")

    # ----------------------------------------------------------------------------------------------
    # Pump: the only thread that hands outbox rows to paho

    def _pump(self) -> None:
        while True:
            self._wake.wait(self._pump_wait())
            self._wake.clear()
            try:
                if self._fallback_requested:
                    self._fall_back_to_v311()
                self._settle()
                if self._stop_pump:
                    return
                if self._connected.is_set():
                    self._drain()
            except Exception:
                log.exception("telemetry: pump error (retrying)")
                time.sleep(0.1)

    def _pump_wait(self) -> float:
        """How long the pump sleeps unless woken: 0.25 s, less when a held topic's probe falls due
        sooner. (A probe already due but blocked, by a lost connection or a full ``max_inflight``,
        waits for a wake-up or the 0.25 s poll: no spinning.)"""
        now = time.monotonic()
        due = [h.retry_at - now for h in tuple(self._holds.values()) if h.probe_mid is None]
        due = [d for d in due if d > 0]
        return min(0.25, max(0.01, min(due))) if due else 0.25

    def _settle(self) -> None:
        """Delete acknowledged rows; hold the topics nobody subscribes to; put QoS 0 rows that paho
        lost on a reconnect back in line."""
        acked = []
        while True:
            try:
                mid, reason = self._acks.get_nowait()
            except queue.Empty:
                break
            handed = self._handed.pop(mid, None)
            if handed is None:
                continue  # a status message, not an outbox row
            seq, topic = handed
            self._handed_seqs.discard(seq)
            self._qos0.pop(seq, None)
            code = getattr(reason, "value", 0)
            if code in _HOLD_CODES:
                self._hold(topic, seq, mid, reason)
                continue  # not delivered: the row stays
            hold = self._holds.get(topic)
            if getattr(reason, "is_failure", False):
                log.warning("telemetry: broker rejected outbox message %d: %s (dropped)", seq, reason)
                if hold is not None and hold.probe_mid == mid:
                    hold.probe_mid = None  # that row will never go; probe with the next one
            elif hold is not None:
                self._release(topic)  # the broker delivered one: someone reads the topic again
            acked.append(seq)
        for seq, (mid, info) in list(self._qos0.items()):
            if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:  # CONN_LOST: never written to the socket
                del self._qos0[seq]
                self._handed.pop(mid, None)
                self._handed_seqs.discard(seq)
                self._cursor = min(self._cursor, seq - 1)
        if acked:
            self.outbox.ack_many(acked)
            with self._delivered:
                self._delivered.notify_all()

    def _drain(self) -> None:
        assert self._mqtt is not None
        if self._holds:
            self._probe()
        while self._connected.is_set() and not self._fallback_requested:
            room = self.config.max_inflight - len(self._handed)
            if room <= 0:
                return
            rows = self.outbox.peek(max(room + len(self._handed_seqs), _PEEK_PAGE), after=self._cursor)
            if not rows:
                return
            for row in rows:
                hold = self._holds.get(row.topic)
                if row.seq in self._handed_seqs or hold is not None:
                    if hold is not None and row.seq not in self._handed_seqs:
                        hold.first = min(hold.first, row.seq)  # sent when the hold ends
                    self._cursor = max(self._cursor, row.seq)
                    continue
                if room <= 0:
                    return
                outcome, _ = self._send(row)
                if outcome == "deleted":
                    continue
                if outcome == "busy":
                    return  # not connected or paho's queue is full: the next wake-up retries
                room -= 1
                self._cursor = max(self._cursor, row.seq)
                if outcome == "kept" or not self._connected.is_set():
                    return

    def _send(self, row: OutboxRow) -> tuple[str, int | None]:
        """Hand one row to paho: ``("queued", mid)``; ``("kept", mid)`` when paho keeps a QoS 1 row
        to send on the reconnect; ``("busy", None)`` when paho did not take it (try again later);
        ``("deleted", None)`` when paho can never send it (the row is deleted, with an error line)."""
        assert self._mqtt is not None
        try:
            info = self._mqtt.publish(row.topic, row.payload, qos=row.qos, retain=row.retain)
        except (ValueError, TypeError) as exc:  # a row paho can never send: do not block on it
            log.error("telemetry: dropping undeliverable outbox message %d: %s", row.seq, exc)
            self.outbox.ack(row.seq)
            return "deleted", None
        queued = info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS
        if not queued and not (info.rc == MQTTErrorCode.MQTT_ERR_NO_CONN and row.qos > 0):
            return "busy", None
        self._handed[info.mid] = (row.seq, row.topic)
        self._handed_seqs.add(row.seq)
        if row.qos == 0:
            self._qos0[row.seq] = (info.mid, info)
        return ("queued" if queued else "kept"), info.mid

    # ----------------------------------------------------------------------------------------------
    # Topics without a subscriber (PUBACK 0x10): hold, probe with backoff, release

    def _hold(self, topic: str, seq: int, mid: int, reason: Any) -> None:
        now = time.monotonic()
        cfg = self.config
        hold = self._holds.get(topic)
        if hold is None:
            self._holds[topic] = _Hold(
                first=seq,
                delay=cfg.no_subscriber_retry_min_s,
                retry_at=now + cfg.no_subscriber_retry_min_s,
                since=now,
                reason=str(reason),
                last_line=now,
            )
            log.warning(
                "telemetry: the broker has no subscriber for %s (PUBACK: %s); keeping its messages in "
                "the outbox and trying again with backoff (%g s up to %g s)",
                topic,
                reason,
                cfg.no_subscriber_retry_min_s,
                cfg.no_subscriber_retry_max_s,
            )
            return
        hold.first = min(hold.first, seq)
        if mid != hold.probe_mid:
            return  # a row that was in flight when the hold began
        hold.probe_mid = None
        hold.probes += 1
        hold.delay = min(hold.delay * 2, cfg.no_subscriber_retry_max_s)
        hold.retry_at = now + hold.delay
        if hold.probes & (hold.probes - 1) == 0 or now - hold.last_line >= _RETRY_LOG_EVERY_S:
            hold.last_line = now
            log.warning(
                "telemetry: still no subscriber for %s after %d tries in %.0f s (%s); %d message(s) in "
                "the outbox; next try in %g s",
                topic,
                hold.probes + 1,
                now - hold.since,
                reason,
                self.outbox.depth(),
                hold.delay,
            )

    def _probe(self) -> None:
        """Send the oldest row of each held topic whose wait is over, alone, to see if anyone reads it."""
        now = time.monotonic()
        for topic, hold in list(self._holds.items()):
            if hold.probe_mid is not None or now < hold.retry_at:
                continue
            if len(self._handed) >= self.config.max_inflight or not self._connected.is_set():
                return
            rows = self.outbox.peek(len(self._handed_seqs) + 1, after=hold.first - 1, topic=topic)
            row = next((r for r in rows if r.seq not in self._handed_seqs and r.qos > 0), None)
            if row is None:  # nothing of this topic left to hold (delivered, dropped, or only QoS 0)
                if not any(t == topic for _, t in self._handed.values()):
                    self._release(topic)
                continue
            outcome, mid = self._send(row)
            if mid is not None:
                hold.probe_mid = mid
            elif outcome == "busy":
                return
            # "deleted" (undeliverable): the next row probes on the next wake-up

    def _release(self, topic: str) -> None:
        hold = self._holds.pop(topic)
        self._cursor = min(self._cursor, hold.first - 1)  # the held rows go out again, in seq order
        self._wake.set()
        log.info(
            "telemetry: %s has a subscriber again after %.0f s; sending its held messages",
            topic,
            time.monotonic() - hold.since,
        )

    def _fall_back_to_v311(self) -> None:
        self._fallback_requested = False
        old = self._mqtt
        if old is not None:
            old.disconnect()
            old.loop_stop()
        self._protocol = MQTTProtocolVersion.MQTTv311
        self._handed.clear()  # paho never connected, but start over from the outbox to be sure
        self._handed_seqs.clear()
        self._qos0.clear()
        self._holds.clear()
        self._cursor = 0
        while not self._acks.empty():
            self._acks.get_nowait()
        self._mqtt = self._make_client()
        self._mqtt.connect_async(self.config.host, self.config.port, keepalive=self.config.keepalive_s)
        self._mqtt.loop_start()

    @staticmethod
    def _wait_published(info: mqtt.MQTTMessageInfo, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not info.is_published():
            if info.rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS,) or time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True

    # ----------------------------------------------------------------------------------------------
    # Commands

    def _command_loop(self) -> None:
        while True:
            raw = self._commands.get()
            if raw is None:
                break
            self._ack(self._answer(raw))
        while True:  # shutting down: anything still queued is refused, not silently lost
            try:
                raw = self._commands.get_nowait()
            except queue.Empty:
                return
            if raw is not None:
                self._ack(self._runner.refuse(raw, "the device is shutting down"))

    def _answer(self, raw: bytes) -> CommandAck:
        """The ack for one command; whatever goes wrong with it stays with it."""
        try:
            return self._runner.run(raw, self.command_handler)
        except Exception as exc:
            log.exception("telemetry: command failed unexpectedly")
            return self._runner.refuse(raw, f"the device failed on this command: {type(exc).__name__}")
        except BaseException as exc:  # SystemExit from a handler: ack, then the supervisor restarts us
            self._ack(
                self._runner.refuse(raw, f"the command worker stopped ({type(exc).__name__}); restarting")
            )
            raise

    def _ack(self, ack: CommandAck) -> None:
        try:
            self._put(self.topics.cmd_ack, ack, CMD_QOS, "ack")
        except Exception:
            log.exception("telemetry: could not store the ack for command %r", ack.id)


def _build(cls: type[Payload], payload: Payload | None, fields: dict[str, Any]) -> Any:
    """A payload from a model and/or keyword fields (fields win); errors name the field."""
    if payload is not None and not fields:
        return payload
    data = {**payload.model_dump(by_alias=True), **fields} if payload is not None else fields
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        raise PayloadError(format_validation_error(exc, cls.__name__)) from None
