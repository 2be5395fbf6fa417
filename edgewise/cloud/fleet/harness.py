"""Tools for the fleet's tests and benchmarks: a publisher that knows what the broker acknowledged,
an ingest worker in a process of its own (as the CLI runs it), and numbered events.

::

    pub = AckCountingPublisher(broker.host, broker.port)
    for i in range(1000):
        pub.publish("edgewise/lab/dev1/events", numbered_event(i))
    pub.wait_all_acked()          # every PUBACK in; pub.unrouted: how many matched no subscriber

    worker = IngestProcess(["--host", ..., "--store", url, "--client-id", "w1"], log_path)
    worker.wait_subscribed(); ...; worker.terminate()      # SIGTERM: a clean stop, exit code 0
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from edgewise.edge.telemetry.schema import Event, ModelRef, encode

REPO = Path(__file__).resolve().parents[3]
NO_MATCHING_SUBSCRIBERS = 16  # MQTT 5 PUBACK reason code: accepted, but nobody was subscribed
SAMPLE_MODEL = ModelRef(name="ser-tiny", version="1.0.0")


def numbered_event(i: int, *, tag: str = "", latency_ms: float = 2.0) -> bytes:
    """Event ``ev<tag><i:07d>`` (about 300 bytes, the size of a daemon's SER event)."""
    return encode(
        Event(
            id=f"ev{tag}{i:07d}",
            ts=1_800_000_000 + i * 0.001,
            label=str(i % 4),
            probabilities={"neutral": 0.1, "happy": 0.7, "sad": 0.1, "angry": 0.1},
            latency_ms=latency_ms,
            model=SAMPLE_MODEL,
        )
    )


class AckCountingPublisher:
    """A paho MQTT 5 client publishing at QoS 1 that counts the broker's PUBACKs. What it cannot
    send yet (the broker restarting) paho keeps and sends after it reconnects."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        client_id: str = "",
        username: str | None = None,
        password: str | None = None,
        tls_ca: str | os.PathLike | None = None,
        reconnect_min_s: float = 0.05,
        reconnect_max_s: float = 0.5,
        max_inflight: int = 200,
    ) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, protocol=MQTTProtocolVersion.MQTTv5
        )
        self.client.max_inflight_messages_set(max_inflight)
        self.client.max_queued_messages_set(0)
        self.client.reconnect_delay_set(reconnect_min_s, reconnect_max_s)
        if username:
            self.client.username_pw_set(username, password)
        if tls_ca:
            self.client.tls_set(ca_certs=str(tls_ca))
        self._lock = threading.Condition()
        self.pending: set[int] = set()
        self._early: set[int] = set()
        self.acked = 0
        self.refused = 0  # PUBACK with a failure reason (not authorized...)
        self.unrouted = 0  # PUBACK 0x10: no subscriber matched, the broker dropped it
        self._connected = threading.Event()
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = lambda *a: self._connected.clear()
        self.client.on_publish = self._on_publish
        self.client.connect(host, port, keepalive=10)
        self.client.loop_start()
        if not self._connected.wait(10):
            raise RuntimeError(f"publisher could not connect to {host}:{port}")

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:  # noqa: ANN001
        if not reason_code.is_failure:
            self._connected.set()

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:  # noqa: ANN001
        with self._lock:
            if getattr(reason_code, "is_failure", False):
                self.refused += 1
            elif getattr(reason_code, "value", 0) == NO_MATCHING_SUBSCRIBERS:
                self.unrouted += 1
            if mid in self.pending:
                self.pending.discard(mid)
                self.acked += 1
                self._lock.notify_all()
            else:  # acknowledged before publish() recorded it
                self._early.add(mid)

    def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> None:
        # not under our lock: paho calls on_publish with its own lock held
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        if qos == 0:
            return
        with self._lock:
            if info.mid in self._early:
                self._early.discard(info.mid)
                self.acked += 1
            else:
                self.pending.add(info.mid)

    def wait_all_acked(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        with self._lock:
            while self.pending:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"{len(self.pending)} publishes never acknowledged by the broker")
                self._lock.wait(min(remaining, 0.1))

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class IngestProcess:
    """``python -m edgewise cloud ingest ARGS`` in a process of its own; output to a log file."""

    def __init__(self, args: list[str], log_path: str | os.PathLike, *, nice: int = 0) -> None:
        self.args = args
        self.log_path = Path(log_path)
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in close()
        env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}
        prefix = ["nice", "-n", str(nice)] if nice else []
        self.proc = subprocess.Popen(
            [*prefix, sys.executable, "-m", "edgewise", "cloud", "ingest", *args],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=REPO,
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_subscribed(self, count: int = 1, timeout: float = 30) -> None:
        """Until the log shows the ``count``-th acknowledged shared subscription."""
        deadline = time.monotonic() + timeout
        while self.log().count("ingest: subscribed to $share/") < count:
            if self.proc.poll() is not None:
                raise AssertionError(f"ingest exited with {self.proc.returncode}:\n{self.log()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"ingest did not subscribe within {timeout} s:\n{self.log()}")
            time.sleep(0.05)

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def terminate(self, timeout: float = 30) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._log.close()
