"""TensorRT engines, built on the device from the bundle's ONNX and cached.

A serialized TensorRT engine only runs on the GPU model and TensorRT version it was built with, so
bundles never carry one: they carry the ONNX graph and a build spec (``extra.tensorrt`` of a
``tensorrt-onnx`` artifact), and the device builds the engine on first use::

    spec = BuildSpec.from_manifest(artifact.extra["tensorrt"])
    plan = EngineCache(root / "engines").get_or_build(onnx_path, spec)   # minutes once, then cached
    backend = TensorRTBackend(plan)

The cache key is (TensorRT version, GPU name and compute capability, sha256 of the ONNX, build
spec), so a driver or JetPack upgrade, another GPU or another model rebuilds instead of loading an
engine that would fail or, worse, run wrongly.

* fp16: the builder's FP16 flag on the fp32 graph.
* int8: the graph is the QDQ (explicitly quantized) ONNX of ``edgewise export --quant static``; the
  builder reads the scales from its Q/DQ nodes, so no calibrator or calibration cache is needed.
* One optimization profile for the time axis (min/opt/max frames), batch 1 to ``max_batch``.

``tensorrt`` (and ``cuda-python`` for :class:`TensorRTBackend`) come from JetPack on Jetson and
from NVIDIA's index on x86; neither is on PyPI for these devices, so both are imported lazily and
their absence is a :class:`~edgewise.errors.MissingDependencyError` that says what to install.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgewise.bundle import sha256_file
from edgewise.errors import ConfigError, MissingDependencyError
from edgewise.fsutil import atomic_path

log = logging.getLogger(__name__)

NOT_INSTALLED = (
    "TensorRT is not installed: it needs an NVIDIA GPU and driver (on Jetson it comes with JetPack; "
    "link the system tensorrt into the venv with --system-site-packages)"
)
PRECISIONS = ("fp32", "fp16", "int8")


@dataclass(frozen=True)
class BuildSpec:
    """How to build an engine: precision, input name and the time-axis optimization profile."""

    precision: str
    input_name: str
    n_mels: int
    min_frames: int
    opt_frames: int
    max_frames: int
    max_batch: int = 1
    workspace_mib: int = 512

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ConfigError(f"tensorrt build: precision {self.precision!r}, expected one of {PRECISIONS}")
        if not 1 <= self.min_frames <= self.opt_frames <= self.max_frames:
            raise ConfigError(
                "tensorrt build: expected 1 <= min_frames <= opt_frames <= max_frames, got "
                f"{self.min_frames}, {self.opt_frames}, {self.max_frames}"
            )
        if self.max_batch < 1 or self.workspace_mib < 1:
            raise ConfigError("tensorrt build: max_batch and workspace_mib must be at least 1")

    @classmethod
    def from_manifest(cls, data: dict[str, Any]) -> BuildSpec:
        try:
            return cls(**data)
        except TypeError as exc:
            raise ConfigError(f"tensorrt build spec in the manifest: {exc}") from None

    def to_manifest(self) -> dict[str, Any]:
        return asdict(self)

    def profile(self) -> tuple[tuple[int, int, int], tuple[int, int, int], tuple[int, int, int]]:
        """(min, opt, max) input shapes for the builder's optimization profile."""
        return (
            (1, self.min_frames, self.n_mels),
            (1, self.opt_frames, self.n_mels),
            (self.max_batch, self.max_frames, self.n_mels),
        )


def import_tensorrt() -> Any:
    try:
        import tensorrt
    except ImportError:
        raise MissingDependencyError(NOT_INSTALLED) from None
    return tensorrt


def gpu_identity() -> str:
    """``NAME sm_XY`` of GPU 0, from cuda-python; refuses clearly without a GPU."""
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        raise MissingDependencyError("cuda-python is not installed: pip install cuda-python") from None
    err, props = cudart.cudaGetDeviceProperties(0)
    if int(err) != 0:
        raise MissingDependencyError(f"no usable CUDA GPU (cudaGetDeviceProperties: error {int(err)})")
    name = (
        props.name.decode(errors="replace").rstrip("\x00")
        if isinstance(props.name, bytes)
        else str(props.name)
    )
    return f"{name} sm_{props.major}{props.minor}"


def cache_key(trt_version: str, gpu: str, onnx_sha256: str, spec: BuildSpec) -> str:
    """Engines are valid for one TensorRT version, one GPU, one graph and one build spec."""
    blob = json.dumps(
        {"tensorrt": trt_version, "gpu": gpu, "onnx": onnx_sha256, "spec": spec.to_manifest()}, sort_keys=True
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def build_engine(onnx_path: str | Path, spec: BuildSpec, trt: Any | None = None) -> bytes:
    """Parse the ONNX and build a serialized engine with the spec's precision and profile."""
    trt = trt or import_tensorrt()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # explicit batch is the only mode in TensorRT 10
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ConfigError(f"{onnx_path}: TensorRT's ONNX parser refused the graph: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, spec.workspace_mib << 20)
    if spec.precision == "fp16":
        config.set_flag(trt.BuilderFlag.FP16)
    elif spec.precision == "int8":  # explicit quantization: scales come from the graph's Q/DQ nodes
        config.set_flag(trt.BuilderFlag.INT8)
        config.set_flag(trt.BuilderFlag.FP16)  # let the float parts (the head) run in fp16
    profile = builder.create_optimization_profile()
    profile.set_shape(spec.input_name, *spec.profile())
    config.add_optimization_profile(profile)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise ConfigError(
            f"{onnx_path}: TensorRT failed to build an engine ({spec.precision}); see its log above"
        )
    return bytes(plan)


class EngineCache:
    """``ROOT/<key>.plan`` with a ``<key>.json`` beside it saying what the engine was built from."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def get_or_build(
        self, onnx_path: str | Path, spec: BuildSpec, trt: Any | None = None, gpu: str | None = None
    ) -> Path:
        trt = trt or import_tensorrt()
        gpu = gpu or gpu_identity()
        onnx_sha = sha256_file(onnx_path)
        key = cache_key(trt.__version__, gpu, onnx_sha, spec)
        plan = self.root / f"{key}.plan"
        if plan.is_file():
            log.info("tensorrt: cached engine %s (%s, TensorRT %s)", plan.name, gpu, trt.__version__)
            return plan
        log.info(
            "tensorrt: building a %s engine for %s (TensorRT %s); this takes a while once",
            spec.precision,
            gpu,
            trt.__version__,
        )
        data = build_engine(onnx_path, spec, trt)
        self.root.mkdir(parents=True, exist_ok=True)
        with atomic_path(plan) as tmp:
            Path(tmp).write_bytes(data)
        info = {"tensorrt": trt.__version__, "gpu": gpu, "onnx_sha256": onnx_sha, "spec": spec.to_manifest()}
        with atomic_path(self.root / f"{key}.json") as tmp:
            Path(tmp).write_text(json.dumps(info, indent=2) + "\n")
        return plan


class TensorRTBackend:
    """Runs a serialized engine with cuda-python buffers: (1, time, n_mels) -> (1, classes)."""

    runtime = "tensorrt"

    def __init__(self, plan_path: str | Path, spec: BuildSpec) -> None:
        trt = import_tensorrt()
        try:
            from cuda.bindings import runtime as cudart
        except ImportError:
            raise MissingDependencyError("cuda-python is not installed: pip install cuda-python") from None
        self._cudart = cudart
        self.spec = spec
        runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.engine = runtime.deserialize_cuda_engine(Path(plan_path).read_bytes())
        if self.engine is None:
            raise ConfigError(
                f"{plan_path}: TensorRT could not load this engine (built for another GPU or version?)"
            )
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.input_name = spec.input_name
        self.output_name = next(n for n in names if n != spec.input_name)

    def _check(self, result: Any) -> Any:
        err, *rest = result if isinstance(result, tuple) else (result,)
        if int(err) != 0:
            raise RuntimeError(f"CUDA error {int(err)}")
        return rest[0] if len(rest) == 1 else rest

    def __call__(self, features: np.ndarray) -> np.ndarray:
        cudart = self._cudart
        x = np.ascontiguousarray(features, dtype=np.float32)
        self.context.set_input_shape(self.input_name, x.shape)
        out_shape = tuple(self.context.get_tensor_shape(self.output_name))
        y = np.empty(out_shape, dtype=np.float32)
        d_in = self._check(cudart.cudaMalloc(x.nbytes))
        d_out = self._check(cudart.cudaMalloc(y.nbytes))
        try:
            kind_h2d = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
            kind_d2h = cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
            self._check(cudart.cudaMemcpy(d_in, x.ctypes.data, x.nbytes, kind_h2d))
            self.context.set_tensor_address(self.input_name, int(d_in))
            self.context.set_tensor_address(self.output_name, int(d_out))
            if not self.context.execute_async_v3(0):
                raise RuntimeError("TensorRT execution failed")
            self._check(cudart.cudaMemcpy(y.ctypes.data, d_out, y.nbytes, kind_d2h))
        finally:
            cudart.cudaFree(d_in)
            cudart.cudaFree(d_out)
        return y

    def describe(self) -> str:
        return f"tensorrt {self.spec.precision}"


def tensorrt_available() -> bool:
    """True when ``import tensorrt`` would work (it never does on machines without NVIDIA drivers)."""
    import importlib.util

    return importlib.util.find_spec("tensorrt") is not None
