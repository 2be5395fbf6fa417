"""Open a bundle on a device: verify it, pick the artifact and backend the device profile prefers.

    runtime = ModelRuntime.open(bundle_path, profile, role="classifier", public_key=None)
    logits = runtime.backend(features)          # (batch, time, n_mels) -> (batch, classes)
    runtime.choice, runtime.skipped             # what runs, and why each better choice did not

The profile's ``runtimes`` are tried in order; a preference is skipped, with the reason logged and
kept in ``skipped``, when the bundle has no such artifact, its parity gate failed at export or
on this device when the bundle was installed (``INSTALL/parity.json``, see
:mod:`edgewise.edge.reference`), or its runtime is not installed or cannot load it here (no
TensorRT, no GPU provider, a broken file, a TensorRT engine that fails to build or does not match
the bundle's reference outputs). Falling back is
normal (a Jetson without onnxruntime-gpu runs the CPU build); running nothing is an error that
lists every reason.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgewise.bundle import ArtifactEntry, Bundle, load_bundle
from edgewise.devices import DeviceProfile, RuntimeChoice
from edgewise.edge.backends import BackendError, LiteRTBackend, LiteRTGraph, OnnxBackend
from edgewise.edge.reference import DEVICE_PARITY, describe_result, failed_on_device
from edgewise.edge.windows import WindowSpec
from edgewise.errors import EdgewiseError, MissingDependencyError

log = logging.getLogger(__name__)


class NoRunnableArtifact(EdgewiseError):
    """None of the profile's preferences can run this bundle here."""


def matching_artifacts(bundle: Bundle, role: str, choice: RuntimeChoice) -> list[ArtifactEntry]:
    return [
        a
        for a in bundle.artifacts(role, format=choice.format, precision=choice.precision)
        if choice.quant is None or a.quant == choice.quant
    ]


def open_backend(
    bundle: Bundle,
    art: ArtifactEntry,
    choice: RuntimeChoice,
    threads: int,
    engine_dir: Path | None = None,
    single_io: bool = True,
) -> Any:
    """The backend for one artifact; raises MissingDependencyError/BackendError when it cannot run."""
    path = bundle.artifact_path(art)
    if art.format == "onnx":
        return OnnxBackend(path, threads, providers=choice.providers, single_io=single_io)
    if art.format == "tflite" and not single_io:  # a fixed-length graph with named inputs (tts)
        return LiteRTGraph(path, threads, **fixed_graph_spec(art), precision=art.precision, quant=art.quant)
    if art.format == "tflite":
        window = WindowSpec.from_dict(art.extra.get("window") or {}, where=f"{art.path} extra.window")
        return LiteRTBackend(path, threads, window, precision=art.precision, quant=art.quant)
    if art.format == "tensorrt-onnx":
        from edgewise.edge.tensorrt import open_tensorrt

        # built, checked against the bundle's reference set and cached; any refusal is a BackendError
        return open_tensorrt(bundle, art, engine_dir or bundle.root.parent / "engines")
    raise BackendError(f"{art.path}: no backend for format {art.format!r}")


def fixed_graph_spec(art: ArtifactEntry) -> dict[str, Any]:
    """A fixed-length TFLite graph's ``extra.graph``: its inputs and outputs in order, frames, the
    mask input, tiling context and alignment (:class:`~edgewise.edge.backends.LiteRTGraph`)."""
    spec = art.extra.get("graph")
    try:
        return {
            "inputs": [str(n) for n in spec["inputs"]],
            "outputs": [str(n) for n in spec["outputs"]],
            "frames": int(spec["frames"]),
            "mask_input": str(spec["mask_input"]),
            "context": int(spec.get("context", 0)),
            "align": int(spec.get("align", 1)),
        }
    except (KeyError, TypeError, ValueError) as exc:
        raise BackendError(
            f"{art.path}: extra.graph is missing or malformed ({exc!r}); expected inputs, outputs, "
            "frames and mask_input"
        ) from None


@dataclass
class ModelRuntime:
    bundle: Bundle
    role: str
    artifact: ArtifactEntry
    choice: RuntimeChoice
    backend: Any
    skipped: list[str] = field(default_factory=list)

    @classmethod
    def open(
        cls,
        bundle: str | Path | Bundle,
        profile: DeviceProfile,
        *,
        role: str = "classifier",
        public_key: str | Path | None = None,
        threads: int | None = None,
        engine_dir: Path | None = None,
        single_io: bool = True,
    ) -> ModelRuntime:
        if not isinstance(bundle, Bundle):
            bundle = load_bundle(bundle, public_key=public_key)
        bundle.model(role)  # a clear error when the role is missing
        threads = threads or profile.threads
        skipped: list[str] = []
        failed_here = failed_on_device(bundle)  # INSTALL/parity.json: the check at install
        for choice in profile.runtimes_for(bundle.manifest.task):
            candidates = matching_artifacts(bundle, role, choice)
            if not candidates:
                skipped.append(f"{choice.describe()}: not in the bundle")
                continue
            for art in candidates:
                if art.parity.get("passed") is False:
                    skipped.append(f"{choice.describe()} ({art.path}): failed its parity gate at export")
                    continue
                if art.path in failed_here:
                    result = failed_here[art.path]
                    skipped.append(
                        f"{choice.describe()} ({art.path}): failed the device parity check at install on "
                        f"{result.get('machine') or 'this machine'} ({DEVICE_PARITY}): {describe_result(result)}"
                    )
                    continue
                try:
                    backend = open_backend(bundle, art, choice, threads, engine_dir, single_io)
                except (MissingDependencyError, BackendError) as exc:
                    skipped.append(f"{choice.describe()} ({art.path}): {exc}")
                    if isinstance(exc, BackendError):  # present but refused: worth a warning now
                        log.warning(
                            "%s: cannot run %s, trying the next preference: %s", profile.name, art.path, exc
                        )
                    continue
                for reason in skipped:
                    log.info("%s: passed over %s", profile.name, reason)
                log.info("%s: running %s with %s", profile.name, art.path, backend.describe())
                return cls(bundle, role, art, choice, backend, skipped)
        have = ", ".join(f"{a.format} {a.precision}" for a in bundle.artifacts(role)) or "none"
        raise NoRunnableArtifact(
            f"{bundle.root.name}: nothing in this bundle runs on {profile.name} (bundle has: {have}):\n  "
            + "\n  ".join(skipped)
        )

    def describe(self) -> dict[str, Any]:
        return {
            "artifact": self.artifact.path,
            "format": self.artifact.format,
            "precision": self.artifact.precision,
            "backend": self.backend.describe(),
            "skipped": list(self.skipped),
        }
