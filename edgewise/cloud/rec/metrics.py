"""One evaluation protocol for every recommender (RecBole's): leave-last-out, full ranking, HR@K and NDCG@K.

With one held-out item per user, HR@K is the share of users whose item is in their top K, and
NDCG@K averages ``1 / log2(rank + 1)`` (rank 1-based) over users whose item made the top K. A
score-based model (SASRec) ranks every item; a generative model's ranking is its beam, best first,
and an item outside the beam counts as not ranked. Nothing is masked: an item the user already saw
is a legitimate (and, in MovieLens, always wrong) recommendation for every model alike.
"""

from __future__ import annotations

import numpy as np


def ranking_metrics(
    ranked: np.ndarray, target: np.ndarray, ks: tuple[int, ...] = (5, 10)
) -> dict[str, float]:
    """``ranked`` (U, >= max(ks)) item indices best first (-1 = no item), ``target`` (U,)."""
    ranked = np.asarray(ranked)
    target = np.asarray(target)
    if ranked.ndim != 2 or ranked.shape[0] != target.shape[0]:
        raise ValueError(f"ranked {ranked.shape} and target {target.shape} disagree")
    if ranked.shape[1] < max(ks):
        raise ValueError(f"ranked lists hold {ranked.shape[1]} items, fewer than K = {max(ks)}")
    hit = ranked == target[:, None]
    position = np.where(hit.any(1), hit.argmax(1), ranked.shape[1])  # 0-based rank, or past the end
    out: dict[str, float] = {}
    for k in ks:
        found = position < k
        out[f"hr@{k}"] = float(found.mean()) if len(target) else 0.0
        out[f"ndcg@{k}"] = (
            float(np.where(found, 1.0 / np.log2(position + 2.0), 0.0).mean()) if len(target) else 0.0
        )
    return out
