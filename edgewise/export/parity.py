"""The parity gate: each artifact, run in its own runtime, against the PyTorch model it came from.

Two checks per artifact, both on held-out data (the validation split, whole utterances, batch 1,
the way the device runs):

* the logits: ``max |artifact - pytorch|`` within the format/precision tolerance of the table
  (:class:`~edgewise.export.formats.Tolerance`);
* the task metric: UA (mean per-class recall) may drop by at most the allowed points.

Formats with dynamic shapes are also run once on a batch of several utterances cropped to one odd
length, which catches a batch or time dimension fixed at export. The report reads like Optimum's
``validate_model_outputs``: which artifact, which output, the difference and the tolerance.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgewise.cloud.train.metrics import classification_report
from edgewise.edge.windows import WindowSpec, run_windowed
from edgewise.export.errors import ExportError
from edgewise.export.formats import Runner, Tolerance

METRIC = "ua"
DYNAMIC_CHECK_BATCH = 3


@dataclass
class ReferenceSet:
    """Held-out inputs with the PyTorch logits and metric every artifact is compared to."""

    inputs: list[np.ndarray]  # (1, time, n_mels) float32 each, normalized
    labels: np.ndarray  # (n,) class indices
    label_names: tuple[str, ...]
    logits: np.ndarray  # (n, classes): the PyTorch (merged) model
    batch: np.ndarray | None = None  # (B, T, n_mels): a few utterances cropped to one length
    batch_logits: np.ndarray | None = None
    window: WindowSpec | None = None  # set when the logits come from fixed windows
    whole_metric: float | None = None  # then: the metric of PyTorch on whole utterances

    @property
    def description(self) -> str:
        if self.window is None:
            return "PyTorch, whole utterances"
        return f"PyTorch on the same {self.window.frames}-frame windows"

    @property
    def metric(self) -> float:
        return metric_of(self.logits, self.labels, self.label_names)

    @property
    def scale(self) -> float:
        return float(np.abs(self.logits).max())


def _finite(value: float | None) -> float | None:
    """JSON has no NaN or infinity: a non-finite difference is recorded as null (and has failed)."""
    return None if value is None or not np.isfinite(value) else float(value)


def metric_of(logits: np.ndarray, labels: np.ndarray, label_names: Sequence[str]) -> float:
    return float(classification_report(labels, logits.argmax(1), tuple(label_names))[METRIC])


def make_reference(
    model: Any, inputs: list[np.ndarray], labels: np.ndarray, label_names: Sequence[str]
) -> ReferenceSet:
    """Run the PyTorch model on ``inputs`` (and a cropped batch of them) to get the reference."""
    import torch

    model = model.eval()
    with torch.no_grad():
        logits = np.concatenate([model(torch.from_numpy(x)).numpy() for x in inputs])
        batch = cropped_batch(inputs)
        batch_logits = model(torch.from_numpy(batch)).numpy() if batch is not None else None
    return ReferenceSet(inputs, np.asarray(labels), tuple(label_names), logits, batch, batch_logits)


def windowed_reference(model: Any, reference: ReferenceSet, window: WindowSpec) -> ReferenceSet:
    """PyTorch run the way a fixed-window artifact runs (:mod:`edgewise.edge.windows`)."""
    import torch

    model = model.eval()

    def run(x: np.ndarray) -> np.ndarray:
        return model(torch.from_numpy(x)).numpy()

    with torch.no_grad():
        logits = np.concatenate([run_windowed(run, x, window) for x in reference.inputs])
    return ReferenceSet(
        reference.inputs,
        reference.labels,
        reference.label_names,
        logits,
        window=window,
        whole_metric=reference.metric,
    )


def cropped_batch(inputs: Sequence[np.ndarray], size: int = DYNAMIC_CHECK_BATCH) -> np.ndarray | None:
    """The first ``size`` utterances cropped to their shortest length, made odd: (B, T, n_mels)."""
    if len(inputs) < 2:
        return None
    chosen = inputs[:size]
    length = min(x.shape[1] for x in chosen)
    length -= 1 - length % 2  # an odd length exercises the stride-2 padding
    if length < 3:
        return None
    return np.concatenate([x[:, :length] for x in chosen]).astype(np.float32)


@dataclass
class ParityResult:
    artifact: str  # the bundle path, e.g. models/ser.int8-dynamic.onnx
    label: str  # e.g. "onnx int8 (dynamic)"
    tolerance: Tolerance
    n: int
    max_abs_diff: float
    allowed: float
    reference_scale: float
    metric: float
    reference_metric: float
    top1_agreement: float
    dynamic: dict[str, Any] | None = None
    seconds: float = 0.0
    failures: list[str] = field(default_factory=list)
    output: str = "logits"
    reference: str = "PyTorch, whole utterances"
    whole_metric: float | None = None  # PyTorch on whole utterances, when the reference is windowed
    checked_with: str = ""  # the backend that ran the artifact
    # the artifact on the reference set the device checks it with (edgewise.export.reference)
    device_reference: dict[str, Any] | None = None

    @property
    def passed(self) -> bool:
        return not self.failures

    @property
    def metric_drop(self) -> float:
        return self.reference_metric - self.metric

    def to_manifest(self) -> dict[str, Any]:
        """The artifact's ``parity`` entry in the manifest."""
        return {
            "passed": self.passed,
            "output": self.output,
            "max_abs_diff": _finite(self.max_abs_diff),
            "tolerance": self.allowed,
            "atol": self.tolerance.atol,
            "rtol": self.tolerance.rtol,
            "split": "val",
            "utterances": self.n,
            "reference": self.reference,
            "checked_with": self.checked_with,
            f"pytorch_whole_{METRIC}": self.whole_metric
            if self.whole_metric is not None
            else self.reference_metric,
            "metric": METRIC,
            METRIC: self.metric,
            f"reference_{METRIC}": self.reference_metric,
            "max_metric_drop": self.tolerance.max_metric_drop,
            "top1_agreement": self.top1_agreement,
            "dynamic_shapes": (
                {**self.dynamic, "max_abs_diff": _finite(self.dynamic["max_abs_diff"])}
                if self.dynamic
                else None
            ),
            "failures": list(self.failures),
        }

    def describe(self) -> str:
        """Optimum-style lines: the artifact, then one line per check with [ok] or [FAIL]."""

        def mark(ok: bool) -> str:
            return "[ok]  " if ok else "[FAIL]"

        tol = self.tolerance
        scale = f" with max|ref| {self.reference_scale:.3g}" if tol.rtol else ""
        ran = f", run in {self.checked_with}" if self.checked_with else ""
        lines = [
            f"{self.label}: {self.artifact} vs {self.reference} on {self.n} validation utterances (batch 1{ran})",
            f"  {mark(self.max_abs_diff <= self.allowed)} output {self.output!r}: max |diff| "
            f"{self.max_abs_diff:.3g} (allowed {self.allowed:.3g}: {tol.describe()}{scale})",
            f"  {mark(self.metric_drop <= tol.max_metric_drop + 1e-12)} {METRIC.upper()} {self.metric:.4f} "
            f"vs PyTorch {self.reference_metric:.4f} (drop {100 * self.metric_drop:.2f} pt, allowed "
            f"{100 * tol.max_metric_drop:.2f} pt); top-1 agreement {100 * self.top1_agreement:.1f}%",
        ]
        if self.device_reference is not None:
            r = self.device_reference
            shown = (
                f"max |diff| {r['max_abs_diff']:.3g}" if r["max_abs_diff"] is not None else r.get("reason")
            )
            lines.append(
                f"  {mark(r['passed'])} device reference set {r['reference']} ({r['inputs']} inputs, "
                f"as the device fits them): {shown} (allowed {self.allowed:.3g})"
            )
        if self.dynamic is not None:
            d = self.dynamic
            shown = f"max |diff| {d['max_abs_diff']:.3g}" if d["max_abs_diff"] is not None else "wrong shape"
            lines.append(
                f"  {mark(d['passed'])} batch {d['batch']} x {d['frames']} frames: "
                f"{shown} (allowed {self.allowed:.3g})"
            )
        return "\n".join(lines)


def check_parity(
    runner: Runner,
    reference: ReferenceSet,
    tolerance: Tolerance,
    *,
    artifact: str,
    label: str,
    dynamic_shapes: bool = True,
) -> ParityResult:
    """Run ``runner`` on the reference inputs and grade it against the PyTorch logits and metric."""
    start = time.perf_counter()
    logits = np.concatenate([np.asarray(runner(x), dtype=np.float32) for x in reference.inputs])
    if logits.shape != reference.logits.shape:
        raise ExportError(f"{artifact}: logits of shape {logits.shape}, expected {reference.logits.shape}")
    diff = float(np.abs(logits - reference.logits).max())
    allowed = tolerance.allowed(reference.scale)
    result = ParityResult(
        artifact=artifact,
        label=label,
        tolerance=tolerance,
        n=len(reference.inputs),
        max_abs_diff=diff,
        allowed=allowed,
        reference_scale=reference.scale,
        metric=metric_of(logits, reference.labels, reference.label_names),
        reference_metric=reference.metric,
        top1_agreement=float(np.mean(logits.argmax(1) == reference.logits.argmax(1))),
        reference=reference.description,
        whole_metric=reference.whole_metric,
        checked_with=runner.describe() if hasattr(runner, "describe") else "",
    )
    if not np.isfinite(diff) or diff > allowed:
        result.failures.append(f"max |diff| of {result.output!r} {diff:.3g} > {allowed:.3g}")
    if result.metric_drop > tolerance.max_metric_drop + 1e-12:
        result.failures.append(
            f"{METRIC.upper()} dropped {100 * result.metric_drop:.2f} pt > "
            f"{100 * tolerance.max_metric_drop:.2f} pt"
        )
    if dynamic_shapes and reference.batch is not None:
        out = np.asarray(runner(reference.batch), dtype=np.float32)
        batch, frames = reference.batch.shape[:2]
        same_shape = out.shape == reference.batch_logits.shape
        batch_diff = float(np.abs(out - reference.batch_logits).max()) if same_shape else None
        ok = batch_diff is not None and bool(np.isfinite(batch_diff)) and batch_diff <= allowed
        result.dynamic = {
            "batch": int(batch),
            "frames": int(frames),
            "max_abs_diff": batch_diff,
            "passed": ok,
        }
        if not ok:
            shown = f"max |diff| {batch_diff:.3g}" if same_shape else f"output shape {out.shape}"
            result.failures.append(f"batch {batch} x {frames} frames: {shown}, allowed {allowed:.3g}")
    result.seconds = round(time.perf_counter() - start, 3)
    return result


def format_report(results: Sequence[ParityResult]) -> str:
    passed = sum(r.passed for r in results)
    head = f"parity gate: {passed} of {len(results)} artifacts within tolerance"
    return "\n".join([head, *(r.describe() for r in results)])
