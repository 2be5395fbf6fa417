"""--run adds PyTorch eager rows (merged, HRF training form, plain) beside the artifacts, in their own processes."""

from __future__ import annotations

import importlib.util

from .conftest import QUICK, bench, rows_by_name


def test_run_adds_merged_training_form_and_plain_rows(bench_bundle, bench_run_dir, tmp_path):
    rc, report = bench(
        bench_bundle, tmp_path, *QUICK, "--formats", "onnx", "--precisions", "fp32", "--run", bench_run_dir
    )
    assert rc == 0
    rows = rows_by_name(report)
    assert list(rows) == ["onnx fp32", "pytorch merged", "pytorch HRF training form", "pytorch plain"]
    merged, training, plain = rows["pytorch merged"], rows["pytorch HRF training form"], rows["pytorch plain"]
    for row in (merged, training, plain):
        assert row["status"] == "ok" and row["kind"] == "pytorch" and row["runtime"].startswith("torch ")
        assert row["latency_ms"]["p50"] > 0 and row["ratio_vs_onnx_fp32"] > 0
        assert row["memory"]["peak_rss_mb"] > row["memory"]["baseline_rss_mb"] > 0
        assert row["size_bytes"] == 4 * row["parameters"]
    # HRF folds away exactly: the merged model is the plain backbone, the training form is bigger
    assert merged["parameters"] == plain["parameters"] == report["bundle"]["parameters"]
    assert training["parameters"] > merged["parameters"]
    # the FLOPs torch counts on the merged model at 3 s are the ones export recorded
    assert merged["flops"]["per_input"] == report["bundle"]["flops"]["flops"]
    assert training["flops"]["per_input"] > merged["flops"]["per_input"]
    assert report["environment"]["runtimes"]["torch"]


def test_without_torch_the_pytorch_rows_say_so_and_the_rest_goes_on(monkeypatch, bench_bundle, tmp_path):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a, **k: None if name == "torch" else real(name, *a, **k)
    )
    rc, report = bench(
        bench_bundle,
        tmp_path,
        *QUICK,
        "--formats",
        "onnx",
        "--precisions",
        "fp32",
        "--run",
        tmp_path / "any-run",
    )
    assert rc == 0
    rows = rows_by_name(report)
    assert rows["onnx fp32"]["status"] == "ok"
    for name in ("pytorch merged", "pytorch HRF training form", "pytorch plain"):
        assert rows[name]["status"] == "skipped" and rows[name]["reason"] == "skipped: torch not installed"
