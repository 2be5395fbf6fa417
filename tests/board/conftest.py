"""An emulated arm64 board for the tests: the real debootstrap rootfs, the real qemu-user, a real
sshd on loopback. The rootfs is cached outside the repository (``~/.cache/edgewise/boards``), so
only the first run on a machine pays for building it; boards and the inventory are per test run."""

from __future__ import annotations

import os
import shutil

import pytest

from tests.conftest import missing_tool


def _check_machine() -> None:
    if os.geteuid() != 0:
        missing_tool("emulated boards need root (debootstrap, chroot, mounts)")
    for tool, package in (("debootstrap", "debootstrap"), ("qemu-aarch64-static", "qemu-user-static")):
        if shutil.which(tool) is None:
            missing_tool(f"{tool} is not installed (apt-get install {package}; scripts/setup.sh does)")


@pytest.fixture(scope="session")
def board_env(tmp_path_factory):
    """Boards and the device inventory under a temporary folder; the rootfs cache stays shared."""
    _check_machine()
    base = tmp_path_factory.mktemp("boards")
    saved = {k: os.environ.get(k) for k in ("EDGEWISE_BOARDS", "EDGEWISE_INVENTORY")}
    os.environ["EDGEWISE_BOARDS"] = str(base / "boards")
    os.environ["EDGEWISE_INVENTORY"] = str(base / "devices.json")
    yield base
    from edgewise.board.board import list_boards

    for board in list_boards():
        board.destroy(say=lambda *_: None)
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="session")
def pi(board_env):
    """A started rpi5 board (created once per session)."""
    from edgewise.board.board import create_board

    board = create_board("pi", "rpi5", say=print)
    board.start(say=print)
    yield board
    board.stop(say=lambda *_: None)
