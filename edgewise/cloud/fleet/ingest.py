"""``edgewise cloud ingest``: the worker that moves what devices publish into the fleet store.

::

    worker = IngestWorker(IngestConfig(store="fleet.sqlite", host="broker", username="ingest1", ...))
    worker.run(stop_event)          # until stop_event is set (SIGTERM in the command)

Delivery
--------
The worker speaks MQTT 5 and subscribes at QoS 1 to the shared subscription
``$share/<group>/edgewise/<fleet>/+/#`` (``fleet`` is ``+`` for every fleet), so any number of
workers in one group split the stream: the broker hands each message to one of them. Its session
is persistent (``clean_start`` false, a session expiry interval), so while a worker is away the
broker keeps its subscription and queues its share of the messages, and after a broker restart
(with persistence on) everything it had not acknowledged comes again.

Messages are taken in batches (up to ``batch_max``, or what arrived within ``batch_wait_s``),
each one classified (:mod:`.classify`) and the batch written in one transaction
(:meth:`~.store.FleetStore.write`). Only after the commit does the worker send the PUBACKs
(paho's ``manual_ack``), in the order the messages came, as MQTT requires. A crash before the
commit loses nothing (the broker re-sends); a crash between the commit and the PUBACK makes the
broker re-send a message that is already stored, and the store recognises it by its key and counts
a duplicate instead of storing it twice. While the database is away the batch is retried with
backoff and nothing is acknowledged; ``receive_maximum`` bounds how many unacknowledged messages
the broker sends meanwhile.

Mosquitto 2.0.11 restores a persistent session after a restart (with ``persistence true``) with
the messages queued for it, but not its *shared* subscription: until the worker reconnects and
subscribes again, messages published to the restarted broker match no subscriber and are dropped
(an MQTT 5 publisher is told so: PUBACK reason 0x10, "no matching subscribers"). The worker
therefore reconnects quickly (from 0.1 s, at most every 5 s), ahead of devices that back off from
1 s; a device that keeps an outbox row until a PUBACK other than 0x10 would close the gap.

Mosquitto 2.0 keeps handing a stopped worker its share of a shared subscription while its session
lives (the share waits for it; the other workers do not take it over). A worker that leaves for
good should be stopped with ``leave`` (``edgewise cloud ingest --leave``): it unsubscribes and
ends its session, and from then on the others get everything.

Status is state: the broker keeps each device's last status retained, and MQTT 5 says a shared
subscription gets no retained messages (Mosquitto 2.0.11 sends them anyway when the shared
subscription is made; 2.0.13 stopped). So the shared subscription asks for none (retain handling 2), and at
every connect the worker subscribes plainly to ``edgewise/<fleet>/+/status`` for ``snapshot_s``
seconds with a subscription identifier, takes the retained statuses that come through it (the
store keeps each once; the other workers' copies count as duplicates), and unsubscribes. A live
status published meanwhile comes through both subscriptions; the copy marked with the snapshot's
identifier is acknowledged and dropped, so every live message is counted once.

Logins and ACLs
---------------
Give each worker an operator login of its own (``edge-deploy broker-acl --operator ingest1``):
with ``use_username_as_clientid`` the broker names the session after the login, so two workers
sharing one login would knock each other off; the client id here defaults to the username for
the same reason. An operator may read ``edgewise/<fleet>/#``. Mosquitto 2.0.11's ACL file does not
check subscription filters at all: it grants ``$share/g/edgewise/+/+/#`` (and ``#``) to anyone,
then checks each message against the subscriber's ``read`` rules when it delivers it, by the
message's own topic (``edgewise/lab/dev1/events``), not by the ``$share/...`` filter. So an
operator of fleet ``lab`` subscribed to every fleet receives only ``lab``'s messages, and the ACL,
not the filter, decides what a worker sees (tests/cloud/fleet/test_ingest.py, the operator test).
"""

from __future__ import annotations

import logging
import os
import queue
import socket
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr, field_validator, model_validator

from edgewise.cloud.fleet.allowlist import Allowlist
from edgewise.cloud.fleet.classify import DEFAULT_MAX_BYTES, Message, classify
from edgewise.cloud.fleet.store import FleetStore, TransientStoreError, open_store
from edgewise.config import StrictModel, load_config
from edgewise.edge.telemetry.config import TLSConfig
from edgewise.edge.telemetry.login import apply_login, send_immediately
from edgewise.edge.telemetry.topics import ROOT, id_problem
from edgewise.errors import ConfigError, EdgewiseError

log = logging.getLogger(__name__)

_AUTH_REFUSED = (134, 135)  # bad user name or password, not authorized
SNAPSHOT_SUBSCRIPTION_ID = 1  # marks what comes through the retained-status snapshot
_MAX_SESSION_EXPIRY = 2**32 - 1


class IngestError(EdgewiseError):
    """The worker cannot go on: the broker refused its login or its subscription."""


class IngestConfig(StrictModel):
    """Where to read from and where to write to; load from YAML or a mapping with :meth:`load`."""

    store: str = "fleet.sqlite"
    host: str = Field("localhost", min_length=1)
    port: int = Field(1883, ge=1, le=65535)
    username: str | None = None
    password: SecretStr | None = None
    password_file: Path | None = Field(None, description="a file holding the password (not the config)")
    client_id: str | None = Field(None, min_length=1, description="default: the username")
    tls: TLSConfig | None = None
    group: str = Field("ingest", min_length=1, max_length=64)
    fleet: str = Field("+", description="one fleet id, or + for every fleet the login may read")
    session_expiry_s: int = Field(7 * 24 * 3600, ge=0, le=_MAX_SESSION_EXPIRY)
    keepalive_s: int = Field(30, ge=5, le=65535)
    reconnect_min_s: float = Field(0.1, gt=0)
    reconnect_max_s: float = Field(5.0, gt=0)
    receive_maximum: int = Field(1000, ge=1, le=65535)
    max_bytes: int = Field(DEFAULT_MAX_BYTES, ge=256)
    batch_max: int = Field(500, ge=1, le=100_000)
    batch_wait_s: float = Field(0.05, ge=0)
    devices_file: Path | None = None
    broker_dir: Path | None = None
    status_snapshot: bool = True
    snapshot_s: float = Field(1.0, gt=0)
    drain_s: float = Field(5.0, ge=0, description="on stop, how long to keep storing what has arrived")
    log_every_s: float = Field(60.0, gt=0)

    @field_validator("group")
    @classmethod
    def _share_name(cls, value: str) -> str:
        if any(c in value for c in "/+#") or value.startswith("$"):
            raise ValueError(f"a share group name has no '/', '+', '#' or leading '$', got {value!r}")
        return value

    @field_validator("fleet")
    @classmethod
    def _fleet(cls, value: str) -> str:
        if value != "+" and id_problem(value):
            raise ValueError(f"{id_problem(value)} (or + for every fleet)")
        return value

    @field_validator("password_file", "devices_file", "broker_dir")
    @classmethod
    def _home(cls, path: Path | None) -> Path | None:
        return path.expanduser() if path is not None else None

    @model_validator(mode="after")
    def _consistent(self) -> IngestConfig:
        if self.password is not None and self.password_file is not None:
            raise ValueError("give 'password' or 'password_file', not both")
        if (self.password is not None or self.password_file is not None) and self.username is None:
            raise ValueError("a password needs a username")
        if self.reconnect_max_s < self.reconnect_min_s:
            raise ValueError("reconnect_max_s is below reconnect_min_s")
        return self

    @classmethod
    def load(cls, source: str | os.PathLike | dict[str, Any]) -> IngestConfig:
        return load_config(cls, dict(source) if isinstance(source, dict) else source, name="ingest config")

    @property
    def resolved_client_id(self) -> str:
        return self.client_id or self.username or f"edgewise-ingest-{socket.gethostname()}"

    @property
    def shared_filter(self) -> str:
        return f"$share/{self.group}/{ROOT}/{self.fleet}/+/#"

    @property
    def status_filter(self) -> str:
        return f"{ROOT}/{self.fleet}/+/status"

    def resolved_password(self) -> str | None:
        if self.password is not None:
            return self.password.get_secret_value()
        if self.password_file is None:
            return None
        try:
            return self.password_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"password_file {self.password_file}: {exc.strerror or exc}") from None


class IngestWorker:
    """One ingest worker: a paho MQTT 5 session feeding batches into a :class:`FleetStore`."""

    def __init__(self, config: IngestConfig | dict[str, Any], *, store: FleetStore | None = None) -> None:
        self.config = config if isinstance(config, IngestConfig) else IngestConfig.load(config)
        cfg = self.config
        self.name = cfg.resolved_client_id
        self._password = cfg.resolved_password()
        self.allowlist = (
            Allowlist(cfg.devices_file, cfg.broker_dir)
            if cfg.devices_file is not None or cfg.broker_dir is not None
            else None
        )
        self._own_store = store is None
        self.store = store if store is not None else open_store(cfg.store)
        self.stats: Counter[str] = Counter()  # outcomes since start, for the log
        self._inbox: queue.SimpleQueue[Message] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._generation = 0
        self._connected = False
        self._subscribed = threading.Event()
        self._sub_mids: dict[int, str] = {}
        self._snapshot_until: float | None = None
        self._fatal: IngestError | None = None
        self._client: Any = None
        self._leave_mid: int | None = None
        self._left = threading.Event()
        self._store_down_since: float | None = None
        self._last_log = time.monotonic()
        self._logged = Counter()

    # ----------------------------------------------------------------------------------------------
    # Life cycle

    def start(self) -> IngestWorker:
        if self._client is None:
            self._client = self._make_client()
            self._client.connect_async(
                self.config.host,
                self.config.port,
                keepalive=self.config.keepalive_s,
                clean_start=False,
                properties=self._connect_properties(),
            )
            self._client.loop_start()
        return self

    def wait_subscribed(self, timeout: float) -> bool:
        """True once the broker acknowledged the shared subscription (raises IngestError if it
        refused the login or the subscription)."""
        deadline = time.monotonic() + timeout
        while not self._subscribed.wait(0.05):
            if self._fatal is not None:
                raise self._fatal
            if time.monotonic() > deadline:
                return False
        return True

    def run(self, stop: threading.Event, *, leave: bool = False) -> Counter[str]:
        """Ingest until ``stop`` is set, then store what has already arrived (for up to
        ``drain_s``), acknowledge it and disconnect; the session stays for the next start unless
        ``leave``. Returns the outcomes counted since the start."""
        self.start()
        log.info(
            "ingest: %s -> %s as %r (group %r, MQTT 5, session expiry %d s)",
            f"{self.config.host}:{self.config.port}",
            self.store.url,
            self.name,
            self.config.group,
            self.config.session_expiry_s,
        )
        try:
            while not stop.is_set():
                if self._fatal is not None:
                    raise self._fatal
                batch = self._next_batch(stop)
                if batch:
                    self._process(batch, stop)
                self._end_snapshot_if_due()
                self._log_progress()
            self._drain(stop_deadline=time.monotonic() + self.config.drain_s)
        finally:
            self.close(leave=leave)
        return self.stats

    def close(self, *, leave: bool = False) -> None:
        client, self._client = self._client, None
        if client is not None:
            if leave and self._connected:
                self._leave(client)
            client.disconnect()
            client.loop_stop()
        if self._own_store:
            self.store.close()

    def _leave(self, client: Any) -> None:
        """Unsubscribe and end the session (expiry 0 on DISCONNECT): the group's other workers
        get everything from now on."""
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        with self._lock:  # on_unsubscribe takes the lock too: it cannot miss the mid
            self._left.clear()
            self._leave_mid = client.unsubscribe(self.config.shared_filter)[1]
        if not self._left.wait(5):
            log.warning("ingest: no UNSUBACK from the broker within 5 s; ending the session anyway")
        log.info("ingest: left group %r (unsubscribed, session ended)", self.config.group)
        props = Properties(PacketTypes.DISCONNECT)
        props.SessionExpiryInterval = 0
        client.disconnect(properties=props)

    # ----------------------------------------------------------------------------------------------
    # Batches

    def _next_batch(self, stop: threading.Event) -> list[Message]:
        try:
            first = self._inbox.get(timeout=0.2)
        except queue.Empty:
            return []
        batch = [first]
        deadline = time.monotonic() + self.config.batch_wait_s
        while len(batch) < self.config.batch_max:
            remaining = deadline - time.monotonic()
            try:
                batch.append(
                    self._inbox.get_nowait() if remaining <= 0 else self._inbox.get(timeout=remaining)
                )
            except queue.Empty:
                break
        return batch

    def _drain(self, stop_deadline: float) -> None:
        while time.monotonic() < stop_deadline:
            batch: list[Message] = []
            while len(batch) < self.config.batch_max:
                try:
                    batch.append(self._inbox.get_nowait())
                except queue.Empty:
                    break
            if not batch:
                return
            self._process(batch, None, deadline=stop_deadline)

    def _process(
        self, batch: list[Message], stop: threading.Event | None, deadline: float | None = None
    ) -> bool:
        """Classify, store (retrying while the store is away), then acknowledge. False when
        stopped before the batch could be stored (nothing acknowledged: the broker re-sends)."""
        decisions = [
            classify(m, max_bytes=self.config.max_bytes, known=self.allowlist) for m in batch if not m.copy
        ]
        delay = 0.2
        while True:
            try:
                outcomes = self.store.write(decisions, worker=self.name)
                break
            except TransientStoreError as exc:
                if self._store_down_since is None:
                    self._store_down_since = time.monotonic()
                    log.warning(
                        "ingest: the store is unavailable (%s); retrying, nothing is acknowledged", exc
                    )
                if (stop is not None and stop.wait(delay)) or (
                    deadline is not None and time.monotonic() > deadline
                ):
                    return False
                if stop is None:
                    time.sleep(delay)
                delay = min(delay * 2, 10.0)
        if self._store_down_since is not None:
            log.info("ingest: the store is back after %.1f s", time.monotonic() - self._store_down_since)
            self._store_down_since = None
        for message in batch:
            if message.qos > 0:
                self._ack(message)
        self.stats.update(outcomes)
        for d in decisions:
            if d.action == "reject":
                self.stats[f"rejected:{d.reason}"] += 1
                log.debug("ingest: rejected %s (%s): %s", d.message.topic, d.reason, d.detail)
        return True

    def _ack(self, message: Message) -> None:
        with self._lock:
            if message.generation != self._generation or not self._connected or self._client is None:
                return  # from an earlier connection: the broker re-sends it and the store dedupes it
            self._client.ack(message.mid, message.qos)

    def _end_snapshot_if_due(self) -> None:
        with self._lock:
            due = self._snapshot_until is not None and time.monotonic() >= self._snapshot_until
            if due:
                self._snapshot_until = None
                if self._connected and self._client is not None:
                    self._client.unsubscribe(self.config.status_filter)

    def _log_progress(self) -> None:
        now = time.monotonic()
        if now - self._last_log < self.config.log_every_s:
            return
        delta = self.stats - self._logged
        seconds = now - self._last_log
        self._last_log, self._logged = now, Counter(self.stats)
        received = sum(delta[k] for k in ("stored", "duplicate", "ignored", "rejected"))
        if received:
            log.info(
                "ingest: %d messages in %.0f s (%.0f/s): %d stored, %d duplicates, %d ignored, %d rejected",
                received,
                seconds,
                received / seconds,
                delta["stored"],
                delta["duplicate"],
                delta["ignored"],
                delta["rejected"],
            )

    # ----------------------------------------------------------------------------------------------
    # paho (callbacks run on paho's network thread and must never raise)

    def _connect_properties(self) -> Any:
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = self.config.session_expiry_s
        props.ReceiveMaximum = self.config.receive_maximum
        return props

    def _make_client(self) -> Any:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

        cfg = self.config
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.name,
            protocol=MQTTProtocolVersion.MQTTv5,
            manual_ack=True,
        )
        client.suppress_exceptions = True
        client.reconnect_delay_set(cfg.reconnect_min_s, cfg.reconnect_max_s)
        apply_login(client, username=cfg.username, password=self._password, tls=cfg.tls)
        send_immediately(client)
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_unsubscribe = self._on_unsubscribe
        client.on_message = self._on_message
        return client

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:  # noqa: ANN001
        try:
            where = f"{self.config.host}:{self.config.port}"
            if reason_code.is_failure:
                message = f"MQTT broker {where} refused the connection: {reason_code}"
                if reason_code.value in _AUTH_REFUSED:
                    user = (
                        "no username"
                        if self.config.username is None
                        else f"username {self.config.username!r}"
                    )
                    self._fatal = IngestError(f"{message} ({user}; check the login and its password)")
                log.error("ingest: %s", message)
                return
            with self._lock:
                self._generation += 1
                self._connected = True
            log.info(
                "ingest: connected to %s as %s (session %s)",
                where,
                self.name,
                "resumed" if flags.session_present else "new",
            )
            from paho.mqtt.packettypes import PacketTypes
            from paho.mqtt.properties import Properties
            from paho.mqtt.subscribeoptions import SubscribeOptions

            live = SubscribeOptions(qos=1, retainHandling=SubscribeOptions.RETAIN_DO_NOT_SEND)
            mid = client.subscribe(self.config.shared_filter, options=live)[1]
            self._sub_mids[mid] = self.config.shared_filter
            if self.config.status_snapshot:
                props = Properties(PacketTypes.SUBSCRIBE)
                props.SubscriptionIdentifier = SNAPSHOT_SUBSCRIPTION_ID
                mid = client.subscribe(
                    self.config.status_filter, options=SubscribeOptions(qos=1), properties=props
                )[1]
                self._sub_mids[mid] = self.config.status_filter
        except Exception:  # pragma: no cover - defensive: never kill paho's thread
            log.exception("ingest: error in on_connect")

    def _on_connect_fail(self, client, userdata) -> None:  # noqa: ANN001
        log.warning(
            "ingest: cannot reach the MQTT broker at %s:%d; retrying", self.config.host, self.config.port
        )

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:  # noqa: ANN001
        with self._lock:
            was, self._connected = self._connected, False
            self._snapshot_until = None
        if was and self._client is not None:
            log.warning("ingest: disconnected from the broker (%s); reconnecting", reason_code)

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:  # noqa: ANN001
        try:
            topic = self._sub_mids.pop(mid, None)
            refused = [rc for rc in reason_codes if rc.is_failure]
            if refused:
                self._fatal = IngestError(f"the broker refused the subscription to {topic}: {refused[0]}")
                log.error("ingest: %s", self._fatal)
                return
            if topic == self.config.shared_filter:
                log.info("ingest: subscribed to %s (QoS 1)", topic)
                self._subscribed.set()
            elif topic == self.config.status_filter:
                with self._lock:
                    self._snapshot_until = time.monotonic() + self.config.snapshot_s
        except Exception:  # pragma: no cover
            log.exception("ingest: error in on_subscribe")

    def _on_unsubscribe(self, client, userdata, mid, reason_codes, properties) -> None:  # noqa: ANN001
        with self._lock:
            if mid == self._leave_mid:
                self._left.set()

    def _on_message(self, client, userdata, message) -> None:  # noqa: ANN001
        try:
            self._inbox.put(
                Message(
                    topic=message.topic,
                    payload=bytes(message.payload),
                    qos=message.qos,
                    retained=bool(message.retain),
                    received_at=time.time(),
                    mid=message.mid,
                    generation=self._generation,
                    copy=_snapshot_copy(message),
                )
            )
        except Exception:  # pragma: no cover
            log.exception("ingest: error in on_message")


def _snapshot_copy(message: Any) -> bool:
    """A live (not retained) message that came through the status snapshot: the shared
    subscription delivers it too."""
    if message.retain:
        return False
    ids = getattr(message.properties, "SubscriptionIdentifier", None) if message.properties else None
    return bool(ids) and SNAPSHOT_SUBSCRIPTION_ID in ids
