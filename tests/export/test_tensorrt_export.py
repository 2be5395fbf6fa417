"""`--format tensorrt` on a machine without TensorRT: the bundle carries the ONNX and the build spec."""

from __future__ import annotations

import logging

import pytest

from edgewise.bundle import load_bundle
from edgewise.cli import main
from edgewise.edge.backends import OnnxBackend
from edgewise.edge.tensorrt import BuildSpec, tensorrt_available


@pytest.mark.slow
def test_tensorrt_export_ships_the_graph_and_build_spec_and_says_why(tiny_run, tmp_path, caplog):
    if tensorrt_available():
        pytest.skip("TensorRT is installed: this test covers machines without it")
    args = ["export", str(tiny_run), "--out", str(tmp_path), "--format", "tensorrt", "--threads", "1"]
    with caplog.at_level(logging.WARNING):
        assert main([*args, "--precision", "fp16", "--precision", "int8"]) == 0
    assert "TensorRT is not installed on this machine" in caplog.text
    assert "the device builds and caches the engine on first use" in caplog.text
    with load_bundle(tmp_path / "ser-tiny-1.0.0") as bundle:
        arts = {a.precision: a for a in bundle.artifacts("classifier")}
        assert sorted(arts) == ["fp16", "int8"]
        for precision, art in arts.items():
            assert art.format == "tensorrt-onnx" and art.runtime == "tensorrt"
            assert art.path == f"models/ser.{'int8-static' if precision == 'int8' else 'fp16'}.trt.onnx"
            spec = BuildSpec.from_manifest(art.extra["tensorrt"])
            assert spec.precision == precision and spec.input_name == "features" and spec.n_mels == 64
            assert art.extra["trial_build"] is None
            assert art.parity["passed"] is True
            assert art.parity["checked_with"].startswith("onnxruntime")
            OnnxBackend(bundle.artifact_path(art))  # the graph the device builds from loads
        assert arts["int8"].extra["quantization"]["quant_format"] == "QDQ"
