"""The local benchmark: open the bundle, plan one row per artifact, drive the workers, compute figures.

Order of work (nothing else of the benchmark runs while one thing is timed):

1. the bundle is opened and verified (a bundle that does not verify stops here: the report says so);
2. the ceiling process measures fp32 and int8 GEMM ceilings (again after step 6; the best counts);
3. one baseline process per runtime imports it and loads nothing (its VmHWM);
4. cold loads: ``cold_runs`` fresh processes per row, rows rotated; the last one stays as the row's
   worker, runs the warm-up, and its VmHWM is the row's peak resident memory;
5. warm latency: ``rounds`` rounds, each timing every row (rotating order) on the same inputs;
6. throughput per batch size, interleaved the same way; then VmHWM again (after the largest batch).

Ratios against ONNX fp32 are medians of per-round ratios, so slow phases of a shared machine
cancel out.
"""

from __future__ import annotations

import importlib.util
import logging
import math
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from edgewise import __version__
from edgewise.bench.ceiling import DEFAULT_REPEATS, DEFAULT_SIZES, combine, measure_ceiling
from edgewise.bench.environment import emulation_note, environment, load_average
from edgewise.bench.workers import WorkerError, WorkerProcess
from edgewise.bundle import ArtifactEntry, Bundle, BundleError, load_bundle
from edgewise.devices import DeviceProfile
from edgewise.edge.backends import tflite_runtime_refusal
from edgewise.edge.windows import WindowSpec, split_windows
from edgewise.errors import ConfigError, EdgewiseError
from edgewise.features import LogMelConfig, num_frames

log = logging.getLogger(__name__)

ROLE = "classifier"
TORCH_VARIANTS = ("merged", "hrf_training_form", "plain")
FORMATS = ("onnx", "tflite", "tensorrt-onnx")


@dataclass
class BenchOptions:
    bundle: Path
    formats: list[str] | None = None
    precisions: list[str] | None = None
    run: Path | None = None
    profile: DeviceProfile | None = None
    threads: int = 2
    seconds: float = 3.0
    runs: int = 200
    warmup: int = 10
    rounds: int = 10
    batches: list[int] = field(default_factory=lambda: [1, 4, 16])
    block_seconds: float = 0.2
    cold_runs: int = 3
    ceiling_sizes: tuple[int, ...] = DEFAULT_SIZES
    ceiling_repeats: int = DEFAULT_REPEATS
    corpus: Path | None = None
    split: str = "test"
    limit: int = 50
    key: Path | None = None
    seed: int = 0
    command: str = "edgewise bench"


class BundleDoesNotVerify(EdgewiseError):
    """The bundle cannot be opened or verified; nothing was benchmarked (the report says why)."""

    def __init__(self, message: str, report: dict[str, Any]) -> None:
        super().__init__(message)
        self.report = report


# --------------------------------------------------------------------------------------------------
# Rows


def row_name(fmt: str, precision: str, quant: str | None) -> str:
    return f"{fmt} {precision}" + (f" ({quant})" if quant else "")


def runtime_of(fmt: str) -> str | None:
    return {"onnx": "onnxruntime", "tflite": "litert", "tensorrt-onnx": "tensorrt"}.get(fmt)


def runtime_problem(art: ArtifactEntry) -> str | None:
    """Why this machine cannot run ``art`` (checked in this process, before any worker starts)."""
    find = importlib.util.find_spec
    if art.format == "onnx":
        return None if find("onnxruntime") else "onnxruntime is not installed: pip install 'edgewise[edge]'"
    if art.format == "tflite":
        if find("ai_edge_litert") is not None:
            return None
        if find("tflite_runtime") is not None:
            return tflite_runtime_refusal(art.precision, art.quant)
        return "no TFLite interpreter: ai-edge-litert is not installed (pip install 'edgewise[edge]')"
    if art.format == "tensorrt-onnx":
        if find("tensorrt") is None:
            return "TensorRT is not installed here (engines are built on a Jetson with TensorRT)"
        return None
    return f"no backend for format {art.format!r}"


@dataclass
class RowState:
    """A row being measured: its JSON fields and what the workers have returned so far."""

    row: dict[str, Any]
    runtime: str | None = None
    load: dict[str, Any] | None = None  # the load request
    worker: WorkerProcess | None = None
    cold: list[dict[str, Any]] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)  # the persistent worker's load reply
    peak_mb: float | None = None
    peak_after_mb: float | None = None
    memory_source: str | None = None
    ns: list[int] = field(default_factory=list)
    index: list[int] = field(default_factory=list)
    round_ms: list[float] = field(default_factory=list)
    cpu_s: float = 0.0
    wall_s: float = 0.0
    throughput: dict[int, list[float]] = field(default_factory=dict)

    @property
    def live(self) -> bool:
        return self.row["status"] == "ok"

    def fail(self, reason: str) -> None:
        self.row["status"], self.row["reason"] = "failed", reason
        if self.worker is not None:
            self.worker.close()
            self.worker = None


def _new_row(name: str, kind: str, fmt: str, precision: str, **fields: Any) -> dict[str, Any]:
    return {
        "name": name,
        "kind": kind,
        "format": fmt,
        "precision": precision,
        "status": "ok",
        "reason": None,
        "notes": [],
        **fields,
    }


def plan_rows(
    bundle: Bundle, opts: BenchOptions, inputs: str, engine_dir: Path
) -> tuple[list[RowState], list[str]]:
    """One row per classifier artifact (filtered), then the PyTorch rows with ``--run``."""
    notes: list[str] = []
    states: list[RowState] = []
    excluded = []
    for art in bundle.artifacts(ROLE):
        if (opts.formats and art.format not in opts.formats) or (
            opts.precisions and art.precision not in opts.precisions
        ):
            excluded.append(art.path)
            continue
        quant = art.quant
        row = _new_row(
            row_name(art.format, art.precision, quant),
            "artifact",
            art.format,
            art.precision,
            artifact=art.path,
            quant=quant,
            runtime=art.runtime,
            parity_passed=art.parity.get("passed"),
            size_bytes=art.size_bytes,
        )
        if art.parity.get("passed") is False:
            row["notes"].append("failed its parity gate at export (written with --no-gate)")
        if art.format == "tensorrt-onnx":
            row["notes"].append(
                "the first cold load builds the TensorRT engine; later ones load it from this run's cache"
            )
        state = RowState(row, runtime=runtime_of(art.format))
        problem = runtime_problem(art)
        if problem:
            row["status"], row["reason"] = "skipped", problem
        else:
            state.load = {
                "op": "load_artifact",
                "bundle": str(bundle.root),
                "artifact": art.path,
                "runtime": state.runtime,
                "threads": opts.threads,
                "providers": providers_for(art, opts.profile),
                "inputs": inputs,
                "engine_dir": str(engine_dir),
            }
        states.append(state)
    if excluded:
        notes.append(f"not benchmarked (--formats/--precisions): {', '.join(excluded)}")
    other_roles = sorted(r for r in bundle.manifest.models if r != ROLE)
    if other_roles:
        notes.append(f"only the {ROLE} role is benchmarked; the bundle also has: {', '.join(other_roles)}")
    if opts.run is not None:
        states += torch_rows(opts, inputs)
    return states, notes


def providers_for(art: ArtifactEntry, profile: DeviceProfile | None) -> list[str]:
    """The execution providers the device profile asks for this artifact (CPU without a profile)."""
    if profile is not None:
        for choice in profile.runtimes:
            quant_ok = choice.quant is None or choice.quant == art.quant
            if (choice.format, choice.precision) == (art.format, art.precision) and quant_ok:
                return list(choice.providers)
    return ["CPUExecutionProvider"]


def torch_rows(opts: BenchOptions, inputs: str) -> list[RowState]:
    names = {
        "merged": "pytorch merged",
        "hrf_training_form": "pytorch HRF training form",
        "plain": "pytorch plain",
    }
    states = []
    missing = importlib.util.find_spec("torch") is None
    for variant in TORCH_VARIANTS:
        row = _new_row(names[variant], "pytorch", "pytorch", "fp32", runtime="torch eager")
        state = RowState(row, runtime="torch")
        if missing:
            row["status"], row["reason"] = "skipped", "skipped: torch not installed"
        else:
            state.load = {
                "op": "load_torch",
                "run": str(opts.run),
                "variant": variant,
                "threads": opts.threads,
                "inputs": inputs,
            }
        states.append(state)
    return states


# --------------------------------------------------------------------------------------------------
# Inputs


def make_inputs(
    bundle: Bundle, opts: BenchOptions, path: Path
) -> tuple[dict[str, Any], list[np.ndarray], np.ndarray, LogMelConfig]:
    """The fixed input (and, with --corpus, real utterances' features), saved where workers read them."""
    features = bundle.manifest.log_mel()
    n_mels = features.n_mels
    frames = num_frames(int(round(opts.seconds * features.sample_rate)), features)
    rng = np.random.default_rng(opts.seed)
    fixed = rng.standard_normal((1, frames, n_mels), dtype=np.float32)  # features are standardized
    utterances: list[np.ndarray] = []
    info: dict[str, Any] = {"kind": "fixed", "corpus": None, "split": None}
    if opts.corpus is not None:
        utterances = corpus_features(opts.corpus, opts.split, opts.limit, features)
        info.update(kind="corpus", corpus=str(opts.corpus), split=opts.split)
    arrays = {"fixed": fixed, **{f"u{i}": u for i, u in enumerate(utterances)}}
    np.savez(path, **arrays)
    lengths = [u.shape[1] / features.frames_per_second for u in (utterances or [fixed])]
    info.update(
        seconds=opts.seconds,
        frames=frames,
        n_mels=n_mels,
        utterances=len(utterances) or 1,
        length_s={
            "min": round(min(lengths), 3),
            "p50": round(float(np.percentile(lengths, 50)), 3),
            "p90": round(float(np.percentile(lengths, 90)), 3),
            "max": round(max(lengths), 3),
            "total": round(sum(lengths), 3),
        },
    )
    return info, utterances or [fixed], fixed, features


def corpus_features(root: Path, split: str, limit: int, cfg: LogMelConfig) -> list[np.ndarray]:
    """Log-mel features (the bundle's front-end) of the first ``limit`` utterances of a split."""
    from edgewise.audio import load_audio
    from edgewise.cloud.data.corpus import load_corpus
    from edgewise.features import log_mel

    utterances = load_corpus(root).split(split)[:limit]
    return [log_mel(load_audio(u.path, cfg.sample_rate), cfg)[None] for u in utterances]


# --------------------------------------------------------------------------------------------------
# Measuring


def rotated(items: list[Any], k: int) -> list[Any]:
    if not items:
        return items
    k %= len(items)
    return items[k:] + items[:k]


def measure_baselines(states: list[RowState]) -> dict[str, dict[str, Any]]:
    """VmHWM of a process that imports each runtime and loads no model."""
    out: dict[str, dict[str, Any]] = {}
    for runtime in dict.fromkeys(s.runtime for s in states if s.live and s.load):
        worker = WorkerProcess(f"baseline {runtime}")
        try:
            out[runtime] = worker.call("baseline", runtime=runtime)["memory"]
        except WorkerError as exc:
            log.warning("baseline process for %s failed: %s", runtime, exc)
        finally:
            worker.close()
    return out


def measure_cold(states: list[RowState], opts: BenchOptions) -> None:
    """``cold_runs`` fresh processes per row, rows rotated; the last one stays as the row's worker."""
    for k in range(opts.cold_runs):
        for state in rotated([s for s in states if s.live and s.load], k):
            request = dict(state.load)
            op = request.pop("op")
            worker = WorkerProcess(state.row["name"])
            try:
                reply = worker.call(op, **request)
            except WorkerError as exc:
                worker.close()
                state.fail(f"does not load: {exc}")
                continue
            state.cold.append(reply)
            if k < opts.cold_runs - 1:
                worker.close()
                continue
            state.worker, state.info = worker, reply
            try:
                worker.call("warmup", runs=opts.warmup)
                mem = worker.call("memory")["memory"]
                state.peak_mb, state.memory_source = mem["hwm_mb"], mem["source"]
            except WorkerError as exc:
                state.fail(f"failed while running: {exc}")


def _each_live(states: list[RowState], k: int, what: str, fn) -> None:
    for state in rotated([s for s in states if s.live and s.worker], k):
        try:
            fn(state)
        except WorkerError as exc:
            state.fail(f"failed during {what}: {exc}")


def measure_latency(states: list[RowState], opts: BenchOptions) -> int:
    per_round = max(1, math.ceil(opts.runs / opts.rounds))
    for r in range(opts.rounds):

        def one(state: RowState, r: int = r) -> None:
            reply = state.worker.call("latency", runs=per_round, start=r * per_round)
            state.ns += reply["ns"]
            state.index += reply["index"]
            state.round_ms.append(statistics.median(reply["ns"]) / 1e6)
            state.cpu_s += reply["cpu_s"]
            state.wall_s += reply["wall_s"]

        _each_live(states, r, "warm latency", one)
    return per_round * opts.rounds


def measure_throughput(states: list[RowState], opts: BenchOptions) -> None:
    for batch in opts.batches:
        _each_live(
            states, 0, f"batch-{batch} warm-up", lambda s, b=batch: s.worker.call("warmup", runs=2, batch=b)
        )
        for r in range(opts.rounds):

            def one(state: RowState, b: int = batch) -> None:
                reply = state.worker.call("throughput", batch=b, seconds=opts.block_seconds)
                state.throughput.setdefault(b, []).append(b * reply["calls"] / reply["elapsed_s"])

            _each_live(states, r, f"batch-{batch} throughput", one)
    for state in states:
        if state.live and state.worker:
            try:
                state.peak_after_mb = state.worker.call("memory")["memory"]["hwm_mb"]
            except WorkerError as exc:
                state.row["notes"].append(f"memory after the batches not read: {exc}")


# --------------------------------------------------------------------------------------------------
# Figures


def _median(values: list[float]) -> float:
    return float(statistics.median(values))


def cold_figures(state: RowState) -> dict[str, Any]:
    cold = state.cold
    totals = [c["load_ms"] + c["first_inference_ms"] for c in cold]
    return {
        "runs": len(cold),
        "import_ms": round(_median([c["import_ms"] for c in cold]), 3),
        "load_ms": round(_median([c["load_ms"] for c in cold]), 3),
        "first_inference_ms": round(_median([c["first_inference_ms"] for c in cold]), 3),
        "cold_ms": round(_median(totals), 3),
        "cold_ms_all": [round(t, 3) for t in totals],
    }


def latency_figures(ns: list[int]) -> dict[str, Any]:
    ms = np.asarray(ns, dtype=np.float64) / 1e6
    p50, p90, p99 = np.percentile(ms, [50, 90, 99])
    return {
        "p50": round(float(p50), 4),
        "p90": round(float(p90), 4),
        "p99": round(float(p99), 4),
        "mean": round(float(ms.mean()), 4),
        "min": round(float(ms.min()), 4),
        "runs": int(ms.size),
    }


def window_count(frames: int, window: WindowSpec) -> int:
    return int(split_windows(np.zeros((frames, 1), dtype=np.float32), window).shape[0])


def flops_figures(
    state: RowState,
    model_flops: dict[str, Any] | None,
    inputs: list[np.ndarray],
    fixed_frames: int,
    ceiling: dict[str, Any],
    window: WindowSpec | None,
) -> dict[str, Any]:
    """Achieved FLOP/s (median over warm runs of input FLOPs / latency) and its fraction of the ceiling."""
    if state.row["kind"] == "pytorch":
        base_flops, base_frames = state.info["flops"], fixed_frames
        source = f"torch FlopCounterMode on this model at {fixed_frames} frames"
    elif model_flops and model_flops.get("flops"):
        base_flops, base_frames = int(model_flops["flops"]), int(model_flops["frames"])
        source = f"manifest extra.flops ({model_flops.get('seconds')} s, {base_frames} frames)"
    else:
        return {
            "note": "flops unknown: the manifest has no extra.flops (bundle exported before it was recorded)"
        }
    notes = []
    if any(x.shape[1] != base_frames for x in inputs) or fixed_frames != base_frames:
        notes.append(
            f"scaled linearly in frames from {base_frames} frames (attention grows faster, so this is approximate)"
        )
    per_frame = base_flops / base_frames
    achieved = [
        per_frame * inputs[i].shape[1] / (t / 1e9) / 1e9 for i, t in zip(state.index, state.ns) if t > 0
    ]
    figures: dict[str, Any] = {
        "per_input": int(round(per_frame * fixed_frames)),
        "source": source,
        "achieved_gflops": _sig(_median(achieved)) if achieved else None,
    }
    if window is not None:
        n = window_count(fixed_frames, window)
        notes.append(
            f"the fixed-window model computes {n} window(s) of {window.frames} frames for a {fixed_frames}-frame "
            f"input ({n * window.frames} frames); FLOP/s counts the utterance's own FLOPs"
        )
    kind = "int8" if state.row["precision"] == "int8" else "fp32"
    figures["ceiling"] = kind
    top = ceiling.get(kind) or {}
    if top.get("status") == "ok" and figures["achieved_gflops"] is not None:
        figures["ceiling_value"] = round(top["value"], 3)
        figures["fraction_of_ceiling"] = figures["achieved_gflops"] / figures["ceiling_value"]
        if kind == "int8":
            notes.append("dynamic int8 still runs activation x activation matmuls (attention) in float")
    else:
        notes.append(f"{kind} ceiling unavailable: {top.get('reason', 'not measured')}")
    figures["note"] = "; ".join(notes) or None
    return figures


def finish_rows(
    states: list[RowState],
    bundle: Bundle,
    inputs: list[np.ndarray],
    fixed_frames: int,
    features: LogMelConfig,
    ceiling: dict[str, Any],
    baselines: dict[str, dict[str, Any]],
) -> None:
    model_flops = bundle.model(ROLE).extra.get("flops")
    arts = {a.path: a for a in bundle.artifacts(ROLE)}
    reference = next(
        (s for s in states if s.live and s.row["format"] == "onnx" and s.row["precision"] == "fp32"), None
    )
    for state in states:
        row = state.row
        if not state.live:
            continue
        row["runtime"] = state.info["runtime"]
        row["cold"] = cold_figures(state)
        row["latency_ms"] = latency_figures(state.ns)
        row["throughput"] = [
            {
                "batch": b,
                "utterances_per_s": round(_median(v), 3),
                "mode": "sequential" if state.info.get("sequential") else "batched",
            }
            for b, v in sorted(state.throughput.items())
        ]
        if state.info.get("sequential") and any(b > 1 for b in state.throughput):
            row["notes"].append(
                "batch 1 only (fixed window): batch B runs its B utterances one after another"
            )
        base = baselines.get(state.runtime or "")
        row["memory"] = {
            "peak_rss_mb": _r(state.peak_mb),
            "baseline_rss_mb": _r(base["hwm_mb"]) if base else None,
            "model_rss_mb": _r(state.peak_mb - base["hwm_mb"]) if base and state.peak_mb else None,
            "peak_rss_after_batches_mb": _r(state.peak_after_mb),
            "source": state.memory_source or "not measured",
        }
        audio_s = sum(inputs[i].shape[1] for i in state.index) / features.frames_per_second
        row["cpu"] = {
            "cpu_s_per_audio_s": _sig(state.cpu_s / audio_s),
            "cpu_per_wall": round(state.cpu_s / state.wall_s, 3) if state.wall_s else 0.0,
        }
        if row["kind"] == "pytorch":
            row["parameters"] = state.info["parameters"]
            row["size_bytes"] = 4 * state.info["parameters"]
            row["notes"] += state.info.get("notes", [])
        art = arts.get(row.get("artifact") or "")
        window = None
        if art is not None and art.extra.get("window"):
            window = WindowSpec.from_dict(art.extra["window"], where=f"{art.path} extra.window")
        row["flops"] = flops_figures(state, model_flops, inputs, fixed_frames, ceiling, window)
        if reference is not None and len(reference.round_ms) == len(state.round_ms):
            ratios = [a / b for a, b in zip(state.round_ms, reference.round_ms)]
            row["ratio_vs_onnx_fp32"] = round(_median(ratios), 4)
    if reference is None and any(s.live for s in states):
        for state in states:
            if state.live:
                state.row["notes"].append("no ratio: no ONNX fp32 row ran in this benchmark")


def _sig(value: float, digits: int = 4) -> float:
    """``value`` rounded to ``digits`` significant digits (small figures keep their precision)."""
    return float(f"{value:.{digits}g}")


def _r(value: float | None, digits: int = 2) -> float | None:
    return None if value is None else round(value, digits)


# --------------------------------------------------------------------------------------------------
# The whole run


def open_bundle(opts: BenchOptions, report: dict[str, Any]) -> Bundle:
    try:
        bundle = load_bundle(opts.bundle, verify=True, public_key=opts.key)
    except BundleError as exc:
        report["bundle"]["error"] = str(exc)
        raise BundleDoesNotVerify(f"bundle does not verify, nothing was benchmarked: {exc}", report) from None
    manifest = bundle.manifest
    classifier = manifest.models.get(ROLE)
    report["bundle"].update(
        name=manifest.name,
        version=manifest.version,
        task=manifest.task,
        verified=True,
        signature_verified=bundle.signature_verified,
        parameters=classifier.extra.get("parameters") if classifier else None,
        flops=classifier.extra.get("flops") if classifier else None,
    )
    if classifier is None:
        bundle.close()
        raise BundleDoesNotVerify(
            f"{opts.bundle}: the bundle has no {ROLE!r} model (roles: {sorted(manifest.models)})", report
        )
    return bundle


def busy_note(env: dict[str, Any]) -> str | None:
    """A warning when other work was running before the benchmark started (a shared machine)."""
    load, cores = env.get("load_average_start"), env.get("cores_usable") or env.get("cores_logical")
    if not load or not cores or load[0] < 0.5:
        return None
    return (
        f"the machine was busy when the benchmark started (1-min load average {load[0]:.2f} on {cores} cores): "
        "absolute figures may be pessimistic, and thread pools that spin (OpenMP in PyTorch) can slow down by "
        "orders of magnitude when a core is taken; ratios come from interleaved rounds and hold better"
    )


def check_options(opts: BenchOptions) -> None:
    for name in ("runs", "rounds", "cold_runs", "threads", "limit"):
        if getattr(opts, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(opts, name)}")
    if opts.warmup < 0:
        raise ConfigError(f"--warmup must be >= 0, got {opts.warmup}")
    if not opts.seconds > 0 or not opts.block_seconds > 0:
        raise ConfigError("--seconds and --block-seconds must be positive")
    if not opts.batches or any(b < 1 for b in opts.batches):
        raise ConfigError(f"--batches must be positive integers, got {opts.batches}")
    if opts.formats:
        unknown = sorted(set(opts.formats) - set(FORMATS))
        if unknown:
            raise ConfigError(f"--formats {' '.join(unknown)}: expected some of {', '.join(FORMATS)}")


def new_report(opts: BenchOptions, device: dict[str, Any]) -> dict[str, Any]:
    return {
        "schema": 1,
        "tool": "edgewise bench",
        "edgewise_version": __version__,
        "created": datetime.now(timezone.utc).replace(microsecond=0).isoformat(),
        "command": opts.command,
        "bundle": {"path": str(opts.bundle), "verified": False},
        "device": device,
        "emulated": emulation_note(),
        "rows": [],
        "notes": [],
        "plots": [],
    }


def run_bench(opts: BenchOptions, device: dict[str, Any]) -> dict[str, Any]:
    """Benchmark a bundle on this machine; returns the report (bench.json's content)."""
    check_options(opts)
    report = new_report(opts, device)
    t0 = time.perf_counter()
    bundle = open_bundle(opts, report)
    try:
        with tempfile.TemporaryDirectory(prefix="edgewise-bench-") as tmp:
            _measure(bundle, opts, report, Path(tmp))
    finally:
        bundle.close()
    report["notes"].append(f"benchmark wall time {time.perf_counter() - t0:.1f} s")
    return report


def _measure(bundle: Bundle, opts: BenchOptions, report: dict[str, Any], tmp: Path) -> None:
    env = environment(opts.threads, with_torch=opts.run is not None)
    env["emulated"] = report["emulated"]  # read once: the report and its environment agree
    input_info, inputs, fixed, features = make_inputs(bundle, opts, tmp / "inputs.npz")
    env["input"] = input_info
    report["environment"] = env
    report["settings"] = {
        "runs": opts.runs,
        "warmup": opts.warmup,
        "rounds": opts.rounds,
        "batches": list(opts.batches),
        "block_seconds": opts.block_seconds,
        "cold_runs": opts.cold_runs,
        "seed": opts.seed,
    }
    states, notes = plan_rows(bundle, opts, str(tmp / "inputs.npz"), tmp / "engines")
    report["notes"] += notes
    busy = busy_note(env)
    if busy:
        report["notes"].append(busy)
    if opts.profile is not None and opts.profile.arch != env["machine"]:
        report["notes"].append(
            f"device profile {opts.profile.name} is {opts.profile.arch} but this machine is {env['machine']}: "
            "the figures are this machine's (profile threads and providers used)"
        )
    log.info("ceiling: fp32 and int8 GEMM, %d threads", opts.threads)
    ceiling_start = measure_ceiling(opts.threads, opts.ceiling_sizes, opts.ceiling_repeats)
    try:
        log.info("baseline processes and cold loads (%d per row)", opts.cold_runs)
        baselines = measure_baselines(states)
        measure_cold(states, opts)
        log.info("warm latency: %d runs in %d interleaved rounds", opts.runs, opts.rounds)
        measure_latency(states, opts)
        log.info("throughput at batch %s", ", ".join(map(str, opts.batches)))
        measure_throughput(states, opts)
    finally:
        for state in states:
            if state.worker is not None:
                state.worker.close()
                state.worker = None
    log.info("ceiling again, after the rows")
    ceiling_end = measure_ceiling(opts.threads, opts.ceiling_sizes, opts.ceiling_repeats)
    report["ceiling"] = combine({"start": ceiling_start, "end": ceiling_end})
    finish_rows(states, bundle, inputs, fixed.shape[1], features, report["ceiling"], baselines)
    report["rows"] = [s.row for s in states]
    env["load_average_end"] = load_average()
