"""The SER trainer: HRF training form, optional distillation, early stopping, resume, DDP.

Run it once per process; under ``torchrun`` each process trains a shard of every epoch with
DistributedDataParallel (gloo on CPU, nccl with one GPU per process), and rank 0 evaluates and
writes the run. Without torchrun it trains on the first GPU if there is one, else on the CPU.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import yaml

from edgewise import __version__
from edgewise.cloud.data.corpus import load_corpus
from edgewise.cloud.models.hrf import count_parameters, reparameterize_model
from edgewise.cloud.models.registry import build_model, plain_config
from edgewise.cloud.train.checkpoint import (
    load_training_state,
    load_weights_into,
    save_training_state,
    save_weights,
)
from edgewise.cloud.train.config import TrainConfig
from edgewise.cloud.train.distill import HiddenProjector, distillation_loss
from edgewise.cloud.train.early_stopping import EarlyStopping
from edgewise.cloud.train.featcache import FeatureSet, compute_features, default_cache_dir, fit_normalization
from edgewise.cloud.train.metrics import classification_report, plot_confusion
from edgewise.cloud.train.run import RUN_SCHEMA_VERSION, load_run_model
from edgewise.config import load_config, read_yaml
from edgewise.errors import ConfigError, DataError, EdgewiseError
from edgewise.features import LogMelConfig, normalize_features
from edgewise.fsutil import write_text_atomic

log = logging.getLogger(__name__)


@dataclass
class Dist:
    """This process's place in a (possibly single-process) distributed job."""

    rank: int = 0
    world_size: int = 1
    enabled: bool = False
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            torch.distributed.barrier()


def init_distributed() -> Dist:
    """Join the torchrun job if there is one; pick this process's device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    cuda = torch.cuda.is_available()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device(f"cuda:{local_rank}") if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    if world <= 1:
        return Dist(device=device)
    torch.distributed.init_process_group(backend="nccl" if cuda else "gloo")
    return Dist(torch.distributed.get_rank(), world, True, device)


@dataclass
class TrainOptions:
    data: Path
    out: Path
    resume: bool = False
    skip_bad: bool = False
    progress: bool = True
    cache_dir: Path | None = None
    teacher: Path | None = None
    extra_meta: dict = field(default_factory=dict)


def crop_batch(fs: FeatureSet, idx: np.ndarray, frames: int, rng: np.random.Generator) -> np.ndarray:
    """Random fixed-length crops; shorter utterances are tiled (no artificial silence)."""
    out = np.empty((len(idx), frames, fs.frames.shape[1]), dtype=np.float32)
    for row, i in enumerate(idx):
        seq = fs.item(int(i))
        if seq.shape[0] >= frames:
            start = int(rng.integers(0, seq.shape[0] - frames + 1))
            out[row] = seq[start : start + frames]
        else:
            out[row] = np.resize(seq, (frames, seq.shape[1])) if seq.shape[0] else 0.0
    return out


def spec_augment_mask(shape: tuple[int, int, int], cfg, rng: np.random.Generator) -> np.ndarray:
    """SpecAugment-style time and frequency masks as a 0/1 array; multiplying normalized features
    by it sets the masked cells to the training mean. Student and teacher see the same mask."""
    b, t, f = shape
    keep = np.ones(shape, dtype=np.float32)
    for row in range(b):
        for _ in range(cfg.time_masks):
            w = int(rng.integers(0, cfg.time_mask_frames + 1))
            s = int(rng.integers(0, max(1, t - w)))
            keep[row, s : s + w] = 0.0
        for _ in range(cfg.freq_masks):
            w = int(rng.integers(0, cfg.freq_mask_bins + 1))
            s = int(rng.integers(0, max(1, f - w)))
            keep[row, :, s : s + w] = 0.0
    return keep


@torch.inference_mode()
def predict_logits(model: torch.nn.Module, fs: FeatureSet, feat: LogMelConfig) -> np.ndarray:
    """Whole-utterance logits, one utterance at a time (the way the device runs it)."""
    model.eval()
    device = next(model.parameters()).device
    out = np.empty((len(fs), model.n_classes), dtype=np.float32)
    for i in range(len(fs)):
        x = torch.from_numpy(normalize_features(fs.item(i), feat)[None]).to(device)
        out[i] = model(x)[0].cpu().numpy()
    return out


def lr_at(step: int, total: int, warmup: int, base: float) -> float:
    if warmup and step < warmup:
        return base * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return base * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def _file_sha256(path: Path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None


def _check_out_dir(out: Path, resume: bool) -> None:
    """Refuse, before any slow work, an --out that would overwrite a run or cannot be written."""
    if resume:
        if not (out / "checkpoints" / "last.safetensors").is_file():
            raise EdgewiseError(f"{out}: nothing to resume (no checkpoints/last.safetensors)")
        return
    if out.exists() and not out.is_dir():
        raise EdgewiseError(f"{out}: exists and is not a directory; choose another --out")
    if out.exists() and any(out.iterdir()):
        raise EdgewiseError(
            f"{out}: output directory exists and is not empty; choose another --out or pass --resume"
        )
    existing = next(p for p in (out, *out.parents) if p.exists())
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise EdgewiseError(f"{out}: cannot create the run directory ({existing} is not writable)")


RESUMABLE_CHANGES = ("optim.epochs", "patience", "threads")


def _flatten(data: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in data.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _config_for_resume(saved_path: Path, new: TrainConfig) -> TrainConfig:
    """The run's own config; only epochs, patience and threads may change on resume."""
    saved = load_config(TrainConfig, read_yaml(saved_path), name=str(saved_path))
    if new.kd.teacher is None:
        new.kd.teacher = saved.kd.teacher
    refuse_config_changes(saved_path, saved, new, RESUMABLE_CHANGES)
    return new


def refuse_config_changes(saved_path: Path, saved, new, resumable: tuple[str, ...]) -> None:
    """ConfigError naming every field (dotted) a resume would change, except those in ``resumable``."""
    old_flat, new_flat = _flatten(saved.model_dump(mode="json")), _flatten(new.model_dump(mode="json"))
    changed = sorted(
        k
        for k in old_flat.keys() | new_flat.keys()
        if old_flat.get(k) != new_flat.get(k) and k not in resumable
    )
    if changed:
        detail = ", ".join(f"{k}: {old_flat.get(k)!r} -> {new_flat.get(k)!r}" for k in changed)
        raise ConfigError(f"{saved_path}: --resume continues this run's config; these would change: {detail}")


def train_ser(cfg: TrainConfig, opts: TrainOptions) -> dict:
    """Train, pick the best epoch on validation UA, merge HRF, evaluate on test, write the run."""
    dist = init_distributed()
    try:
        return _train(cfg, opts, dist)
    finally:
        if dist.enabled:
            torch.distributed.destroy_process_group()


def _train(cfg: TrainConfig, opts: TrainOptions, dist: Dist) -> dict:
    out = opts.out
    if dist.is_main:
        _check_out_dir(out, opts.resume)
    if opts.teacher is not None:
        cfg.kd.teacher = str(Path(opts.teacher).resolve())
    torch.set_num_threads(cfg.threads or max(1, (os.cpu_count() or 1) // dist.world_size))
    torch.manual_seed(cfg.seed)

    corpus = load_corpus(opts.data)
    labels = tuple(corpus.labels)
    if cfg.model.n_classes != len(labels):
        log.info("model.n_classes set to %d to match the corpus labels %s", len(labels), list(labels))
        cfg.model.n_classes = len(labels)
    if opts.resume:
        cfg = _config_for_resume(out / "config.yaml", cfg)
    feat = LogMelConfig(**cfg.features.model_dump())
    if cfg.model.n_mels != feat.n_mels:
        raise ConfigError(
            f"model.n_mels={cfg.model.n_mels} but features.n_mels={feat.n_mels}; they must agree"
        )

    cache_dir = opts.cache_dir or default_cache_dir(corpus.root)
    sets: dict[str, FeatureSet] = {}
    for stage in (0, 1):  # rank 0 fills the cache first, the others then read it
        if (stage == 0) == dist.is_main:
            for split in ("train", "val", "test"):
                sets[split] = compute_features(
                    corpus.split(split),
                    labels,
                    feat,
                    cache_dir,
                    skip_bad=opts.skip_bad,
                    progress=opts.progress and dist.is_main,
                )
        dist.barrier()
    feat = feat.with_stats(*fit_normalization(sets["train"]))

    teacher = None
    teacher_path = Path(cfg.kd.teacher) if cfg.kd.teacher else None
    if teacher_path is not None:
        teacher, tinfo = load_run_model(teacher_path)
        if tinfo.labels != labels:
            raise ConfigError(
                f"teacher {teacher_path}: labels {list(tinfo.labels)} differ from the corpus {list(labels)}"
            )
        if tinfo.features.without_stats() != feat.without_stats():
            raise ConfigError(
                f"teacher {teacher_path}: its feature front-end differs from this config's 'features'"
            )
        teacher_feat = tinfo.features
        teacher.to(dist.device)
        for p in teacher.parameters():
            p.requires_grad_(False)

    model = build_model(cfg.model)
    projector = None
    if teacher is not None and cfg.kd.hidden_weight > 0:
        projector = HiddenProjector(model.d_model, teacher.d_model)
    # The trained modules (model, and the hidden-KD projector) as one: optimizer, checkpoints, DDP.
    core = _WithHidden(model, projector).to(dist.device)
    optimizer = torch.optim.AdamW(core.parameters(), lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)

    start_epoch, early = 0, EarlyStopping(cfg.patience)
    ckpt_dir = out / "checkpoints"
    if opts.resume:
        meta = load_training_state(ckpt_dir / "last.safetensors", core, optimizer)
        start_epoch = meta["epoch"] + 1
        early = EarlyStopping.from_state(meta, cfg.patience, "best_ua", "bad_epochs")
        log.info(
            "resuming at epoch %d (best val UA so far %.4f)%s",
            start_epoch,
            early.best if early.best is not None else float("nan"),
            "; it had stopped early, finishing" if early.stopped else "",
        )
        if dist.is_main:
            _truncate_history(out / "history.jsonl", start_epoch)

    train_module: torch.nn.Module = core
    if dist.enabled:
        train_module = torch.nn.parallel.DistributedDataParallel(core)

    train = sets["train"]
    crop_frames = max(8, round(cfg.augment.crop_seconds * feat.frames_per_second))
    per_rank = len(train) // dist.world_size
    if per_rank == 0:
        raise DataError(f"{len(train)} training utterances cannot be shared by {dist.world_size} processes")
    steps_per_epoch = max(1, math.ceil(per_rank / cfg.optim.batch_size))
    total_steps = steps_per_epoch * cfg.optim.epochs
    warmup_steps = steps_per_epoch * cfg.optim.warmup_epochs

    if dist.is_main:
        out.mkdir(parents=True, exist_ok=True)
        write_text_atomic(out / "config.yaml", yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
        log.info(
            "training %s/%s (HRF %s, KD %s) on %d utterances: %d parameters in training form",
            cfg.model.arch,
            cfg.model.size,
            "on" if cfg.model.hrf else "off",
            "on" if teacher is not None else "off",
            len(train),
            count_parameters(model),
        )

    from tqdm import tqdm

    bar = tqdm(
        range(start_epoch, cfg.optim.epochs if not early.stopped else start_epoch),
        desc="epochs",
        unit="ep",
        disable=not (opts.progress and dist.is_main),
        initial=start_epoch,
        total=cfg.optim.epochs,
    )
    t_start = time.perf_counter()
    for epoch in bar:
        t_epoch = time.perf_counter()
        rng = np.random.default_rng([cfg.seed, epoch])
        torch.manual_seed(cfg.seed * 100003 + epoch)
        perm = rng.permutation(len(train))[dist.rank :: dist.world_size][:per_rank]
        core.train()
        losses = []
        for b in range(steps_per_epoch):
            idx = perm[b * cfg.optim.batch_size : (b + 1) * cfg.optim.batch_size]
            if len(idx) == 0:
                continue
            raw = crop_batch(train, idx, crop_frames, rng)
            keep = spec_augment_mask(raw.shape, cfg.augment, rng)
            x = torch.from_numpy(normalize_features(raw, feat) * keep).to(dist.device)
            y = torch.from_numpy(train.labels[idx]).to(dist.device)
            step = epoch * steps_per_epoch + b
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step, total_steps, warmup_steps, cfg.optim.lr)
            logits, hidden = train_module(x)
            if teacher is None:
                loss = F.cross_entropy(logits, y, label_smoothing=cfg.optim.label_smoothing)
            else:
                with torch.no_grad():
                    t_x = torch.from_numpy(normalize_features(raw, teacher_feat) * keep).to(dist.device)
                    t_logits, t_hidden = teacher.forward_with_hidden(t_x)
                loss = distillation_loss(
                    logits,
                    t_logits,
                    y,
                    temperature=cfg.kd.temperature,
                    alpha=cfg.kd.alpha,
                    label_smoothing=cfg.optim.label_smoothing,
                )
                if projector is not None:
                    loss = loss + cfg.kd.hidden_weight * F.mse_loss(hidden, t_hidden)
            pop = getattr(model, "pop_structure_loss", None)  # a graph backbone's, from this forward
            structure = pop() if pop is not None else None
            if structure is not None and cfg.graph_loss > 0:
                loss = loss + cfg.graph_loss * structure
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(core.parameters(), cfg.optim.grad_clip)
            optimizer.step()
            losses.append(loss.item())

        stop = torch.zeros(1, device=dist.device)
        if dist.is_main:
            val = classification_report(
                sets["val"].labels, predict_logits(model, sets["val"], feat).argmax(1), labels
            )
            if early.update(val["ua"]):
                save_weights(model, ckpt_dir / "best.safetensors", {"epoch": epoch, "val_ua": val["ua"]})
            save_training_state(
                ckpt_dir / "last.safetensors",
                core,
                optimizer,
                {"epoch": epoch, **early.state("best_ua", "bad_epochs")},
            )
            record = {
                "epoch": epoch,
                "train_loss": float(np.mean(losses)) if losses else None,
                "val_ua": val["ua"],
                "val_wa": val["wa"],
                "lr": optimizer.param_groups[0]["lr"],
                "seconds": round(time.perf_counter() - t_epoch, 3),
            }
            with (out / "history.jsonl").open("a") as fh:
                fh.write(json.dumps(record) + "\n")
            bar.set_postfix(
                loss=f"{record['train_loss']:.3f}", val_ua=f"{val['ua']:.3f}", best=f"{early.best:.3f}"
            )
            log.debug("epoch %d: %s", epoch, record)
            if early.stopped:
                log.info(
                    "early stopping at epoch %d: no better validation UA for %d epochs", epoch, cfg.patience
                )
                stop[0] = 1
        if dist.enabled:
            torch.distributed.broadcast(stop, src=0)
        if stop.item():
            break
    bar.close()
    train_seconds = time.perf_counter() - t_start

    ddp_info = check_params_in_sync(model, dist) if dist.enabled else None
    result = {}
    if dist.is_main:
        result = _finish(
            cfg, opts, model, sets, feat, labels, corpus, teacher_path, early.best, train_seconds, ddp_info
        )
    # Leave together: a rank that tears the process group down while its peer still uses it dies
    # in gloo's teardown ("terminate called without an active exception"), about 1 run in 10 here.
    dist.barrier()
    return result


class _WithHidden(torch.nn.Module):
    """Logits and the pooled hidden state (projected to the teacher's width when distilling hidden
    states), computed in ``forward``: the only path DDP hooks to synchronize gradients."""

    def __init__(self, model: torch.nn.Module, projector: HiddenProjector | None) -> None:
        super().__init__()
        self.model = model
        self.projector = projector

    def forward(self, x: torch.Tensor):
        logits, hidden = self.model.forward_with_hidden(x)
        return logits, (self.projector(hidden) if self.projector is not None else hidden)


def _truncate_history(path: Path, start_epoch: int) -> None:
    """Keep the history lines of the epochs a resumed run does not redo."""
    if not path.is_file():
        return
    keep = [
        line
        for line in path.read_text().splitlines()
        if line.strip() and json.loads(line)["epoch"] < start_epoch
    ]
    write_text_atomic(path, "".join(line + "\n" for line in keep))


def check_params_in_sync(model: torch.nn.Module, dist: Dist) -> dict:
    """All-gather a checksum of every parameter: DDP must leave the ranks bit-identical."""
    flat = torch.cat([p.detach().reshape(-1).double() for p in model.parameters()])
    digest = torch.stack([flat.sum(), (flat * flat).sum(), flat.abs().max()])
    gathered = [torch.zeros_like(digest) for _ in range(dist.world_size)]
    torch.distributed.all_gather(gathered, digest)
    in_sync = all(torch.equal(g, gathered[0]) for g in gathered)
    return {
        "world_size": dist.world_size,
        "backend": torch.distributed.get_backend(),
        "params_in_sync": in_sync,
    }


def _finish(
    cfg, opts, model, sets, feat, labels, corpus, teacher_path, best_ua, train_seconds, ddp_info
) -> dict:
    out = opts.out
    load_weights_into(model, out / "checkpoints" / "best.safetensors")
    model.eval()
    merged = reparameterize_model(model)
    test = sets["test"]
    logits_train_form = predict_logits(model, test, feat)
    logits_merged = predict_logits(merged, test, feat)
    merge_diff = float(np.abs(logits_train_form - logits_merged).max())
    report = classification_report(test.labels, logits_merged.argmax(1), labels)

    plain = plain_config(cfg.model)
    save_weights(merged, out / "model.safetensors")
    model_json = {
        "schema_version": RUN_SCHEMA_VERSION,
        "task": "ser",
        "name": cfg.name,
        "labels": list(labels),
        "model": plain.model_dump(mode="json"),
        "features": feat.to_dict(),
        "parameters": count_parameters(merged),
        "trained_with": {
            "hrf": cfg.model.hrf.model_dump(mode="json") if cfg.model.hrf else None,
            "parameters_training_form": count_parameters(model),
            "kd": cfg.kd.model_dump(mode="json") if teacher_path else None,
        },
        "provenance": {
            "edgewise": __version__,
            "torch": torch.__version__,
            "corpus": str(corpus.root),
            "corpus_source": corpus.source,
            "corpus_json_sha256": _file_sha256(corpus.root / "corpus.json"),
            "seed": cfg.seed,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            **opts.extra_meta,
        },
    }
    write_text_atomic(out / "model.json", json.dumps(model_json, indent=2) + "\n")
    metrics = {
        **report,
        "split": "test",
        "val_ua_best": best_ua,
        "merge_max_abs_diff": merge_diff,
        "parameters": count_parameters(merged),
        "parameters_training_form": count_parameters(model),
        "train_seconds": round(train_seconds, 2),
        "epochs_run": sum(1 for _ in (out / "history.jsonl").open()),
        "ddp": ddp_info,
    }
    write_text_atomic(out / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    plot_confusion(report, out / "confusion.png", title=f"{cfg.name}: test UA {report['ua']:.3f}")
    log.info(
        "test UA %.4f  WA %.4f  macro-F1 %.4f  (merged model, %d parameters; merge max |diff| %.2e)",
        report["ua"],
        report["wa"],
        report["macro_f1"],
        metrics["parameters"],
        merge_diff,
    )
    return metrics


def evaluate_run(
    run_dir: Path,
    data: Path,
    split: str = "test",
    *,
    skip_bad: bool = False,
    cache_dir: Path | None = None,
    progress: bool = True,
) -> dict:
    """Metrics of a finished run's merged model on a split of a corpus."""
    model, info = load_run_model(run_dir)
    corpus = load_corpus(data)
    if tuple(corpus.labels) != info.labels:
        raise EdgewiseError(
            f"{data}: corpus labels {list(corpus.labels)} differ from the run's {list(info.labels)}"
        )
    fs = compute_features(
        corpus.split(split),
        info.labels,
        info.features,
        cache_dir or default_cache_dir(corpus.root),
        skip_bad=skip_bad,
        progress=progress,
    )
    report = classification_report(fs.labels, predict_logits(model, fs, info.features).argmax(1), info.labels)
    return {**report, "split": split, "run": str(run_dir)}
