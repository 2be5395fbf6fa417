"""`--format tensorrt` on a machine without TensorRT: the bundle carries the ONNX and the build spec."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from edgewise.bundle import load_bundle, sha256_file
from edgewise.cli import main
from edgewise.edge.backends import OnnxBackend
from edgewise.edge.tensorrt import BuildSpec, read_reference, tensorrt_available
from edgewise.edge.windows import run_windowed


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
        assert spec.opt_frames == 301  # the 3 s window: 1 + 48000 // 160 frames
        _check_reference_set(bundle, arts)
    with load_bundle(tmp_path / "ser-tiny-1.0.0.tar.gz") as archived:  # the archive carries it too
        _check_reference_set(archived, {a.precision: a for a in archived.artifacts("classifier")})


def _check_reference_set(bundle, arts):
    """One reference set for the device's engine check, bound by sha256 in each artifact's extra."""
    refs = [art.extra["reference"] for art in arts.values()]
    assert all(ref["path"] == refs[0]["path"] and ref["sha256"] == refs[0]["sha256"] for ref in refs)
    ref = refs[0]
    path = bundle.root / ref["path"]
    assert ref["path"] == "models/ser.reference.frames-50-3000-1500.npz"  # the engine's frame range
    assert sha256_file(path) == ref["sha256"] and path.stat().st_size == ref["size_bytes"]
    inputs, logits = read_reference(path)
    spec = BuildSpec.from_manifest(arts["fp16"].extra["tensorrt"])
    frames = [x.shape[1] for x in inputs]
    assert frames == ref["frames"] and len(inputs) == ref["inputs"] == 3
    assert frames[-1] < spec.min_frames <= min(frames[:-1]) and max(frames) <= spec.max_frames
    for art in arts.values():  # the graph the engine is built from met it here, in onnxruntime
        check = art.extra["reference"]["export_check"]
        assert check["passed"] and check["checked_with"].startswith("onnxruntime")
    # the expected logits are the model's under the device's frame-range policy: the fp32 graph
    # the fp16 engine is built from reproduces them within the artifact's tolerance
    graph = OnnxBackend(bundle.artifact_path(arts["fp16"]))
    got = np.concatenate([run_windowed(graph, x, spec.frame_range) for x in inputs])
    assert np.abs(got - logits).max() <= 1e-4 <= arts["fp16"].parity["tolerance"]
