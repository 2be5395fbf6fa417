"""Rollouts of a generative recommender: a group of candidate items per user, their log-probabilities,
and the feedback they get.

Candidates are *sampled* from the policy level by level through the prefix trie (the usual choice
for group-relative methods: the group explores around the policy's own distribution and every
sample is a real item); :func:`beam_candidates` gives the deterministic alternative, the top G of
the trie-constrained beam search. Sampling reuses the beam search's incremental decoding: the
history's context is computed once per user, the code tokens' K/V are cached.

The probability of an item is the product of its code levels' trie-constrained probabilities;
:func:`item_log_probs` computes its log (a sum) with the model's teacher-forced forward pass on the
candidate's tokens, which is what carries the gradient during optimisation.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from edgewise.cloud.models.rec.beam import TorchTrie, _reorder, beam_search


@torch.inference_mode()
def sample_from_trie(
    model,
    history: Tensor,
    trie: TorchTrie,
    group: int,
    *,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
) -> np.ndarray:
    """(B, group) 0-based items drawn independently (with replacement) from the policy: at each
    level a code is drawn from the softmax of the level's logits over the codes the trie allows
    after the prefix drawn so far, sharpened or flattened by ``temperature``."""
    model.eval()
    b, device = history.shape[0], history.device
    ctx = model.context(history, every_position=False)
    nodes = torch.zeros(b, 1, dtype=torch.long, device=device)
    tokens, caches = None, None
    for level, size in enumerate(model.level_sizes):
        offset = model.level_offsets[level]
        logits, caches = model.step(ctx, tokens, level, caches)
        lg = (logits[..., offset : offset + size] / temperature).masked_fill(
            ~trie.allowed(nodes, size), float("-inf")
        )
        probs = torch.softmax(lg, dim=-1)  # (B, Q, size); Q = 1 at level 0, then group
        if level == 0:
            chosen = torch.multinomial(probs[:, 0], group, replacement=True, generator=generator)
            parents = torch.zeros(b, group, dtype=torch.long, device=device)
            caches = _reorder(caches, parents, 1)
            nodes = nodes.expand(b, group)
        else:
            chosen = torch.multinomial(probs.flatten(0, 1), 1, generator=generator).view(b, group)
        nodes = trie.step(nodes, chosen)
        tokens = chosen + offset
    return trie.leaf_item[nodes].cpu().numpy()


def beam_candidates(model, history: Tensor, trie: TorchTrie, group: int) -> np.ndarray:
    """(B, group) 0-based items: the top ``group`` beams of the trie-constrained beam search (-1
    where fewer items than ``group`` are reachable)."""
    return beam_search(model, history, trie, group).items


def item_log_probs(model, data, history: Tensor, items: Tensor) -> tuple[Tensor, list[Tensor]]:
    """``log pi(item | history)`` (N,) for ``history`` (N, T) and 0-based ``items`` (N,), with the
    per-level trie-constrained log-softmax rows (each (N, level size), ``-inf`` on forbidden codes)
    along the item's prefix. ``data`` is a :class:`~edgewise.cloud.train.rec_job.RecData` (its trie)."""
    from edgewise.cloud.train.rec_job import generative_loss_terms

    per_level, labels = generative_loss_terms(model, data, history, (items + 1)[:, None], True)
    levels = [torch.log_softmax(lg, dim=-1) for lg in per_level]
    logp = sum(lp.gather(1, y[:, None])[:, 0] for lp, y in zip(levels, labels, strict=True))
    return logp, levels


class SimulatorFeedback:
    """The synthetic world's users answer: sampled watch time, watch fraction and dislikes."""

    source = "simulator"

    def __init__(self, simulator, rng: np.random.Generator) -> None:
        self.simulator = simulator
        self.rng = rng

    def __call__(self, users: np.ndarray, histories: Tensor, items: np.ndarray) -> dict[str, np.ndarray]:
        """``users`` (B,) data set user indices, ``histories`` (B, T) (unused), ``items`` (B, K)."""
        out = self.simulator.respond(users, items, self.rng)
        return {k: out[k] for k in ("watch_time", "watch_fraction", "disliked", "affinity")}
