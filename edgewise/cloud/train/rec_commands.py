"""CLI handlers: ``edgewise train rec`` and ``edgewise eval rec``. Torch is imported inside the run functions."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from edgewise.config import add_override_arguments


def train_rec_add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Train a recommender on a data set from `edgewise data rec`: the lazy decoder-only generator "
        "(OneRec-V2), the encoder-decoder (TIGER), or SASRec, all under one evaluation protocol "
        "(leave-last-out, full ranking, HR@K and NDCG@K). Generative kinds tokenize items into "
        "semantic IDs first; HRF layers in the FFNs are merged away at the end."
    )
    p.add_argument(
        "--config",
        default="lazy",
        help="a shipped preset (lazy, lazy-small, encdec, sasrec) or a YAML path (default: lazy)",
    )
    p.add_argument("--data", required=True, help="a data set directory from `edgewise data rec`, or ml-100k")
    p.add_argument("--out", required=True, type=Path, help="run directory to create")
    p.add_argument("--teacher", type=Path, help="a finished rec run to distil from (same kind family)")
    add_override_arguments(p, "--set model.kind=encdec --set optim.steps=4000 --set model.hrf=null")
    p.add_argument("--resume", action="store_true", help="continue from checkpoints/last.safetensors")
    p.add_argument("--no-progress", action="store_true", help="quieter log")


def train_rec_run(args: argparse.Namespace) -> int:
    from edgewise.cloud.models.rec.config import resolve_rec_config
    from edgewise.cloud.train.rec_job import build_rec_job
    from edgewise.cloud.train.step_loop import StepTrainOptions, run_job

    overrides = list(args.overrides) + ([f"seed={args.seed}"] if args.seed is not None else [])
    cfg = resolve_rec_config(args.config, overrides)
    opts = StepTrainOptions(
        args.data, args.out, args.resume, not args.no_progress and sys.stderr.isatty(), teacher=args.teacher
    )
    metrics = run_job(cfg, opts, build_rec_job)
    if metrics:
        print(
            json.dumps({k: v for k, v in metrics.items() if k in ("valid", "test", "parameters")}, indent=2)
        )
    return 0


def eval_rec_add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Evaluate a finished rec run on its data set's validation or test users: HR@5/10, NDCG@5/10 "
        "(full ranking), and for generative runs the share of generated IDs that are no item."
    )
    p.add_argument("run", type=Path, help="a run directory from `edgewise train rec`")
    p.add_argument("--data", help="the data set (default: the one the run was trained on)")
    p.add_argument("--split", choices=("valid", "test"), default="test")
    p.add_argument("--beam", type=int, help="beam width (default: the run's)")
    p.add_argument(
        "--no-trie", action="store_true", help="decode without the prefix trie (invalid IDs possible)"
    )
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")


def eval_rec_run(args: argparse.Namespace) -> int:
    import torch

    from edgewise.cloud.models.rec.config import RecTrainConfig
    from edgewise.cloud.train.rec_job import RecData, evaluate_model, load_rec_run
    from edgewise.config import load_config, read_yaml

    if args.threads:
        torch.set_num_threads(args.threads)
    model, info = load_rec_run(args.run)
    cfg = load_config(RecTrainConfig, read_yaml(args.run / "config.yaml"), name=str(args.run / "config.yaml"))
    if args.beam is not None:
        cfg = load_config(RecTrainConfig, {**cfg.model_dump(mode="json"), "beam": args.beam}, name="--beam")
    data = RecData(cfg, args.data or info["data"]["path"], teacher_ids=info["semantic_ids"])
    check_same_items(args.run, data.dataset.item_ids)
    metrics = evaluate_model(model, data, args.split, cfg, constrained=not args.no_trie)
    print(json.dumps({"run": str(args.run), "kind": info["kind"], "split": args.split, **metrics}, indent=2))
    return 0


def check_same_items(run: Path, item_ids: list[str]) -> None:
    """A data set other than the run's must hold the same items at the same indices."""
    from edgewise.errors import DataError

    path = run / "items.json"
    try:
        known = json.loads(path.read_text())["ids"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DataError(f"{path}: cannot read the run's item table ({exc})") from None
    if len(known) != len(item_ids):
        raise DataError(f"{run}: the run knows {len(known)} items, the data set has {len(item_ids)}")
    for index, (a, b) in enumerate(zip(known, item_ids, strict=True)):
        if str(a) != str(b):
            raise DataError(
                f"{run}: item {index} is {a!r} in the run and {b!r} in the data set; not the same items"
            )
