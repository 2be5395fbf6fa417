"""A real OpenSSH server on loopback, shared by the deploy and bench tests (no system changes)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from edgewise.devtools.mosquitto import free_port
from tests.conftest import missing_tool

SSHD = "/usr/sbin/sshd"


@pytest.fixture(scope="session")
def sshd(tmp_path_factory):
    """A real OpenSSH server on 127.0.0.1 with its own host key, user key and config (no system changes).

    As root, sshd needs its privilege-separation folder /run/sshd (which the distribution's service
    creates at boot); the test is skipped, saying so, when it is missing.
    """
    if not Path(SSHD).is_file() or shutil.which("ssh") is None or shutil.which("ssh-keygen") is None:
        missing_tool("OpenSSH server and client are not installed (apt install openssh-server)")
    if os.geteuid() == 0 and not Path("/run/sshd").is_dir():
        missing_tool("sshd run as root needs /run/sshd, which is missing (mkdir -p /run/sshd)")
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
            missing_tool(f"sshd did not start: {(tmp / 'sshd.log').read_text().strip()}")
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
