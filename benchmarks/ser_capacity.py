"""Does model size matter on the synthesized corpus? Test UA against parameter count.

The same plain ConvTransformer at three widths (``micro`` ~27k, ``tiny`` ~93k, ``small`` ~342k
parameters), several seeds each, same corpus and recipe, plus the ensemble of every run (average
of softmax outputs): if the corpus leaves room for capacity, UA rises with size and the ensemble
sits above its members; if it is limited by what the audio carries, all of them tie.

Runs live under ``--work`` next to the SER report's (its ``conv_transformer-plain-s*`` runs are the
tiny rows here, reused when present). Writes ``OUT/ser_capacity.{json,md,png}``. Usage::

    .venv/bin/python benchmarks/ser_capacity.py --corpus benchmarks/work/corpus2000
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from report_files import write_report
from ser_report import add_run_arguments, summarize, test_probabilities, train

SIZES = ("micro", "tiny", "small")
log = logging.getLogger("ser_capacity")


def run_dir(work: Path, size: str, seed: int) -> Path:
    # tiny plain ConvTransformer runs are the SER report's; the other widths get their own names
    return work / (f"conv_transformer-plain-s{seed}" if size == "tiny" else f"capacity-{size}-s{seed}")


def ensemble_ua(corpus_dir: Path, runs: list[Path]) -> dict:
    """Test UA of the average softmax of ``runs`` (all share the corpus's labels and features)."""
    import numpy as np

    from edgewise.cloud.train.metrics import classification_report

    truth, labels, probs = test_probabilities(corpus_dir, runs)
    report = classification_report(truth, np.mean(probs, axis=0).argmax(1), labels)
    return {"ua": report["ua"], "members": len(runs)}


def plot(report: dict, out: Path) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6))
    params = [report["sizes"][s]["parameters"] for s in SIZES]
    for s, p in zip(SIZES, params):
        vals = report["sizes"][s]["values"]
        ax.scatter([p] * len(vals), vals, color="#8fb3d9", zorder=2)
        ax.errorbar(p, report["sizes"][s]["mean"], yerr=report["sizes"][s]["std"], fmt="o", color="#1f5f9e",
                    capsize=4, zorder=3)  # fmt: skip
    ax.axhline(
        report["ensemble"]["ua"],
        color="#d9661f",
        ls="--",
        label=f"ensemble of {report['ensemble']['members']} runs",
    )
    ax.axhline(report["baseline_ua"], color="#777777", ls=":", label="eGeMAPS + LR baseline")
    ax.set_xscale("log")
    ax.minorticks_off()
    ax.set_xticks(params, [f"{s}\n{p / 1000:.0f}k" for s, p in zip(SIZES, params)])
    ax.set_ylabel("test UA")
    ax.set_title("plain ConvTransformer: test UA vs parameters", fontsize=9)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    path = out / "ser_capacity.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path.name


def markdown(r: dict) -> str:
    lines = [
        "# Capacity on the synthesized corpus: test UA vs model size",
        "",
        f"Command: `{r['command']}`  ",
        f"Corpus: `{r['corpus']}`, seeds {r['seeds']}, plain ConvTransformer (no HRF, no KD), same recipe "
        "for every width. Wall time of this invocation: "
        f"{r['wall_seconds'] / 60:.1f} min (finished runs under `--work` are reused).",
        "",
        "| size | parameters | test UA (mean ± std) | values |",
        "|---|---:|---:|---|",
    ]
    for s in SIZES:
        row = r["sizes"][s]
        values = ", ".join(f"{v:.3f}" for v in row["values"])
        lines.append(f"| {s} | {row['parameters']:,} | {row['mean']:.3f} ± {row['std']:.3f} | {values} |")
    lines += [
        f"| ensemble of all {r['ensemble']['members']} runs (mean softmax) | - | {r['ensemble']['ua']:.3f} | |",
        f"| eGeMAPS functionals + logistic regression | 88 features | {r['baseline_ua']:.3f} | |",
        "",
        "Reading: if the corpus left room for capacity, UA would rise from micro to small and the ensemble "
        "would sit above its members. Where they tie, the limit is what the audio carries, not the model.",
        "",
        "![capacity](ser_capacity.png)",
        "",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_run_arguments(parser)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    t0 = time.perf_counter()

    from concurrent.futures import ProcessPoolExecutor

    jobs = {
        (size, seed): (
            "tiny",
            args.corpus,
            run_dir(args.work, size, seed),
            [
                "model.arch=conv_transformer",
                f"model.size={size}",
                "model.hrf=null",
                f"seed={seed}",
                "threads=1",
            ],
        )
        for size in SIZES
        for seed in args.seeds
    }
    results = {}
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        futures = {key: pool.submit(train, *job) for key, job in jobs.items()}
        for key, fut in futures.items():
            results[key] = fut.result()
            log.info("%s seed %d: test UA %.3f", *key, results[key]["ua"])

    baseline_file = args.work / "baseline.json"
    if baseline_file.is_file():
        baseline_ua = json.loads(baseline_file.read_text())["ua"]
    else:
        from edgewise.cloud.baseline import egemaps_baseline
        from edgewise.cloud.data.corpus import load_corpus

        baseline_ua = egemaps_baseline(load_corpus(args.corpus))["ua"]
    report = {
        "command": " ".join(["python", *sys.argv]),
        "corpus": str(args.corpus),
        "seeds": args.seeds,
        "sizes": {
            size: {
                **summarize([results[(size, s)]["ua"] for s in args.seeds]),
                "parameters": results[(size, args.seeds[0])]["parameters"],
            }
            for size in SIZES
        },
        "ensemble": ensemble_ua(args.corpus, [run_dir(args.work, size, s) for size, s in jobs]),
        "baseline_ua": baseline_ua,
    }
    report["wall_seconds"] = time.perf_counter() - t0
    args.out.mkdir(parents=True, exist_ok=True)
    report["plot"] = plot(report, args.out)
    write_report(args.out, "ser_capacity", report, markdown(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
