"""Reference sets: what each artifact must compute, checked on the device that runs it.

A bundle carries, for every artifact it derives from the trained model, a small reference set
(``extra.reference`` of the artifact: ``{path, sha256, size_bytes, inputs, frames, ...}``, the
``.npz`` file in the bundle bound by its sha256, so the manifest's signature covers it). The file
holds a few normalized validation inputs (``input_0`` .. ``input_{n-1}``, (1, time, n_mels) each,
one shorter than any window) and ``logits``: the merged PyTorch model's, computed the way the device
runs that artifact (whole utterances for dynamic shapes, the artifact's windows for TFLite, the
engine's frame range for TensorRT). Artifacts that need the same expected logits share one file.

ARM builds of onnxruntime and LiteRT run other kernels than the x86 builds the export gate ran,
so the device checks each artifact it can load against its reference set when a bundle is
installed (:func:`check_artifacts`, :func:`device_parity`); the result is kept beside the install
(``INSTALL/parity.json``, :data:`DEVICE_PARITY`) and the runtime never picks an artifact that
failed there (:func:`failed_on_device`). TensorRT engines are checked the same way right after they
are built (:mod:`edgewise.edge.tensorrt`).

numpy only (no torch): the device imports this module.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import io
import json
import logging
import os
import platform
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

import numpy as np

from edgewise.bundle import MANIFEST_NAME, sha256_file
from edgewise.edge.backends import BackendError
from edgewise.errors import EdgewiseError, MissingDependencyError
from edgewise.fsutil import atomic_path, write_text_atomic

if TYPE_CHECKING:
    from edgewise.bundle import ArtifactEntry, Bundle
    from edgewise.devices import DeviceProfile, RuntimeChoice

log = logging.getLogger(__name__)

REFERENCE_LOGITS = "logits"  # the .npz holds input_0 .. input_{n-1} and this array
NOT_CHECKED = "not checked (bundle has no reference set)"
NO_ARTIFACT_REFERENCE = "not checked (no reference set for this artifact)"
DEVICE_PARITY = "parity.json"  # INSTALL/parity.json: the device's check of an installed bundle
RECORD_VERSION = 1
# the distributions whose kernels compute an artifact's logits, per manifest runtime
RUNTIME_DISTRIBUTIONS = {
    "onnxruntime": ("onnxruntime", "onnxruntime-gpu"),
    "litert": ("ai-edge-litert", "tflite-runtime"),
    "tensorrt": ("tensorrt", "tensorrt-cu12", "tensorrt-libs"),
}
NO_TENSORRT = (
    "TensorRT is not available on this machine (a tensorrt-onnx artifact is checked against its "
    "reference set when its engine is built on a GPU)"
)


class ReferenceSetError(BackendError):
    """A reference set that cannot be read or trusted (missing, altered, malformed)."""


def error_line(exc: BaseException) -> str:
    """``Type: first line of the message`` (the TensorRT builder and the checks quote it)."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


def write_reference(path: str | Path, inputs: list[np.ndarray], logits: np.ndarray) -> Path:
    """``inputs`` ((1, time, n_mels) each) and their expected ``logits`` (n, classes) as a .npz."""
    if not inputs or len(inputs) != len(logits):
        raise ValueError(f"reference: {len(inputs)} inputs for {len(logits)} rows of logits")
    arrays = {f"input_{i}": np.asarray(x, dtype=np.float32) for i, x in enumerate(inputs)}
    arrays[REFERENCE_LOGITS] = np.asarray(logits, dtype=np.float32)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    with atomic_path(path) as tmp:
        Path(tmp).write_bytes(buf.getvalue())
    return Path(path)


def read_reference(path: str | Path) -> tuple[list[np.ndarray], np.ndarray]:
    """The inputs and logits of :func:`write_reference`; a malformed file is a ReferenceSetError."""
    try:
        with np.load(path, allow_pickle=False) as data:
            logits = np.asarray(data[REFERENCE_LOGITS], dtype=np.float32)
            inputs = [np.asarray(data[f"input_{i}"], dtype=np.float32) for i in range(len(logits))]
    except Exception as exc:  # zipfile, KeyError, ValueError: a broken or foreign file
        raise ReferenceSetError(f"{path}: not a reference set ({error_line(exc)})") from None
    if logits.ndim != 2 or any(x.ndim != 3 or x.shape[0] != 1 for x in inputs):
        raise ReferenceSetError(f"{path}: expected (1, time, n_mels) inputs and (n, classes) logits")
    return inputs, logits


@dataclass
class ReferenceSet:
    """Inputs and expected logits from the bundle, and the tolerance an artifact must meet on them.

    ``sha256`` identifies the set: the file's, as the manifest records it (:meth:`from_artifact`),
    or else one computed from the arrays.
    """

    inputs: list[np.ndarray]
    logits: np.ndarray
    tolerance: float
    source: str
    sha256: str = ""

    def __post_init__(self) -> None:
        if not self.sha256:
            digest = hashlib.sha256()
            for array in [*self.inputs, self.logits]:
                array = np.ascontiguousarray(array, dtype=np.float32)
                digest.update(repr(array.shape).encode())
                digest.update(array.tobytes())
            self.sha256 = digest.hexdigest()

    @classmethod
    def from_artifact(cls, bundle: Bundle, art: ArtifactEntry) -> ReferenceSet | None:
        """The artifact's ``extra.reference``, its file checked against the recorded sha256 and size.

        None when the artifact carries no reference (bundles from before the device check, the
        third-party VAD model). Anything else wrong is a :class:`ReferenceSetError`.
        """
        ref = art.extra.get("reference")
        if ref is None:
            return None
        where = f"{art.path} extra.reference"
        if not isinstance(ref, dict) or not isinstance(ref.get("path"), str) or "sha256" not in ref:
            raise ReferenceSetError(f"{where}: expected {{path, sha256, size_bytes}}, got {ref!r}")
        rel = PurePosixPath(ref["path"])
        path = bundle.root / rel
        if rel.is_absolute() or ".." in rel.parts or not path.resolve().is_relative_to(bundle.root.resolve()):
            raise ReferenceSetError(f"{where}: path {ref['path']!r} leaves the bundle")
        if not path.is_file():
            raise ReferenceSetError(f"{path}: the reference set named by {where} is missing")
        if "size_bytes" in ref and path.stat().st_size != ref["size_bytes"]:
            raise ReferenceSetError(
                f"{path}: size mismatch: {where} says {ref['size_bytes']} bytes, file has {path.stat().st_size}"
            )
        actual = sha256_file(path)
        if actual != ref["sha256"]:
            raise ReferenceSetError(
                f"{path}: sha256 mismatch: {where} says {ref['sha256']}, file has {actual}"
            )
        tolerance = art.parity.get("tolerance")
        if not isinstance(tolerance, (int, float)) or tolerance < 0:
            raise ReferenceSetError(
                f"{art.path}: parity.tolerance is {tolerance!r}; the artifact cannot be checked"
            )
        inputs, logits = read_reference(path)
        return cls(inputs, logits, float(tolerance), str(ref["path"]), actual)

    def run(self, backend: Any) -> np.ndarray:
        """The backend's logits on every input, batch 1 each, as the device runs it: (n, classes)."""
        return np.concatenate([np.asarray(backend(x), dtype=np.float32) for x in self.inputs])

    def compare(self, backend: Any) -> dict[str, Any]:
        """Run the inputs through ``backend`` and grade it: ``passed``, ``max_abs_diff`` (None when
        the shape is wrong or the output not finite), ``tolerance``, ``top1_agreement``, and
        ``reason`` when it failed. Exceptions from the backend propagate."""
        got = self.run(backend)
        result: dict[str, Any] = {
            "passed": False,
            "max_abs_diff": None,
            "tolerance": self.tolerance,
            "inputs": len(self.inputs),
            "frames": [int(x.shape[1]) for x in self.inputs],
            "top1_agreement": None,
            "reference": self.source,
            "reference_sha256": self.sha256,
        }
        if got.shape != self.logits.shape:
            result["reason"] = f"logits of shape {got.shape} on {self.source}, expected {self.logits.shape}"
            return result
        diff = float(np.abs(got - self.logits).max())
        result["top1_agreement"] = float(np.mean(got.argmax(1) == self.logits.argmax(1)))
        if not np.isfinite(diff):
            result["reason"] = f"logits are not finite on {self.source}"
            return result
        result["max_abs_diff"] = diff
        if diff > self.tolerance:
            result["reason"] = (
                f"logits differ from the bundle's reference ({self.source}, {len(self.inputs)} inputs) "
                f"by {diff:.3g} > {self.tolerance:.3g}, the artifact's tolerance"
            )
            return result
        result["passed"] = True
        return result


# --------------------------------------------------------------------------------------------------
# The device check: every artifact this device can load, against its reference set


def runtime_versions() -> dict[str, str]:
    """Versions of the packages whose kernels compute the logits here (the installed ones)."""
    versions = {"python": platform.python_version()}
    names = ["numpy", *(d for dists in RUNTIME_DISTRIBUTIONS.values() for d in dists)]
    for dist in names:
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def _runtime_version(runtime: str, versions: dict[str, str]) -> str | None:
    for dist in RUNTIME_DISTRIBUTIONS.get(runtime, ()):
        if dist in versions:
            return f"{dist} {versions[dist]}"
    return None


def choice_for(profile: DeviceProfile | None, role: str, art: ArtifactEntry) -> tuple[RuntimeChoice, bool]:
    """How the runtime would run ``art`` (the profile's preference for it, if any) and whether the
    profile prefers it at all; outside the profile the artifact runs on the CPU providers."""
    from edgewise.devices import RuntimeChoice

    for choice in profile.runtimes if profile is not None else ():
        if (
            choice.format == art.format
            and choice.precision == art.precision
            and (choice.quant is None or choice.quant == art.quant)
        ):
            return choice, True
    return RuntimeChoice(format=art.format, precision=art.precision, quant=art.quant), False


_LITERT_NOTICE = "INFO: Created TensorFlow Lite XNNPACK delegate"


@contextlib.contextmanager
def _filtered_native_stderr() -> Iterator[None]:
    """Hold what native code writes to fd 2 and pass it on afterwards without LiteRT's
    once-per-process "Created TensorFlow Lite XNNPACK delegate" notice, which would otherwise land
    in the middle of edge-deploy's output (and its stderr, which scripts read)."""
    try:
        sys.stderr.flush()
        # in memory, not a file in the temp dir (a deploy leaves the system temp dir untouched)
        held_fd = os.memfd_create("edgewise-stderr")
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):  # no fd 2 or no memfd here: nothing to filter
        yield
        return
    with open(held_fd, "rb") as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        finally:
            with contextlib.suppress(OSError, ValueError):
                sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            held.seek(0)
            text = held.read().decode(errors="replace")
            kept = [line for line in text.splitlines(keepends=True) if not line.startswith(_LITERT_NOTICE)]
            if kept:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()


def check_artifact(
    bundle: Bundle,
    art: ArtifactEntry,
    choice: RuntimeChoice,
    threads: int,
    engine_dir: Path | None = None,
) -> dict[str, Any]:
    """Load one artifact with the runtime's backend and compare it with its reference set.

    ``status`` is ``passed``, ``failed`` (``reason`` says by how much, or what broke), ``skipped``
    (this machine cannot load it: ``reason``) or ``not checked`` (no reference set).
    """
    from edgewise.edge.tensorrt import tensorrt_available

    try:
        reference = ReferenceSet.from_artifact(bundle, art)
    except ReferenceSetError as exc:
        return {"status": "failed", "passed": False, "reason": f"reference set refused: {exc}"}
    if reference is None:
        return {"status": "not checked", "passed": None, "reason": NO_ARTIFACT_REFERENCE}
    if art.format == "tensorrt-onnx" and not tensorrt_available():
        return {"status": "skipped", "passed": None, "reason": NO_TENSORRT, "tolerance": reference.tolerance}
    start = time.perf_counter()
    with _filtered_native_stderr() if art.format == "tflite" else contextlib.nullcontext():
        result = _run_reference(bundle, art, choice, threads, engine_dir, reference)
    result.setdefault("seconds", round(time.perf_counter() - start, 3))
    return result


def _run_reference(
    bundle: Bundle,
    art: ArtifactEntry,
    choice: RuntimeChoice,
    threads: int,
    engine_dir: Path | None,
    reference: ReferenceSet,
) -> dict[str, Any]:
    """Open the artifact with the runtime's backend and compare it with ``reference``."""
    from edgewise.edge.runtime import open_backend

    try:
        backend = open_backend(bundle, art, choice, threads, engine_dir)
    except MissingDependencyError as exc:
        return {"status": "skipped", "passed": None, "reason": str(exc), "tolerance": reference.tolerance}
    except (BackendError, EdgewiseError) as exc:
        # not a wrong answer: a busy GPU, a provider that failed to start, a build that timed out
        # may work at the next open, which the runtime tries (and the health check judges); only
        # logits outside the tolerance fail an artifact for good
        return {
            "status": "skipped",
            "passed": None,
            "reason": f"could not load it here now: {exc}",
            "tolerance": reference.tolerance,
        }
    try:
        result = reference.compare(backend)
    except Exception as exc:  # the runtime failed on the reference inputs: the artifact fails here
        return {
            "status": "failed",
            "passed": False,
            "reason": f"running the reference set failed: {error_line(exc)}",
        }
    finally:
        close = getattr(backend, "close", None)
        if callable(close):
            close()
    result["status"] = "passed" if result["passed"] else "failed"
    result["backend"] = backend.describe() if hasattr(backend, "describe") else type(backend).__name__
    return result


def check_artifacts(
    bundle: Bundle,
    profile: DeviceProfile | None = None,
    threads: int | None = None,
    *,
    engine_dir: Path | None = None,
) -> dict[str, dict[str, Any]]:
    """Check every artifact of ``bundle`` this machine can load against its reference set.

    Returns, per artifact path: ``status`` (passed | failed | skipped | not checked), ``passed``
    (True, False or None when not run), ``max_abs_diff``, ``tolerance``, ``top1_agreement``,
    ``inputs``, ``reason`` (unless passed), ``machine`` (``platform.machine()``), ``runtime`` (the
    package and version that ran it), ``backend``, ``role``, ``in_profile`` (the profile prefers
    this artifact), ``export`` (the same check on the exporting machine, from the manifest). The
    backends are the runtime's own (:func:`edgewise.edge.runtime.open_backend`), with the
    profile's providers; torch is never imported.
    """
    machine = platform.machine()
    versions = runtime_versions()
    threads = threads or (profile.threads if profile is not None else 1)
    results: dict[str, dict[str, Any]] = {}
    for role in bundle.manifest.models:
        for art in bundle.artifacts(role):
            choice, preferred = choice_for(profile, role, art)
            result = check_artifact(bundle, art, choice, threads, engine_dir)
            if isinstance(result.get("reason"), str):  # paths inside the bundle, wherever it was checked
                result["reason"] = result["reason"].replace(f"{bundle.root}/", "")
            ref = art.extra.get("reference")
            results[art.path] = {
                "role": role,
                "format": art.format,
                "precision": art.precision,
                "quant": art.quant,
                "in_profile": preferred,
                "export_gate_passed": art.parity.get("passed"),
                **result,
                "machine": machine,
                "runtime": _runtime_version(art.runtime, versions),
                "export": ref.get("export_check") if isinstance(ref, dict) else None,
            }
    return results


def refusal(bundle: Bundle, results: dict[str, dict[str, Any]], profile: DeviceProfile | None) -> str | None:
    """Why the bundle must not be installed on this device, or None.

    Refused when, for a model role, among the artifacts the profile could run (every artifact of
    the role without a profile; never those that failed their gate at export), at least one failed
    here and none passed or went unchecked: then the runtime would have nothing it may run for that
    role. Artifacts this machine cannot load (no TensorRT, no LiteRT) count neither way.
    """
    failed: list[str] = []
    for role in bundle.manifest.models:
        candidates = [
            path
            for path, r in results.items()
            if r.get("role") == role
            and r.get("export_gate_passed") is not False
            and (profile is None or r.get("in_profile"))
        ]
        usable = [p for p in candidates if results[p]["status"] in ("passed", "not checked")]
        if not usable:
            failed += [p for p in candidates if results[p]["status"] == "failed"]
    if not failed:
        return None
    where = profile.name if profile is not None else "this device"
    details = "; ".join(f"{p}: {describe_result(results[p])}" for p in failed)
    return (
        f"every artifact {where} could run fails the device parity check on this {platform.machine()} "
        f"machine: {details}"
    )


def device_parity(
    bundle: Bundle,
    profile: DeviceProfile | None = None,
    threads: int | None = None,
    *,
    engine_dir: Path | None = None,
) -> dict[str, Any]:
    """The record kept as ``INSTALL/parity.json``: :func:`check_artifacts` with what it ran on.

    ``verdict`` is ``ok`` (something the profile runs passed or is unchecked), ``refused`` (see
    :func:`refusal`, whose message is ``refused``) or ``not checked`` (no artifact has a reference
    set: a bundle from before the device check).
    """
    t0 = time.perf_counter()
    results = check_artifacts(bundle, profile, threads, engine_dir=engine_dir)
    has_reference = any(isinstance(a.extra.get("reference"), dict) for a in bundle.artifacts())
    refused = refusal(bundle, results, profile) if has_reference else None
    return {
        "version": RECORD_VERSION,
        "bundle": f"{bundle.manifest.name}/{bundle.manifest.version}",
        "manifest_sha256": sha256_file(bundle.root / MANIFEST_NAME),
        "checked_at": round(time.time(), 3),
        "seconds": round(time.perf_counter() - t0, 3),
        "machine": platform.machine(),
        "platform": platform.platform(),
        "profile": profile.name if profile is not None else None,
        "runtimes": runtime_versions(),
        "verdict": "refused" if refused else ("ok" if has_reference else "not checked"),
        "summary": NOT_CHECKED if not has_reference else summarize(results),
        "refused": refused,
        "artifacts": results,
    }


def describe_result(result: dict[str, Any]) -> str:
    """One line: ``max |diff| 1.2e-06 <= 0.0001 (3 inputs, top-1 100%) ok`` or the reason."""
    status = result.get("status")
    diff, tol = result.get("max_abs_diff"), result.get("tolerance")
    if status in ("passed", "failed") and isinstance(diff, (int, float)) and isinstance(tol, (int, float)):
        agree = result.get("top1_agreement")
        extra = f", top-1 {100 * agree:.0f}%" if isinstance(agree, (int, float)) else ""
        sign = "<=" if status == "passed" else ">"
        line = f"max |diff| {diff:.3g} {sign} {tol:.3g} ({result.get('inputs')} inputs{extra})"
        return f"{line} ok" if status == "passed" else f"{line} FAILED"
    if status == "passed":
        return "ok"
    if status == "failed":
        return f"FAILED: {result.get('reason') or '?'}"
    return (
        f"{status}: {result.get('reason') or '?'}"
        if status == "skipped"
        else str(result.get("reason") or status)
    )


def summarize(results: dict[str, dict[str, Any]]) -> str:
    counts: dict[str, int] = {}
    for r in results.values():
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    order = ("passed", "failed", "skipped", "not checked")
    return ", ".join(f"{counts[s]} {s}" for s in order if counts.get(s))


def format_lines(record: dict[str, Any] | None) -> list[str]:
    """The per-artifact lines edge-deploy prints and ``status`` shows."""
    if not record:
        return [NOT_CHECKED]
    where = f"on {record.get('machine') or '?'}"
    if record.get("verdict") == "not checked":
        return [f"{NOT_CHECKED} ({where})"]
    lines = []
    for path, result in (record.get("artifacts") or {}).items():
        export = result.get("export") or {}
        vs = ""
        if isinstance(export.get("max_abs_diff"), (int, float)) and result.get("status") in (
            "passed",
            "failed",
        ):
            vs = f" [export on {export.get('machine') or '?'}: {export['max_abs_diff']:.3g}]"
        lines.append(f"{path} {where}: {describe_result(result)}{vs}")
    return lines


# --------------------------------------------------------------------------------------------------
# The record beside an install


def write_device_parity(install_dir: str | Path, record: dict[str, Any]) -> Path:
    """``INSTALL/parity.json``, written atomically."""
    return write_text_atomic(Path(install_dir) / DEVICE_PARITY, json.dumps(record, indent=2) + "\n")


def read_device_parity(bundle_root: str | Path) -> dict[str, Any] | None:
    """``parity.json`` beside an installed bundle, or None when there is none or it is unreadable."""
    path = Path(bundle_root) / DEVICE_PARITY
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.warning("%s: unreadable device parity record (%s); ignoring it", path, exc)
        return None
    return data if isinstance(data, dict) else None


def current_record(bundle_root: str | Path) -> dict[str, Any] | None:
    """The install's ``parity.json`` if it was made on this machine's architecture for this very
    manifest, else None (a copied or stale record is ignored, with a warning)."""
    root = Path(bundle_root)
    record = read_device_parity(root)
    if record is None:
        return None
    if record.get("machine") != platform.machine():
        log.warning(
            "%s: recorded on %s, this machine is %s; ignoring it",
            root / DEVICE_PARITY,
            record.get("machine"),
            platform.machine(),
        )
        return None
    if record.get("manifest_sha256") != sha256_file(root / MANIFEST_NAME):
        log.warning("%s: recorded for another manifest; ignoring it", root / DEVICE_PARITY)
        return None
    return record


def failed_on_device(bundle: Bundle) -> dict[str, dict[str, Any]]:
    """The artifacts that failed this device's parity check at install: path -> result (only a
    record :func:`current_record` accepts counts)."""
    record = current_record(bundle.root)
    if record is None:
        return {}
    artifacts = record.get("artifacts")
    if not isinstance(artifacts, dict):
        return {}
    return {p: r for p, r in artifacts.items() if isinstance(r, dict) and r.get("status") == "failed"}


def main(argv: list[str] | None = None) -> int:
    """``python -m edgewise.edge.reference BUNDLE [--device NAME] [--threads N] [--key PUB]``: the
    device parity record of ``BUNDLE`` (folder or archive) on this machine, as JSON on stdout
    (what an install writes to ``INSTALL/parity.json``); exit 0, 1 when the bundle would be
    refused here, 2 on a bad argument or bundle."""
    import argparse
    import sys

    from edgewise.bundle import load_bundle
    from edgewise.devices import load_profile

    parser = argparse.ArgumentParser(prog="python -m edgewise.edge.reference", description=main.__doc__)
    parser.add_argument("bundle", help="bundle folder or .tar.gz")
    parser.add_argument("--device", help="device profile (its runtimes and providers); default: none")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--key", help="public key the bundle's signature must verify with")
    args = parser.parse_args(argv)
    try:
        profile = load_profile(args.device) if args.device else None
        with load_bundle(args.bundle, public_key=args.key) as bundle:
            record = device_parity(bundle, profile, args.threads)
    except EdgewiseError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(record, indent=2))
    return 1 if record["refused"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
