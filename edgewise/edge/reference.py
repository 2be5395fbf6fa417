"""Reference sets: what each artifact must compute, checked on the device that runs it.

A bundle carries, for every artifact it derives from the trained model, a small reference set
(``extra.reference`` of the artifact, the ``.npz`` file in the bundle bound by its sha256, so the
manifest's signature covers it). Two kinds of record, told apart by ``extra.reference.version``:

* **version 1** (no ``version`` key: every SER bundle, and what TensorRT engines are checked
  against): one input, one output. ``{path, sha256, size_bytes, inputs, frames, fitting, ...}``;
  the file holds a few normalized validation inputs (``input_0`` .. ``input_{n-1}``, (1, time,
  n_mels) each, one shorter than any window) and ``logits``: the merged PyTorch model's, computed
  the way the device runs that artifact (whole utterances for dynamic shapes, the artifact's
  windows for TFLite, the engine's frame range for TensorRT). The tolerance is the artifact's
  ``parity.tolerance``. Artifacts that need the same expected logits share one file
  (:class:`ReferenceSet`).
* **version 2**, a *graph* reference set (the TTS family's graphs: several named inputs of their
  own dtypes, several outputs): ``{version: 2, path, sha256, size_bytes, cases, inputs: [{name,
  dtype}], lengths, outputs: [{name, compare, tolerance}], tolerance_rule, export_check, ...}``.
  The file (:func:`write_graph_reference`) holds ``reference_version`` (2), ``input_names``,
  ``output_names``, and per case ``i`` the graph's inputs ``case_<i>.<input name>`` (int64 ids stay
  int64) and PyTorch's outputs ``expected_<i>.<output name>``. Each output is graded on its own
  tolerance by its ``compare`` kind (:data:`COMPARISONS`): ``abs`` (max |diff|) or ``circular``
  (an angle in radians: the difference wrapped onto the circle first, so a vocoder's phase of
  pi and -pi agree). Tolerances and kinds live in the signed manifest, per artifact, because the
  fp32 and int8 artifacts of one graph share a file but not a tolerance (:class:`GraphReferenceSet`).

ARM builds of onnxruntime and LiteRT run other kernels than the x86 builds the export gate ran,
so the device checks each artifact it can load against its reference set when a bundle is
installed (:func:`check_artifacts`, :func:`device_parity`); the result is kept beside the install
(``INSTALL/parity.json``, :data:`DEVICE_PARITY`) and the runtime never picks an artifact that
failed there (:func:`failed_on_device`), for every model role (the TTS pipeline opens each of its
three graphs through :class:`~edgewise.edge.runtime.ModelRuntime`, which skips them). TensorRT
engines are checked the same way right after they are built (:mod:`edgewise.edge.tensorrt`).

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
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from edgewise.bundle import MANIFEST_NAME, IntegrityError, bundle_file, sha256_file
from edgewise.edge.backends import BackendError
from edgewise.errors import EdgewiseError, MissingDependencyError
from edgewise.fsutil import atomic_path, write_text_atomic

if TYPE_CHECKING:
    from edgewise.bundle import ArtifactEntry, Bundle
    from edgewise.devices import DeviceProfile, RuntimeChoice

log = logging.getLogger(__name__)

REFERENCE_LOGITS = "logits"  # the .npz holds input_0 .. input_{n-1} and this array
GRAPH_REFERENCE = 2  # extra.reference.version of a graph reference set (named inputs and outputs)
# how an output of a graph reference set is graded: the difference as it is, or wrapped onto the
# circle (angles in radians: a phase of pi and one of -pi are the same)
COMPARISONS = ("abs", "circular")
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


def _reference_file(bundle: Bundle, art: ArtifactEntry) -> tuple[dict[str, Any], Path, str] | None:
    """``extra.reference`` of ``art``, its file's path and sha256, the file checked against the
    recorded size and sha256 (None when the artifact has no reference set)."""
    ref = art.extra.get("reference")
    if ref is None:
        return None
    where = f"{art.path} extra.reference"
    if not isinstance(ref, dict) or not isinstance(ref.get("path"), str) or "sha256" not in ref:
        raise ReferenceSetError(f"{where}: expected {{path, sha256, size_bytes}}, got {ref!r}")
    version = ref.get("version", 1)
    if version not in (1, GRAPH_REFERENCE):
        raise ReferenceSetError(
            f"{where}: version {version!r} is not one this edgewise reads (1 or {GRAPH_REFERENCE}); "
            "update edgewise on the device"
        )
    try:
        path = bundle_file(bundle, ref, where)
    except IntegrityError as exc:
        raise ReferenceSetError(str(exc)) from None
    return ref, path, ref["sha256"]


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
    single_io: ClassVar[bool] = True  # the artifact is opened with one input and one output

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
        third-party VAD model). Anything else wrong, a graph reference set (version 2) included,
        is a :class:`ReferenceSetError`; :func:`reference_set_of` reads either kind.
        """
        found = _reference_file(bundle, art)
        if found is None:
            return None
        ref, path, actual = found
        if ref.get("version", 1) != 1:
            raise ReferenceSetError(
                f"{art.path} extra.reference: a graph reference set (version {ref['version']}), "
                "not a single-input one"
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
# Graph reference sets (version 2): named inputs and several outputs, each with its own tolerance


def write_graph_reference(
    path: str | Path, cases: list[dict[str, np.ndarray]], expected: list[dict[str, np.ndarray]]
) -> Path:
    """A graph reference set: per case the graph's named inputs (kept in their dtypes) and the
    expected outputs by name; every case names the same inputs and outputs."""
    if not cases or len(cases) != len(expected):
        raise ValueError(f"graph reference: {len(cases)} cases for {len(expected)} sets of outputs")
    inputs, outputs = list(cases[0]), list(expected[0])
    if any(list(c) != inputs for c in cases) or any(list(e) != outputs for e in expected):
        raise ValueError("graph reference: every case must name the same inputs and outputs")
    if any("." in name for name in [*inputs, *outputs]):
        raise ValueError(f"graph reference: a name with a '.' ({inputs} -> {outputs})")
    arrays: dict[str, np.ndarray] = {
        "reference_version": np.asarray(GRAPH_REFERENCE),
        "input_names": np.asarray(inputs, dtype=str),
        "output_names": np.asarray(outputs, dtype=str),
    }
    for i, (case, out) in enumerate(zip(cases, expected)):
        arrays.update({f"case_{i}.{name}": np.ascontiguousarray(x) for name, x in case.items()})
        arrays.update({f"expected_{i}.{name}": np.asarray(y, dtype=np.float32) for name, y in out.items()})
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    with atomic_path(path) as tmp:
        Path(tmp).write_bytes(buf.getvalue())
    return Path(path)


def read_graph_reference(path: str | Path) -> tuple[list[dict[str, np.ndarray]], list[dict[str, np.ndarray]]]:
    """The cases and expected outputs of :func:`write_graph_reference`; a malformed file is a
    ReferenceSetError."""
    try:
        with np.load(path, allow_pickle=False) as data:
            version = int(data["reference_version"])
            if version != GRAPH_REFERENCE:
                raise ValueError(f"reference_version {version}, expected {GRAPH_REFERENCE}")
            inputs = [str(n) for n in data["input_names"]]
            outputs = [str(n) for n in data["output_names"]]
            n = sum(1 for key in data.files if key.startswith("expected_") and key.endswith(f".{outputs[0]}"))
            cases = [{name: np.asarray(data[f"case_{i}.{name}"]) for name in inputs} for i in range(n)]
            expected = [
                {name: np.asarray(data[f"expected_{i}.{name}"], dtype=np.float32) for name in outputs}
                for i in range(n)
            ]
    except Exception as exc:  # zipfile, KeyError, ValueError, IndexError: a broken or foreign file
        raise ReferenceSetError(f"{path}: not a graph reference set ({error_line(exc)})") from None
    if not cases:
        raise ReferenceSetError(f"{path}: a graph reference set without cases")
    return cases, expected


@dataclass(frozen=True)
class OutputCheck:
    """How one output of a graph is graded: its ``tolerance`` on :func:`output_diff`'s measure."""

    name: str
    tolerance: float
    compare: str = "abs"

    def __post_init__(self) -> None:
        if self.compare not in COMPARISONS:
            raise ValueError(f"output {self.name!r}: compare {self.compare!r}, expected one of {COMPARISONS}")

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "compare": self.compare, "tolerance": self.tolerance}


def output_diff(got: np.ndarray, expected: np.ndarray, compare: str = "abs") -> float:
    """max |got - expected|; for ``circular`` outputs (radians) the difference wrapped into [-pi, pi].
    Equal values differ by 0, equal infinities too (an additive attention mask's -inf padding)."""
    got, expected = np.asarray(got, dtype=np.float64), np.asarray(expected, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        diff = np.where(got == expected, 0.0, got - expected)
    if compare == "circular":
        diff = np.remainder(diff + np.pi, 2 * np.pi) - np.pi
    return float(np.abs(diff).max()) if diff.size else 0.0


@dataclass
class GraphReferenceSet:
    """A graph's reference set (version 2): cases of named inputs, PyTorch's outputs on them, and
    per output the tolerance and comparison kind the artifact must meet (:class:`OutputCheck`).

    The backend is run as the device's pipelines run it: ``backend.run({name: array})`` returning
    every output in the graph's order (``backend.output_names``), as
    :class:`~edgewise.edge.backends.OnnxBackend` with ``single_io=False`` does.
    """

    cases: list[dict[str, np.ndarray]]
    expected: list[dict[str, np.ndarray]]
    outputs: list[OutputCheck]
    source: str
    sha256: str = ""
    single_io: ClassVar[bool] = False

    def __post_init__(self) -> None:
        if not self.sha256:
            digest = hashlib.sha256()
            for case, out in zip(self.cases, self.expected):
                for name, array in [*case.items(), *out.items()]:
                    array = np.ascontiguousarray(array)
                    digest.update(f"{name} {array.dtype.str} {array.shape}".encode())
                    digest.update(array.tobytes())
            self.sha256 = digest.hexdigest()

    @property
    def tolerance(self) -> dict[str, float]:
        """Output name -> tolerance."""
        return {o.name: o.tolerance for o in self.outputs}

    @classmethod
    def from_artifact(cls, bundle: Bundle, art: ArtifactEntry) -> GraphReferenceSet | None:
        """The artifact's ``extra.reference`` (version 2), its file checked against the recorded
        sha256 and size and its outputs against the manifest's; None without one; anything wrong
        is a :class:`ReferenceSetError`."""
        found = _reference_file(bundle, art)
        if found is None:
            return None
        ref, path, actual = found
        where = f"{art.path} extra.reference"
        if ref.get("version") != GRAPH_REFERENCE:
            raise ReferenceSetError(f"{where}: a single-input reference set, not a graph's (version 2)")
        checks = ref.get("outputs")
        if not isinstance(checks, list) or not checks:
            raise ReferenceSetError(
                f"{where}.outputs: expected a list of {{name, compare, tolerance}}, got {checks!r}"
            )
        outputs = []
        for i, check in enumerate(checks):
            tol = check.get("tolerance") if isinstance(check, dict) else None
            if not isinstance(tol, (int, float)) or isinstance(tol, bool) or not tol >= 0:
                raise ReferenceSetError(
                    f"{where}.outputs[{i}]: expected {{name, compare, tolerance >= 0}}, got {check!r}"
                )
            try:
                outputs.append(
                    OutputCheck(str(check.get("name")), float(tol), str(check.get("compare", "abs")))
                )
            except ValueError as exc:
                raise ReferenceSetError(f"{where}.outputs[{i}]: {exc} (a newer edgewise wrote it?)") from None
        cases, expected = read_graph_reference(path)
        named = [o.name for o in outputs]
        if sorted(named) != sorted(expected[0]):
            raise ReferenceSetError(
                f"{path}: holds outputs {sorted(expected[0])}, {where}.outputs names {sorted(named)}"
            )
        return cls(cases, expected, outputs, str(ref["path"]), actual)

    def run(self, backend: Any) -> list[dict[str, np.ndarray]]:
        """Every case through ``backend``, batch 1 each: output name -> array, per case."""
        names = list(backend.output_names)
        return [dict(zip(names, backend.run(case))) for case in self.cases]

    def compare(self, backend: Any) -> dict[str, Any]:
        """Run the cases through ``backend`` and grade every output on its own tolerance.

        ``passed``, ``outputs`` (name -> ``max_abs_diff``, ``tolerance``, ``compare``), the worst
        output (largest diff over tolerance) as ``worst_output`` with its ``max_abs_diff`` (None
        when a shape is wrong or a value not finite), ``tolerance`` (name -> tolerance), and
        ``reason`` when it failed. Exceptions from the backend propagate."""
        result: dict[str, Any] = {
            "passed": False,
            "max_abs_diff": None,
            "tolerance": self.tolerance,
            "worst_output": None,
            "outputs": {},
            "inputs": len(self.cases),
            "lengths": [_case_length(c) for c in self.cases],
            "top1_agreement": None,
            "reference": self.source,
            "reference_sha256": self.sha256,
        }
        wanted = sorted(self.cases[0])
        have = sorted(getattr(backend, "input_names", wanted))
        missing = [o.name for o in self.outputs if o.name not in getattr(backend, "output_names", ())]
        if have != wanted or missing:
            result["reason"] = (
                f"the graph takes {have} -> {list(getattr(backend, 'output_names', []))}; "
                f"{self.source} has inputs {wanted} and outputs {[o.name for o in self.outputs]}"
            )
            return result
        got = self.run(backend)
        worst, worst_ratio = None, -1.0
        for check in self.outputs:
            diffs = []
            for i, (out, exp) in enumerate(zip(got, self.expected)):
                y, want = np.asarray(out[check.name]), exp[check.name]
                if y.shape != want.shape:
                    result["reason"] = (
                        f"output {check.name} of shape {y.shape} on case {i} of {self.source}, "
                        f"expected {want.shape}"
                    )
                    return result
                diffs.append(output_diff(y, want, check.compare))
            diff = max(diffs)
            if not np.isfinite(diff):
                result["reason"] = f"output {check.name} is not finite on {self.source}"
                return result
            result["outputs"][check.name] = {
                "max_abs_diff": diff,
                "tolerance": check.tolerance,
                "compare": check.compare,
                "passed": diff <= check.tolerance,
            }
            ratio = diff / check.tolerance if check.tolerance > 0 else (np.inf if diff > 0 else 0.0)
            if ratio > worst_ratio:
                worst, worst_ratio = check, ratio
        assert worst is not None
        result["worst_output"] = worst.name
        result["max_abs_diff"] = result["outputs"][worst.name]["max_abs_diff"]
        failed = [name for name, r in result["outputs"].items() if not r["passed"]]
        if failed:
            result["reason"] = (
                "; ".join(
                    f"output {name} differs from the bundle's reference ({self.source}, {len(self.cases)} cases) "
                    f"by {result['outputs'][name]['max_abs_diff']:.3g} > {result['outputs'][name]['tolerance']:.3g}"
                    + (" (on the circle)" if result["outputs"][name]["compare"] == "circular" else "")
                    for name in failed
                )
                + ", the artifact's tolerance"
            )
            return result
        result["passed"] = True
        return result


def _case_length(case: dict[str, np.ndarray]) -> int:
    """The length of a case: ids or frames, the second axis of its first input."""
    first = np.asarray(next(iter(case.values())))
    return int(first.shape[1]) if first.ndim > 1 else int(first.size)


def reference_set_of(bundle: Bundle, art: ArtifactEntry) -> ReferenceSet | GraphReferenceSet | None:
    """The artifact's reference set of either kind (by ``extra.reference.version``), or None."""
    ref = art.extra.get("reference")
    if isinstance(ref, dict) and ref.get("version") == GRAPH_REFERENCE:
        return GraphReferenceSet.from_artifact(bundle, art)
    return ReferenceSet.from_artifact(bundle, art)


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


def choice_for(
    profile: DeviceProfile | None, role: str, art: ArtifactEntry, task: str | None = None
) -> tuple[RuntimeChoice, bool]:
    """How the runtime would run ``art`` (the profile's preference for it among those for the
    bundle's ``task``, e.g. its ``task_runtimes.tts``, if any) and whether the profile prefers it
    at all; outside the profile the artifact runs on the CPU providers."""
    from edgewise.devices import RuntimeChoice

    preferences = (profile.runtimes_for(task) if task else profile.runtimes) if profile is not None else ()
    for choice in preferences:
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
        reference = reference_set_of(bundle, art)
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
    reference: ReferenceSet | GraphReferenceSet,
) -> dict[str, Any]:
    """Open the artifact with the runtime's backend (several inputs and outputs for a graph
    reference set, as the TTS pipeline opens it) and compare it with ``reference``."""
    from edgewise.edge.runtime import open_backend

    try:
        backend = open_backend(bundle, art, choice, threads, engine_dir, reference.single_io)
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
    this artifact, among the preferences for the bundle's task), ``export`` (the same check on the
    exporting machine, from the manifest). A graph reference set (version 2) adds ``outputs`` (per
    output ``max_abs_diff``, ``tolerance``, ``compare``, ``passed``) and ``worst_output``, whose
    diff is ``max_abs_diff``; its ``tolerance`` is per output. The backends are the runtime's own
    (:func:`edgewise.edge.runtime.open_backend`, several inputs and outputs for a graph), with the
    profile's providers; torch is never imported.
    """
    machine = platform.machine()
    versions = runtime_versions()
    threads = threads or (profile.threads if profile is not None else 1)
    results: dict[str, dict[str, Any]] = {}
    for role in bundle.manifest.models:
        for art in bundle.artifacts(role):
            choice, preferred = choice_for(profile, role, art, bundle.manifest.task)
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
    """One line: ``max |diff| 1.2e-06 <= 0.0001 (3 inputs, top-1 100%) ok`` (``max |diff| on
    log_mag ...`` for a graph: its worst output, by diff over tolerance) or the reason."""
    status = result.get("status")
    diff, tol, worst = result.get("max_abs_diff"), result.get("tolerance"), result.get("worst_output")
    if isinstance(tol, dict):  # a graph reference set: the output nearest (or furthest past) its tolerance
        tol = tol.get(worst)
    if status in ("passed", "failed") and isinstance(diff, (int, float)) and isinstance(tol, (int, float)):
        agree = result.get("top1_agreement")
        extra = f", top-1 {100 * agree:.0f}%" if isinstance(agree, (int, float)) else ""
        sign = "<=" if status == "passed" else ">"
        output = f" on {worst}" if worst else ""
        line = f"max |diff|{output} {diff:.3g} {sign} {tol:.3g} ({result.get('inputs')} inputs{extra})"
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
        per_output = export.get("outputs")
        if isinstance(per_output, dict) and isinstance(per_output.get(result.get("worst_output")), dict):
            export = per_output[result["worst_output"]]  # the same output on the exporting machine
            export = {**export, "machine": (result.get("export") or {}).get("machine")}
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
