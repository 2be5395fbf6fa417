"""Beam search over the semantic-ID levels, constrained by the prefix trie, with a KV cache (PyTorch).

At each level every beam's next code is restricted to its trie node's children (``constrained``),
so every finished beam is an item; without the trie only the level's code range is enforced and
a beam can end on a code sequence no item has (counted as invalid, item -1). The context (history
K/V) is computed once per request; the self-attention K/V of the code tokens are cached and
reordered with their beams. This is the reference the edge runtime's numpy beam search matches.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from edgewise.cloud.models.rec.generative import GenerativeRec


@dataclass
class BeamResult:
    items: np.ndarray  # (B, beam) 0-based item indices, best first; -1: not an item (unconstrained only)
    scores: np.ndarray  # (B, beam) summed log-probabilities
    codes: np.ndarray  # (B, beam, L)

    def top(self, k: int) -> np.ndarray:
        return self.items[:, :k]


class TorchTrie:
    """The trie's arrays as tensors (see :class:`edgewise.rec_ids.PrefixTrie`)."""

    def __init__(self, children: np.ndarray, leaf_item: np.ndarray) -> None:
        self.children = torch.from_numpy(np.array(children, dtype=np.int64))
        self.leaf_item = torch.from_numpy(np.array(leaf_item, dtype=np.int64))

    @classmethod
    def from_trie(cls, trie) -> TorchTrie:
        return cls(trie.children, trie.leaf_item)

    def allowed(self, nodes: Tensor, size: int) -> Tensor:
        """(...,) nodes -> (..., size) bool; node -1 allows nothing."""
        rows = self.children[nodes.clamp(min=0), :size]
        return (rows >= 0) & (nodes >= 0).unsqueeze(-1)

    def step(self, nodes: Tensor, codes: Tensor) -> Tensor:
        nxt = self.children[nodes.clamp(min=0), codes.clamp(max=self.children.shape[1] - 1)]
        return torch.where((nodes >= 0) & (codes < self.children.shape[1]), nxt, torch.full_like(nxt, -1))


def _reorder(caches: list, parents: Tensor, q_old: int) -> list:
    """Caches of batch B * q_old -> B * q_new, each new beam taking its parent's."""
    b, q_new = parents.shape

    def pick(x: Tensor) -> Tensor:
        index = parents.view(b, q_new, 1, 1, 1).expand(-1, -1, *x.shape[1:])
        return x.unflatten(0, (b, q_old)).gather(1, index).flatten(0, 1)

    return [(pick(k), pick(v)) for k, v in caches]


@torch.inference_mode()
def beam_search(
    model: GenerativeRec, history: Tensor, trie: TorchTrie, beam: int, *, constrained: bool = True
) -> BeamResult:
    """Top ``beam`` code sequences for each history (B, T), best first."""
    model.eval()
    b = history.shape[0]
    ctx = model.context(history, every_position=False)
    scores = torch.zeros(b, 1)
    nodes = torch.zeros(b, 1, dtype=torch.long)  # the root
    codes = torch.zeros(b, 1, 0, dtype=torch.long)
    tokens, caches = None, None
    for level, size in enumerate(model.level_sizes):
        offset = model.level_offsets[level]
        logits, caches = model.step(ctx, tokens, level, caches)
        logp = torch.log_softmax(logits[..., offset : offset + size], dim=-1)  # (B, Q, size)
        if constrained:
            logp = logp.masked_fill(~trie.allowed(nodes, size), float("-inf"))
        q_old = logp.shape[1]
        total = (scores.unsqueeze(-1) + logp).flatten(1)  # (B, Q * size)
        width = min(beam, total.shape[1])
        scores, index = total.topk(width, dim=1)
        parents, chosen = index // size, index % size
        nodes = trie.step(nodes.gather(1, parents), chosen)
        codes = torch.cat(
            [codes.gather(1, parents.unsqueeze(-1).expand(-1, -1, codes.shape[2])), chosen[..., None]], 2
        )
        caches = _reorder(caches, parents, q_old)
        tokens = chosen + offset
    items = trie.leaf_item[nodes.clamp(min=0)]
    items = torch.where((nodes >= 0) & torch.isfinite(scores), items, torch.full_like(items, -1))
    return BeamResult(items.numpy(), scores.numpy(), codes.numpy())
