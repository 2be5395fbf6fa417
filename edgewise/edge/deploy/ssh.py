"""The transport to a device: the system ``ssh`` and ``scp`` binaries, never a Python SSH library.

One :class:`SSHSession` opens a master connection (``ControlMaster``) once and runs every later
command and copy through it, so a deploy authenticates once however many steps it has. Every call
is non-interactive (``BatchMode=yes``: keys or an agent, never a password prompt) and bounded
(``ConnectTimeout``, server keep-alives). Host keys follow ``StrictHostKeyChecking`` (``accept-new``
by default: a new device is trusted on first contact, a changed key is refused) against the user's
known_hosts or ``--known-hosts FILE``.

A host that cannot be reached is one line: ``cannot reach pi@10.0.0.7:22: Connection refused``.
"""

from __future__ import annotations

import contextlib
import math
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from edgewise.edge.deploy import DeployError
from edgewise.errors import MissingDependencyError

HOST_KEY_CHECKING = ("yes", "accept-new", "no")
_HOST_RE = re.compile(r"^(?:[A-Za-z0-9._-]+@)?(?:[A-Za-z0-9._-]+|\[[0-9A-Fa-f:.]+\])$")
_SAFE_PATH_RE = re.compile(r"^[A-Za-z0-9_./~+@%:=,-]+$")


def check_remote_path(path: str, what: str = "remote path") -> str:
    """Remote paths travel through a shell and scp: keep them to plain characters."""
    if not _SAFE_PATH_RE.match(path) or path.startswith("-"):
        raise DeployError(f"{what} {path!r}: use letters, digits and . _ / ~ + - only")
    return path


def shell_path(path: str) -> str:
    """``path`` quoted for a POSIX shell; a leading ``~/`` becomes ``"$HOME"/`` (expanded remotely)."""
    if path == "~":
        return '"$HOME"'
    if path.startswith("~/"):
        return '"$HOME"/' + shlex.quote(path[2:])
    return shlex.quote(path)


@dataclass(frozen=True)
class SSHTarget:
    """Where and how to connect; ``host`` is ``user@addr`` or ``addr``."""

    host: str
    port: int = 22
    identity: Path | None = None
    host_key_checking: str = "accept-new"
    known_hosts: Path | None = None
    connect_timeout: float = 10.0

    def __post_init__(self) -> None:
        if not _HOST_RE.match(self.host):
            raise DeployError(f"--host {self.host!r}: expected user@address or address")
        if not 1 <= self.port <= 65535:
            raise DeployError(f"--port {self.port}: expected 1-65535")
        if self.host_key_checking not in HOST_KEY_CHECKING:
            raise DeployError(
                f"host key checking {self.host_key_checking!r}: expected one of {HOST_KEY_CHECKING}"
            )
        if self.identity is not None and not Path(self.identity).is_file():
            raise DeployError(f"--identity {self.identity}: no such file")

    @property
    def label(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def address(self) -> str:
        return self.host.rsplit("@", 1)[-1].strip("[]")

    def options(self) -> list[str]:
        """Options shared by ssh and scp (``-p``/``-P`` differ and are added by the callers)."""
        opts = [
            "-o", "BatchMode=yes",
            "-o", f"ConnectTimeout={max(1, math.ceil(self.connect_timeout))}",
            "-o", f"StrictHostKeyChecking={self.host_key_checking}",
            "-o", "ServerAliveInterval=15",
            "-o", "ServerAliveCountMax=4",
            "-o", "LogLevel=ERROR",
        ]  # fmt: skip
        if self.known_hosts is not None:
            opts += ["-o", f"UserKnownHostsFile={self.known_hosts}"]
        if self.identity is not None:
            opts += ["-i", str(self.identity), "-o", "IdentitiesOnly=yes"]
        return opts

    def ssh_argv(self, command: str | None, extra: Sequence[str] = ()) -> list[str]:
        """``ssh ... -- HOST COMMAND`` (no command with ``None``, for ``-N`` and ``-O``)."""
        argv = ["ssh", "-p", str(self.port), *self.options(), *extra, "--", self.host]
        return argv if command is None else [*argv, command]

    def scp_argv(self, local: Path, remote: str, extra: Sequence[str] = ()) -> list[str]:
        return [
            "scp",
            "-q",
            "-P",
            str(self.port),
            *self.options(),
            *extra,
            "--",
            str(local),
            f"{self.host}:{remote}",
        ]


def _reason(stderr: str) -> str:
    lines = [
        ln.strip() for ln in stderr.splitlines() if ln.strip() and not ln.startswith("Warning: Permanently")
    ]
    line = lines[-1] if lines else "ssh gave no reason"
    return line[5:] if line.startswith("ssh: ") else line


@dataclass
class RunResult:
    returncode: int
    stdout: str
    stderr: str


class SSHSession:
    """``with SSHSession(target) as s: s.run(...); s.copy(...); s.stream(...)``."""

    def __init__(self, target: SSHTarget) -> None:
        self.target = target
        self._dir: Path | None = None
        self._mux: list[str] = []

    def __enter__(self) -> SSHSession:
        for tool in ("ssh", "scp"):
            if shutil.which(tool) is None:
                raise MissingDependencyError(
                    f"{tool} not found: install the OpenSSH client (apt install openssh-client)"
                )
        self._dir = Path(tempfile.mkdtemp(prefix="ew-ssh-"))
        control = self._dir / "cm"
        argv = self.target.ssh_argv(
            None, extra=["-o", "ControlMaster=yes", "-o", f"ControlPath={control}", "-N", "-f"]
        )
        with tempfile.TemporaryFile(mode="w+") as err:
            try:
                rc = subprocess.run(
                    argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
                    timeout=self.target.connect_timeout + 20,
                ).returncode  # fmt: skip
            except subprocess.TimeoutExpired:
                self._cleanup()
                raise DeployError(
                    f"cannot reach {self.target.label}: no answer within {self.target.connect_timeout:g} s"
                ) from None
            if rc != 0:
                err.seek(0)
                self._cleanup()
                raise DeployError(f"cannot reach {self.target.label}: {_reason(err.read())}")
        self._mux = ["-o", "ControlMaster=no", "-o", f"ControlPath={control}"]
        return self

    def __exit__(self, *exc: object) -> None:
        if self._mux:
            subprocess.run(
                self.target.ssh_argv(None, extra=[*self._mux, "-O", "exit"]),
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=10,
            )  # fmt: skip
            self._mux = []
        self._cleanup()

    def _cleanup(self) -> None:
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def _lost(self, what: str, stderr: str) -> DeployError:
        return DeployError(f"lost the connection to {self.target.label} during {what}: {_reason(stderr)}")

    def run(
        self, command: str, *, stdin: bytes | None = None, timeout: float | None = None, what: str = ""
    ) -> RunResult:
        """Run ``command`` (a POSIX shell line) and capture its output."""
        proc = subprocess.run(
            self.target.ssh_argv(command, extra=self._mux),
            input=stdin if stdin is not None else b"",
            capture_output=True,
            timeout=timeout,
        )
        out, err = proc.stdout.decode(errors="replace"), proc.stderr.decode(errors="replace")
        if proc.returncode == 255:
            raise self._lost(what or "a remote command", err)
        return RunResult(proc.returncode, out, err)

    def copy(self, local: Path, remote: str) -> None:
        proc = subprocess.run(
            self.target.scp_argv(local, check_remote_path(remote), extra=self._mux),
            stdin=subprocess.DEVNULL, capture_output=True, text=True,
        )  # fmt: skip
        if proc.returncode == 0:
            return
        # scp speaks SFTP since OpenSSH 9; a device without the sftp subsystem gets the file through
        # a plain ssh channel instead
        with open(local, "rb") as fh:
            cat = subprocess.run(
                self.target.ssh_argv(f"cat > {shlex.quote(remote)}", extra=self._mux),
                stdin=fh, capture_output=True, text=True,
            )  # fmt: skip
        if cat.returncode != 0:
            raise DeployError(
                f"copying {local} to {self.target.host}:{remote} failed: {_reason(proc.stderr)} "
                f"(and through ssh: {_reason(cat.stderr)})"
            )

    def copy_tree(
        self, local: Path, remote: str, files: Sequence[str] | None = None, *, replace: bool = False
    ) -> int:
        """Copy ``files`` (names relative to the folder ``local``; default: all of it) into the
        folder ``remote`` in one tar stream through the session, never holding them in memory;
        ``replace`` empties ``remote`` first. Returns the bytes of the files sent."""
        if shutil.which("tar") is None:
            raise MissingDependencyError("tar not found: install it (apt install tar)")
        local = Path(local)
        names = list(files) if files is not None else ["."]
        if any(n.startswith("-") or n.startswith("/") or ".." in Path(n).parts for n in names):
            raise DeployError(f"copying {local}: file names must be plain relative paths: {names}")
        size = sum(
            f.stat().st_size
            for n in names
            for f in ([local / n] if (local / n).is_file() else (local / n).rglob("*"))
            if f.is_file()
        )
        dest = shell_path(check_remote_path(remote))
        unpack = f"{f'rm -rf {dest} && ' if replace else ''}mkdir -p {dest} && tar -xof - -C {dest}"
        with tempfile.TemporaryFile() as tar_err:
            tar = subprocess.Popen(
                ["tar", "-h", "-C", str(local), "-cf", "-", "--", *names],  # -h: links as their files
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=tar_err,
            )  # fmt: skip
            try:
                ssh = subprocess.run(
                    self.target.ssh_argv(unpack, extra=self._mux),
                    stdin=tar.stdout, capture_output=True, text=True,
                )  # fmt: skip
            finally:
                tar.stdout.close()
                try:
                    tar.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    tar.kill()
                    tar.wait()
            tar_err.seek(0)
            packed = tar_err.read().decode(errors="replace")
        where = f"{self.target.host}:{remote}"
        if ssh.returncode == 255:
            raise self._lost(f"copying {local} to {remote}", ssh.stderr)
        if ssh.returncode != 0:
            raise DeployError(f"copying {local} to {where} failed: unpacking there: {_reason(ssh.stderr)}")
        if tar.returncode != 0:
            raise DeployError(f"copying {local} to {where} failed: packing here: {_reason(packed)}")
        return size

    def stream(
        self, command: str, *, prefix: str = "", stdin: bytes | None = None, what: str = ""
    ) -> tuple[int, list[str]]:
        """Run ``command``, relaying its stdout/stderr line by line as it comes; returns (rc, last lines)."""
        proc = subprocess.Popen(
            self.target.ssh_argv(command, extra=self._mux),
            stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        tail: deque[str] = deque(maxlen=20)
        lock = threading.Lock()

        def relay(src: IO[bytes], dest_name: str) -> None:
            for raw in iter(src.readline, b""):
                line = raw.decode(errors="replace").rstrip("\n")
                with lock:
                    tail.append(line)
                    dest = getattr(sys, dest_name)
                    with contextlib.suppress(BrokenPipeError, ValueError):
                        print(f"{prefix}{line}", file=dest, flush=True)

        threads = [
            threading.Thread(target=relay, args=(proc.stdout, "stdout"), daemon=True),
            threading.Thread(target=relay, args=(proc.stderr, "stderr"), daemon=True),
        ]
        for t in threads:
            t.start()
        try:
            if stdin is not None:
                try:
                    proc.stdin.write(stdin)
                    proc.stdin.close()
                except BrokenPipeError:
                    pass
            rc = proc.wait()
        except BaseException:
            proc.terminate()
            proc.wait()
            raise
        finally:
            for t in threads:
                t.join(timeout=5)
        if rc == 255:
            raise self._lost(what or "a remote command", "\n".join(tail))
        return rc, list(tail)
