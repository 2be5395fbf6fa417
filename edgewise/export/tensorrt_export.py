"""TensorRT: the bundle carries the ONNX graph TensorRT builds from, the build spec and a reference set.

Engines are specific to a GPU model and a TensorRT version, so the engine is built on the device
(:mod:`edgewise.edge.tensorrt`), not here. This row writes ``models/ser.<stem>.trt.onnx``:

* fp32 / fp16: the portable fp32 ONNX (fp16 is the builder's FP16 flag, not an fp16 graph);
* int8: the QDQ ONNX of the static int8 export, which TensorRT builds without a calibrator;

and records ``extra.tensorrt`` (precision, input name, the time-axis optimization profile). The
parity gate runs that same ONNX in onnxruntime here. For the gate on the device, the artifact's
reference set (:mod:`edgewise.export.reference`: a few validation inputs, one shorter than the
profile's minimum, and the PyTorch logits under the engine's frame-range policy,
``models/ser.reference.frames-50-3000-1500.npz``) is recorded in its ``extra.reference`` with its
sha256 and size; the device runs a freshly built engine on it and refuses the engine beyond the
artifact's parity tolerance. When TensorRT is importable here (a GPU machine), the engine is also
built once at export, so a graph TensorRT's parser refuses fails now, not on the device.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgewise.edge.tensorrt import BuildSpec, build_engine, tensorrt_available
from edgewise.export import onnx_export
from edgewise.export.errors import ExportError

if TYPE_CHECKING:
    from edgewise.export.formats import ExportContext, Variant

log = logging.getLogger(__name__)

MIN_FRAMES = 50  # 0.5 s: shorter segments are padded by the runtime
MAX_FRAMES = 3000  # 30 s: longer audio is segmented by the VAD before it gets here


def requires() -> None:
    onnx_export.requires()


def build_spec(ctx: ExportContext, precision: str) -> BuildSpec:
    return BuildSpec(
        precision=precision,
        input_name=onnx_export.INPUT_NAME,
        n_mels=ctx.n_mels,
        min_frames=MIN_FRAMES,
        opt_frames=max(MIN_FRAMES, ctx.window.frames),
        max_frames=MAX_FRAMES,
    )


def _source_onnx(ctx: ExportContext, precision: str) -> tuple[Path, dict[str, Any] | None]:
    """The graph TensorRT builds from: fp32 for fp32/fp16, the static QDQ one for int8."""
    if precision == "int8":
        return onnx_export.shared_int8_static(ctx)
    return onnx_export.shared_fp32(ctx), None


def export_variant(ctx: ExportContext, variant: Variant, out: Path) -> dict[str, Any]:
    """The ``export`` of the table's tensorrt row: writes the ONNX to build from, returns ``extra``."""
    source, quantization = _source_onnx(ctx, variant.precision)
    shutil.copyfile(source, out)
    spec = build_spec(ctx, variant.precision)
    extra: dict[str, Any] = {"tensorrt": spec.to_manifest(), "engine": "built on the device on first use"}
    if quantization:
        extra["quant"] = quantization["quant"]  # where every format records its int8 mode
        extra["quantization"] = quantization
    if tensorrt_available():
        try:
            engine = build_engine(out, spec)
        except Exception as exc:
            raise ExportError(f"TensorRT could not build {variant.label} from {out.name}: {exc}") from exc
        extra["trial_build"] = {"engine_bytes": len(engine)}
    else:
        log.warning(
            "%s: TensorRT is not installed on this machine (no NVIDIA driver), so no engine is built "
            "here; the bundle carries %s and its build spec, and the device builds and caches the "
            "engine on first use. The parity gate runs this ONNX in onnxruntime.",
            variant.label,
            out.name,
        )
        extra["trial_build"] = None
    return extra
