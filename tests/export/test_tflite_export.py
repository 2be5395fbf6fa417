"""TFLite artifacts: converted with litert-torch, run in ai-edge-litert, gated against PyTorch windows."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edgewise.bundle import load_bundle
from edgewise.cloud.train.run import load_run_model
from edgewise.devices import load_profile
from edgewise.edge.backends import LiteRTBackend, tflite_runtime_refusal
from edgewise.edge.pipelines.ser import SERPipeline
from edgewise.edge.windows import WindowSpec, run_windowed
from edgewise.features import num_frames
from tests import prebuild
from tests.conftest import require_module

require_module("litert_torch")
require_module("ai_edge_litert")

STEMS = ["fp32", "fp16", "int8-dynamic", "int8-static"]


@pytest.fixture(scope="module")
def tflite_bundle(pytestconfig, tiny_run, tmp_path_factory):
    """Every TFLite precision with a 1.5 s window (built by tests/prebuild.py, in the background
    while the suite runs)."""
    done = prebuild.prebuilt(pytestconfig, "tflite-bundle")
    if done is not None:
        folder = done / "ser-tiny-1.0.0"
    else:
        folder = prebuild.build_tflite_bundle(tiny_run, tmp_path_factory.mktemp("tflite-bundle"))
    bundle = load_bundle(folder)
    yield bundle
    bundle.close()


@pytest.mark.slow
def test_every_tflite_precision_passes_the_gate_with_its_window_recorded(tflite_bundle):
    arts = {
        a.path.removeprefix("models/ser.").removesuffix(".tflite"): a
        for a in tflite_bundle.artifacts("classifier")
    }
    assert sorted(arts) == sorted(STEMS)
    for stem, art in arts.items():
        assert art.format == "tflite" and art.runtime == "litert"
        assert art.fixed_shape == {"features": [1, 151, 64]}, stem  # 1.5 s of audio: 1 + 24000 // 160
        assert art.extra["window"]["frames"] == 151 and art.extra["window"]["hop"] == 75
        p = art.parity
        assert p["passed"] is True, (stem, p)
        assert p["reference"] == "PyTorch on the same 151-frame windows"
        assert p["checked_with"].startswith("ai-edge-litert")
        assert p["reference_ua"] - p["ua"] <= p["max_metric_drop"] + 1e-12
    sizes = {stem: arts[stem].size_bytes for stem in STEMS}
    assert sizes["int8-dynamic"] < sizes["fp16"] < sizes["fp32"]
    assert arts["int8-static"].extra["calibration"]["windows"] > 0


@pytest.mark.slow
def test_the_fp32_tflite_model_equals_pytorch_on_short_and_long_audio(tflite_bundle, tiny_run):
    model, _ = load_run_model(tiny_run)
    model.eval()
    art = next(a for a in tflite_bundle.artifacts("classifier") if a.path.endswith("ser.fp32.tflite"))
    window = WindowSpec.from_dict(art.extra["window"])
    backend = LiteRTBackend(tflite_bundle.artifact_path(art), threads=1, window=window)
    rng = np.random.default_rng(3)
    with torch.no_grad():
        for frames in (40, 151, 152, 407):  # tiled, exact, one frame over, chunked
            x = rng.standard_normal((1, frames, 64)).astype(np.float32)
            expected = run_windowed(lambda w: model(torch.from_numpy(w)).numpy(), x, window)
            np.testing.assert_allclose(backend(x), expected, atol=1e-4)


def test_a_window_that_disagrees_with_the_model_is_refused(tflite_bundle):
    art = next(a for a in tflite_bundle.artifacts("classifier") if a.path.endswith("ser.fp32.tflite"))
    with pytest.raises(Exception, match="window is 300 frames, the model's input 151"):
        LiteRTBackend(tflite_bundle.artifact_path(art), window=WindowSpec(300, 150))


def test_int8_input_and_output_tensors_are_quantized_and_dequantized(tflite_bundle, tmp_path):
    """A fully int8 model (int8 input and output) runs through the same backend within int8 error."""
    from ai_edge_quantizer import quantizer, recipe

    fp32 = next(a for a in tflite_bundle.artifacts("classifier") if a.path.endswith("ser.fp32.tflite"))
    src = tflite_bundle.artifact_path(fp32)
    qt = quantizer.Quantizer(str(src))
    qt.load_quantization_recipe(recipe.static_wi8_ai8())
    rng = np.random.default_rng(0)
    reference = LiteRTBackend(src)
    name = next(iter(reference.interpreter.get_signature_runner("serving_default").get_input_details()))
    calib = [{name: rng.standard_normal((1, 151, 64)).astype(np.float32)} for _ in range(8)]
    out = tmp_path / "full-int8.tflite"
    qt.quantize(qt.calibrate({"serving_default": calib})).export_model(str(out), overwrite=True)
    backend = LiteRTBackend(out, precision="int8", quant="static")
    assert backend._input["dtype"] == np.int8  # the path under test
    x = rng.standard_normal((2, 151, 64)).astype(np.float32)
    got, want = backend(x), reference(x)
    assert got.dtype == np.float32 and got.shape == want.shape
    assert np.abs(got - want).max() < 0.5 * np.abs(want).max() + 0.1


def _windows_for_clips(bundle, seconds: float) -> list[int]:
    """Windows the device runs for a clip of exactly ``seconds`` and for one hop of audio more."""
    pipeline = SERPipeline.from_bundle(bundle, load_profile("rpi5"))
    backend, cfg = pipeline.runtime.backend, pipeline.features
    assert pipeline.runtime.artifact.format == "tflite"
    samples = round(seconds * cfg.sample_rate)
    assert backend.window.frames == num_frames(samples, cfg) == 1 + samples // cfg.hop_length
    assert pipeline.runtime.artifact.extra["window"]["frames"] == backend.window.frames
    t = np.arange(samples + cfg.hop_length) / cfg.sample_rate
    audio = (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    counts = []
    for clip in (audio[:samples], audio):
        before = backend.windows_run
        pipeline.classify(clip)
        counts.append(backend.windows_run - before)
    return counts


@pytest.mark.slow
def test_a_one_second_window_runs_a_one_second_clip_in_one_window(ser_bundle):
    """ser_bundle is exported with --window-seconds 1.0: 16000 samples are 101 frames, one window."""
    assert _windows_for_clips(ser_bundle, 1.0) == [1, 2]


def test_a_clip_of_the_window_seconds_is_one_window(tflite_bundle):
    """This module's bundle is exported with --window-seconds 1.5 (151 frames)."""
    assert _windows_for_clips(tflite_bundle, 1.5) == [1, 2]


def test_tflite_runtime_is_refused_where_it_gives_wrong_answers():
    if int(np.__version__.split(".")[0]) >= 2:
        assert "needs numpy < 2" in tflite_runtime_refusal("fp32", None)
    else:
        assert tflite_runtime_refusal("fp32", None) is None
        assert "dynamic-range int8" in tflite_runtime_refusal("int8", "dynamic")


def test_a_corrupt_tflite_file_is_named(tmp_path):
    from edgewise.edge.backends import BackendError

    bad = tmp_path / "broken.tflite"
    bad.write_bytes(b"TFL3 but not really" * 20)
    with pytest.raises(BackendError, match=r"broken\.tflite: not a loadable TFLite model"):
        LiteRTBackend(bad)
    with pytest.raises(BackendError, match=r"missing\.tflite: TFLite file not found"):
        LiteRTBackend(tmp_path / "missing.tflite")


def test_static_tflite_calibration_refuses_an_empty_set():
    from edgewise.export.errors import ExportError
    from edgewise.export.tflite_export import calibration_windows

    with pytest.raises(ExportError, match="calibration set is empty"):
        calibration_windows([], 150, 75)
    windows = calibration_windows([np.zeros((40, 64), np.float32), np.zeros((400, 64), np.float32)], 150, 75)
    assert len(windows) == 1 + 5 and all(w.shape == (150, 64) for w in windows)
