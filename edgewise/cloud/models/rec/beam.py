"""Beam search over the semantic-ID levels, constrained by the prefix trie, with a KV cache (PyTorch).

At each level every beam's next code is restricted to its trie node's children (``constrained``),
and the level's softmax runs over those children only, as in training (``constrained_loss``), so a
beam's score is the log-probability the trained model gives the item; every finished beam is an
item. Without the trie only the level's code range is enforced (the softmax runs over the whole
level) and a beam can end on a code sequence no item has (item -1, with a finite score). A beam
with score -inf is not a candidate at all (fewer items reachable than the beam is wide). The context (history
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
    items: np.ndarray  # (B, beam) 0-based item indices, best first; -1: not an item
    scores: np.ndarray  # (B, beam) summed log-probabilities (-inf: no candidate)
    codes: np.ndarray  # (B, beam, L)

    @property
    def invalid(self) -> np.ndarray:
        """(B, beam) bool: a generated code sequence that is no item (only possible without the trie)."""
        return (self.items < 0) & np.isfinite(self.scores)


class TorchTrie:
    """The trie's arrays as tensors (see :class:`edgewise.rec_ids.PrefixTrie`)."""

    def __init__(self, children: np.ndarray, leaf_item: np.ndarray) -> None:
        self.children = torch.from_numpy(np.array(children, dtype=np.int64))
        self.leaf_item = torch.from_numpy(np.array(leaf_item, dtype=np.int64))

    def to(self, device: torch.device | str) -> TorchTrie:
        self.children, self.leaf_item = self.children.to(device), self.leaf_item.to(device)
        return self

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
    b, device = history.shape[0], history.device
    ctx = model.context(history, every_position=False)
    scores = torch.zeros(b, 1, device=device)
    nodes = torch.zeros(b, 1, dtype=torch.long, device=device)  # the root
    codes = torch.zeros(b, 1, 0, dtype=torch.long, device=device)
    tokens, caches = None, None
    for level, size in enumerate(model.level_sizes):
        offset = model.level_offsets[level]
        logits, caches = model.step(ctx, tokens, level, caches)
        logits = logits[..., offset : offset + size]  # (B, Q, size)
        if constrained:
            allowed = trie.allowed(nodes, size)
            logp = torch.log_softmax(logits.masked_fill(~allowed, float("-inf")), dim=-1)
            logp = logp.masked_fill(~allowed, float("-inf"))  # a node with no child: all -inf, no NaN
        else:
            logp = torch.log_softmax(logits, dim=-1)
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
    return BeamResult(items.cpu().numpy(), scores.cpu().numpy(), codes.cpu().numpy())
