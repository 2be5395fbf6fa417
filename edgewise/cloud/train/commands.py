"""CLI handlers: ``edgewise train ser`` and ``edgewise eval ser``. Torch is imported inside ``run``."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from edgewise.config import add_override_arguments
from edgewise.errors import EdgewiseError

log = logging.getLogger(__name__)


def train_ser_add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--config", default="tiny", help="a shipped preset (tiny, small, base) or a YAML path (default: tiny)"
    )
    p.add_argument(
        "--data",
        required=True,
        type=Path,
        help="corpus: an edgewise corpus (edgewise data speech), or an IEMOCAP, RAVDESS or CREMA-D root",
    )
    p.add_argument("--out", required=True, type=Path, help="run directory to create")
    p.add_argument(
        "--teacher", type=Path, help="a finished run to distill from (switches knowledge distillation on)"
    )
    add_override_arguments(p, "--set model.arch=conformer --set model.hrf=null")
    p.add_argument(
        "--resume", action="store_true", help="continue an interrupted run from checkpoints/last.safetensors"
    )
    p.add_argument(
        "--skip-bad", action="store_true", help="drop unusable audio files with a warning instead of failing"
    )
    p.add_argument("--cache-dir", type=Path, help="feature cache (default: CORPUS/.edgewise-cache)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def train_ser_run(args: argparse.Namespace) -> int:
    from edgewise.cloud.train.config import resolve_config
    from edgewise.cloud.train.trainer import TrainOptions, train_ser

    overrides = list(args.overrides) + ([f"seed={args.seed}"] if args.seed is not None else [])
    cfg = resolve_config(args.config, overrides)
    opts = TrainOptions(
        data=args.data,
        out=args.out,
        resume=args.resume,
        skip_bad=args.skip_bad,
        progress=not args.no_progress and sys.stderr.isatty(),
        cache_dir=args.cache_dir,
        teacher=args.teacher,
    )
    metrics = train_ser(cfg, opts)
    if metrics:
        print(
            json.dumps(
                {k: metrics[k] for k in ("ua", "wa", "macro_f1", "per_class_recall", "parameters")}, indent=2
            )
        )
    return 0


def train_ser_adapter_add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", type=Path, help="a finished SER run (edgewise train ser)")
    p.add_argument("--data", required=True, type=Path, help="the corpus with speakers (its train split fits)")
    p.add_argument(
        "--prior-weight",
        type=float,
        default=3.0,
        help="how many utterances the population's statistics count as before a speaker's own "
        "take over (default: 3)",
    )
    p.add_argument("--seed", type=int, default=0)


def train_ser_adapter_run(args: argparse.Namespace) -> int:
    from edgewise.cloud.train.speaker_adapter import FILE, fit_speaker_adapter
    from edgewise.fsutil import write_text_atomic

    if not (args.run / "model.safetensors").is_file():
        raise EdgewiseError(f"{args.run}: not a finished run (no model.safetensors)")
    head = fit_speaker_adapter(args.run, args.data, prior_weight=args.prior_weight, seed=args.seed)
    out = args.run / FILE
    write_text_atomic(out, json.dumps(head.to_json()) + "\n")
    print(json.dumps({"written": str(out), **head.fitted}, indent=2))
    return 0


def eval_ser_add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", type=Path, help="a finished training run")
    p.add_argument("--data", required=True, type=Path, help="corpus to evaluate on")
    p.add_argument("--split", default="test", choices=["train", "val", "test"])
    p.add_argument("--out", type=Path, help="write the metrics JSON here as well")
    p.add_argument("--skip-bad", action="store_true")


def eval_ser_run(args: argparse.Namespace) -> int:
    from edgewise.cloud.train.trainer import evaluate_run

    report = evaluate_run(
        args.run, args.data, args.split, skip_bad=args.skip_bad, progress=sys.stderr.isatty()
    )
    return _emit_report(report, args.out)


def eval_baseline_add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, type=Path, help="corpus to grade")
    p.add_argument("--out", type=Path, help="write the metrics JSON here as well")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--speaker-norm",
        action="store_true",
        help="z-score the features within each speaker (test speakers too): a reference for how much "
        "of the corpus's difficulty is speaker variation, not a single-utterance model",
    )


def eval_baseline_run(args: argparse.Namespace) -> int:
    from edgewise.cloud.baseline import egemaps_baseline
    from edgewise.cloud.data.corpus import load_corpus

    report = egemaps_baseline(load_corpus(args.data), seed=args.seed, speaker_norm=args.speaker_norm)
    return _emit_report(report, args.out)


def _emit_report(report: dict, out: Path | None) -> int:
    """Print a metrics report as JSON, and write it to ``out`` too when given."""
    from edgewise.fsutil import write_text_atomic

    text = json.dumps(report, indent=2)
    if out:
        write_text_atomic(out, text + "\n")
    print(text)
    return 0
