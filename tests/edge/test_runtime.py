"""The edge runtime picks the artifact the device profile prefers and falls back with a reason."""

from __future__ import annotations

import importlib.util
import json
import shutil

import numpy as np
import pytest

from edgewise.audio import load_audio
from edgewise.bundle import IntegrityError, load_bundle
from edgewise.devices import DeviceProfile, list_profiles, load_profile
from edgewise.edge.pipelines import pipeline_for_task
from edgewise.edge.pipelines.ser import SERPipeline
from edgewise.edge.runtime import ModelRuntime, NoRunnableArtifact
from edgewise.errors import AudioError, ConfigError


def test_every_shipped_profile_loads_and_names_its_file():
    assert {"jetson-orin-nano", "jetson-xavier-nx", "jetson-nano", "rpi5", "rpi4", "x86-local"} <= set(
        list_profiles()
    )
    for name in list_profiles():
        profile = load_profile(name)
        assert profile.name == name and profile.runtimes
    assert load_profile("jetson").name == "jetson-orin-nano"


def test_a_bad_profile_names_the_field(tmp_path):
    bad = tmp_path / "mine.yaml"
    bad.write_text(
        "name: mine\ndescription: x\narch: sparc\nruntimes: []\nthreads: 2\nmemory_budget_mb: 64\ninstall_root: /x\n"
    )
    with pytest.raises(ConfigError) as err:
        load_profile(bad)
    assert "field 'arch'" in str(err.value) and "field 'runtimes'" in str(err.value)
    with pytest.raises(ConfigError, match="unknown device 'toaster'; known devices: jetson-nano"):
        load_profile("toaster")


@pytest.mark.slow
def test_x86_runs_onnx_int8_and_rpi_runs_tflite_int8(ser_bundle):
    x86 = ModelRuntime.open(ser_bundle, load_profile("x86-local"))
    assert x86.artifact.path == "models/ser.int8-dynamic.onnx" and x86.skipped == []
    rpi = ModelRuntime.open(ser_bundle, load_profile("rpi5"))
    assert rpi.artifact.path == "models/ser.int8-dynamic.tflite"
    assert rpi.backend.describe().startswith("ai-edge-litert")


@pytest.mark.slow
def test_jetson_without_tensorrt_or_gpu_falls_back_and_says_why(ser_bundle):
    """No GPU here: the TensorRT and CUDA preferences are passed over with their reasons."""
    rt = ModelRuntime.open(ser_bundle, load_profile("jetson-orin-nano"))
    assert rt.artifact.path == "models/ser.fp32.onnx"
    assert rt.backend.providers == ["CPUExecutionProvider"]
    assert any("tensorrt-onnx fp16: not in the bundle" in s for s in rt.skipped)


@pytest.mark.slow
def test_a_missing_interpreter_falls_back_and_nothing_runnable_lists_every_reason(ser_bundle, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name in ("ai_edge_litert", "tflite_runtime") else real(name, *a),
    )
    rt = ModelRuntime.open(ser_bundle, load_profile("rpi5"))
    assert rt.artifact.path == "models/ser.int8-dynamic.onnx"
    assert "no TFLite interpreter" in rt.skipped[0]
    tflite_only = DeviceProfile(
        name="tflite-only",
        description="t",
        arch="aarch64",
        runtimes=[{"format": "tflite", "precision": "fp32"}, {"format": "onnx", "precision": "fp16"}],
        threads=1,
        memory_budget_mb=64,
        install_root="/x",
    )
    with pytest.raises(NoRunnableArtifact) as err:
        ModelRuntime.open(ser_bundle, tflite_only)
    msg = str(err.value)
    assert "nothing in this bundle runs on tflite-only" in msg
    assert "no TFLite interpreter" in msg and "onnx fp16: not in the bundle" in msg


@pytest.mark.slow
def test_an_artifact_that_failed_its_gate_is_never_run(ser_bundle, tmp_path):
    copy = shutil.copytree(ser_bundle, tmp_path / "b")
    manifest = json.loads((copy / "manifest.json").read_text())
    for art in manifest["models"]["classifier"]["artifacts"]:
        if art["path"] == "models/ser.int8-dynamic.onnx":
            art["parity"]["passed"] = False
    (copy / "manifest.json").write_text(json.dumps(manifest, indent=2))
    rt = ModelRuntime.open(copy, load_profile("x86-local"))
    assert rt.artifact.path == "models/ser.fp32.onnx"
    assert "failed its parity gate" in rt.skipped[0]


@pytest.mark.slow
def test_a_tampered_artifact_is_refused_before_anything_runs(ser_bundle, tmp_path):
    copy = shutil.copytree(ser_bundle, tmp_path / "b")
    target = copy / "models" / "ser.int8-dynamic.onnx"
    target.write_bytes(target.read_bytes()[:-1] + b"\x00")
    with pytest.raises(IntegrityError, match="sha256 mismatch"):
        ModelRuntime.open(copy, load_profile("x86-local"))


@pytest.mark.slow
def test_ser_pipeline_labels_real_audio_the_same_in_onnx_and_tflite(ser_bundle, edge_corpus):
    assert pipeline_for_task("ser") is SERPipeline
    onnx = SERPipeline.from_bundle(ser_bundle, load_profile("x86-local"))
    tflite = SERPipeline.from_bundle(ser_bundle, load_profile("rpi5"))
    wavs = sorted((edge_corpus / "wavs").glob("test*.wav"))
    agree = 0
    for wav in wavs:
        audio = load_audio(wav)
        a, b = onnx.classify(audio), tflite.classify(audio)
        assert a.label in onnx.labels and abs(sum(a.probabilities.values()) - 1) < 1e-5
        assert a.model_ms > 0 and a.audio_seconds == pytest.approx(audio.size / 16000, abs=1e-3)
        agree += a.label == b.label
    assert agree >= 0.8 * len(wavs)
    info = onnx.describe()
    assert info["bundle"] == "ser-tiny" and info["artifact"] == "models/ser.int8-dynamic.onnx"
    with pytest.raises(AudioError, match="too short"):
        onnx.classify(np.zeros(10, dtype=np.float32))
    with pytest.raises(AudioError, match="expected audio at 16000 Hz, got 8000 Hz"):
        onnx.classify(np.zeros(16000, dtype=np.float32), sample_rate=8000)


def test_unknown_tasks_are_refused():
    with pytest.raises(ConfigError, match="no edge pipeline for bundle task 'tts'"):
        pipeline_for_task("tts")


def test_the_bundle_loads_without_verification_flags(ser_bundle):
    with load_bundle(ser_bundle) as b:
        assert {a.format for a in b.artifacts("classifier")} == {"onnx", "tflite"}
        assert [a.path for a in b.artifacts("vad")] == ["models/vad.silero.onnx"]


@pytest.mark.slow
def test_the_bundle_ships_the_silero_vad_the_device_segments_with(ser_bundle):
    from edgewise.edge.audio import SileroVAD, find_silero_vad_onnx

    if find_silero_vad_onnx() is None:
        pytest.skip("silero-vad is not installed here")
    with load_bundle(ser_bundle) as b:
        (art,) = b.artifacts("vad")
        assert art.path == "models/vad.silero.onnx" and "MIT" in b.model("vad").extra["source"]
        vad = SileroVAD(b.artifact_path(art))
        t = np.arange(16000) / 16000
        tone = (0.3 * np.sin(2 * np.pi * 150 * t) * (1 + 0.5 * np.sin(2 * np.pi * 4 * t))).astype(np.float32)
        assert vad.probabilities(np.zeros(16000, dtype=np.float32)).max() < 0.5
        assert len(vad.probabilities(tone)) == 16000 // 512
