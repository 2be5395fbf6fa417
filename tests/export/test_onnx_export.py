"""`edgewise export` writes ONNX artifacts that match PyTorch, each with its parity in the manifest."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edgewise.bundle import load_bundle, sha256_file
from edgewise.cloud.train.run import load_run_model
from edgewise.edge.backends import BackendError, OnnxBackend
from edgewise.export.errors import ExportError
from edgewise.export.onnx_export import check_calibration
from tests.conftest import require_module

onnx = require_module("onnx")

STEMS = ["fp32", "fp16", "int8-dynamic", "int8-static"]


def _artifacts(bundle_dir):
    bundle = load_bundle(bundle_dir)
    return bundle, {
        a.path.split("/")[-1].removeprefix("ser.").removesuffix(".onnx"): a
        for a in bundle.artifacts("classifier")
    }


@pytest.mark.slow
def test_manifest_validates_and_records_parity_for_every_artifact(exported, tiny_run):
    folder, archive = exported
    bundle, arts = _artifacts(archive)  # the archive opens and validates like the folder
    assert sorted(arts) == sorted(STEMS)
    m = bundle.manifest
    assert m.task == "ser" and m.labels == ["neutral", "happy", "sad", "angry"]
    assert m.log_mel().mean is not None  # the training normalization travels with the model
    classifier = bundle.model("classifier")
    assert [(s.name, s.shape, s.dtype) for s in classifier.inputs] == [
        ("features", ["batch", "time", 64], "float32")
    ]
    assert [(s.name, s.shape, s.dtype) for s in classifier.outputs] == [("logits", ["batch", 4], "float32")]
    for stem, art in arts.items():
        assert art.format == "onnx" and art.runtime == "onnxruntime" and art.fixed_shape is None
        p = art.parity
        assert p["passed"] is True, (stem, p)
        assert p["max_abs_diff"] <= p["tolerance"] and p["split"] == "val" and p["utterances"] == 24
        assert p["reference_ua"] - p["ua"] <= p["max_metric_drop"] + 1e-12
        assert p["dynamic_shapes"]["passed"] is True
        # the device's reference set: whole utterances, one file for every ONNX artifact, met here
        ref = art.extra["reference"]
        assert ref["path"] == "models/ser.reference.npz" and ref["sha256"] == sha256_file(
            bundle.root / ref["path"]
        )
        assert ref["export_check"]["passed"] and ref["export_check"]["max_abs_diff"] <= p["tolerance"]
    assert arts["int8-dynamic"].extra["quant"] == "dynamic"
    static = arts["int8-static"].extra
    assert static["quant"] == "static" and static["activations"] == "uint8" and static["weights"] == "int8"
    assert static["calibration"]["utterances"] == 72  # the whole (small) training split
    prov = m.provenance
    assert prov["run"] == str(tiny_run.resolve()) and prov["corpus_json_sha256"]
    assert len(prov["corpus_listing_sha256"]) == 64
    assert {"torch", "onnx", "onnxruntime"} <= set(prov["versions"])
    bundle.close()


@pytest.mark.slow
def test_fp32_onnx_matches_pytorch_on_odd_lengths_and_batch_sizes(exported, tiny_run):
    model, _ = load_run_model(tiny_run)
    bundle, arts = _artifacts(exported[0])
    runner = OnnxBackend(bundle.artifact_path(arts["fp32"]))
    gen = torch.Generator().manual_seed(1)
    for batch, frames in [(1, 2), (1, 37), (3, 101), (2, 299), (5, 17)]:
        x = torch.randn(batch, frames, 64, generator=gen)
        with torch.no_grad():
            expected = model(x).numpy()
        got = runner(x.numpy())
        assert got.shape == (batch, 4)
        np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)


@pytest.mark.slow
def test_int8_is_smaller_than_fp32_and_fp16_in_between(exported):
    _, arts = _artifacts(exported[0])
    sizes = {stem: arts[stem].size_bytes for stem in STEMS}
    assert sizes["int8-dynamic"] < sizes["fp16"] < sizes["fp32"]
    assert sizes["int8-static"] < sizes["fp16"]
    assert sizes["int8-dynamic"] <= 0.30 * sizes["fp32"]  # the export issue's size goal
    assert arts["int8-dynamic"].precision == arts["int8-static"].precision == "int8"


def test_a_corrupt_onnx_file_is_named(tmp_path):
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"\x08\x07 this is not a protobuf" * 10)
    with pytest.raises(BackendError, match=r"broken\.onnx: not a loadable ONNX model"):
        OnnxBackend(bad)
    with pytest.raises(BackendError, match=r"missing\.onnx: ONNX file not found"):
        OnnxBackend(tmp_path / "missing.onnx")


def test_calibration_set_must_be_non_empty_and_the_right_shape():
    with pytest.raises(ExportError, match="calibration set is empty"):
        check_calibration([], 64)
    with pytest.raises(ExportError, match=r"item 1 has shape \(50, 40\); expected \(frames >= 2, 64\)"):
        check_calibration([np.zeros((30, 64)), np.zeros((50, 40))], 64)
    with pytest.raises(ExportError, match="NaN"):
        check_calibration([np.full((30, 64), np.nan)], 64)
    batches = check_calibration([np.zeros((30, 64)), np.zeros((1, 20, 64))], 64)
    assert [b.shape for b in batches] == [(1, 30, 64), (1, 20, 64)] and batches[0].dtype == np.float32


@pytest.mark.slow
def test_export_is_reproducible_and_independent_of_the_build_folder(exported, tiny_run, tmp_path):
    from edgewise.bundle import sha256_file
    from edgewise.export.merge import merge_for_export
    from edgewise.export.onnx_export import export_fp32

    model, info = load_run_model(tiny_run)
    merged, _ = merge_for_export(model, info.features.n_mels)
    again = export_fp32(merged, tmp_path / "elsewhere" / "again.onnx", info.features.n_mels)
    _, arts = _artifacts(exported[0])
    assert sha256_file(again) == arts["fp32"].sha256
    assert b"Traceback" not in again.read_bytes() and str(tiny_run).encode() not in again.read_bytes()


def test_minify_keeps_the_interface_sorts_the_graph_and_runs_the_same(tmp_path):
    from onnx import TensorProto, helper

    from edgewise.export.onnx_export import minify

    x = helper.make_tensor_value_info("features", TensorProto.FLOAT, [1, 3])
    y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 3])
    late = helper.make_node("Relu", ["a_very_descriptive_intermediate_name"], ["logits"], name="relu_node")
    early = helper.make_node("Neg", ["features"], ["a_very_descriptive_intermediate_name"], name="neg_node")
    graph = helper.make_graph(
        [late, early], "g", [x], [y]
    )  # out of order, as onnxruntime's fp16 pass leaves it
    graph.value_info.append(
        helper.make_tensor_value_info("a_very_descriptive_intermediate_name", TensorProto.FLOAT, [1, 3])
    )
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(path))
    before = path.stat().st_size
    minify(path)
    m = onnx.load(str(path))
    assert [n.op_type for n in m.graph.node] == ["Neg", "Relu"] and not m.graph.value_info
    assert m.graph.input[0].name == "features" and m.graph.output[0].name == "logits"
    assert path.stat().st_size < before
    out = OnnxBackend(path)(np.array([[-1.0, 0.5, 2.0]], dtype=np.float32))
    np.testing.assert_array_equal(out, [[1.0, 0.0, 0.0]])
