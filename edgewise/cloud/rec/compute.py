"""What a recommender costs: FLOPs counted by PyTorch's FLOP counter (matmuls and attention), and wall time.

- training FLOPs per sample: one forward and backward pass of a typical batch, divided by the
  (history, next item) targets it trains on. The lazy model trains on every position of a
  history in one pass; the encoder-decoder on one target per history;
- inference FLOPs per request: one user's full-length history through the context and a
  ``beam``-wide, trie-constrained beam search (SASRec: scoring every item).
"""

from __future__ import annotations

import time

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode


def _count(fn) -> int:
    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    return int(counter.get_total_flops())


def training_flops_per_sample(model, history: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
    """``history`` (B, T) and ``targets`` (B, Q) 1-based (0: none) as the trainer builds them."""
    import torch.nn.functional as F

    model.train()

    def step():
        model.zero_grad(set_to_none=True)
        keep = targets > 0
        if model.kind == "sasrec":
            loss = F.cross_entropy(model.scores(model(history)[keep]), targets[keep] - 1)
        else:
            logits = model(history, model.embed.item_tokens[targets])[keep]
            loss = logits.logsumexp(-1).mean()
        loss.backward()

    flops = _count(step)
    model.zero_grad(set_to_none=True)
    model.eval()
    n = int((targets > 0).sum())
    return {"flops_per_sample": flops / max(1, n), "samples": n}


@torch.inference_mode()
def inference_cost(
    model, history: torch.Tensor, trie, beam: int, top_k: int, repeats: int = 20
) -> dict[str, float]:
    """FLOPs and wall time (p50, ms) of one request: ``history`` (1, T)."""
    from edgewise.cloud.models.rec.beam import beam_search

    model.eval()
    if model.kind == "sasrec":

        def run():
            model.scores(model(history)[:, -1]).topk(top_k, dim=1)

    else:

        def run():
            beam_search(model, history, trie, beam)

    flops = _count(run)
    run()  # warm
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return {"flops_per_request": float(flops), "ms_p50": float(np.median(times) * 1000)}
