"""The edge runtime picks the artifact the device profile prefers and falls back with a reason."""

from __future__ import annotations

import importlib.util
import json
import logging
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
from tests import prebuild
from tests.conftest import missing_tool
from tests.edge.fake_tensorrt import FakeTensorRT


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
def test_x86_runs_onnx_fp32_and_rpi_runs_tflite_int8(ser_bundle):
    """x86-local ranks fp32 ONNX first: it measured fastest there (edgewise/devices/x86-local.yaml)."""
    x86 = ModelRuntime.open(ser_bundle, load_profile("x86-local"))
    assert x86.artifact.path == "models/ser.fp32.onnx" and x86.skipped == []
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
        if art["path"] == "models/ser.fp32.onnx":
            art["parity"]["passed"] = False
    (copy / "manifest.json").write_text(json.dumps(manifest, indent=2))
    rt = ModelRuntime.open(copy, load_profile("x86-local"))
    assert rt.artifact.path == "models/ser.int8-dynamic.tflite"  # x86-local's next preference
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
    assert info["bundle"] == "ser-tiny" and info["artifact"] == "models/ser.fp32.onnx"
    with pytest.raises(AudioError, match="too short"):
        onnx.classify(np.zeros(10, dtype=np.float32))
    with pytest.raises(AudioError, match="expected audio at 16000 Hz, got 8000 Hz"):
        onnx.classify(np.zeros(16000, dtype=np.float32), sample_rate=8000)


@pytest.fixture(scope="module")
def trt_bundle(pytestconfig, tiny_run, tmp_path_factory):
    """ONNX fp32/fp16 and TensorRT fp32/fp16 (graph, build spec and reference set), no VAD (built by
    tests/prebuild.py, in the background while the suite runs)."""
    done = prebuild.prebuilt(pytestconfig, "trt-bundle")
    if done is not None:
        return done / "ser-tiny-1.0.0"
    return prebuild.build_trt_bundle(tiny_run, tmp_path_factory.mktemp("trt-bundle"))


JETSON_REASONS = {
    "parse": "TensorRT's ONNX parser refused the graph: In node 3 (Foo): Unsupported op Foo",
    "build": "TensorRT failed to build an engine (fp16, profile batch 1..1, 50..3000 frames",
    "build-raise": "TensorRT failed while building the engine: RuntimeError: [TRT] Internal Error",
    "deserialize": "TensorRT could not deserialize this engine",
    "context": "TensorRT could not create an execution context",
    "shape": "64); the engine's profile takes batch 1..1, 50..3000 frames (opt 301), 64 mels",
    "wrong": (
        "the engine's logits differ from the bundle's reference "
        "(models/ser.reference.frames-50-3000-1500.npz, 3 inputs)"
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize("stage", sorted(JETSON_REASONS))
def test_a_jetson_falls_back_to_onnx_when_tensorrt_refuses_the_graph_or_the_engine(
    trt_bundle, tmp_path, monkeypatch, caplog, stage
):
    """Fake ``tensorrt`` and ``cuda`` modules failing at one stage (no GPU or TensorRT here); the
    bundle, its ONNX fallback and onnxruntime are real."""
    FakeTensorRT(fail=stage).install(monkeypatch)
    engines = tmp_path / "engines"
    with caplog.at_level(logging.WARNING, logger="edgewise.edge.runtime"):
        rt = ModelRuntime.open(trt_bundle, load_profile("jetson-orin-nano"), engine_dir=engines)
    assert rt.artifact.path == "models/ser.fp32.onnx" and rt.backend.describe().startswith("onnxruntime")
    assert rt.skipped[0].startswith("tensorrt-onnx fp16 (models/ser.fp16.trt.onnx): ")
    assert JETSON_REASONS[stage] in rt.skipped[0]
    assert rt.skipped[1] == "tensorrt-onnx int8 (static): not in the bundle"
    assert "jetson-orin-nano: cannot run models/ser.fp16.trt.onnx, trying the next preference" in caplog.text
    assert not list(engines.glob("*.plan"))  # a refused engine is never left to load next time
    assert rt.backend(np.zeros((1, 80, 64), np.float32)).shape == (1, len(rt.bundle.manifest.labels))


@pytest.mark.slow
def test_a_jetson_runs_an_engine_that_reproduces_the_bundle_reference(trt_bundle, tmp_path, monkeypatch):
    """Fake ``tensorrt`` whose engine is the bundle's graph in onnxruntime (no GPU here): the
    engine is built, checked against the bundle's reference set, cached with the result, and gives
    the ONNX model's logits."""
    trt = FakeTensorRT()
    trt.install(monkeypatch)
    engines = tmp_path / "engines"
    rt = ModelRuntime.open(trt_bundle, load_profile("jetson-orin-nano"), engine_dir=engines)
    assert rt.artifact.path == "models/ser.fp16.trt.onnx" and rt.backend.describe() == "tensorrt fp16"
    assert rt.skipped == []
    (info,) = engines.glob("*.json")
    check = json.loads(info.read_text())["check"]
    assert check["passed"] and check["inputs"] == 3 and check["max_abs_diff"] <= check["tolerance"]
    assert (1, 50, 64) in trt.shapes  # the reference input shorter than the profile was tiled to 50
    onnx = ModelRuntime.open(trt_bundle, load_profile("x86-local")).backend
    x = np.random.default_rng(0).standard_normal((1, 137, 64)).astype(np.float32)
    np.testing.assert_allclose(rt.backend(x), onnx(x), atol=1e-4)


@pytest.mark.slow
def test_a_tampered_tensorrt_reference_set_is_not_trusted(trt_bundle, tmp_path, monkeypatch):
    """Fake ``tensorrt`` (no GPU here): the reference file is bound by the sha256 in the manifest."""
    FakeTensorRT().install(monkeypatch)
    copy = shutil.copytree(trt_bundle, tmp_path / "b")
    ref = copy / "models" / "ser.reference.frames-50-3000-1500.npz"
    data = bytearray(ref.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte in the stored arrays
    ref.write_bytes(bytes(data))
    rt = ModelRuntime.open(copy, load_profile("jetson-orin-nano"), engine_dir=tmp_path / "engines")
    assert rt.artifact.path == "models/ser.fp32.onnx"
    assert "ser.reference.frames-50-3000-1500.npz: sha256 mismatch" in rt.skipped[0]


def test_unknown_tasks_are_refused():
    with pytest.raises(ConfigError, match="no edge pipeline for bundle task 'asr'"):
        pipeline_for_task("asr")


def test_every_registered_task_has_a_pipeline_that_declares_its_input():
    from edgewise.tasks import TASKS

    for name, spec in TASKS.items():
        cls = pipeline_for_task(name)
        assert cls.task == name and cls.input_kind == spec.input_kind


def test_the_bundle_loads_without_verification_flags(ser_bundle):
    with load_bundle(ser_bundle) as b:
        assert {a.format for a in b.artifacts("classifier")} == {"onnx", "tflite"}
        assert [a.path for a in b.artifacts("vad")] == ["models/vad.silero.onnx"]


@pytest.mark.slow
def test_the_bundle_ships_the_silero_vad_the_device_segments_with(ser_bundle):
    from edgewise.edge.audio import SileroVAD, find_silero_vad_onnx

    if find_silero_vad_onnx() is None:
        missing_tool("silero-vad is not installed here")
    with load_bundle(ser_bundle) as b:
        (art,) = b.artifacts("vad")
        assert art.path == "models/vad.silero.onnx" and "MIT" in b.model("vad").extra["source"]
        vad = SileroVAD(b.artifact_path(art))
        t = np.arange(16000) / 16000
        tone = (0.3 * np.sin(2 * np.pi * 150 * t) * (1 + 0.5 * np.sin(2 * np.pi * 4 * t))).astype(np.float32)
        assert vad.probabilities(np.zeros(16000, dtype=np.float32)).max() < 0.5
        assert len(vad.probabilities(tone)) == 16000 // 512


def _concurrent_results(pipeline, clips, rounds):
    """Each clip's results from ``rounds`` calls, with one thread per clip calling at once."""
    import sys
    import threading

    results = {i: [] for i in range(len(clips))}
    errors = []
    start = threading.Barrier(len(clips))

    def work(i):
        try:
            start.wait()
            for _ in range(rounds):
                results[i].append(pipeline.process(clips[i])["probabilities"])
        except BaseException as exc:  # noqa: BLE001 - reported by the test thread
            errors.append(exc)

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)  # switch threads often, so unserialized calls interleave
    try:
        threads = [threading.Thread(target=work, args=(i,)) for i in range(len(clips))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
    finally:
        sys.setswitchinterval(interval)
    assert not errors, errors
    return results


def _clips(edge_corpus, n=2, seconds=2.5):
    """``n`` different test utterances, each repeated to ``seconds`` (several 1 s TFLite windows)."""
    wavs = sorted((edge_corpus / "wavs").glob("test*.wav"))[:n]
    clips = [load_audio(w) for w in wavs]
    return [np.resize(c, int(seconds * 16000)).astype(np.float32) for c in clips]


@pytest.mark.slow
@pytest.mark.parametrize("profile", ["rpi5", "x86-local"])
def test_two_threads_calling_a_pipeline_get_what_sequential_calls_get(ser_bundle, edge_corpus, profile):
    """The daemon's audio thread and its infer command share one pipeline: a TFLite interpreter
    (rpi5) keeps its input and output tensors between set_tensor and get_tensor, so calls must
    not interleave; every concurrent result equals the sequential one for the same clip."""
    pipeline = SERPipeline.from_bundle(ser_bundle, load_profile(profile))
    clips = _clips(edge_corpus)
    expected = [pipeline.process(c)["probabilities"] for c in clips]
    assert expected[0] != expected[1]  # a mix-up between the threads would show
    for i, got in _concurrent_results(pipeline, clips, rounds=40).items():
        assert got == [expected[i]] * 40, f"clip {i}: {sum(g != expected[i] for g in got)} of 40 differ"


@pytest.mark.slow
def test_the_tensorrt_engine_is_never_entered_by_two_threads_at_once(
    trt_bundle, edge_corpus, tmp_path, monkeypatch
):
    """Fake ``tensorrt`` (no GPU here) counting the threads inside an execution, each execution
    lasting 2 ms: one execution context and its device buffers are shared, so the pipeline runs
    the engine for one caller at a time, and each caller gets its own clip's answer."""
    trt = FakeTensorRT(dwell_s=0.002)
    trt.install(monkeypatch)
    pipeline = SERPipeline.from_bundle(
        trt_bundle, load_profile("jetson-orin-nano"), engine_dir=tmp_path / "engines"
    )
    assert pipeline.runtime.backend.runtime == "tensorrt"
    clips = _clips(edge_corpus)
    expected = [pipeline.process(c)["probabilities"] for c in clips]
    for i, got in _concurrent_results(pipeline, clips, rounds=15).items():
        assert got == [expected[i]] * 15
    assert trt.max_concurrent == 1
