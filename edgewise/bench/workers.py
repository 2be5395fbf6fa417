"""The runner's side of :mod:`edgewise.bench.worker`: start a worker process, send requests, read replies."""

from __future__ import annotations

import contextlib
import json
import os
import select
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from edgewise.errors import EdgewiseError

REPLY_TIMEOUT_S = 600.0


class WorkerError(EdgewiseError):
    """A worker could not do what was asked (load failure, crash, timeout); the message says why."""


def worker_env() -> dict[str, str]:
    """The environment of a worker: this one, with the edgewise package importable."""
    env = dict(os.environ)
    package_root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    return env


class WorkerProcess:
    """``python -m edgewise.bench.worker`` (or another ``module`` speaking its protocol);
    ``call(op, **args)`` returns its reply or raises WorkerError."""

    def __init__(self, label: str, module: str = "edgewise.bench.worker") -> None:
        self.label = label
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 (closed by close())
        self.proc = subprocess.Popen(
            [sys.executable, "-m", module],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            env=worker_env(),
            text=True,
            bufsize=1,
        )

    def _stderr_tail(self) -> str:
        self._stderr.seek(0)
        lines = [ln.strip() for ln in self._stderr.read().decode(errors="replace").splitlines() if ln.strip()]
        return lines[-1] if lines else "no message"

    def call(self, op: str, timeout: float = REPLY_TIMEOUT_S, **args: Any) -> dict[str, Any]:
        try:
            self.proc.stdin.write(json.dumps({"op": op, **args}) + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            raise self._died(op) from None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            self.kill()
            raise WorkerError(f"{self.label}: no answer to {op!r} within {timeout:g} s; stopped it")
        line = self.proc.stdout.readline()
        if not line:
            raise self._died(op)
        reply = json.loads(line)
        if not reply.pop("ok"):
            raise WorkerError(reply["error"])
        return reply

    def _died(self, op: str) -> WorkerError:
        try:
            code = self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            code = None
        how = f"exit code {code}" if code is None or code >= 0 else f"signal {-code}"
        return WorkerError(
            f"{self.label}: the worker process died during {op!r} ({how}): {self._stderr_tail()}"
        )

    def close(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(WorkerError, BrokenPipeError, OSError, ValueError):
                self.call("exit", timeout=10)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()
        for stream in (self.proc.stdin, self.proc.stdout):
            with contextlib.suppress(OSError):
                stream.close()
        self._stderr.close()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
