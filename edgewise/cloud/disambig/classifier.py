"""A small classifier of the reading, with or without the text, trained with early stopping.

One model for the three conditions. The audio features go through a linear layer; the text, when
given, sets a per-unit scale and shift of that layer's output (FiLM: ``h * (1 + gamma(t)) +
beta(t)``), so the text can switch which prosodic cues mean which reading, template by template;
then ReLU, dropout, a second hidden layer and the output. Audio only: the same without the text
(an MLP); text only: the hidden layer is ``beta(t)`` alone (an MLP of the text). Trained with
AdamW on cross-entropy, mini-batches, and stopped on the validation split: the epoch with the best
validation accuracy (ties: lower validation loss) is kept.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class HeadConfig:
    hidden: int = 128
    dropout: float = 0.2
    lr: float = 3e-3
    weight_decay: float = 1e-3
    batch_size: int = 64
    max_epochs: int = 300
    patience: int = 40


@dataclass(frozen=True)
class Split:
    """One split's inputs: standardized audio (n, da) or None, text (n, dt) or None, labels (n,)."""

    audio: np.ndarray | None
    text: np.ndarray | None
    labels: np.ndarray

    def __len__(self) -> int:
        return int(self.labels.shape[0])


@dataclass
class FitResult:
    best_epoch: int
    epochs: int
    val_accuracy: float
    val_loss: float


def build_head(audio_dim: int, text_dim: int, n_classes: int, cfg: HeadConfig):
    import torch
    from torch import nn

    class Head(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.audio = nn.Linear(audio_dim, cfg.hidden) if audio_dim else None
            self.film = nn.Linear(text_dim, 2 * cfg.hidden) if text_dim else None
            self.drop = nn.Dropout(cfg.dropout)
            self.hidden = nn.Linear(cfg.hidden, cfg.hidden)
            self.out = nn.Linear(cfg.hidden, n_classes)

        def forward(self, audio: torch.Tensor | None, text: torch.Tensor | None) -> torch.Tensor:
            h = self.audio(audio) if self.audio is not None else None
            if self.film is not None:
                gamma, beta = self.film(text).chunk(2, dim=-1)
                h = beta if h is None else h * (1.0 + gamma) + beta
            h = self.drop(torch.relu(h))
            h = self.drop(torch.relu(self.hidden(h)))
            return self.out(h)

    return Head()


def _tensor(x: np.ndarray | None):
    import torch

    return None if x is None else torch.as_tensor(x, dtype=torch.float32)


def train_head(train: Split, val: Split, n_classes: int, seed: int, cfg: HeadConfig | None = None):
    """Train on ``train``, keep the best epoch on ``val``; the model (eval mode) and how it went."""
    import torch
    import torch.nn.functional as F

    cfg = cfg or HeadConfig()
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    audio_dim = 0 if train.audio is None else train.audio.shape[1]
    text_dim = 0 if train.text is None else train.text.shape[1]
    model = build_head(audio_dim, text_dim, n_classes, cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    ta, tt, ty = _tensor(train.audio), _tensor(train.text), torch.as_tensor(train.labels, dtype=torch.long)
    va, vt, vy = _tensor(val.audio), _tensor(val.text), torch.as_tensor(val.labels, dtype=torch.long)
    best = (-1.0, float("inf"))
    best_state, best_epoch, epoch = None, 0, 0
    for epoch in range(1, cfg.max_epochs + 1):
        model.train()
        order = torch.as_tensor(rng.permutation(len(train)))
        for start in range(0, len(train), cfg.batch_size):
            idx = order[start : start + cfg.batch_size]
            logits = model(None if ta is None else ta[idx], None if tt is None else tt[idx])
            loss = F.cross_entropy(logits, ty[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            logits = model(va, vt)
            val_loss = float(F.cross_entropy(logits, vy))
            val_acc = float((logits.argmax(-1) == vy).float().mean())
        if val_acc > best[0] or (val_acc == best[0] and val_loss < best[1]):
            best, best_epoch = (val_acc, val_loss), epoch
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        elif epoch - best_epoch >= cfg.patience:
            break
    model.load_state_dict(best_state)
    model.eval()
    return model, FitResult(best_epoch=best_epoch, epochs=epoch, val_accuracy=best[0], val_loss=best[1])


def predict(model, split: Split) -> np.ndarray:
    import torch

    with torch.no_grad():
        return model(_tensor(split.audio), _tensor(split.text)).argmax(-1).numpy()


def standardize(train: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
    """Z-score every array with the train mean and standard deviation (constant columns: 0)."""
    mean, std = train.mean(axis=0), train.std(axis=0)
    std = np.where(std > 1e-9, std, 1.0)
    return [(x - mean) / std for x in (train, *others)]
