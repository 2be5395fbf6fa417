"""``edgewise train rec``: SASRec, the encoder-decoder or the lazy decoder-only generator on one data set.

Every kind trains in the shared step loop and is evaluated by the same protocol
(:mod:`edgewise.cloud.rec.metrics`): leave-last-out (the second-to-last item validates, the last one
tests), full ranking, HR@K and NDCG@K; the best validation NDCG@10 picks the weights that ship.

Batches: SASRec and the lazy model read a window of up to ``max_len + 1`` items of a user's training
sequence and learn the next item at every position; the encoder-decoder reads one (history, next
item) pair per sample. A window ends at the sequence's end half the time, and at a uniformly drawn
earlier item otherwise, so long histories contribute all their items.

The generative kinds tokenize items first (:mod:`edgewise.cloud.rec.tokenizer`, on embeddings from
the *training* sequences only, so no held-out item leaks into the IDs) and write the IDs into the
run; a student distilled from a teacher run (``--teacher``) reuses the teacher's IDs.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from edgewise.cloud.models.rec.config import RecTrainConfig
from edgewise.cloud.train.step_loop import Job, StepTrainOptions
from edgewise.errors import DataError
from edgewise.rec_ids import pad_left

log = logging.getLogger(__name__)


def sample_windows(seqs: list[np.ndarray], users: np.ndarray, length: int, rng: np.random.Generator) -> list:
    """A window of up to ``length`` items per user, ending at the sequence's end half the time."""
    out = []
    for u in users:
        seq = seqs[int(u)]
        end = len(seq) if rng.random() < 0.5 else int(rng.integers(2, len(seq) + 1))
        out.append(seq[max(0, end - length) : end])
    return out


class RecData:
    """The data set, its leave-last-out split (1-based item indices), and the semantic IDs."""

    def __init__(self, cfg: RecTrainConfig, data: Path, teacher_ids: Any = None) -> None:
        from edgewise.cloud.data.rec_data import leave_last_out, load_rec_dataset

        started = time.perf_counter()
        self.dataset = load_rec_dataset(data)
        split = leave_last_out(self.dataset)
        self.n_items = self.dataset.n_items
        self.train = [np.asarray(s, dtype=np.int64) + 1 for s in split.train]
        self.trainable = np.array([i for i, s in enumerate(self.train) if len(s) >= 2], dtype=np.int64)
        if not len(self.trainable):
            raise DataError(f"{data}: no user has 4 or more interactions; nothing to train on")
        self.valid_history = [np.asarray(s, dtype=np.int64) + 1 for s in split.valid_history]
        self.valid_target = np.asarray(split.valid_target, dtype=np.int64)  # 0-based
        self.test_history = [np.asarray(s, dtype=np.int64) + 1 for s in split.test_history]
        self.test_target = np.asarray(split.test_target, dtype=np.int64)
        self.users_evaluated, self.users_dropped = len(split.users), int(split.n_dropped)
        self.ids = self.trie = self.tokenizer_report = None
        self._torch_tries: dict[str, Any] = {}
        if cfg.model.kind != "sasrec":
            self._tokenize(cfg, split, teacher_ids)
        self.seconds = round(time.perf_counter() - started, 2)

    def _tokenize(self, cfg: RecTrainConfig, split, teacher_ids) -> None:
        from edgewise.rec_ids import PrefixTrie

        if teacher_ids is not None:
            self.ids, self.tokenizer_report = teacher_ids, {"from_teacher": True}
        else:
            from edgewise.cloud.rec.item_embeddings import build_item_embeddings
            from edgewise.cloud.rec.tokenizer import build_semantic_ids

            train = [np.asarray(s) for s in split.train]
            emb = build_item_embeddings(
                cfg.tokenizer.source, train, self.n_items, self.dataset.item_texts(), cfg.tokenizer.embedding
            )
            popularity = np.bincount(np.concatenate(train), minlength=self.n_items) if train else None
            self.ids, self.tokenizer_report = build_semantic_ids(emb.vectors, cfg.tokenizer, popularity)
            self.tokenizer_report["embeddings"] = emb.report
        if self.ids.n_items != self.n_items:
            raise DataError(
                f"the semantic IDs cover {self.ids.n_items} items, the data set has {self.n_items}"
            )
        self.trie = PrefixTrie.build(self.ids)

    def torch_trie(self, device: torch.device):
        """The trie as tensors on ``device`` (built once per device)."""
        from edgewise.cloud.models.rec.beam import TorchTrie

        key = str(device)
        if key not in self._torch_tries:
            self._torch_tries[key] = TorchTrie.from_trie(self.trie).to(device)
        return self._torch_tries[key]

    def item_tokens(self) -> torch.Tensor:
        """(n_items + 1, L) global token ids; row 0 (padding) is all zeros."""
        tokens = np.zeros((self.n_items + 1, self.ids.n_levels), dtype=np.int64)
        tokens[1:] = self.ids.tokens()
        return torch.from_numpy(tokens)

    def split_rows(self, split: str, limit: int = 0) -> tuple[list[np.ndarray], np.ndarray]:
        history, target = (
            (self.valid_history, self.valid_target)
            if split == "valid"
            else (self.test_history, self.test_target)
        )
        if limit:
            return history[:limit], target[:limit]
        return history, target


def build_model(cfg: RecTrainConfig, data: RecData) -> torch.nn.Module:
    from edgewise.cloud.models.rec.generative import EncoderDecoderRec, LazyDecoderRec
    from edgewise.cloud.models.rec.sasrec import SASRec

    kind = cfg.model.kind
    if kind == "sasrec":
        return SASRec(cfg.model, data.n_items)
    cls = LazyDecoderRec if kind == "lazy" else EncoderDecoderRec
    return cls(cfg.model, data.item_tokens(), data.ids.level_sizes)


def training_batch(data: RecData, users: np.ndarray, kind: str, length: int, rng: np.random.Generator):
    """(history (B, length), targets) of a random training window per user: the encoder-decoder's one
    target (B, 1) after the window, or every position's next item (B, length), 0 where no history
    item comes before it."""
    if kind == "encdec":
        windows = sample_windows(data.train, users, length + 1, rng)
        history = torch.from_numpy(pad_left([w[:-1] for w in windows], length))
        return history, torch.from_numpy(np.array([[w[-1]] for w in windows], dtype=np.int64))
    windows = pad_left(sample_windows(data.train, users, length + 1, rng), length + 1)
    history, targets = torch.from_numpy(windows[:, :-1]), torch.from_numpy(windows[:, 1:])
    return history, targets * (history > 0)


def sample_positions(targets: np.ndarray, k: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Up to ``k`` positions of each row with a target (the last one always): (positions, targets),
    both (B, k); rows with fewer get target 0 (no loss) at their last position."""
    b, t = targets.shape
    positions = np.full((b, k), t - 1, dtype=np.int64)
    chosen = np.zeros((b, k), dtype=np.int64)
    for r in range(b):
        valid = np.flatnonzero(targets[r] > 0)
        if not len(valid):
            continue
        pick = valid[-1:]
        if len(valid) > 1 and k > 1:
            pick = np.concatenate([rng.choice(valid[:-1], min(k - 1, len(valid) - 1), replace=False), pick])
        pick = np.sort(pick)
        positions[r, : len(pick)] = pick
        chosen[r, : len(pick)] = targets[r, pick]
    return positions, chosen


def generative_loss_terms(
    model,
    data: RecData,
    history: torch.Tensor,
    targets: torch.Tensor,
    constrained: bool,
    positions: torch.Tensor | None = None,
):
    """(logits of the valid targets' levels as a list per level, their code labels, a mask of rows).

    ``targets`` (B, Q) 1-based items (0: no target). Each level's logits are its slice of the
    vocabulary; with ``constrained`` the codes the trie forbids after the target's prefix are -inf.
    """
    m = model.module if hasattr(model, "module") else model
    tokens = m.embed.item_tokens[targets]  # (B, Q, L)
    logits = model(history, tokens, positions)  # (B, Q, L, V)
    keep = targets > 0
    rows = logits[keep]  # (N, L, V)
    codes = tokens[keep]
    trie = data.torch_trie(rows.device) if constrained else None
    nodes = torch.zeros(rows.shape[0], dtype=torch.long, device=rows.device)
    per_level, labels = [], []
    for level, size in enumerate(m.level_sizes):
        offset = m.level_offsets[level]
        lg = rows[:, level, offset : offset + size]
        code = codes[:, level] - offset
        if constrained:
            lg = lg.masked_fill(~trie.allowed(nodes, size), float("-inf"))
            nodes = trie.step(nodes, code)
        per_level.append(lg)
        labels.append(code)
    return per_level, labels


def _soft_ce(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(teacher || student) on softened distributions whose -inf entries (forbidden codes) agree."""
    t = temperature
    s = torch.log_softmax(student / t, dim=-1)
    p = torch.softmax(teacher / t, dim=-1)
    return (p * (torch.log(p.clamp(min=1e-12)) - s.masked_fill(p == 0, 0.0))).sum(-1).mean() * (t * t)


def build_rec_job(cfg: RecTrainConfig, opts: StepTrainOptions, dist) -> Job:
    teacher, teacher_info = None, None
    if opts.teacher is not None:
        teacher, teacher_info = load_rec_run(opts.teacher)
        if teacher_info["kind"] != cfg.model.kind:
            raise DataError(
                f"{opts.teacher}: a {teacher_info['kind']} teacher cannot teach a {cfg.model.kind} student "
                "(distillation pairs runs of the same kind)"
            )
        teacher = teacher.to(dist.device)
    data = RecData(cfg, opts.data, teacher_ids=None if teacher is None else teacher_info["semantic_ids"])
    if teacher is not None and teacher_info["n_items"] != data.n_items:
        raise DataError(
            f"{opts.teacher}: the teacher knows {teacher_info['n_items']} items, the data set has {data.n_items}"
        )
    model = build_model(cfg, data)
    kind, length = cfg.model.kind, cfg.model.max_len
    kd = cfg.kd

    def step(m, rng):
        users = rng.choice(data.trainable, cfg.optim.batch_size)
        history, targets = training_batch(data, users, kind, length, rng)
        positions = None
        if kind == "lazy" and cfg.targets_per_sequence:
            positions, targets = sample_positions(targets.numpy(), cfg.targets_per_sequence, rng)
            positions, targets = torch.from_numpy(positions).to(dist.device), torch.from_numpy(targets)
        history, targets = history.to(dist.device), targets.to(dist.device)
        out: dict[str, torch.Tensor] = {}
        if kind == "sasrec":
            hidden = m(history)
            keep = targets > 0
            scores = (m.module if hasattr(m, "module") else m).scores(hidden[keep])
            out["ce"] = F.cross_entropy(scores, targets[keep] - 1)
            total = out["ce"]
            if teacher is not None:
                with torch.no_grad():
                    t_scores = teacher.scores(teacher(history)[keep])
                out["kd"] = _soft_ce(scores, t_scores, kd.temperature)
                total = (1 - kd.alpha) * total + kd.alpha * out["kd"]
        else:
            per_level, labels = generative_loss_terms(
                m, data, history, targets, cfg.constrained_loss, positions
            )
            out["ce"] = sum(F.cross_entropy(lg, y) for lg, y in zip(per_level, labels, strict=True)) / len(
                labels
            )
            total = out["ce"]
            if teacher is not None:
                with torch.no_grad():
                    t_levels, _ = generative_loss_terms(
                        teacher, data, history, targets, cfg.constrained_loss, positions
                    )
                out["kd"] = sum(
                    _soft_ce(s, t, kd.temperature) for s, t in zip(per_level, t_levels, strict=True)
                ) / len(labels)
                total = (1 - kd.alpha) * total + kd.alpha * out["kd"]
        out["total"] = total
        return out

    def evaluate(m, step_no):
        metrics = evaluate_model(m, data, "valid", cfg, limit=cfg.eval_users)
        return {f"val_{k}": v for k, v in metrics.items()}

    def finish(trained, merged):
        out: dict[str, Any] = {}
        for split in ("valid", "test"):
            out[split] = evaluate_model(merged, data, split, cfg)
        if kind != "sasrec":
            out["test_unconstrained"] = evaluate_model(merged, data, "test", cfg, constrained=False)
            out["tokenizer"] = data.tokenizer_report
        history = torch.from_numpy(pad_left(data.valid_history[:64], length)).to(dist.device)
        with torch.inference_mode():
            if kind == "sasrec":
                a, b = trained(history)[:, -1], merged(history)[:, -1]
            else:
                target = torch.from_numpy(data.valid_target[:64] + 1).to(dist.device)
                tokens = merged.embed.item_tokens[target][:, None]
                a, b = trained(history, tokens), merged(history, tokens)
        out["merge_max_abs_diff"] = float((a - b).abs().max())
        out["data_seconds"] = data.seconds
        out["users"] = {"evaluated": data.users_evaluated, "dropped_too_short": data.users_dropped}
        return out

    def model_json():
        write_run_extras(opts.out, data)  # before model.json: a run that looks finished has its IDs
        info = {
            "kind": kind,
            "model": cfg.model.model_copy(update={"hrf": None}).model_dump(mode="json"),
            "n_items": data.n_items,
            "data": {"path": str(opts.data), **data.dataset.summary()},
        }
        if data.ids is not None:
            info["level_sizes"] = list(data.ids.level_sizes)
            info["tokenizer"] = cfg.tokenizer.model_dump(mode="json")
        if teacher_info is not None:
            info["teacher"] = {
                "run": str(opts.teacher),
                "kind": teacher_info["kind"],
                "parameters": teacher_info.get("parameters"),
            }
        return info

    return Job("rec", model, step, evaluate, finish, model_json, best_metric="val_ndcg@10")


@torch.inference_mode()
def rank_items(
    model,
    data: RecData,
    histories: list[np.ndarray],
    cfg: RecTrainConfig,
    *,
    constrained: bool = True,
    batch: int = 256,
) -> tuple[np.ndarray, np.ndarray]:
    """(U, K) 0-based item indices best first: the top ``top_k`` scores (SASRec) or the beam
    (generative; -1 where a beam is no item), and (U, K) bool: generated IDs that are no item."""
    from edgewise.cloud.models.rec.beam import beam_search

    model.eval()
    device = next(model.parameters()).device
    length = model.config.max_len
    ranked, invalid = [], []
    for start in range(0, len(histories), batch):
        history = torch.from_numpy(pad_left(histories[start : start + batch], length)).to(device)
        if model.kind == "sasrec":
            top = model.scores(model(history)[:, -1]).topk(cfg.top_k, dim=1).indices.cpu().numpy()
            ranked.append(top)
            invalid.append(np.zeros(top.shape, dtype=bool))
        else:
            result = beam_search(model, history, data.torch_trie(device), cfg.beam, constrained=constrained)
            ranked.append(result.items)
            invalid.append(result.invalid)
    return np.concatenate(ranked), np.concatenate(invalid)


def evaluate_model(
    model, data: RecData, split: str, cfg: RecTrainConfig, *, limit: int = 0, constrained: bool = True
) -> dict[str, float]:
    from edgewise.cloud.rec.metrics import ranking_metrics

    histories, target = data.split_rows(split, limit)
    started = time.perf_counter()
    ranked, invalid = rank_items(model, data, histories, cfg, constrained=constrained)
    seconds = time.perf_counter() - started
    metrics = {k: round(v, 5) for k, v in ranking_metrics(ranked, target, ks=(5, 10)).items()}
    if model.kind != "sasrec":
        metrics["invalid_rate"] = round(float(invalid.mean()), 5)
    metrics["users"] = len(target)
    metrics["ms_per_user"] = round(1000 * seconds / max(1, len(target)), 3)
    return metrics


def write_run_extras(out: Path, data: RecData) -> None:
    """RUN/items.json (original item ids and titles, by index) and RUN/semantic_ids.json."""
    from edgewise.fsutil import write_text_atomic

    titles = data.dataset.item_fields.get("title") or [""] * data.n_items
    write_text_atomic(
        out / "items.json", json.dumps({"ids": list(data.dataset.item_ids), "titles": list(titles)}) + "\n"
    )
    if data.ids is not None:
        write_text_atomic(out / "semantic_ids.json", json.dumps(data.ids.to_dict()) + "\n")


def load_rec_run(run: str | Path):
    """(merged model in eval mode, model.json with ``semantic_ids`` added) of a finished ``edgewise train rec`` run."""
    from edgewise.cloud.models.rec.config import RecModelConfig
    from edgewise.cloud.models.rec.generative import EncoderDecoderRec, LazyDecoderRec
    from edgewise.cloud.models.rec.sasrec import SASRec
    from edgewise.cloud.train.checkpoint import load_weights_into
    from edgewise.cloud.train.step_loop import read_step_run
    from edgewise.config import load_config

    root = Path(run)
    info = read_step_run(root, "rec")
    cfg = load_config(RecModelConfig, info["model"], name=f"{root / 'model.json'}: model")
    if info["kind"] == "sasrec":
        model = SASRec(cfg, info["n_items"])
        info["semantic_ids"] = None
    else:
        from edgewise.rec_ids import SemanticIds

        path = root / "semantic_ids.json"
        try:
            ids = SemanticIds.from_dict(json.loads(path.read_text()))
        except (OSError, json.JSONDecodeError) as exc:
            raise DataError(f"{path}: cannot read the run's semantic IDs ({exc})") from None
        tokens = np.zeros((ids.n_items + 1, ids.n_levels), dtype=np.int64)
        tokens[1:] = ids.tokens()
        cls = LazyDecoderRec if info["kind"] == "lazy" else EncoderDecoderRec
        model = cls(cfg, torch.from_numpy(tokens), ids.level_sizes)
        info["semantic_ids"] = ids
    load_weights_into(model, root / "model.safetensors")
    return model.eval(), info
