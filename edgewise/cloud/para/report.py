"""The benchmark's report: ``para_bench.json`` (everything), ``para_bench.md`` (tables) and
``para_bench.png`` (a heat map of the primary metrics), each written atomically.

Rows are tasks, columns encoders; a cell is the test split's primary metric (UA for
classification, CCC for regression) as mean ± standard deviation over the seeds (sample std, 0
for one seed).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from edgewise.cloud.para.tasks import CLASSIFICATION
from edgewise.fsutil import save_figure, write_report_files

SCHEMA_VERSION = 1
NAME = "para_bench"
METRICS = {CLASSIFICATION: ("ua", "wa", "macro_f1"), "regression": ("ccc", "mae", "pearson")}
METRIC_LABELS = {"ua": "UA", "wa": "WA", "macro_f1": "macro-F1", "ccc": "CCC", "mae": "MAE", "pearson": "r"}


def mean_std(values: Sequence[float]) -> dict:
    arr = np.asarray(values, dtype=np.float64)
    std = float(arr.std(ddof=1)) if arr.size > 1 else 0.0
    return {"mean": float(arr.mean()), "std": std, "n": int(arr.size)}


def summarize(results: list[dict], tasks: dict[str, dict], encoders: Sequence[str]) -> dict:
    """``{task: {encoder: {metric: {mean, std, n}}}}`` over the seeds of ``results``."""
    summary: dict = {}
    for task, info in tasks.items():
        summary[task] = {}
        for enc in encoders:
            rows = [r for r in results if r["task"] == task and r["encoder"] == enc]
            if rows:
                summary[task][enc] = {
                    m: mean_std([r["test"][m] for r in rows]) for m in METRICS[info["kind"]]
                }
    return summary


def short_labels(encoders: Sequence[str]) -> dict[str, str]:
    """Column labels: ``ser:runs/x/tiny-s0`` -> ``ser:tiny-s0`` (the argument's last path part),
    unless two encoders would then share a label."""
    labels = {
        e: (e.split(":", 1)[0] + ":" + Path(e.split(":", 1)[1]).name if ":" in e else e) for e in encoders
    }
    return labels if len(set(labels.values())) == len(labels) else {e: e for e in encoders}


def _row_label(task: str, info: dict) -> str:
    chance = f", chance {1 / len(info['classes']):.2f}" if info.get("classes") else ""
    return f"{task} ({METRIC_LABELS[info['primary']]}{chance})"


def _cell(stats: dict | None, metric: str) -> str:
    if not stats:
        return "–"
    s = stats[metric]
    return f"{s['mean']:.3f} ± {s['std']:.3f}"


def markdown(report: dict) -> str:
    tasks, encoders, summary = report["tasks"], list(report["encoders"]), report["summary"]
    label = short_labels(encoders)
    corpus = report["corpus"]
    seeds = report["protocol"]["seeds"]
    head = report["protocol"]["head"]
    lines = [
        "# Paralinguistic benchmark (`edgewise bench para`)",
        "",
        f"Corpus `{corpus['path']}` ({corpus['source']}; "
        + ", ".join(f"{s} {n}" for s, n in corpus["utterances"].items())
        + f" utterances, speaker-disjoint). Seeds {' '.join(map(str, seeds))}. Frozen encoders; "
        f"layers mixed by a learnable softmax-weighted sum; mean+std pooling over time; standardized on "
        f"train; MLP head ({head['hidden']} hidden, dropout {head['dropout']}, Adam lr {head['lr']}), "
        f"early stopping on val (patience {head['patience']}), metrics on test.",
        "",
        f"Command: `{report['command']}`",
        "",
        f"## Primary metric on test (UA or CCC), mean ± std over {len(seeds)} seed(s); best per task in bold",
        "",
        "| task (metric) | " + " | ".join(label[e] for e in encoders) + " |",
        "|---|" + "---|" * len(encoders),
    ]
    for task, info in tasks.items():
        metric = info["primary"]
        means = {e: summary[task][e][metric]["mean"] for e in encoders if e in summary.get(task, {})}
        best = max(means.values()) if means else None
        cells = []
        for e in encoders:
            cell = _cell(summary.get(task, {}).get(e), metric)
            cells.append(f"**{cell}**" if best is not None and means.get(e) == best else cell)
        lines.append(f"| {_row_label(task, info)} | " + " | ".join(cells) + " |")
    lines += ["", "## Every metric on test (mean ± std)", ""]
    for kind in (CLASSIFICATION, "regression"):
        names = [t for t, info in tasks.items() if info["kind"] == kind]
        if not names:
            continue
        metrics = METRICS[kind]
        lines += [
            "| task | encoder | " + " | ".join(METRIC_LABELS[m] for m in metrics) + " |",
            "|---|---|" + "---|" * len(metrics),
        ]
        for task in names:
            for e in encoders:
                stats = summary.get(task, {}).get(e)
                if stats:
                    lines.append(
                        f"| {task} | {label[e]} | " + " | ".join(_cell(stats, m) for m in metrics) + " |"
                    )
        lines.append("")
    lines += [
        "## Encoders",
        "",
        "| encoder | layers x dims | encoded (cached) | encode s | s / utterance | what |",
        "|---|---|---|---|---|---|",
    ]
    for e, info in report["encoders"].items():
        t = info["timing"]
        per = f"{t['s_per_utterance']:.3f}" if t["s_per_utterance"] is not None else "–"
        lines.append(
            f"| {e} | {info['n_layers']} x {info['dims']} | {t['encoded']} ({t['cached']}) | "
            f"{t['encode_s']:.1f} | {per} | {info['description']} |"
        )
    layered = [e for e, info in report["encoders"].items() if info["layers"] and info["n_layers"] > 1]
    if layered:
        lines += ["", "## Learned layer weights (mean over seeds; first = the lowest layer)", ""]
        lines += ["| task | " + " | ".join(label[e] for e in layered) + " |", "|---|" + "---|" * len(layered)]
        for task in tasks:
            cells = []
            for e in layered:
                rows = [
                    r["layer_weights"] for r in report["results"] if r["task"] == task and r["encoder"] == e
                ]
                cells.append(" ".join(f"{w:.2f}" for w in np.mean(rows, axis=0)) if rows else "–")
            lines.append(f"| {task} | " + " | ".join(cells) + " |")
    if report.get("notes"):
        lines += ["", "## Notes", ""] + [f"- {n}" for n in report["notes"]]
    env = report["environment"]
    load = (
        f"; load average {env['load_average']:.1f} at the end" if env.get("load_average") is not None else ""
    )
    lines += ["", f"Wall time {report['wall_s']:.0f} s; {env['threads']} torch thread(s){load}.", ""]
    return "\n".join(lines)


def heatmap(report: dict, path: Path) -> Path:
    """Tasks x encoders, coloured by the primary metric's mean (0 to 1), annotated mean ± std."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks, encoders, summary = list(report["tasks"]), list(report["encoders"]), report["summary"]
    grid = np.full((len(tasks), len(encoders)), np.nan)
    for i, task in enumerate(tasks):
        metric = report["tasks"][task]["primary"]
        for j, e in enumerate(encoders):
            stats = summary.get(task, {}).get(e)
            if stats:
                grid[i, j] = stats[metric]["mean"]
    fig, ax = plt.subplots(figsize=(1.6 + 1.5 * len(encoders), 1.2 + 0.7 * len(tasks)), dpi=120)
    cmap = plt.get_cmap("viridis").with_extremes(bad="#dddddd")  # a pair not measured: grey
    image = ax.imshow(np.ma.masked_invalid(grid), cmap=cmap, vmin=0.0, vmax=1.0, aspect="auto")
    fig.colorbar(image, ax=ax, fraction=0.04, pad=0.02)
    for i, task in enumerate(tasks):
        metric = report["tasks"][task]["primary"]
        for j, e in enumerate(encoders):
            if math.isnan(grid[i, j]):
                continue
            std = summary[task][e][metric]["std"]
            ax.text(
                j,
                i,
                f"{grid[i, j]:.2f}\n±{std:.2f}",
                ha="center",
                va="center",
                fontsize=8,
                color="black" if grid[i, j] > 0.6 else "white",
            )
    label = short_labels(encoders)
    ax.set_xticks(range(len(encoders)), [label[e] for e in encoders], rotation=30, ha="right")
    ax.set_yticks(range(len(tasks)), [_row_label(t, report["tasks"][t]) for t in tasks])
    ax.set_title(
        f"edgewise bench para: test UA / CCC, {len(report['protocol']['seeds'])} seed(s)", fontsize=10
    )
    fig.tight_layout()
    return save_figure(fig, path)


def write_report(report: dict, out: Path, *, plot: bool = True) -> list[Path]:
    """Write the JSON, the Markdown and (with ``plot``) the heat map into ``out``; their paths."""
    paths = write_report_files(out, NAME, report, markdown(report))
    if plot:
        paths.append(heatmap(report, out / f"{NAME}.png"))
    return paths
