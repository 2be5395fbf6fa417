"""The export format table: one row per format, and everything else reads it.

The rows drive the CLI (``--format`` / ``--precision`` / ``--quant`` choices and their validation),
the export loop (each row names its ``export`` function), the parity gate (each row names its
``runner`` and a tolerance per precision) and, later, the benchmarks. Adding a format is one row
here and one export function (Ultralytics' export table, Optimum's per-format tolerances).

Precisions are the bundle's (``fp32``, ``fp16``, ``int8``). ``int8`` comes in quantization modes:
``dynamic`` (int8 weights, activations quantized on the fly; needs no data) and ``static``
(int8 weights and uint8 activations with ranges calibrated on training features). The mode is part
of the artifact's file name (``ser.int8-static.onnx``) and of its manifest ``extra.quant``.

This module imports neither torch nor any runtime, so ``edgewise --help`` stays fast; the export
functions and runners it references import them when called.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from edgewise.edge.windows import WindowSpec
from edgewise.errors import ConfigError
from edgewise.export import onnx_export, tensorrt_export, tflite_export

PRECISIONS = ("fp32", "fp16", "int8")
QUANT_MODES = ("dynamic", "static")


@dataclass(frozen=True)
class Tolerance:
    """How far an artifact may be from the PyTorch model and still ship.

    The logits must agree within ``atol + rtol * max|reference logit|`` (the scale term lets int8
    tolerances follow the model's logit range), and the task metric (UA on the validation split)
    may drop by at most ``max_metric_drop`` (a fraction: 0.005 is half a point).
    """

    atol: float
    rtol: float = 0.0
    max_metric_drop: float = 0.005

    def allowed(self, reference_scale: float) -> float:
        return self.atol + self.rtol * reference_scale

    def describe(self) -> str:
        return f"atol {self.atol:g}" + (f" + rtol {self.rtol:g} x max|ref|" if self.rtol else "")


@dataclass(frozen=True)
class PrecisionSpec:
    """One precision of a format: its default tolerance and, for int8, the quantization modes."""

    tolerance: Tolerance
    quant_modes: tuple[str, ...] = ()  # empty: not quantized
    calibrated_modes: tuple[str, ...] = ()  # the modes that need calibration data


@dataclass(frozen=True)
class Variant:
    """One artifact to produce: a format, a precision and (int8 only) a quantization mode."""

    format: str
    precision: str
    quant: str | None = None

    @property
    def stem(self) -> str:
        """File-name part and override key: ``fp32``, ``fp16``, ``int8-dynamic``, ``int8-static``."""
        return f"{self.precision}-{self.quant}" if self.quant else self.precision

    @property
    def label(self) -> str:
        return f"{self.format} {self.precision}" + (f" ({self.quant})" if self.quant else "")

    @property
    def row(self) -> Format:
        return FORMATS[self.format]

    @property
    def needs_calibration(self) -> bool:
        return self.quant in self.row.precisions[self.precision].calibrated_modes

    @property
    def tolerance(self) -> Tolerance:
        return self.row.precisions[self.precision].tolerance

    def artifact_path(self, role: str = "ser") -> str:
        return f"models/{role}.{self.stem}{self.row.suffix}"


class Runner(Protocol):
    """A loaded artifact: float32 features (batch, time, n_mels) -> float32 logits (batch, classes)."""

    def __call__(self, features: Any) -> Any: ...


@dataclass
class ExportContext:
    """What an export function gets: the merged model, a scratch folder, lazy calibration data.

    ``calibration()`` returns normalized training features, one (time, n_mels) float32 array per
    utterance; it is only called for variants that need calibration. ``shared`` lets variants of
    one format reuse work (the fp16 and int8 ONNX files are made from the one fp32 export).
    """

    model: Any  # torch.nn.Module, merged; typed loosely so this module does not import torch
    n_mels: int
    workdir: Path
    calibration: Callable[[], list[Any]]
    window: WindowSpec  # the input window of fixed-shape formats (and TensorRT's opt length)
    shared: dict[str, Any] = field(default_factory=dict)


ExportFn = Callable[[ExportContext, Variant, Path], dict[str, Any]]
RunnerFactory = Callable[[Path, int, "Variant", "WindowSpec | None"], Runner]


@dataclass(frozen=True)
class Format:
    """A row of the table.

    ``export(ctx, variant, out_path)`` writes the artifact and returns the manifest ``extra`` for
    it; ``runner(path, threads, variant, window)`` loads it for the parity gate in the edge runtime's
    backend (``window`` is given for fixed-shape formats); ``requires()`` raises
    MissingDependencyError (with the install hint) when the toolchain is absent, and is checked
    before any slow work. ``dynamic_shapes`` False means a fixed window (pad or chunk on device).
    """

    name: str
    suffix: str
    runtime: str
    precisions: Mapping[str, PrecisionSpec]
    devices: tuple[str, ...]
    dynamic_shapes: bool
    export: ExportFn
    runner: RunnerFactory
    requires: Callable[[], None]
    manifest_format: str = ""  # the manifest's ``format`` slug; defaults to ``name``
    notes: str = ""

    def __post_init__(self) -> None:
        if not self.manifest_format:
            object.__setattr__(self, "manifest_format", self.name)
        unknown = sorted(set(self.precisions) - set(PRECISIONS))
        if unknown:
            raise ValueError(f"format {self.name}: precision(s) {unknown} are not bundle precisions")

    def describe_precisions(self) -> str:
        """``fp32, fp16, int8 (dynamic|static)``: what ``--precision``/``--quant`` accept for it."""
        parts = []
        for name, spec in self.precisions.items():
            parts.append(f"{name} ({'|'.join(spec.quant_modes)})" if spec.quant_modes else name)
        return ", ".join(parts)


# --------------------------------------------------------------------------------------------------
# Runners: the edge runtime's own backends, so the gate checks the code that runs on the device.


def _onnx_runner(path: Path, threads: int, variant: Variant, window: WindowSpec | None) -> Runner:
    from edgewise.edge.backends import OnnxBackend

    return OnnxBackend(path, threads)


def _tflite_runner(path: Path, threads: int, variant: Variant, window: WindowSpec | None) -> Runner:
    from edgewise.edge.backends import LiteRTBackend

    return LiteRTBackend(path, threads, window, precision=variant.precision, quant=variant.quant)


# --------------------------------------------------------------------------------------------------
# The table

# Tolerances, measured on the tiny models (logits within about [-3, 3]): fp32 ONNX differs from
# PyTorch by about 1e-6, fp16 by 5e-4, int8 by 2e-2 (dynamic) to 6e-2 (static). The defaults leave
# room for larger models without letting a broken artifact through; the UA drop is the task gate.
_FP32 = Tolerance(atol=1e-4, max_metric_drop=0.005)
_FP16 = Tolerance(atol=5e-3, rtol=1e-3, max_metric_drop=0.005)
_INT8 = Tolerance(atol=0.1, rtol=0.05, max_metric_drop=0.02)

FORMATS: dict[str, Format] = {
    row.name: row
    for row in (
        Format(
            name="onnx",
            suffix=".onnx",
            runtime="onnxruntime",
            precisions={
                "fp32": PrecisionSpec(_FP32),
                "fp16": PrecisionSpec(_FP16),
                "int8": PrecisionSpec(_INT8, quant_modes=QUANT_MODES, calibrated_modes=("static",)),
            },
            devices=("cpu", "gpu"),
            dynamic_shapes=True,
            export=onnx_export.export_variant,
            runner=_onnx_runner,
            requires=onnx_export.requires,
            notes="portable opset-18 graph, dynamic batch and time; onnxruntime optimizes it at load",
        ),
        Format(
            name="tflite",
            suffix=".tflite",
            runtime="litert",
            precisions={
                "fp32": PrecisionSpec(_FP32),
                "fp16": PrecisionSpec(_FP16),
                "int8": PrecisionSpec(_INT8, quant_modes=QUANT_MODES, calibrated_modes=("static",)),
            },
            devices=("cpu",),
            dynamic_shapes=False,
            export=tflite_export.export_variant,
            runner=_tflite_runner,
            requires=tflite_export.requires,
            notes="fixed window (litert-torch cannot convert a dynamic time axis); the runtime tiles or chunks",
        ),
        Format(
            name="tensorrt",
            suffix=".trt.onnx",
            runtime="tensorrt",
            precisions={
                "fp32": PrecisionSpec(_FP32),
                "fp16": PrecisionSpec(_FP16),
                "int8": PrecisionSpec(_INT8, quant_modes=("static",), calibrated_modes=("static",)),
            },
            devices=("gpu",),
            dynamic_shapes=True,
            export=tensorrt_export.export_variant,
            runner=_onnx_runner,
            requires=tensorrt_export.requires,
            manifest_format="tensorrt-onnx",
            notes="the ONNX TensorRT builds from plus its build spec; engines are built and cached on the device",
        ),
    )
}


def all_precisions() -> tuple[str, ...]:
    """Every precision some format supports, in the canonical order (the ``--precision`` choices)."""
    return tuple(p for p in PRECISIONS if any(p in row.precisions for row in FORMATS.values()))


def valid_combinations() -> str:
    """One line per format listing what it accepts, for error messages."""
    return "\n".join(f"  {row.name}: {row.describe_precisions()}" for row in FORMATS.values())


def _unique(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))


def resolve_variants(
    formats: Sequence[str], precisions: Sequence[str], quant: Sequence[str] | None = None
) -> list[Variant]:
    """The artifacts to make, checked against the table; a bad combination lists the valid ones.

    ``quant`` applies to ``int8``: each given mode that a format has is one artifact (a format with
    none of them is an error); None means each format's first mode (``dynamic`` for ONNX and TFLite,
    ``static`` for TensorRT).
    """
    if not formats:
        raise ConfigError("no format given; choose from " + ", ".join(FORMATS))
    if not precisions:
        raise ConfigError("no precision given; choose from " + ", ".join(all_precisions()))
    if quant and "int8" not in precisions:
        raise ConfigError(f"--quant {'/'.join(quant)} applies to int8 only; add --precision int8")
    variants: list[Variant] = []
    for name in _unique(formats):
        if name not in FORMATS:
            raise ConfigError(
                f"unknown format {name!r}; valid formats and precisions:\n{valid_combinations()}"
            )
        row = FORMATS[name]
        for precision in _unique(precisions):
            if precision not in row.precisions:
                raise ConfigError(
                    f"{name} has no precision {precision!r}; valid formats and precisions:\n"
                    f"{valid_combinations()}"
                )
            spec = row.precisions[precision]
            if not spec.quant_modes:
                variants.append(Variant(name, precision))
                continue
            requested = _unique(quant) if quant else [spec.quant_modes[0]]
            # With several formats, each takes the requested modes it has (tensorrt has no dynamic).
            modes = [m for m in requested if m in spec.quant_modes]
            if not modes:
                raise ConfigError(
                    f"{name} {precision} has no quantization mode {'/'.join(map(repr, requested))}; "
                    f"valid formats and precisions:\n{valid_combinations()}"
                )
            variants.extend(Variant(name, precision, mode) for mode in modes)
    return variants


def check_toolchains(variants: Sequence[Variant]) -> None:
    """Fail before any slow work when a requested format's toolchain is missing."""
    for name in _unique(v.format for v in variants):
        FORMATS[name].requires()


def override_tolerance(variant: Variant, atol: dict[str, float], metric_drop: dict[str, float]) -> Tolerance:
    """The variant's tolerance with user overrides; keys are a stem (``int8-static``) or a precision."""
    tol = variant.tolerance
    for key in (variant.precision, variant.stem):  # the more specific key wins
        if key in atol:
            tol = replace(tol, atol=atol[key], rtol=0.0)
        if key in metric_drop:
            tol = replace(tol, max_metric_drop=metric_drop[key])
    return tol
