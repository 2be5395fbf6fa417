"""Policy-optimisation objectives for a generative recommender: group-relative advantages, GBPO,
ECPO and the KL anchor to the reference policy.

All work on log-probabilities of whole items: ``log pi(o | u)`` is the sum of the item's code
levels' trie-constrained log-probabilities, computed by the teacher-forced forward pass (see
:func:`edgewise.cloud.rec.align.rollout.item_log_probs`). ``logp`` carries the gradient,
``logp_old`` (the policy that sampled the group) and the advantages are constants. Each loss
returns one value per sample (minimize its mean); ``sg`` below is stop-gradient (``detach``).

**Group-relative advantage** (GRPO): ``A_i = (r_i - mean_j r_j) / (std_j r_j + eps)`` over the G
candidates of one user (population std); a group whose rewards are all equal teaches nothing.

**GBPO** (OneRec-V2's Gradient-Bounded Policy Optimization, "adaptive ratio clipping"), exactly::

    loss_i = - pi(o_i) / pi'_old(o_i) * A_i
    pi'_old(o_i) = max(pi_old(o_i), sg(pi(o_i)))        if A_i >= 0
                   max(pi_old(o_i), 1 - sg(pi(o_i)))    if A_i <  0

computed in log space (``log(1 - pi)`` by a stable ``log1mexp``). No sample is dropped: its
gradient is ``-(pi / pi'_old) * A * grad log pi``, and the factor ``pi / pi'_old`` is at most 1 for
positive advantages and at most ``pi / (1 - pi)`` for negative ones, so for a softmax the gradient
on the chosen logit, ``-(pi / pi'_old) (1 - pi) A``, never exceeds ``|A|`` in size, whatever
``pi_old`` is (the bound of a binary cross-entropy). With the plain ratio ``pi / pi_old`` it grows
without bound as ``pi_old -> 0``.

**ECPO** (OneRec-V1's Early-Clipped GRPO): the PPO/GRPO clipped surrogate
``min(r A, clip(r, 1 - eps, 1 + eps) A)`` with ``r = pi / pi'_old``, where for negative advantages
``pi'_old = max(pi_old, sg(pi) / (1 + eps + delta))`` (``pi_old`` otherwise). Plain PPO leaves a
negative-advantage sample whose ratio has run far above ``1 + eps`` unclipped (``min`` picks
``r A``), so its gradient grows with ``r``; ECPO caps that ratio at ``1 + eps + delta`` through the
denominator, so the sample still pushes its item down, with a bounded weight, and is not dropped.

**KL anchor**: ``KL(pi || pi_ref)`` of each level's trie-constrained next-code distribution along
the candidate's prefix, exact over the allowed codes (both distributions share the trie's
forbidden codes, at log-probability ``-inf``).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def group_advantages(rewards: Tensor, eps: float = 1e-6) -> Tensor:
    """(B, G) rewards -> (B, G) advantages, standardized within each row (group)."""
    mean = rewards.mean(dim=-1, keepdim=True)
    std = rewards.std(dim=-1, keepdim=True, unbiased=False)
    return (rewards - mean) / (std + eps)


def log1mexp(x: Tensor) -> Tensor:
    """``log(1 - exp(x))`` for ``x <= 0``, accurate at both ends (Maechler's split at -log 2)."""
    x = x.clamp(max=0.0)
    return torch.where(x > -math.log(2.0), torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))


def gbpo_loss(logp: Tensor, logp_old: Tensor, advantages: Tensor) -> Tensor:
    """Per-sample GBPO loss (module docstring): ``-pi / pi'_old * A``."""
    sg = logp.detach()
    denominator = torch.where(
        advantages >= 0, torch.maximum(logp_old, sg), torch.maximum(logp_old, log1mexp(sg))
    )
    return -torch.exp(logp - denominator) * advantages


def clipped_surrogate_loss(
    logp: Tensor, logp_old: Tensor, advantages: Tensor, clip_eps: float = 0.2
) -> Tensor:
    """Per-sample PPO / GRPO loss: ``-min(r A, clip(r, 1 - eps, 1 + eps) A)``, ``r = pi / pi_old``."""
    ratio = torch.exp(logp - logp_old)
    clipped = ratio.clamp(1.0 - clip_eps, 1.0 + clip_eps)
    return -torch.minimum(ratio * advantages, clipped * advantages)


def ecpo_loss(
    logp: Tensor, logp_old: Tensor, advantages: Tensor, clip_eps: float = 0.2, delta: float = 0.1
) -> Tensor:
    """Per-sample ECPO loss (module docstring): the clipped surrogate with negative-advantage
    ratios capped early at ``1 + clip_eps + delta`` (their gradient kept, bounded)."""
    if delta <= 0:
        raise ValueError(f"delta must be > 0 (the cap must lie above the clip range), got {delta}")
    cap = math.log1p(clip_eps + delta)
    early = torch.maximum(logp_old, logp.detach() - cap)
    old = torch.where(advantages < 0, early, logp_old)
    return clipped_surrogate_loss(logp, old, advantages, clip_eps)


def masked_kl(logp: Tensor, logq: Tensor) -> Tensor:
    """``KL(p || q)`` over the last axis of log-probabilities in which forbidden entries are ``-inf``
    in both (they contribute nothing, and no NaN reaches the gradient)."""
    allowed = torch.isfinite(logp)
    lp = logp.masked_fill(~allowed, 0.0)
    lq = logq.masked_fill(~allowed, 0.0)
    return (logp.exp() * (lp - lq)).sum(-1)


POLICY_LOSSES = {"gbpo": gbpo_loss, "ecpo": ecpo_loss}
