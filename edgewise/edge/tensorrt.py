"""TensorRT engines, built on the device from the bundle's ONNX, checked against the bundle, cached.

A serialized TensorRT engine only runs on the GPU model and TensorRT version it was built with, so
bundles never carry one: they carry the ONNX graph, a build spec (``extra.tensorrt`` of a
``tensorrt-onnx`` artifact) and a small reference set (``extra.reference``: inputs and the PyTorch
logits, a ``.npz`` file in the bundle bound by its sha256). The device builds the engine on first use::

    backend = open_tensorrt(bundle, artifact, engine_dir)   # minutes once, then cached

* The cache key is (TensorRT version, GPU name and compute capability, sha256 of the ONNX, build
  spec), so a driver or JetPack upgrade, another GPU or another model rebuilds instead of loading an
  engine that would fail or, worse, run wrongly.
* The parity gate on the device: a freshly built engine runs the reference inputs and must match
  the reference logits within the artifact's parity tolerance (the reference set code every
  artifact shares: :mod:`edgewise.edge.reference`). A mismatch deletes the cached engine
  and refuses the artifact, so the runtime falls back to the next preference (ONNX on a Jetson).
  A pass is recorded with the reference set's sha256 and the tolerance; another bundle with the same
  graph but another reference set or tolerance checks the cached engine again. A bundle without a
  reference set (exported before the device gate) still runs, unchecked, and says so in the log
  and in :meth:`TensorRTBackend.describe`.
* Every refusal (parser errors, a build that returns nothing, an engine that does not deserialize,
  a shape the profile does not take, any exception from TensorRT) is a :class:`TensorRTError`, a
  :class:`~edgewise.edge.backends.BackendError` the runtime's fallback loop catches and logs.
* fp16: the builder's FP16 flag on the fp32 graph. int8: the QDQ (explicitly quantized) ONNX of
  ``edgewise export --quant static``; the builder reads the scales from its Q/DQ nodes.
* One optimization profile for the time axis (min/opt/max frames), batch 1 to ``max_batch``. The
  backend tiles shorter utterances up to ``min_frames`` and cuts longer ones into ``max_frames``
  pieces whose logits it averages (:class:`~edgewise.edge.windows.FrameRange`, the TFLite policy).
* Device memory is allocated once per engine and grown only when a larger shape arrives.

``tensorrt`` (and ``cuda-python`` for :class:`TensorRTBackend`) come from JetPack on Jetson and
from NVIDIA's index on x86; neither is on PyPI for these devices, so both are imported lazily and
their absence is a :class:`~edgewise.errors.MissingDependencyError` that says what to install.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgewise.bundle import sha256_file
from edgewise.edge.backends import BackendError
from edgewise.edge.reference import (  # noqa: F401  (read_reference, write_reference: re-exported)
    NOT_CHECKED,
    REFERENCE_LOGITS,
    ReferenceSet,
    ReferenceSetError,
    error_line,
    read_reference,
    write_reference,
)
from edgewise.edge.windows import FrameRange, run_windowed
from edgewise.errors import ConfigError, EdgewiseError, MissingDependencyError
from edgewise.fsutil import atomic_path

if TYPE_CHECKING:
    from edgewise.bundle import ArtifactEntry, Bundle

log = logging.getLogger(__name__)

NOT_INSTALLED = (
    "TensorRT is not installed: it needs an NVIDIA GPU and driver (on Jetson it comes with JetPack; "
    "link the system tensorrt into the venv with --system-site-packages)"
)
NO_CUDA_PYTHON = "cuda-python is not installed: pip install cuda-python"
PRECISIONS = ("fp32", "fp16", "int8")


class TensorRTError(BackendError):
    """TensorRT refused a graph or an engine; the runtime falls back to its next preference."""


class EngineParityError(TensorRTError):
    """A built engine does not reproduce the bundle's reference logits within the tolerance."""


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

    @property
    def frame_range(self) -> FrameRange:
        """How utterances are fitted to the profile: tiled up to min, cut into max-frame pieces."""
        return FrameRange.halving(self.min_frames, self.max_frames)

    def describe_profile(self) -> str:
        return (
            f"batch 1..{self.max_batch}, {self.min_frames}..{self.max_frames} frames "
            f"(opt {self.opt_frames}), {self.n_mels} mels"
        )


def import_tensorrt() -> Any:
    try:
        import tensorrt
    except ImportError:
        raise MissingDependencyError(NOT_INSTALLED) from None
    return tensorrt


def import_cudart() -> Any:
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        raise MissingDependencyError(NO_CUDA_PYTHON) from None
    return cudart


def gpu_identity(cudart: Any | None = None) -> str:
    """``NAME sm_XY`` of GPU 0, from cuda-python; refuses clearly without a GPU."""
    cudart = cudart or import_cudart()
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
    """Parse the ONNX and build a serialized engine with the spec's precision and profile.

    Any refusal is a :class:`TensorRTError` naming the file and the stage.
    """
    trt = trt or import_tensorrt()
    stage = "creating the builder"
    try:
        logger = trt.Logger(trt.Logger.WARNING)
        builder = trt.Builder(logger)
        network = builder.create_network(0)  # explicit batch is the only mode in TensorRT 10
        parser = trt.OnnxParser(network, logger)
        stage = "parsing the ONNX"
        if not parser.parse_from_file(str(onnx_path)):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors)) or "no details"
            raise TensorRTError(f"{onnx_path}: TensorRT's ONNX parser refused the graph: {errors}")
        stage = "configuring the build"
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
        stage = "building the engine"
        plan = builder.build_serialized_network(network, config)
    except TensorRTError:
        raise
    except Exception as exc:  # TensorRT raises RuntimeError, TypeError, its own types
        raise TensorRTError(f"{onnx_path}: TensorRT failed while {stage}: {error_line(exc)}") from exc
    if plan is None:
        raise TensorRTError(
            f"{onnx_path}: TensorRT failed to build an engine ({spec.precision}, profile "
            f"{spec.describe_profile()}); see its log above"
        )
    return bytes(plan)


# --------------------------------------------------------------------------------------------------
# The reference set (edgewise.edge.reference): written at export, checked on the device after a build


class EngineReference(ReferenceSet):
    """The artifact's reference set (:class:`~edgewise.edge.reference.ReferenceSet`), for an engine:
    :meth:`check` refuses the engine with an :class:`EngineParityError` beyond the tolerance."""

    def check(self, backend: Any) -> dict[str, Any]:
        """Run the inputs through ``backend``; an EngineParityError when it is off by more than allowed."""
        result = self.compare(backend)
        if not result["passed"]:
            raise EngineParityError(f"the engine's {result['reason']}")
        return {key: value for key, value in result.items() if key not in ("frames",)}


# --------------------------------------------------------------------------------------------------
# The engine cache


class EngineCache:
    """``ROOT/<key>.plan`` with a ``<key>.json`` beside it saying what the engine was built from
    and, once it ran the bundle's reference set, how it compared (``check``)."""

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
        info = {"tensorrt": trt.__version__, "gpu": gpu, "onnx_sha256": onnx_sha, "spec": spec.to_manifest()}
        with atomic_path(self.info_path(plan)) as tmp:
            Path(tmp).write_text(json.dumps(info, indent=2) + "\n")
        with atomic_path(plan) as tmp:
            Path(tmp).write_bytes(data)
        return plan

    @staticmethod
    def info_path(plan: Path) -> Path:
        return plan.with_suffix(".json")

    def info(self, plan: Path) -> dict[str, Any]:
        try:
            return json.loads(self.info_path(plan).read_text())
        except (OSError, ValueError):
            return {}

    def checked(self, plan: Path, reference: EngineReference) -> dict[str, Any] | None:
        """The recorded check when this engine already reproduced this very reference set (same
        sha256) within the same tolerance; None when it has to be checked (again)."""
        check = self.info(plan).get("check")
        if not isinstance(check, dict) or check.get("passed") is not True:
            return None
        if check.get("reference_sha256") != reference.sha256 or check.get("tolerance") != reference.tolerance:
            return None
        return check

    def record_check(self, plan: Path, result: dict[str, Any]) -> None:
        with atomic_path(self.info_path(plan)) as tmp:
            Path(tmp).write_text(json.dumps({**self.info(plan), "check": result}, indent=2) + "\n")

    def discard(self, plan: Path) -> None:
        """Delete a refused engine, so the next start rebuilds instead of loading it again."""
        plan.unlink(missing_ok=True)
        self.info_path(plan).unlink(missing_ok=True)


# --------------------------------------------------------------------------------------------------
# Running an engine


class _DeviceBuffer:
    """One device allocation, grown (freed and allocated again) only when a larger size is asked."""

    def __init__(self, backend: TensorRTBackend) -> None:
        self._backend = backend
        self.ptr = 0
        self.nbytes = 0

    def reserve(self, nbytes: int) -> int:
        if nbytes > self.nbytes:
            self.free()
            self.ptr = int(self._backend._cuda(self._backend._cudart.cudaMalloc(nbytes), "cudaMalloc"))
            self.nbytes = nbytes
        return self.ptr

    def free(self) -> None:
        if self.ptr:
            self._backend._cudart.cudaFree(self.ptr)
        self.ptr, self.nbytes = 0, 0


class TensorRTBackend:
    """Runs a serialized engine with cuda-python buffers: (batch, time, n_mels) -> (batch, classes).

    Each utterance runs at batch 1, fitted to the engine's frame range (tiled up to ``min_frames``,
    cut into ``max_frames`` pieces whose logits are averaged). ``trt`` and ``cudart`` default to
    the installed modules.
    """

    runtime = "tensorrt"

    def __init__(
        self, plan_path: str | Path, spec: BuildSpec, *, trt: Any | None = None, cudart: Any | None = None
    ) -> None:
        self.plan_path = Path(plan_path)
        self.spec = spec
        self.device_check: dict[str, Any] | None = None  # set by open_engine: how it met the reference
        self.frames = spec.frame_range
        self.context = None
        self._stream = None
        self._buffers: dict[str, _DeviceBuffer] = {}
        trt = trt or import_tensorrt()
        self._cudart = cudart or import_cudart()
        try:
            self._open(trt)
        except TensorRTError:
            self.close()
            raise
        except Exception as exc:  # anything TensorRT or CUDA raise while loading
            self.close()
            raise TensorRTError(
                f"{self.plan_path}: TensorRT could not load this engine: {error_line(exc)}"
            ) from exc

    def _open(self, trt: Any) -> None:
        self._logger = trt.Logger(trt.Logger.WARNING)  # kept: TensorRT needs it to outlive the runtime
        self._runtime = trt.Runtime(self._logger)
        self.engine = self._runtime.deserialize_cuda_engine(self.plan_path.read_bytes())
        if self.engine is None:
            raise TensorRTError(
                f"{self.plan_path}: TensorRT could not deserialize this engine (built for another GPU "
                "or TensorRT version, or damaged)"
            )
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if n not in inputs]
        if inputs != [self.spec.input_name] or len(outputs) != 1:
            raise TensorRTError(
                f"{self.plan_path}: expected input {self.spec.input_name!r} and one output, "
                f"the engine has inputs {inputs} and outputs {outputs}"
            )
        self.input_name, self.output_name = inputs[0], outputs[0]
        for name in names:
            dtype = np.dtype(trt.nptype(self.engine.get_tensor_dtype(name)))
            if dtype != np.float32:
                raise TensorRTError(f"{self.plan_path}: tensor {name!r} is {dtype}, expected float32")
        self.context = self.engine.create_execution_context()
        if self.context is None:
            raise TensorRTError(f"{self.plan_path}: TensorRT could not create an execution context")
        self._stream = self._cuda(self._cudart.cudaStreamCreate(), "cudaStreamCreate")
        self._buffers = {self.input_name: _DeviceBuffer(self), self.output_name: _DeviceBuffer(self)}
        # The input buffer now, at the profile's opt length; the output on first use. Only a larger
        # input than any before allocates again.
        self._buffers[self.input_name].reserve(4 * self.spec.opt_frames * self.spec.n_mels)

    def _cuda(self, result: Any, call: str) -> Any:
        err, *rest = result if isinstance(result, tuple) else (result,)
        if int(err) != 0:
            raise TensorRTError(f"{self.plan_path.name}: {call} failed with CUDA error {int(err)}")
        return rest[0] if len(rest) == 1 else (rest or None)

    def run_piece(self, x: np.ndarray) -> np.ndarray:
        """One (1, frames, n_mels) input within the profile -> (1, classes)."""
        cudart = self._cudart
        x = np.ascontiguousarray(x, dtype=np.float32)
        if not self.context.set_input_shape(self.input_name, tuple(x.shape)):
            raise TensorRTError(
                f"{self.plan_path.name}: TensorRT refused input shape {tuple(x.shape)}; the engine's "
                f"profile takes {self.spec.describe_profile()}"
            )
        out_shape = tuple(int(d) for d in self.context.get_tensor_shape(self.output_name))
        if any(d < 0 for d in out_shape):
            raise TensorRTError(f"{self.plan_path.name}: unresolved output shape {out_shape}")
        y = np.empty(out_shape, dtype=np.float32)
        d_in = self._buffers[self.input_name].reserve(x.nbytes)
        d_out = self._buffers[self.output_name].reserve(y.nbytes)
        h2d = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        d2h = cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self._cuda(
            cudart.cudaMemcpyAsync(d_in, x.ctypes.data, x.nbytes, h2d, self._stream), "cudaMemcpyAsync"
        )
        if not (
            self.context.set_tensor_address(self.input_name, d_in)
            and self.context.set_tensor_address(self.output_name, d_out)
        ):
            raise TensorRTError(f"{self.plan_path.name}: TensorRT refused the device buffers")
        if not self.context.execute_async_v3(int(self._stream)):
            raise TensorRTError(f"{self.plan_path.name}: TensorRT execution failed")
        self._cuda(
            cudart.cudaMemcpyAsync(y.ctypes.data, d_out, y.nbytes, d2h, self._stream), "cudaMemcpyAsync"
        )
        self._cuda(cudart.cudaStreamSynchronize(self._stream), "cudaStreamSynchronize")
        return y

    def __call__(self, features: np.ndarray) -> np.ndarray:
        features = np.asarray(features, dtype=np.float32)
        if features.ndim != 3 or features.shape[2] != self.spec.n_mels or features.shape[1] < 1:
            raise BackendError(
                f"{self.plan_path.name}: expected (batch, time, {self.spec.n_mels}) features, got {features.shape}"
            )
        return run_windowed(self.run_piece, features, self.frames)

    def describe(self) -> str:
        if self.device_check is None:
            return f"tensorrt {self.spec.precision} (device parity: {NOT_CHECKED})"
        return f"tensorrt {self.spec.precision}"

    def close(self) -> None:
        """Free the device buffers and the stream (idempotent; also run when the backend is collected)."""
        for buffer in self._buffers.values():
            buffer.free()
        if self._stream is not None:
            self._cudart.cudaStreamDestroy(self._stream)
            self._stream = None

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # interpreter shutdown: CUDA may already be gone
            self.close()


def open_engine(
    onnx_path: str | Path,
    spec: BuildSpec,
    cache: EngineCache,
    reference: EngineReference | None,
    *,
    trt: Any | None = None,
    cudart: Any | None = None,
    gpu: str | None = None,
) -> TensorRTBackend:
    """Build (or load) the engine, check a new one against ``reference``, return its backend.

    An engine that does not load or does not match is deleted from the cache and refused with a
    TensorRTError; an engine that matched this reference set within this tolerance once is not
    checked again. Without a reference the engine runs unchecked, with a warning, and its
    ``describe()`` says so.
    """
    trt = trt or import_tensorrt()
    cudart = cudart or import_cudart()
    plan = cache.get_or_build(onnx_path, spec, trt, gpu or gpu_identity(cudart))
    try:
        backend = TensorRTBackend(plan, spec, trt=trt, cudart=cudart)
    except TensorRTError:
        cache.discard(plan)
        raise
    if reference is None:
        log.warning(
            "tensorrt: device parity %s: the engine %s built from %s runs without having been compared "
            "with the exported model on this device (the bundle predates the device gate; re-export it "
            "to have its engines checked)",
            NOT_CHECKED,
            plan.name,
            onnx_path,
        )
        return backend
    previous = cache.checked(plan, reference)
    if previous is not None:
        log.info(
            "tensorrt: engine %s matched this reference set before (max |diff| %s, allowed %.3g)",
            plan.name,
            previous.get("max_abs_diff"),
            reference.tolerance,
        )
        backend.device_check = previous
        return backend
    try:
        result = reference.check(backend)
    except Exception as exc:
        backend.close()
        cache.discard(plan)
        if isinstance(exc, TensorRTError):
            raise
        raise TensorRTError(f"{plan.name}: running the reference set failed: {error_line(exc)}") from exc
    log.info(
        "tensorrt: engine %s matches the bundle's reference (max |diff| %.3g, allowed %.3g)",
        plan.name,
        result["max_abs_diff"],
        result["tolerance"],
    )
    cache.record_check(plan, result)
    backend.device_check = result
    return backend


def open_tensorrt(
    bundle: Bundle,
    art: ArtifactEntry,
    engine_dir: str | Path,
    *,
    trt: Any | None = None,
    cudart: Any | None = None,
    gpu: str | None = None,
) -> TensorRTBackend:
    """The backend for a ``tensorrt-onnx`` artifact: built, checked and cached under ``engine_dir``.

    Missing TensorRT or cuda-python is a MissingDependencyError; everything else that stops the
    engine (a bad spec, a refused graph, a mismatch) is a TensorRTError. Both make the runtime
    fall back to the profile's next preference.
    """
    trt = trt or import_tensorrt()  # fail fast, before hashing the graph, on machines without TensorRT
    cudart = cudart or import_cudart()
    try:
        spec = BuildSpec.from_manifest(art.extra.get("tensorrt") or {})
    except ConfigError as exc:
        raise TensorRTError(f"{art.path}: {exc}") from None
    try:
        reference = EngineReference.from_artifact(bundle, art)
    except ReferenceSetError as exc:
        raise TensorRTError(str(exc)) from None
    try:
        return open_engine(
            bundle.artifact_path(art),
            spec,
            EngineCache(engine_dir),
            reference,
            trt=trt,
            cudart=cudart,
            gpu=gpu,
        )
    except (TensorRTError, MissingDependencyError):
        raise
    except EdgewiseError as exc:
        raise TensorRTError(f"{art.path}: {exc}") from None
    except Exception as exc:  # a TensorRT or CUDA exception outside the wrapped calls
        raise TensorRTError(f"{art.path}: TensorRT failed: {error_line(exc)}") from exc


def tensorrt_available() -> bool:
    """True when ``import tensorrt`` would work (it never does on machines without NVIDIA drivers)."""
    import importlib.util

    return importlib.util.find_spec("tensorrt") is not None
