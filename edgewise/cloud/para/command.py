"""CLI handler: ``edgewise bench para --data CORPUS --out DIR``, the paralinguistic benchmark.

Only the registries (no torch, no openSMILE) are imported at module level, so ``--help`` stays
fast; everything heavy is imported inside :func:`bench_para_run`.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import shlex
import time
from pathlib import Path

from edgewise.cloud.para.encoders import ENCODERS, valid_encoders
from edgewise.cloud.para.tasks import TASKS
from edgewise.errors import ConfigError, DataError

log = logging.getLogger("edgewise.para")

DEFAULT_SEEDS = [0, 1, 2]


def _epilog() -> str:
    tasks = "\n".join(f"  {t.name:<12} {t.kind}, field {t.field!r}: {t.description}" for t in TASKS.values())
    encoders = "\n".join(f"  {s.usage:<12} {s.description}" for s in ENCODERS.values())
    return f"""\
tasks (--tasks, comma-separated; default: every task the corpus has the field for):
{tasks}

encoders (--encoders, comma-separated; default: every one without an argument that is installed):
{encoders}

Protocol: frozen encoder; a learnable softmax-weighted sum of its layers where it has layers; mean+std
pooling over time (openSMILE functionals as they are); standardization on the train split; an MLP head
(one hidden layer, dropout) trained with Adam on train, early stopping on val, metrics on test, for each
seed. Classification: UA (primary), WA, macro-F1. Regression: CCC (primary), MAE, Pearson r, in the
target's units. Features are cached per utterance under --work, so a second run is fast.

Writes OUT/para_bench.json, OUT/para_bench.md and OUT/para_bench.png.

examples:
  edgewise bench para --data corpus/ --out para/
  edgewise bench para --data corpus/ --tasks emotion,rate --encoders logmel,ser:runs/tiny --seeds 0 --out para/
  edgewise bench para --data corpus/ --encoders onnx:encoder.onnx --out para-onnx/ --work para/work
"""


def bench_para_add_arguments(p: argparse.ArgumentParser) -> None:
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.epilog = _epilog()
    p.add_argument("--data", required=True, type=Path, help="an edgewise corpus (edgewise data speech)")
    p.add_argument("--out", required=True, type=Path, help="folder for para_bench.json, .md and .png")
    p.add_argument("--tasks", nargs="+", metavar="TASKS", help=f"comma-separated: {', '.join(TASKS)}")
    p.add_argument("--encoders", nargs="+", metavar="ENCODERS", help=f"comma-separated: {valid_encoders()}")
    p.add_argument("--seeds", nargs="+", type=int, default=DEFAULT_SEEDS, help="head seeds (default 0 1 2)")
    p.add_argument("--work", type=Path, help="feature cache folder (default OUT/work)")
    p.add_argument("--threads", type=int, default=1, help="torch and onnxruntime threads (default 1)")
    p.add_argument("--workers", type=int, help="processes for openSMILE (default: the usable cores)")
    h = p.add_argument_group("head")
    h.add_argument("--hidden", type=int, default=128, help="hidden units of the MLP head (default 128)")
    h.add_argument("--max-epochs", type=int, default=100, help="epochs at most (default 100)")
    h.add_argument(
        "--patience",
        type=int,
        default=10,
        help="epochs without a better val metric before stopping (default 10)",
    )
    p.add_argument("--no-plot", action="store_true", help="write no heat map")


def _command(args: argparse.Namespace) -> str:
    words = ["edgewise", "bench", "para", "--data", str(args.data)]
    if args.tasks:
        words += ["--tasks", ",".join(args.tasks)]
    if args.encoders:
        words += ["--encoders", ",".join(args.encoders)]
    words += ["--seeds", *map(str, args.seeds), "--out", str(args.out)]
    if args.work:
        words += ["--work", str(args.work)]
    defaults = {"threads": 1, "workers": None, "hidden": 128, "max_epochs": 100, "patience": 10}
    for dest, default in defaults.items():
        if getattr(args, dest) != default:
            words += [f"--{dest.replace('_', '-')}", str(getattr(args, dest))]
    if args.no_plot:
        words.append("--no-plot")
    return shlex.join(words)


def _check_numbers(args: argparse.Namespace) -> None:
    for flag, value, least in (
        ("--threads", args.threads, 1),
        ("--workers", args.workers, 1),
        ("--hidden", args.hidden, 1),
        ("--max-epochs", args.max_epochs, 1),
        ("--patience", args.patience, 1),
    ):
        if value is not None and value < least:
            raise ConfigError(f"{flag} must be at least {least}, got {value}")


def bench_para_run(args: argparse.Namespace) -> int:
    from edgewise.cloud.para.encoders import parse_encoders
    from edgewise.cloud.para.report import write_report
    from edgewise.cloud.para.tasks import parse_tasks

    started = time.perf_counter()
    _check_numbers(args)
    chosen_tasks, chosen_encoders = parse_tasks(args.tasks), parse_encoders(args.encoders)
    notes: list[str] = []
    corpus, tasks, targets = _corpus_and_targets(args.data, chosen_tasks, notes)
    encoders = _build_encoders(chosen_encoders, args, notes)  # every check is done before slow work
    report = _run(args, corpus, tasks, targets, encoders, notes, started)
    paths = write_report(report, args.out, plot=not args.no_plot)
    _print_table(report)
    print("report: " + ", ".join(str(p) for p in paths))
    return 0


def _corpus_and_targets(data: Path, chosen, notes: list[str]):
    """The corpus, the tasks (given, or every one it has the field for) and their targets; a missing
    field, an empty split or a task with one class is an error here, before any encoding."""
    from edgewise.cloud.data.corpus import SPLITS, load_corpus
    from edgewise.cloud.para import tasks as task_mod

    corpus = load_corpus(data)
    for split in SPLITS:
        corpus.split(split)  # an empty split is a DataError naming it
    fields = task_mod.corpus_fields(corpus)
    if chosen is None:
        chosen = [t for t in TASKS.values() if task_mod.supported(t, fields)]
        notes += [
            f"task {t.name} left out: the corpus has no {t.field!r} field"
            for t in TASKS.values()
            if t not in chosen
        ]
        if not chosen:
            raise DataError(f"{corpus.root}: no task has its field in this corpus ({', '.join(TASKS)})")
    task_mod.check_fields(chosen, corpus, fields)
    targets = {t.name: task_mod.task_targets(t, corpus, fields) for t in chosen}
    for t in chosen:
        classes = targets[t.name].classes
        if classes is not None and len(classes) < 2:
            raise DataError(
                f"task {t.name!r}: {corpus.root} has one class only ({classes[0]}); nothing to learn"
            )
    return corpus, chosen, targets


def _build_encoders(chosen, args: argparse.Namespace, notes: list[str]) -> list:
    """Load every encoder (given, or every installed one without an argument): a bad run or model
    fails here, naming it."""
    import torch

    from edgewise.bench.environment import usable_cores
    from edgewise.cloud.para.encoders import BuildOptions, build_encoder, default_encoders

    if chosen is None:
        chosen, left_out = default_encoders()
        notes += left_out
    torch.set_num_threads(args.threads)
    opts = BuildOptions(workers=args.workers or usable_cores() or 1, threads=args.threads)
    return [build_encoder(spec, arg, opts) for spec, arg in chosen]


def _run(args, corpus, chosen_tasks, targets, encoders, notes, started) -> dict:
    """Encode (or read from the cache), train every task x encoder x seed head, and assemble the report."""
    import numpy as np

    from edgewise.cloud.para.cache import cached_features
    from edgewise.cloud.para.protocol import HeadConfig

    work = args.work or args.out / "work"
    paths = [u.path for u in corpus.utterances]
    split_of = np.asarray([u.split for u in corpus.utterances])
    index = {s: np.flatnonzero(split_of == s) for s in ("train", "val", "test")}
    cfg = HeadConfig(hidden=args.hidden, max_epochs=args.max_epochs, patience=args.patience)
    encoder_info: dict[str, dict] = {}
    results: list[dict] = []
    for encoder in encoders:
        feats, timing = cached_features(encoder, paths, work)
        encoder_info[encoder.name] = {
            "layers": encoder.layers,
            "n_layers": int(feats.shape[1]),
            "dims": int(feats.shape[2]),
            "description": ENCODERS[encoder.name.split(":", 1)[0]].description,
            "fingerprint": encoder.fingerprint(),
            "timing": timing,
        }
        log.info(
            "%s: %d x %d features, %d encoded in %.1f s",
            encoder.name,
            *feats.shape[1:],
            timing["encoded"],
            timing["encode_s"],
        )
        by_split = {s: feats[i] for s, i in index.items()}
        for task in chosen_tasks:
            results += _heads(encoder.name, task, by_split, targets[task.name], index, args.seeds, cfg)
    tasks_info = {
        t.name: {
            "kind": t.kind,
            "field": t.field,
            "primary": t.primary,
            "description": t.description,
            "classes": list(targets[t.name].classes) if targets[t.name].classes else None,
        }
        for t in chosen_tasks
    }
    return _report(args, corpus, index, cfg, tasks_info, encoder_info, results, notes, started)


def _heads(encoder: str, task, by_split: dict, target, index: dict, seeds, cfg) -> list[dict]:
    """One head per seed for one task on one encoder's features: their result rows."""
    from edgewise.cloud.para.protocol import train_head

    y = {s: target.values[i] for s, i in index.items()}
    rows = []
    for seed in seeds:
        res = train_head(by_split, y, task.kind, target.classes, seed, cfg)
        rows.append(
            {
                "task": task.name,
                "encoder": encoder,
                "seed": seed,
                "test": res.test,
                "val_primary": res.val_primary,
                "best_epoch": res.best_epoch,
                "epochs": res.epochs,
                "layer_weights": res.layer_weights,
                "train_s": res.train_s,
            }
        )
        log.info(
            "%s / %s / seed %d: test %s %.3f (val %.3f, best epoch %d of %d)",
            task.name,
            encoder,
            seed,
            task.primary,
            res.test[task.primary],
            res.val_primary,
            res.best_epoch,
            res.epochs,
        )
    return rows


def _report(args, corpus, index, cfg, tasks_info, encoder_info, results, notes, started) -> dict:
    import torch

    from edgewise.bench.environment import usable_cores
    from edgewise.cloud.para.report import SCHEMA_VERSION, summarize

    return {
        "schema_version": SCHEMA_VERSION,
        "benchmark": "para",
        "command": _command(args),
        "corpus": {
            "path": str(args.data),
            "source": corpus.source,
            "utterances": {s: int(len(i)) for s, i in index.items()},
            "speakers": {s: len(corpus.speakers(s)) for s in index},
        },
        "protocol": {
            "seeds": list(args.seeds),
            "head": cfg.to_dict(),
            "pooling": "mean+std over time per layer (openSMILE functionals as they are)",
            "layers": "learnable softmax-weighted sum over the encoder's layers",
            "standardization": "per (layer, dim), train split's mean and std",
            "early_stopping": "val split's primary metric (UA or CCC)",
            "regression_targets": "standardized on train for training; metrics in the target's units",
        },
        "tasks": tasks_info,
        "encoders": encoder_info,
        "results": results,
        "summary": summarize(results, tasks_info, list(encoder_info)),
        "notes": notes,
        "environment": {
            "host": platform.node(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "threads": args.threads,
            "cores": usable_cores(),
            "load_average": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
            "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        },
        "wall_s": round(time.perf_counter() - started, 1),
    }


def _print_table(report: dict) -> None:
    for task, info in report["tasks"].items():
        metric = info["primary"]
        cells = [
            f"{enc} {stats[metric]['mean']:.3f}±{stats[metric]['std']:.3f}"
            for enc, stats in report["summary"][task].items()
        ]
        print(f"{task} ({metric}): " + ", ".join(cells))
