"""Bad input never stops the run silently: each problem is named, in the row or as one clear error."""

from __future__ import annotations

import hashlib
import importlib.util
import json

import pytest

from edgewise.bench.commands import main
from edgewise.devtools.mosquitto import free_port
from edgewise.errors import EdgewiseError

from .conftest import QUICK, bench, parse, rows_by_name


def _hide_modules(monkeypatch, *names: str) -> None:
    """Make ``importlib.util.find_spec`` say these modules are not installed (in this process)."""
    real = importlib.util.find_spec

    def find_spec(name, *args, **kwargs):
        if name.split(".")[0] in names:
            return None
        return real(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)


def test_a_missing_runtime_is_a_row_that_says_why_and_the_others_go_on(monkeypatch, bench_bundle, tmp_path):
    _hide_modules(monkeypatch, "ai_edge_litert", "tflite_runtime")
    rc, report = bench(bench_bundle, tmp_path, *QUICK, "--precisions", "fp32")
    assert rc == 0
    rows = rows_by_name(report)
    assert set(rows) == {"onnx fp32", "tflite fp32"}
    tflite = rows["tflite fp32"]
    assert tflite["status"] == "skipped" and "ai-edge-litert is not installed" in tflite["reason"]
    assert tflite["latency_ms"] is None and tflite["size_bytes"] > 0
    assert rows["onnx fp32"]["status"] == "ok" and rows["onnx fp32"]["latency_ms"]["p50"] > 0
    assert report["environment"]["runtimes"]["ai-edge-litert"] is None
    assert "**skipped**: no TFLite interpreter" in (tmp_path / "bench.md").read_text()


def test_a_tampered_artifact_fails_clearly_with_exit_2(bundle_copy, tmp_path, capsys):
    path = bundle_copy / "models" / "ser.int8-dynamic.onnx"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(
        EdgewiseError,
        match=r"bundle does not verify.*sha256 mismatch for artifact 'models/ser.int8-dynamic.onnx'",
    ):
        bench_args = parse(bundle_copy, "--out", tmp_path / "a", *QUICK)
        from edgewise.bench.commands import bench_run

        bench_run(bench_args)
    report = json.loads((tmp_path / "a" / "bench.json").read_text())
    assert report["bundle"]["verified"] is False and "sha256 mismatch" in report["bundle"]["error"]
    assert report["rows"] == []
    assert "does not verify" in (tmp_path / "a" / "bench.md").read_text()

    rc = main([str(bundle_copy), "--out", str(tmp_path / "b"), *QUICK])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("edgewise: error: bundle does not verify") and err.count("\n") == 1


def test_an_artifact_that_does_not_load_is_a_failed_row(bundle_copy, tmp_path):
    """The file verifies (its manifest entry matches) but is not an ONNX model."""
    rel = "models/ser.int8-dynamic.onnx"
    garbage = b"not an onnx model" * 100
    (bundle_copy / rel).write_bytes(garbage)
    manifest = json.loads((bundle_copy / "manifest.json").read_text())
    for art in manifest["models"]["classifier"]["artifacts"]:
        if art["path"] == rel:
            art.update(size_bytes=len(garbage), sha256=hashlib.sha256(garbage).hexdigest())
    (bundle_copy / "manifest.json").write_text(json.dumps(manifest, indent=2))
    rc, report = bench(bundle_copy, tmp_path, *QUICK, "--formats", "onnx")
    assert rc == 0
    rows = rows_by_name(report)
    bad = rows["onnx int8 (dynamic)"]
    assert (
        bad["status"] == "failed"
        and "does not load" in bad["reason"]
        and "not a loadable ONNX model" in bad["reason"]
    )
    assert rows["onnx fp32"]["status"] == "ok" and rows["onnx fp32"]["ratio_vs_onnx_fp32"] == 1.0


def test_a_bundle_without_flops_says_flops_unknown(bundle_copy, tmp_path):
    manifest = json.loads((bundle_copy / "manifest.json").read_text())
    del manifest["models"]["classifier"]["extra"]["flops"]  # as exported before flops were recorded
    (bundle_copy / "manifest.json").write_text(json.dumps(manifest, indent=2))
    rc, report = bench(bundle_copy, tmp_path, *QUICK, "--formats", "onnx", "--precisions", "fp32")
    assert rc == 0 and report["bundle"]["flops"] is None
    row = report["rows"][0]
    assert row["status"] == "ok" and row["flops"]["achieved_gflops"] is None
    assert row["flops"]["note"].startswith("flops unknown")
    md = (tmp_path / "bench.md").read_text()
    assert "| flops unknown |" in md and "Model FLOPs: unknown" in md


def test_a_device_that_cannot_be_reached_is_one_line(bench_bundle, tmp_path, capsys):
    port = free_port()  # nothing listens there
    rc = main(
        [
            str(bench_bundle),
            "--out",
            str(tmp_path),
            "--device",
            "local",
            "--host",
            "root@127.0.0.1",
            "--port",
            str(port),
            "--known-hosts",
            str(tmp_path / "known_hosts"),
        ]
    )
    err = capsys.readouterr().err
    assert rc == 2
    assert (
        err
        == f"edgewise: error: cannot reach root@127.0.0.1:{port}: connect to host 127.0.0.1 port {port}: Connection refused\n"
    )
    assert not (tmp_path / "bench.json").exists()


def test_host_needs_a_device_and_bad_options_are_refused(bench_bundle, tmp_path, capsys):
    assert main([str(bench_bundle), "--out", str(tmp_path), "--host", "pi@10.0.0.7"]) == 2
    assert "--host pi@10.0.0.7 needs --device NAME" in capsys.readouterr().err
    assert main([str(bench_bundle), "--out", str(tmp_path), "--device", "nosuchboard"]) == 2
    assert "unknown device 'nosuchboard'" in capsys.readouterr().err
    assert main([str(bench_bundle), "--out", str(tmp_path), "--runs", "0"]) == 2
    assert "--runs must be at least 1" in capsys.readouterr().err
    assert main([str(tmp_path / "missing"), "--out", str(tmp_path)]) == 2
    assert "bundle not found" in capsys.readouterr().err
