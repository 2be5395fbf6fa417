"""A real Mosquitto per test, a real paho subscriber, and client configs that reconnect fast."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edgewise.devtools.mosquitto import MosquittoBroker
from edgewise.edge.telemetry.schema import decode
from edgewise.errors import MissingDependencyError
from tests.conftest import missing_tool

REPO = Path(__file__).resolve().parents[3]
FLEET, DEVICE = "lab", "dev1"
BASE = f"edgewise/{FLEET}/{DEVICE}"


@pytest.fixture
def make_broker(tmp_path):
    """``make_broker(**kwargs)`` -> a started MosquittoBroker in tmp_path; all stopped at the end."""
    brokers = []

    def make(start: bool = True, **kwargs) -> MosquittoBroker:
        try:
            broker = MosquittoBroker(workdir=tmp_path / f"broker{len(brokers)}", **kwargs)
        except MissingDependencyError as exc:
            missing_tool(str(exc))
        brokers.append(broker)
        return broker.start() if start else broker

    yield make
    for broker in brokers:
        broker.close()


@pytest.fixture
def broker(make_broker):
    return make_broker()


def client_config(broker: MosquittoBroker, outbox: Path, **overrides) -> dict:
    return {
        "host": broker.host,
        "port": broker.port,
        "fleet": FLEET,
        "device": DEVICE,
        "outbox_path": str(outbox),
        "keepalive_s": 5,
        "reconnect_min_s": 0.05,
        "reconnect_max_s": 0.2,
        **overrides,
    }


class Subscriber:
    """A paho client that subscribes at QoS 1 (again after every reconnect) and records messages.

    ``v5``: MQTT 5 (needed for a ``$share/...`` subscription, as the cloud's ingest worker makes);
    with ``persistent`` the session outlives the connection (an hour). ``tls_ca``: connect over TLS,
    trusting that CA. :meth:`pause` stops the network loop without a DISCONNECT (a worker that
    hangs or is SIGSTOPped); :meth:`resume` starts it again, and it reconnects by itself."""

    def __init__(
        self,
        broker: MosquittoBroker,
        topics: list[str],
        *,
        client_id: str = "",
        persistent: bool = False,
        v5: bool = False,
        tls_ca: Path | None = None,
    ) -> None:
        self.topics = topics
        self.messages: list[mqtt.MQTTMessage] = []
        self._cond = threading.Condition()
        self._subscribed = threading.Event()
        connect_kwargs: dict = {}
        if v5:
            self.client = mqtt.Client(
                CallbackAPIVersion.VERSION2, client_id=client_id, protocol=MQTTProtocolVersion.MQTTv5
            )
            connect_kwargs["clean_start"] = not persistent
            if persistent:
                props = Properties(PacketTypes.CONNECT)
                props.SessionExpiryInterval = 3600
                connect_kwargs["properties"] = props
        elif persistent:  # a session the broker keeps (and queues for) while we are away
            self.client = mqtt.Client(
                CallbackAPIVersion.VERSION2,
                client_id=client_id,
                protocol=MQTTProtocolVersion.MQTTv311,
                clean_session=False,
            )
        else:
            self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id)
        if tls_ca is not None:
            self.client.tls_set(ca_certs=str(tls_ca))
        self.client.reconnect_delay_set(0.05, 0.2)
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *a: self._subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect(broker.host, broker.port, keepalive=5, **connect_kwargs)
        self.client.loop_start()
        assert self._subscribed.wait(5), "subscriber got no SUBACK"

    def pause(self) -> None:
        self.client.loop_stop()

    def resume(self, timeout: float = 10.0) -> None:
        """Run the loop again and wait until it has subscribed again."""
        self._subscribed.clear()
        self.client.loop_start()
        assert self._subscribed.wait(timeout), "subscriber got no SUBACK after resuming"

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        client.subscribe([(t, 1) for t in self.topics])

    def _on_message(self, client, userdata, message):
        with self._cond:
            self.messages.append(message)
            self._cond.notify_all()

    def payloads(self, type_: str | None = None) -> list:
        with self._cond:
            decoded = [decode(m.payload) for m in self.messages]
        return [p for p in decoded if type_ is None or p.type == type_]

    def wait_for(self, predicate, timeout: float = 10.0) -> list:
        """Wait until ``predicate(payloads)`` holds; returns the payloads (asserts on timeout)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                payloads = [decode(m.payload) for m in self.messages]
                if predicate(payloads):
                    return payloads
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"timed out; got {len(payloads)} message(s): {payloads[-5:]}")
                self._cond.wait(min(remaining, 0.1))

    def wait_count(self, type_: str, n: int, timeout: float = 10.0) -> list:
        payloads = self.wait_for(lambda ps: sum(p.type == type_ for p in ps) >= n, timeout)
        return [p for p in payloads if p.type == type_]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def subscribe():
    """``subscribe(broker, [topics], **kw)`` -> a started Subscriber, closed at the end."""
    subs = []

    def make(broker, topics, **kwargs) -> Subscriber:
        sub = Subscriber(broker, topics, **kwargs)
        subs.append(sub)
        return sub

    yield make
    for sub in subs:
        sub.close()


@pytest.fixture
def open_clients():
    """Clients registered here are closed at the end even when the test fails."""
    clients = []
    yield clients
    for client in clients:
        client.close(flush_timeout=0)


class ClientProcess:
    """``tests/edge/telemetry/client_proc.py`` in its own Python process."""

    def __init__(self, config: dict, *, events: int = 0, wait_connected: bool = True, tmp_path: Path) -> None:
        spec = tmp_path / "client_proc.json"
        spec.write_text(json.dumps({"config": config, "events": events, "wait_connected": wait_connected}))
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).with_name("client_proc.py")), str(spec)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )

    def wait_ready(self, timeout: float = 20.0) -> None:
        line = self._readline(timeout)
        if line.strip() != "READY":
            self.proc.kill()
            raise AssertionError(f"client process said {line!r}; stderr:\n{self.proc.stderr.read()}")

    def _readline(self, timeout: float) -> str:
        result: list[str] = []
        reader = threading.Thread(target=lambda: result.append(self.proc.stdout.readline()), daemon=True)
        reader.start()
        reader.join(timeout)
        return result[0] if result else "<nothing>"

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def wait(self, timeout: float = 20.0) -> int:
        return self.proc.wait(timeout)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


@pytest.fixture
def client_process(tmp_path):
    procs = []

    def make(config: dict, **kwargs) -> ClientProcess:
        proc = ClientProcess(config, tmp_path=tmp_path, **kwargs)
        procs.append(proc)
        return proc

    yield make
    for proc in procs:
        proc.kill()
