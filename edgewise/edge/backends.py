"""Inference backends: one loaded artifact, float32 features in, float32 logits out.

The edge runtime and the export parity gate use these same classes, so an artifact is checked in
the code that will run it. Each runtime is imported lazily, inside the backend that needs it:

* :class:`OnnxBackend`  onnxruntime, with execution providers in order of preference (TensorRT and
  CUDA on Jetson, CPU elsewhere); a missing provider is skipped with a logged reason.
* :class:`LiteRTBackend`  a ``.tflite`` file in the ai-edge-litert interpreter (XNNPACK on CPU), or
  in the older tflite-runtime for what that runs correctly (see :func:`tflite_runtime_refusal`).
  TFLite models have a fixed input window: the backend pads or chunks to it
  (:mod:`edgewise.edge.windows`), quantizing int8 inputs and dequantizing outputs when needed;
  ``windows_run`` counts the windows it has run.
* :class:`~edgewise.edge.tensorrt.TensorRTBackend` (in :mod:`edgewise.edge.tensorrt`) runs an engine
  built on the device; its refusals are :class:`BackendError` too, so the runtime falls back.

Call a backend with (batch, time, n_mels) features; it returns (batch, classes) logits.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgewise.edge.windows import WindowSpec, run_windowed
from edgewise.errors import EdgewiseError, MissingDependencyError

log = logging.getLogger(__name__)

CPU_PROVIDERS = ("CPUExecutionProvider",)
GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")


class BackendError(EdgewiseError):
    """An artifact cannot be loaded or run; the message names the file and the reason."""


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _check_file(path: Path, kind: str) -> Path:
    if not path.is_file():
        raise BackendError(f"{path}: {kind} file not found")
    return path


class OnnxBackend:
    """An onnxruntime session; ``providers`` in order of preference, unavailable ones skipped."""

    runtime = "onnxruntime"

    def __init__(
        self,
        path: str | Path,
        threads: int = 1,
        providers: Sequence[str] = CPU_PROVIDERS,
        single_io: bool = True,
    ) -> None:
        """``single_io``: the graph must have one input and one output (``__call__``); graphs with
        several (the TTS family's) are run with :meth:`run`."""
        try:
            import onnxruntime as ort
        except ImportError:
            raise MissingDependencyError(
                "onnxruntime is not installed: pip install 'edgewise[edge]'"
            ) from None

        self.path = _check_file(Path(path), "ONNX")
        available = set(ort.get_available_providers())
        chosen = [p for p in providers if p in available]
        for skipped in (p for p in providers if p not in available):
            log.info(
                "%s: execution provider %s is not in this onnxruntime build; skipped", self.path.name, skipped
            )
        if not chosen:
            chosen = list(CPU_PROVIDERS)
        options = ort.SessionOptions()
        options.intra_op_num_threads = max(1, threads)
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=chosen)
        except Exception as exc:  # onnxruntime raises its own types (InvalidProtobuf, Fail, ...)
            raise BackendError(f"{self.path}: not a loadable ONNX model ({_first_line(exc)})") from None
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        self.input_names = [i.name for i in inputs]
        self.output_names = [o.name for o in outputs]
        if single_io and (len(inputs) != 1 or len(outputs) != 1):
            raise BackendError(
                f"{self.path}: expected one input and one output, got {[i.name for i in inputs]} -> "
                f"{[o.name for o in outputs]}"
            )
        self.input_name, self.output_name = inputs[0].name, outputs[0].name
        self.providers = list(self.session.get_providers())

    def __call__(self, features: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(features, dtype=np.float32)
        return self.session.run([self.output_name], {self.input_name: x})[0]

    def run(self, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        """All outputs, in the graph's order, for named inputs."""
        return self.session.run(self.output_names, {k: np.ascontiguousarray(v) for k, v in inputs.items()})

    def describe(self) -> str:
        return f"onnxruntime {self.providers[0]}"


def tflite_runtime_refusal(precision: str, quant: str | None) -> str | None:
    """Why the legacy tflite-runtime package must not run an artifact, or None when it may.

    tflite-runtime 2.14 (the last release, still on many devices) needs numpy < 2, rejects newer
    op versions and gave wrong outputs (0-25% top-1 agreement) for dynamic-range int8 models here.
    """
    if int(np.__version__.split(".")[0]) >= 2:
        return f"tflite-runtime needs numpy < 2 and this environment has numpy {np.__version__}"
    if precision == "int8" and quant != "static":
        return "tflite-runtime gives wrong outputs for dynamic-range int8 models; use fp32/fp16 or ai-edge-litert"
    return None


def _litert_interpreter(precision: str, quant: str | None) -> tuple[Any, str]:
    """The interpreter class to use: ai-edge-litert, else tflite-runtime where it is correct."""
    if importlib.util.find_spec("ai_edge_litert") is not None:
        from ai_edge_litert.interpreter import Interpreter

        return Interpreter, "ai-edge-litert"
    if importlib.util.find_spec("tflite_runtime") is not None:
        refusal = tflite_runtime_refusal(precision, quant)
        if refusal:
            raise MissingDependencyError(f"{refusal}; pip install ai-edge-litert")
        from tflite_runtime.interpreter import Interpreter

        return Interpreter, "tflite-runtime"
    raise MissingDependencyError("no TFLite interpreter: pip install 'edgewise[edge]' (ai-edge-litert)")


def _open_litert(
    path: str | Path, threads: int, precision: str, quant: str | None, *, signature: bool = False
) -> tuple[Path, str, Any]:
    """(path, interpreter name, the interpreter with its tensors allocated, or its default signature
    runner with ``signature``): a ``.tflite`` file in the LiteRT interpreter this environment runs
    correctly; BackendError naming the file when it cannot be loaded."""
    interpreter_cls, name = _litert_interpreter(precision, quant)
    path = _check_file(Path(path), "TFLite")
    try:
        interpreter = interpreter_cls(model_path=str(path), num_threads=max(1, threads))
        if signature:
            return path, name, interpreter.get_signature_runner()
        interpreter.allocate_tensors()
        return path, name, interpreter
    except Exception as exc:  # the interpreter raises ValueError/RuntimeError with its own text
        raise BackendError(f"{path}: not a loadable TFLite model ({_first_line(exc)})") from None


class LiteRTBackend:
    """A fixed-window ``.tflite`` model; longer or shorter inputs go through ``window``."""

    runtime = "litert"

    def __init__(
        self,
        path: str | Path,
        threads: int = 1,
        window: WindowSpec | None = None,
        *,
        precision: str = "fp32",
        quant: str | None = None,
    ) -> None:
        self.path, self.interpreter_name, self.interpreter = _open_litert(path, threads, precision, quant)
        inputs, outputs = self.interpreter.get_input_details(), self.interpreter.get_output_details()
        if len(inputs) != 1 or len(outputs) != 1:
            raise BackendError(
                f"{self.path}: expected one input and one output, got {len(inputs)} -> {len(outputs)}"
            )
        self._input, self._output = inputs[0], outputs[0]
        shape = [int(d) for d in self._input["shape"]]
        if len(shape) != 3 or shape[0] != 1:
            raise BackendError(f"{self.path}: expected a (1, frames, n_mels) input, got {shape}")
        self.input_shape = tuple(shape)
        self.windows_run = 0  # interpreter invocations so far: one per window
        frames = shape[1]
        self.window = window or WindowSpec(frames=frames, hop=max(1, frames // 2))
        if self.window.frames != frames:
            raise BackendError(
                f"{self.path}: the manifest's window is {self.window.frames} frames, the model's input {frames}"
            )

    def _quantize(self, x: np.ndarray) -> np.ndarray:
        dtype = self._input["dtype"]
        if dtype == np.float32:
            return x
        scale, zero = self._input["quantization"]
        info = np.iinfo(dtype)
        return np.clip(np.round(x / scale + zero), info.min, info.max).astype(dtype)

    def _dequantize(self, y: np.ndarray) -> np.ndarray:
        if y.dtype == np.float32:
            return y
        scale, zero = self._output["quantization"]
        return (y.astype(np.float32) - zero) * scale

    def run_window(self, window: np.ndarray) -> np.ndarray:
        """One (1, frames, n_mels) window -> (1, classes)."""
        self.interpreter.set_tensor(self._input["index"], self._quantize(window))
        self.interpreter.invoke()
        self.windows_run += 1
        return self._dequantize(self.interpreter.get_tensor(self._output["index"]).copy())

    def __call__(self, features: np.ndarray) -> np.ndarray:
        features = np.asarray(features, dtype=np.float32)
        if features.ndim != 3 or features.shape[2] != self.input_shape[2]:
            raise BackendError(
                f"{self.path.name}: expected (batch, time, {self.input_shape[2]}) features, got {features.shape}"
            )
        return run_windowed(self.run_window, features, self.window)

    def describe(self) -> str:
        return f"{self.interpreter_name} ({self.window.frames}-frame window)"


class LiteRTGraph:
    """A fixed-length ``.tflite`` graph with named inputs and outputs (the TTS family's flow step
    and vocoder), run like :meth:`OnnxBackend.run` on any number of frames.

    litert-torch cannot convert these graphs with a dynamic frame axis, so they are exported at
    ``frames`` frames with one more input, ``mask_input`` (1 for real frames), that keeps padding
    out of every convolution and attention window. Up to ``frames`` frames run as one call, padded
    and masked: the real frames get what the dynamic graph gives them. Longer inputs run in tiles
    of ``frames - 2 * context`` frames (aligned to ``align``) with ``context`` frames of real input
    on both sides; that is exact when ``context`` covers the graph's receptive field (the vocoder)
    and the streaming pipeline's own chunking otherwise (the flow step's attention windows).
    """

    runtime = "litert"

    def __init__(
        self,
        path: str | Path,
        threads: int = 1,
        *,
        inputs: Sequence[str],
        outputs: Sequence[str],
        frames: int,
        mask_input: str = "mask",
        context: int = 0,
        align: int = 1,
        precision: str = "fp32",
        quant: str | None = None,
    ) -> None:
        self.path, self.interpreter_name, self._runner = _open_litert(
            path, threads, precision, quant, signature=True
        )
        details = self._runner.get_input_details()
        n_out = len(self._runner.get_output_details())
        if len(details) != len(inputs) or n_out != len(outputs) or mask_input not in inputs:
            raise BackendError(
                f"{self.path}: the graph has {len(details)} inputs and {n_out} outputs; the manifest "
                f"names {list(inputs)} (with the mask {mask_input!r}) -> {list(outputs)}"
            )
        self.frames, self.context, self.align = int(frames), int(context), max(1, int(align))
        self.core = (self.frames - 2 * self.context) // self.align * self.align
        if self.core < self.align or self.context % self.align:
            raise BackendError(
                f"{self.path}: {frames} frames with {context} frames of context on each side and tiles "
                f"aligned to {align}: expected context a multiple of the alignment and room for a tile"
            )
        # litert-torch names a signature's tensors args_0.. and output_0.. in the module's order
        self._args = {name: f"args_{i}" for i, name in enumerate(inputs)}
        if sorted(details) != sorted(self._args.values()):
            raise BackendError(f"{self.path}: the graph's inputs are {sorted(details)}, expected args_0..")
        self._shapes = {
            name: tuple(int(d) for d in details[arg]["shape"]) for name, arg in self._args.items()
        }
        self.mask_input = mask_input
        self.input_names = [n for n in inputs if n != mask_input]
        self.output_names = list(outputs)
        if self._shapes[mask_input] != (1, self.frames) or not any(self._framed(n) for n in self.input_names):
            raise BackendError(
                f"{self.path}: the manifest says {frames} frames with the mask {mask_input!r}; the graph "
                f"takes {self._shapes}"
            )
        self.calls = 0  # interpreter invocations so far

    def _framed(self, name: str) -> bool:
        shape = self._shapes[name]
        return len(shape) >= 2 and shape[1] == self.frames

    def _run_padded(self, inputs: dict[str, np.ndarray], length: int) -> list[np.ndarray]:
        feed = {}
        for name, arr in inputs.items():
            arr = np.asarray(arr, dtype=np.float32)
            if self._framed(name):
                pad = [(0, 0)] * arr.ndim
                pad[1] = (0, self.frames - length)
                arr = np.pad(arr, pad)
            feed[self._args[name]] = np.ascontiguousarray(arr)
        mask = np.zeros((1, self.frames), np.float32)
        mask[:, :length] = 1.0
        feed[self._args[self.mask_input]] = mask
        out = self._runner(**feed)
        self.calls += 1
        return [out[f"output_{i}"][:, :length] for i in range(len(self.output_names))]

    def run(self, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        """All outputs, in the graph's order, for named inputs of any length (batch 1)."""
        missing = sorted(set(self.input_names) - set(inputs))
        if missing:
            raise BackendError(f"{self.path.name}: inputs {missing} not given")
        framed = [n for n in self.input_names if self._framed(n)]
        length = int(np.shape(inputs[framed[0]])[1])
        if length <= self.frames:
            return self._run_padded(inputs, length)
        parts: list[list[np.ndarray]] = []
        for start in range(0, length, self.core):
            end = min(length, start + self.core)
            lo, hi = max(0, start - self.context), min(length, end + self.context)
            tile = {n: (np.asarray(a)[:, lo:hi] if n in framed else a) for n, a in inputs.items()}
            parts.append([o[:, start - lo : end - lo] for o in self._run_padded(tile, hi - lo)])
        return [np.concatenate([p[i] for p in parts], axis=1) for i in range(len(self.output_names))]

    def describe(self) -> str:
        return f"{self.interpreter_name} ({self.frames}-frame graph, masked)"
