"""Prosodic disambiguation: does the text help a classifier pick the reading the prosody means?

On a corpus from ``edgewise data disambig``, the features of every utterance are extracted once
(prosodic functionals, the coarse prosodic contour, and with ``--run`` a frozen SER run's pooled
hidden state; MiniLM of the template's text), then ``edgewise eval disambig``'s comparison runs for
each set of audio features: audio only vs audio + text, over ``--seeds``; the text-only control
once (it sees no audio). Writes ``OUT/disambig_report.{json,md}``::

    .venv/bin/edgewise data disambig --out benchmarks/work/disambig/corpus --n-speakers 60 --seed 0 --workers 1
    .venv/bin/python benchmarks/disambig_report.py --data benchmarks/work/disambig/corpus \\
        --run benchmarks/work/adapt/tiny-s0 --out benchmarks/results
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path
from typing import Any

from report_files import write_report

from edgewise.cloud.disambig.corpus import load_disambig
from edgewise.cloud.disambig.evaluate import compare, extract_features

FEATURE_SETS = {
    "prosody": ["prosody"],
    "prosody + contour": ["prosody", "contour"],
    "ser": ["ser"],
    "prosody + contour + ser": ["prosody", "contour", "ser"],
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--run", type=Path, help="a finished SER run (adds the ser feature sets)")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = p.parse_args()

    import torch

    torch.set_num_threads(1)
    started = time.perf_counter()
    corpus = load_disambig(args.data)
    blocks = ["prosody", "contour", *(["ser"] if args.run else [])]
    features = extract_features(corpus, blocks, args.run, text_encoder="auto")
    print(f"features of {len(corpus.items)} utterances in {features.seconds:.0f} s", flush=True)
    reports: dict[str, Any] = {}
    for i, (name, chosen) in enumerate(FEATURE_SETS.items()):
        if not set(chosen) <= set(blocks):
            continue
        conditions = ("audio", "audio+text", "text") if i == 0 else ("audio", "audio+text")
        reports[name] = compare(corpus, features, args.seeds, blocks=chosen, conditions=conditions)
        print(f"{name}: {reports[name]['seconds']['training']:.0f} s of training", flush=True)
    for rep in reports.values():  # the corpus as given on the command line, not this machine's path
        rep["corpus"]["root"] = str(args.data)
    first = next(iter(reports.values()))
    report = {
        "command": "python benchmarks/disambig_report.py " + " ".join(sys.argv[1:]),
        "machine": f"{platform.machine()}, {platform.system()}, torch 1 thread",
        "corpus": first["corpus"],
        "seeds": args.seeds,
        "text_encoder": features.text_encoder,
        "run": str(args.run) if args.run else None,
        "chance": first["chance"],
        "text_only": first["conditions"]["text"],
        "feature_sets": reports,
        "seconds": {"features": round(features.seconds, 1), "total": round(time.perf_counter() - started, 1)},
    }
    write_report(args.out, "disambig_report", report, markdown(report))


def markdown(report: dict[str, Any]) -> str:
    kinds = report["corpus"]["kinds"]
    c = report["corpus"]
    lines = [
        "# Prosodic disambiguation (`edgewise eval disambig`)",
        "",
        f"Corpus `{c['root']}`: {c['templates']} templates, every reading by every speaker; "
        f"{c['utterances']['train']} / {c['utterances']['val']} / {c['utterances']['test']} utterances by "
        f"{c['speakers']['train']} / {c['speakers']['val']} / {c['speakers']['test']} speakers (train / val / test, "
        f"speaker-disjoint). Test accuracy of the intended reading, mean ± std over seeds "
        f"{', '.join(map(str, report['seeds']))}. Text: {report['text_encoder']} of the template's text"
        + (f"; ser: the pooled hidden state of `{report['run']}` (frozen)." if report["run"] else "."),
        "",
        "| audio features | condition | overall | " + " | ".join(kinds) + " |",
        "|---|---|---|" + "---|" * len(kinds),
    ]
    for name, rep in report["feature_sets"].items():
        dims = sum(rep["features"]["audio_blocks"].values())
        for key in ("audio", "audio+text"):
            cond = rep["conditions"][key]
            cells = [_cell(cond["test_accuracy"])] + [_cell(cond["per_kind"][k]) for k in kinds]
            lines.append(f"| {name} ({dims}) | {cond['label']} | " + " | ".join(cells) + " |")
    text = report["text_only"]
    cells = [_cell(text["test_accuracy"])] + [_cell(text["per_kind"][k]) for k in kinds]
    lines.append("| none | text only (control) | " + " | ".join(cells) + " |")
    ch = report["chance"]
    lines.append(
        "| | chance | "
        + " | ".join([f"{ch['test_accuracy']:.3f}"] + [f"{ch['per_kind'][k]:.3f}" for k in kinds])
        + " |"
    )
    hardest = _hardest(report)
    lines += [
        "",
        f"Hardest templates for audio + text on `{hardest[0]}` (accuracy over seeds): "
        + ", ".join(f"{t} {a:.2f}" for t, a in hardest[1]),
        "",
        f"Command: `{report['command']}`; features {report['seconds']['features']:.0f} s, "
        f"total {report['seconds']['total']:.0f} s ({report['machine']}).",
    ]
    return "\n".join(lines) + "\n"


def _hardest(report: dict[str, Any], n: int = 5) -> tuple[str, list[tuple[str, float]]]:
    name = (
        "prosody + contour"
        if "prosody + contour" in report["feature_sets"]
        else next(iter(report["feature_sets"]))
    )
    per_template = report["feature_sets"][name]["conditions"]["audio+text"]["per_template"]
    return name, sorted(per_template.items(), key=lambda kv: kv[1])[:n]


def _cell(stat: dict[str, float]) -> str:
    return f"{stat['mean']:.3f} ± {stat['std']:.3f}"


if __name__ == "__main__":
    main()
