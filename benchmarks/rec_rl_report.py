"""Alignment with feedback on the synthetic world (issue 14): GBPO next to ECPO, DARS next to raw
rewards, the simulator next to a learned reward model, 3 seeds each, from one reference policy.

Under ``--runs DIR`` it makes (or reuses, when finished) what it needs::

    data/          edgewise data rec synthetic --users 2000 --items 500 --seed 0
    lazy-s0/       edgewise train rec --config lazy-small --set optim.steps=600   (the reference)
    runs/V-sS/     edgewise train align --policy lazy-s0 --config ... --seed S     (each variant V)

and reports, per variant, the reference's and the aligned policies' (mean and standard deviation
over seeds) top-10 for the held-out users (never rolled out; the simulator answers each list
``eval_repeats`` times with the same random draws for every policy): watch time, watch fraction,
dislike rate, mean duration of the recommended items, the DARS reward; and test HR/NDCG@10.

Writes OUT/rec_rl_report.{json,md,png}::

    .venv/bin/python benchmarks/rec_rl_report.py --runs ~/edgewise-runs/rec-align --out benchmarks/results
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

VARIANTS = {  # name -> (label, align arguments)
    "gbpo-dars": ("GBPO + DARS", ["--config", "align-gbpo"]),
    "ecpo-dars": ("ECPO + DARS", ["--config", "align-ecpo"]),
    "gbpo-watchtime": ("GBPO, raw watch time", ["--config", "align-gbpo", "--set", "shaping.kind=watch_time"]),
    "gbpo-fraction": ("GBPO, raw watch fraction", ["--config", "align-gbpo", "--set", "shaping.kind=watch_fraction"]),
    "gbpo-model": ("GBPO + DARS, learned reward model", ["--config", "align-model"]),
}  # fmt: skip
HELD = ("watch_time_s", "watch_fraction", "dislike_rate", "duration_s", "dars_reward")
TEST = ("hr@10", "ndcg@10")


def _edgewise(*args: str) -> list[str]:
    return [str(Path(sys.executable)), "-m", "edgewise", "-q", *args]


def _run(cmd: list[str], done: Path, log: list[str]) -> None:
    log.append(" ".join(["edgewise", *cmd[4:]]))
    if done.exists():
        return
    print("running:", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)


def stats(values: list[float]) -> dict[str, float]:
    arr = np.asarray(values, dtype=float)
    return {"mean": round(float(arr.mean()), 4), "std": round(float(arr.std()), 4), "n": len(values)}


def markdown(report: dict[str, Any]) -> str:
    ref = report["reference"]
    lines = ["# Alignment with feedback on the synthetic world (issue 14)", ""]
    lines += [f"{report['setup']} Generated {report['created']} on {report['machine']}.", ""]
    lines += ["Held-out users' top-10, answered by the simulator; aligned values are mean ± std over "
              f"seeds {report['seeds']}.", ""]  # fmt: skip
    head = "| run | watch time (s) | watch fraction | dislike rate | mean duration (s) | DARS reward | test HR@10 | test NDCG@10 |"
    lines += [head, "|---|---|---|---|---|---|---|---|"]
    lines.append("| reference | " + " | ".join(f"{ref[k]:.4g}" for k in HELD + TEST) + " |")
    for row in report["variants"].values():
        cells = [f"{row[k]['mean']:.4g} ± {row[k]['std']:.2g}" for k in HELD + TEST]
        lines.append(f"| {row['label']} | " + " | ".join(cells) + " |")
    lines += ["", "## Commands", "", "```"] + report["commands"] + ["```", ""]
    return "\n".join(lines)


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = ["reference", *[v["label"] for v in report["variants"].values()]]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for ax, key, title in zip(
        axes, ("watch_time_s", "dislike_rate", "ndcg@10"), ("watch time (s)", "dislike rate", "test NDCG@10")
    ):
        means = [report["reference"][key], *[v[key]["mean"] for v in report["variants"].values()]]
        stds = [0.0, *[v[key]["std"] for v in report["variants"].values()]]
        ax.bar(
            range(len(names)), means, yerr=stds, capsize=4, color=["#999999"] + ["#4c72b0"] * (len(names) - 1)
        )
        ax.set_xticks(range(len(names)), names, rotation=25, ha="right", fontsize=8)
        ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--runs", type=Path, required=True, help="where the data, policy and runs go (or are found)"
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args()

    runs: Path = args.runs.expanduser().absolute()
    data, policy = runs / "data", runs / "lazy-s0"
    commands: list[str] = []
    synth = [
        "data",
        "rec",
        "synthetic",
        "--users",
        "2000",
        "--items",
        "500",
        "--seed",
        "0",
        "--out",
        str(data),
    ]
    _run(_edgewise(*synth), data / "dataset.json", commands)
    train = ["train", "rec", "--config", "lazy-small", "--data", str(data), "--out", str(policy)]
    _run(
        _edgewise(*train, "--set", "optim.steps=600", "--set", "threads=1"), policy / "metrics.json", commands
    )
    found: dict[str, list[dict]] = {}
    for name in args.variants:
        for seed in args.seeds:
            run = runs / "runs" / f"{name}-s{seed}"
            align = ["train", "align", "--policy", str(policy), "--data", str(data), "--out", str(run)]
            _run(_edgewise(*align, *VARIANTS[name][1], "--seed", str(seed), "--set", "threads=1"),
                 run / "metrics.json", commands)  # fmt: skip
            found.setdefault(name, []).append(json.loads((run / "metrics.json").read_text()))
    first = next(iter(found.values()))[0]
    reference = {k: first["heldout"]["reference"][k] for k in HELD}
    reference |= {k: first["reference"]["test"][k] for k in TEST}
    variants = {}
    for name, metrics in found.items():
        row: dict[str, Any] = {"label": VARIANTS[name][0], "alignment": metrics[0]["alignment"]}
        row |= {k: stats([m["heldout"]["aligned"][k] for m in metrics]) for k in HELD}
        row |= {k: stats([m["test"][k] for m in metrics]) for k in TEST}
        if metrics[0].get("reward_model"):
            row["reward_model_heldout"] = [m["reward_model"]["heldout"] for m in metrics]
        variants[name] = row
    held = first["heldout"]["reference"]
    report = {
        "setup": (
            f"Synthetic world: 2000 users, 500 items (seed 0); reference policy: lazy-small, 600 steps; "
            f"{held['users']} held-out users, source: {held['source']}."
        ),  # fmt: skip
        "seeds": args.seeds,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}",
        "reference": reference,
        "variants": variants,
        "commands": commands + [" ".join(["python", *sys.argv])],
    }
    write_report(args.out, "rec_rl_report", report, markdown(report))
    plot(report, args.out / "rec_rl_report.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
