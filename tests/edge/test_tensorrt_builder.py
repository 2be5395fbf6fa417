"""TensorRT engine building and caching.

This machine has no NVIDIA GPU or TensorRT, so the builder is exercised against a stand-in
``tensorrt`` module that records the calls (a mock at the GPU boundary, which cannot exist here).
What it checks: the precision flags, the optimization profile, the parser error path and the
cache key. What it cannot check: that a real TensorRT accepts the graph and that the engine's
outputs match; that needs a GPU machine (``edgewise export --format tensorrt`` does a trial build
there, and the device checks its engine after building it).
"""

from __future__ import annotations

import types

import pytest

from edgewise.edge.tensorrt import (
    BuildSpec,
    EngineCache,
    build_engine,
    cache_key,
    import_tensorrt,
    tensorrt_available,
)
from edgewise.errors import ConfigError, MissingDependencyError


def _spec(precision="fp16", **kw):
    args = dict(
        precision=precision, input_name="features", n_mels=64, min_frames=50, opt_frames=300, max_frames=3000
    )
    return BuildSpec(**{**args, **kw})


class FakeTensorRT:
    """Records what the builder asks of TensorRT (a stand-in: no GPU here)."""

    __version__ = "10.9.0"

    def __init__(self, parse_ok=True):
        self.calls = []
        self.parse_ok = parse_ok
        fake = self

        class Logger:
            WARNING = 2

            def __init__(self, level):
                pass

        class Profile:
            def set_shape(self, name, lo, opt, hi):
                fake.calls.append(("profile", name, lo, opt, hi))

        class Config:
            def set_memory_pool_limit(self, pool, size):
                fake.calls.append(("workspace", size))

            def set_flag(self, flag):
                fake.calls.append(("flag", flag))

            def add_optimization_profile(self, profile):
                fake.calls.append(("add_profile",))

        class Builder:
            def __init__(self, logger):
                pass

            def create_network(self, flags):
                return object()

            def create_builder_config(self):
                return Config()

            def create_optimization_profile(self):
                return Profile()

            def build_serialized_network(self, network, config):
                fake.calls.append(("build",))
                return b"PLAN"

        class OnnxParser:
            num_errors = 1

            def __init__(self, network, logger):
                pass

            def parse_from_file(self, path):
                fake.calls.append(("parse", path))
                return fake.parse_ok

            def get_error(self, i):
                return "Unsupported op Foo"

        self.Logger, self.Builder, self.OnnxParser = Logger, Builder, OnnxParser
        self.BuilderFlag = types.SimpleNamespace(FP16="FP16", INT8="INT8")
        self.MemoryPoolType = types.SimpleNamespace(WORKSPACE="WORKSPACE")


def test_this_machine_refuses_clearly_without_tensorrt():
    if tensorrt_available():
        pytest.skip("TensorRT is installed here")
    with pytest.raises(MissingDependencyError, match="TensorRT is not installed: it needs an NVIDIA GPU"):
        import_tensorrt()


@pytest.mark.parametrize(
    ("precision", "flags"), [("fp32", []), ("fp16", ["FP16"]), ("int8", ["INT8", "FP16"])]
)
def test_precision_flags_and_the_time_profile(tmp_path, precision, flags):
    trt = FakeTensorRT()
    assert build_engine(tmp_path / "m.onnx", _spec(precision), trt) == b"PLAN"
    assert [c[1] for c in trt.calls if c[0] == "flag"] == flags
    assert ("profile", "features", (1, 50, 64), (1, 300, 64), (1, 3000, 64)) in trt.calls
    assert ("workspace", 512 << 20) in trt.calls and trt.calls[-1] == ("build",)


def test_a_graph_the_parser_refuses_names_the_file_and_the_reason(tmp_path):
    with pytest.raises(
        ConfigError, match=r"m\.onnx: TensorRT's ONNX parser refused the graph: Unsupported op Foo"
    ):
        build_engine(tmp_path / "m.onnx", _spec(), FakeTensorRT(parse_ok=False))


def test_engines_are_cached_by_tensorrt_version_gpu_model_and_spec(tmp_path):
    onnx = tmp_path / "m.onnx"
    onnx.write_bytes(b"graph")
    trt = FakeTensorRT()
    cache = EngineCache(tmp_path / "engines")
    first = cache.get_or_build(onnx, _spec(), trt, gpu="Orin sm_87")
    assert first.read_bytes() == b"PLAN" and first.with_suffix(".json").is_file()
    assert cache.get_or_build(onnx, _spec(), trt, gpu="Orin sm_87") == first
    assert sum(c == ("build",) for c in trt.calls) == 1  # the second call loaded the cached engine
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
