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
when its PUBACK arrives (paho's ``on_publish`` with the message id), for QoS 0 when paho has
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
"""

from __future__ import annotations

import logging
import queue
import ssl
import threading
import time
from collections.abc import Mapping
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from pydantic import ValidationError

from edgewise.config import format_validation_error
from edgewise.edge.supervisor import Supervisor
from edgewise.edge.telemetry.commands import CommandHandler, CommandRunner
from edgewise.edge.telemetry.config import TelemetryConfig
from edgewise.edge.telemetry.outbox import Outbox
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
        self._handed: dict[int, int] = {}  # mid -> seq
        self._handed_seqs: set[int] = set()
        self._qos0: dict[int, tuple[int, mqtt.MQTTMessageInfo]] = {}  # seq -> (mid, info)
        self._cursor = 0  # highest seq handed to paho, in order
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
    def protocol(self) -> str:
        """The MQTT version in use (or being tried): ``"5"`` or ``"3.1.1"``."""
        return "5" if self._protocol == MQTTProtocolVersion.MQTTv5 else "3.1.1"

    def flush(self, timeout: float) -> bool:
        """Wait until the outbox is empty (everything acked); False if ``timeout`` passed first."""
        deadline = time.monotonic() + timeout
        self._wake.set()
        with self._delivered:
            while self.outbox.depth() > 0:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
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
        if cfg.username is not None:
            client.username_pw_set(cfg.username, cfg.password.get_secret_value() if cfg.password else None)
        if cfg.tls is not None:
            client.tls_set(
                ca_certs=str(cfg.tls.ca) if cfg.tls.ca else None,
                certfile=str(cfg.tls.cert) if cfg.tls.cert else None,
                keyfile=str(cfg.tls.key) if cfg.tls.key else None,
                cert_reqs=ssl.CERT_NONE if cfg.tls.insecure else ssl.CERT_REQUIRED,
            )
            if cfg.tls.insecure:
                client.tls_insecure_set(True)
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
            self._wake.wait(0.25)
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

    def _settle(self) -> None:
        """Delete acknowledged rows; put QoS 0 rows that paho lost on a reconnect back in line."""
        acked = []
        while True:
            try:
                mid, reason = self._acks.get_nowait()
            except queue.Empty:
                break
            seq = self._handed.pop(mid, None)
            if seq is None:
                continue  # a status message, not an outbox row
            self._handed_seqs.discard(seq)
            self._qos0.pop(seq, None)
            if getattr(reason, "is_failure", False):
                log.warning("telemetry: broker rejected outbox message %d: %s (dropped)", seq, reason)
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
        while self._connected.is_set() and not self._fallback_requested:
            room = self.config.max_inflight - len(self._handed)
            if room <= 0:
                return
            rows = self.outbox.peek(room + len(self._handed_seqs), after=self._cursor)
            rows = [r for r in rows if r.seq not in self._handed_seqs][:room]
            if not rows:
                return
            for row in rows:
                try:
                    info = self._mqtt.publish(row.topic, row.payload, qos=row.qos, retain=row.retain)
                except (ValueError, TypeError) as exc:  # a row paho can never send: do not block on it
                    log.error("telemetry: dropping undeliverable outbox message %d: %s", row.seq, exc)
                    self.outbox.ack(row.seq)
                    continue
                queued = info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS
                if queued or (info.rc == MQTTErrorCode.MQTT_ERR_NO_CONN and row.qos > 0):
                    # QoS 1 without a connection: paho keeps it and sends it on reconnect.
                    self._handed[info.mid] = row.seq
                    self._handed_seqs.add(row.seq)
                    if row.qos == 0:
                        self._qos0[row.seq] = (info.mid, info)
                    self._cursor = max(self._cursor, row.seq)
                if not queued:
                    return  # not connected or paho's queue is full: the next wake-up retries

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
