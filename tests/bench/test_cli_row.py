"""The row for edgewise/cli.py's COMMANDS table works: `edgewise bench` through the real entry point."""

from __future__ import annotations

import json

from edgewise import cli

from .conftest import QUICK

ROW = (
    "bench",
    None,
    "edgewise.bench.commands",
    "bench",
    "benchmark a bundle's artifacts on this device or over ssh",
)


def test_edgewise_bench_through_the_cli(monkeypatch, bench_bundle, tmp_path, capsys):
    if not any(row[0] == "bench" for row in cli.COMMANDS):  # until the row is in cli.py itself
        monkeypatch.setattr(cli, "COMMANDS", [*cli.COMMANDS, ROW])
    rc = cli.main(
        [
            "-q",
            "bench",
            str(bench_bundle),
            "--out",
            str(tmp_path),
            *QUICK,
            "--formats",
            "onnx",
            "--precisions",
            "fp32",
        ]
    )
    out = capsys.readouterr().out
    assert rc == 0 and out.startswith("onnx fp32: p50 ")
    report = json.loads((tmp_path / "bench.json").read_text())
    assert report["rows"][0]["status"] == "ok"
    assert report["command"].startswith(f"edgewise bench {bench_bundle} --out {tmp_path} --formats onnx ")
    assert "--runs 6 --warmup 2 --rounds 2" in report["command"] and report["command"].endswith(" --no-plots")
