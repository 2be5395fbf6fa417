"""A learned reward model: predicts a user's watch fraction and dislike for an item from logged feedback.

Input: the user's history (their last ``max_len`` items before the interaction, mean-pooled item
embeddings ``h``) and the candidate item (its embedding ``e`` and its standardized log duration).
A small MLP reads ``[h, e, h * e, cos(h, e), log duration]`` and gives two logits: the watch
fraction (trained with a soft-label binary cross-entropy) and the dislike (binary cross-entropy).
Item embeddings may start from given vectors (the job passes co-occurrence vectors, which carry
the topic structure the logs alone teach slowly); AdamW's weight decay keeps them from memorizing.

Trained on the logged interactions of the training sequences (position ``t`` of a user's sequence,
with the items before it as the history); ``holdout`` of the users are kept aside and measured:
the watch-fraction MAE against always predicting the training mean, R^2 and the Pearson
correlation, and the dislike AUC (0.5 is chance).

As a feedback source (:class:`RewardModelFeedback`) it answers like the simulator, with the
*expected* responses: ``watch_time = predicted fraction * duration`` and ``disliked`` the predicted
probability (so the dislike penalty of a reward is an expectation).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn


class RewardModel(nn.Module):
    def __init__(
        self,
        item_duration: np.ndarray,
        d_model: int = 32,
        max_len: int = 50,
        item_vectors: np.ndarray | None = None,
    ) -> None:
        super().__init__()
        n_items = len(item_duration)
        log_d = np.log(np.asarray(item_duration, dtype=np.float64))
        std = float(log_d.std()) or 1.0
        feature = np.concatenate([[0.0], (log_d - log_d.mean()) / std]).astype(np.float32)
        self.register_buffer("log_duration", torch.from_numpy(feature))  # index 0: padding
        self.max_len = max_len
        self.items = nn.Embedding(n_items + 1, d_model, padding_idx=0)
        nn.init.normal_(self.items.weight, std=0.1)
        with torch.no_grad():
            if item_vectors is not None:  # e.g. collaborative (co-occurrence) vectors, unit length
                k = min(d_model, item_vectors.shape[1])
                self.items.weight[1:, :k] = torch.as_tensor(item_vectors[:, :k], dtype=torch.float32)
            self.items.weight[0].zero_()
        self.mlp = nn.Sequential(
            nn.Linear(3 * d_model + 2, 2 * d_model), nn.GELU(), nn.Linear(2 * d_model, 2)
        )

    def forward(self, history: Tensor, items: Tensor) -> tuple[Tensor, Tensor]:
        """``history`` (B, T) 1-based (0: padding), ``items`` (B, K) 0-based -> (fraction logits,
        dislike logits), each (B, K)."""
        mask = (history > 0).unsqueeze(-1).float()
        h = (self.items(history) * mask).sum(1) / mask.sum(1).clamp(min=1.0)  # (B, D)
        e = self.items(items + 1)  # (B, K, D)
        h = h.unsqueeze(1).expand_as(e)
        cos = torch.nn.functional.cosine_similarity(h, e, dim=-1, eps=1e-6).unsqueeze(-1)
        x = torch.cat([h, e, h * e, cos, self.log_duration[items + 1].unsqueeze(-1)], dim=-1)
        out = self.mlp(x)
        return out[..., 0], out[..., 1]


@dataclass
class FeedbackExamples:
    """Logged interactions of some users laid end to end: example ``n`` is interaction ``index[n]``
    of the flat arrays, its history the up to ``max_len`` interactions before it of the same user."""

    items: np.ndarray  # (M,) 0-based, the users' sequences concatenated
    fraction: np.ndarray  # (M,) watched fraction, in [0, 1]
    disliked: np.ndarray  # (M,) 0/1
    start: np.ndarray  # (M,) where each interaction's user begins in the flat arrays
    index: np.ndarray  # (N,) the examples: interactions with at least one history item

    @classmethod
    def build(cls, sequences, watch_time, disliked, item_duration, rows: np.ndarray) -> FeedbackExamples:
        """Examples from the sequences ``rows`` (0-based items, watch seconds and dislike flags each)."""
        rows = [int(r) for r in rows]
        lengths = np.array([len(sequences[r]) for r in rows], dtype=np.int64)
        items = np.concatenate(
            [np.asarray(sequences[r], dtype=np.int64) for r in rows] or [np.zeros(0, np.int64)]
        )
        watch = np.concatenate([np.asarray(watch_time[r], dtype=np.float64) for r in rows] or [np.zeros(0)])
        dis = np.concatenate(
            [np.asarray(disliked[r], dtype=np.float32) for r in rows] or [np.zeros(0, np.float32)]
        )
        fraction = np.clip(watch / np.asarray(item_duration, dtype=np.float64)[items], 0.0, 1.0).astype(
            np.float32
        )
        starts = np.repeat(np.cumsum(lengths) - lengths, lengths)
        index = np.flatnonzero(np.arange(len(items)) > starts)
        return cls(items, fraction, dis, starts, index)

    def __len__(self) -> int:
        return len(self.index)

    def batch(self, which: np.ndarray, max_len: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(history (B, max_len) 1-based left-padded, item (B, 1), fraction (B, 1), dislike (B, 1))."""
        at = self.index[which]
        positions = at[:, None] - max_len + np.arange(max_len)[None, :]
        valid = positions >= self.start[at][:, None]
        history = np.where(valid, self.items[np.maximum(positions, 0)] + 1, 0)
        return (
            torch.from_numpy(history),
            torch.from_numpy(self.items[at])[:, None],
            torch.from_numpy(self.fraction[at])[:, None],
            torch.from_numpy(self.disliked[at])[:, None],
        )


def _auc(scores: np.ndarray, labels: np.ndarray) -> float | None:
    """Area under the ROC curve (Mann-Whitney, ties averaged); None when one class is absent."""
    labels = labels.astype(bool)
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if not n_pos or not n_neg:
        return None
    _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    ranks = (np.cumsum(counts) - (counts - 1) / 2.0)[inverse]  # 1-based, ties share their mean rank
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


@torch.inference_mode()
def evaluate_reward_model(model: RewardModel, examples: FeedbackExamples, train_mean: float) -> dict:
    model.eval()
    preds_f, preds_d, true_f, true_d = [], [], [], []
    for start in range(0, len(examples), 2048):
        history, items, frac, dis = examples.batch(
            np.arange(start, min(len(examples), start + 2048)), model.max_len
        )
        f_logit, d_logit = model(history, items)
        preds_f.append(torch.sigmoid(f_logit)[:, 0].numpy())
        preds_d.append(torch.sigmoid(d_logit)[:, 0].numpy())
        true_f.append(frac[:, 0].numpy())
        true_d.append(dis[:, 0].numpy())
    pf, pd, tf, td = (np.concatenate(x) for x in (preds_f, preds_d, true_f, true_d))
    mae = float(np.abs(pf - tf).mean())
    mae_constant = float(np.abs(train_mean - tf).mean())
    ss_res, ss_tot = float(((pf - tf) ** 2).sum()), float(((tf - tf.mean()) ** 2).sum())
    return {
        "examples": int(len(tf)),
        "watch_fraction": {
            "mae": round(mae, 4),
            "mae_constant": round(mae_constant, 4),
            "r2": round(1.0 - ss_res / max(ss_tot, 1e-12), 4),
            "pearson": round(float(np.corrcoef(pf, tf)[0, 1]) if tf.std() > 0 else 0.0, 4),
        },
        "dislike": {
            "auc": None if (a := _auc(pd, td)) is None else round(a, 4),
            "rate": round(float(td.mean()), 4),
            "predicted_rate": round(float(pd.mean()), 4),
        },
    }


def train_reward_model(
    sequences: list[np.ndarray],
    watch_time: list[np.ndarray],
    disliked: list[np.ndarray],
    item_duration: np.ndarray,
    *,
    d_model: int = 32,
    max_len: int = 50,
    steps: int = 400,
    batch_size: int = 512,
    lr: float = 3e-3,
    weight_decay: float = 0.0,
    holdout: float = 0.1,
    seed: int = 0,
    item_vectors: np.ndarray | None = None,
) -> tuple[RewardModel, dict]:
    """A :class:`RewardModel` trained on the logged feedback of ``sequences`` (0-based items, one per
    user, with their watch times and dislike flags), and its report on the held-out users."""
    started = time.perf_counter()
    rng = np.random.default_rng([seed, 14])
    torch.manual_seed(seed)
    order = rng.permutation(len(sequences))
    n_held = int(round(holdout * len(sequences)))
    train = FeedbackExamples.build(sequences, watch_time, disliked, item_duration, np.sort(order[n_held:]))
    held = FeedbackExamples.build(sequences, watch_time, disliked, item_duration, np.sort(order[:n_held]))
    if not len(train):
        raise ValueError("no logged interaction with a history to train the reward model on")
    model = RewardModel(item_duration, d_model, max_len, item_vectors)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    model.train()
    losses = []
    for _ in range(steps):
        history, items, frac, dis = train.batch(rng.integers(0, len(train), batch_size), max_len)
        f_logit, d_logit = model(history, items)
        loss = F.binary_cross_entropy_with_logits(f_logit, frac) + F.binary_cross_entropy_with_logits(
            d_logit, dis
        )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    model.eval()
    train_mean = float(train.fraction[train.index].mean())
    report = {
        "train_examples": len(train),
        "steps": steps,
        "final_loss": round(float(np.mean(losses[-20:])), 4),
        "heldout": evaluate_reward_model(model, held, train_mean) if len(held) else None,
        "seconds": round(time.perf_counter() - started, 2),
    }
    return model, report


class RewardModelFeedback:
    """The reward model as a feedback source: expected responses (see the module docstring)."""

    source = "model"

    def __init__(self, model: RewardModel, item_duration: np.ndarray) -> None:
        self.model = model.eval()
        self.item_duration = np.asarray(item_duration, dtype=np.float32)

    @torch.inference_mode()
    def __call__(self, users: np.ndarray, histories: Tensor, items: np.ndarray) -> dict[str, np.ndarray]:
        history = histories[:, -self.model.max_len :].cpu()
        f_logit, d_logit = self.model(history, torch.from_numpy(np.asarray(items)))
        fraction = torch.sigmoid(f_logit).numpy()
        return {
            "watch_time": fraction * self.item_duration[items],
            "watch_fraction": fraction,
            "disliked": torch.sigmoid(d_logit).numpy(),
        }
