"""The one protocol every task and encoder is scored by.

1. Features ``(n, layers, dims)`` from a frozen encoder (pooled over time, or functionals).
2. Standardization of every (layer, dim) with the train split's mean and std (a constant column
   becomes 0).
3. A head: a learnable softmax-weighted sum over the layers (one layer: weight 1), then an MLP with
   one hidden layer (ReLU, dropout).
4. Adam on the train split, cross-entropy for classification, MSE on standardized targets for
   regression; after every epoch the val split's primary metric (UA or CCC); training stops after
   ``patience`` epochs without a better one and the best epoch's weights are kept.
5. Metrics on the test split (regression predictions back in the targets' units).

Everything is seeded (weights, dropout, batch order), one torch thread by default.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from edgewise.cloud.para.metrics import task_report
from edgewise.cloud.para.tasks import CLASSIFICATION, PRIMARY_METRIC


@dataclass(frozen=True)
class HeadConfig:
    hidden: int = 128
    dropout: float = 0.2
    lr: float = 1e-3
    weight_decay: float = 1e-4
    batch_size: int = 64
    max_epochs: int = 100
    patience: int = 10

    def to_dict(self) -> dict:
        return asdict(self)


class LayerWeightedHead(nn.Module):
    """(batch, layers, dims) -> softmax(w)-weighted sum over layers -> Linear, ReLU, dropout, Linear."""

    def __init__(self, n_layers: int, dims: int, n_out: int, hidden: int = 128, dropout: float = 0.2) -> None:
        super().__init__()
        self.layer_logits = nn.Parameter(torch.zeros(n_layers))
        self.mlp = nn.Sequential(
            nn.Linear(dims, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, n_out)
        )

    def layer_weights(self) -> torch.Tensor:
        return torch.softmax(self.layer_logits, dim=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mixed = torch.einsum("l,bld->bd", self.layer_weights(), x)
        return self.mlp(mixed)


def standardize(train: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
    """Each array standardized per (layer, dim) with ``train``'s mean and std; non-finite values
    (an openSMILE functional of a silent stretch) and constant columns become 0."""
    train = np.asarray(train, dtype=np.float64)
    finite = np.where(np.isfinite(train), train, np.nan)
    mean = np.nan_to_num(np.nanmean(finite, axis=0))
    std = np.nan_to_num(np.nanstd(finite, axis=0))
    std = np.where(std > 1e-12, std, 1.0)
    out = []
    for arr in (train, *others):
        z = (np.asarray(arr, dtype=np.float64) - mean) / std
        out.append(np.nan_to_num(z, nan=0.0, posinf=0.0, neginf=0.0).astype(np.float32))
    return out


@dataclass
class HeadResult:
    test: dict  # the task's metrics on the test split
    val_primary: float  # the best epoch's val metric (UA or CCC)
    best_epoch: int  # 1-based
    epochs: int  # epochs run
    layer_weights: list[float]
    train_s: float


def _predict(head: LayerWeightedHead, x: torch.Tensor, kind: str) -> np.ndarray:
    head.eval()
    with torch.no_grad():
        out = head(x)
    return out.argmax(dim=1).numpy() if kind == CLASSIFICATION else out[:, 0].numpy().astype(np.float64)


def train_head(
    features: dict[str, np.ndarray],
    targets: dict[str, np.ndarray],
    kind: str,
    classes: tuple[str, ...] | None,
    seed: int,
    cfg: HeadConfig = HeadConfig(),
) -> HeadResult:
    """Train one head on ``features["train"]`` (early stopping on ``"val"``) and score it on ``"test"``."""
    t0 = time.perf_counter()
    torch.manual_seed(seed)
    x_train, x_val, x_test = (
        torch.from_numpy(a) for a in standardize(features["train"], features["val"], features["test"])
    )
    classify = kind == CLASSIFICATION
    if classify:
        y_train = torch.from_numpy(np.asarray(targets["train"], dtype=np.int64))
        loss_fn: nn.Module = nn.CrossEntropyLoss()
        n_out, y_mean, y_std = len(classes or ()), 0.0, 1.0
    else:
        raw = np.asarray(targets["train"], dtype=np.float64)
        y_mean, y_std = float(raw.mean()), float(raw.std()) or 1.0
        y_train = torch.from_numpy(((raw - y_mean) / y_std).astype(np.float32))[:, None]
        loss_fn, n_out = nn.MSELoss(), 1
    primary = PRIMARY_METRIC[kind]

    def val_score(head: LayerWeightedHead) -> float:
        pred = _predict(head, x_val, kind)
        if not classify:
            pred = pred * y_std + y_mean
        return task_report(kind, targets["val"], pred, classes)[primary]

    head, best, best_epoch, epoch = fit_head(x_train, y_train, loss_fn, n_out, val_score, seed, cfg)
    pred = _predict(head, x_test, kind)
    if not classify:
        pred = pred * y_std + y_mean
    return HeadResult(
        test=task_report(kind, targets["test"], pred, classes),
        val_primary=float(best),
        best_epoch=best_epoch,
        epochs=epoch,
        layer_weights=[round(float(w), 4) for w in head.layer_weights().detach()],
        train_s=round(time.perf_counter() - t0, 3),
    )


def fit_head(
    x_train: torch.Tensor,
    y_train: torch.Tensor,
    loss_fn: nn.Module,
    n_out: int,
    val_score: Callable[[LayerWeightedHead], float],
    seed: int,
    cfg: HeadConfig = HeadConfig(),
) -> tuple[LayerWeightedHead, float, int, int]:
    """Train a :class:`LayerWeightedHead` on standardized ``x_train`` (n, layers, dims) with Adam,
    scoring ``val_score(head)`` after every epoch; stops after ``cfg.patience`` epochs without a
    better score and returns (head with the best epoch's weights, best score, best epoch, epochs run)."""
    torch.manual_seed(seed)
    head = LayerWeightedHead(x_train.shape[1], x_train.shape[2], n_out, cfg.hidden, cfg.dropout)
    optim = torch.optim.Adam(head.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    order = torch.Generator().manual_seed(seed)
    best, best_state, best_epoch, epoch = -np.inf, copy.deepcopy(head.state_dict()), 0, 0
    for epoch in range(1, cfg.max_epochs + 1):
        head.train()
        for idx in torch.randperm(len(x_train), generator=order).split(cfg.batch_size):
            optim.zero_grad()
            loss_fn(head(x_train[idx]), y_train[idx]).backward()
            optim.step()
        head.eval()  # dropout off while scoring; the next epoch turns it back on
        score = val_score(head)
        if score > best + 1e-9:
            best, best_state, best_epoch = score, copy.deepcopy(head.state_dict()), epoch
        elif epoch - best_epoch >= cfg.patience:
            break
    head.load_state_dict(best_state)
    head.eval()
    return head, float(best), best_epoch, epoch
