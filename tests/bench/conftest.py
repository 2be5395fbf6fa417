"""A tiny trained SER run and its bundle (ONNX fp32 + int8 dynamic, TFLite fp32 + int8 dynamic with a
1 s window), one full benchmark of it, and helpers to run ``edgewise bench`` in-process.

The run and bundle are the shared ones of tests/conftest.py; the benchmark itself never imports
torch outside the PyTorch rows' worker processes.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import pytest

from edgewise.bench.commands import bench_add_arguments, bench_run
from tests.loopback_sshd import sshd  # noqa: F401  (fixture)

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


@pytest.fixture(autouse=True)
def private_inventory(tmp_path, monkeypatch):
    """Every bench test reads (and a --host test records devices in) its own device inventory."""
    path = tmp_path / "inventory" / "devices.json"
    monkeypatch.setenv("EDGEWISE_INVENTORY", str(path))
    return path


@pytest.fixture(scope="session")
def bench_run_dir(tiny_run):
    """The shared tiny run (tests/conftest.py)."""
    return tiny_run


@pytest.fixture(scope="session")
def bench_bundle(ser_bundle):
    """The shared bundle (tests/conftest.py); its .tar.gz lies beside it."""
    return ser_bundle


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
