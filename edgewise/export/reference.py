"""Reference sets for the device's parity check: every artifact gets one (``extra.reference``).

The device runs each artifact on a few inputs and compares with the merged PyTorch model's logits
(:mod:`edgewise.edge.reference`), so an ARM build of a runtime whose kernels disagree with x86 is
caught on the device itself. The expected logits are computed the way the device runs the
artifact, through the same fitting policy (:mod:`edgewise.edge.windows`):

* dynamic-shape artifacts (ONNX): whole utterances -> ``models/ser.reference.npz``;
* fixed-window artifacts (TFLite): the artifact's window and hop ->
  ``models/ser.reference.window-<frames>-<hop>.npz``;
* TensorRT: the engine's frame range (tiled up to its minimum) ->
  ``models/ser.reference.frames-<min>-<max>-<hop>.npz``.

Artifacts with the same policy share one file. The inputs are the same in every file: the first
validation utterance cropped to one window plus one hop (two windows for a fixed-window artifact),
the second cropped to :data:`MID_FRAMES`, and the first cropped to :data:`SHORT_FRAMES` (shorter
than any window and than TensorRT's minimum, so the tiling path is checked too). With 64 mels that
is about 150 KB per file at a 3 s window.

Each artifact is also run on its reference set here, in the runner of the parity gate (for
TensorRT: the ONNX it is built from, fitted to the engine's frame range); the result is recorded
as ``extra.reference.export_check`` (machine, max |diff|), the x86 side of the device's
comparison, and a miss beyond the artifact's tolerance fails the artifact's gate.

Graph reference sets (the TTS family: :func:`attach_graph_references`)
---------------------------------------------------------------------
A TTS bundle's three graphs take several named inputs and give several outputs, so each role gets a
*graph* reference set (``extra.reference.version`` 2, :class:`edgewise.edge.reference.GraphReferenceSet`),
one file per role (``models/<role>.reference.npz``) shared by its fp32 and int8 artifacts:

* ``tts_encoder``: the first :data:`GRAPH_SENTENCES` validation sentences' real ``ids`` (int64),
  ``boundary`` and ``last_word``;
* ``tts_flow``: per sentence its encoder output expanded by PyTorch's durations to a length that is
  not a multiple of the decoder's attention window (so the graph pads: at most two windows and a
  bit, :func:`graph_frames`), a noisy point ``x`` on the path to it at a time ``t``, plus one case
  shorter than a window;
* ``vocoder``: the mels PyTorch's flow makes from those (``steps`` Euler steps), denormalised,
  at most :data:`VOCODER_FRAMES` long (its outputs are ``n_fft / 2 + 1`` wide: about 0.35 MB).

Expected outputs are the merged PyTorch modules' (:func:`edgewise.export.tts.graphs`). Each output
has a comparison kind (``abs``; ``circular`` for the vocoder's ``phase``, an angle) and a tolerance
per precision, recorded in the artifact's ``extra.reference.outputs``:

* a fixed tolerance where the export gives one (fp32: ``GRAPH_ATOL``, 1e-3): the x86 check must
  meet it too, or the artifact fails its gate here;
* a measured one where it gives None (int8, whose dynamic quantization differs from PyTorch by up
  to about 0.45): :data:`MEASURED_FACTOR` x the x86 export check's max |diff| of that output plus
  :data:`MEASURED_FLOOR`, capped at pi for a circular output. A device whose kernels are as
  accurate as x86's stays well inside; one whose int8 kernels are wrong (garbage, not rounding)
  is far outside. The rule and the x86 figures are in ``extra.reference.tolerance_rule`` and
  ``export_check``.
"""

from __future__ import annotations

import math
import platform
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgewise.bundle import sha256_file
from edgewise.edge.reference import (
    GRAPH_REFERENCE,
    GraphReferenceSet,
    OutputCheck,
    ReferenceSet,
    write_graph_reference,
    write_reference,
)
from edgewise.edge.tensorrt import BuildSpec
from edgewise.edge.windows import FrameRange, Splitter, WindowSpec, run_windowed
from edgewise.export.errors import ExportError

MID_FRAMES = 100  # 1 s: inside TensorRT's profile, one tiled window at a longer fixed window
SHORT_FRAMES = 25  # 0.25 s: shorter than any window and TensorRT's 50-frame minimum


def policy_of(made: Any) -> Splitter | None:
    """How the device fits inputs to an artifact: None (whole utterances), its fixed window, or
    its TensorRT engine's frame range. ``made`` has ``variant`` and ``extra``."""
    if made.variant.row.manifest_format == "tensorrt-onnx":
        return BuildSpec.from_manifest(made.extra["tensorrt"]).frame_range
    if not made.variant.row.dynamic_shapes:
        return WindowSpec.from_dict(
            made.extra.get("window") or {}, where=f"{made.variant.label} extra.window"
        )
    return None


def reference_path(policy: Splitter | None, role: str = "ser") -> str:
    """The bundle path of the reference file for ``policy`` (one file per policy)."""
    if policy is None:
        return f"models/{role}.reference.npz"
    if isinstance(policy, WindowSpec):
        return f"models/{role}.reference.window-{policy.frames}-{policy.hop}.npz"
    if isinstance(policy, FrameRange):
        return f"models/{role}.reference.frames-{policy.min_frames}-{policy.max_frames}-{policy.hop}.npz"
    raise ExportError(f"reference set: no file name for the fitting policy {policy!r}")


def reference_inputs(inputs: Sequence[np.ndarray], window: WindowSpec) -> list[np.ndarray]:
    """Three (1, time, n_mels) inputs from the validation set: one window plus one hop long, 1 s,
    and 0.25 s (each at most as long as the utterance it is cut from)."""
    if not inputs:
        raise ExportError("reference set: no validation inputs for the device's parity check")
    first, second = inputs[0], inputs[min(1, len(inputs) - 1)]
    crops = [(first, window.frames + window.hop), (second, MID_FRAMES), (first, SHORT_FRAMES)]
    return [np.ascontiguousarray(x[:, :frames], dtype=np.float32) for x, frames in crops]


def expected_logits(model: Any, inputs: Sequence[np.ndarray], policy: Splitter | None) -> np.ndarray:
    """The merged PyTorch model's logits on ``inputs``, fitted by ``policy`` as on the device."""
    import torch

    model = model.eval()

    def run(x: np.ndarray) -> np.ndarray:
        return model(torch.from_numpy(np.ascontiguousarray(x))).numpy()

    with torch.no_grad():
        if policy is None:
            return np.concatenate([run(x) for x in inputs]).astype(np.float32)
        return np.concatenate([run_windowed(run, x, policy) for x in inputs]).astype(np.float32)


def _device_runner(made: Any, threads: int, policy: Splitter | None) -> Any:
    """The parity gate's runner for the artifact, run the way the device runs it."""
    window = policy if isinstance(policy, WindowSpec) else None
    runner = made.variant.row.runner(made.path, threads, made.variant, window)
    if isinstance(policy, FrameRange):  # TensorRT: the source ONNX in onnxruntime, fitted to the range

        def fitted(x: np.ndarray) -> np.ndarray:
            return run_windowed(runner, x, policy)

        return fitted, runner
    return runner, runner


def attach_references(
    model: Any,
    inputs: Sequence[np.ndarray],
    made: Sequence[Any],
    workdir: Path,
    window: WindowSpec,
    threads: int = 1,
    role: str = "ser",
) -> dict[str, Path]:
    """Write the reference files into ``workdir`` and record each in its artifact's ``extra``.

    ``made`` are the exported artifacts (``variant``, ``path``, ``extra``, ``parity`` a
    :class:`~edgewise.export.parity.ParityResult`). Returns bundle path -> file written, for
    :meth:`~edgewise.bundle.BundleWriter.add_file` (whose sha256 is the one recorded here, so the
    manifest's signature covers the files).
    """
    chosen = reference_inputs(inputs, window)
    files: dict[str, Path] = {}
    expected: dict[str, np.ndarray] = {}
    for art in made:
        policy = policy_of(art)
        rel = reference_path(policy, role)
        if rel not in files:
            expected[rel] = expected_logits(model, chosen, policy)
            files[rel] = write_reference(workdir / Path(rel).name, chosen, expected[rel])
        local = files[rel]
        check = _export_check(
            art, threads, policy, ReferenceSet(chosen, expected[rel], art.parity.allowed, rel)
        )
        art.extra["reference"] = {
            "path": rel,
            "sha256": sha256_file(local),
            "size_bytes": local.stat().st_size,
            "inputs": len(chosen),
            "frames": [int(x.shape[1]) for x in chosen],
            "fitting": describe_policy(policy),
            "expected": "PyTorch (merged) logits, inputs fitted as the device runs this artifact",
            "check": "on install the device runs the artifact on these inputs; beyond parity.tolerance "
            "it never runs it (INSTALL/parity.json)",
            "export_check": check,
        }
    return files


def describe_policy(policy: Splitter | None) -> str:
    if policy is None:
        return "whole utterances"
    if isinstance(policy, WindowSpec):
        return f"{policy.frames}-frame windows every {policy.hop} frames, tiled when shorter, logits averaged"
    return (
        f"{policy.min_frames}..{policy.max_frames} frames: tiled up to {policy.min_frames}, longer cut "
        f"every {policy.hop} frames, logits averaged"
    )


def _export_check(art: Any, threads: int, policy: Splitter | None, reference: ReferenceSet) -> dict[str, Any]:
    """The artifact on its reference set on this machine; a miss fails the artifact's gate."""
    run, runner = _device_runner(art, threads, policy)
    result = reference.compare(run)
    art.parity.device_reference = result
    if not result["passed"]:
        art.parity.failures.append(f"device reference set ({reference.source}): {result['reason']}")
    return {
        "machine": platform.machine(),
        "passed": result["passed"],
        "max_abs_diff": result["max_abs_diff"],
        "top1_agreement": result["top1_agreement"],
        "checked_with": runner.describe() if hasattr(runner, "describe") else "",
    }


# --------------------------------------------------------------------------------------------------
# Graph reference sets (several named inputs and outputs): the TTS family

GRAPH_SENTENCES = 2  # validation sentences per graph reference set (plus one short case)
MEASURED_FACTOR = 2.0  # a measured tolerance: this times the x86 export check's max |diff| ...
MEASURED_FLOOR = 0.05  # ... plus this (output units: normalised mel, log(1 + frames), log-magnitude)
VOCODER_FRAMES = 40  # the vocoder's cases are cropped to this (its outputs are n_fft / 2 + 1 wide)
CIRCULAR_OUTPUTS = ("phase",)  # outputs that are angles (radians), compared on the circle


@dataclass
class GraphReferences:
    """What :func:`attach_graph_references` made: ``extra`` (role -> precision -> the artifact's
    ``extra.reference``), ``files`` (bundle path -> file written), and ``failures`` (one line per
    artifact whose x86 export check missed its tolerance, ``"<role> <precision>: ..."``)."""

    extra: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    files: dict[str, Path] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)

    def report(self) -> dict[str, dict[str, Any]]:
        """role -> precision -> the x86 export check (for the export's report)."""
        return {
            role: {precision: ref["export_check"] for precision, ref in by_precision.items()}
            for role, by_precision in self.extra.items()
        }

    def add_to(self, writer: Any) -> None:
        """Copy the files into the bundle (:meth:`~edgewise.bundle.BundleWriter.add_file`); the
        sha256 each artifact records must be the copy's, or the export stops."""
        for rel, local in self.files.items():
            _size, digest = writer.add_file(local, rel)
            recorded = {
                ref["sha256"] for by in self.extra.values() for ref in by.values() if ref["path"] == rel
            }
            if recorded != {digest}:
                raise ExportError(f"{rel}: the reference set changed while the bundle was written")


def graph_frames(window: int, total: int, k: int) -> int:
    """The frames of the ``k``-th sentence's flow/vocoder case: its length under PyTorch's
    durations, capped at two attention windows and a bit, never a multiple of ``window`` (the
    decoder pads to one) and never shorter than one window and a frame."""
    frames = min(max(total, window + 1 + k), 2 * window + window // 3 + k)
    return frames - 1 if frames % window == 0 else frames


def short_frames(window: int) -> int:
    """The short case: shorter than one attention window."""
    return max(3, window // 2 - 1)


def graph_cases(
    modules: dict[str, Any],
    sentences: Sequence[Any],
    *,
    mel_mean: np.ndarray,
    mel_std: np.ndarray,
    window: int,
    steps: int = 2,
    seed: int = 0,
) -> dict[str, list[dict[str, np.ndarray]]]:
    """role -> the inputs of each case, by the graph's input names (see the module docstring)."""
    import torch

    if not sentences:
        raise ExportError("graph reference set: no validation sentences for the device's parity check")
    rng = np.random.default_rng(seed)
    encoder: list[dict[str, np.ndarray]] = []
    mels: list[np.ndarray] = []  # per case: the normalised mel the flow works towards, (frames, n_mels)
    for k, s in enumerate(sentences[:GRAPH_SENTENCES]):
        case = {
            "ids": np.asarray(s.ids, dtype=np.int64)[None],
            "boundary": np.asarray(s.boundary, dtype=np.float32)[None],
            "last_word": np.asarray(s.last, dtype=np.float32)[None],
        }
        encoder.append(case)
        with torch.no_grad():
            mu, logd = modules["tts_encoder"](*(torch.from_numpy(x) for x in case.values()))
        durations = np.round(np.clip(np.exp(logd[0].numpy()) - 1.0, 0, None)).astype(np.int64)
        mu = mu[0].numpy()
        frames = graph_frames(window, int(durations.sum()), k)
        expanded = np.repeat(mu, durations, axis=0)
        if len(expanded) < frames:  # a barely trained duration predictor: spread the ids evenly
            expanded = np.repeat(mu, -(-frames // len(mu)), axis=0)
        mels.append(expanded[:frames])
    mels.append(mels[0][: short_frames(window)])
    flow: list[dict[str, np.ndarray]] = []
    vocoder: list[dict[str, np.ndarray]] = []
    times = (0.5, 0.2, 0.8)
    for k, mu_y in enumerate(mels):
        z = rng.standard_normal(mu_y.shape).astype(np.float32)
        t = times[k % len(times)]
        x_t = ((1 - t) * z + t * mu_y).astype(np.float32)
        flow.append({"x": x_t[None], "mu": mu_y[None].astype(np.float32), "t": np.full((1,), t, np.float32)})
        x = z
        with torch.no_grad():  # PyTorch's own mel for this mu: a few Euler steps of the flow
            for i in range(steps):
                v = modules["tts_flow"](
                    torch.from_numpy(x[None]), torch.from_numpy(mu_y[None]), torch.full((1,), i / steps)
                )
                x = (x + v[0].numpy() / steps).astype(np.float32)
        mel = (x[:VOCODER_FRAMES] * mel_std + mel_mean).astype(np.float32)
        vocoder.append({"mel": mel[None]})
    return {"tts_encoder": encoder, "tts_flow": flow, "vocoder": vocoder}


def expected_outputs(
    module: Any, cases: Sequence[dict[str, np.ndarray]], names: Sequence[str]
) -> list[dict[str, np.ndarray]]:
    """The merged PyTorch module's outputs on each case, by the graph's output names."""
    import torch

    out = []
    with torch.no_grad():
        for case in cases:
            y = module(*(torch.from_numpy(np.ascontiguousarray(x)) for x in case.values()))
            y = y if isinstance(y, tuple) else (y,)
            if len(y) != len(names):
                raise ExportError(
                    f"graph reference set: the module gives {len(y)} outputs, the graph {list(names)}"
                )
            out.append({name: t.numpy().astype(np.float32) for name, t in zip(names, y)})
    return out


def measured_tolerance(diff: float, compare: str) -> float:
    """The tolerance of an output whose precision has no fixed one (int8): see the module docstring."""
    tol = MEASURED_FACTOR * diff + MEASURED_FLOOR
    return min(tol, math.pi) if compare == "circular" else tol


def attach_graph_references(
    modules: dict[str, Any],
    files: dict[str, dict[str, Path]],
    sentences: Sequence[Any],
    workdir: Path,
    *,
    mel_mean: np.ndarray | None = None,
    mel_std: np.ndarray | None = None,
    window: int | None = None,
    atol: dict[str, float | None],
    threads: int = 1,
    steps: int = 2,
    circular: Collection[str] = CIRCULAR_OUTPUTS,
    open_graph: Callable[[str, Path], Any] | None = None,
    cases: dict[str, list[dict[str, np.ndarray]]] | None = None,
) -> GraphReferences:
    """Reference sets for multi-input, multi-output graphs, and their check on this machine.

    ``modules``: role -> merged PyTorch module (:func:`edgewise.export.tts.graphs`); ``files``:
    precision -> role -> the exported ONNX graph (a precision may lack a role); ``sentences``: validation sentences (``ids``,
    ``boundary``, ``last``); ``mel_mean``/``mel_std``: the acoustic model's mel statistics (the
    vocoder takes raw mels); ``window``: the decoder's attention window; ``atol``: precision -> a
    fixed tolerance, or None for one measured here (module docstring). One file per role is
    written into ``workdir``; every artifact is run on its set here, as the device runs it
    (``open_graph(role, path)``; default onnxruntime with ``threads`` and named inputs), and a
    miss beyond a fixed tolerance is a failure. ``files`` may be keyed by any voice name that
    ``atol`` has (``tflite-fp32``); ``extra`` is keyed the same way.
    Returns a :class:`GraphReferences`: merge ``extra[role][precision]`` into the artifact's
    ``extra["reference"]`` and call :meth:`GraphReferences.add_to` with the bundle writer.
    ``cases`` (role -> the inputs of each case, by input name) replaces the TTS cases of
    :func:`graph_cases` for another family's graphs (the recommender's); the mel statistics and
    the window are then not needed.
    """
    from edgewise.edge.backends import OnnxBackend

    if open_graph is None:

        def open_graph(role: str, path: Path) -> Any:
            return OnnxBackend(path, threads, single_io=False)

    unknown = sorted(set(files) - set(atol))
    if unknown:
        raise ExportError(f"graph reference set: no tolerance rule for precision(s) {unknown}")
    if cases is None:
        if mel_mean is None or mel_std is None or window is None:
            raise ExportError("graph reference set: TTS cases need mel_mean, mel_std and window")
        cases = graph_cases(
            modules, sentences, mel_mean=mel_mean, mel_std=mel_std, window=window, steps=steps
        )
    made = GraphReferences()
    present = list(dict.fromkeys(role for by_role in files.values() for role in by_role))
    for role in present:
        if role not in cases:
            raise ExportError(f"graph reference set: no inputs for the graph {role!r}")
        graph = next(by_role[role] for by_role in files.values() if role in by_role)
        probe = open_graph(role, graph)
        names = list(probe.output_names)
        if sorted(cases[role][0]) != sorted(probe.input_names):
            raise ExportError(
                f"graph reference set: {graph.name} takes {probe.input_names}, the cases give "
                f"{list(cases[role][0])}"
            )
        expected = expected_outputs(modules[role], cases[role], names)
        rel = f"models/{role}.reference.npz"
        local = write_graph_reference(workdir / Path(rel).name, cases[role], expected)
        digest = sha256_file(local)
        compares = {name: "circular" if name in circular else "abs" for name in names}
        for precision, by_role in files.items():
            if role not in by_role:  # e.g. no int8 encoder: that voice runs the fp32 graph
                continue
            backend = open_graph(role, by_role[role])
            fixed = atol[precision]
            probe_set = GraphReferenceSet(
                cases[role], expected, [OutputCheck(n, fixed or 0.0, compares[n]) for n in names], rel, digest
            )
            check = probe_set.compare(backend)
            diffs = {n: check["outputs"].get(n, {}).get("max_abs_diff") for n in names}
            if fixed is None:  # measured: a margin over what x86 gives (a broken check fails below)
                # (no diff: a wrong shape or not finite; the check below fails it for that reason)
                checks = [
                    OutputCheck(n, measured_tolerance(diffs[n] or 0.0, compares[n]), compares[n])
                    for n in names
                ]
                check = GraphReferenceSet(cases[role], expected, checks, rel, digest).compare(backend)
                rule = (
                    f"measured: {MEASURED_FACTOR:g} x the x86 export check's max |diff| + {MEASURED_FLOOR:g}"
                    + (
                        " (at most pi on the circle)"
                        if any(c == "circular" for c in compares.values())
                        else ""
                    )
                )
            else:
                checks = [OutputCheck(n, float(fixed), compares[n]) for n in names]
                rule = f"fixed: {fixed:g} for {precision} (the export's per-graph tolerance)"
            if not check["passed"]:
                made.failures.append(f"{role} {precision}: device reference set ({rel}): {check['reason']}")
            made.extra.setdefault(role, {})[precision] = {
                "version": GRAPH_REFERENCE,
                "path": rel,
                "sha256": digest,
                "size_bytes": local.stat().st_size,
                "cases": len(cases[role]),
                "inputs": [{"name": k, "dtype": str(v.dtype)} for k, v in cases[role][0].items()],
                "lengths": check["lengths"],
                "outputs": [c.to_dict() for c in checks],
                "tolerance_rule": rule,
                "expected": "PyTorch (merged module) outputs on these inputs",
                "check": "on install the device runs the artifact on these inputs; an output beyond its "
                "tolerance and it never runs it (INSTALL/parity.json)",
                "export_check": {
                    "machine": platform.machine(),
                    "passed": check["passed"],
                    "max_abs_diff": check["max_abs_diff"],
                    "worst_output": check["worst_output"],
                    "outputs": {n: {"max_abs_diff": d} for n, d in diffs.items()},
                    "checked_with": backend.describe(),
                },
            }
        made.files[rel] = local
    return made
