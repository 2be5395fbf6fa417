"""edge-deploy over ssh: a real OpenSSH server on 127.0.0.1 stands for the device (this same machine).

The "device" root's venv/bin/edge-deploy is this project's, so the remote side of every test is the
real device-side run; only the network is a loopback.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from edgewise.devtools.mosquitto import free_port
from edgewise.edge.deploy import inventory
from tests.edge.daemon.conftest import daemons  # noqa: F401  (fixture)
from tests.edge.telemetry.conftest import broker, make_broker  # noqa: F401  (fixtures)

from .conftest import V1, V2, current_key, run_cli, state
from .test_rollback_daemon import INT8_ONLY, with_unloadable_model

pytestmark = pytest.mark.slow


def test_an_unreachable_host_is_one_clear_line_quickly(capsys, bundles):
    port = free_port()  # nothing listens there
    t0 = time.monotonic()
    rc, out, err = run_cli(
        capsys, "--device", "local", "--host", "root@127.0.0.1", "--port", port, bundles["v1"]
    )
    assert rc == 2 and time.monotonic() - t0 < 10
    assert (
        err
        == f"edge-deploy: error: cannot reach root@127.0.0.1:{port}: connect to host 127.0.0.1 port {port}: Connection refused\n"
    )
    rc, _, err = run_cli(capsys, "status", "--device", "local", "--host", "root@127.0.0.1", "--port", port)
    assert rc == 2 and err.startswith(f"edge-deploy: error: cannot reach root@127.0.0.1:{port}: ")


def test_a_bad_host_spec_is_refused_before_ssh_runs(capsys):
    rc, _, err = run_cli(capsys, "status", "--device", "local", "--host", "-oProxyCommand=touch /tmp/x")
    assert rc == 2 and "expected user@address or address" in err


def test_deploy_rollback_and_status_over_ssh(capsys, sshd, device_root, bundles, inventory_file):
    ssh = [*sshd["flags"], "--device", "local", "--root", device_root]
    # v1 goes as the archive beside its folder; v2 has none, so a fresh one is packed
    rc, out, err = run_cli(capsys, *ssh, bundles["v1"])
    assert rc == 0, out + err
    assert "copying ser-tiny-1.0.0.tar.gz" in out and "packing" not in out
    assert f"[{sshd['host']}] no daemon running" in out
    assert f"[{sshd['host']}] deployed {V1} to x86-local at {device_root}" in out
    assert current_key(device_root) == V1
    assert list((device_root / "incoming").iterdir()) == []  # the copied archive is removed afterwards

    rc, out, err = run_cli(capsys, *ssh, bundles["v2"])
    assert rc == 0, out + err
    assert "packing" in out and current_key(device_root) == V2

    rc, out, err = run_cli(capsys, "status", *ssh, "--json")
    info = json.loads(out)
    assert rc == 0 and (info["current"], info["previous"], info["host"]) == (V2, V1, sshd["host"])

    rc, out, err = run_cli(capsys, "rollback", *ssh)
    assert rc == 0, out + err
    assert f"[{sshd['host']}] rolled back x86-local at {device_root} to {V1}" in out
    assert current_key(device_root) == V1

    devices = inventory.load(inventory_file)
    assert list(devices) == ["127.0.0.1"]
    rec = devices["127.0.0.1"]
    assert (rec["host"], rec["port"], rec["profile"], rec["root"]) == (
        sshd["host"],
        sshd["port"],
        "x86-local",
        str(device_root),
    )
    assert rec["installed"] == V1 and rec["last_run"]["action"] == "rollback" and rec["last_run"]["ok"]
    rc, out, _ = run_cli(capsys, "devices")
    assert rc == 0 and out.splitlines()[1].split()[:4] == [
        "127.0.0.1",
        f"{sshd['host']}:{sshd['port']}",
        "x86-local",
        V1,
    ]


def test_a_signed_bundle_is_checked_with_the_key_on_both_sides(capsys, sshd, device_root, bundles, tmp_path):
    from edgewise.bundle import generate_keypair, sign_manifest

    generate_keypair(tmp_path / "fleet.key", tmp_path / "fleet.pub")
    signed = shutil.copytree(bundles["v2"], tmp_path / "ser-tiny-2.0.0")
    sign_manifest(signed, tmp_path / "fleet.key")
    rc, out, err = run_cli(
        capsys,
        *sshd["flags"],
        "--device",
        "local",
        "--root",
        device_root,
        signed,
        "--key",
        tmp_path / "fleet.pub",
    )
    assert rc == 0, out + err
    assert f"[{sshd['host']}] {V2}: verified (5 artifacts, signature verified)" in out


def test_the_devices_exit_code_and_error_come_back(capsys, sshd, device_root, bundles):
    """rpi5's pre-flight passes here (the bundle has TFLite), but the device run sees an x86 machine."""
    rc, out, err = run_cli(capsys, *sshd["flags"], "--device", "rpi5", "--root", device_root, bundles["v1"])
    assert rc == 2
    assert f"[{sshd['host']}] edge-deploy: error: device rpi5 is aarch64 but this machine is x86_64" in err
    assert current_key(device_root) is None and not (device_root / "state.json").exists()


def test_a_failed_health_check_on_the_device_rolls_back_there(
    capsys,
    sshd,
    device_root,
    bundles,
    tmp_path,
    broker,  # noqa: F811  (fixtures imported above)
    daemons,  # noqa: F811
):
    """The real daemon on the device cannot load v2 (see tests/edge/deploy/test_rollback_daemon.py):
    edge-deploy, run there over ssh, rolls back there."""
    ssh = [*sshd["flags"], "--device", "local", "--root", device_root]
    assert run_cli(capsys, *ssh, bundles["v1"])[0] == 0
    profile = tmp_path / "x86-int8-only.yaml"
    profile.write_text(INT8_ONLY)
    d = daemons(device_root, broker, {"source": "stdin", "stdin_format": "raw"}, device=str(profile))
    d.start(stdin=subprocess.PIPE)
    d.wait_health(lambda h: h["ok"] and h["model"] == V1)
    v2 = with_unloadable_model(bundles["v1"], tmp_path / "ser-tiny-2.0.0")
    rc, out, err = run_cli(capsys, *ssh, v2)
    assert rc == 2
    assert f"[{sshd['host']}] edge-deploy: error: {V2} failed its health check" in err
    assert current_key(device_root) == V1 and state(device_root)["failed"] == [V2]
    assert d.health()["ok"] and d.health()["model"] == V1 and d.proc.poll() is None


def test_a_device_that_was_never_bootstrapped_says_so(capsys, sshd, tmp_path, bundles):
    rc, _, err = run_cli(
        capsys, *sshd["flags"], "--device", "local", "--root", tmp_path / "bare", bundles["v1"]
    )
    assert rc == 2
    assert f"{tmp_path / 'bare'}/venv/bin/edge-deploy not found: bootstrap the device first" in err
    assert not (tmp_path / "bare" / "incoming").exists()  # nothing was copied


def test_an_inventory_name_stands_for_its_host_profile_and_root(capsys, sshd, device_root, bundles):
    inventory.update("bench-pc", sshd["host"], sshd["port"], profile="x86-local", root=str(device_root))
    flags = [f for f in sshd["flags"] if f not in (sshd["host"], "--host", "--port", str(sshd["port"]))]
    rc, out, err = run_cli(capsys, *flags, "--host", "bench-pc", bundles["v1"])
    assert rc == 0, out + err
    assert current_key(device_root) == V1
    assert inventory.load()["bench-pc"]["installed"] == V1


def test_bootstrap_over_ssh_without_pip_installs(capsys, sshd, tmp_path, inventory_file):
    """The real plan runs through sshd with --skip-install (no pip downloads in tests): the venv is
    made without pip, daemon.yaml is written, and the unit step fails (no edgewise in that venv),
    which bootstrap tolerates and reports."""
    root = tmp_path / "fresh"
    args = [
        *sshd["flags"],
        "--device",
        "local",
        "--root",
        root,
        "--bootstrap",
        "--skip-install",
        "--insecure-no-key",
    ]
    inventory.update("taken", "pi@10.9.9.9", 22, profile="rpi5")
    rc, _, err = run_cli(capsys, *args, "--device-id", "taken")
    assert rc == 2 and "device id 'taken' already names pi@10.9.9.9:22" in err and not root.exists()
    rc, out, err = run_cli(
        capsys, *args, "--mqtt-host", "broker.lan", "--fleet", "lab", "--device-id", "bench-1"
    )
    assert rc == 0, out + err
    assert (root / "venv" / "bin" / "python").exists() and (root / "incoming").is_dir()
    config = (root / "daemon.yaml").read_text()
    assert "host: broker.lan" in config and "fleet: lab" in config and "device: bench-1" in config
    assert "not done: install the systemd unit" in out
    assert out.splitlines()[-1] == "next: edge-deploy --host bench-1 BUNDLE"
    try:  # the daemon's own config loader accepts what bootstrap wrote, when the daemon is there
        from edgewise.edge.daemon import load_daemon_config
    except ImportError:
        pass
    else:
        cfg, telemetry = load_daemon_config(root / "daemon.yaml")
        assert (cfg.device, cfg.root, telemetry.device, telemetry.fleet) == (
            "x86-local",
            root,
            "bench-1",
            "lab",
        )
    rec = inventory.load(inventory_file)["bench-1"]
    assert (rec["host"], rec["profile"], rec["root"]) == (sshd["host"], "x86-local", str(root))
    # the SSH options bootstrap used are remembered: the device answers by name without them (its
    # venv has no edge-deploy with --skip-install, which it says over SSH; unremembered, the login
    # would fail: "cannot reach")
    identity = sshd["flags"][sshd["flags"].index("--identity") + 1]
    assert rec["ssh"]["identity"] == str(Path(identity).resolve())
    rc, out, err = run_cli(capsys, "status", "--host", "bench-1")
    assert rc == 2 and "bootstrap the device first" in err and "cannot reach" not in err, out + err
    # again: every step is safe to repeat, and an existing daemon.yaml is kept
    (root / "daemon.yaml").write_text(config + "# edited\n")
    rc, out, _ = run_cli(capsys, *args)
    assert rc == 0 and "kept the existing" in out
    assert (root / "daemon.yaml").read_text().endswith("# edited\n")


def test_a_profile_yaml_from_this_machine_goes_to_the_device(capsys, sshd, device_root, bundles, tmp_path):
    from edgewise.devices import _profile_dir

    profile = tmp_path / "bench-box.yaml"
    profile.write_text(
        (_profile_dir() / "x86-local.yaml").read_text().replace("name: x86-local", "name: bench-box")
    )
    rc, out, err = run_cli(capsys, *sshd["flags"], "--device", profile, "--root", device_root, bundles["v1"])
    assert rc == 0, out + err
    assert f"[{sshd['host']}] deployed {V1} to bench-box at {device_root}" in out
    assert (device_root / "incoming" / "bench-box.yaml").is_file()


def test_copy_tree_streams_a_folder_through_the_session(sshd, tmp_path):
    """One tar stream through the real sshd: the chosen files arrive byte for byte (a 24 MB one
    among them), ``replace`` removes what an earlier copy left, and a remote
    folder that cannot be made is one clear error."""
    import os

    from edgewise.edge.deploy import DeployError
    from edgewise.edge.deploy.ssh import SSHSession, SSHTarget

    src = tmp_path / "wheels"
    (src / "sub").mkdir(parents=True)
    (src / "big-1.0-py3-none-any.whl").write_bytes(os.urandom(24 * 1024 * 1024))
    (src / "small-1.0-py3-none-any.whl").write_bytes(b"small")
    (src / "sub" / "nested.txt").write_text("nested\n")
    (src / "not-sent.txt").write_text("left here\n")
    dest = tmp_path / "device" / "incoming" / "wheels"
    dest.mkdir(parents=True)
    (dest / "stale-0.9-py3-none-any.whl").write_bytes(b"from an older wheelhouse")
    identity = sshd["flags"][sshd["flags"].index("--identity") + 1]
    target = SSHTarget(
        sshd["host"], sshd["port"], identity=Path(identity), known_hosts=sshd["dir"] / "known_hosts"
    )
    files = ["big-1.0-py3-none-any.whl", "small-1.0-py3-none-any.whl", "sub/nested.txt"]
    with SSHSession(target) as session:
        sent = session.copy_tree(src, str(dest), files, replace=True)
        assert sent == sum((src / f).stat().st_size for f in files)
        assert sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file()) == sorted(files)
        for f in files:
            assert (dest / f).read_bytes() == (src / f).read_bytes(), f
        session.copy_tree(src / "sub", str(tmp_path / "more"))  # the whole folder, into a new one
        assert (tmp_path / "more" / "nested.txt").read_text() == "nested\n"
        blocker = tmp_path / "a-file"
        blocker.write_text("")
        with pytest.raises(DeployError, match=r"copying .* failed: unpacking there: .*a-file"):
            session.copy_tree(src, str(blocker / "wheels"), ["small-1.0-py3-none-any.whl"])
