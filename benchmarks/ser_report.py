"""The cloud-speech report: corpus difficulty, HRF vs plain, KD vs no KD, merged-model cost.

Everything in one run so that ratios hold on a noisy machine:

1. the eGeMAPS + logistic-regression baseline on the corpus (how hard is it?);
2. the teacher (base Conformer, plain);
3. for each backbone, the tiny model trained plain and with HRF, over several seeds;
4. the tiny HRF student with and without distillation from the teacher, same seeds;
5. PyTorch latency of the tiny model (batch 1, 3 s of audio, 2 threads): HRF training form vs
   merged vs the plain backbone, interleaved, with parameter counts.

Writes ``OUT/ser_report.json``, ``OUT/ser_report.md`` and ``OUT/ser_*.png``. Usage::

    .venv/bin/python benchmarks/ser_report.py --corpus demo-out/corpus --out benchmarks/results
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import statistics
import time
from pathlib import Path

from report_files import write_report

ARCHS = ("conv_transformer", "conformer", "speechformer")
SHORT = {"conv_transformer": "ConvT", "conformer": "Conformer", "speechformer": "SpeechF"}
log = logging.getLogger("ser_report")


def train(preset: str, corpus: Path, out: Path, overrides: list[str], teacher: Path | None = None) -> dict:
    from edgewise.cloud.train.config import resolve_config
    from edgewise.cloud.train.trainer import TrainOptions, train_ser

    if (out / "metrics.json").is_file():  # finished earlier: the report can be resumed
        return json.loads((out / "metrics.json").read_text())
    if out.exists():
        import shutil

        shutil.rmtree(out)
    cfg = resolve_config(preset, overrides)
    return train_ser(cfg, TrainOptions(data=corpus, out=out, progress=False, teacher=teacher))


def summarize(values: list[float]) -> dict:
    return {
        "mean": statistics.fmean(values),
        "std": statistics.stdev(values) if len(values) > 1 else 0.0,
        "min": min(values),
        "max": max(values),
        "values": values,
    }


def test_probabilities(corpus_dir: Path, runs: list[Path]):
    """Test-split labels, label names and each run's softmax outputs (merged models, whole utterances)."""
    import torch

    from edgewise.cloud.data.corpus import load_corpus
    from edgewise.cloud.train.featcache import compute_features, default_cache_dir
    from edgewise.cloud.train.run import load_run_model
    from edgewise.cloud.train.trainer import predict_logits

    corpus = load_corpus(corpus_dir)
    probs, labels, truth = [], None, None
    for run in runs:
        model, info = load_run_model(run)
        fs = compute_features(
            corpus.split("test"), info.labels, info.features, default_cache_dir(corpus.root), progress=False
        )
        probs.append(torch.softmax(torch.from_numpy(predict_logits(model, fs, info.features)), 1).numpy())
        labels, truth = info.labels, fs.labels
    return truth, labels, probs


def paired_bootstrap(truth, pred_a, pred_b, n_classes: int, rounds: int = 2000, seed: int = 0) -> dict:
    """UA(a) - UA(b) on the same test utterances, with a 95% interval from resampling utterances, and
    the share of resamples in which a is not better than b (a one-sided p-value)."""
    import numpy as np

    def ua_diff(idx) -> float:
        t, a, b = truth[idx], pred_a[idx], pred_b[idx]
        return float(np.mean([np.mean(a[t == c] == c) - np.mean(b[t == c] == c) for c in range(n_classes)]))

    rng = np.random.default_rng(seed)
    everything = np.arange(len(truth))
    diffs = np.array([ua_diff(rng.choice(everything, len(truth))) for _ in range(rounds)])
    return {
        "diff": ua_diff(everything),
        "ci95": [float(np.percentile(diffs, 2.5)), float(np.percentile(diffs, 97.5))],
        "p_not_better": float(np.mean(diffs <= 0)),
        "rounds": rounds,
    }


def teacher_vs_students(corpus_dir: Path, teacher: Path, students: dict[str, Path]) -> dict:
    truth, labels, probs = test_probabilities(corpus_dir, [teacher, *students.values()])
    t_pred = probs[0].argmax(1)
    return {
        name: paired_bootstrap(truth, t_pred, p.argmax(1), len(labels))
        for name, p in zip(students, probs[1:])
    }


def latency_comparison(seconds: float = 3.0, threads: int = 2, rounds: int = 120, reps: int = 10) -> dict:
    """Per-call latency of training-form, merged and plain tiny models, interleaved round by round.

    Each round times every model back to back (in a rotating order), so the ratios are paired
    within a round and machine drift cancels; the reported ratio is the median of per-round ratios.
    """
    import torch

    from edgewise.cloud.models.hrf import HRFConfig, count_parameters, reparameterize_model
    from edgewise.cloud.models.registry import ModelConfig, build_model
    from edgewise.cloud.train.config import resolve_config
    from edgewise.features import LogMelConfig, num_frames

    torch.set_num_threads(threads)
    tiny = resolve_config("tiny").model
    frames = num_frames(int(seconds * 16000), LogMelConfig())
    results = {}
    for arch in ARCHS:
        torch.manual_seed(0)
        hrf_model = build_model(
            ModelConfig(**{**tiny.model_dump(), "arch": arch, "hrf": HRFConfig(expansion=2.0)})
        ).eval()
        merged = reparameterize_model(hrf_model).eval()
        plain = build_model(ModelConfig(**{**tiny.model_dump(), "arch": arch, "hrf": None})).eval()
        models = {"hrf_training_form": hrf_model, "merged": merged, "plain": plain}
        x = torch.randn(1, frames, tiny.n_mels)
        times: dict[str, list[float]] = {k: [] for k in models}
        with torch.inference_mode():
            for m in models.values():
                for _ in range(5):
                    m(x)
            names = list(models)
            for r in range(rounds):
                for name in names[r % 3 :] + names[: r % 3]:
                    m = models[name]
                    t0 = time.perf_counter()
                    for _ in range(reps):
                        m(x)
                    times[name].append((time.perf_counter() - t0) / reps * 1000)
        med = {k: statistics.median(v) for k, v in times.items()}
        results[arch] = {
            "frames": frames,
            "params": {k: count_parameters(m) for k, m in models.items()},
            "median_ms": med,
            "p90_ms": {k: sorted(v)[int(0.9 * (len(v) - 1))] for k, v in times.items()},
            "merged_vs_plain": statistics.median(m / p for m, p in zip(times["merged"], times["plain"])),
            "training_form_vs_plain": statistics.median(
                t / p for t, p in zip(times["hrf_training_form"], times["plain"])
            ),
        }
    return {
        "threads": threads,
        "batch": 1,
        "audio_seconds": seconds,
        "rounds": rounds,
        "reps": reps,
        "archs": results,
    }


def plot(report: dict, out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = []
    fig, ax = plt.subplots(figsize=(7, 3.6), dpi=120)
    labels, means, stds, colors = [], [], [], []
    labels.append("eGeMAPS+LR")
    means.append(report["baseline"]["ua"])
    stds.append(0)
    colors.append("#999999")
    for arch in ARCHS:
        for variant, color in (("plain", "#8fb3d9"), ("hrf", "#1f5f9e")):
            s = report["hrf_vs_plain"][arch][variant]
            labels.append(f"{SHORT[arch]}\n{variant}")
            means.append(s["mean"])
            stds.append(s["std"])
            colors.append(color)
    for variant, color in (("no_kd", "#f2b880"), ("kd", "#d9661f")):
        s = report["kd_vs_no_kd"][variant]
        labels.append(f"HRF student\n{variant.replace('_', ' ')}")
        means.append(s["mean"])
        stds.append(s["std"])
        colors.append(color)
    labels.append("teacher")
    means.append(report["teacher"]["ua"])
    stds.append(0)
    colors.append("#333333")
    ax.bar(range(len(labels)), means, yerr=stds, color=colors, capsize=3)
    ax.set_xticks(range(len(labels)), labels, fontsize=6, rotation=0)
    ax.set_ylabel("test UA")
    ax.set_ylim(0, 1)
    ax.axhline(0.25, color="red", lw=0.8, ls=":", label="chance")
    ax.legend(fontsize=7)
    ax.set_title(f"SER on the synthesized corpus (mean ± std over seeds {report['seeds']})", fontsize=9)
    fig.tight_layout()
    fig.savefig(out / "ser_ua.png")
    plt.close(fig)
    files.append("ser_ua.png")

    lat = report["latency"]["archs"]
    fig, ax = plt.subplots(figsize=(6, 3.2), dpi=120)
    width = 0.27
    for i, (variant, color) in enumerate(
        (("plain", "#8fb3d9"), ("merged", "#1f5f9e"), ("hrf_training_form", "#d9661f"))
    ):
        ax.bar(
            [j + (i - 1) * width for j in range(len(ARCHS))],
            [lat[a]["median_ms"][variant] for a in ARCHS],
            width,
            label=variant,
            color=color,
        )
    ax.set_xticks(range(len(ARCHS)), ARCHS)
    ax.set_ylabel("median latency (ms)")
    ax.set_title("tiny models, PyTorch eager, batch 1, 3 s audio, 2 threads", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "ser_latency.png")
    plt.close(fig)
    files.append("ser_latency.png")
    return files


def markdown(report: dict) -> str:
    seeds = report["seeds"]
    lines = [
        "# Cloud speech report: SER on the synthesized corpus",
        "",
        f"Command: `{report['command']}`  ",
        f"Machine: {report['environment']['cpu']}, {report['environment']['cores']} cores, torch "
        f"{report['environment']['torch']}. Training runs already finished under `--work` are reused, "
        f"so the wall time of one invocation ({report['wall_seconds'] / 60:.1f} min here) depends on what was "
        "there; from scratch the whole report takes about 45 min (the base teacher 15, the 18 tiny runs 20, the 3 KD runs 10).  ",
        f"Corpus: `{report['corpus']}` ({report['corpus_counts']}). Test split = held-out speakers. "
        f"UA = mean per-class recall (chance 0.25).",
        "",
        "## Headline: tiny HRF+KD student vs baseline vs teacher",
        "",
        "| model | params (deployed) | test UA | WA | macro-F1 |",
        "|---|---:|---:|---:|---:|",
        f"| eGeMAPS functionals + logistic regression | 88 features | {report['baseline']['ua']:.3f} | "
        f"{report['baseline']['wa']:.3f} | {report['baseline']['macro_f1']:.3f} |",
        f"| teacher: {report['teacher']['preset']} preset, plain | {report['teacher']['parameters']:,} | {report['teacher']['ua']:.3f} | "
        f"{report['teacher']['wa']:.3f} | {report['teacher']['macro_f1']:.3f} |",
    ]
    for run in report["kd_vs_no_kd"]["kd"]["runs"]:
        lines.append(
            f"| tiny ConvTransformer HRF+KD, merged (seed {run['seed']}) | {run['parameters']:,} | "
            f"{run['ua']:.3f} | {run['wa']:.3f} | {run['macro_f1']:.3f} |"
        )
    if "teacher_vs_tiny_plain" in report:
        rows = report["teacher_vs_tiny_plain"]
        rounds = next(iter(rows.values()))["rounds"]
        lines += [
            "",
            "## Teacher vs every tiny plain model: paired bootstrap over the test utterances",
            "",
            f"UA(teacher) − UA(tiny plain) on the same {report['corpus_counts']['test']} test utterances, "
            f"{rounds} resamples; p = share of resamples in which the teacher is not better.",
            "",
            "| tiny plain model | UA difference | 95% interval | p |",
            "|---|---:|---:|---:|",
        ]
        for name, b in rows.items():
            lines.append(
                f"| {name} | {b['diff']:+.3f} | [{b['ci95'][0]:+.3f}, {b['ci95'][1]:+.3f}] | {b['p_not_better']:.3f} |"
            )
    lines += [
        "",
        f"## HRF vs plain, same tiny backbone, seeds {seeds} (mean ± std of test UA)",
        "",
        "| backbone | plain | HRF (merged) | HRF − plain |",
        "|---|---:|---:|---:|",
    ]
    for arch in ARCHS:
        p, h = report["hrf_vs_plain"][arch]["plain"], report["hrf_vs_plain"][arch]["hrf"]
        lines.append(
            f"| {arch} | {p['mean']:.3f} ± {p['std']:.3f} | {h['mean']:.3f} ± {h['std']:.3f} | "
            f"{h['mean'] - p['mean']:+.3f} |"
        )
    k, n = report["kd_vs_no_kd"]["kd"], report["kd_vs_no_kd"]["no_kd"]
    lines += [
        "",
        f"## KD vs no KD: tiny ConvTransformer with HRF, seeds {seeds}",
        "",
        "| variant | test UA | values |",
        "|---|---:|---|",
        f"| no KD | {n['mean']:.3f} ± {n['std']:.3f} | {', '.join(f'{v:.3f}' for v in n['values'])} |",
        f"| KD from the teacher | {k['mean']:.3f} ± {k['std']:.3f} | {', '.join(f'{v:.3f}' for v in k['values'])} |",
        "",
        "## Merged model cost: PyTorch eager, batch 1, 3 s of audio, 2 threads, interleaved",
        "",
        "| backbone | params plain | params merged | params HRF training form | plain ms | merged ms | "
        "merged / plain (median of paired rounds) | training form / plain |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for arch, r in report["latency"]["archs"].items():
        lines.append(
            f"| {arch} | {r['params']['plain']:,} | {r['params']['merged']:,} | {r['params']['hrf_training_form']:,} | "
            f"{r['median_ms']['plain']:.2f} | {r['median_ms']['merged']:.2f} | {r['merged_vs_plain']:.3f} | "
            f"{r['training_form_vs_plain']:.3f} |"
        )
    lines += ["", "![UA](ser_ua.png)", "", "![latency](ser_latency.png)", ""]
    return "\n".join(lines)


def metrics_row(seed: int, m: dict) -> dict:
    return {"seed": seed, **{k: m[k] for k in ("ua", "wa", "macro_f1", "parameters")}}


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """The options every SER training benchmark shares: corpus, output, run directory, seeds, jobs."""
    parser.add_argument(
        "--corpus", type=Path, required=True, help="an edgewise corpus (edgewise data speech)"
    )
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument(
        "--work", type=Path, default=Path("benchmarks/work/ser"), help="training runs (resumable)"
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--jobs", type=int, default=2, help="runs trained at once (one thread each)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_run_arguments(parser)
    parser.add_argument("--teacher", default="base", help="training preset of the distillation teacher")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    t0 = time.perf_counter()

    import torch

    from edgewise.cloud.baseline import egemaps_baseline
    from edgewise.cloud.data.corpus import load_corpus

    corpus = load_corpus(args.corpus)
    args.out.mkdir(parents=True, exist_ok=True)
    report: dict = {
        "command": " ".join(["python", *__import__("sys").argv]),
        "corpus": str(args.corpus),
        "corpus_counts": {s: len(corpus.split(s)) for s in ("train", "val", "test")},
        "seeds": args.seeds,
        "environment": {
            "cpu": platform.processor() or platform.machine(),
            "cores": __import__("os").cpu_count(),
            "torch": torch.__version__,
            "python": platform.python_version(),
        },
    }
    log.info("baseline")
    baseline_file = args.work / "baseline.json"
    if baseline_file.is_file():
        report["baseline"] = json.loads(baseline_file.read_text())
    else:
        report["baseline"] = egemaps_baseline(corpus)
        baseline_file.parent.mkdir(parents=True, exist_ok=True)
        baseline_file.write_text(json.dumps(report["baseline"]))
    log.info("teacher (%s preset)", args.teacher)
    teacher_dir = args.work / "teacher"
    if (
        teacher_dir / "metrics.json"
    ).is_file():  # reused: it must be the preset asked for (KD runs depend on it)
        import yaml

        from edgewise.cloud.train.config import resolve_config

        had = yaml.safe_load((teacher_dir / "config.yaml").read_text()).get("name")
        if had != resolve_config(args.teacher).name:
            parser.error(
                f"{teacher_dir} holds a teacher trained from {had!r}, not --teacher {args.teacher}; "
                "use another --work or move that run (and the *-kd-* runs) away"
            )
    teacher = train(args.teacher, args.corpus, teacher_dir, ["seed=0", "model.hrf=null"])
    report["teacher"] = {**teacher, "preset": args.teacher}

    # Student runs are independent: two single-threaded processes at once use both cores better
    # than one two-threaded run (the small GEMMs of a tiny model barely scale past one thread).
    jobs = {}
    for arch in ARCHS:
        for seed in args.seeds:
            for variant, hrf in (("plain", "null"), ("hrf", "{expansion: 2.0}")):
                overrides = [f"model.arch={arch}", f"model.hrf={hrf}", f"seed={seed}", "threads=1"]
                jobs[(arch, variant, seed)] = (
                    "tiny",
                    args.corpus,
                    args.work / f"{arch}-{variant}-s{seed}",
                    overrides,
                )
    for seed in args.seeds:
        overrides = ["model.arch=conv_transformer", "model.hrf={expansion: 2.0}", f"seed={seed}", "threads=1"]
        jobs[("conv_transformer", "kd", seed)] = (
            "tiny",
            args.corpus,
            args.work / f"conv_transformer-hrf-kd-s{seed}",
            overrides,
            teacher_dir,
        )
    from concurrent.futures import ProcessPoolExecutor

    results = {}
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        futures = {key: pool.submit(train, *job) for key, job in jobs.items()}
        for key, fut in futures.items():
            results[key] = metrics_row(key[2], fut.result())
            log.info("%s %s seed %d: test UA %.3f", *key, results[key]["ua"])

    report["hrf_vs_plain"] = {
        arch: {
            variant: {
                **summarize([results[(arch, variant, s)]["ua"] for s in args.seeds]),
                "runs": [results[(arch, variant, s)] for s in args.seeds],
            }
            for variant in ("plain", "hrf")
        }
        for arch in ARCHS
    }
    kd_runs = [results[("conv_transformer", "kd", s)] for s in args.seeds]
    report["kd_vs_no_kd"] = {
        "kd": {**summarize([r["ua"] for r in kd_runs]), "runs": kd_runs},
        "no_kd": report["hrf_vs_plain"]["conv_transformer"]["hrf"],
    }

    log.info("teacher vs the tiny plain students (paired bootstrap)")
    report["teacher_vs_tiny_plain"] = teacher_vs_students(
        args.corpus,
        teacher_dir,
        {f"{arch} seed {s}": args.work / f"{arch}-plain-s{s}" for arch in ARCHS for s in args.seeds},
    )

    log.info("latency")
    report["latency"] = latency_comparison()
    report["wall_seconds"] = time.perf_counter() - t0
    report["plots"] = plot(report, args.out)
    write_report(args.out, "ser_report", report, markdown(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
