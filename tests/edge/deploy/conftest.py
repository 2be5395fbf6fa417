"""Fixtures for edge-deploy: two versions of a real bundle, a stand-in daemon, a loopback sshd."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edgewise.edge.deploy.cli import main

HERE = Path(__file__).parent
SSHD = "/usr/sbin/sshd"


@pytest.fixture(autouse=True)
def inventory_file(tmp_path, monkeypatch):
    """Every test gets its own inventory; ~/.config is never touched."""
    path = tmp_path / "inventory" / "devices.json"
    monkeypatch.setenv("EDGEWISE_INVENTORY", str(path))
    return path


def with_version(src: Path, dest: Path, version: str) -> Path:
    """A copy of a bundle folder with another manifest version (the artifacts' sha256 still hold)."""
    shutil.copytree(src, dest)
    manifest = json.loads((dest / "manifest.json").read_text())
    manifest["version"] = version
    (dest / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return dest


@pytest.fixture(scope="session")
def bundles(ser_bundle, tmp_path_factory):
    """v1: the shared test bundle (folder, with its archive beside); v2: a copy with version 2.0.0."""
    out = tmp_path_factory.mktemp("deploy-bundles")
    return {"v1": ser_bundle, "v2": with_version(ser_bundle, out / "ser-tiny-2.0.0", "2.0.0")}


V1, V2 = "ser-tiny/1.0.0", "ser-tiny/2.0.0"


def run_cli(capsys, *args) -> tuple[int, str, str]:
    rc = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return rc, out, err


def current_key(root: Path) -> str | None:
    link = root / "current"
    if not link.is_symlink():
        return None
    target = (root / os.readlink(link)).resolve()
    return f"{target.parent.name}/{target.name}"


def state(root: Path) -> dict:
    return json.loads((root / "state.json").read_text())


@pytest.fixture
def standin_daemon():
    """Start ``edgewise_daemon_standin.py ROOT [flags]`` (a real process); stopped at teardown."""
    procs: list[subprocess.Popen] = []

    def start(root: Path, *flags: str) -> subprocess.Popen:
        (root / "daemon.pid").unlink(missing_ok=True)
        proc = subprocess.Popen(
            [sys.executable, str(HERE / "edgewise_daemon_standin.py"), str(root), *flags],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        procs.append(proc)
        deadline = time.monotonic() + 15
        while not (root / "daemon.pid").is_file():
            assert proc.poll() is None, proc.stdout.read().decode()
            assert time.monotonic() < deadline, "the stand-in daemon did not start"
            time.sleep(0.02)
        return proc

    yield start
    for proc in procs:
        proc.terminate()
        proc.wait(timeout=10)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def sshd(tmp_path_factory):
    """A real OpenSSH server on 127.0.0.1 with its own host key, user key and config (no system changes).

    As root, sshd needs its privilege-separation folder /run/sshd (which the distribution's service
    creates at boot); the test is skipped, saying so, when it is missing.
    """
    if not Path(SSHD).is_file() or shutil.which("ssh") is None or shutil.which("ssh-keygen") is None:
        pytest.skip("OpenSSH server and client are not installed (apt install openssh-server)")
    if os.geteuid() == 0 and not Path("/run/sshd").is_dir():
        pytest.skip("sshd run as root needs /run/sshd (mkdir -p /run/sshd)")
    tmp = tmp_path_factory.mktemp("sshd")
    for name in ("host_key", "user_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp / name)], check=True)
    shutil.copy(tmp / "user_key.pub", tmp / "authorized_keys")
    port = free_port()
    sftp = next(
        (p for p in ("/usr/lib/openssh/sftp-server", "/usr/libexec/sftp-server") if Path(p).is_file()), None
    )
    config = [
        f"Port {port}",
        "ListenAddress 127.0.0.1",
        f"HostKey {tmp / 'host_key'}",
        f"AuthorizedKeysFile {tmp / 'authorized_keys'}",
        f"PidFile {tmp / 'sshd.pid'}",
        "StrictModes no",
        "UsePAM no",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "PermitRootLogin prohibit-password",
        *([f"Subsystem sftp {sftp}"] if sftp else []),
    ]
    (tmp / "sshd_config").write_text("\n".join(config) + "\n")
    with open(tmp / "sshd.log", "w") as log:  # the server keeps its own copy of the descriptor
        proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(tmp / "sshd_config")], stdout=log, stderr=log)
    deadline = time.monotonic() + 10
    while True:
        if proc.poll() is not None:
            pytest.skip(f"sshd did not start: {(tmp / 'sshd.log').read_text().strip()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            assert time.monotonic() < deadline, "sshd did not listen"
            time.sleep(0.05)
    user = subprocess.run(["id", "-un"], capture_output=True, text=True, check=True).stdout.strip()
    yield {
        "host": f"{user}@127.0.0.1",
        "port": port,
        "flags": ["--host", f"{user}@127.0.0.1", "--port", str(port), "--identity", str(tmp / "user_key")]
        + ["--known-hosts", str(tmp / "known_hosts")],
        "dir": tmp,
    }
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture
def device_root(tmp_path):
    """An install root on "the device" (this machine) whose venv/bin/edge-deploy is this project's."""
    root = tmp_path / "device-root"
    (root / "venv" / "bin").mkdir(parents=True)
    (root / "venv" / "bin" / "edge-deploy").symlink_to(Path(sys.executable).parent / "edge-deploy")
    return root
