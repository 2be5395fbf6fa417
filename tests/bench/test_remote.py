"""--host: the benchmark runs on "the device" (this machine, through a loopback sshd) and comes back."""

from __future__ import annotations

import json
import sys

from edgewise.bench.commands import main

from .conftest import QUICK


def test_a_benchmark_over_ssh_comes_back_labelled_with_the_device(sshd, bench_bundle, tmp_path, capsys):
    rc = main(
        [
            str(bench_bundle),
            "--out",
            str(tmp_path),
            "--device",
            "local",
            *sshd["flags"],
            "--remote-python",
            sys.executable,
            *QUICK,
            "--formats",
            "onnx",
            "--precisions",
            "fp32",
        ]
    )
    out, err = capsys.readouterr()
    assert rc == 0, out + err
    assert f"copying {bench_bundle.name}.tar.gz" in out  # the archive beside the folder, not a new one
    assert f"[{sshd['host']}] onnx fp32: p50" in out  # the device's own summary, streamed
    report = json.loads((tmp_path / "bench.json").read_text())
    assert report["device"]["name"] == "x86-local" and report["device"]["host"].startswith(sshd["host"])
    assert report["device"]["label"] == f"x86-local ({sshd['host']})"
    assert report["rows"][0]["status"] == "ok" and report["rows"][0]["latency_ms"]["p50"] > 0
    assert "on x86-local (" in (tmp_path / "bench.md").read_text().splitlines()[0]
