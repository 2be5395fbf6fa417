"""Run a real Mosquitto broker on localhost, for tests and the demo.

::

    with MosquittoBroker() as broker:          # a free port on 127.0.0.1
        client = TelemetryClient({"host": broker.host, "port": broker.port, ...})

The generated config loses nothing: no limit on queued or in-flight messages per client (the
defaults drop QoS 1 messages to a slow subscriber). ``persistence=True`` keeps retained messages,
subscriptions and queued messages of persistent sessions across :meth:`MosquittoBroker.restart`
(saved when the broker stops cleanly); ``users={"name": "password"}`` turns off anonymous access and
writes a password file with ``mosquitto_passwd``, or ``password_file=PATH`` uses one made elsewhere
(:mod:`edgewise.edge.deploy.broker_acl`). ``acl_file=PATH`` or ``acl="user ...\ntopic ..."`` limits
what each user may publish and read (the text is written to ``workdir/acl``). ``tls=(cert, key)``
adds a second listener on ``tls_port`` that speaks MQTT over TLS with that certificate (clients
give its CA, e.g. :func:`edgewise.devtools.tls.self_signed_cert`'s certificate); the logins and the
ACL apply to both listeners. The broker's log is kept in ``workdir``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from edgewise.errors import EdgewiseError, MissingDependencyError

INSTALL_HINT = "install it with: apt-get install mosquitto"
_SEARCH = ("/usr/sbin", "/usr/local/sbin", "/opt/homebrew/sbin", "/usr/local/opt/mosquitto/sbin")


class BrokerError(EdgewiseError):
    """The broker did not start (bad config, port taken) or did not stop."""


def find_tool(name: str, executable: str | os.PathLike | None = None) -> str:
    """Path of a Mosquitto program (``mosquitto``, ``mosquitto_passwd``); MissingDependencyError if absent."""
    if executable is not None:
        path = Path(executable)
        if path.is_file() and os.access(path, os.X_OK):
            return str(path)
        raise MissingDependencyError(f"{name} not found at {path}; {INSTALL_HINT}")
    found = shutil.which(name) or shutil.which(name, path=os.pathsep.join(_SEARCH))
    if found is None:
        raise MissingDependencyError(f"{name} (the MQTT broker) is not installed; {INSTALL_HINT}")
    return found


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now (the OS's choice)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def accepts_connections(host: str, port: int, timeout: float = 0.2) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


class MosquittoBroker:
    """One mosquitto process with a generated config; start/stop/restart on the same port."""

    def __init__(
        self,
        port: int | None = None,
        *,
        host: str = "127.0.0.1",
        workdir: str | os.PathLike | None = None,
        persistence: bool = False,
        users: Mapping[str, str] | None = None,
        password_file: str | os.PathLike | None = None,
        acl_file: str | os.PathLike | None = None,
        acl: str | None = None,
        extra_config: Sequence[str] = (),
        executable: str | os.PathLike | None = None,
        tls: tuple[str | os.PathLike, str | os.PathLike] | None = None,
        tls_port: int | None = None,
    ) -> None:
        self.executable = find_tool("mosquitto", executable)
        self.host = host
        self._auto_port = port is None
        self.port = port if port is not None else free_port(host)
        self._own_workdir = workdir is None
        self.workdir = Path(tempfile.mkdtemp(prefix="edgewise-mosquitto-") if workdir is None else workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.persistence = persistence
        self.users = dict(users or {})
        if self.users and password_file is not None:
            raise BrokerError("give users= or password_file=, not both")
        if acl_file is not None and acl is not None:
            raise BrokerError("give acl_file= or acl=, not both")
        self._password_file = Path(password_file).resolve() if password_file is not None else None
        for what, path in (("password_file", self._password_file), ("acl_file", acl_file)):
            if path is not None and not Path(path).is_file():
                raise BrokerError(f"{what} {path}: no such file")
        self.extra_config = list(extra_config)
        self.tls = tuple(Path(p).resolve() for p in tls) if tls is not None else None
        for path in self.tls or ():
            if not path.is_file():
                raise BrokerError(f"tls: {path}: no such file")
        self.tls_port = (tls_port or free_port(host)) if tls is not None else None
        self.config_path = self.workdir / "mosquitto.conf"
        self.log_path = self.workdir / "mosquitto.log"
        self._proc: subprocess.Popen | None = None
        if self.users:
            self._write_password_file()
        self.acl_file: Path | None = Path(acl_file).resolve() if acl_file is not None else None
        if acl is not None:
            self.acl_file = self.workdir / "acl"
            self.acl_file.write_text(acl, encoding="utf-8")

    # ----------------------------------------------------------------------------------------------

    @property
    def password_file(self) -> Path:
        return self._password_file or self.workdir / "passwords"

    @property
    def authenticated(self) -> bool:
        """Anonymous clients are refused: there is a password file."""
        return bool(self.users) or self._password_file is not None

    def _write_password_file(self) -> None:
        tool = find_tool("mosquitto_passwd")
        self.password_file.unlink(missing_ok=True)
        for i, (user, password) in enumerate(self.users.items()):
            args = [tool, "-b", *(["-c"] if i == 0 else []), str(self.password_file), user, password]
            result = subprocess.run(args, capture_output=True, text=True, timeout=30)
            if result.returncode != 0:
                raise BrokerError(f"mosquitto_passwd failed for user {user!r}: {result.stderr.strip()}")

    def config_text(self) -> str:
        lines = [
            "# generated by edgewise.devtools.mosquitto",
            f"listener {self.port} {self.host}",
            f"allow_anonymous {'false' if self.authenticated else 'true'}",
            "max_queued_messages 0",
            "max_inflight_messages 0",
            "set_tcp_nodelay true",  # small packets go at once (edgewise.edge.telemetry.login.send_immediately)
            "log_dest stderr",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "log_timestamp_format %H:%M:%S",
        ]
        if self.authenticated:
            lines.append(f"password_file {self.password_file}")
        if self.acl_file is not None:
            lines.append(f"acl_file {self.acl_file}")
        if self.persistence:
            lines += ["persistence true", f"persistence_location {self.workdir}/"]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            lines.append("user root")  # as root, mosquitto would switch to user 'mosquitto' and lose access
        lines += self.extra_config  # before the TLS listener: listener options apply to the main one
        if self.tls is not None:  # listener settings follow their listener line
            lines += [
                f"listener {self.tls_port} {self.host}",
                f"certfile {self.tls[0]}",
                f"keyfile {self.tls[1]}",
            ]
        return "\n".join([*lines, ""])

    @classmethod
    def for_fleet(cls, folder: str | os.PathLike, **kwargs) -> MosquittoBroker:
        """A broker for a fleet's broker folder (``edge-deploy broker-acl``, ``--bootstrap``): its
        password file and ACL, each connection pinned to its login, no anonymous access; ``kwargs``
        as for the constructor (``tls=``, ``tls_port=``, ``workdir=``...)."""
        from edgewise.edge.deploy.broker_acl import ACL, PASSWORDS, PIN_CLIENT_ID

        folder = Path(folder)
        extra = [PIN_CLIENT_ID, *kwargs.pop("extra_config", ())]
        return cls(password_file=folder / PASSWORDS, acl_file=folder / ACL, extra_config=extra, **kwargs)

    # ----------------------------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def start(self, timeout: float = 10.0) -> MosquittoBroker:
        """Start the broker and wait until it accepts TCP connections."""
        if self.running:
            return self
        for attempt in range(5):
            self.config_path.write_text(self.config_text(), encoding="utf-8")
            offset = self.log_path.stat().st_size if self.log_path.exists() else 0
            with open(self.log_path, "ab") as log:
                self._proc = subprocess.Popen(
                    [self.executable, "-c", str(self.config_path)],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # a Ctrl-C in the terminal is for the test run, not for us
                )
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if self._proc.poll() is not None:
                    break
                if accepts_connections(self.host, self.port):
                    return self
                time.sleep(0.02)
            else:
                self.stop(kill=True)
                raise BrokerError(
                    f"mosquitto did not accept connections on {self.address} within {timeout:g} s"
                )
            log_tail = self._log_since(offset)
            self._proc = None
            if "Address already in use" in log_tail and attempt < 4:
                if self._auto_port:
                    self.port = free_port(self.host)  # someone took the port between our check and the bind
                else:
                    time.sleep(0.2)
                continue
            raise BrokerError(f"mosquitto exited at start on {self.address}:\n{log_tail.strip()}")
        raise BrokerError(f"mosquitto could not bind {self.address}")  # pragma: no cover

    def stop(self, timeout: float = 10.0, *, kill: bool = False) -> None:
        """Stop the broker: SIGTERM (it saves persistence) or, with ``kill``, SIGKILL (a crash)."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
            raise BrokerError(
                f"mosquitto on {self.address} ignored SIGTERM for {timeout:g} s and was killed"
            ) from None

    def restart(self, timeout: float = 10.0) -> MosquittoBroker:
        """Stop and start again on the same port (persistent state is kept with ``persistence``)."""
        self.stop(timeout)
        return self.start(timeout)

    def close(self) -> None:
        """Stop and, if the working folder was made here, remove it."""
        self.stop()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> MosquittoBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        proc = getattr(self, "_proc", None)  # absent when __init__ failed
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(Exception):
                proc.kill()

    # ----------------------------------------------------------------------------------------------

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def log_text(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace") if self.log_path.exists() else ""

    def _log_since(self, offset: int) -> str:
        with open(self.log_path, "rb") as fh:
            fh.seek(offset)
            return fh.read().decode("utf-8", errors="replace")

    def __repr__(self) -> str:
        return f"MosquittoBroker({self.address}, {'running' if self.running else 'stopped'})"
