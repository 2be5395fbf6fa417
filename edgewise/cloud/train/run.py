"""A training run directory: what the trainer writes and what eval, distillation and export read.

RUN/config.yaml                 the resolved training config
RUN/model.json                  labels, plain model config, front-end (with fitted stats), provenance
RUN/model.safetensors           the merged model (HRF folded away): loads into the plain backbone
RUN/checkpoints/last.safetensors, best.safetensors   training form, with optimizer state (resume)
RUN/history.jsonl               one line per epoch
RUN/metrics.json                test-split metrics of the merged model
RUN/confusion.png
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgewise.errors import EdgewiseError
from edgewise.features import LogMelConfig

RUN_SCHEMA_VERSION = 1


@dataclass
class RunInfo:
    root: Path
    labels: tuple[str, ...]
    model_config: dict[str, Any]
    features: LogMelConfig
    meta: dict[str, Any]


def read_run_info(run_dir: str | Path) -> RunInfo:
    root = Path(run_dir)
    path = root / "model.json"
    if not path.is_file():
        raise EdgewiseError(
            f"{root}: not a finished training run (no model.json); train with `edgewise train ser`"
        )
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise EdgewiseError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(meta, dict):
        raise EdgewiseError(f"{path}: expected a JSON object, got {type(meta).__name__}")
    version = meta.get("schema_version")
    if version != RUN_SCHEMA_VERSION:
        raise EdgewiseError(
            f"{path}: run schema version {version!r}, this edgewise reads {RUN_SCHEMA_VERSION}"
        )
    malformed = [
        k
        for k, kind in (("labels", list), ("model", dict), ("features", dict))
        if not isinstance(meta.get(k), kind)
    ]
    if malformed:
        raise EdgewiseError(f"{path}: field(s) {', '.join(malformed)} missing or malformed")
    return RunInfo(root, tuple(meta["labels"]), meta["model"], LogMelConfig.from_dict(meta["features"]), meta)


def load_run_model(run_dir: str | Path):
    """The merged (plain) model of a run, in eval mode, with its RunInfo."""
    from edgewise.cloud.models.registry import ModelConfig, build_model
    from edgewise.cloud.train.checkpoint import load_weights_into
    from edgewise.config import load_config

    info = read_run_info(run_dir)
    cfg = load_config(ModelConfig, info.model_config, name=f"{info.root / 'model.json'}: model")
    model = build_model(cfg)
    load_weights_into(model, info.root / "model.safetensors")
    return model.eval(), info


def load_frozen_ser_run(run: str | Path, where: str):
    """A finished SER run's merged model in eval mode and its :class:`RunInfo`, for use as a frozen
    encoder; a folder that is not one is an :class:`EdgewiseError` that starts with ``where``."""
    run = Path(run)
    if not run.is_dir():
        raise EdgewiseError(f"{where}: no such run folder (a finished `edgewise train ser` run)")
    try:
        info = read_run_info(run)
        task = info.meta.get("task", "ser")
        if task != "ser":
            raise EdgewiseError(f"{run}: a {task} run, not an SER run (`edgewise train ser`)")
        if not (run / "model.safetensors").is_file():
            raise EdgewiseError(f"{run}: no model.safetensors (the run did not finish)")
        model, info = load_run_model(run)
    except EdgewiseError as exc:
        raise EdgewiseError(f"{where}: {exc}") from None
    except (RuntimeError, ValueError, KeyError) as exc:  # weights that do not fit the config
        raise EdgewiseError(f"{where}: cannot load its model ({exc})") from None
    return model.eval(), info
