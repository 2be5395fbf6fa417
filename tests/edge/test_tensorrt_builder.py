"""TensorRT engine building, running, checking and caching.

This machine has no NVIDIA GPU or TensorRT, so every test here runs against the stand-in
``tensorrt`` and ``cuda.bindings.runtime`` modules of :mod:`tests.edge.fake_tensorrt` (a mock at
the GPU boundary, which cannot exist here): the fake engine is a small real ONNX graph run in
onnxruntime. What they check: the precision flags and profile, every refusal being a TensorRTError
(the runtime's fallback catches it), padding and chunking to the profile, the checked
``set_input_shape``, device buffers allocated once, the reference check deleting a bad engine, and
the cache key. What they cannot check: that a real TensorRT accepts the graph, and real CUDA calls.
"""

from __future__ import annotations

import numpy as np
import pytest

from edgewise.edge.backends import BackendError
from edgewise.edge.reference import ReferenceSetError
from edgewise.edge.tensorrt import (
    BuildSpec,
    EngineCache,
    EngineParityError,
    EngineReference,
    TensorRTBackend,
    TensorRTError,
    build_engine,
    cache_key,
    import_tensorrt,
    open_engine,
    read_reference,
    tensorrt_available,
    write_reference,
)
from edgewise.edge.windows import FrameRange, run_windowed
from edgewise.errors import ConfigError, MissingDependencyError
from tests.conftest import require_module
from tests.edge.fake_tensorrt import FakeTensorRT

MELS = 4


def _spec(precision="fp16", **kw):
    args = dict(
        precision=precision, input_name="features", n_mels=64, min_frames=50, opt_frames=300, max_frames=3000
    )
    return BuildSpec(**{**args, **kw})


def _small_spec(**kw):
    return _spec(**{"n_mels": MELS, "min_frames": 6, "opt_frames": 10, "max_frames": 20, **kw})


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory):
    """A real ONNX graph: mean over time, then a (4 x 3) matrix: (batch, time, 4) -> (batch, 3)."""
    onnx = require_module("onnx")
    from onnx import TensorProto, helper, numpy_helper

    weights = np.arange(12, dtype=np.float32).reshape(MELS, 3) / 10 - 0.5
    graph = helper.make_graph(
        [
            helper.make_node("ReduceMean", ["features"], ["pooled"], axes=[1], keepdims=0),
            helper.make_node("MatMul", ["pooled", "w"], ["logits"]),
        ],
        "tiny",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", "time", MELS])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 3])],
        [numpy_helper.from_array(weights, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path_factory.mktemp("tiny-onnx") / "tiny.onnx"
    onnx.save(model, path)
    return path


def _ort(path):
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return lambda x: session.run(None, {"features": x})[0]


def _backend(tmp_path, onnx_path, trt, spec=None):
    spec = spec or _small_spec()
    plan = EngineCache(tmp_path / "engines").get_or_build(onnx_path, spec, trt, gpu="Fake GPU sm_87")
    return TensorRTBackend(plan, spec, trt=trt, cudart=trt.cudart)


def test_this_machine_refuses_clearly_without_tensorrt():
    if tensorrt_available():
        pytest.skip("TensorRT is present on this machine")
    with pytest.raises(MissingDependencyError, match="TensorRT is not installed: it needs an NVIDIA GPU"):
        import_tensorrt()


@pytest.mark.parametrize(
    ("precision", "flags"), [("fp32", []), ("fp16", ["FP16"]), ("int8", ["INT8", "FP16"])]
)
def test_precision_flags_and_the_time_profile(tiny_onnx, precision, flags):
    """Fake TensorRT (no GPU here): the builder gets the precision's flags and the frame profile."""
    trt = FakeTensorRT()
    assert build_engine(tiny_onnx, _spec(precision), trt).startswith(b"FAKEPLAN")
    assert [c[1] for c in trt.calls if c[0] == "flag"] == flags
    assert ("profile", "features", (1, 50, 64), (1, 300, 64), (1, 3000, 64)) in trt.calls
    assert ("workspace", 512 << 20) in trt.calls and trt.calls[-1] == ("build",)


@pytest.mark.parametrize(
    ("stage", "message"),
    [
        (
            "parse",
            r"tiny\.onnx: TensorRT's ONNX parser refused the graph: In node 3 \(Foo\): Unsupported op Foo",
        ),
        ("build", r"tiny\.onnx: TensorRT failed to build an engine \(fp16, profile batch 1\.\.1, 50\.\.3000"),
        (
            "build-raise",
            r"tiny\.onnx: TensorRT failed while building the engine: RuntimeError: \[TRT\] Internal",
        ),
    ],
)
def test_a_refused_graph_is_a_backend_error_naming_the_file_and_the_reason(tiny_onnx, stage, message):
    """Fake TensorRT failing at one stage (no GPU here): a BackendError the runtime falls back on."""
    with pytest.raises(TensorRTError, match=message) as err:
        build_engine(tiny_onnx, _spec(), FakeTensorRT(fail=stage))
    assert isinstance(err.value, BackendError)


def test_short_utterances_are_tiled_to_the_minimum_and_long_ones_chunked_to_the_maximum(tmp_path, tiny_onnx):
    """Fake engine (the ONNX in onnxruntime; no GPU here): every shape it runs is inside the
    profile, and the logits are those of the pieces averaged, as the TFLite windows are."""
    trt = FakeTensorRT()
    backend = _backend(tmp_path, tiny_onnx, trt)
    ort = _ort(tiny_onnx)
    frames = FrameRange(6, 20, 10)
    rng = np.random.default_rng(0)
    for length, shapes in [(4, [(1, 6, MELS)]), (13, [(1, 13, MELS)]), (35, [(1, 20, MELS)] * 3)]:
        x = rng.standard_normal((1, length, MELS)).astype(np.float32)
        trt.shapes.clear()
        got = backend(x)
        assert trt.shapes == shapes, length
        np.testing.assert_allclose(got, run_windowed(ort, x, frames), atol=1e-6)
        if length != 13:  # tiled or chunked: not what the whole utterance gives
            assert np.abs(got - ort(x)).max() > 1e-4
        else:
            np.testing.assert_allclose(got, ort(x), atol=1e-6)
    batch = rng.standard_normal((2, 9, MELS)).astype(np.float32)
    np.testing.assert_allclose(backend(batch), ort(batch), atol=1e-6)
    with pytest.raises(BackendError, match=r"expected \(batch, time, 4\) features, got \(1, 9, 5\)"):
        backend(np.zeros((1, 9, 5), np.float32))


def test_a_shape_the_engine_refuses_names_the_shape_and_the_profile(tmp_path, tiny_onnx):
    """Fake TensorRT whose set_input_shape returns False (no GPU here): a clear error, not garbage."""
    backend = _backend(tmp_path, tiny_onnx, FakeTensorRT(fail="shape"))
    with pytest.raises(
        TensorRTError,
        match=r"refused input shape \(1, 8, 4\); the engine's profile takes batch 1\.\.1, 6\.\.20 frames",
    ):
        backend(np.zeros((1, 8, MELS), np.float32))


def test_device_memory_is_allocated_once_and_grown_only_for_a_larger_shape(tmp_path, tiny_onnx):
    """Fake cudart counting cudaMalloc (no GPU here)."""
    trt = FakeTensorRT()
    backend = _backend(tmp_path, tiny_onnx, trt)
    cuda = trt.cudart
    assert cuda.mallocs == [4 * 10 * MELS]  # the input at the profile's opt length
    for length in (4, 10, 7, 10, 3):
        backend(np.ones((1, length, MELS), np.float32))
    assert cuda.mallocs == [4 * 10 * MELS, 4 * 3]  # and the output, once
    for _ in range(3):
        backend(np.ones((1, 17, MELS), np.float32))
    assert cuda.mallocs == [4 * 10 * MELS, 4 * 3, 4 * 17 * MELS] and cuda.frees == 1
    backend(np.ones((1, 12, MELS), np.float32))
    assert len(cuda.mallocs) == 3
    backend.close()
    assert cuda.buffers == {}


@pytest.mark.parametrize("stage", ["deserialize", "context"])
def test_an_engine_that_does_not_load_is_refused_and_removed_from_the_cache(tmp_path, tiny_onnx, stage):
    """Fake TensorRT failing to load the engine (no GPU here)."""
    trt = FakeTensorRT(fail=stage)
    cache = EngineCache(tmp_path / "engines")
    with pytest.raises(TensorRTError, match="TensorRT could not"):
        open_engine(tiny_onnx, _small_spec(), cache, None, trt=trt, cudart=trt.cudart, gpu="Fake GPU sm_87")
    assert list((tmp_path / "engines").iterdir()) == []  # rebuilt next time, not loaded again


def _reference(tmp_path, onnx_path, tolerance=1e-4):
    frames = FrameRange(6, 20, 10)
    rng = np.random.default_rng(1)
    inputs = [rng.standard_normal((1, n, MELS)).astype(np.float32) for n in (12, 3)]
    logits = np.concatenate([run_windowed(_ort(onnx_path), x, frames) for x in inputs])
    path = write_reference(tmp_path / "reference.npz", inputs, logits)
    read_inputs, read_logits = read_reference(path)
    assert [x.shape for x in read_inputs] == [(1, 12, MELS), (1, 3, MELS)]
    np.testing.assert_array_equal(read_logits, logits)
    return EngineReference(read_inputs, read_logits, tolerance, "reference.npz")


def test_a_new_engine_is_checked_against_the_bundle_reference_once(tmp_path, tiny_onnx):
    """Fake engine computing the true graph (no GPU here): it passes, the pass is recorded, and a
    cached engine that passed is not run on the reference again."""
    trt = FakeTensorRT()
    cache = EngineCache(tmp_path / "engines")
    reference = _reference(tmp_path, tiny_onnx)
    args = dict(trt=trt, cudart=trt.cudart, gpu="Fake GPU sm_87")
    backend = open_engine(tiny_onnx, _small_spec(), cache, reference, **args)
    (plan,) = (tmp_path / "engines").glob("*.plan")
    check = cache.info(plan)["check"]
    assert check["passed"] and check["inputs"] == 2 and check["max_abs_diff"] <= 1e-4
    assert trt.shapes == [(1, 12, MELS), (1, 6, MELS)]  # the short reference input was tiled
    backend.close()
    trt.shapes.clear()
    open_engine(tiny_onnx, _small_spec(), cache, reference, **args)
    assert trt.shapes == [] and sum(c == ("build",) for c in trt.calls) == 1


def test_an_engine_that_misses_the_reference_is_refused_and_deleted(tmp_path, tiny_onnx):
    """Fake engine whose outputs are off by 1.0 (a miscompiled engine; no GPU here)."""
    trt = FakeTensorRT(fail="wrong")
    cache = EngineCache(tmp_path / "engines")
    reference = _reference(tmp_path, tiny_onnx, tolerance=0.05)
    with pytest.raises(EngineParityError, match=r"differ from the bundle's reference .* by 1 > 0\.05") as err:
        open_engine(
            tiny_onnx, _small_spec(), cache, reference, trt=trt, cudart=trt.cudart, gpu="Fake GPU sm_87"
        )
    assert isinstance(err.value, BackendError)
    assert list((tmp_path / "engines").iterdir()) == []
    assert trt.cudart.buffers == {}  # the refused engine's device memory was freed


def test_a_broken_reference_file_is_refused(tmp_path):
    bad = tmp_path / "reference.npz"
    bad.write_bytes(b"PK\x03\x04 not a zip")
    with pytest.raises(ReferenceSetError, match=r"reference\.npz: not a reference set") as err:
        read_reference(bad)
    assert isinstance(err.value, BackendError)  # the runtime's fallback catches it


def test_engines_are_cached_by_tensorrt_version_gpu_model_and_spec(tmp_path, tiny_onnx):
    """Fake TensorRT (no GPU here): the second call loads the cached plan instead of building."""
    trt = FakeTensorRT()
    cache = EngineCache(tmp_path / "engines")
    first = cache.get_or_build(tiny_onnx, _spec(), trt, gpu="Orin sm_87")
    assert first.read_bytes().startswith(b"FAKEPLAN") and first.with_suffix(".json").is_file()
    assert cache.get_or_build(tiny_onnx, _spec(), trt, gpu="Orin sm_87") == first
    assert sum(c == ("build",) for c in trt.calls) == 1
    base = cache_key("10.9.0", "Orin sm_87", "a" * 64, _spec())
    assert (
        len(
            {
                base,
                cache_key("10.3.0", "Orin sm_87", "a" * 64, _spec()),
                cache_key("10.9.0", "Xavier sm_72", "a" * 64, _spec()),
                cache_key("10.9.0", "Orin sm_87", "b" * 64, _spec()),
                cache_key("10.9.0", "Orin sm_87", "a" * 64, _spec("int8")),
            }
        )
        == 5
    )


def test_bad_build_specs_name_the_problem():
    with pytest.raises(ConfigError, match="min_frames <= opt_frames <= max_frames"):
        _spec(opt_frames=10)
    with pytest.raises(ConfigError, match="precision 'int4'"):
        _spec("int4")
    with pytest.raises(ConfigError, match="tensorrt build spec in the manifest"):
        BuildSpec.from_manifest({"precision": "fp16", "colour": "red"})
    assert BuildSpec.from_manifest(_spec().to_manifest()) == _spec()
    assert _spec().frame_range == FrameRange(50, 3000, 1500)


def test_a_cached_engine_is_checked_again_for_a_tighter_tolerance_or_another_reference(tmp_path, tiny_onnx):
    """Fake engine off by 1.0 (a miscompiled engine; no GPU here). A bundle allowing 2.0 passes it
    and the pass is cached; a second bundle with the same graph but a tolerance of 0.05 must not
    reuse that pass: the engine is checked again, refused and deleted."""
    trt = FakeTensorRT(fail="wrong")
    cache = EngineCache(tmp_path / "engines")
    args = dict(trt=trt, cudart=trt.cudart, gpu="Fake GPU sm_87")
    loose = _reference(tmp_path, tiny_onnx, tolerance=2.0)
    open_engine(tiny_onnx, _small_spec(), cache, loose, **args).close()
    (plan,) = (tmp_path / "engines").glob("*.plan")
    check = cache.info(plan)["check"]
    assert check["tolerance"] == 2.0 and check["reference_sha256"] == loose.sha256
    trt.shapes.clear()
    open_engine(tiny_onnx, _small_spec(), cache, loose, **args).close()
    assert trt.shapes == []  # the same reference set and tolerance: not run again
    other = EngineReference(loose.inputs[:1], loose.logits[:1], 2.0, "other.npz")
    assert other.sha256 != loose.sha256
    open_engine(tiny_onnx, _small_spec(), cache, other, **args).close()
    assert trt.shapes == [(1, 12, MELS)]  # another reference set: run on it
    tight = EngineReference(loose.inputs, loose.logits, 0.05, "reference.npz")
    with pytest.raises(EngineParityError, match=r"by 1 > 0\.05"):
        open_engine(tiny_onnx, _small_spec(), cache, tight, **args)
    assert list((tmp_path / "engines").iterdir()) == []


def test_a_bundle_without_a_reference_set_runs_unchecked_and_says_so(tmp_path, tiny_onnx, caplog):
    """Fake TensorRT (no GPU here): older bundles carry no reference set; the engine still runs,
    and both the log and the backend's description say its device parity was not checked."""
    trt = FakeTensorRT()
    cache = EngineCache(tmp_path / "engines")
    with caplog.at_level("WARNING", logger="edgewise.edge.tensorrt"):
        backend = open_engine(
            tiny_onnx, _small_spec(), cache, None, trt=trt, cudart=trt.cudart, gpu="Fake GPU sm_87"
        )
    assert backend.describe() == "tensorrt fp16 (device parity: not checked (bundle has no reference set))"
    assert "device parity not checked (bundle has no reference set)" in caplog.text
    assert "tiny.onnx runs without having been compared" in caplog.text
    assert backend(np.ones((1, 8, MELS), np.float32)).shape == (1, 3)
    reference = _reference(tmp_path, tiny_onnx)
    assert (
        open_engine(
            tiny_onnx, _small_spec(), cache, reference, trt=trt, cudart=trt.cudart, gpu="Fake GPU sm_87"
        ).describe()
        == "tensorrt fp16"
    )
