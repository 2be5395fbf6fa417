"""The export parity report: every format and precision of one SER model, side by side, in one run.

For a finished training run (by default the tiny HRF+KD student of the cloud-speech report):

1. ``edgewise export`` with every format and precision the table has (ONNX fp32/fp16/int8 dynamic
   and static, TFLite fp32/fp16/int8 dynamic and static, TensorRT's build graphs), the parity gate
   on the validation split included;
2. each artifact loaded in the edge runtime's own backend (onnxruntime CPU, ai-edge-litert with
   XNNPACK), next to PyTorch fp32 (the merged model): UA on the test split, max |logit diff| against
   PyTorch on the test split (run the same way: whole utterances, or the same windows for TFLite),
   file size, and single-utterance latency (batch 1, whole test utterances, 2 threads; every model
   timed on the same utterances in interleaved rounds, median of per-round medians).

Writes ``OUT/export_report.json``, ``OUT/export_report.md`` and ``OUT/export_latency_size.png``::

    .venv/bin/python benchmarks/export_report.py \
        --run benchmarks/work/ser/conv_transformer-hrf-kd-s0 --out benchmarks/results
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from report_files import write_report

log = logging.getLogger("export_report")

FORMAT_ARGS = ["--format", "onnx", "--format", "tflite", "--format", "tensorrt"]
FORMAT_ARGS += ["--precision", "fp32", "--precision", "fp16", "--precision", "int8"]
FORMAT_ARGS += ["--quant", "dynamic", "--quant", "static"]


def export_bundle(run: Path, work: Path, threads: int) -> tuple[Path, float]:
    from edgewise.cli import main

    if work.exists():
        shutil.rmtree(work)
    t0 = time.perf_counter()
    code = main(["-q", "export", str(run), "--out", str(work), *FORMAT_ARGS, "--threads", str(threads)])
    if code != 0:
        raise SystemExit(f"export failed with exit code {code}")
    return next(p for p in work.iterdir() if p.is_dir()), time.perf_counter() - t0


def test_inputs(run: Path, limit: int | None) -> tuple[list[np.ndarray], np.ndarray, tuple[str, ...]]:
    from edgewise.cloud.train.run import read_run_info
    from edgewise.export import data

    info = read_run_info(run)
    inputs, labels = data.validation_set(data.export_corpus(info, None), info, split="test", workers=2)
    if limit:
        inputs, labels = inputs[:limit], labels[:limit]
    return inputs, labels, info.labels


def load_models(bundle_dir: Path, run: Path, threads: int) -> list[dict]:
    """PyTorch fp32 first, then one backend per artifact that runs on this machine's CPU."""
    import torch

    from edgewise.bundle import load_bundle
    from edgewise.cloud.train.run import load_run_model
    from edgewise.edge.backends import LiteRTBackend, OnnxBackend
    from edgewise.edge.windows import WindowSpec, run_windowed
    from edgewise.export.merge import merge_for_export

    torch.set_num_threads(threads)
    model, info = load_run_model(run)
    merged, _ = merge_for_export(model, info.features.n_mels)
    merged.eval()

    def pytorch(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return merged(torch.from_numpy(x)).numpy()

    weights = run / "model.safetensors"
    rows = [
        {
            "name": "pytorch fp32",
            "format": "pytorch",
            "precision": "fp32",
            "runtime": f"torch {torch.__version__}",
            "size_bytes": weights.stat().st_size,
            "run": pytorch,
            "window": None,
            "val_parity": None,
        }
    ]
    bundle = load_bundle(bundle_dir)
    for art in bundle.artifacts("classifier"):
        path = bundle.artifact_path(art)
        quant = art.quant
        label = f"{art.format} {art.precision}" + (f" ({quant})" if quant else "")
        row = {
            "name": label,
            "path": art.path,
            "format": art.format,
            "precision": art.precision,
            "quant": quant,
            "size_bytes": art.size_bytes,
            "window": art.extra.get("window"),
            "val_parity": art.parity,
        }
        if art.format == "tflite":
            window = WindowSpec.from_dict(art.extra["window"])
            backend = LiteRTBackend(path, threads, window, precision=art.precision, quant=quant)
        elif art.format == "tensorrt-onnx":
            row["runtime"] = "not run: no TensorRT here (graph checked in onnxruntime at export)"
            row["run"] = None
            rows.append(row)
            continue
        else:
            backend = OnnxBackend(path, threads)
        row["runtime"] = backend.describe()
        row["run"] = backend
        rows.append(row)
    window = next((r["window"] for r in rows if r.get("window")), None)
    if window:  # PyTorch run the way TFLite runs: separates the window policy from the conversion
        spec = WindowSpec.from_dict(window)
        rows.insert(
            1,
            {
                "name": f"pytorch fp32, {spec.frames}-frame windows",
                "format": "pytorch",
                "precision": "fp32",
                "runtime": rows[0]["runtime"],
                "size_bytes": rows[0]["size_bytes"],
                "run": lambda x: run_windowed(pytorch, x, spec),
                "window": window,
                "val_parity": None,
            },
        )
    return rows


def pytorch_windowed(rows: list[dict], window: dict, x: np.ndarray) -> np.ndarray:
    from edgewise.edge.windows import WindowSpec, run_windowed

    return run_windowed(rows[0]["run"], x, WindowSpec.from_dict(window))


def accuracy(rows: list[dict], inputs: list[np.ndarray], labels: np.ndarray, names: tuple[str, ...]) -> None:
    from edgewise.export.parity import metric_of

    reference = np.concatenate([rows[0]["run"](x) for x in inputs])
    windowed: dict[int, np.ndarray] = {}
    for row in rows:
        if row["run"] is None:
            continue
        logits = reference if row is rows[0] else np.concatenate([row["run"](x) for x in inputs])
        if row["window"]:
            key = row["window"]["frames"]
            if key not in windowed:
                windowed[key] = np.concatenate([pytorch_windowed(rows, row["window"], x) for x in inputs])
            ref = windowed[key]
        else:
            ref = reference
        row["test_ua"] = metric_of(logits, labels, names)
        row["test_max_abs_diff"] = float(np.abs(logits - ref).max())
        row["test_top1_agreement"] = float(np.mean(logits.argmax(1) == ref.argmax(1)))


def latency(rows: list[dict], inputs: list[np.ndarray], rounds: int) -> None:
    """Median ms per utterance; every model runs the same utterances in each (rotated) round."""
    live = [r for r in rows if r["run"] is not None]
    for r in live:  # warm-up: first-call allocations, XNNPACK packing, ORT arena
        for x in inputs[:5]:
            r["run"](x)
    per_round: dict[str, list[float]] = {r["name"]: [] for r in live}
    for k in range(rounds):
        order = live[k % len(live) :] + live[: k % len(live)]
        for r in order:
            times = []
            for x in inputs:
                t0 = time.perf_counter()
                r["run"](x)
                times.append((time.perf_counter() - t0) * 1000)
            per_round[r["name"]].append(statistics.median(times))
    base = per_round["pytorch fp32"]
    onnx_base = per_round.get("onnx fp32")
    for r in live:
        ms = per_round[r["name"]]
        r["latency_ms"] = statistics.median(ms)
        r["latency_vs_pytorch"] = statistics.median(a / b for a, b in zip(ms, base))
        if onnx_base:
            r["latency_vs_onnx_fp32"] = statistics.median(a / b for a, b in zip(ms, onnx_base))


def markdown(report: dict) -> str:
    rows = report["rows"]
    fp32_sizes = {r["format"]: r["size_bytes"] for r in rows if r["precision"] == "fp32"}
    lines = [
        "# Export parity report: the tiny SER model in every format",
        "",
        f"Run: `{report['run']}` ({report['parameters']} parameters). Test split: {report['test_utterances']} "
        f"utterances, {report['frames_median']} frames median. Machine: {report['machine']}, {report['threads']} "
        f"threads. Export of all {report['artifacts']} artifacts with the parity gate: {report['export_seconds']:.0f} s.",
        "",
        "Max |diff| is against PyTorch fp32 run the same way (whole utterances; TFLite: the same "
        f"{report['window_frames']}-frame windows). Latency: one whole test utterance, batch 1, median over "
        f"{report['rounds']} interleaved rounds; ratios are medians of per-round ratios.",
        "",
        "| artifact | runtime | val parity | max abs diff (test) | top-1 agree | test UA | UA vs PyTorch (pt) "
        "| size KB | size vs fp32 | latency ms | vs PyTorch | vs ONNX fp32 |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    base_ua = rows[0]["test_ua"]
    for r in rows:
        parity = r["val_parity"]
        gate = "-" if parity is None else ("passed" if parity["passed"] else "FAILED")
        if r.get("run_skipped"):
            lines.append(
                f"| {r['name']} | {r['runtime']} | {gate} | - | - | - | - | {r['size_bytes'] / 1024:.0f} | "
                f"{r['size_bytes'] / fp32_sizes.get(r['format'], r['size_bytes']):.0%} | - | - | - |"
            )
            continue
        size_ratio = r["size_bytes"] / fp32_sizes.get(r["format"], r["size_bytes"])
        lines.append(
            f"| {r['name']} | {r['runtime']} | {gate} | {r['test_max_abs_diff']:.2g} | "
            f"{100 * r['test_top1_agreement']:.1f}% | {r['test_ua']:.4f} | {100 * (r['test_ua'] - base_ua):+.1f} | "
            f"{r['size_bytes'] / 1024:.0f} | {size_ratio:.0%} | {r['latency_ms']:.2f} | "
            f"{r['latency_vs_pytorch']:.2f}x | {r.get('latency_vs_onnx_fp32', float('nan')):.2f}x |"
        )
    lines += [
        "",
        "TensorRT rows carry the ONNX graph and build spec; the engine is built on the device (no GPU here), so "
        "they have a gate result from onnxruntime but no latency.",
        "",
        "Goals of the export issue:",
    ]
    for goal in report["goals"]:
        lines.append(f"- {goal['text']}: **{'met' if goal['met'] else 'NOT met'}** ({goal['figure']})")
    return "\n".join(lines) + "\n"


def goals(rows: list[dict]) -> list[dict]:
    by = {r["name"]: r for r in rows}
    base = by["pytorch fp32"]["test_ua"]
    out = []
    onnx_fp32 = by["onnx fp32"]["size_bytes"]
    for name in ("onnx int8 (dynamic)", "onnx int8 (static)"):
        r = by[name]
        drop = 100 * (base - r["test_ua"])
        ratio = r["size_bytes"] / onnx_fp32
        out.append(
            {
                "text": f"{name}: UA within 1 point of PyTorch fp32 and size at most 30% of ONNX fp32",
                "met": drop <= 1.0 and ratio <= 0.30,
                "figure": f"UA {r['test_ua']:.4f} vs {base:.4f} ({-drop:+.1f} pt), size {ratio:.1%}",
            }
        )
    windowed = next(r for r in rows if r["name"].startswith("pytorch fp32, "))
    for name in ("tflite int8 (dynamic)", "tflite int8 (static)"):
        r = by[name]
        drop = 100 * (base - r["test_ua"])
        drop_w = 100 * (windowed["test_ua"] - r["test_ua"])
        out.append(
            {
                "text": f"{name}: runs in ai-edge-litert, UA within 2 points of PyTorch fp32",
                "met": drop <= 2.0 and r["runtime"].startswith("ai-edge-litert"),
                "figure": f"UA {r['test_ua']:.4f} vs {base:.4f} ({-drop:+.1f} pt; {-drop_w:+.1f} pt vs PyTorch "
                f"on the same windows) in {r['runtime']}",
            }
        )
    return out


def plot(report: dict, out: Path) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in report["rows"] if "latency_ms" in r]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    names = [r["name"] for r in rows]
    ax1.barh(names, [r["latency_ms"] for r in rows], color="tab:blue")
    ax1.set_xlabel("ms per utterance (batch 1, 2 threads)")
    ax1.invert_yaxis()
    ax2.barh(names, [r["size_bytes"] / 1024 for r in rows], color="tab:orange")
    ax2.set_xlabel("file size (KB)")
    ax2.invert_yaxis()
    ax2.set_yticklabels([])
    fig.suptitle("Tiny SER model: latency and size by format")
    fig.tight_layout()
    path = out / "export_latency_size.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path.name


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=Path("benchmarks/work/ser/conv_transformer-hrf-kd-s0"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--limit", type=int, help="use only the first N test utterances")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="export-report-") as tmp:
        bundle_dir, export_seconds = export_bundle(args.run, Path(tmp) / "bundle", args.threads)
        inputs, labels, names = test_inputs(args.run, args.limit)
        rows = load_models(bundle_dir, args.run, args.threads)
        log.info("accuracy on %d test utterances", len(inputs))
        accuracy(rows, inputs, labels, names)
        log.info("latency: %d rounds", args.rounds)
        latency(rows, inputs, args.rounds)
    for r in rows:
        r["run_skipped"] = r.pop("run") is None
    meta = json.loads((args.run / "model.json").read_text())
    window = next(r["window"]["frames"] for r in rows if r.get("window"))
    report = {
        "schema": 1,
        "run": str(args.run),
        "parameters": meta.get("parameters") or meta.get("model", {}).get("parameters"),
        "test_utterances": len(inputs),
        "frames_median": int(np.median([x.shape[1] for x in inputs])),
        "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}",
        "threads": args.threads,
        "rounds": args.rounds,
        "window_frames": window,
        "export_seconds": export_seconds,
        "artifacts": len(rows) - 1,
        "rows": rows,
        "goals": goals(rows),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    report["plot"] = plot(report, args.out)
    report["wall_seconds"] = time.perf_counter() - t0
    write_report(args.out, "export_report", report, markdown(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
