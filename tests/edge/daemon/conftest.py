"""Real daemon processes against a real Mosquitto, with bundles installed the way edge-deploy does."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
import yaml

from edgewise.edge.install import activate, install_bundle
from tests.edge.audio.conftest import speech_track  # noqa: F401  (fixture)
from tests.edge.telemetry.conftest import BASE, DEVICE, FLEET, broker, make_broker, subscribe  # noqa: F401

REPO = Path(__file__).resolve().parents[3]


TOPICS = [f"{BASE}/{kind}" for kind in ("status", "telemetry", "events", "cmd/ack")]  # not cmd: ours


def command(server, action, args=None, cmd_id=None, raw: bytes | None = None) -> None:
    payload = (
        raw if raw is not None else json.dumps({"id": cmd_id or action, "action": action, "args": args or {}})
    )
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    client.connect(server.host, server.port)
    client.loop_start()
    client.publish(f"{BASE}/cmd", payload, qos=1).wait_for_publish(5)
    client.disconnect()
    client.loop_stop()


def ack_for(sub, cmd_id, timeout=30.0):
    acks = sub.wait_for(lambda ps: any(p.type == "command_ack" and p.id == cmd_id for p in ps), timeout)
    return next(p for p in acks if p.type == "command_ack" and p.id == cmd_id)


def bundle_version(src: Path, dest_parent: Path, version: str, **manifest_changes) -> Path:
    """A copy of the bundle folder with another version (and other manifest changes)."""
    dest = dest_parent / f"{src.name.rsplit('-', 1)[0]}-{version}"
    shutil.copytree(src, dest)
    manifest = json.loads((dest / "manifest.json").read_text())
    manifest.update(version=version, **manifest_changes)
    (dest / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return dest


@pytest.fixture
def root(tmp_path, ser_bundle):
    """An install root with the test bundle installed and current."""
    root = tmp_path / "root"
    activate(root, install_bundle(root, ser_bundle))
    return root


class DaemonProcess:
    def __init__(self, root: Path, mqtt_broker, audio: dict, tmp: Path, **settings) -> None:
        self.root = root
        self.config = tmp / "daemon.yaml"
        cfg = {
            "device": "x86-local",
            "root": str(root),
            "telemetry_interval_s": 0.5,
            "threads": 1,
            "mqtt": {
                "host": mqtt_broker.host,
                "port": mqtt_broker.port,
                "fleet": FLEET,
                "device": DEVICE,
                "keepalive_s": 5,
                "reconnect_min_s": 0.05,
                "reconnect_max_s": 0.5,
            },
            "audio": audio,
            **settings,
        }
        self.config.write_text(yaml.safe_dump(cfg))
        self.log = tmp / "daemon.log"
        self.proc: subprocess.Popen | None = None

    def start(self, stdin=None) -> DaemonProcess:
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "edgewise", "daemon", "--config", str(self.config)],
            stdin=stdin if stdin is not None else subprocess.DEVNULL,
            stdout=open(self.log, "ab"),  # noqa: SIM115  (the child keeps its own copy of the fd)
            stderr=subprocess.STDOUT,
            env=env,
        )
        return self

    def health(self) -> dict | None:
        path = self.root / "health.json"
        try:
            return json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            return None

    def wait_health(self, predicate=lambda h: True, after: float = 0.0, timeout: float = 30.0) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            h = self.health()
            if h and h["pid"] == self.proc.pid and h["ts"] > after and predicate(h):
                return h
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"daemon exited with {self.proc.returncode}:\n{self.log.read_text()[-3000:]}"
                )
            time.sleep(0.05)
        raise AssertionError(
            f"no matching health report; last {self.health()}\n{self.log.read_text()[-3000:]}"
        )

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def stop(self, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise AssertionError(f"daemon did not stop on SIGTERM:\n{self.log.read_text()[-3000:]}") from None

    def output(self) -> str:
        return self.log.read_text()


@pytest.fixture
def daemons(tmp_path):
    """``daemons(root, broker, audio, **settings)`` -> a DaemonProcess (not started); killed at the end."""
    made: list[DaemonProcess] = []

    def make(root, mqtt_broker, audio, **settings) -> DaemonProcess:
        folder = tmp_path / f"daemon{len(made)}"
        folder.mkdir()
        d = DaemonProcess(root, mqtt_broker, audio, folder, **settings)
        made.append(d)
        return d

    yield make
    for d in made:
        if d.proc is not None and d.proc.poll() is None:
            d.proc.kill()
            d.proc.wait()
