"""Trainers of the TTS family: ``edgewise train tts`` (acoustic model) and ``edgewise train vocoder``.

Both are step-based loops with the SER conventions: the resolved config in ``RUN/config.yaml``,
seeds, a training-form checkpoint with the optimizer state every ``eval_every`` steps
(``RUN/checkpoints/last.safetensors``; ``--resume`` continues from it, and may raise
``optim.steps``), one history line per evaluation, progress in the log, DDP under ``torchrun``
(each rank draws its own batches; gradients are averaged), and at the end the merged model
(HRF folded) in ``RUN/model.safetensors`` with ``RUN/model.json`` and ``RUN/metrics.json``.

Run layout::

    RUN/config.yaml  RUN/model.json  RUN/model.safetensors  RUN/metrics.json  RUN/history.jsonl
    RUN/checkpoints/last.safetensors
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
from edgewise.cloud.train.checkpoint import load_training_state, save_training_state, save_weights
from edgewise.cloud.train.trainer import Dist, _check_out_dir, init_distributed, lr_at, refuse_config_changes
from edgewise.config import load_config, read_yaml
from edgewise.fsutil import write_text_atomic

log = logging.getLogger(__name__)
RUN_SCHEMA_VERSION = 1
RESUMABLE = ("optim.steps", "threads", "eval_every", "eval_sentences")


@dataclass
class TTSTrainOptions:
    data: Path
    out: Path
    resume: bool = False
    progress: bool = True
    vocoder: Path | None = None  # a vocoder run, for WER checks during acoustic training
    extra_meta: dict = field(default_factory=dict)


@dataclass
class Job:
    """What differs between the acoustic model and the vocoder; the loop is shared."""

    kind: str  # "tts" | "vocoder"
    model: torch.nn.Module
    step: Callable[[torch.nn.Module, np.random.Generator], dict[str, torch.Tensor]]  # -> losses, "total"
    evaluate: Callable[[torch.nn.Module, int], dict[str, float]]
    finish: Callable[[torch.nn.Module, torch.nn.Module], dict[str, Any]]  # (training form, merged) -> metrics
    model_json: Callable[[], dict[str, Any]]


def _config_for_resume(saved_path: Path, new, cls):
    refuse_config_changes(
        saved_path, load_config(cls, read_yaml(saved_path), name=str(saved_path)), new, RESUMABLE
    )
    return new


def run_job(cfg, opts: TTSTrainOptions, build: Callable[[Any, TTSTrainOptions, Dist], Job]) -> dict[str, Any]:
    dist = init_distributed()
    try:
        return _loop(cfg, opts, build, dist)
    finally:
        if dist.enabled:
            torch.distributed.destroy_process_group()


def _loop(cfg, opts: TTSTrainOptions, build, dist: Dist) -> dict[str, Any]:
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
    if opts.resume:
        meta = load_training_state(last, model, optimizer)
        start = int(meta["step"])
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
                record["seconds"] = round(time.perf_counter() - started, 1)
                with open(out / "history.jsonl", "a") as fh:
                    fh.write(json.dumps(record) + "\n")
                log.info(
                    "eval at step %d: %s", done, {k: v for k, v in record.items() if k.startswith("val")}
                )
                save_training_state(last, model, optimizer, {"step": done, "kind": job.kind})
            window = {}
            dist.barrier()
    if not dist.is_main:
        return {}
    model.eval()
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
    write_text_atomic(out / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    log.info(
        "%s finished: %s", cfg.name, {k: v for k, v in metrics.items() if not isinstance(v, (dict, list))}
    )
    return metrics


def read_tts_run(run: str | Path, kind: str) -> dict[str, Any]:
    """A finished run's model.json, checked to be of ``kind`` ("tts" or "vocoder")."""
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


def load_acoustic_run(run: str | Path):
    """(merged AcousticModel in eval mode, model.json) of a finished ``edgewise train tts`` run."""
    from edgewise.cloud.models.tts.acoustic import AcousticModel
    from edgewise.cloud.models.tts.config import AcousticConfig
    from edgewise.cloud.train.checkpoint import load_weights_into

    info = read_tts_run(run, "tts")
    model = AcousticModel(load_config(AcousticConfig, info["model"], name=f"{run}/model.json: model"))
    load_weights_into(model, Path(run) / "model.safetensors")
    return model.eval(), info


def load_vocoder_run(run: str | Path):
    """(merged Vocoder in eval mode, model.json) of a finished ``edgewise train vocoder`` run."""
    from edgewise.cloud.models.tts.config import VocoderConfig
    from edgewise.cloud.models.tts.vocoder import Vocoder
    from edgewise.cloud.train.checkpoint import load_weights_into

    info = read_tts_run(run, "vocoder")
    model = Vocoder(load_config(VocoderConfig, info["model"], name=f"{run}/model.json: model"))
    load_weights_into(model, Path(run) / "model.safetensors")
    return model.eval(), info
