"""A board's life cycle on the real thing: debootstrap's arm64 rootfs, qemu-user, sshd on loopback."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from edgewise.board.board import create_board, list_boards, open_board
from edgewise.board.host import mounts_under, processes_in
from edgewise.cli import main
from edgewise.edge.deploy import inventory

pytestmark = pytest.mark.slow


def test_a_started_board_is_aarch64_over_ssh_and_in_the_inventory(pi):
    out = pi.ssh("uname -m; python3 -c 'import platform; print(platform.machine())'").stdout.split()
    assert out == ["aarch64", "aarch64"]
    # the board says what it is to the programs on it (the benchmark labels its timings from it)
    assert "emulated cortex-a76" in pi.ssh("cat /etc/edgewise-emulated").stdout
    # and its programs see a Pi 5's CPU features (read from the auxiliary vector qemu gives them):
    # dot product (ASIMDDP) as on a Cortex-A76, and no SVE or i8mm, which qemu's default CPU has
    hwcap = pi.ssh(
        "python3 -c \"import struct; a = open('/proc/self/auxv', 'rb').read(); "
        "d = dict(struct.iter_unpack('<QQ', a)); print(d.get(16, 0), d.get(26, 0))\""
    ).stdout.split()
    hwcap1, hwcap2 = int(hwcap[0]), int(hwcap[1])
    assert hwcap1 & (1 << 20), "no ASIMDDP"  # HWCAP_ASIMDDP
    assert not hwcap1 & (1 << 22) and not hwcap2 & (1 << 13), "SVE or i8mm"  # HWCAP_SVE, HWCAP2_I8MM
    assert pi.describe()["cpu"] == "cortex-a76"
    rec = inventory.load()["pi"]
    assert (rec["host"], rec["port"], rec["profile"]) == ("root@127.0.0.1", pi.port, "rpi5")
    assert rec["ssh"]["identity"] == str(pi.identity) and "emulated" in rec["emulated"]
    # the board never sees the host's /sys (onnxruntime's CPU detection crashes on it under qemu)
    assert pi.rootfs / "sys" not in mounts_under(pi.rootfs)
    assert pi.describe()["state"] == "running"


def test_start_is_idempotent_and_stop_leaves_nothing_running_or_mounted(pi, capsys):
    pid = pi.sshd_pid()
    pi.start()
    assert pi.sshd_pid() == pid and "already running" in capsys.readouterr().out
    pi.ssh("nohup sleep 600 >/dev/null 2>&1 &")  # a process a session leaves behind
    assert len(processes_in(pi.rootfs)) >= 2
    pi.stop()
    assert processes_in(pi.rootfs) == [] and mounts_under(pi.rootfs) == []
    assert pi.describe()["state"] == "stopped"
    pi.stop()  # idempotent
    pi.start()  # and it comes back
    assert pi.ssh("echo back").stdout.strip() == "back"


def test_edge_deploy_reaches_the_board_by_name_with_the_recorded_ssh_options(pi):
    """The inventory remembers how to reach the device: no --identity or --port needed."""
    result = subprocess.run(
        [str(Path(sys.executable).parent / "edge-deploy"), "status", "--host", "pi"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    # nothing is installed yet: the device answered over SSH (its key, port and known host came
    # from the inventory) that it needs a bootstrap
    text = result.stdout + result.stderr
    assert result.returncode == 2 and "bootstrap the device first" in text, text


def test_bad_input_names_the_problem_and_leaves_nothing_behind(pi, capsys):
    assert main(["board", "create", "pi", "--profile", "rpi5"]) == 2
    assert "a board named 'pi' exists" in capsys.readouterr().err
    assert main(["board", "create", "Bad_Name"]) == 2
    assert main(["board", "create", "x86", "--profile", "x86-local"]) == 2
    assert "boards emulate aarch64" in capsys.readouterr().err
    assert main(["board", "start", "nosuch"]) == 2
    # a port in use: a clear error, and the board is left stopped with nothing mounted
    spare = create_board("spare", "rpi4", say=lambda *_: None)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        assert main(["board", "start", "spare", "--port", str(sock.getsockname()[1])]) == 2
    assert "is in use" in capsys.readouterr().err
    assert mounts_under(spare.rootfs) == [] and processes_in(spare.rootfs) == []
    # a create interrupted half way (its partial folder left behind) does not block the next one
    spare.destroy(say=lambda *_: None)
    leftover = spare.path.with_name(".spare.partial-99999")
    (leftover / "rootfs").mkdir(parents=True)
    again = create_board("spare", "jetson-orin-nano", say=lambda *_: None)
    assert not leftover.exists() and "without CUDA" in again.describe()["note"]
    assert main(["board", "list", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["spare"]["state"] == "stopped" and rows["pi"]["state"] == "running"
    again.destroy(say=lambda *_: None)
    assert "spare" not in inventory.load() and [b.name for b in list_boards()] == ["pi"]
    assert open_board("pi").sshd_pid() is not None
