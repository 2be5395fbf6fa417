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


GENERATOR_COLUMNS = ("pitch", "pitch_range", "rate", "amplitude", "level_db", "snr_db")


def _generator_row(row: dict) -> list[float]:
    phrases = [float(p) for p in row["phrase_pitch"].split()] or [0.0]
    pauses = [float(p) for p in row["pauses_ms"].split()] or [0.0]
    numbers = [float(row[k]) if row[k] else 60.0 for k in GENERATOR_COLUMNS]  # no noise: call it 60 dB
    return numbers + [
        phrases[-1] - phrases[0],
        sum(pauses) / len(pauses),
        sum(p > 0 for p in pauses) / len(pauses),
    ]


def generator_oracle(corpus_dir: Path, labels) -> dict | None:
    """Logistic regression on the parameters the synthesizer drew for each utterance (its manifest
    columns): the best a model that recovered them exactly from the audio could do. None for corpora
    without those columns (real ones)."""
    import csv

    import numpy as np

    from edgewise.cloud.baseline import fit_logistic

    data = {}
    for split in ("train", "val", "test"):
        with open(corpus_dir / f"{split}.csv", newline="") as f:
            rows = list(csv.DictReader(f))
        if not rows or not set(GENERATOR_COLUMNS) <= set(rows[0]):
            return None
        data[split] = (
            np.array([_generator_row(r) for r in rows]),
            np.array([labels.index(r["label"]) for r in rows]),
        )
    return {"ua": fit_logistic(data, labels)["ua"], "features": len(data["train"][0][0])}


def teachers(work: Path, corpus_dir: Path) -> dict | None:
    """The SER report's teacher (``work/teacher``) and any further seeds of it (``work/teacher-s1``, ...),
    with the ensemble of them: the base Conformer next to the widths trained here."""
    runs = [
        r for r in [work / "teacher", *sorted(work.glob("teacher-s[0-9]*"))] if (r / "metrics.json").is_file()
    ]
    if not runs:
        return None
    metrics = [json.loads((r / "metrics.json").read_text()) for r in runs]
    return {
        **summarize([m["ua"] for m in metrics]),
        "runs": [r.name for r in runs],
        "parameters": metrics[0]["parameters"],
        "ensemble": ensemble_ua(corpus_dir, runs) if len(runs) > 1 else None,
    }


def baselines(work: Path, corpus_dir: Path) -> dict:
    """eGeMAPS + LR plain (cached in ``work/baseline.json``, shared with the SER report) and z-scored
    per speaker, and the generator oracle."""
    from edgewise.cloud.baseline import egemaps_baseline, egemaps_baselines
    from edgewise.cloud.data.corpus import load_corpus

    corpus = load_corpus(corpus_dir)
    cached = work / "baseline.json"
    if cached.is_file():
        plain, speaker = json.loads(cached.read_text()), egemaps_baseline(corpus, speaker_norm=True)
    else:  # one feature extraction for both
        plain, speaker = egemaps_baselines(corpus, speaker_norm=(False, True))
    return {
        "egemaps": plain["ua"],
        "egemaps_speaker_norm": speaker["ua"],
        "oracle": generator_oracle(corpus_dir, list(corpus.labels)),
    }


def plot(report: dict, out: Path) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.6))
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
    teacher = report["teachers"]
    if teacher:
        params.append(teacher["parameters"])
        ax.scatter(
            [teacher["parameters"]] * len(teacher["values"]), teacher["values"], color="#e0a3a3", zorder=2
        )
        ax.errorbar(teacher["parameters"], teacher["mean"], yerr=teacher["std"], fmt="s", color="#a32424",
                    capsize=4, zorder=3)  # fmt: skip
    refs = report["baselines"]
    ax.axhline(refs["egemaps"], color="#777777", ls=":", label="eGeMAPS + LR baseline")
    ax.axhline(refs["egemaps_speaker_norm"], color="#2f8f46", ls="-.", label="same, z-scored per speaker")
    if refs["oracle"]:
        ax.axhline(refs["oracle"]["ua"], color="#7a3f9e", ls=(0, (1, 3)), label="LR on generator parameters")
    ax.set_xscale("log")
    ax.minorticks_off()
    names = [*SIZES, "base\nConformer"] if teacher else SIZES
    ax.set_xticks(params, [f"{s}\n{p / 1000:.0f}k" for s, p in zip(names, params)])
    ax.set_ylabel("test UA")
    ax.set_title("plain ConvTransformer widths and the base Conformer: test UA vs parameters", fontsize=9)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=2)
    fig.tight_layout()
    path = out / "ser_capacity.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path.name


def markdown(r: dict) -> str:
    refs = r["baselines"]
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
    ]
    teacher = r["teachers"]
    if teacher:
        values = ", ".join(f"{v:.3f}" for v in teacher["values"])
        lines.append(
            f"| the SER report's teacher: base Conformer, plain ({', '.join(teacher['runs'])}) | "
            f"{teacher['parameters']:,} | {teacher['mean']:.3f}"
            + (f" ± {teacher['std']:.3f}" if len(teacher["values"]) > 1 else "")
            + f" | {values} |"
        )
        if teacher["ensemble"]:
            lines.append(f"| ensemble of the teacher runs | - | {teacher['ensemble']['ua']:.3f} | |")
    lines += [
        f"| eGeMAPS functionals + logistic regression | 88 features | {refs['egemaps']:.3f} | |",
        f"| the same, z-scored within each speaker (test speakers too) | 88 features | "
        f"{refs['egemaps_speaker_norm']:.3f} | |",
    ]
    if refs["oracle"]:
        lines.append(
            f"| logistic regression on the generator's parameters (manifest) | {refs['oracle']['features']} "
            f"features | {refs['oracle']['ua']:.3f} | |"
        )
    lines += [
        "",
        "Reading: if the corpus left room for capacity, UA would rise from micro to small to the base teacher, "
        "and the ensembles "
        "would sit above their members. Where they tie, the limit is what the audio carries, not the model. "
        "The last two rows locate that limit: z-scoring per speaker needs several utterances of a speaker "
        "known in advance (no single-utterance model has that), and the generator's parameters are what a "
        "model that recovered the prosody exactly from the audio would see.",
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
        "teachers": teachers(args.work, args.corpus),
        "baselines": baselines(args.work, args.corpus),
    }
    report["wall_seconds"] = time.perf_counter() - t0
    args.out.mkdir(parents=True, exist_ok=True)
    report["plot"] = plot(report, args.out)
    write_report(args.out, "ser_capacity", report, markdown(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
