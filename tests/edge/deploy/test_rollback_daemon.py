"""edge-deploy against the real daemon: a bundle the daemon cannot load, and a daemon that does not
answer, are rolled back, and the daemon keeps serving the previous version.

Everything is real: a Mosquitto broker, an ``edgewise daemon`` process, the ``edge-deploy``
command, signed bundles, real signals. In the first test the new bundle is correctly signed and
every checksum holds, but its int8 ONNX model is not a model onnxruntime can load. edge-deploy's
own pre-flight on ``x86-local`` passes (that profile also runs the intact fp32 model), while the
daemon's device profile runs only int8 ONNX: the load fails in the daemon, after the switch, which
is the case the automatic rollback exists for. A hung daemon is a real one stopped with SIGSTOP.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edgewise.bundle import generate_keypair, sign_manifest
from tests.edge.daemon.conftest import (
    TOPICS,
    ack_for,
    command,
    daemons,  # noqa: F401  (fixture)
)
from tests.edge.telemetry.conftest import broker, make_broker, subscribe  # noqa: F401  (fixtures)

from .conftest import V1, V2, current_key, state, with_version

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

EDGE_DEPLOY = Path(sys.executable).parent / "edge-deploy"
BROKEN = "models/ser.int8-dynamic.onnx"
INT8_ONLY = """\
name: x86-int8-only
description: a device profile that runs int8 ONNX only
arch: x86_64
runtimes:
  - {format: onnx, precision: int8, quant: dynamic}
threads: 1
memory_budget_mb: 256
install_root: /opt/edgewise
"""


def signed(bundle: Path, key: Path) -> Path:
    (bundle / "manifest.sig").unlink(missing_ok=True)
    sign_manifest(bundle, key)
    return bundle


def with_unloadable_model(src: Path, dest: Path, key: Path | None = None) -> Path:
    """Version 2.0.0 of ``src`` whose int8 ONNX file is half a model: its size and sha256 are
    recorded in the manifest (signed with ``key`` when given), so only loading it can tell."""
    bundle = with_version(src, dest, "2.0.0")
    path = bundle / BROKEN
    data = path.read_bytes()[: path.stat().st_size // 2]
    path.write_bytes(data)
    manifest = json.loads((bundle / "manifest.json").read_text())
    arts = [a for m in manifest["models"].values() for a in m["artifacts"] if a["path"] == BROKEN]
    assert len(arts) == 1
    arts[0].update(size_bytes=len(data), sha256=hashlib.sha256(data).hexdigest())
    (bundle / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    (bundle / "manifest.sig").unlink(missing_ok=True)  # the old signature no longer holds
    return signed(bundle, key) if key else bundle


def deploy_args(root: Path, bundle: Path, key: Path, health_timeout: float) -> list[str]:
    args = [EDGE_DEPLOY, "--device", "local", "--root", root, bundle, "--key", key]
    return [str(a) for a in [*args, "--health-timeout", health_timeout]]


def edge_deploy(
    root: Path, bundle: Path, key: Path, health_timeout: float = 60
) -> subprocess.CompletedProcess:
    return subprocess.run(
        deploy_args(root, bundle, key, health_timeout), capture_output=True, text=True, timeout=150
    )


@pytest.fixture
def fleet(tmp_path, ser_bundle):
    """A fleet key pair, v1 signed with it, and a device root with v1 deployed (no daemon yet)."""
    generate_keypair(tmp_path / "fleet.key", tmp_path / "fleet.pub")
    key = tmp_path / "fleet.key"
    v1 = signed(with_version(ser_bundle, tmp_path / "bundles" / "ser-tiny-1.0.0", "1.0.0"), key)
    root = tmp_path / "root"
    first = edge_deploy(root, v1, tmp_path / "fleet.pub")  # no daemon yet: checked in-process
    assert first.returncode == 0, first.stdout + first.stderr
    return {"root": root, "key": key, "pub": tmp_path / "fleet.pub", "v1": v1, "dir": tmp_path / "bundles"}


def start_daemon(fleet, mqtt_broker, make_daemon, device: str = "x86-local"):
    d = make_daemon(
        fleet["root"],
        mqtt_broker,
        {"source": "stdin", "stdin_format": "raw"},
        device=device,
        public_key=str(fleet["pub"]),
    )
    d.start(stdin=subprocess.PIPE)
    d.wait_health(lambda h: h["ok"] and h["model"] == V1)
    return d


def assert_serves_v1(d, mqtt_broker, sub, cmd_id: str, since: float) -> None:
    """The daemon's own report and an MQTT status command both say it runs v1."""
    health = d.wait_health(lambda h: h["ok"] and h["model"] == V1, after=since)
    assert health["pid"] == d.proc.pid
    command(mqtt_broker, "status", cmd_id=cmd_id)
    ack = ack_for(sub, cmd_id)
    assert ack.ok and ack.result["running"] == V1, ack
    assert d.proc.poll() is None


def test_a_bundle_the_daemon_cannot_load_is_rolled_back_and_the_daemon_keeps_serving(
    tmp_path,
    ser_bundle,
    fleet,
    broker,  # noqa: F811  (fixtures imported above)
    subscribe,  # noqa: F811
    daemons,  # noqa: F811
):
    v2 = with_unloadable_model(ser_bundle, fleet["dir"] / "ser-tiny-2.0.0", fleet["key"])
    profile = tmp_path / "x86-int8-only.yaml"
    profile.write_text(INT8_ONLY)
    sub = subscribe(broker, TOPICS)
    d = start_daemon(fleet, broker, daemons, device=str(profile))

    t0 = time.time()
    result = edge_deploy(fleet["root"], v2, fleet["pub"])
    out, err = result.stdout, result.stderr
    assert result.returncode == 2, out + err
    # the pre-flight passed and the switch happened: the failure is the daemon's
    assert f"switched current: {V1} -> {V2}" in out, out
    assert f"asked the daemon (pid {d.proc.pid}) to load {V2}" in out, out
    assert f"{V2} failed its health check: the daemon could not load {V2}: " in err, err
    assert "ser.int8-dynamic.onnx" in err, err  # the reason names the model that did not load
    assert err.strip().endswith(f"rolled back to {V1}"), err
    assert f"the daemon runs {V1} again" in out, out

    root = fleet["root"]
    assert current_key(root) == V1
    st = state(root)
    assert st["failed"] == [V2] and st["last_good"] == V1
    health = d.health()
    assert (health["pid"], health["ok"], health["model"]) == (d.proc.pid, True, V1)
    assert health["ts"] > t0  # a report made after the rollback, not the one from its start

    # the daemon reported the failed load and still answers, on the previous version
    errors = sub.wait_for(lambda ps: any(p.type == "error" and p.code == "model_load" for p in ps))
    assert any(V2 in p.message for p in errors if p.type == "error")
    assert_serves_v1(d, broker, sub, "after-rollback", t0)
    assert d.stop() == 0


def test_a_daemon_that_does_not_answer_in_time_is_rolled_back(
    ser_bundle,
    fleet,
    broker,  # noqa: F811  (fixtures imported above)
    subscribe,  # noqa: F811
    daemons,  # noqa: F811
):
    """A hung daemon (stopped with SIGSTOP) never reports on v2: edge-deploy rolls back after the
    health timeout and says the daemon has not confirmed v1 either; once it runs again it serves v1."""
    v2 = signed(with_version(ser_bundle, fleet["dir"] / "ser-tiny-2.0.0", "2.0.0"), fleet["key"])
    sub = subscribe(broker, TOPICS)
    d = start_daemon(fleet, broker, daemons)
    d.signal(signal.SIGSTOP)
    try:
        t0 = time.monotonic()
        result = edge_deploy(fleet["root"], v2, fleet["pub"], health_timeout=0.5)
        assert result.returncode == 2 and time.monotonic() - t0 < 30, result.stdout + result.stderr
        err = result.stderr
        assert f"no health report on {V2} from the daemon (pid {d.proc.pid}) within 0.5 s" in err, err
        assert f"rolled back to {V1}" in err and f"the daemon has not confirmed {V1} either" in err, err
        assert current_key(fleet["root"]) == V1 and state(fleet["root"])["failed"] == [V2]
    finally:
        resumed = time.time()
        d.signal(signal.SIGCONT)
    assert_serves_v1(d, broker, sub, "after-hang", resumed)
    assert d.stop() == 0


def test_ctrl_c_while_waiting_for_the_daemon_switches_back(
    ser_bundle,
    fleet,
    broker,  # noqa: F811  (fixtures imported above)
    subscribe,  # noqa: F811
    daemons,  # noqa: F811
):
    v2 = signed(with_version(ser_bundle, fleet["dir"] / "ser-tiny-2.0.0", "2.0.0"), fleet["key"])
    sub = subscribe(broker, TOPICS)
    d = start_daemon(fleet, broker, daemons)
    d.signal(signal.SIGSTOP)  # it will not answer: edge-deploy waits
    try:
        proc = subprocess.Popen(
            deploy_args(fleet["root"], v2, fleet["pub"], 60),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONFAULTHANDLER": "1"},  # SIGABRT below prints every thread's stack
            # A test run started in the background by a non-interactive shell inherits SIGINT
            # ignored, and Python then leaves it ignored: give the child the default, as a terminal would.
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
        lines = []
        for line in proc.stdout:  # wait until it is past the switch, waiting on the daemon
            lines.append(line)
            if "waiting up to 60 s" in line:
                break
        assert current_key(fleet["root"]) == V2, lines
        proc.send_signal(signal.SIGINT)
        try:
            out, err = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:  # say where it hangs
            proc.send_signal(signal.SIGABRT)
            out, err = proc.communicate(timeout=30)
            pytest.fail(f"edge-deploy did not stop after SIGINT; its stacks:\n{err}\nstdout:\n{out}")
        assert proc.returncode == 130, err
        assert f"switched back to {V1}" in out and err.strip() == "edge-deploy: interrupted"
        assert current_key(fleet["root"]) == V1
        assert V2 not in state(fleet["root"])["failed"]  # interrupted is not failed
    finally:
        resumed = time.time()
        d.signal(signal.SIGCONT)
    assert_serves_v1(d, broker, sub, "after-ctrl-c", resumed)
    assert d.stop() == 0
