"""``edgewise train align``: align a generative recommender with user feedback (OneRec-V1/V2 style RL).

The reference policy is a finished ``lazy`` or ``encdec`` run of ``edgewise train rec``; the job
fine-tunes a copy of it (its merged form; dropout off, since ``pi_old`` is measured without it) in
the shared step loop and writes a normal rec run, which ``edgewise eval rec`` and the export read
as they read any other.

One optimisation step:

1. **Rollouts** (every ``rollout.reuse`` steps): ``rollout.users`` users drawn from the data set's
   users minus the held-out ones, each with the *training* history of the leave-last-out split; G =
   ``rollout.group`` candidate items per user, sampled from the current policy level by level
   through the prefix trie (``rollout.sampler: sample``; ``beam`` takes the top G of the beam
   search instead). ``pi_old`` is the sampling policy's probability of each candidate, the
   reference's per-level distributions are kept for the anchor.
2. **Feedback and rewards**: the simulator's sampled responses (``reward: simulator``) or a reward
   model's expected ones (``reward: model``; trained first on the logged feedback, its held-out
   accuracy in ``metrics.json``), shaped by DARS (``shaping.kind: dars``) or left raw
   (``watch_time``, ``watch_fraction``), minus ``shaping.dislike_penalty`` per dislike.
3. **Objective**: group-relative advantages, GBPO or ECPO on the item log-probabilities
   (:mod:`edgewise.cloud.rec.align.objectives`), plus ``anchor.kl`` x KL(policy || reference) per code
   level along the candidates' prefixes and ``anchor.ce`` x the supervised next-item loss.

Measured before (the reference) and after, in ``metrics.json``: HR@K / NDCG@K on the valid and
test splits, and the top-``top_k`` recommendations of the held-out users (a fixed share of users
never rolled out, with their test histories) and of some training users, answered by the
simulator (the reward model where the data set has none) with the same random draws for both
policies: mean watch time, watch fraction, dislike rate, the mean duration of the recommended
items, the configured reward and the DARS reward.

The aligned run's ``config.yaml`` is the policy's rec config (what ``edgewise eval rec`` reads);
the alignment config is kept beside it as ``align.yaml`` (``--resume`` puts it back first).
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import shutil
import sys
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from edgewise.config import StrictModel, add_override_arguments, load_config, read_yaml
from edgewise.errors import ConfigError, DataError

log = logging.getLogger(__name__)

PRESET_DIR = Path(__file__).resolve().parents[1] / "configs" / "rec"
PRESET_PREFIX = "align-"
ALIGN_FILE = "align.yaml"
HELDOUT_SEED = 14  # the held-out users do not depend on the run's seed, so seeds compare on the same users


class ShapingConfig(StrictModel):
    kind: Literal["dars", "watch_time", "watch_fraction"] = "dars"
    buckets: int = Field(8, ge=1, description="log-spaced duration buckets (dars)")
    prior_weight: float = Field(
        5.0, ge=0, description="pseudo-interactions of everyone's bucket blended into a user's (dars)"
    )
    dislike_penalty: float = Field(1.0, ge=0)


class EcpoConfig(StrictModel):
    clip_eps: float = Field(0.2, gt=0, lt=1)
    delta: float = Field(
        0.1, gt=0, description="negative-advantage ratios are capped at 1 + clip_eps + delta"
    )


class AnchorConfig(StrictModel):
    kl: float = Field(1.0, ge=0, description="weight of KL(policy || reference) per code level")
    ce: float = Field(0.0, ge=0, description="weight of the supervised next-item loss")


class RolloutConfig(StrictModel):
    users: int = Field(64, ge=1, description="users per rollout batch")
    group: int = Field(8, ge=2, description="candidate items per user (G)")
    sampler: Literal["sample", "beam"] = "sample"
    temperature: float = Field(1.0, gt=0)
    reuse: int = Field(2, ge=1, description="optimizer steps per rollout batch (pi_old fixed across them)")


class RewardModelConfig(StrictModel):
    d_model: int = Field(32, gt=0)
    init: Literal["collaborative", "random"] = Field(
        "collaborative",
        description="item embeddings start from co-occurrence (PPMI + SVD) vectors or at random",
    )
    steps: int = Field(400, ge=1)
    batch_size: int = Field(512, ge=1)
    lr: float = Field(3e-3, gt=0)
    weight_decay: float = Field(0.1, ge=0)
    holdout: float = Field(0.1, ge=0, lt=1, description="share of users whose logs measure the model")


class AlignOptimConfig(StrictModel):
    lr: float = Field(1e-4, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    steps: int = Field(300, gt=0)
    warmup_steps: int = Field(10, ge=0)
    grad_clip: float = Field(1.0, gt=0)


_FINE_TUNED_MERGED = types.SimpleNamespace(hrf=None)


class AlignConfig(StrictModel):
    name: str = "rec-align"
    task: Literal["rec-align"] = "rec-align"
    seed: int = 0
    threads: int | None = Field(2, gt=0)
    method: Literal["gbpo", "ecpo"] = "gbpo"
    reward: Literal["simulator", "model"] = "simulator"
    shaping: ShapingConfig = ShapingConfig()
    ecpo: EcpoConfig = EcpoConfig()
    anchor: AnchorConfig = AnchorConfig()
    rollout: RolloutConfig = RolloutConfig()
    reward_model: RewardModelConfig = RewardModelConfig()
    optim: AlignOptimConfig = AlignOptimConfig()
    holdout_users: float = Field(0.2, gt=0, lt=1, description="share of users never rolled out")
    eval_every: int = Field(50, gt=0)
    eval_users: int = Field(
        0, ge=0, description="held-out and validation users measured per evaluation (0: all)"
    )
    eval_repeats: int = Field(4, ge=1, description="simulator draws per recommended item when measuring")
    top_k: int = Field(10, ge=1, description="recommendations measured per user")

    @property
    def model(self) -> types.SimpleNamespace:
        """What the step loop records as ``trained_with``: the policy is fine-tuned merged (no HRF)."""
        return _FINE_TUNED_MERGED


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob(f"{PRESET_PREFIX}*.yaml"))


def resolve_align_config(name_or_path: str, overrides: list[str] | None = None) -> AlignConfig:
    """A shipped preset (``align-gbpo``, ``align-ecpo``, ``align-model``) or a YAML path, with ``--set`` overrides."""
    from edgewise.cloud.train.config import resolve_preset

    return resolve_preset(AlignConfig, PRESET_DIR, name_or_path, overrides, "align config", preset_names())


# --- the CLI -------------------------------------------------------------------------------------
def train_align_add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Align a generative recommender (a lazy or encdec run of `edgewise train rec`) with user "
        "feedback: groups of candidates sampled through the trie, rewards from the synthetic data "
        "set's simulator or a learned reward model, duration-aware reward shaping (DARS), GBPO or "
        "ECPO with a KL anchor to the reference. Writes a rec run that `edgewise eval rec` reads; "
        "metrics.json compares the reference and the aligned policy."
    )
    p.add_argument(
        "--policy", required=True, type=Path, help="the reference policy: a finished lazy or encdec rec run"
    )
    p.add_argument(
        "--data",
        required=True,
        help="the data set the policy was trained on, with watch times and item durations "
        "(and a simulator for reward=simulator: `edgewise data rec synthetic`)",
    )
    p.add_argument("--out", required=True, type=Path, help="run directory to create")
    p.add_argument(
        "--config",
        default="align-gbpo",
        help="a shipped preset (align-gbpo, align-ecpo, align-model) or a YAML path (default: align-gbpo)",
    )
    add_override_arguments(p, "--set method=ecpo --set shaping.kind=watch_time --set optim.steps=500")
    p.add_argument("--resume", action="store_true", help="continue from checkpoints/last.safetensors")
    p.add_argument("--no-progress", action="store_true", help="quieter log")


def train_align_run(args: argparse.Namespace) -> int:
    from edgewise.cloud.train.step_loop import StepTrainOptions, run_job

    overrides = list(args.overrides) + ([f"seed={args.seed}"] if args.seed is not None else [])
    cfg = resolve_align_config(args.config, overrides)
    opts = StepTrainOptions(
        Path(args.data),
        args.out,
        args.resume,
        not args.no_progress and sys.stderr.isatty(),
        extra_meta={"policy": str(args.policy)},
    )
    saved, config = args.out / ALIGN_FILE, args.out / "config.yaml"
    rec_config = config.read_bytes() if args.resume and saved.is_file() and config.is_file() else None
    if rec_config is not None:  # a finished run: the step loop checks the resume against align.yaml
        shutil.copyfile(saved, config)
    try:
        metrics = run_job(cfg, opts, functools.partial(build_align_job, policy=args.policy))
    except BaseException:
        if rec_config is not None:  # the finished run stays readable by `edgewise eval rec`
            config.write_bytes(rec_config)
        raise
    if metrics:
        keys = ("test", "reference", "heldout")
        print(json.dumps({k: v for k, v in metrics.items() if k in keys}, indent=2))
    return 0


# --- the job -------------------------------------------------------------------------------------
def load_policy(run: Path):
    """(merged model, its model.json, its RecTrainConfig) of a generative rec run; a clear error otherwise."""
    from edgewise.cloud.models.rec.config import RecTrainConfig
    from edgewise.cloud.train.rec_job import load_rec_run
    from edgewise.cloud.train.step_loop import read_step_run

    kind = read_step_run(run, "rec").get("kind")
    if kind not in ("lazy", "encdec"):
        raise DataError(
            f"{run}: a {kind} run; only generative policies (lazy, encdec) can be aligned "
            "(their items are sampled code by code through the trie)"
        )
    path = Path(run) / "config.yaml"
    policy_cfg = load_config(RecTrainConfig, read_yaml(path), name=str(path))
    model, info = load_rec_run(run)
    return model, info, policy_cfg


@dataclass
class Feedback:
    """Who is rolled out and who is held out, the feedback source and the rewards (fitted on logs)."""

    split_users: Any  # (rows,) data set user index of each leave-last-out row
    rollout_rows: Any
    heldout_rows: Any
    source: Any  # rollouts' feedback: (users, histories, items) -> watch_time, watch_fraction, disliked
    measure_source: Any  # the same for the measurements: the simulator when there is one
    reward: Any  # the configured shaping
    dars: Any  # DARS, always reported
    reward_model_report: dict | None


def prepare_feedback(cfg: AlignConfig, data, data_path: Path, max_len: int) -> Feedback:
    """The users split into rolled-out and held-out ones, the rewards fitted on the training part's
    logged feedback, and the feedback sources (the simulator, or a reward model trained here)."""
    import numpy as np

    from edgewise.cloud.data.rec_data import leave_last_out
    from edgewise.cloud.rec.align.rollout import SimulatorFeedback
    from edgewise.cloud.rec.align.shaping import make_reward

    ds = data.dataset
    simulator = _load_simulator(cfg, ds, data_path)
    split_users = leave_last_out(ds).users
    rows = np.random.default_rng(HELDOUT_SEED).permutation(len(split_users))
    n_held = max(1, int(round(cfg.holdout_users * len(rows))))
    if n_held >= len(rows):
        raise DataError(f"{data_path}: {len(rows)} users; too few to hold {cfg.holdout_users:.0%} out")
    heldout, rollout = np.sort(rows[:n_held]), np.sort(rows[n_held:])
    seqs, watch, disliked = _logged_feedback(data, split_users)
    logs = (
        np.concatenate([np.full(len(s), u) for u, s in zip(split_users, seqs)]),
        np.concatenate(seqs),
        np.concatenate(watch),
    )
    sh = cfg.shaping
    shaping = {"buckets": sh.buckets, "prior_weight": sh.prior_weight, "dislike_penalty": sh.dislike_penalty}
    reward = make_reward(sh.kind, ds.item_duration, *logs, **shaping)
    dars = make_reward("dars", ds.item_duration, *logs, **shaping)
    source = None
    if simulator is not None:
        source = SimulatorFeedback(simulator, np.random.default_rng([cfg.seed, 1]))  # rollouts: per seed
    measure, report = source, None
    if cfg.reward == "model":
        from edgewise.cloud.rec.align.reward_model import RewardModelFeedback, train_reward_model

        rm = cfg.reward_model
        vectors = None
        if rm.init == "collaborative":
            from edgewise.cloud.rec.item_embeddings import ItemEmbeddingConfig, collaborative_embeddings

            config = ItemEmbeddingConfig(dim=rm.d_model, seed=cfg.seed)
            vectors = collaborative_embeddings(seqs, ds.n_items, config).vectors
        model, report = train_reward_model(
            *([part[k] for k in rollout] for part in (seqs, watch, disliked)),
            ds.item_duration,
            d_model=rm.d_model,
            max_len=max_len,
            steps=rm.steps,
            batch_size=rm.batch_size,
            lr=rm.lr,
            weight_decay=rm.weight_decay,
            holdout=rm.holdout,
            seed=cfg.seed,
            item_vectors=vectors,
        )
        log.info("reward model on held-out logs: %s", report["heldout"])
        source = RewardModelFeedback(model, ds.item_duration)
        measure = measure or source
    return Feedback(split_users, rollout, heldout, source, measure, reward, dars, report)


DISLIKE_RATING = 2.0  # explicit ratings at or below this count as a dislike


def feedback_view(ds, data_path: Path):
    """The data set as alignment reads it: as it is when it logs watch times and item durations;
    one with explicit ratings only (MovieLens) gets them as feedback: every item lasts one unit, the
    watched fraction is the rating rescaled to [0, 1] over the data set's rating range, and a
    rating of :data:`DISLIKE_RATING` or less is a dislike."""
    import dataclasses

    import numpy as np

    if ds.watch_time is not None and ds.item_duration is not None:
        return ds
    if ds.rating is None or ds.watch_time is not None:
        missing = [name for name in ("watch_time", "item_duration") if getattr(ds, name) is None]
        raise DataError(
            f"{data_path}: this data set has no {' or '.join(missing)}; alignment needs logged watch "
            "times with item durations (`edgewise data rec synthetic` writes both), or ratings alone"
        )
    rating = np.asarray(ds.rating, dtype=np.float32)
    low, high = float(rating.min()), float(rating.max())
    fraction = (rating - low) / (high - low) if high > low else np.ones_like(rating)
    disliked = rating <= DISLIKE_RATING if ds.disliked is None else ds.disliked
    meta = {
        **ds.meta,
        "feedback": f"ratings {low:g}-{high:g} as watched fraction, <= {DISLIKE_RATING:g}: dislike",
    }
    return dataclasses.replace(
        ds,
        watch_time=fraction.astype(np.float32),
        item_duration=np.ones(ds.n_items, dtype=np.float32),
        disliked=np.asarray(disliked, dtype=bool),
        meta=meta,
    )


def _load_simulator(cfg: AlignConfig, ds, data_path: Path):
    """The data set's simulator: required for ``reward: simulator``, used for measuring when present
    (``ds`` is :func:`feedback_view`'s: it has watch times and item durations)."""
    from edgewise.cloud.data.rec_data import SIMULATOR_FILE
    from edgewise.cloud.data.rec_synth import UserSimulator

    if cfg.reward != "simulator" and not (data_path / SIMULATOR_FILE).is_file():
        return None
    simulator = UserSimulator.load(data_path)  # its error names DATA/simulator.npz
    if simulator.n_users != ds.n_users or simulator.n_items != ds.n_items:
        raise DataError(f"{data_path / SIMULATOR_FILE}: its users or items do not match the data set's")
    return simulator


def _logged_feedback(data, split_users) -> tuple[list, list, list]:
    """Per leave-last-out row: the training part of the sequence (0-based items), its logged watch
    times and dislikes (none logged: no dislikes)."""
    import numpy as np

    ds = data.dataset
    watch = ds.user_slices("watch_time")
    disliked = ds.user_slices("disliked") if ds.disliked is not None else None
    seqs = [data.train[k] - 1 for k in range(len(split_users))]
    log_watch = [watch[u][: len(s)] for u, s in zip(split_users, seqs)]
    log_dis = [
        np.zeros(len(s), bool) if disliked is None else disliked[u][: len(s)]
        for u, s in zip(split_users, seqs)
    ]
    return seqs, log_watch, log_dis


def measure_recommendations(
    model, data, policy_cfg, fb: Feedback, rows, histories, *, top_k: int, repeats: int, seed: int
) -> dict:
    """The top-``top_k`` of the trie-constrained beam search for ``rows`` (leave-last-out rows) with
    ``histories`` (1-based), answered ``repeats`` times by the measuring feedback source with draws
    fixed by ``seed`` (so two policies meet the same noise)."""
    import numpy as np
    import torch

    from edgewise.cloud.rec.align.rollout import SimulatorFeedback
    from edgewise.cloud.train.rec_job import pad_left, rank_items

    ranked = rank_items(model, data, histories, policy_cfg)[0][:, :top_k]
    users = fb.split_users[rows]
    history = torch.from_numpy(pad_left(histories, model.config.max_len))
    source = fb.measure_source
    answers = []
    for r in range(repeats if source.source == "simulator" else 1):
        if isinstance(source, SimulatorFeedback):
            source = SimulatorFeedback(source.simulator, np.random.default_rng([seed, r]))
        answers.append(source(users, history, ranked))
    watch = np.stack([a["watch_time"] for a in answers])
    dis = np.stack([np.asarray(a["disliked"], dtype=np.float64) for a in answers])
    frac = np.stack([a["watch_fraction"] for a in answers])
    reward = np.stack([fb.reward(users, ranked, w, d) for w, d in zip(watch, dis)])
    dars = np.stack([fb.dars(users, ranked, w, d) for w, d in zip(watch, dis)])
    out = {
        "users": int(len(rows)),
        "source": source.source,
        "watch_time_s": float(watch.mean()),
        "watch_fraction": float(frac.mean()),
        "dislike_rate": float(dis.mean()),
        "duration_s": float(data.dataset.item_duration[ranked].mean()),
        "reward": float(reward.mean()),
        "dars_reward": float(dars.mean()),
        "distinct_items": int(len(np.unique(ranked))),
    }
    if "affinity" in answers[0]:
        out["affinity"] = float(np.mean([a["affinity"] for a in answers]))
    return {k: round(v, 5) if isinstance(v, float) else v for k, v in out.items()}


@dataclass
class RolloutBatch:
    history: Any  # (B * G, T) each user's history repeated per candidate
    items: Any  # (B * G,) 0-based
    logp_old: Any  # (B * G,) log pi_old of each candidate, without dropout
    advantages: Any  # (B * G,) group-relative
    reference_levels: list  # per level (B * G, size): the reference's trie-constrained log-probabilities
    reward: float  # mean reward of the batch
    duration_s: float  # mean duration of the sampled items


def collect_rollout(policy, reference, data, fb: Feedback, cfg: AlignConfig, rng) -> RolloutBatch:
    """One batch of rollouts: users, their G candidates, the feedback, rewards and advantages."""
    import numpy as np
    import torch

    from edgewise.cloud.rec.align.objectives import group_advantages
    from edgewise.cloud.rec.align.rollout import beam_candidates, item_log_probs, sample_from_trie
    from edgewise.cloud.train.rec_job import pad_left

    device = next(policy.parameters()).device
    trie = data.torch_trie(device)
    r = cfg.rollout
    rows = rng.choice(fb.rollout_rows, r.users, replace=len(fb.rollout_rows) < r.users)
    history = torch.from_numpy(pad_left([data.train[k] for k in rows], policy.config.max_len)).to(device)
    policy.eval()
    if r.sampler == "sample":
        gen = torch.Generator(device=device).manual_seed(int(rng.integers(2**62)))
        items = sample_from_trie(policy, history, trie, r.group, temperature=r.temperature, generator=gen)
    else:
        items = beam_candidates(policy, history, trie, r.group)
    users = fb.split_users[rows]
    answer = fb.source(users, history, items)
    rewards = fb.reward(users, items, answer["watch_time"], answer["disliked"])
    flat_history = history.repeat_interleave(items.shape[1], dim=0)
    flat_items = torch.from_numpy(items.reshape(-1).astype(np.int64)).to(device)
    with torch.no_grad():
        logp_old, _ = item_log_probs(policy, data, flat_history, flat_items)
        _, reference_levels = item_log_probs(reference, data, flat_history, flat_items)
    return RolloutBatch(
        flat_history,
        flat_items,
        logp_old,
        group_advantages(torch.from_numpy(rewards).float()).reshape(-1).to(device),
        reference_levels,
        float(rewards.mean()),
        float(data.dataset.item_duration[items].mean()),
    )


def supervised_loss(model, data, kind: str, users, rng):
    """The next-item cross-entropy of ``edgewise train rec`` on windows of ``users``' training sequences."""
    import torch.nn.functional as F

    from edgewise.cloud.train.rec_job import generative_loss_terms, training_batch

    length = (model.module if hasattr(model, "module") else model).config.max_len
    history, targets = training_batch(data, users, kind, length, rng)
    device = next(model.parameters()).device
    per_level, labels = generative_loss_terms(model, data, history.to(device), targets.to(device), True)
    return sum(F.cross_entropy(lg, y) for lg, y in zip(per_level, labels, strict=True)) / len(labels)


def alignment_losses(model, batch: RolloutBatch, data, cfg: AlignConfig) -> dict:
    """GBPO or ECPO on the batch's item log-probabilities, and the per-level KL to the reference."""
    import torch

    from edgewise.cloud.rec.align.objectives import POLICY_LOSSES, masked_kl
    from edgewise.cloud.rec.align.rollout import item_log_probs

    extra = {"clip_eps": cfg.ecpo.clip_eps, "delta": cfg.ecpo.delta} if cfg.method == "ecpo" else {}
    logp, levels = item_log_probs(model, data, batch.history, batch.items)
    out = {"pg": POLICY_LOSSES[cfg.method](logp, batch.logp_old, batch.advantages, **extra).mean()}
    kl = [masked_kl(lp, lq).mean() for lp, lq in zip(levels, batch.reference_levels, strict=True)]
    out["kl"] = torch.stack(kl).mean()
    out["ratio"] = torch.exp(logp - batch.logp_old).mean().detach()
    return out


def build_align_job(cfg: AlignConfig, opts, dist, *, policy: Path):
    import copy

    import torch

    from edgewise.cloud.train.rec_commands import check_same_items
    from edgewise.cloud.train.rec_job import RecData, evaluate_model, pad_left, write_run_extras
    from edgewise.cloud.train.step_loop import Job

    reference, info, policy_cfg = load_policy(policy)
    if cfg.top_k > policy_cfg.beam:
        raise ConfigError(f"top_k ({cfg.top_k}) exceeds the policy's beam ({policy_cfg.beam})")
    data = RecData(policy_cfg, opts.data, teacher_ids=info["semantic_ids"])
    check_same_items(policy, data.dataset.item_ids)
    data.dataset = feedback_view(data.dataset, Path(opts.data))
    fb = prepare_feedback(cfg, data, Path(opts.data), reference.config.max_len)
    reference = reference.to(dist.device).requires_grad_(False)
    model = copy.deepcopy(reference).requires_grad_(True)
    heldout_eval = fb.heldout_rows[: cfg.eval_users or None]
    train_rows = fb.rollout_rows[: cfg.eval_users or 512]

    def measure(m, rows, histories, seed=0):
        histories = [histories[k] for k in rows]
        return measure_recommendations(
            m, data, policy_cfg, fb, rows, histories, top_k=cfg.top_k, repeats=cfg.eval_repeats, seed=seed
        )

    before = {
        "heldout": measure(reference, fb.heldout_rows, data.test_history),
        "train_users": measure(reference, train_rows, data.train, seed=1),
        "valid": evaluate_model(reference, data, "valid", policy_cfg),
        "test": evaluate_model(reference, data, "test", policy_cfg),
    }
    log.info("reference: held-out %s, test %s", before["heldout"], before["test"])
    state: dict[str, Any] = {"batch": None, "uses": 0}

    def step(m, rng):
        if state["batch"] is None or state["uses"] >= cfg.rollout.reuse:
            net = m.module if hasattr(m, "module") else m
            state["batch"], state["uses"] = collect_rollout(net, reference, data, fb, cfg, rng), 0
        state["uses"] += 1
        batch: RolloutBatch = state["batch"]
        m.eval()  # no dropout: pi_old was measured without it
        out = alignment_losses(m, batch, data, cfg)
        total = out["pg"] + cfg.anchor.kl * out["kl"]
        if cfg.anchor.ce > 0:
            out["ce"] = supervised_loss(
                m, data, info["kind"], rng.choice(data.trainable, cfg.rollout.users), rng
            )
            total = total + cfg.anchor.ce * out["ce"]
        out["reward"] = torch.tensor(batch.reward)
        out["duration_s"] = torch.tensor(batch.duration_s)
        out["total"] = total
        return out

    def evaluate(m, step_no):
        found = measure(m, heldout_eval, data.test_history)
        ranking = evaluate_model(m, data, "valid", policy_cfg, limit=cfg.eval_users)
        record = {f"val_{k}": v for k, v in found.items() if k not in ("users", "source")}
        record.update({f"val_{k}": ranking[k] for k in ("hr@10", "ndcg@10")})
        return record

    def finish(trained, merged):
        out: dict[str, Any] = {
            split: evaluate_model(merged, data, split, policy_cfg) for split in ("valid", "test")
        }
        out["reference"] = {"valid": before["valid"], "test": before["test"]}
        out["heldout"] = {
            "reference": before["heldout"],
            "aligned": measure(merged, fb.heldout_rows, data.test_history),
        }
        out["train_users"] = {
            "reference": before["train_users"],
            "aligned": measure(merged, train_rows, data.train, seed=1),
        }
        out["reward_model"] = fb.reward_model_report
        out["alignment"] = alignment_summary(cfg, policy, fb)
        history = torch.from_numpy(pad_left(data.valid_history[:64], reference.config.max_len)).to(
            dist.device
        )
        target = torch.from_numpy(data.valid_target[:64] + 1).to(dist.device)
        tokens = merged.embed.item_tokens[target][:, None]
        with torch.inference_mode():
            out["merge_max_abs_diff"] = float(
                (trained(history, tokens) - merged(history, tokens)).abs().max()
            )
        out["data_seconds"] = data.seconds
        return out

    def model_json():  # called on the main rank just before model.json is written
        write_run_extras(opts.out, data)  # a run that looks finished has its IDs
        write_rec_config(opts.out, cfg, policy_cfg)  # ... and the config `edgewise eval rec` reads
        out = {k: info[k] for k in ("kind", "model", "n_items", "level_sizes", "tokenizer") if k in info}
        out["data"] = {"path": str(opts.data), **data.dataset.summary()}
        out["aligned_from"] = {
            "run": str(policy),
            "parameters": info.get("parameters"),
            **alignment_summary(cfg, policy, fb),
        }
        return out

    return Job("rec", model, step, evaluate, finish, model_json)


def alignment_summary(cfg: AlignConfig, policy: Path, fb: Feedback) -> dict:
    return {
        "policy": str(policy),
        "method": cfg.method,
        "reward": cfg.reward,
        "shaping": cfg.shaping.kind,
        "rollout": cfg.rollout.model_dump(mode="json"),
        "anchor": cfg.anchor.model_dump(mode="json"),
        "heldout_users": int(len(fb.heldout_rows)),
        "rollout_users": int(len(fb.rollout_rows)),
    }


def write_rec_config(out: Path, cfg: AlignConfig, policy_cfg) -> None:
    """RUN/config.yaml becomes the policy's rec config (named and seeded as this run); the alignment
    config moves to RUN/align.yaml."""
    import yaml

    from edgewise.fsutil import write_text_atomic

    rec = policy_cfg.model_copy(update={"name": cfg.name, "seed": cfg.seed})
    write_text_atomic(out / ALIGN_FILE, yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
    write_text_atomic(out / "config.yaml", yaml.safe_dump(rec.model_dump(mode="json"), sort_keys=False))
