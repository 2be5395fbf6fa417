"""A tiny trained SER run and its bundle (ONNX fp32 + int8 dynamic, TFLite fp32 + int8 dynamic with a
1 s window), one full benchmark of it, and helpers to run ``edgewise bench`` in-process.

The bundle is built like tests/edge/conftest.py builds its own (the tone corpus of the trainer
tests, 3 epochs, ``edgewise export``); the benchmark itself never imports torch outside the
PyTorch rows' worker processes.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from edgewise.bench.commands import bench_add_arguments, bench_run
from tests.cloud.train.conftest import FAST, make_tone_corpus

# small, fast settings for tests that check behaviour rather than figures
QUICK = ["--runs", "6", "--rounds", "2", "--warmup", "2", "--batches", "1", "--cold-runs", "1"]
QUICK += ["--block-seconds", "0.02", "--ceiling-sizes", "256", "--ceiling-repeats", "1", "--no-plots"]
# the shared full run: every figure, still small
FULL = ["--runs", "20", "--rounds", "3", "--warmup", "3", "--cold-runs", "2", "--block-seconds", "0.05"]
FULL += ["--ceiling-sizes", "512", "1024", "--ceiling-repeats", "2", "--threads", "2"]


def parse(*argv) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="edgewise bench")
    bench_add_arguments(parser)
    return parser.parse_args([str(a) for a in argv])


def bench(bundle, out: Path, *flags) -> tuple[int, dict]:
    """Run the command in-process like the CLI would; returns (exit code, bench.json)."""
    rc = bench_run(parse(bundle, "--out", out, *flags))
    return rc, json.loads((out / "bench.json").read_text())


def rows_by_name(report: dict) -> dict[str, dict]:
    return {r["name"]: r for r in report["rows"]}


@pytest.fixture(scope="session")
def bench_corpus(tmp_path_factory):
    return make_tone_corpus(tmp_path_factory.mktemp("bench-corpus"))


@pytest.fixture(scope="session")
def bench_run_dir(bench_corpus, tmp_path_factory):
    pytest.importorskip("torch")
    from edgewise.cli import main

    run = tmp_path_factory.mktemp("bench-runs") / "tiny"
    train = ["-q", "train", "ser", "--config", "tiny", "--data", str(bench_corpus), "--out", str(run)]
    assert main([*train, "--set", "optim.epochs=3", *FAST[2:]]) == 0
    return run


@pytest.fixture(scope="session")
def bench_bundle(bench_run_dir, tmp_path_factory):
    """The bundle folder; its .tar.gz lies beside it."""
    from edgewise.cli import main

    out = tmp_path_factory.mktemp("bench-bundles")
    export = ["-q", "export", str(bench_run_dir), "--out", str(out), "--format", "onnx", "--format", "tflite"]
    export += ["--precision", "fp32", "--precision", "int8", "--quant", "dynamic", "--window-seconds", "1.0"]
    assert main([*export, "--no-vad", "--threads", "1"]) == 0
    return out / "ser-tiny-1.0.0"


@pytest.fixture(scope="session")
def full_bench(bench_bundle, tmp_path_factory):
    """One benchmark of every artifact with every figure: (exit code, report, out folder, stdout)."""
    out = tmp_path_factory.mktemp("bench-full")
    rc, report = bench(bench_bundle, out, *FULL)
    return rc, report, out


@pytest.fixture
def bundle_copy(bench_bundle, tmp_path):
    """A private copy of the bundle folder (no archive) that a test may damage."""
    dest = tmp_path / "bundles" / bench_bundle.name
    shutil.copytree(bench_bundle, dest)
    return dest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def loopback_sshd(tmp_path_factory):
    """An OpenSSH server on 127.0.0.1 with its own host and user keys (nothing on the system changes);
    skipped, saying why, where sshd cannot run."""
    sshd = Path("/usr/sbin/sshd")
    if not sshd.is_file() or shutil.which("ssh") is None or shutil.which("ssh-keygen") is None:
        pytest.skip("OpenSSH server and client are not installed")
    if os.geteuid() == 0 and not Path("/run/sshd").is_dir():
        pytest.skip("sshd run as root needs /run/sshd")
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
    log = open(tmp / "sshd.log", "w")  # noqa: SIM115 (closed at teardown)
    proc = subprocess.Popen([str(sshd), "-D", "-e", "-f", str(tmp / "sshd_config")], stdout=log, stderr=log)
    deadline = time.monotonic() + 10
    while True:
        if proc.poll() is not None:
            log.close()
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
        "flags": ["--host", f"{user}@127.0.0.1", "--port", str(port), "--identity", str(tmp / "user_key")]
        + ["--known-hosts", str(tmp / "known_hosts")],
    }
    proc.terminate()
    proc.wait(timeout=10)
    log.close()
