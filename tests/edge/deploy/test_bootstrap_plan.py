"""The bootstrap plan and the inventory, without ssh: plain shell steps and JSON, read as data."""

from __future__ import annotations

import dataclasses
import json
import os
import pwd
import shlex
import subprocess

import pytest
import yaml

from edgewise.devices import load_profile
from edgewise.edge.deploy import DeployError, inventory
from edgewise.edge.deploy.bootstrap import (
    NO_JETSON_WHEELS,
    BootstrapOptions,
    check_facts,
    daemon_yaml,
    parse_facts,
    plan,
    probe_script,
)
from edgewise.edge.deploy.ssh import SSHTarget, shell_path

from .conftest import run_cli

INDEX = "https://pypi.example.org/jp6/cu126"
GOOD_FACTS = {
    "os": "Ubuntu 22.04",
    "arch": "aarch64",
    "python": "3.10.12",
    "venv": "yes",
    "service_user": "yes",
}
GOOD_FACTS |= {"systemd": "yes", "tegra": "# R36 (release), REVISION: 4.0", "root": "/opt/edgewise"}


def step(steps, title_start):
    return next(s for s in steps if s.title.startswith(title_start))


def test_jetson_venv_sees_jetpack_and_gets_gpu_onnxruntime_from_the_index():
    steps = plan(BootstrapOptions(load_profile("jetson"), "/opt/edgewise", wheel_index=INDEX))
    assert (
        "python3 -m venv --system-site-packages /opt/edgewise/venv"
        in step(steps, "create the virtual").command
    )
    gpu = step(steps, "install onnxruntime-gpu").command
    assert f"pip install -q onnxruntime-gpu --extra-index-url {INDEX}" in gpu
    assert "pip uninstall -q -y onnxruntime;" in gpu
    titles = [s.title for s in steps]
    assert titles.index("install edgewise[edge]") < titles.index(
        "install onnxruntime-gpu from the Jetson wheel index"
    )
    assert step(steps, "install the systemd unit").tolerate


def test_rpi5_gets_a_plain_venv_and_no_gpu_wheels():
    steps = plan(BootstrapOptions(load_profile("rpi5"), "/opt/edgewise", wheel_index=INDEX))
    venv = step(steps, "create the virtual").command
    assert "python3 -m venv /opt/edgewise/venv" in venv and "system-site-packages" not in venv
    assert not any("onnxruntime-gpu" in (s.command or "") for s in steps)
    assert (
        "/opt/edgewise/venv/bin/python -m pip install -q 'edgewise[edge]'"
        in step(steps, "install edgewise").command
    )
    unit = step(steps, "install the systemd unit").command
    assert (
        "/opt/edgewise/venv/bin/edgewise daemon install-unit --config /opt/edgewise/daemon.yaml "
        '--user "$(id -un)"' in unit  # the login user, who owns the root: deploys can signal it
    )


def test_a_jetson_without_a_wheel_index_is_told_pypi_has_no_gpu_wheels():
    opts = BootstrapOptions(load_profile("jetson"), "/opt/edgewise")
    assert not any("onnxruntime-gpu" in (s.command or "") for s in plan(opts))
    notes = check_facts(GOOD_FACTS, opts, "nv@jetson:22")
    assert NO_JETSON_WHEELS in notes and "PyPI has no onnxruntime GPU wheels for Jetson" in NO_JETSON_WHEELS


def test_a_device_that_cannot_run_edgewise_is_refused_with_every_reason():
    opts = BootstrapOptions(load_profile("jetson-nano"), "/opt/edgewise")
    facts = {**GOOD_FACTS, "arch": "x86_64", "python": "3.6.9"}
    with pytest.raises(DeployError) as err:
        check_facts(facts, opts, "nv@nano:22")
    msg = str(err.value)
    assert msg.startswith("nv@nano:22 cannot run edgewise as jetson-nano:")
    assert "the device is x86_64, but profile jetson-nano is aarch64: wrong --device?" in msg
    assert "python3 is 3.6.9; edgewise needs Python >= 3.10 (JetPack 4 ships Python 3.6" in msg


def test_a_32_bit_pi_os_is_named():
    with pytest.raises(DeployError, match=r"armv7l, but profile rpi5 is aarch64 \(a 32-bit OS"):
        check_facts(
            {**GOOD_FACTS, "arch": "armv7l"}, BootstrapOptions(load_profile("rpi5"), "/opt/edgewise"), "pi"
        )


def test_a_local_wheel_is_copied_over_and_installed_with_its_extras(tmp_path):
    wheel = tmp_path / "edgewise-0.1.0-py3-none-any.whl"
    wheel.write_bytes(b"not really a wheel")
    steps = plan(BootstrapOptions(load_profile("rpi5"), "/opt/edgewise", edgewise_spec=f"{wheel}[edge]"))
    copy = step(steps, "copy edgewise-0.1.0")
    assert copy.upload == (wheel, "/opt/edgewise/incoming/edgewise-0.1.0-py3-none-any.whl")
    install = step(steps, "install /opt/edgewise/incoming/").command
    assert install.endswith("pip install -q '/opt/edgewise/incoming/edgewise-0.1.0-py3-none-any.whl[edge]'")


def test_skip_install_makes_a_venv_without_pip_and_no_pip_steps():
    steps = plan(BootstrapOptions(load_profile("x86-local"), "~/.local/share/edgewise", skip_install=True))
    assert not any("pip" in s.title for s in steps)
    venv = step(steps, "create the virtual").command
    assert (
        venv
        == 'test -x "$HOME"/.local/share/edgewise/venv/bin/python || python3 -m venv --without-pip "$HOME"/.local/share/edgewise/venv'
    )


def test_every_step_is_plain_shell():
    for s in plan(BootstrapOptions(load_profile("jetson"), "/opt/edge wise", wheel_index=INDEX)):
        if s.command:
            words = shlex.split(s.command)  # balanced quoting
            assert not any(w == "/opt/edge" or w.startswith("wise/") for w in words), s.command  # one word


def test_daemon_yaml_is_a_valid_daemon_config():
    opts = BootstrapOptions(load_profile("rpi5"), "/opt/edgewise", fleet="kitchen")
    text = daemon_yaml(opts, "pi-7", public_key="/opt/edgewise/keys/fleet.pub")
    data = yaml.safe_load(text)
    assert data == {
        "device": "rpi5",
        "root": "/opt/edgewise",
        "public_key": "/opt/edgewise/keys/fleet.pub",
        "mqtt": {"host": "localhost", "port": 8883, "fleet": "kitchen", "device": "pi-7", "tls": {}},
    }
    assert "# placeholders to fill in: mqtt.host (--mqtt-host)" in text
    try:  # the lead's daemon config, when it is there
        from edgewise.config import load_config
        from edgewise.edge.daemon import DaemonConfig
    except ImportError:
        return
    assert load_config(DaemonConfig, data).device == "rpi5"


def test_dry_run_prints_the_plan_without_connecting(capsys):
    rc, out, _ = run_cli(
        capsys, "--device", "jetson", "--bootstrap", "--dry-run", "--wheel-index", INDEX, "--insecure-no-key"
    )
    assert rc == 0
    assert "# [2] create the virtual environment (with system site packages: JetPack's TensorRT)" in out
    assert "--extra-index-url" in out and "(failure tolerated)" in out


def test_shell_path_expands_home_on_the_device_only():
    assert shell_path("~/.local/share/edgewise") == '"$HOME"/.local/share/edgewise'
    assert shell_path("/opt/edge wise") == "'/opt/edge wise'"


def test_ssh_options_are_batch_mode_with_the_chosen_host_key_policy(tmp_path):
    kh = tmp_path / "known_hosts"
    argv = SSHTarget(
        "pi@10.0.0.7", 2222, host_key_checking="yes", known_hosts=kh, connect_timeout=3
    ).ssh_argv("true")
    joined = " ".join(argv)
    assert argv[:3] == ["ssh", "-p", "2222"] and argv[-3:] == ["--", "pi@10.0.0.7", "true"]
    for opt in ("BatchMode=yes", "ConnectTimeout=3", "StrictHostKeyChecking=yes", f"UserKnownHostsFile={kh}"):
        assert f"-o {opt}" in joined


def test_inventory_updates_in_place_and_lists(inventory_file):
    assert inventory.load() == {}
    name = inventory.update(None, "pi@10.0.0.7", 22, profile="rpi5", root="/opt/edgewise")
    assert name == "10.0.0.7"
    inventory.update(
        None,
        "10.0.0.7",
        22,
        installed="ser-tiny/1.0.0",
        health={"ok": True, "model": "ser-tiny/1.0.0", "ts": 0},
    )
    devices = json.loads(inventory_file.read_text())["devices"]
    assert list(devices) == ["10.0.0.7"] and devices["10.0.0.7"]["profile"] == "rpi5"
    assert devices["10.0.0.7"]["installed"] == "ser-tiny/1.0.0"
    table = inventory.format_table(devices, now=120).splitlines()
    assert table[0].split() == ["NAME", "HOST", "PROFILE", "INSTALLED", "LAST", "HEALTH"]
    assert table[1].split() == [
        "10.0.0.7",
        "10.0.0.7",
        "rpi5",
        "ser-tiny/1.0.0",
        "ok",
        "ser-tiny/1.0.0",
        "(2",
        "min",
        "ago)",
    ]


def test_devices_with_an_empty_inventory_says_how_to_add_one(capsys, inventory_file):
    rc, out, _ = run_cli(capsys, "devices")
    assert rc == 0 and out.startswith(f"no devices yet ({inventory_file}): add one with edge-deploy")


def run_step(command: str, stdin: bytes = b"") -> subprocess.CompletedProcess:
    return subprocess.run(["sh", "-c", command], input=stdin, capture_output=True, timeout=30)


def test_daemon_yaml_goes_through_a_fresh_temporary_file(tmp_path):
    """A leftover ``.daemon.yaml.tmp`` (here a link to a world-readable file) is removed first: the
    password goes into a new 0600 file, never through the old one's link, mode or owner."""
    root = tmp_path / "root"
    root.mkdir()
    elsewhere = tmp_path / "elsewhere.txt"
    elsewhere.write_text("nothing secret\n")
    elsewhere.chmod(0o644)
    (root / ".daemon.yaml.tmp").symlink_to(elsewhere)
    opts = BootstrapOptions(load_profile("x86-local"), str(root), fleet="lab", mqtt_password="s3cret-pw")
    write = step(plan(opts, "pi-7"), "write daemon.yaml")
    done = run_step(write.command, write.stdin)
    assert done.returncode == 0, done.stderr
    config = root / "daemon.yaml"
    assert not config.is_symlink() and config.read_bytes() == write.stdin
    assert config.stat().st_mode & 0o777 == 0o600
    assert elsewhere.read_text() == "nothing secret\n"
    assert not (root / ".daemon.yaml.tmp").exists()


def test_the_daemon_runs_as_the_login_user_unless_told_otherwise(tmp_path):
    """The default service user is the ssh login user (who owns the root bootstrap creates); another
    ``--service-user`` is given daemon.yaml (0600) and keys/. Run here as a real shell."""
    root = tmp_path / "root"
    key = tmp_path / "fleet.pub"
    key.write_text("a public key\n")
    opts = BootstrapOptions(load_profile("x86-local"), str(root), public_key=key, skip_install=True)
    steps = plan(opts, "pi-7")
    assert '--user "$(id -un)"' in step(steps, "install the systemd unit").command
    assert not any(s.title.startswith("give daemon.yaml") for s in steps)
    probe = parse_facts(run_step(probe_script(opts)).stdout.decode())
    assert probe["service_user"] == "yes" and not any("service user" in n for n in check_facts(
        {**GOOD_FACTS, **probe, "arch": "x86_64"}, opts, "here"))  # fmt: skip

    other = pwd.getpwnam("nobody")
    steps = plan(dataclasses.replace(opts, service_user="nobody"), "pi-7")
    assert "--user nobody" in step(steps, "install the systemd unit").command
    give = step(steps, "give daemon.yaml and keys/ to nobody")
    if os.geteuid() != 0:
        pytest.skip("giving files to another user needs root here")
    for s in steps:
        if s.title.startswith(("install the fleet", "write daemon.yaml", "give daemon.yaml")):
            done = run_step(s.command, s.stdin or b"")
            assert done.returncode == 0, (s.title, done.stdout, done.stderr)
    for path in (root / "daemon.yaml", root / "keys", root / "keys" / "fleet.pub"):
        assert path.stat().st_uid == other.pw_uid, path
    assert (root / "daemon.yaml").stat().st_mode & 0o777 == 0o600
    assert give.command.count("chown -R nobody") == 2  # as root, or with sudo -n
