"""Helpers for the serve tests: a config folder made by ``serve-init`` (a real self-signed
certificate and token), a server in its own process (``python -m edgewise cloud serve``) on
a free port, and an HTTPS client that verifies the certificate and sends the token."""

from __future__ import annotations

import argparse
import base64
import json
import os
import signal
import ssl
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from edgewise.devtools.mosquitto import free_port
from tests.conftest import require_module

REPO = Path(__file__).resolve().parents[3]


def serve_init(folder: Path, *models: str, **kwargs: Any) -> Path:
    """``serve-init FOLDER`` with ``--bundle``/``--run`` arguments as ``"bundle:ID=DIR"``; the config path."""
    from edgewise.cloud.serve.commands import serve_init_add_arguments, serve_init_run

    parser = argparse.ArgumentParser()
    serve_init_add_arguments(parser)
    argv = [str(folder)]
    for spec in models:
        kind, _, value = spec.partition(":")
        argv += [f"--{kind}", value]
    for key, value in kwargs.items():
        argv += [f"--{key.replace('_', '-')}", str(value)]
    assert serve_init_run(parser.parse_args(argv)) == 0
    return folder / "config.yaml"


def edit_config(path: Path, **changes: Any) -> Path:
    data = yaml.safe_load(path.read_text())
    data.update(changes)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


class ServerProcess:
    """``python -m edgewise cloud serve --config CONFIG`` in a new session, its output in a log."""

    def __init__(self, config: Path, log: Path) -> None:
        self.config = config
        data = yaml.safe_load(config.read_text())
        self.url = f"https://{data.get('host', '127.0.0.1')}:{data['port']}"
        self.ca = config.parent / "tls" / "server.pem"
        self.token = (config.parent / "client" / "token").read_text().strip()
        self.log = log
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 240.0) -> ServerProcess:
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [
                    "nice",
                    "-n",
                    "5",
                    sys.executable,
                    "-m",
                    "edgewise",
                    "cloud",
                    "serve",
                    "--config",
                    str(self.config),
                ],
                cwd=REPO,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its children (Ray's) go with it
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited with {self.proc.returncode}:\n{self.log_text()[-4000:]}")
            try:
                status, body, _ = self.request("GET", "/health", auth=False, timeout=2)
                if status == 200 and body.get("status") == "ok":
                    return self
            except OSError:
                pass
            time.sleep(0.3)
        self.stop()
        raise AssertionError(f"server not up within {timeout:g} s:\n{self.log_text()[-4000:]}")

    def stop(self, timeout: float = 60.0) -> int | None:
        proc, self.proc = self.proc, None
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
        return proc.returncode

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    # -- a client: urllib, the certificate as the CA, the token -----------------------------------

    def context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca))

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        auth: bool | str = True,
        raw: bytes | None = None,
        timeout: float = 60,
    ) -> tuple[int, Any, dict[str, str]]:
        """(status, parsed JSON or bytes, headers)."""
        import urllib.error
        import urllib.request

        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        headers = {"Content-Type": "application/json"}
        if auth:
            headers["Authorization"] = f"Bearer {self.token if auth is True else auth}"
        req = urllib.request.Request(self.url + path, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(req, timeout=timeout, context=self.context()) as response:
                status, payload, hdrs = response.status, response.read(), dict(response.headers)
        except urllib.error.HTTPError as exc:
            with exc:
                status, payload, hdrs = exc.code, exc.read(), dict(exc.headers)
        kind = hdrs.get("content-type", "")
        return status, (json.loads(payload) if kind.startswith("application/json") else payload), hdrs

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def wav_b64(path: Path) -> str:
    return base64.b64encode(Path(path).read_bytes()).decode("ascii")


def pcm16_b64(path: Path) -> str:
    import soundfile as sf

    audio, sr = sf.read(str(path), dtype="int16")
    assert sr == 16000
    return base64.b64encode(audio.astype("<i2").tobytes()).decode("ascii")


def without_timings(body: Any) -> Any:
    """A reply with its timings (and the answering process, its start time) left out: what two servers must agree on."""
    if isinstance(body, dict):
        return {k: without_timings(v) for k, v in body.items() if k not in ("timings", "pid", "created")}
    if isinstance(body, list):
        return [without_timings(v) for v in body]
    return body


@pytest.fixture(scope="session")
def serve_deps():
    require_module("fastapi", "fastapi is not installed (the serve extra)")
    require_module("uvicorn", "uvicorn is not installed (the serve extra)")


@pytest.fixture
def port() -> int:
    return free_port()
