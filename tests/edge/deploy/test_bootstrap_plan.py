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


# --------------------------------------------------------------------------------------------------
# --wheelhouse: install offline from a folder of the device's wheels. The tag checks read only the
# file names (PEP 427), so these wheelhouses are empty files with real names from an rpi5 one.

RPI5_WHEELS = (
    "pip-26.3-py3-none-any.whl",
    "edgewise-0.1.0-py3-none-any.whl",
    "onnxruntime-1.32.0-cp311-cp311-manylinux_2_28_aarch64.whl",
    "numpy-2.4.6-cp311-cp311-manylinux_2_27_aarch64.manylinux_2_28_aarch64.whl",
    "protobuf-7.36.2-cp310-abi3-manylinux2014_aarch64.whl",
    "soundfile-0.14.0-py2.py3-none-manylinux_2_28_aarch64.whl",
    "paho_mqtt-2.2.0-py3-none-any.whl",
)
RPI5_FACTS = {**GOOD_FACTS, "os": "Debian GNU/Linux 12 (bookworm)", "python": "3.11.2", "glibc": "glibc 2.36"}


def fake_wheelhouse(folder, names=RPI5_WHEELS):
    from edgewise.edge.deploy.wheelhouse import Wheelhouse

    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_bytes(b"")
    return Wheelhouse.open(folder)


def test_a_wheelhouse_is_copied_in_one_stream_and_installed_without_network(tmp_path):
    house = fake_wheelhouse(tmp_path / "wh")
    opts = BootstrapOptions(load_profile("rpi5"), "/opt/edgewise", wheelhouse=house)
    steps = plan(opts)
    titles = [s.title for s in steps]
    assert "upgrade pip" not in titles
    venv = step(steps, "create the virtual").command
    assert venv == "test -x /opt/edgewise/venv/bin/python || python3 -m venv --without-pip /opt/edgewise/venv"
    copy = step(steps, "copy the wheelhouse (7 wheels")
    assert copy.upload_tree == (house.folder, "/opt/edgewise/incoming/wheels", tuple(sorted(RPI5_WHEELS)))
    install = step(steps, "install pip and edgewise[edge] from the wheelhouse")
    assert install.command == (
        "/opt/edgewise/venv/bin/python /opt/edgewise/incoming/wheels/pip-26.3-py3-none-any.whl/pip install -q "
        "--disable-pip-version-check --no-index --find-links /opt/edgewise/incoming/wheels pip 'edgewise[edge]'"
    )
    assert (
        titles.index(copy.title) < titles.index(install.title) < titles.index("remove the copied wheelhouse")
    )
    assert titles.index("remove the copied wheelhouse") < titles.index("check the runtimes")
    check_facts(RPI5_FACTS, opts, "pi")  # it fits: no error


def test_a_local_wheel_in_the_wheelhouse_is_installed_from_it_not_copied_twice(tmp_path):
    house = fake_wheelhouse(tmp_path / "wh")
    wheel = house.folder / "edgewise-0.1.0-py3-none-any.whl"
    opts = BootstrapOptions(
        load_profile("rpi5"), "/opt/edgewise", wheelhouse=house, edgewise_spec=f"{wheel}[edge]"
    )
    steps = plan(opts)
    assert not any(s.upload for s in steps)
    install = step(steps, "install pip and /opt/edgewise/incoming/wheels/edgewise-0.1.0").command
    assert install.endswith("--no-index --find-links /opt/edgewise/incoming/wheels pip "
                            "'/opt/edgewise/incoming/wheels/edgewise-0.1.0-py3-none-any.whl[edge]'")  # fmt: skip


def test_a_wheelhouse_for_another_python_is_refused_with_the_command_that_makes_the_right_one(tmp_path):
    """A 3.11 wheelhouse on a device that runs 3.10 (Ubuntu 22.04): refused before anything changes,
    saying what each side is and how to make a fitting wheelhouse."""
    opts = BootstrapOptions(
        load_profile("rpi5"), "/opt/edgewise", wheelhouse=fake_wheelhouse(tmp_path / "wh")
    )
    with pytest.raises(DeployError) as err:
        check_facts({**RPI5_FACTS, "python": "3.10.12"}, opts, "pi@10.0.0.7:22")
    msg = str(err.value)
    assert msg.startswith("pi@10.0.0.7:22: the wheelhouse does not fit this device, nothing was changed: ")
    assert (
        "has 7 wheels, 0 MB, for CPython 3.11 on aarch64, but the device runs Python 3.10.12 on aarch64, glibc 2.36"
        in msg
    )
    assert "numpy-2.4.6-cp311-cp311-manylinux_2_27_aarch64.manylinux_2_28_aarch64.whl" in msg
    assert "protobuf" not in msg  # abi3 for cp310 and up installs on 3.10
    assert msg.endswith("make one for it: edge-deploy wheelhouse --device rpi5 --python 3.10 --out DIR")


def test_a_wheelhouse_for_another_arch_or_a_newer_glibc_is_refused(tmp_path):
    x86 = fake_wheelhouse(
        tmp_path / "x86", ("pip-26.3-py3-none-any.whl", "numpy-2.4.6-cp311-cp311-manylinux_2_17_x86_64.whl")
    )
    with pytest.raises(
        DeployError, match=r"for CPython 3.11 on x86_64, but the device runs Python 3.11.2 on aarch64"
    ):
        check_facts(RPI5_FACTS, BootstrapOptions(load_profile("rpi5"), "/opt/edgewise", wheelhouse=x86), "pi")
    new = fake_wheelhouse(
        tmp_path / "new",
        ("pip-26.3-py3-none-any.whl", "cryptography-50.0.2-cp311-abi3-manylinux_2_34_aarch64.whl"),
    )
    opts = BootstrapOptions(load_profile("jetson-orin-nano"), "/opt/edgewise", wheelhouse=new)
    facts = {**GOOD_FACTS, "python": "3.11.4", "glibc": "glibc 2.31"}  # an older Ubuntu
    with pytest.raises(
        DeployError, match=r"glibc 2.31 \(cryptography-50.0.2-cp311-abi3-manylinux_2_34_aarch64.whl would not"
    ):
        check_facts(facts, opts, "nv")
    check_facts({**facts, "glibc": "glibc 2.35"}, opts, "nv")  # JetPack 6's glibc takes it


def test_a_wheelhouse_needs_no_ensurepip_on_the_device(tmp_path):
    """Debian without python3-venv has the venv module but no ensurepip: fine with a wheelhouse."""
    facts = {**RPI5_FACTS, "venv": "no", "venv_module": "yes"}
    with pytest.raises(DeployError, match="cannot make a venv with pip: install python3-venv"):
        check_facts(facts, BootstrapOptions(load_profile("rpi5"), "/opt/edgewise"), "pi")
    house = fake_wheelhouse(tmp_path / "wh")
    check_facts(facts, BootstrapOptions(load_profile("rpi5"), "/opt/edgewise", wheelhouse=house), "pi")


def test_a_wheelhouse_is_checked_before_ssh(tmp_path):
    from edgewise.edge.deploy.wheelhouse import Wheelhouse

    with pytest.raises(DeployError, match="no such folder"):
        Wheelhouse.open(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DeployError, match="no .whl files in it"):
        Wheelhouse.open(tmp_path / "empty")
    with pytest.raises(DeployError, match="no pip wheel in it"):
        fake_wheelhouse(tmp_path / "nopip", RPI5_WHEELS[1:])


def test_jetson_takes_onnxruntime_gpu_from_the_wheelhouse_when_it_has_it(tmp_path):
    names = (*RPI5_WHEELS, "onnxruntime_gpu-1.23.0-cp310-cp310-linux_aarch64.whl")
    opts = BootstrapOptions(
        load_profile("jetson"),
        "/opt/edgewise",
        wheel_index=INDEX,
        wheelhouse=fake_wheelhouse(tmp_path / "wh", names),
    )
    gpu = step(plan(opts), "install onnxruntime-gpu from the wheelhouse").command
    assert gpu.endswith("--no-index --find-links /opt/edgewise/incoming/wheels onnxruntime-gpu")
    assert "--extra-index-url" not in gpu


def test_an_emulated_device_installs_without_bytecode_and_says_why(tmp_path):
    from edgewise.edge.deploy.bootstrap import compile_note

    house = fake_wheelhouse(tmp_path / "wh")
    real = BootstrapOptions(load_profile("rpi5"), "/opt/edgewise", wheelhouse=house)
    assert "--no-compile" not in step(plan(real), "install pip").command and compile_note(real) is None
    board = dataclasses.replace(real, emulated="emulated under qemu-user")
    assert " install -q --no-compile --disable-pip-version-check" in step(plan(board), "install pip").command
    note = compile_note(board)
    assert note.startswith(
        "bytecode: pip installs with --no-compile, because the inventory marks this device emulated"
    )
    assert "Python compiles each module on its first import" in note
    forced = dataclasses.replace(board, compile=True)  # --compile wins over the inventory
    assert "--no-compile" not in step(plan(forced), "install pip").command and compile_note(forced) is None
    index = BootstrapOptions(
        load_profile("rpi5"), "/opt/edgewise", compile=False
    )  # --no-compile, no wheelhouse
    assert step(plan(index), "install edgewise").command.endswith(
        "pip install -q --no-compile 'edgewise[edge]'"
    )
    assert "as asked (--no-compile)" in compile_note(index)


def test_dry_run_shows_the_wheelhouse_steps_and_the_emulated_boards_bytecode_choice(capsys, tmp_path):
    house = fake_wheelhouse(tmp_path / "wh")
    inventory.update(
        "board-1",
        "root@127.0.0.1",
        2299,
        profile="rpi5",
        root="/opt/edgewise",
        emulated="emulated under qemu-user",
    )
    rc, out, err = run_cli(
        capsys,
        "--host",
        "board-1",
        "--bootstrap",
        "--dry-run",
        "--insecure-no-key",
        "--wheelhouse",
        house.folder,
    )
    assert rc == 0, err
    assert (
        "# bytecode: pip installs with --no-compile, because the inventory marks this device emulated" in out
    )
    assert "# [2] create the virtual environment (without pip: it comes from the wheelhouse)" in out
    assert (
        f"# [3] copy the wheelhouse (7 wheels, 0 MB, for CPython 3.11 on aarch64)\ntar -C {house.folder} -cf - 7 files | "
        "ssh 'rm -rf /opt/edgewise/incoming/wheels && mkdir -p /opt/edgewise/incoming/wheels && tar -xof - -C /opt/edgewise/incoming/wheels'"
    ) in out
    assert "pip-26.3-py3-none-any.whl/pip install -q --no-compile" in out
    rc, _, err = run_cli(
        capsys,
        "--device",
        "rpi5",
        "--bootstrap",
        "--dry-run",
        "--insecure-no-key",
        "--wheelhouse",
        tmp_path / "nope",
    )
    assert rc == 2 and f"--wheelhouse {tmp_path / 'nope'}: no such folder" in err
