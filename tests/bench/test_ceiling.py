"""The GEMM ceilings: measured in a fresh process, combined best-of, int8 unavailable without onnx."""

from __future__ import annotations

import sys

from edgewise.bench import ceiling


def test_measure_ceiling_runs_in_a_subprocess_with_the_thread_count():
    result = ceiling.measure_ceiling(1, sizes=(128, 256), repeats=1)
    assert result["fp32"]["status"] == "ok" and result["fp32"]["value"] > 0
    assert set(result["fp32"]["by_size"]) == {"128", "256"} and result["fp32"]["threads"] == 1
    assert "OPENBLAS_NUM_THREADS/OMP_NUM_THREADS/MKL_NUM_THREADS=1" in result["fp32"]["thread_control"]
    assert (
        result["int8"]["status"] == "ok" and result["int8"]["value"] > 0 and result["int8"]["unit"] == "GOP/s"
    )


def test_int8_is_unavailable_with_the_reason_when_onnx_is_missing(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)  # import onnx -> ImportError
    figure = ceiling.int8_gemm((64,), 1, 1)
    assert figure["status"] == "unavailable" and "onnx package is not installed" in figure["reason"]


def test_combine_keeps_the_best_phase_and_size():
    def fig(value, by_size):
        return {"status": "ok", "value": value, "unit": "GFLOP/s", "by_size": by_size}

    down = {"status": "unavailable", "unit": "GOP/s", "reason": "no onnx"}
    start = {"fp32": fig(150.0, {"1024": 150.0, "2048": 120.0}), "int8": down, "seconds": 1.0}
    end = {"fp32": fig(190.0, {"1024": 100.0, "2048": 190.0}), "int8": down, "seconds": 1.5}
    out = ceiling.combine({"start": start, "end": end})
    assert out["fp32"]["value"] == 190.0 and out["fp32"]["by_size"] == {"1024": 150.0, "2048": 190.0}
    assert out["fp32"]["by_phase"] == {"start": 150.0, "end": 190.0} and out["seconds"] == 2.5
    assert out["int8"]["status"] == "unavailable" and out["int8"]["reason"] == "no onnx"
