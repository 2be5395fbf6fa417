"""Every device path on the device's architecture: an emulated rpi5 (aarch64 Debian bookworm under
qemu-user, reached over SSH on loopback) set up and driven exactly as a user drives a Pi.

Real parts throughout: ``edge-deploy`` processes over SSH, the board's own aarch64 Python,
onnxruntime and LiteRT wheels (installed from a wheelhouse by bootstrap), the daemon running on the
board and logged in to a Mosquitto on the host over TLS with its bootstrap credentials and the
fleet ACL, an https server on the host for MQTT ``deploy``, real signals. The tests run in file
order and share one board: bootstrap, deploy, the daemon, a new version over MQTT, a forced
failure that rolls back, status, and last a board stopped in the middle of a deploy.
"""

from __future__ import annotations

import base64
import json
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from edgewise.edge.deploy import inventory
from tests.board.conftest import EDGE_DEPLOY, FLEET_ID, ROOT, edge_deploy
from tests.edge.security.conftest import Client, FileServer, ack_for, archive, send_command, signed_copy

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

DEVICE_ID = "pi"  # the board's name: bootstrap through an inventory name keeps it
BASE = f"edgewise/{FLEET_ID}/{DEVICE_ID}"


def on_board(board, rel: str) -> Path:
    """A path under the device's install root, seen from the host (the board's rootfs)."""
    return board.rootfs / ROOT.lstrip("/") / rel


def board_status(board) -> dict:
    result = edge_deploy("status", "--host", board.name, "--json", timeout=180)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def versions(ser_bundle, fleet, tmp_path_factory):
    """The test bundle as fleet-signed 1.0.0, 1.1.0 and 1.2.0 archives (served over https too)."""
    www = tmp_path_factory.mktemp("www")
    src = tmp_path_factory.mktemp("versions")
    made = {
        v: archive(signed_copy(ser_bundle, src / v, v, fleet["key"]), www)
        for v in ("1.0.0", "1.1.0", "1.2.0")
    }
    return {"www": www, **made}


@pytest.fixture(scope="module")
def https(versions, fleet):
    server = FileServer(versions["www"], tls=fleet["tls"])
    yield server
    server.close()


@pytest.fixture(scope="module")
def operator(fleet_broker, fleet):
    """The fleet's operator, over TLS: reads the device's topics, sends it commands."""
    client = Client(fleet_broker, *fleet["operator"], client_id="operator", ca=fleet["ca"])
    assert client.connected()
    client.subscribe(*(f"{BASE}/{kind}" for kind in ("status", "telemetry", "events", "cmd/ack")))
    yield client
    client.close()


class BoardDaemon:
    """``edgewise daemon`` on the board, started over SSH in the foreground (as a service manager
    would run it); its pid file on the board names the process, which shares the host's pids."""

    def __init__(self, board, log: Path) -> None:
        self.board = board
        self.log = log
        command = f"exec {ROOT}/venv/bin/edgewise daemon --config {ROOT}/daemon.yaml"
        with open(log, "ab") as out:
            self.proc = subprocess.Popen(
                board.target().ssh_argv(command), stdin=subprocess.DEVNULL, stdout=out, stderr=out
            )

    def pid(self, timeout: float = 120.0) -> int:
        from edgewise.edge.deploy.local import daemon_pid

        deadline = time.monotonic() + timeout
        while (pid := daemon_pid(on_board(self.board, ""))) is None:
            assert self.proc.poll() is None, f"the daemon exited ({self.proc.returncode}): {self.output()}"
            assert time.monotonic() < deadline, f"no daemon pid after {timeout} s: {self.output()}"
            time.sleep(0.5)
        return pid

    def signal(self, sig: int) -> None:
        import os

        os.kill(self.pid(), sig)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.signal(signal.SIGTERM)
        return self.proc.wait(60)

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]


@pytest.fixture(scope="module")
def daemon(bootstrapped, deployed, pi, fleet_broker, operator, speech_track, tmp_path_factory):
    """The daemon on the board, classifying a recording it finds on the board (espeak-ng sentences
    with pauses, cut by the bundle's Silero VAD running on aarch64), then serving MQTT."""
    (pi.rootfs / "root" / "speech.wav").write_bytes(speech_track.wav.read_bytes())
    config = on_board(pi, "daemon.yaml")
    settings = yaml.safe_load(config.read_text())
    settings |= {
        "telemetry_interval_s": 2.0,
        "audio": {"source": "file", "files": ["/root/speech.wav"]},
        "download": {"ca": f"{ROOT}/keys/mqtt-ca.pem"},  # the host's https server has the broker's CA
    }
    config.write_text(yaml.safe_dump(settings))
    d = BoardDaemon(pi, tmp_path_factory.mktemp("board-daemon") / "daemon.log")
    yield d
    d.stop()


@pytest.fixture(scope="module")
def deployed(bootstrapped, pi, versions, fleet):
    result = edge_deploy("--host", pi.name, versions["1.0.0"], timeout=600)
    return result


def test_bootstrap_over_ssh_installs_the_aarch64_runtimes_from_a_wheelhouse(bootstrapped, pi, fleet):
    result = bootstrapped["result"]
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "aarch64" in out and "onnxruntime" in out and "litert yes" in out and "torch absent" in out
    assert f"bootstrapped root@127.0.0.1 as {DEVICE_ID} (rpi5)" in out
    # what the board's Python runs: aarch64 builds of the runtimes, no torch
    probe = pi.ssh(
        f"{ROOT}/venv/bin/python -c 'import platform, importlib.util as u, onnxruntime, ai_edge_litert; "
        'print(platform.machine(), onnxruntime.__version__, u.find_spec("torch") is None)\'',
        timeout=120,
    ).stdout.split()
    assert probe[0] == "aarch64" and probe[2] == "True", probe
    # secure from the first boot: the fleet key, the device's own MQTT login over TLS, mode 0600
    config = on_board(pi, "daemon.yaml")
    assert oct(config.stat().st_mode & 0o777) == "0o600"
    settings = yaml.safe_load(config.read_text())
    assert settings["public_key"] == f"{ROOT}/keys/fleet.pub"
    assert settings["mqtt"]["username"] == f"{FLEET_ID}.{DEVICE_ID}"
    assert settings["mqtt"]["tls"] == {"ca": f"{ROOT}/keys/mqtt-ca.pem"}
    assert f"{FLEET_ID}.{DEVICE_ID}:" in (fleet["broker_dir"] / "passwords").read_text()
    rec = inventory.load()[DEVICE_ID]
    assert rec["profile"] == "rpi5" and rec["ssh"]["identity"] == str(pi.identity)


def test_a_signed_bundle_deploys_and_every_artifact_is_checked_on_aarch64(deployed, pi, fleet):
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    assert "deployed ser-tiny/1.0.0 to rpi5" in deployed.stdout
    info = board_status(pi)
    assert info["current"] == "ser-tiny/1.0.0"
    parity = info["parity"]
    assert parity, info
    checked = {path: r for path, r in parity["artifacts"].items() if "max_abs_diff" in r}
    # onnx fp32/int8 and tflite fp32/int8 all ran on the board's aarch64 kernels and agree with
    # the reference the export computed on x86 within each artifact's tolerance
    assert len(checked) == 4, parity
    for path, r in checked.items():
        assert r["passed"] and r["machine"] == "aarch64" and r["max_abs_diff"] <= r["tolerance"], (path, r)


def test_the_daemon_on_the_board_talks_to_the_hosts_broker_over_tls(daemon, operator, pi):
    def seen(kind, predicate=lambda p: True):
        return [p for p in operator.payloads() if p.type == kind and predicate(p)]

    assert operator.wait(lambda: seen("status", lambda p: p.state == "online" and p.model), 180), (
        daemon.output()
    )
    assert operator.wait(lambda: seen("event"), 120), daemon.output()
    event = seen("event")[0]
    assert event.source.name.endswith("speech.wav") and event.model.version == "1.0.0"
    # an MQTT infer: the audio travels in the command, the board's model answers in the ack
    wav = (pi.rootfs / "root" / "speech.wav").read_bytes()
    cmd = send_command(operator, "infer", {"wav_b64": base64.b64encode(wav).decode()}, base=BASE)
    ack = ack_for(operator, cmd, timeout=120)
    assert ack.ok, ack
    assert ack.result["label"] in ack.result["probabilities"]
    assert abs(sum(ack.result["probabilities"].values()) - 1.0) < 1e-3
    assert operator.wait(lambda: seen("telemetry", lambda p: p.inferences), 60)


def test_a_new_signed_version_arrives_over_mqtt_deploy(daemon, operator, https, versions, pi):
    cmd = send_command(operator, "deploy", {"url": https.url(versions["1.1.0"].name)}, base=BASE)
    ack = ack_for(operator, cmd, timeout=300)
    assert ack.ok and ack.result["model"] == "ser-tiny/1.1.0" and ack.result["changed"], ack
    assert operator.wait(
        lambda: any(
            p.type == "status" and p.model and p.model.version == "1.1.0" for p in operator.payloads()
        ),
        120,
    )
    # the daemon's install path checked the new version's artifacts on the board too
    parity = json.loads(next(on_board(pi, "models/ser-tiny/1.1.0").glob("parity.json")).read_text())
    assert all(r.get("machine") == "aarch64" for r in parity["artifacts"].values() if "max_abs_diff" in r)


def test_a_daemon_that_stops_answering_is_rolled_back(daemon, pi, versions):
    """SIGSTOP freezes the daemon on the board: the switch to 1.2.0 is never confirmed, so
    edge-deploy switches back and the frozen daemon, once continued, still serves 1.1.0. (A frozen
    daemon answers no timeout, so a short one: edge-deploy waits for it twice, then and after the
    switch back.)"""
    daemon.signal(signal.SIGSTOP)
    try:
        result = edge_deploy("--host", pi.name, versions["1.2.0"], "--health-timeout", "3", timeout=600)
    finally:
        daemon.signal(signal.SIGCONT)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "rolled back" in (result.stdout + result.stderr)
    info = board_status(pi)
    assert info["current"] == "ser-tiny/1.1.0" and "ser-tiny/1.2.0" in info["failed"], info


def test_edge_deploy_status_shows_the_board(daemon, pi):
    result = edge_deploy("status", "--host", pi.name, timeout=180)
    assert result.returncode == 0, result.stderr
    text = result.stdout
    assert "ser-tiny/1.1.0" in text and "aarch64" in text
    info = board_status(pi)
    assert info["health"]["model"] == "ser-tiny/1.1.0" and info["host"] == "root@127.0.0.1"


def test_a_board_stopped_during_a_deploy_fails_cleanly_and_the_next_deploy_works(
    daemon, pi, versions, capsys
):
    """The board goes away mid-deploy (its sshd and every process on it are ended): edge-deploy
    says it lost the device, nothing stays mounted or running, and after a start the next deploy
    of the same bundle completes."""
    from edgewise.board.host import mounts_under, processes_in

    daemon.stop()
    proc = subprocess.Popen(
        [str(EDGE_DEPLOY), "--host", pi.name, str(versions["1.2.0"])],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    # Cut it once it has connected and started copying: what follows on the board (unpack, verify,
    # parity under qemu) takes seconds, so the stop lands mid-deploy however fast this machine is
    # (a fixed sleep let a quiet machine finish the deploy first).
    head = []
    for line in proc.stdout:
        head.append(line)
        if line.startswith("copying "):
            break
    pi.stop()
    rest, _ = proc.communicate(timeout=120)
    out = "".join(head) + rest
    print(out)
    assert proc.returncode == 2 and "Traceback" not in out, out
    assert processes_in(pi.rootfs) == [] and mounts_under(pi.rootfs) == []
    pi.start()
    result = edge_deploy("--host", pi.name, versions["1.2.0"], timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert board_status(pi)["current"] == "ser-tiny/1.2.0"
    assert not list(on_board(pi, "models/ser-tiny").glob(".*partial*"))  # what the cut left, removed
