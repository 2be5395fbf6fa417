"""``edgewise bench`` on a rec bundle: per precision the latency of a top-10 recommendation with beam 20,
each engine in its own process, and with ``--run`` PyTorch on the validation users beside them."""

from __future__ import annotations

import json

import pytest

from edgewise.cli import main

pytestmark = pytest.mark.slow


def test_bench_of_a_rec_bundle_against_pytorch(rec_bundle, rec_run, tmp_path, capsys):
    out = tmp_path / "bench"
    args = ["-q", "bench", str(rec_bundle), "--out", str(out), "--run", str(rec_run), "--threads", "1"]
    assert main([*args, "--runs", "24", "--rounds", "2", "--warmup", "2"]) == 0
    printed = capsys.readouterr().out
    report = json.loads((out / "bench.json").read_text())
    assert report["task"] == "rec" and report["k"] == 10 and report["beam"] == 20
    assert report["users"] == 24 and report["histories"].startswith("validation users of")
    rows = report["rows"]
    assert sorted(rows) == [f"rec-lazy-small-1.0.0 {e}" for e in ("onnx fp32", "onnx int8", "pytorch")]
    for label, row in rows.items():
        lat = row["latency_ms"]
        assert row["requests"] == 24 and 0 < lat["p50"] <= lat["p90"] <= lat["p99"], label
        assert 0 <= row["metrics"]["ndcg@10"] <= row["metrics"]["hr@10"] <= 1
        assert row["peak_rss_mb"] > 0 and f"{label}: p50" in printed
    fp32, pytorch = rows["rec-lazy-small-1.0.0 onnx fp32"], rows["rec-lazy-small-1.0.0 pytorch"]
    assert fp32["vs_pytorch"] == {"same_top_k": 1.0, "top_k_overlap": 1.0}  # the same ranking, same users
    assert fp32["metrics"] == pytorch["metrics"] and fp32["export_gate_passed"] is True
    assert "top_k_overlap" in rows["rec-lazy-small-1.0.0 onnx int8"]["vs_pytorch"]
    md = (out / "bench.md").read_text()
    assert "| rec-lazy-small-1.0.0 onnx int8 |" in md and "p99" in md and "NDCG@10" in md


def test_bench_of_a_rec_bundle_without_the_run(rec_bundle, tmp_path):
    out = tmp_path / "bench"
    args = ["-q", "bench", str(rec_bundle), "--out", str(out), "--threads", "1", "--runs", "10"]
    assert main([*args, "--rounds", "1", "--warmup", "1"]) == 0
    report = json.loads((out / "bench.json").read_text())
    assert [r.rsplit(" ", 2)[1:] for r in report["rows"]] == [["onnx", "fp32"], ["onnx", "int8"]]
    assert report["histories"].startswith("seeded random histories")
    assert any("--run RUN" in note for note in report["notes"])
    assert all("metrics" not in r and "vs_pytorch" not in r for r in report["rows"].values())
