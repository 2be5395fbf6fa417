"""semisup_report.json, .md and .png: UA against the labelled fraction, per method, over seeds."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from edgewise.fsutil import save_figure, write_report_files

NAME = "semisup_report"
BAR_FRACTION = 0.3
BAR_POINTS = 0.02


def _mean_std(values: Sequence[float]) -> dict:
    arr = np.asarray(values, dtype=np.float64)
    return {"mean": round(float(arr.mean()), 4), "std": round(float(arr.std()), 4), "n": int(arr.size)}


def summarize(results: list[dict], fractions: Sequence[float]) -> dict:
    """Per fraction and method: test UA (mean, std over seeds), the kept round's pseudo-labels (count
    and accuracy against the hidden truth); and the issue's bar where the run has its fractions."""
    table: dict[str, dict[str, dict]] = {}
    for fraction in fractions:
        row = {}
        for method in dict.fromkeys(r["method"] for r in results):
            runs = [r for r in results if r["fraction"] == fraction and r["method"] == method]
            if not runs:
                continue
            kept = [r["rounds"][[x["round"] for x in r["rounds"]].index(r["kept_round"])] for r in runs]
            accuracy = [k["pseudo_accuracy"] for k in kept if k["pseudo_accuracy"] is not None]
            row[method] = {
                "test_ua": _mean_std([r["test_ua"] for r in runs]),
                "pseudo": _mean_std([k["pseudo"] for k in kept]),
                "pseudo_accuracy": _mean_std(accuracy) if accuracy else None,
                "labelled": int(np.mean([r["labelled"] for r in runs])),
            }
        table[f"{fraction:g}"] = row
    summary: dict = {"table": table}
    full, part = table.get("1"), table.get(f"{BAR_FRACTION:g}")
    if full and part and "supervised" in full and {"multi-view", "self-training"} <= set(part):
        mv = part["multi-view"]["test_ua"]["mean"]
        summary["bar"] = {
            "fraction": BAR_FRACTION,
            "multi_view": mv,
            "supervised_full": full["supervised"]["test_ua"]["mean"],
            "self_training": part["self-training"]["test_ua"]["mean"],
            "supervised_same_fraction": part.get("supervised", {}).get("test_ua", {}).get("mean"),
            "within_points": mv >= full["supervised"]["test_ua"]["mean"] - BAR_POINTS,
            "above_self_training": mv > part["self-training"]["test_ua"]["mean"],
        }
        summary["bar"]["met"] = summary["bar"]["within_points"] and summary["bar"]["above_self_training"]
    return summary


def _cell(stats: dict | None, digits: int = 3) -> str:
    if not stats:
        return "-"
    return f"{stats['mean']:.{digits}f} ± {stats['std']:.{digits}f}"


def markdown(report: dict) -> str:
    table = report["summary"]["table"]
    methods = report["methods"]
    lines = [
        "# Multi-view semi-supervised pseudo-labelling (issue 16)",
        "",
        f"Corpus {report['corpus']} ({report['sizes']}); classes {', '.join(report['classes'])}; "
        f"encoders {', '.join(report['encoders'])}; text view: "
        + (
            f"{report['text']['classifier']} on {report['text']['recognizer']} transcripts"
            if report["text"]
            else "off"
        )
        + "; audio features "
        + ("z-scored per speaker within each split (no labels used)" if report.get("speaker_norm") else "raw")
        + f"; seeds {report['seeds']}. Generated {report['created']} ({report['machine']}).",
        "",
        "Test UA (mean ± std over seeds) by labelled fraction of the training split:",
        "",
        "| labelled | " + " | ".join(methods) + " |",
        "|---|" + "---|" * len(methods),
    ]
    for fraction, row in table.items():
        first = next(iter(row.values()), {})
        cells = [_cell(row.get(m, {}).get("test_ua")) for m in methods]
        lines.append(
            f"| {float(fraction):.0%} ({first.get('labelled', '?')} rows) | " + " | ".join(cells) + " |"
        )
    lines += ["", "Pseudo-labels of the kept round (count, accuracy against the hidden labels):", ""]
    lines += ["| labelled | method | pseudo-labels | their accuracy |", "|---|---|---|---|"]
    for fraction, row in table.items():
        for method in ("self-training", "multi-view"):
            if method in row:
                stats = row[method]
                lines.append(
                    f"| {float(fraction):.0%} | {method} | {_cell(stats['pseudo'], 0)} | {_cell(stats['pseudo_accuracy'])} |"
                )
    views: dict[str, list[float]] = {}
    for r in report["results"]:
        if r["method"] == "multi-view" and r["fraction"] < 1:
            for v in r["views"]:
                views.setdefault(v["view"], []).append(v["cv_ua"])
    if views:
        lines += ["", "Views' cross-validated UA on the labelled rows (chance is "
                  f"{1 / len(report['classes']):.2f}; a view within 0.05 of it gets no vote):", ""]  # fmt: skip
        lines += ["| view | UA |", "|---|---|"] + [
            f"| {k} | {_cell(_mean_std(v))} |" for k, v in views.items()
        ]
    bar = report["summary"].get("bar")
    if bar:
        verdict = "met" if bar["met"] else "not met"
        lines += [
            "",
            f"Bar (at {bar['fraction']:.0%} labels, multi-view within {BAR_POINTS * 100:.0f} points of fully "
            f"supervised and above self-training): **{verdict}** (multi-view {bar['multi_view']:.3f}, "
            f"supervised 100% {bar['supervised_full']:.3f}, self-training {bar['self_training']:.3f}).",
        ]
    lines += ["", "```", report["command"], "```", ""]
    return "\n".join(lines)


def plot_ua(report: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = report["summary"]["table"]
    fractions = [float(f) for f in table]
    fig, ax = plt.subplots(figsize=(6, 4))
    for method in report["methods"]:
        means = [table[f].get(method, {}).get("test_ua", {}).get("mean", np.nan) for f in table]
        stds = [table[f].get(method, {}).get("test_ua", {}).get("std", 0.0) for f in table]
        ax.errorbar(fractions, means, yerr=stds, marker="o", capsize=3, label=method)
    ax.set_xscale("log")
    ax.set_xticks(fractions, [f"{f:.0%}" for f in fractions])
    ax.set_xlabel("labelled fraction of the training split")
    ax.set_ylabel("test UA")
    ax.set_title("Semi-supervised SER")
    ax.legend()
    fig.tight_layout()
    return save_figure(fig, path)


def write_report(report: dict, out: Path, *, plot: bool = True) -> list[Path]:
    """The JSON, the Markdown and (with ``plot``) the plot in ``out``; their paths."""
    paths = write_report_files(out, NAME, report, markdown(report))
    if plot:
        paths.append(plot_ua(report, out / f"{NAME}.png"))
    return paths
