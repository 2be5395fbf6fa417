"""An emulated arm64 board for the tests: the real debootstrap rootfs, the real qemu-user, a real
sshd on loopback. The rootfs is cached outside the repository (``~/.cache/edgewise/boards``), so
only the first run on a machine pays for building it; boards and the inventory are per test run."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests import prebuild
from tests.conftest import missing_tool
from tests.edge.audio.conftest import speech_track  # noqa: F401  (fixture)


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
    from edgewise.edge.deploy import inventory

    # Every board stopped (its processes ended, nothing mounted: stop raises otherwise) and out of
    # the way, as destroy leaves it; the files go in the background. Deleting a rootfs the disk has
    # written back takes this machine's disk half a minute (copies made seconds ago go at once), and
    # nothing waits for it.
    removed = []
    for board in list_boards():
        board.stop(say=lambda *_: None)
        removed.append(board.path.with_name(f".{board.name}.removed"))
        board.path.rename(removed[-1])
        inventory.remove(board.name)
    if removed:
        subprocess.Popen(
            ["rm", "-rf", "--one-file-system", *map(str, removed)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
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


# --------------------------------------------------------------------------------------------------
# A board set up the way a user sets up a Pi: the fleet's key and broker, a wheelhouse, bootstrap.

EDGE_DEPLOY = Path(sys.executable).parent / "edge-deploy"
ROOT = "/opt/edgewise"  # the rpi5 profile's install root
FLEET_ID = "lab"


def edge_deploy(*args: str, timeout: float = 300.0) -> subprocess.CompletedProcess:
    """``edge-deploy ARGS`` as a user runs it (a real process); output echoed for the test log."""
    result = subprocess.run(
        [str(EDGE_DEPLOY), *map(str, args)], capture_output=True, text=True, timeout=timeout
    )
    print(f"$ edge-deploy {' '.join(map(str, args))}  -> {result.returncode}\n{result.stdout}{result.stderr}")
    return result


@pytest.fixture(scope="session")
def fleet(board_env):
    """The fleet's signing key, the broker's TLS certificate and the fleet's broker folder
    (an operator login added; bootstrap adds the device's)."""
    from edgewise.bundle import generate_keypair
    from edgewise.devtools.mosquitto import free_port
    from edgewise.devtools.tls import self_signed_cert
    from edgewise.edge.deploy.broker_acl import add_users

    folder = board_env / "fleet"
    key_id = generate_keypair(folder / "fleet.key", folder / "fleet.pub")
    cert, tls_key = self_signed_cert(folder / "tls")
    broker_dir = folder / "broker"
    logins, _ = add_users(broker_dir, FLEET_ID, operators={"operator": None})
    return {
        "key": folder / "fleet.key",
        "pub": folder / "fleet.pub",
        "id": key_id,
        "ca": cert,
        "tls": (cert, tls_key),
        "broker_dir": broker_dir,
        "operator": ("operator", logins["operator"]),
        "tls_port": free_port(),  # the broker's TLS listener, started once the device has its login
    }


@pytest.fixture(scope="session")
def wheelhouse(pytestconfig, board_env):
    """This checkout as a wheel, and every aarch64 wheel ``edgewise[edge]`` needs, downloaded here
    with ``edge-deploy wheelhouse`` (the board installs from it without an index: the way an
    offline device is set up, and a minute faster under emulation than pip on the board). Made in
    the background while the rest of the suite runs (tests/prebuild.py), or here."""
    done = prebuild.prebuilt(pytestconfig, "wheelhouse")
    if done is not None:
        return {"spec": f"{next((done / 'dist').glob('edgewise-*.whl'))}[edge]", "dir": done / "wheelhouse"}
    return prebuild.build_wheelhouse(board_env)


@pytest.fixture(scope="session")
def bootstrapped(pi, fleet, wheelhouse):
    """``pi`` set up by ``edge-deploy --bootstrap``: the fleet key, MQTT over TLS to the host's
    broker with the device's own login, edgewise from the wheelhouse; its output and time."""
    t0 = time.monotonic()
    result = edge_deploy(
        "--device", "rpi5", "--host", pi.name, "--bootstrap",
        "--key", fleet["pub"],
        "--wheelhouse", wheelhouse["dir"], "--edgewise-spec", wheelhouse["spec"],
        "--fleet", FLEET_ID, "--mqtt-host", "127.0.0.1", "--mqtt-port", fleet["tls_port"],
        "--mqtt-ca", fleet["ca"], "--broker-dir", fleet["broker_dir"],
        timeout=900,
    )  # fmt: skip
    return {"result": result, "seconds": time.monotonic() - t0}


@pytest.fixture(scope="session")
def fleet_broker(fleet, bootstrapped):
    """Mosquitto on the host with the fleet's logins and ACL (the device's added by bootstrap), a
    TLS listener the board's daemon connects to, and no anonymous access."""
    from edgewise.devtools.mosquitto import MosquittoBroker

    with MosquittoBroker.for_fleet(
        fleet["broker_dir"], tls=fleet["tls"], tls_port=fleet["tls_port"]
    ) as broker:
        yield broker
