"""Registry to device, everything real: Mosquitto, an ingest worker, ``edgewise cloud serve`` with
the registry and the fleet store, a device daemon, and the ``edgewise registry`` commands.

A promoted version travels as a deploy command; the daemon downloads it from the registry over
https (with the promotion's download token), checks it, switches and acks, and the registry shows
the device on the new version. A promoted version the device cannot load is rolled back on the
device, and the registry shows the failure and the version the device went back to.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from edgewise.cloud.fleet.harness import IngestProcess
from edgewise.cloud.serve.auth import hash_token, new_token, write_secret
from edgewise.devtools.mosquitto import free_port
from edgewise.devtools.tls import self_signed_cert
from edgewise.edge.install import activate, install_bundle
from tests.cloud.serve.conftest import ServerProcess
from tests.edge.deploy.test_rollback_daemon import INT8_ONLY, with_unloadable_model
from tests.edge.security.conftest import signed_copy, start_daemon
from tests.edge.telemetry.conftest import DEVICE, FLEET

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def registry_cli(server: ServerProcess, *args: str) -> subprocess.CompletedProcess:
    token_file = server.config.parent / "client" / "token"
    env_args = ["--url", server.url, "--token-file", str(token_file), "--ca", str(server.ca)]
    return subprocess.run(
        [sys.executable, "-m", "edgewise", "registry", *args, *env_args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def cloud(tmp_path, broker, keys):
    """The serve folder (certificate, token, config with mqtt, fleet and registry), the ingest
    worker and the server, all on loopback."""
    folder = tmp_path / "cloud"
    cert, _ = self_signed_cert(folder / "tls")
    token = new_token()
    (folder / "tokens.sha256").write_text(hash_token(token) + "\n")
    write_secret(folder / "client" / "token", token + "\n")
    config = {
        "host": "127.0.0.1",
        "port": free_port(),
        "models": [],
        "mqtt": {"host": broker.host, "port": broker.port},
        "fleet": {"store": "fleet.sqlite"},
        "registry": {"root": "registry", "public_key": str(keys["fleet"]["pub"])},
    }
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    ingest = IngestProcess(
        ["--host", broker.host, "--port", str(broker.port), "--store", str(folder / "fleet.sqlite")],
        tmp_path / "ingest.log",
    )
    ingest.wait_subscribed()
    server = ServerProcess(folder / "config.yaml", tmp_path / "serve.log").start()
    yield {"server": server, "cert": cert, "ingest": ingest}
    server.stop()
    ingest.terminate()
    ingest.close()


def fleet_status(server: ServerProcess) -> dict:
    result = registry_cli(server, "status", "--fleet", FLEET, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def device_row(server: ServerProcess) -> dict | None:
    return next((d for d in fleet_status(server)["devices"] if d["device"] == DEVICE), None)


def test_a_promoted_version_reaches_the_device_and_a_broken_one_is_rolled_back(
    cloud,
    broker,
    daemons,
    keys,
    ser_bundle,
    tmp_path,
):
    server, fleet_key = cloud["server"], keys["fleet"]
    src = tmp_path / "src"
    v1 = signed_copy(ser_bundle, src / "v1", "1.0.0", fleet_key["key"])
    v11 = signed_copy(ser_bundle, src / "v11", "1.1.0", fleet_key["key"])
    unsigned = signed_copy(ser_bundle, src / "u", "1.5.0", None)
    broken = with_unloadable_model(ser_bundle, src / "ser-tiny-2.0.0", fleet_key["key"])

    # the device runs 1.0.0; its profile runs int8 ONNX only, so 2.0.0 fails only when it loads
    root = tmp_path / "device-root"
    activate(root, install_bundle(root, v1))
    profile = tmp_path / "x86-int8-only.yaml"
    profile.write_text(INT8_ONLY)
    start_daemon(
        daemons,
        root,
        broker,
        device=str(profile),
        public_key=str(fleet_key["pub"]),
        download={"ca": str(cloud["cert"])},
    )
    wait_for(lambda: (row := device_row(server)) and row["running"], 60, "the store to learn the device")
    assert device_row(server)["running"] == {"name": "ser-tiny", "version": "1.0.0"}

    # pushes: signed ones are stored; an unsigned one is refused with the reason
    for bundle in (v11, broken):
        result = registry_cli(server, "push", str(bundle))
        assert result.returncode == 0 and "stored" in result.stdout, result.stderr
    result = registry_cli(server, "push", str(unsigned))
    assert result.returncode == 2 and "the bundle is not signed" in result.stderr, result.stderr
    listed = registry_cli(server, "list", "ser-tiny")
    assert [line.split()[1] for line in listed.stdout.splitlines()[1:]] == ["1.1.0", "2.0.0"]

    # promote 1.1.0: the device pulls it from the registry, verifies, switches, acks
    result = registry_cli(server, "promote", "ser-tiny", "1.1.0", "--fleet", FLEET)
    assert result.returncode == 0 and f"sent: {DEVICE}" in result.stdout, result.stdout + result.stderr
    row = wait_for(
        lambda: (r := device_row(server)) and r["state"] == "current" and r["ack"] and r,
        120,
        "1.1.0 to arrive",
    )
    assert row["running"] == {"name": "ser-tiny", "version": "1.1.0"} and row["ack"]["ok"]
    assert (root / "current").resolve().name == "1.1.0"

    # promote the broken 2.0.0: the daemon rolls back to 1.1.0 and the registry shows it
    result = registry_cli(server, "promote", "ser-tiny", "2.0.0", "--fleet", FLEET)
    assert result.returncode == 0, result.stdout + result.stderr
    row = wait_for(lambda: (r := device_row(server)) and r["state"] == "failed" and r, 120, "the rollback")
    assert "rolled back to ser-tiny/1.1.0" in row["ack"]["error"], row
    assert row["running"] == {"name": "ser-tiny", "version": "1.1.0"}
    assert (root / "current").resolve().name == "1.1.0"
    text = registry_cli(server, "status", "--fleet", FLEET).stdout
    assert f"{FLEET}: target ser-tiny 2.0.0" in text and "failed" in text and "rolled back" in text

    # the archive is not public: no token, no download; the promotion's token opens only its version
    status, _, _ = server.request("GET", "/registry/v1/bundles/ser-tiny/1.1.0/archive", auth=False)
    assert status == 401
    pulled = registry_cli(
        server, "pull", "ser-tiny", "1.1.0", "--out", str(tmp_path / "pulled"), "--key", str(fleet_key["pub"])
    )
    assert pulled.returncode == 0 and "signature verified" in pulled.stdout, pulled.stderr
    assert Path(tmp_path / "pulled" / "ser-tiny-1.1.0.tar.gz").is_file()
