"""ONNX artifacts: fp32 export, fp16 conversion, int8 quantization (dynamic and static QDQ), runner.

Every variant starts from one fp32 export of the merged model::

    torch.onnx.export(dynamo=True)  ->  fp32 (portable: standard ONNX ops, opset 18)
                                          |-> fp16         convert_float_to_float16(keep_io_types=True)
                                          |-> int8 dynamic quantize_dynamic: int8 weights
                                          '-> int8 static  quantize_static: QDQ, uint8 activations
                                                           calibrated on training features, int8 weights

Choices, each measured (see the export section of the benchmarks and the notes below):

* The example input has batch 2: with batch 1 the exporter silently fixes the batch dimension.
* Opset 18 is the lowest the dynamo exporter emits natively (asking for 17 leaves 18, and onnx's
  version converter has no Split adapter down to 17).
* The exporter's per-node metadata (stack traces naming the build machine's paths, about a quarter
  of the file for the tiny models) is stripped: the artifact is smaller and does not depend on
  where it was built.
* No offline onnxruntime optimization is shipped. ``ORT_ENABLE_EXTENDED``/``ALL`` rewrite the graph
  into ``com.microsoft`` contrib ops (FusedMatMul, SkipLayerNormalization, QuickGelu) that only
  onnxruntime runs (not TensorRT's ONNX parser), and ``ALL`` may add x86-only NCHWc layouts (ORT
  warns the result is hardware-specific; the devices are ARM). Run time of the pre-optimized model
  was the same as of the portable one optimized at load (tiny model, 300 frames: 0.43 ms either
  way); optimizing at load costs 10-20 ms once per session here, which the device can cache itself
  (``optimized_model_filepath`` on the device, where hardware-specific is what we want).
* Static int8 quantizes only the ops with weights (Conv, MatMul, Gemm) and keeps the classifier
  head in float; per-tensor weights, MinMax calibration. Quantizing every op or per-channel weights
  was larger and no closer to fp32; histogram calibrators (percentile, entropy) fail on
  variable-length utterances in onnxruntime 1.32.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import shutil
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgewise.errors import MissingDependencyError
from edgewise.export.errors import ExportError

if TYPE_CHECKING:
    from edgewise.export.formats import ExportContext, Variant

log = logging.getLogger(__name__)

OPSET = 18
INPUT_NAME = "features"
OUTPUT_NAME = "logits"
MAX_BATCH = 4096
MAX_FRAMES = 1 << 17  # about 22 minutes of audio at a 10 ms hop
EXAMPLE_SHAPE = (2, 157)  # batch >= 2, or the exporter fixes the batch dimension to 1
STATIC_OP_TYPES = ("Conv", "MatMul", "Gemm")


def requires() -> None:
    missing = [m for m in ("onnx", "onnxscript", "onnxruntime") if importlib.util.find_spec(m) is None]
    if missing:
        raise MissingDependencyError(
            f"onnx export needs {', '.join(missing)}: pip install 'edgewise[export]'"
        )


@contextlib.contextmanager
def _quiet_exporters() -> Iterator[None]:
    """Silence chatter that is not about this model (missing torchvision ops, deprecated pytree API,
    onnxruntime's advice to pre-process before quantizing, which fails on these graphs)."""

    root = logging.getLogger()
    debugging = root.getEffectiveLevel() <= logging.DEBUG  # -vv shows everything

    class _DropChatter(logging.Filter):
        """onnxruntime.quantization logs to the root logger: keep its real warnings only."""

        def filter(self, record: logging.LogRecord) -> bool:
            if record.name != "root" or debugging:
                return True
            return record.levelno >= logging.WARNING and "pre-processing" not in record.getMessage()

    quieter = {"torch.onnx": logging.ERROR, "onnx_ir": logging.WARNING, "onnxscript": logging.WARNING}
    old_levels = {name: logging.getLogger(name).level for name in quieter}
    chatter = _DropChatter()
    if not debugging:
        for name, level in quieter.items():
            logging.getLogger(name).setLevel(level)
    root.addFilter(chatter)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*LeafSpec.*")
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            yield
    finally:
        for name, level in old_levels.items():
            logging.getLogger(name).setLevel(level)
        root.removeFilter(chatter)


def strip_metadata(model: Any) -> Any:
    """Drop the exporter's per-node metadata and doc strings (stack traces, build paths) in place."""
    for node in model.graph.node:
        del node.metadata_props[:]
        node.doc_string = ""
    model.graph.doc_string = ""
    return model


def set_model_metadata(path: str | Path, values: Mapping[str, str]) -> Path:
    """Write ``values`` into an ONNX file's model metadata in place (onnxruntime reads them back as
    ``session.get_modelmeta().custom_metadata_map``)."""
    import onnx

    path = Path(path)
    proto = onnx.load(str(path))
    kept = [p for p in proto.metadata_props if p.key not in values]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    for key, value in values.items():
        proto.metadata_props.add(key=str(key), value=str(value))
    onnx.save(proto, str(path))
    return path


def _sort_topologically(graph: Any) -> None:
    """Order nodes so each comes after its inputs' producers (onnxruntime's fp16 converter does not)."""
    produced_by = {out: i for i, node in enumerate(graph.node) for out in node.output if out}
    order: list[int] = []
    state = [0] * len(graph.node)  # 0 new, 1 in progress, 2 done
    for root in range(len(graph.node)):
        stack = [(root, iter(graph.node[root].input))]
        if state[root]:
            continue
        state[root] = 1
        while stack:
            index, inputs = stack[-1]
            for name in inputs:
                dep = produced_by.get(name)
                if dep is not None and state[dep] == 0:
                    state[dep] = 1
                    stack.append((dep, iter(graph.node[dep].input)))
                    break
            else:
                stack.pop()
                state[index] = 2
                order.append(index)
    nodes = [graph.node[i] for i in order]
    del graph.node[:]
    graph.node.extend(nodes)


def minify(path: str | Path) -> Path:
    """Strip what only debugging needs, in place: shape annotations and long internal names.

    ``value_info`` (inferred intermediate shapes; onnxruntime and TensorRT infer them again) and the
    exporter's descriptive tensor and node names are a fixed overhead of about 30 KB, 8% of the tiny
    model's fp32 file and a quarter of its int8 one. The graph's input and output names are kept.
    """
    import onnx

    path = Path(path)
    proto = onnx.load(str(path))
    graph = proto.graph
    del graph.value_info[:]
    keep = {v.name for v in graph.input} | {v.name for v in graph.output}
    names: dict[str, str] = {}

    def short(name: str) -> str:
        if not name or name in keep:
            return name
        return names.setdefault(name, f"t{len(names)}")

    for tensor in graph.initializer:
        tensor.name = short(tensor.name)
    _sort_topologically(graph)
    for i, node in enumerate(graph.node):
        node.name = f"n{i}"
        node.input[:] = [short(n) for n in node.input]
        node.output[:] = [short(n) for n in node.output]
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))
    return path


def export_graph(
    model: Any,
    args: tuple,
    path: str | Path,
    *,
    input_names: Sequence[str],
    output_names: Sequence[str],
    dynamic_shapes: Any,
    opset: int = OPSET,
) -> Path:
    """Export any module with the dynamo exporter to a portable, metadata-free, minified fp32 file."""
    import onnx
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    with _quiet_exporters(), torch.no_grad():
        torch.onnx.export(
            model,
            args,
            str(path),
            dynamo=True,
            dynamic_shapes=dynamic_shapes,
            input_names=list(input_names),
            output_names=list(output_names),
            opset_version=opset,
            external_data=False,
            verbose=False,
        )
    proto = strip_metadata(onnx.load(str(path)))
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))
    return minify(path)


def export_role_graphs(
    modules: Mapping[str, Any],
    examples: Mapping[str, tuple[tuple, Any]],
    io: Mapping[str, tuple[Sequence[Mapping[str, Any]], Sequence[Mapping[str, Any]]]],
    workdir: Path,
) -> dict[str, Path]:
    """Export each role's module as ``workdir/<role>.fp32.onnx`` (:func:`export_graph`), one timed
    step a graph. ``examples``: role -> (example args, dynamic shapes); ``io``: role -> (inputs,
    outputs) as the manifest records them (dicts with a ``name``), which name the graph's tensors."""
    from edgewise.export.pipeline import step  # pipeline -> formats -> this module: not at the top

    out = {}
    for role, module in modules.items():
        inputs, outputs = io[role]
        args, dyn = examples[role]
        with step(f"export {role} onnx fp32"):
            out[role] = export_graph(
                module, args, workdir / f"{role}.fp32.onnx",
                input_names=[i["name"] for i in inputs], output_names=[o["name"] for o in outputs],
                dynamic_shapes=dyn,
            )  # fmt: skip
    return out


def input_dims(path: str | Path, index: int = 0) -> list[Any]:
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    return [d.dim_param or d.dim_value for d in proto.graph.input[index].type.tensor_type.shape.dim]


def export_fp32(model: Any, path: str | Path, n_mels: int, *, opset: int = OPSET) -> Path:
    """Export ``model`` ((batch, time, n_mels) -> (batch, classes)) to a portable fp32 ONNX file."""
    import torch

    batch = torch.export.Dim("batch", max=MAX_BATCH)
    time = torch.export.Dim("time", min=2, max=MAX_FRAMES)
    example = torch.randn(*EXAMPLE_SHAPE, n_mels, generator=torch.Generator().manual_seed(0))
    path = export_graph(
        model,
        (example,),
        path,
        input_names=[INPUT_NAME],
        output_names=[OUTPUT_NAME],
        dynamic_shapes=({0: batch, 1: time},),
        opset=opset,
    )
    dims = input_dims(path)
    if dims != ["batch", "time", n_mels]:
        raise ExportError(f"onnx: exported input shape is {dims}, expected ['batch', 'time', {n_mels}]")
    return path


def convert_fp16(src: str | Path, dest: str | Path) -> Path:
    """fp16 weights and compute; float32 inputs and outputs (``keep_io_types``)."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    with _quiet_exporters(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "values truncated to fp16 range": checked by the parity gate
        proto = convert_float_to_float16(onnx.load(str(src)), keep_io_types=True)
    onnx.save(proto, str(dest))
    return Path(dest)


def head_nodes(path: str | Path) -> list[str]:
    """The nodes that produce the graph's output directly from weights (the classifier head)."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    outputs = {o.name for o in proto.graph.output}
    return [n.name for n in proto.graph.node if n.op_type in STATIC_OP_TYPES and set(n.output) & outputs]


# x86 CPUs without VNNI (AVX2, AVX-512F) multiply uint8 activations by int8 weights with VPMADDUBSW,
# whose int16 pair sums saturate at full 8-bit range: on an AMD EPYC (AVX2) the tiny SER model's
# dynamic int8 logits moved by 0.40 from fp32 with 8-bit weights and by 0.019 with 7-bit weights.
# 7-bit weights cost ARM and VNNI machines almost nothing, and a bundle must give the same answers
# on every CPU it may meet, so int8 weights always use the reduced range.
REDUCE_RANGE = True


def quantize_int8_dynamic(src: str | Path, dest: str | Path) -> dict[str, Any]:
    """int8 weights (7-bit range, see REDUCE_RANGE), activations quantized at run time from their range."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with _quiet_exporters():
        quantize_dynamic(
            str(src), str(dest), weight_type=QuantType.QInt8, per_channel=False, reduce_range=REDUCE_RANGE
        )
    return {
        "quant": "dynamic",
        "weights": "int8",
        "activations": "dynamic uint8",
        "per_channel": False,
        "reduce_range": REDUCE_RANGE,
    }


def check_calibration(features: Sequence[np.ndarray], n_mels: int) -> list[np.ndarray]:
    """Calibration inputs as (1, time, n_mels) float32 arrays; a clear error for anything unusable."""
    if len(features) == 0:
        raise ExportError("int8 static calibration: the calibration set is empty")
    batches = []
    for i, item in enumerate(features):
        arr = np.asarray(item)
        if arr.ndim == 3 and arr.shape[0] == 1:
            arr = arr[0]
        if arr.ndim != 2 or arr.shape[1] != n_mels or arr.shape[0] < 2:
            raise ExportError(
                f"int8 static calibration: item {i} has shape {tuple(np.shape(item))}; "
                f"expected (frames >= 2, {n_mels}) normalized log-mel features"
            )
        if not np.isfinite(arr).all():
            raise ExportError(f"int8 static calibration: item {i} holds NaN or infinite values")
        batches.append(np.ascontiguousarray(arr[None], dtype=np.float32))
    return batches


def _reader(batches: list[np.ndarray]) -> Any:
    from onnxruntime.quantization import CalibrationDataReader

    class FeatureReader(CalibrationDataReader):
        """Feeds one utterance at a time (whole length, batch 1), the way the device runs."""

        def __init__(self) -> None:
            self._next = 0

        def get_next(self) -> dict[str, np.ndarray] | None:
            if self._next >= len(batches):
                return None
            self._next += 1
            return {INPUT_NAME: batches[self._next - 1]}

        def rewind(self) -> None:
            self._next = 0

    return FeatureReader()


def quantize_int8_static(
    src: str | Path, dest: str | Path, calibration: Sequence[np.ndarray], n_mels: int
) -> dict[str, Any]:
    """QDQ int8: uint8 activations (MinMax ranges from ``calibration``), int8 per-tensor weights."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    batches = check_calibration(calibration, n_mels)
    float_nodes = head_nodes(src)
    with _quiet_exporters():
        quantize_static(
            str(src),
            str(dest),
            _reader(batches),
            quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            per_channel=False,
            reduce_range=REDUCE_RANGE,
            op_types_to_quantize=list(STATIC_OP_TYPES),
            nodes_to_exclude=float_nodes,
            calibrate_method=CalibrationMethod.MinMax,
            calibration_providers=["CPUExecutionProvider"],
        )
    return {
        "quant": "static",
        "quant_format": "QDQ",
        "weights": "int8",
        "activations": "uint8",
        "per_channel": False,
        "reduce_range": REDUCE_RANGE,
        "op_types": list(STATIC_OP_TYPES),
        "float_nodes": float_nodes,
        "calibration": {
            "split": "train",
            "method": "minmax",
            "utterances": len(batches),
            "frames": int(sum(b.shape[1] for b in batches)),
        },
    }


def shared_fp32(ctx: ExportContext) -> Path:
    """The one fp32 export of the merged model that every ONNX-based variant starts from."""
    if "onnx-fp32" not in ctx.shared:
        ctx.shared["onnx-fp32"] = export_fp32(ctx.model, ctx.workdir / "onnx-fp32.onnx", ctx.n_mels)
    return ctx.shared["onnx-fp32"]


def shared_int8_static(ctx: ExportContext) -> tuple[Path, dict[str, Any]]:
    """The one calibrated QDQ model (the onnx int8-static artifact and TensorRT's int8 source)."""
    if "onnx-int8-static" not in ctx.shared:
        path = ctx.workdir / "onnx-int8-static.onnx"
        extra = quantize_int8_static(shared_fp32(ctx), path, ctx.calibration(), ctx.n_mels)
        ctx.shared["onnx-int8-static"] = (minify(path), extra)
    return ctx.shared["onnx-int8-static"]


def export_variant(ctx: ExportContext, variant: Variant, out: Path) -> dict[str, Any]:
    """The ``export`` of the table's onnx row: writes ``out``, returns the artifact's ``extra``."""
    fp32 = shared_fp32(ctx)
    extra: dict[str, Any] = {
        "opset": OPSET,
        "graph": "portable: standard ONNX ops; onnxruntime optimizes it when the session loads",
    }
    if variant.precision == "fp32":
        shutil.copyfile(fp32, out)
    elif variant.precision == "fp16":
        convert_fp16(fp32, out)
        extra["fp16"] = {"io_types": "float32", "weights": "float16"}
    elif variant.quant == "dynamic":
        extra.update(quantize_int8_dynamic(fp32, out))
    elif variant.quant == "static":
        qdq, static_extra = shared_int8_static(ctx)
        shutil.copyfile(qdq, out)
        extra.update(static_extra)
    else:  # the table and resolve_variants() make this unreachable
        raise ExportError(f"onnx: no export for {variant.label}")
    if variant.precision in ("fp16", "int8") and variant.quant != "static":
        minify(out)
    extra["stripped"] = "value_info and internal tensor names (minify)"
    return extra
