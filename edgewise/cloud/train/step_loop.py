"""The step-based training loop shared by the TTS acoustic model, the vocoder and the recommenders.

A family supplies a :class:`Job` (its model, one training step, evaluation, what ``finish`` measures
on the merged model, and its ``model.json`` fields); the loop gives every family the same
conventions: the resolved config in ``RUN/config.yaml``, seeds, a training-form checkpoint with the
optimizer state every ``eval_every`` steps (``RUN/checkpoints/last.safetensors``; ``--resume``
continues from it and may raise ``optim.steps``), one history line per evaluation, progress in the
log, DDP under ``torchrun`` (each rank draws its own batches; gradients are averaged; ``ddp`` in
``RUN/metrics.json`` records whether the ranks ended with identical weights), and at the end the
merged model (HRF folded) in ``RUN/model.safetensors`` with ``RUN/model.json`` and
``RUN/metrics.json``.

Run layout::

    RUN/config.yaml  RUN/model.json  RUN/model.safetensors  RUN/metrics.json  RUN/history.jsonl
    RUN/checkpoints/last.safetensors  (RUN/checkpoints/ema.safetensors with optim.ema)

With ``optim.ema`` set (configs that have it: the recommenders), an exponential moving average of
the weights is kept beside them (:mod:`edgewise.cloud.train.weight_average`); each evaluation scores
both (``val_*`` and ``ema_val_*`` in the history) and the better one on ``best_metric`` is the
candidate for the best checkpoint.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from edgewise import __version__
from edgewise.cloud.models.hrf import count_parameters, reparameterize_model
from edgewise.cloud.train.checkpoint import (
    load_tensors,
    load_training_state,
    load_weights_into,
    save_training_state,
    save_weights,
)
from edgewise.cloud.train.early_stopping import EarlyStopping
from edgewise.cloud.train.run import RUN_SCHEMA_VERSION
from edgewise.cloud.train.trainer import (
    Dist,
    _check_out_dir,
    check_params_in_sync,
    init_distributed,
    lr_at,
    refuse_config_changes,
)
from edgewise.cloud.train.weight_average import WeightAverage
from edgewise.config import load_config, read_yaml
from edgewise.fsutil import write_text_atomic

log = logging.getLogger(__name__)
# fields a --resume may change (others would make the continued run a different experiment)
RESUMABLE = ("optim.steps", "threads", "eval_every", "eval_sentences", "patience")


@dataclass
class StepTrainOptions:
    data: Path
    out: Path
    resume: bool = False
    progress: bool = True
    vocoder: Path | None = None  # tts: a vocoder run, for WER checks during acoustic training
    teacher: Path | None = None  # rec: a teacher run to distil from
    extra_meta: dict = field(default_factory=dict)


@dataclass
class Job:
    """What differs between families (acoustic model, vocoder, recommenders); the loop is shared.

    ``best_metric``: a key of ``evaluate``'s record to maximize. The loop then keeps the best
    evaluation's weights in ``RUN/checkpoints/best.safetensors``, stops early after the config's
    ``patience`` evaluations without improvement (when it has one), and merges and ships the best
    weights, not the last.
    """

    kind: str  # "tts" | "vocoder" | "rec"
    model: torch.nn.Module
    step: Callable[[torch.nn.Module, np.random.Generator], dict[str, torch.Tensor]]  # -> losses, "total"
    evaluate: Callable[[torch.nn.Module, int], dict[str, float]]
    finish: Callable[[torch.nn.Module, torch.nn.Module], dict[str, Any]]  # (training form, merged) -> metrics
    model_json: Callable[[], dict[str, Any]]
    best_metric: str | None = None


def _config_for_resume(saved_path: Path, new, cls):
    refuse_config_changes(
        saved_path, load_config(cls, read_yaml(saved_path), name=str(saved_path)), new, RESUMABLE
    )
    return new


def run_job(
    cfg, opts: StepTrainOptions, build: Callable[[Any, StepTrainOptions, Dist], Job]
) -> dict[str, Any]:
    dist = init_distributed()
    try:
        return _loop(cfg, opts, build, dist)
    finally:
        if dist.enabled:
            torch.distributed.destroy_process_group()


def _loop(cfg, opts: StepTrainOptions, build, dist: Dist) -> dict[str, Any]:
    out = opts.out
    _check_out_dir(out, opts.resume)
    if opts.resume:
        cfg = _config_for_resume(out / "config.yaml", cfg, type(cfg))
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed + dist.rank)
    rng = np.random.default_rng(cfg.seed + 1000 * dist.rank)
    job = build(cfg, opts, dist)
    model = job.model.to(dist.device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
    start = 0
    last = out / "checkpoints" / "last.safetensors"
    best_path = out / "checkpoints" / "best.safetensors"
    early = EarlyStopping(getattr(cfg, "patience", None) if job.best_metric is not None else None)
    ema_decay = getattr(cfg.optim, "ema", None)
    average = WeightAverage(model, ema_decay) if ema_decay else None
    ema_path = out / "checkpoints" / "ema.safetensors"
    if opts.resume:
        meta = load_training_state(last, model, optimizer)
        start = int(meta["step"])
        if average is not None:
            average.restart_from(model)
            if not average.load(ema_path, start):
                log.warning(
                    "%s: no weight average saved at step %d; it restarts from the weights", out, start
                )
        early = EarlyStopping.from_state(meta, early.patience, "best", "bad_evals")
        if job.best_metric is not None and best_path.is_file():  # written just before last: it may be newer
            saved = load_tensors(best_path)[1].get(job.best_metric)
            early.best = early.best if saved is None else float(saved)
        if early.stopped:
            log.info("%s stopped early at step %d; --resume finishes it without more training", out, start)
            start = cfg.optim.steps
        rng = np.random.default_rng([cfg.seed + 1000 * dist.rank, start])
        torch.manual_seed(cfg.seed + dist.rank + start)
        log.info("resuming %s at step %d of %d", out, start, cfg.optim.steps)
    elif dist.is_main:
        out.mkdir(parents=True, exist_ok=True)
        write_text_atomic(out / "config.yaml", yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
    if dist.is_main and opts.resume:
        write_text_atomic(out / "config.yaml", yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
    train_model = model
    if dist.enabled:
        train_model = torch.nn.parallel.DistributedDataParallel(model)
    log.info(
        "%s: %d parameters in the training form (%d merged), %d steps, %d thread(s)%s",
        cfg.name,
        count_parameters(model),
        count_parameters(reparameterize_model(model)),
        cfg.optim.steps,
        torch.get_num_threads(),
        f", DDP x{dist.world_size}" if dist.enabled else "",
    )
    started = time.perf_counter()
    window: dict[str, list[float]] = {}
    for step in range(start, cfg.optim.steps):
        model.train()
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, cfg.optim.steps, cfg.optim.warmup_steps, cfg.optim.lr)
        losses = job.step(train_model, rng)
        optimizer.zero_grad(set_to_none=True)
        losses["total"].backward()
        grad = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
        if torch.isfinite(grad):
            optimizer.step()
            if average is not None:
                average.update(model)
        for k, v in losses.items():
            window.setdefault(k, []).append(float(v.detach()))
        done = step + 1
        if done % 50 == 0 and dist.is_main:
            rate = (done - start) / (time.perf_counter() - started)
            log.info(
                "step %d/%d  %s  (%.2f steps/s, %.0f min left)",
                done,
                cfg.optim.steps,
                "  ".join(f"{k} {np.mean(v[-50:]):.4f}" for k, v in window.items()),
                rate,
                (cfg.optim.steps - done) / rate / 60,
            )
        if done % cfg.eval_every == 0 or done == cfg.optim.steps:
            if dist.is_main:
                model.eval()
                record = {
                    "step": done,
                    **{f"train_{k}": round(float(np.mean(v)), 5) for k, v in window.items()},
                }
                record.update(job.evaluate(model, done))
                if average is not None:
                    record.update({f"ema_{k}": v for k, v in job.evaluate(average.model, done).items()})
                record["seconds"] = round(time.perf_counter() - started, 1)
                with open(out / "history.jsonl", "a") as fh:
                    fh.write(json.dumps(record) + "\n")
                log.info(
                    "eval at step %d: %s", done, {k: v for k, v in record.items() if k.startswith("val")}
                )
                if job.best_metric is not None:
                    value, weights, chosen = float(record[job.best_metric]), "trained", model
                    if average is not None and float(record[f"ema_{job.best_metric}"]) > value:
                        value, weights, chosen = float(record[f"ema_{job.best_metric}"]), "ema", average.model
                    if early.update(value):
                        meta = {"step": done, job.best_metric: value, "weights": weights}
                        save_weights(chosen, best_path, meta)
                state = {"step": done, "kind": job.kind, **early.state("best", "bad_evals")}
                if average is not None:  # before last: a resume finds the average of its step
                    average.save(ema_path, done)
                save_training_state(last, model, optimizer, state)
            window = {}
            stop = early.stopped
            if dist.enabled:  # every rank stops at the same step
                flag = torch.tensor([float(stop)], device=dist.device)
                torch.distributed.broadcast(flag, 0)
                stop = bool(flag.item())
            dist.barrier()
            if stop:
                log.info(
                    "stopping early at step %d: %d evaluations without a better %s",
                    done,
                    early.bad,
                    job.best_metric,
                )
                break
    ddp_info = check_params_in_sync(model, dist) if dist.enabled else None  # every rank takes part
    if not dist.is_main:
        return {}
    model.eval()
    selected = {}
    if job.best_metric is not None and best_path.is_file():
        best_meta = load_weights_into(model, best_path)
        selected = {"step": best_meta.get("step"), "weights": best_meta.get("weights", "trained")}
    elif average is not None:  # no model selection: the average is what ships
        model.load_state_dict(average.model.state_dict())
        selected = {"step": cfg.optim.steps, "weights": "ema"}
    merged = reparameterize_model(model)
    save_weights(merged, out / "model.safetensors")
    info = {
        "schema_version": RUN_SCHEMA_VERSION,
        "task": job.kind,
        "name": cfg.name,
        **job.model_json(),
        "parameters": count_parameters(merged),
        "trained_with": {
            "hrf": cfg.model.hrf.model_dump(mode="json") if cfg.model.hrf else None,
            "parameters_training_form": count_parameters(model),
            "ema": ema_decay,
            "selected": selected or None,
        },
        "provenance": {
            "edgewise": __version__,
            "torch": torch.__version__,
            "corpus": str(opts.data),
            "seed": cfg.seed,
            "steps": cfg.optim.steps,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            **opts.extra_meta,
        },
    }
    write_text_atomic(out / "model.json", json.dumps(info, indent=2) + "\n")
    metrics = job.finish(model, merged)
    metrics.update(
        {"parameters": count_parameters(merged), "parameters_training_form": count_parameters(model)}
    )
    if ddp_info is not None:
        metrics["ddp"] = ddp_info
    write_text_atomic(out / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    log.info(
        "%s finished: %s", cfg.name, {k: v for k, v in metrics.items() if not isinstance(v, (dict, list))}
    )
    return metrics


def read_step_run(run: str | Path, kind: str) -> dict[str, Any]:
    """A finished run's model.json, checked to be of ``kind`` ("tts", "vocoder", "rec")."""
    from edgewise.errors import EdgewiseError

    path = Path(run) / "model.json"
    if not path.is_file():
        raise EdgewiseError(
            f"{run}: not a finished training run (no model.json); train with `edgewise train {kind}`"
        )
    try:
        info = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise EdgewiseError(f"{path}: not valid JSON ({exc})") from None
    if info.get("task") != kind:
        raise EdgewiseError(f"{path}: a {info.get('task')!r} run, expected a {kind!r} run")
    return info
