"""A throwaway PostgreSQL server on localhost, for tests and benchmarks (``initdb`` + ``pg_ctl``).

::

    with PostgresServer() as pg:                       # a free port on 127.0.0.1, trust auth
        url = pg.create_database("fleet")             # postgresql://edgewise@127.0.0.1:PORT/fleet
        store = open_store(url)

PostgreSQL refuses to run as root: as root the server runs as ``run_as`` (default ``nobody``),
and its folder is made under the system temp folder (which every user can reach) and handed to
that user. Needs the server programs (Debian: ``apt-get install postgresql``; they live in
``/usr/lib/postgresql/<version>/bin``, found there when they are not on ``PATH``).
``fsync=False`` skips the server's disk flushes (test data that is thrown away anyway).
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from edgewise.devtools.mosquitto import accepts_connections, free_port
from edgewise.errors import EdgewiseError, MissingDependencyError

INSTALL_HINT = "install it with: apt-get install postgresql"


class PostgresServerError(EdgewiseError):
    """initdb or the server failed (the message holds the end of its log)."""


def find_pg_tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
        found = candidates[-1] if candidates else None
    if found is None:
        raise MissingDependencyError(f"PostgreSQL's {name} is not installed; {INSTALL_HINT}")
    return found


class PostgresServer:
    def __init__(
        self,
        port: int | None = None,
        *,
        host: str = "127.0.0.1",
        user: str = "edgewise",
        fsync: bool = False,
        run_as: str = "nobody",
        workdir: str | os.PathLike | None = None,
    ) -> None:
        self.initdb = find_pg_tool("initdb")
        self.pg_ctl = find_pg_tool("pg_ctl")
        self.host, self.user, self.fsync = host, user, fsync
        self.port = port if port is not None else free_port(host)
        self._as_root = hasattr(os, "geteuid") and os.geteuid() == 0
        self.run_as = run_as if self._as_root else None
        self._own_workdir = workdir is None
        self.workdir = Path(tempfile.mkdtemp(prefix="edgewise-pg-") if workdir is None else workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self.run_as is not None:
            shutil.chown(self.workdir, self.run_as)
        self.data = self.workdir / "data"
        self.log_path = self.workdir / "postgres.log"

    def _run(self, args: list[str], timeout: float = 120) -> subprocess.CompletedProcess:
        kwargs = {"user": self.run_as} if self.run_as is not None else {}
        return subprocess.run(
            args, capture_output=True, text=True, timeout=timeout, cwd=self.workdir, check=False, **kwargs
        )

    @property
    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists() and accepts_connections(self.host, self.port)

    def start(self, timeout: float = 60) -> PostgresServer:
        if not (self.data / "PG_VERSION").exists():
            result = self._run(
                [
                    self.initdb,
                    "-D",
                    str(self.data),
                    "-U",
                    self.user,
                    "--auth=trust",
                    "-E",
                    "UTF8",
                    "--no-sync",
                ]
            )
            if result.returncode != 0:
                raise PostgresServerError(f"initdb failed in {self.data}:\n{result.stderr.strip()[-2000:]}")
        options = (
            f"-p {self.port} -k {self.workdir} -c listen_addresses={self.host} -c max_connections=60 "
            f"-c fsync={'on' if self.fsync else 'off'}"
        )
        result = self._run(
            [
                self.pg_ctl,
                "-D",
                str(self.data),
                "-l",
                str(self.log_path),
                "-o",
                options,
                "-w",
                "-t",
                str(int(timeout)),
                "start",
            ],
            timeout=timeout + 10,
        )
        if result.returncode != 0:
            raise PostgresServerError(
                f"PostgreSQL did not start on {self.host}:{self.port}:\n{self.log_tail()}"
            )
        return self

    def stop(self, mode: str = "fast") -> None:
        if (self.data / "postmaster.pid").exists():
            self._run([self.pg_ctl, "-D", str(self.data), "-m", mode, "-w", "stop"], timeout=60)

    def kill(self) -> None:
        """SIGKILL the postmaster (a crash); :meth:`start` recovers from the WAL."""
        pid_file = self.data / "postmaster.pid"
        if pid_file.exists():
            pid = int(pid_file.read_text().split()[0])
            os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + 10
            while accepts_connections(self.host, self.port) and time.monotonic() < deadline:
                time.sleep(0.05)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{self.user}@{self.host}:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no log)"

    def close(self) -> None:
        try:
            self.stop("immediate")
        finally:
            if self._own_workdir:
                shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
