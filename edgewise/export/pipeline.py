"""``edgewise export``: a training run in, a verified, versioned bundle out.

    read the run -> merge pass -> reference logits on the validation split
      -> for each (format, precision, quant) of the table: export, then run it in its runtime (parity)
      -> reference sets for the device's parity check (extra.reference, one .npz per fitting policy;
         each artifact must reproduce its set here too)
      -> gate: every artifact within tolerance, or nothing is written (unless the gate is off)
      -> BundleWriter: manifest (labels, front-end, tensor interface, parity, provenance), .tar.gz, signature

Each step is timed and logged; a failure names the step (format and precision) and the reason.
The bundle is assembled in a temporary folder and renamed into place only at the end.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import logging
import platform
import re
import tempfile
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgewise.bundle import BundleWriter, sha256_file, sign_manifest
from edgewise.edge.windows import WindowSpec
from edgewise.errors import EdgewiseError
from edgewise.export import reference as device_reference
from edgewise.export.errors import ExportError, ParityError
from edgewise.export.formats import (
    ExportContext,
    Variant,
    check_toolchains,
    override_tolerance,
    resolve_variants,
)
from edgewise.export.merge import MergeReport
from edgewise.export.parity import ParityResult, ReferenceSet, check_parity, format_report, windowed_reference

log = logging.getLogger(__name__)

ROLE = "classifier"
FILE_ROLE = "ser"  # artifact files are models/ser.<stem><suffix>
ADAPTER_FILE = "speaker_adapter.json"  # in the run, from edgewise train ser-adapter
ADAPTER_PATH = "ser/speaker_adapter.json"  # in the bundle


@dataclass
class ExportOptions:
    out: Path
    formats: list[str] = field(default_factory=lambda: ["onnx"])
    precisions: list[str] = field(default_factory=lambda: ["fp32"])
    quant: list[str] | None = None
    name: str | None = None
    version: str = "1.0.0"
    data: Path | None = None
    sign_key: Path | None = None
    gate: bool = True
    atol: dict[str, float] = field(default_factory=dict)  # stem or precision -> max |diff|
    metric_drop: dict[str, float] = field(default_factory=dict)  # stem or precision -> fraction
    calibration_size: int = 300
    window_seconds: float = 3.0  # the input window of fixed-shape formats (TFLite)
    include_vad: bool = True  # ship the Silero VAD model as role "vad" when silero-vad is installed
    threads: int = 2
    overwrite: bool = False
    cache_dir: Path | None = None
    progress: bool = False


@dataclass
class ExportResult:
    bundle: Path
    archive: Path
    results: list[ParityResult]
    merge: MergeReport
    report: str


@contextlib.contextmanager
def step(label: str) -> Iterator[dict[str, float]]:
    """Time and log one step; a failure comes out as an EdgewiseError that starts with ``label``."""
    timing: dict[str, float] = {}
    start = time.perf_counter()
    try:
        yield timing
    except EdgewiseError as exc:
        log.debug("%s failed", label, exc_info=True)
        raise type(exc)(f"{label}: {exc}") from None
    except Exception as exc:  # a third-party exporter or runtime failed: name the step and the reason
        log.debug("%s failed:\n%s", label, traceback.format_exc())
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise ExportError(
            f"{label} failed: {type(exc).__name__}: {reason} (-vv shows the traceback)"
        ) from exc
    timing["seconds"] = round(time.perf_counter() - start, 3)
    log.info("%s: %.2f s", label, timing["seconds"])


def _versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for dist in ("torch", "onnx", "onnxscript", "onnxruntime", "numpy"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            versions[dist] = importlib.metadata.version(dist)
    return versions


def _check_sign_key(key: Path) -> None:
    """Sign a throwaway manifest now, so a bad key fails before minutes of export, not after."""
    with tempfile.TemporaryDirectory(prefix="edgewise-keycheck-") as tmp:
        (Path(tmp) / "manifest.json").write_bytes(b"{}")
        sign_manifest(tmp, key)


def _default_name(meta: dict[str, Any]) -> str:
    name = str(meta.get("name") or "ser").lower()
    return re.sub(r"[^a-z0-9_-]+", "-", name).strip("-_") or "ser"


def export_run(run_dir: str | Path, opts: ExportOptions) -> ExportResult:
    """Export a finished run to the bundle ``opts.out/NAME-VERSION`` (and ``.tar.gz``)."""
    variants = resolve_variants(opts.formats, opts.precisions, opts.quant)
    check_toolchains(variants)
    if opts.sign_key is not None:
        _check_sign_key(opts.sign_key)

    import torch

    from edgewise.cloud.train.run import load_run_model
    from edgewise.export import data
    from edgewise.export.merge import merge_for_export
    from edgewise.export.parity import make_reference

    torch.set_num_threads(max(1, opts.threads))
    run_dir = Path(run_dir)
    with step("read run"):
        model, info = load_run_model(run_dir)
        corpus = data.export_corpus(info, opts.data)
    n_mels = info.features.n_mels
    window = WindowSpec.from_seconds(opts.window_seconds, info.features)
    with step("merge"):
        merged, merge_report = merge_for_export(model, n_mels)
    adaptation = _speaker_adaptation(run_dir, info.labels)
    writer = BundleWriter(  # refuses an existing bundle now, before the slow steps
        opts.out,
        name=opts.name or _default_name(info.meta),
        version=opts.version,
        task="ser",
        labels=info.labels,
        preprocessing={"log_mel": info.features.to_dict(), **adaptation},
        provenance=_provenance(run_dir, info, corpus, merge_report, opts.gate),
        overwrite=opts.overwrite,
    )
    feature_args = {"cache_dir": opts.cache_dir, "workers": opts.threads, "progress": opts.progress}
    with writer, tempfile.TemporaryDirectory(prefix="edgewise-export-") as tmp:
        with step("reference (PyTorch on the validation split)"):
            inputs, labels = data.validation_set(corpus, info, **feature_args)
            reference = make_reference(merged, inputs, labels, info.labels)
        log.info("reference: %d validation utterances, UA %.4f", len(inputs), reference.metric)

        calibration: list = []

        def calibration_data() -> list:
            if not calibration:
                calibration.extend(data.calibration_set(corpus, info, opts.calibration_size, **feature_args))
            return calibration

        ctx = ExportContext(merged, n_mels, Path(tmp), calibration_data, window)
        references: dict[WindowSpec | None, ReferenceSet] = {None: reference}

        def reference_for(variant: Variant) -> ReferenceSet:
            key = None if variant.row.dynamic_shapes else window
            if key not in references:
                with step(f"reference (PyTorch on {window.frames}-frame windows)"):
                    references[key] = windowed_reference(merged, reference, window)
            return references[key]

        made = [_make_artifact(ctx, variant, reference_for(variant), opts) for variant in variants]
        with step("reference sets for the device's parity check"):
            reference_files = device_reference.attach_references(
                merged, reference.inputs, made, Path(tmp), window, opts.threads, FILE_ROLE
            )
        results = [m.parity for m in made]
        report = format_report(results)
        failed = [r.artifact for r in results if not r.passed]
        if failed and opts.gate:
            raise ParityError(
                f"{report}\nexport refused: {len(failed)} artifact(s) exceed their tolerance "
                f"({', '.join(failed)}); no bundle was written (--no-gate writes it with the failure recorded)"
            )
        if failed:
            log.warning("writing %d artifact(s) that failed the parity gate (--no-gate)", len(failed))
        _add_classifier(writer, info, merge_report, made, _flops(merged, info.features))
        if opts.include_vad:
            _add_vad(writer)
        if (run_dir / ADAPTER_FILE).is_file():
            _size, digest = writer.add_file(run_dir / ADAPTER_FILE, ADAPTER_PATH)
            if digest != adaptation["speaker_adaptation"]["file"]["sha256"]:
                raise ExportError(f"{run_dir / ADAPTER_FILE}: changed while the bundle was written")
        for rel_path, local in reference_files.items():
            _size, digest = writer.add_file(local, rel_path)  # bound by the sha256 in extra.reference
            if any(
                m.extra["reference"]["sha256"] != digest
                for m in made
                if m.extra["reference"]["path"] == rel_path
            ):
                raise ExportError(f"{rel_path}: the reference set changed while the bundle was written")
        with step("write bundle"):
            bundle = writer.finish(sign_key=opts.sign_key)
    return ExportResult(bundle, writer.archive_path, results, merge_report, report)


@dataclass
class _Artifact:
    variant: Variant
    path: Path  # in the scratch folder
    extra: dict[str, Any]
    parity: ParityResult
    fixed_shape: dict[str, list[int]] | None = None


def _make_artifact(ctx: ExportContext, variant: Variant, reference: Any, opts: ExportOptions) -> _Artifact:
    """Export one variant, then run it in its runtime against the PyTorch reference."""
    rel_path = variant.artifact_path(FILE_ROLE)
    out = ctx.workdir / Path(rel_path).name
    with step(f"export {variant.label}") as timing:
        extra = variant.row.export(ctx, variant, out)
    window = None if variant.row.dynamic_shapes else ctx.window
    with step(f"parity {variant.label}"):
        result = check_parity(
            variant.row.runner(out, opts.threads, variant, window),
            reference,
            override_tolerance(variant, opts.atol, opts.metric_drop),
            artifact=rel_path,
            label=variant.label,
            dynamic_shapes=variant.row.dynamic_shapes,
        )
    verdict = "passed" if result.passed else "FAILED"
    log.info("%s: %s, %d bytes", variant.label, verdict, out.stat().st_size)
    fixed = None if window is None else {"features": [1, window.frames, ctx.n_mels]}
    return _Artifact(variant, out, {**extra, "export_seconds": timing["seconds"]}, result, fixed)


def _flops(model: Any, features: Any, seconds: float = 3.0) -> dict[str, Any]:
    """Floating-point operations of one forward pass on ``seconds`` of audio (batch 1).

    Counted by torch's FlopCounterMode (matrix multiplies and convolutions, 2 per multiply-add;
    norms, softmax and activations are not counted), so a benchmark can state each artifact's
    fraction of the machine's GEMM ceiling.
    """
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from edgewise.features import num_frames

    frames = num_frames(int(seconds * features.sample_rate), features)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model.eval()(torch.zeros(1, frames, features.n_mels))
    return {
        "seconds": seconds,
        "frames": frames,
        "flops": int(counter.get_total_flops()),
        "counted": "matmul and convolution FLOPs (2 per multiply-add), torch.utils.flop_counter",
    }


def _add_classifier(
    writer: BundleWriter, info: Any, merge: MergeReport, made: list[_Artifact], flops: dict[str, Any]
) -> None:
    """The ``classifier`` role: its tensor interface and one entry per artifact."""
    n_mels = info.features.n_mels
    writer.add_model(
        ROLE,
        inputs=[{"name": "features", "shape": ["batch", "time", n_mels], "dtype": "float32"}],
        outputs=[{"name": "logits", "shape": ["batch", len(info.labels)], "dtype": "float32"}],
        extra={
            "arch": info.model_config.get("arch"),
            "size": info.model_config.get("size"),
            "parameters": merge.parameters_after,
            "min_frames": 2,
            "flops": flops,
            "input": "log-mel frames normalized with preprocessing.log_mel mean/std",
            "output": "unnormalized class scores in the order of labels (softmax for probabilities)",
        },
    )
    for art in made:
        writer.add_artifact(
            ROLE,
            art.path,
            art.variant.artifact_path(FILE_ROLE),
            format=art.variant.row.manifest_format,
            precision=art.variant.precision,
            runtime=art.variant.row.runtime,
            fixed_shape=art.fixed_shape,
            parity=art.parity.to_manifest(),
            extra=art.extra,
        )


def _speaker_adaptation(run_dir: Path, labels: list[str]) -> dict[str, Any]:
    """``preprocessing.speaker_adaptation`` when the run has a fitted speaker adapter
    (``edgewise train ser-adapter``): the file's place, size and sha256, and its prior weight."""
    from edgewise.speaker_adapt import AdapterHead

    path = run_dir / ADAPTER_FILE
    if not path.is_file():
        return {}
    try:
        head = AdapterHead.load(path)
    except ValueError as exc:
        raise ExportError(str(exc)) from None
    if list(head.labels) != list(labels):
        raise ExportError(
            f"{path}: fitted for labels {head.labels}, the run has {list(labels)}; fit it again"
        )
    return {
        "speaker_adaptation": {
            "file": {"path": ADAPTER_PATH, "sha256": sha256_file(path), "size_bytes": path.stat().st_size},
            "prior_weight": head.prior_weight,
            "prosody_version": head.prosody_version,
            "fitted": head.fitted,
        }
    }


def _add_vad(writer: BundleWriter) -> None:
    """The ``vad`` role: the Silero VAD ONNX file the silero-vad package ships, copied unchanged.

    The device segments microphone audio with it; silero-vad itself depends on torch, so devices
    get the model from the bundle instead of the package. Without the package the bundle has no
    ``vad`` role and the device falls back to its energy VAD (and says so).
    """
    from edgewise.edge.audio.vad import find_silero_vad_onnx

    path = find_silero_vad_onnx()
    if path is None:
        log.warning(
            "silero-vad is not installed: the bundle has no VAD model (the device uses its energy VAD)"
        )
        return
    version = None
    with contextlib.suppress(importlib.metadata.PackageNotFoundError):
        version = importlib.metadata.version("silero-vad")
    writer.add_model(
        "vad",
        inputs=[
            {"name": "input", "shape": ["batch", "samples"], "dtype": "float32"},
            {"name": "state", "shape": [2, "batch", 128], "dtype": "float32"},
            {"name": "sr", "shape": [], "dtype": "int64"},
        ],
        outputs=[
            {"name": "output", "shape": ["batch", 1], "dtype": "float32"},
            {"name": "stateN", "shape": [2, "batch", 128], "dtype": "float32"},
        ],
        extra={
            "model": "Silero VAD",
            "source": f"silero-vad {version} (MIT licence), data/silero_vad.onnx, unchanged",
            "sample_rate": 16000,
            "window_samples": 512,
            "context_samples": 64,
        },
    )
    writer.add_artifact(
        "vad",
        path,
        "models/vad.silero.onnx",
        format="onnx",
        precision="fp32",
        runtime="onnxruntime",
        parity={
            "checked": False,
            "reason": "a third-party model shipped unchanged; not derived from the run",
        },
    )


def _listing_sha256(corpus: Any) -> str:
    """Identifies the utterances (split, label, speaker, path) of any corpus layout, corpus.json or not."""
    digest = hashlib.sha256()
    for u in sorted(corpus.utterances, key=lambda u: (u.split, str(u.path))):
        rel = (
            Path(u.path).relative_to(corpus.root)
            if Path(u.path).is_relative_to(corpus.root)
            else Path(u.path)
        )
        digest.update(f"{u.split}\t{u.label}\t{u.speaker}\t{rel.as_posix()}\n".encode())
    return digest.hexdigest()


def _provenance(run_dir: Path, info: Any, corpus: Any, merge: MergeReport, gate: bool) -> dict[str, Any]:
    corpus_json = corpus.root / "corpus.json"
    weights = run_dir / "model.safetensors"
    return {
        "run": str(run_dir.resolve()),
        "run_name": info.meta.get("name"),
        "model_sha256": sha256_file(weights) if weights.is_file() else None,
        "corpus": str(corpus.root),
        "corpus_source": corpus.source,
        "corpus_json_sha256": sha256_file(corpus_json) if corpus_json.is_file() else None,
        "corpus_listing_sha256": _listing_sha256(corpus),
        "training": info.meta.get("provenance") or {},
        "trained_with": info.meta.get("trained_with") or {},
        "merge": merge.to_dict(),
        "parity_gate": "enforced" if gate else "off (--no-gate)",
        "versions": _versions(),
    }
