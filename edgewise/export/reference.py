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
"""

from __future__ import annotations

import platform
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgewise.bundle import sha256_file
from edgewise.edge.reference import ReferenceSet, write_reference
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
