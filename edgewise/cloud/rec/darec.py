"""LLM-collaborative alignment of item representations (after DaRec, Yang et al. 2024).

A text model's item embeddings (all-MiniLM-L6-v2 over titles and categories) and collaborative
ones (PPMI + SVD over the users' sequences) describe the same items from two sides, each with
information the other lacks. Aligning them wholesale would erase what is specific to each, so
DaRec disentangles first: per side, a *shared* and a *specific* projection (small MLPs), trained
with

- ``orthogonal``: the shared and specific features are decorrelated (mean squared correlation
  between every shared and every specific feature over a batch);
- ``reconstruction``: shared + specific of a side reconstruct that side's input (no collapse);
- ``global``: the two sides' shared parts of the same item match (symmetric InfoNCE over items,
  temperature ``temperature``) — global alignment;
- ``local``: the shared parts are clustered (K-means over both sides' shared vectors, ``clusters``
  preference centres, refreshed every ``recluster_every`` steps), and each item's soft assignment to
  the centres must agree between the sides (symmetric KL) — local, structure-level alignment.

The aligned item representation is ``[mean of the shared parts, collaborative specific, text
specific]``, L2-normalized, which the semantic-ID tokenizer clusters (``tokenizer.source: darec``).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from pydantic import Field

from edgewise.config import StrictModel


class DaRecConfig(StrictModel):
    shared_dim: int = Field(32, ge=2)
    specific_dim: int = Field(16, ge=1)
    hidden: int = Field(128, ge=4)
    steps: int = Field(400, ge=1)
    batch_size: int = Field(256, ge=8)
    lr: float = Field(1e-3, gt=0)
    temperature: float = Field(0.1, gt=0)
    clusters: int = Field(16, ge=2)
    recluster_every: int = Field(50, ge=1)
    orthogonal: float = Field(1.0, ge=0)
    reconstruction: float = Field(1.0, ge=0)
    global_weight: float = Field(1.0, ge=0)
    local_weight: float = Field(0.5, ge=0)
    seed: int = 0


def _mlp(d_in: int, hidden: int, d_out: int):
    from torch import nn

    return nn.Sequential(nn.Linear(d_in, hidden), nn.GELU(), nn.Linear(hidden, d_out))


class _Disentangler:
    """Shared and specific projections of both sides, and each side's decoder."""

    def __init__(self, d_collab: int, d_text: int, cfg: DaRecConfig) -> None:
        from torch import nn

        self.modules = nn.ModuleDict(
            {
                "shared_c": _mlp(d_collab, cfg.hidden, cfg.shared_dim),
                "specific_c": _mlp(d_collab, cfg.hidden, cfg.specific_dim),
                "shared_t": _mlp(d_text, cfg.hidden, cfg.shared_dim),
                "specific_t": _mlp(d_text, cfg.hidden, cfg.specific_dim),
                "decode_c": _mlp(cfg.shared_dim + cfg.specific_dim, cfg.hidden, d_collab),
                "decode_t": _mlp(cfg.shared_dim + cfg.specific_dim, cfg.hidden, d_text),
            }
        )

    def __call__(self, collab, text):
        m = self.modules
        return m["shared_c"](collab), m["specific_c"](collab), m["shared_t"](text), m["specific_t"](text)


def _kmeans_centres(x: np.ndarray, k: int, rng: np.random.Generator, iterations: int = 10) -> np.ndarray:
    centres = x[rng.choice(len(x), size=min(k, len(x)), replace=False)]
    for _ in range(iterations):
        labels = ((x[:, None, :] - centres[None]) ** 2).sum(-1).argmin(1)
        for c in range(len(centres)):
            members = x[labels == c]
            if len(members):
                centres[c] = members.mean(0)
    return centres


def _cross_correlation(a, b):
    """Mean squared correlation between every feature of ``a`` and every feature of ``b`` over the batch."""
    a = (a - a.mean(0)) / (a.std(0) + 1e-6)
    b = (b - b.mean(0)) / (b.std(0) + 1e-6)
    return ((a.t() @ b) / a.shape[0]).pow(2).mean()


def darec_losses(parts, collab, text, centres, modules, cfg: DaRecConfig) -> dict[str, Any]:
    import torch
    import torch.nn.functional as F

    s_c, p_c, s_t, p_t = parts
    out = {}
    out["orthogonal"] = _cross_correlation(s_c, p_c) + _cross_correlation(s_t, p_t)
    out["reconstruction"] = F.mse_loss(modules["decode_c"](torch.cat([s_c, p_c], -1)), collab) + F.mse_loss(
        modules["decode_t"](torch.cat([s_t, p_t], -1)), text
    )
    a, b = F.normalize(s_c, dim=-1), F.normalize(s_t, dim=-1)
    logits = a @ b.t() / cfg.temperature
    labels = torch.arange(len(a))
    out["global"] = (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels)) / 2
    centres_t = F.normalize(torch.as_tensor(centres, dtype=a.dtype), dim=-1)
    log_qa = torch.log_softmax(a @ centres_t.t() / cfg.temperature, -1)
    log_qb = torch.log_softmax(b @ centres_t.t() / cfg.temperature, -1)
    out["local"] = (
        F.kl_div(log_qa, log_qb, log_target=True, reduction="batchmean")
        + F.kl_div(log_qb, log_qa, log_target=True, reduction="batchmean")
    ) / 2
    out["total"] = (
        cfg.orthogonal * out["orthogonal"]
        + cfg.reconstruction * out["reconstruction"]
        + cfg.global_weight * out["global"]
        + cfg.local_weight * out["local"]
    )
    return out


def darec_align(
    collab: np.ndarray, text: np.ndarray, cfg: DaRecConfig | None = None
) -> tuple[np.ndarray, dict]:
    """Aligned item vectors (n_items, shared_dim + 2 * specific_dim), unit length, and a report: the
    losses at the first and last step, and how well the two sides' shared parts retrieve each other
    (the share of items whose nearest text-side shared vector is their own, against chance)."""
    import torch
    import torch.nn.functional as F

    cfg = cfg or DaRecConfig()
    started = time.perf_counter()
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    c = torch.as_tensor(np.asarray(collab, dtype=np.float32))
    t = torch.as_tensor(np.asarray(text, dtype=np.float32))
    if c.shape[0] != t.shape[0]:
        raise ValueError(
            f"collaborative ({c.shape[0]}) and text ({t.shape[0]}) embeddings cover different items"
        )
    model = _Disentangler(c.shape[1], t.shape[1], cfg)
    optimizer = torch.optim.Adam(model.modules.parameters(), lr=cfg.lr)
    n = c.shape[0]
    centres = None
    first = last = None
    for step in range(cfg.steps):
        if step % cfg.recluster_every == 0:
            with torch.no_grad():
                s_c, _, s_t, _ = model(c, t)
                shared = F.normalize(torch.cat([s_c, s_t]), dim=-1).numpy()
            centres = _kmeans_centres(shared, cfg.clusters, rng)
        index = torch.as_tensor(rng.choice(n, size=min(cfg.batch_size, n), replace=False))
        losses = darec_losses(model(c[index], t[index]), c[index], t[index], centres, model.modules, cfg)
        optimizer.zero_grad()
        losses["total"].backward()
        optimizer.step()
        record = {k: round(float(v.detach()), 5) for k, v in losses.items()}
        first = first or record
        last = record
    with torch.no_grad():
        s_c, p_c, s_t, p_t = model(c, t)
        shared = (F.normalize(s_c, dim=-1) + F.normalize(s_t, dim=-1)) / 2
        vectors = torch.cat(
            [F.normalize(shared, dim=-1), F.normalize(p_c, dim=-1), F.normalize(p_t, dim=-1)], -1
        )
        vectors = F.normalize(vectors, dim=-1).numpy().astype(np.float32)
        after = _mutual_retrieval(F.normalize(s_c, dim=-1).numpy(), F.normalize(s_t, dim=-1).numpy())
    report = {
        "items": n,
        "dim": int(vectors.shape[1]),
        "losses_first_step": first,
        "losses_last_step": last,
        "shared_retrieval_at_1": round(after, 4),
        "chance_retrieval_at_1": round(1 / n, 6),
        "seconds": round(time.perf_counter() - started, 2),
    }
    return vectors, report


def _mutual_retrieval(a: np.ndarray, b: np.ndarray) -> float:
    """Share of items whose nearest b-side vector (cosine) is their own."""
    hits = 0
    for start in range(0, len(a), 1024):
        sims = a[start : start + 1024] @ b.T
        hits += int((sims.argmax(1) == np.arange(start, start + len(sims))).sum())
    return hits / max(1, len(a))
