"""The recommenders side by side on ML-100K: the figures issue 14 asks for, from one set of runs.

For each seed it trains (or reuses, when finished) under ``--runs DIR``:

    sasrec-S      SASRec, the classic baseline              edgewise train rec --config sasrec
    encdec-S      the encoder-decoder generator (TIGER)     edgewise train rec --config encdec
    lazy-S        the lazy decoder-only generator (cloud)   edgewise train rec --config lazy
    small-S       the device decoder, distilled from lazy   edgewise train rec --config lazy-small --teacher lazy-S
    aligned-S     lazy-S aligned with feedback              edgewise train align --policy lazy-S --config align-model
                  (ML-100K has ratings only: they are the feedback, and a reward model learns them)

then exports each ``small-S`` run (``edgewise export``: ONNX fp32 and int8, gated) into
``bundles-S`` and reports, all on the same leave-last-out split with full ranking:

* quality: HR@5/10 and NDCG@5/10 on the test users, mean and standard deviation over seeds, plus
  any extra runs given with ``--run LABEL=RUN`` (e.g. an aligned run), and the edge decoder: the
  bundle's int8 graphs in the torch-free runtime (onnxruntime, numpy beam search) on the same users;
* edge latency: ``edgewise bench`` of the first seed's bundle against its PyTorch run (top-10,
  beam 20, one request at a time): p50 and p99 per engine;
* compute: training FLOPs per (history, next item) sample and inference FLOPs per request (full
  50-item history, beam 20) counted by PyTorch's FLOP counter, with the wall time of one training
  step and one request, for the lazy model against the encoder-decoder (and SASRec);
* invalid IDs: the share of generated IDs that are no item, decoding with the trie and without it;
* tokenizer sources (``--sources``): for each item-embedding source (collaborative, text, both,
  DaRec) the embeddings' own next-item recall (the test user's last history item's nearest
  neighbours, itself excluded, against the test item: recall@10 and @50) and the semantic IDs'
  collision rate; cached in RUNS/sources.json.

Writes OUT/rec_report.{json,md} and OUT/rec_report.png::

    .venv/bin/python benchmarks/rec_report.py --runs ~/edgewise-runs/rec-report --seeds 0 1 2 --out benchmarks/results
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from report_files import write_report

KINDS = {  # label -> (preset, the run it starts from: a teacher, or the policy to align)
    "sasrec": ("sasrec", None),
    "encdec": ("encdec", None),
    "lazy": ("lazy", None),
    "small": ("lazy-small", "lazy"),
    "aligned": ("align-model", "lazy"),
}
NAMES = {
    "sasrec": "SASRec",
    "encdec": "encoder-decoder",
    "lazy": "lazy decoder-only",
    "small": "lazy decoder-only, device size (distilled)",
    "aligned": "lazy decoder-only, aligned (GBPO + DARS, reward model on ratings)",
}
METRICS = ("hr@5", "ndcg@5", "hr@10", "ndcg@10")


def _python() -> str:
    return str(Path(sys.executable))


def _shown(cmd: list[str]) -> str:
    """How the report prints a `python -m edgewise ...` command: as the `edgewise` CLI."""
    return " ".join(["edgewise", *cmd[3:]])


def train_command(
    label: str, seed: int, runs: Path, data: str, threads: int, overrides: list[str] = ()
) -> list[str]:
    preset, parent = KINDS[label]
    cmd = [_python(), "-m", "edgewise", "-q", "train"]
    if preset.startswith("align-"):
        cmd += ["align", "--policy", str(runs / f"{parent}-{seed}")]
    else:
        cmd += ["rec"] + (["--teacher", str(runs / f"{parent}-{seed}")] if parent else [])
    cmd += ["--config", preset, "--data", data, "--out", str(runs / f"{label}-{seed}")]
    cmd += ["--seed", str(seed), "--set", f"threads={threads}"]
    return cmd + [arg for item in overrides for arg in ("--set", item)]


def ensure_run(
    label: str, seed: int, runs: Path, data: str, threads: int, log: list[str], overrides: list[str] = ()
) -> Path:
    run = runs / f"{label}-{seed}"
    cmd = train_command(label, seed, runs, data, threads, overrides)
    log.append(_shown(cmd))
    if (run / "metrics.json").is_file():
        return run
    if (run / "checkpoints" / "last.safetensors").is_file():
        cmd.append("--resume")
    print("training:", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)
    return run


def ensure_bundle(run: Path, runs: Path, seed: int, threads: int, log: list[str]) -> Path:
    """The export of the device decoder's run (fp32 and int8 ONNX, parity-gated): RUNS/bundles-S/NAME."""
    out = runs / f"bundles-{seed}"
    cmd = [_python(), "-m", "edgewise", "-q", "export", str(run), "--out", str(out)]
    cmd += ["--threads", str(threads)]
    log.append(_shown(cmd))
    found = sorted(p for p in out.glob("*") if (p / "manifest.json").is_file()) if out.is_dir() else []
    if not found:
        print("exporting:", " ".join(cmd), flush=True)
        subprocess.run(cmd, check=True)
        found = sorted(p for p in out.glob("*") if (p / "manifest.json").is_file())
    return found[0]


def edge_quality(bundle: Path, run: Path, data: str, precision: str, threads: int) -> dict[str, float]:
    """HR/NDCG@5/10 of the bundle's ``precision`` graphs in the edge runtime on the test users."""
    from edgewise.cloud.models.rec.config import RecTrainConfig
    from edgewise.cloud.rec.metrics import ranking_metrics
    from edgewise.cloud.train.rec_job import RecData, load_rec_run
    from edgewise.config import load_config, read_yaml
    from edgewise.edge.pipelines.rec import RecPipeline
    from edgewise.export.rec import edge_beams
    from edgewise.rec_ids import pad_left

    pipe, _ = RecPipeline.open_precision(bundle, precision, threads)
    _, info = load_rec_run(run)
    cfg = load_config(RecTrainConfig, read_yaml(run / "config.yaml"), name=str(run / "config.yaml"))
    rec_data = RecData(cfg, data, teacher_ids=info["semantic_ids"])
    histories = pad_left(rec_data.test_history, pipe.settings.max_len)
    beams = edge_beams(pipe.context, pipe.decoder, histories, pipe.tables.trie, pipe.settings, cfg.beam)
    return ranking_metrics(beams.items[:, : cfg.top_k], rec_data.test_target, ks=(5, 10))


def edge_latency(bundle: Path, run: Path, runs: Path, threads: int, log: list[str]) -> dict[str, Any]:
    """``edgewise bench`` of ``bundle`` against its PyTorch run: p50/p99 per engine (ms)."""
    out = runs / f"bench-{bundle.name}"
    cmd = [_python(), "-m", "edgewise", "-q", "bench", str(bundle), "--run", str(run), "--out", str(out)]
    cmd += ["--threads", str(threads)]
    log.append(_shown(cmd))
    if not (out / "bench.json").is_file():
        print("benchmarking:", " ".join(cmd), flush=True)
        subprocess.run(cmd, check=True)
    rows = json.loads((out / "bench.json").read_text())["rows"]
    return {
        label: {"p50_ms": row["latency_ms"]["p50"], "p99_ms": row["latency_ms"]["p99"], **{
            k: row[k] for k in ("hr@10", "ndcg@10", "same_topk") if k in row}}
        for label, row in rows.items()
    }  # fmt: skip


def compute_costs(runs: dict[str, Path], threads: int) -> dict[str, Any]:
    """FLOPs and wall time per training sample and per request for each model kind."""
    import torch

    from edgewise.cloud.models.rec.beam import TorchTrie
    from edgewise.cloud.rec.compute import inference_cost, training_flops_per_sample
    from edgewise.cloud.train.rec_job import load_rec_run
    from edgewise.rec_ids import PrefixTrie

    torch.set_num_threads(threads)
    rng = np.random.default_rng(0)
    out = {}
    for label, run in runs.items():
        model, info = load_rec_run(run)
        n, length = info["n_items"], model.config.max_len
        window = torch.from_numpy(rng.integers(1, n + 1, (64, length + 1)))
        if info["kind"] == "encdec":
            history, targets = window[:, :-1], window[:, -1:]
        else:
            history, targets = window[:, :-1], window[:, 1:]
        train = training_flops_per_sample(model, history, targets)
        started = time.perf_counter()
        for _ in range(3):
            training_flops_per_sample(model, history, targets)
        step_ms = (time.perf_counter() - started) / 3 * 1000
        trie = None
        if info["semantic_ids"] is not None:
            trie = TorchTrie.from_trie(PrefixTrie.build(info["semantic_ids"]))
        infer = inference_cost(model, history[:1], trie, 20, 10)
        out[label] = {
            "kind": info["kind"],
            "parameters": info.get("parameters"),
            "train_mflops_per_sample": round(train["flops_per_sample"] / 1e6, 3),
            "train_step_ms_per_sample": round(step_ms / max(1, train["samples"]), 4),
            "infer_mflops_per_request": round(infer["flops_per_request"] / 1e6, 3),
            "infer_ms_p50": round(infer["ms_p50"], 3),
        }
    return out


def tokenizer_sources(data: str, runs: Path) -> dict[str, Any]:
    """Per item-embedding source: next-item recall of the embeddings, and the IDs' collisions."""
    cache = runs / "sources.json"
    if cache.is_file():
        return json.loads(cache.read_text())
    from edgewise.cloud.data.rec_data import leave_last_out, load_rec_dataset
    from edgewise.cloud.rec.item_embeddings import SOURCES, ItemEmbeddingConfig, build_item_embeddings
    from edgewise.cloud.rec.tokenizer import TokenizerConfig, build_semantic_ids

    ds = load_rec_dataset(data)
    split = leave_last_out(ds)
    train = [np.asarray(x) for x in split.train]
    popularity = np.bincount(np.concatenate(train), minlength=ds.n_items)
    last = np.array([h[-1] for h in split.test_history])
    target = np.asarray(split.test_target)
    rows = np.arange(len(last))
    out = {}
    for source in SOURCES:
        started = time.perf_counter()
        emb = build_item_embeddings(source, train, ds.n_items, ds.item_texts(), ItemEmbeddingConfig())
        unit = emb.vectors / np.maximum(np.linalg.norm(emb.vectors, axis=1, keepdims=True), 1e-12)
        sims = unit[last] @ unit.T
        sims[rows, last] = -np.inf
        rank = (sims > sims[rows, target][:, None]).sum(1)
        _, report = build_semantic_ids(emb.vectors, TokenizerConfig(source=source), popularity)
        out[source] = {
            "recall@10": round(float((rank < 10).mean()), 4),
            "recall@50": round(float((rank < 50).mean()), 4),
            "collision_rate": round(report["collision_rate"], 4),
            "largest_group": report["largest_group"],
            "seconds": round(time.perf_counter() - started, 1),
        }
        print("tokenizer source", source, out[source], flush=True)
    runs.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps(out, indent=2) + "\n")
    return out


SNAPSHOT_FILES = ("config.yaml", "model.json", "metrics.json", "history.jsonl")


def snapshot(runs: Path, out: Path) -> list[str]:
    """Copy the small files of every finished run under ``runs`` into ``out/LABEL-SEED/`` (no
    weights): what a later session, on another machine, needs to know of the runs done so far."""
    import shutil

    done = []
    for run in sorted(p for p in runs.glob("*-*") if (p / "metrics.json").is_file()):
        (out / run.name).mkdir(parents=True, exist_ok=True)
        for name in SNAPSHOT_FILES:
            if (run / name).is_file():
                shutil.copy2(run / name, out / run.name / name)
        done.append(run.name)
    return done


def summarize(values: list[float]) -> dict[str, float]:
    arr = np.asarray(values, dtype=float)
    return {"mean": round(float(arr.mean()), 5), "std": round(float(arr.std()), 5), "n": len(values)}


def markdown(report: dict[str, Any]) -> str:
    lines = [f"# Recommenders on {report['data']} (issue 14)", ""]
    lines += [f"Data: {report['data']}; leave-last-out, full ranking over all items; test users; "
              f"seeds {report['seeds']}. Generated {report['created']} on {report['machine']}.", ""]  # fmt: skip
    lines += ["| model | HR@5 | NDCG@5 | HR@10 | NDCG@10 | seeds |", "|---|---|---|---|---|---|"]
    for row in report["quality"].values():
        cells = [f"{row[m]['mean']:.4f} ± {row[m]['std']:.4f}" for m in METRICS]
        lines.append(f"| {row['name']} | {' | '.join(cells)} | {row[METRICS[0]]['n']} |")
    bar = report.get("bar")
    if bar:
        lines += ["", f"Bar (lazy decoder-only above SASRec on NDCG@10, same run): **{bar['verdict']}** "
                      f"({bar['lazy']:.4f} vs {bar['sasrec']:.4f})."]  # fmt: skip
    lines += ["", "## Compute (one seed's models; FLOPs counted by torch.utils.flop_counter)", ""]
    lines += ["| model | parameters | train MFLOPs / sample | train ms / sample | infer MFLOPs / request | infer ms p50 |",
              "|---|---|---|---|---|---|"]  # fmt: skip
    for label, row in report["compute"].items():
        lines.append(
            f"| {NAMES.get(label, label)} | {row['parameters']} | {row['train_mflops_per_sample']} | "
            f"{row['train_step_ms_per_sample']} | {row['infer_mflops_per_request']} | {row['infer_ms_p50']} |"
        )
    ratio = report.get("lazy_vs_encdec")
    if ratio:
        lines += ["", f"Lazy against encoder-decoder: training FLOPs per sample {ratio['train_flops']:.1%} less, "
                      f"inference FLOPs per request {ratio['infer_flops']:.1%} less."]  # fmt: skip
    if report.get("edge_latency"):
        lines += ["", "## Edge decoding, top-10 with beam 20, one request at a time, 1 thread (`edgewise bench`)", "",
                  "| engine | p50 ms | p99 ms |", "|---|---|---|"]  # fmt: skip
        for label, row in report["edge_latency"].items():
            lines.append(f"| {label} | {row['p50_ms']:.2f} | {row['p99_ms']:.2f} |")
    lines += ["", "## Invalid IDs generated (test users, beam 20)", "", "| model | with the trie | without |",
              "|---|---|---|"]  # fmt: skip
    for label, row in report["invalid_ids"].items():
        lines.append(f"| {NAMES.get(label, label)} | {row['with_trie']:.4f} | {row['without_trie']:.4f} |")
    if report.get("sources"):
        lines += ["", "## Tokenizer sources (embeddings' next-item recall from the last history item; ID collisions)", "",
                  "| source | recall@10 | recall@50 | collision rate | largest group |", "|---|---|---|---|---|"]  # fmt: skip
        for source, row in report["sources"].items():
            lines.append(f"| {source} | {row['recall@10']:.4f} | {row['recall@50']:.4f} | "
                         f"{row['collision_rate']:.3f} | {row['largest_group']} |")  # fmt: skip
    lines += ["", "## Commands", "", "```"] + report["commands"] + ["```", ""]
    return "\n".join(lines)


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(report["quality"])
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, metric in zip(axes, ("hr@10", "ndcg@10"), strict=True):
        means = [report["quality"][k][metric]["mean"] for k in labels]
        stds = [report["quality"][k][metric]["std"] for k in labels]
        ax.bar(range(len(labels)), means, yerr=stds, capsize=4, color="#4c72b0")
        ax.set_xticks(range(len(labels)), labels, rotation=20)
        ax.set_title(f"{metric.upper()} on ML-100K test users")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=Path, required=True, help="where the runs are trained (or found)")
    parser.add_argument("--data", default="ml-100k")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--kinds", nargs="+", default=list(KINDS), choices=list(KINDS))
    parser.add_argument(
        "--run", action="append", default=[], help="LABEL=RUN: one more finished run per label"
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="passed to every training command (keys both `train rec` and `train align` know, e.g. optim.steps)",
    )  # fmt: skip
    parser.add_argument("--no-edge", action="store_true", help="skip the export, edge quality and latency")
    parser.add_argument("--sources", action="store_true", help="compare the tokenizer's embedding sources")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument(
        "--snapshot", type=Path, metavar="DIR",
        help="only copy the finished runs' small files (config, model.json, metrics, history) into DIR/LABEL-SEED",
    )  # fmt: skip
    args = parser.parse_args()
    if args.snapshot:
        print("snapshot:", ", ".join(snapshot(args.runs, args.snapshot)) or "no finished run")
        return 0

    commands: list[str] = []
    runs: dict[str, dict[int, Path]] = {}
    for seed in args.seeds:
        for label in args.kinds:
            runs.setdefault(label, {})[seed] = ensure_run(
                label, seed, args.runs, args.data, args.threads, commands, args.overrides
            )
    for item in args.run:
        label, sep, path = item.partition("=")
        if not sep:
            parser.error(f"--run {item!r}: expected LABEL=RUN")
        runs.setdefault(label, {})[len(runs.get(label, {}))] = Path(path)
    quality, invalid = {}, {}
    for label, by_seed in runs.items():
        metrics = [json.loads((run / "metrics.json").read_text()) for run in by_seed.values()]
        row: dict[str, Any] = {"name": NAMES.get(label, label)}
        for m in METRICS:
            row[m] = summarize([x["test"][m] for x in metrics])
        quality[label] = row
        if "test_unconstrained" in metrics[0]:
            invalid[label] = {
                "with_trie": float(np.mean([x["test"]["invalid_rate"] for x in metrics])),
                "without_trie": float(np.mean([x["test_unconstrained"]["invalid_rate"] for x in metrics])),
            }
    latency = None
    if "small" in runs and not args.no_edge:
        edge_rows = []
        for seed, run in sorted(runs["small"].items()):
            bundle = ensure_bundle(run, args.runs, seed, args.threads, commands)
            edge_rows.append(edge_quality(bundle, run, args.data, "int8", args.threads))
            if latency is None:
                latency = edge_latency(bundle, run, args.runs, 1, commands)
        quality["edge-int8"] = {"name": "device decoder, ONNX int8 in the edge runtime"} | {
            m: summarize([r[m] for r in edge_rows]) for m in METRICS
        }
    costed = ("sasrec", "encdec", "lazy", "small")  # an aligned run costs what its policy does
    first = {label: by_seed[min(by_seed)] for label, by_seed in runs.items() if label in costed}
    compute = compute_costs(first, args.threads)
    report: dict[str, Any] = {
        "data": args.data,
        "seeds": args.seeds,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}, {args.threads} threads",
        "quality": quality,
        "compute": compute,
        "invalid_ids": invalid,
        "edge_latency": latency,
        "sources": tokenizer_sources(args.data, args.runs) if args.sources else None,
        "commands": commands + [" ".join(["python", *sys.argv])],
    }
    if "lazy" in quality and "sasrec" in quality:
        lazy, sas = quality["lazy"]["ndcg@10"]["mean"], quality["sasrec"]["ndcg@10"]["mean"]
        report["bar"] = {"lazy": lazy, "sasrec": sas, "verdict": "met" if lazy > sas else "not met"}
    if "lazy" in compute and "encdec" in compute:
        report["lazy_vs_encdec"] = {
            "train_flops": 1
            - compute["lazy"]["train_mflops_per_sample"] / compute["encdec"]["train_mflops_per_sample"],
            "infer_flops": 1
            - compute["lazy"]["infer_mflops_per_request"] / compute["encdec"]["infer_mflops_per_request"],
        }
    write_report(args.out, "rec_report", report, markdown(report))
    plot(report, args.out / "rec_report.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
