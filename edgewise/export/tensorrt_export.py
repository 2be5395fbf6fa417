"""TensorRT: the bundle carries the ONNX graph TensorRT builds from, the build spec and a reference set.

Engines are specific to a GPU model and a TensorRT version, so the engine is built on the device
(:mod:`edgewise.edge.tensorrt`), not here. This row writes ``models/ser.<stem>.trt.onnx``:

* fp32 / fp16: the portable fp32 ONNX (fp16 is the builder's FP16 flag, not an fp16 graph);
* int8: the QDQ ONNX of the static int8 export, which TensorRT builds without a calibrator;

and records ``extra.tensorrt`` (precision, input name, the time-axis optimization profile). The
parity gate runs that same ONNX in onnxruntime here. For the gate on the device,
:func:`attach_reference` writes one small reference set for all TensorRT artifacts
(``models/ser.trt-reference.npz``: a few validation inputs, one shorter than the profile's minimum,
and the PyTorch logits under the device's frame-range policy) and records it in each artifact's
``extra.reference`` with its sha256 and size; the device runs a freshly built engine on it and
refuses the engine beyond the artifact's parity tolerance. When TensorRT is importable here (a GPU
machine), the engine is also built once at export, so a graph TensorRT's parser refuses fails now,
not on the device.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgewise.bundle import sha256_file
from edgewise.edge.tensorrt import BuildSpec, build_engine, tensorrt_available, write_reference
from edgewise.edge.windows import run_windowed
from edgewise.export import onnx_export
from edgewise.export.errors import ExportError

if TYPE_CHECKING:
    from edgewise.export.formats import ExportContext, Variant

log = logging.getLogger(__name__)

MIN_FRAMES = 50  # 0.5 s: shorter segments are padded by the runtime
MAX_FRAMES = 3000  # 30 s: longer audio is segmented by the VAD before it gets here
REFERENCE_UTTERANCES = 2  # validation utterances in the device's reference set (plus one short input)


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


def reference_inputs(inputs: Sequence[np.ndarray], spec: BuildSpec) -> list[np.ndarray]:
    """A few (1, time, n_mels) validation inputs at most ``opt_frames`` long, and one shorter than
    the profile's minimum (the device tiles it), so the check covers the padding path too."""
    if not inputs:
        raise ExportError("tensorrt: no validation inputs for the device's reference set")
    chosen = [np.asarray(x[:, : spec.opt_frames], dtype=np.float32) for x in inputs[:REFERENCE_UTTERANCES]]
    short = max(1, spec.min_frames // 2)
    chosen.append(np.asarray(inputs[0][:, :short], dtype=np.float32))
    return chosen


def attach_reference(
    model: Any, inputs: Sequence[np.ndarray], extras: Sequence[dict[str, Any]], out: Path, rel_path: str
) -> Path | None:
    """Write the device gate's reference set to ``out``; record it in each TensorRT ``extra``.

    ``extras`` are the ``extra`` dicts of the TensorRT artifacts (each with its ``tensorrt`` build
    spec); the expected logits are the PyTorch model's, run the way the device fits inputs to the
    engine's frame range. Returns ``out``, or None when there is no TensorRT artifact.
    """
    if not extras:
        return None
    import torch

    spec = BuildSpec.from_manifest(extras[0]["tensorrt"])
    if len({(e["tensorrt"]["min_frames"], e["tensorrt"]["max_frames"]) for e in extras}) != 1:
        raise ExportError("tensorrt: the artifacts' frame ranges differ; one reference set cannot serve them")
    chosen = reference_inputs(inputs, spec)
    model = model.eval()

    def run(x: np.ndarray) -> np.ndarray:
        return model(torch.from_numpy(x)).numpy()

    with torch.no_grad():
        logits = np.concatenate([run_windowed(run, x, spec.frame_range) for x in chosen])
    write_reference(out, chosen, logits)
    entry = {
        "path": rel_path,
        "sha256": sha256_file(out),
        "size_bytes": out.stat().st_size,
        "inputs": len(chosen),
        "frames": [int(x.shape[1]) for x in chosen],
        "expected": "PyTorch (merged) logits; inputs fitted to the engine's frame range as on the device",
        "check": "the device runs a new engine on these inputs; beyond parity.tolerance it refuses it",
    }
    for extra in extras:
        extra["reference"] = dict(entry)
    return out
