"""The alignment maths: group-relative advantages, GBPO's bounded ratio, ECPO's early clip, the KL
anchor, DARS on constructed durations, trie sampling against teacher-forced probabilities, and the
learned reward model on simulator data."""

from __future__ import annotations

import math
import types

import numpy as np
import pytest
import torch

from edgewise.cloud.rec.align.objectives import (
    clipped_surrogate_loss,
    ecpo_loss,
    gbpo_loss,
    group_advantages,
    log1mexp,
    masked_kl,
)
from edgewise.cloud.rec.align.shaping import (
    DurationAwareReward,
    GroupedPercentile,
    WatchTimeReward,
    duration_bucket_edges,
    duration_buckets,
)


def _logp(p: float) -> torch.Tensor:
    return torch.tensor([math.log(p)], dtype=torch.float64, requires_grad=True)


def _old(p: float) -> torch.Tensor:
    return torch.tensor([math.log(p)], dtype=torch.float64)


def _grad_on_logp(loss_fn, p: float, p_old: float, advantage: float, **kw) -> tuple[float, float]:
    """(loss value, d loss / d log pi) for one sample."""
    logp = _logp(p)
    loss = loss_fn(logp, _old(p_old), torch.tensor([advantage], dtype=torch.float64), **kw)
    loss.sum().backward()
    return float(loss.detach()), float(logp.grad)


# --- advantages ---------------------------------------------------------------------------------
def test_group_advantages_are_standardized_within_each_group():
    rewards = torch.tensor([[1.0, 2.0, 3.0, 6.0], [5.0, 5.0, 5.0, 5.0]])
    adv = group_advantages(rewards)
    assert adv[0].mean().abs() < 1e-6 and adv[0].std(unbiased=False) == pytest.approx(1.0, abs=1e-4)
    assert torch.argsort(adv[0]).tolist() == [0, 1, 2, 3]
    assert torch.equal(adv[1], torch.zeros(4))  # a group whose candidates all score alike teaches nothing


# --- GBPO ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "p, p_old, advantage, expected_ratio",
    [
        (0.5, 0.2, 1.0, 1.0),  # A >= 0: pi / max(pi_old, pi) = 0.5 / 0.5
        (0.5, 0.8, 2.0, 0.5 / 0.8),  # A >= 0: pi_old is the larger
        (0.3, 0.5, -1.0, 0.3 / 0.7),  # A < 0: pi / max(pi_old, 1 - pi) = 0.3 / 0.7
        (0.3, 0.9, -1.5, 0.3 / 0.9),  # A < 0: pi_old is the larger
        (0.01, 0.01, -1.0, 0.01 / 0.99),  # on-policy negative: damped to pi / (1 - pi)
    ],
)
def test_gbpo_ratio_on_hand_made_numbers(p, p_old, advantage, expected_ratio):
    loss, grad = _grad_on_logp(gbpo_loss, p, p_old, advantage)
    assert loss == pytest.approx(-expected_ratio * advantage, rel=1e-9)
    # the denominator is a constant (stop-gradient), so d loss / d log pi = loss itself
    assert grad == pytest.approx(-expected_ratio * advantage, rel=1e-9)


def _softmax_logit_grad(loss_fn, p_target: float, p_old: float, advantage: float) -> float:
    """Largest |d loss / d logit| of a 5-way softmax whose code 0 has probability ``p_target``."""
    rest = (1.0 - p_target) / 4
    logits = torch.tensor(
        [math.log(p_target)] + [math.log(rest)] * 4, dtype=torch.float64, requires_grad=True
    )
    logp = torch.log_softmax(logits, dim=0)[:1]
    loss_fn(logp, _old(p_old), torch.tensor([advantage], dtype=torch.float64)).sum().backward()
    return float(logits.grad.abs().max())


@pytest.mark.parametrize("advantage", [2.5, 1.0, -1.0, -2.5])
def test_gbpo_bounds_the_logit_gradient_by_the_advantage_for_any_old_policy(advantage):
    for p in (1e-4, 0.05, 0.3, 0.5, 0.7, 0.95, 0.9999):
        for p_old in (1e-8, 1e-3, 0.1, 0.5, 0.9, 0.999):
            bound = abs(advantage) * (1 + 1e-9)
            assert _softmax_logit_grad(gbpo_loss, p, p_old, advantage) <= bound, (p, p_old)
    # the plain importance ratio pi / pi_old has no such bound: an unlikely old item explodes it
    plain = lambda logp, old, adv: -torch.exp(logp - old) * adv  # noqa: E731
    assert _softmax_logit_grad(plain, 0.5, 1e-8, advantage) > 1e6 * abs(advantage)


def test_gbpo_keeps_the_samples_ppo_clipping_drops():
    # ratio 3 with a positive advantage: PPO's clip zeroes the gradient, GBPO still pushes (bounded)
    _, ppo = _grad_on_logp(clipped_surrogate_loss, 0.6, 0.2, 1.0)
    _, gbpo = _grad_on_logp(gbpo_loss, 0.6, 0.2, 1.0)
    assert ppo == 0.0
    assert gbpo == pytest.approx(-1.0)


def test_log1mexp_is_accurate_at_both_ends():
    x = torch.tensor([-1e-10, -1e-3, -0.5, -0.7, -5.0, -50.0], dtype=torch.float64)
    expected = np.log(-np.expm1(x.numpy()))
    assert np.allclose(log1mexp(x).numpy(), expected, rtol=1e-12)


# --- ECPO ---------------------------------------------------------------------------------------
def test_ecpo_caps_a_negative_advantage_ratio_early_without_dropping_it():
    eps, delta = 0.2, 0.1
    # pi / pi_old = 5 with A = -1: PPO's min keeps the unclipped 5 * A, a gradient growing with the ratio
    loss_ppo, grad_ppo = _grad_on_logp(clipped_surrogate_loss, 0.5, 0.1, -1.0, clip_eps=eps)
    assert loss_ppo == pytest.approx(5.0) and grad_ppo == pytest.approx(5.0)
    # ECPO caps the ratio at 1 + eps + delta, and the sample still pushes its item down
    loss, grad = _grad_on_logp(ecpo_loss, 0.5, 0.1, -1.0, clip_eps=eps, delta=delta)
    assert loss == pytest.approx(1 + eps + delta) and grad == pytest.approx(1 + eps + delta)


@pytest.mark.parametrize(
    "p, p_old, advantage, expected_loss, expected_grad",
    [
        (0.55, 0.5, -1.0, 1.1, 1.1),  # inside the trust region: the plain ratio
        (0.65, 0.5, 1.0, -1.2, 0.0),  # positive, ratio 1.3: clipped, no gradient
        (0.8, 0.5, 2.0, -2.4, 0.0),  # positive, ratio 1.6: clipped, no gradient
        (0.2, 0.5, -1.0, 0.8, 0.0),  # negative, ratio 0.4 below 1 - eps: clipped, no gradient
    ],
)
def test_ecpo_is_the_clipped_surrogate_elsewhere(p, p_old, advantage, expected_loss, expected_grad):
    loss, grad = _grad_on_logp(ecpo_loss, p, p_old, advantage, clip_eps=0.2, delta=0.1)
    assert loss == pytest.approx(expected_loss) and grad == pytest.approx(expected_grad, abs=1e-12)
    ref_loss, ref_grad = _grad_on_logp(clipped_surrogate_loss, p, p_old, advantage, clip_eps=0.2)
    assert (loss, grad) == pytest.approx((ref_loss, ref_grad))


def test_ecpo_refuses_a_cap_inside_the_clip_range():
    with pytest.raises(ValueError, match="delta"):
        ecpo_loss(_logp(0.5), _old(0.5), torch.tensor([1.0]), delta=0.0)


# --- the KL anchor ------------------------------------------------------------------------------
def test_masked_kl_ignores_forbidden_codes_and_keeps_the_gradient_finite():
    inf = float("-inf")
    logits_p = torch.tensor([[0.3, inf, -0.2, 1.0]], requires_grad=True)
    logits_q = torch.tensor([[0.0, inf, 0.5, 0.2]])
    logp, logq = torch.log_softmax(logits_p, -1), torch.log_softmax(logits_q, -1)
    kl = masked_kl(logp, logq)
    p, q = logp.exp()[0, [0, 2, 3]].detach(), logq.exp()[0, [0, 2, 3]]
    assert float(kl.detach()) == pytest.approx(float((p * (p.log() - q.log())).sum()), rel=1e-5)
    kl.sum().backward()
    assert torch.isfinite(logits_p.grad).all()
    assert float(masked_kl(logq, logq)) == pytest.approx(0.0, abs=1e-7)


# --- DARS ---------------------------------------------------------------------------------------
def test_duration_buckets_are_log_spaced():
    edges = duration_bucket_edges(np.array([10.0, 50.0, 1000.0]), 2)
    assert np.allclose(edges, [10.0, 100.0, 1000.0])
    assert duration_buckets(np.array([10.0, 99.0, 100.0, 1000.0, 5000.0]), edges).tolist() == [0, 0, 1, 1, 1]


def _two_bucket_world(prior_weight: float = 5.0) -> tuple[DurationAwareReward, np.ndarray]:
    """Items 0-4 last about 10 s, items 5-9 about 600 s; two log-spaced buckets split them. Logged
    watch times: short items 1..9 s (typical 5 s), long items 60..540 s (typical 300 s)."""
    duration = np.array([8, 9, 10, 11, 12, 500, 550, 600, 650, 700], dtype=np.float64)
    short_logs, long_logs = np.arange(1, 10) * 1.0, np.arange(1, 10) * 60.0
    users = np.repeat([0, 1, 2], 6)
    items = np.tile([0, 1, 2, 5, 6, 7], 3)
    watch = np.concatenate([np.concatenate([short_logs[i::3], long_logs[i::3]]) for i in range(3)])
    reward = DurationAwareReward(duration, users, items, watch, buckets=2, prior_weight=prior_weight)
    assert reward.item_bucket.tolist() == [0] * 5 + [1] * 5
    return reward, duration


@pytest.mark.parametrize("short_multiple, long_multiple", [(1.0, 1.0), (1.2, 0.8), (1.0, 0.5), (1.6, 1.2)])
def test_dars_ranks_watch_time_against_similar_durations_not_raw_seconds(short_multiple, long_multiple):
    """The property: a long item's reward is no larger than a short item's whenever the long one was
    watched for at most the same multiple of its bucket's typical watch time (the seconds do not
    matter), while raw watch time prefers the long item every time."""
    dars, _ = _two_bucket_world()
    users = np.array([0])
    short, long = np.array([[1]]), np.array([[6]])
    w_short, w_long = np.array([[5.0 * short_multiple]]), np.array([[300.0 * long_multiple]])
    no = np.zeros((1, 1))
    r_short, r_long = dars(users, short, w_short, no), dars(users, long, w_long, no)
    assert r_long <= r_short + 1e-9
    if short_multiple == long_multiple:
        assert r_long == pytest.approx(r_short)
    raw = WatchTimeReward(np.concatenate([np.arange(1, 10), 60 * np.arange(1, 10)]))
    assert raw(users, long, w_long, no) > raw(users, short, w_short, no)


def test_dars_blends_a_users_own_bucket_with_everyones():
    duration = np.array([10.0, 11.0, 600.0])
    # user 0 watched short items for 9-10 s, everyone else for 1-4 s
    users = np.array([0, 0, 0, 0, 1, 1, 1, 1, 0])
    items = np.array([0, 0, 1, 1, 0, 0, 1, 1, 2])
    watch = np.array([9.0, 9.5, 10.0, 9.8, 1.0, 2.0, 3.0, 4.0, 100.0])
    dars = DurationAwareReward(
        duration, users, items, watch, buckets=2, prior_weight=4.0, dislike_penalty=0.5
    )
    q_user, _ = GroupedPercentile(np.zeros(4), watch[:4])(np.zeros((1, 1)), np.array([[5.0]]))
    q_all, _ = GroupedPercentile(np.zeros(8), watch[:8])(np.zeros((1, 1)), np.array([[5.0]]))
    q = dars.percentile(np.array([0, 1]), np.array([[0], [0]]), np.array([[5.0], [5.0]]))
    assert q[0, 0] == pytest.approx((4 * q_user[0, 0] + 4 * q_all[0, 0]) / 8)  # 4 own logs, prior weight 4
    assert q[1, 0] > q[0, 0]  # 5 s is a good watch for user 1, a poor one for user 0
    disliked = dars(np.array([1]), np.array([[0]]), np.array([[5.0]]), np.array([[True]]))
    assert disliked[0, 0] == pytest.approx(q[1, 0] - 0.5)


def test_a_percentile_without_reference_values_is_a_half():
    table = GroupedPercentile(np.array([0, 0, 2]), np.array([1.0, 3.0, 2.0]))
    pct, n = table(np.array([0, 1, 2, 0]), np.array([2.0, 7.0, 2.0, 3.0]))
    assert pct.tolist() == [0.5, 0.5, 0.5, 0.75] and n.tolist() == [2, 0, 1, 2]


# --- rollouts -----------------------------------------------------------------------------------
def test_trie_sampling_draws_items_with_their_teacher_forced_probabilities():
    from edgewise.cloud.models.rec.beam import TorchTrie
    from edgewise.cloud.models.rec.config import RecModelConfig
    from edgewise.cloud.models.rec.generative import LazyDecoderRec
    from edgewise.cloud.rec.align.rollout import item_log_probs, sample_from_trie
    from edgewise.rec_ids import PrefixTrie, SemanticIds
    from tests.cloud.models.conftest import randomize_

    codes = np.array([[i // 6, (i // 2) % 3, i % 2] for i in range(15)], dtype=np.int32)  # 15 of 18 rows
    ids = SemanticIds(codes=codes, level_sizes=(3, 3, 2))
    tokens = np.zeros((16, 3), dtype=np.int64)
    tokens[1:] = ids.tokens()
    cfg = RecModelConfig(
        d_model=16, n_heads=2, n_kv_heads=1, n_layers=2, d_ff=32, max_len=6, dropout=0.0, hrf=None
    )
    model = randomize_(LazyDecoderRec(cfg, torch.from_numpy(tokens), ids.level_sizes), seed=3).eval()
    trie = PrefixTrie.build(ids)
    data = types.SimpleNamespace(trie=trie, torch_trie=lambda device: TorchTrie.from_trie(trie).to(device))
    history = torch.tensor([[0, 0, 3, 7, 1, 12]])
    n = 6000
    items = sample_from_trie(
        model, history, TorchTrie.from_trie(trie), n, generator=torch.Generator().manual_seed(0)
    )
    assert items.shape == (1, n) and items.min() >= 0 and items.max() < 15  # every sample is an item
    with torch.no_grad():
        logp, levels = item_log_probs(model, data, history.expand(15, -1), torch.arange(15))
    probs = logp.exp().numpy()
    assert probs.sum() == pytest.approx(1.0, abs=1e-5)  # a distribution over the catalogue
    freq = np.bincount(items[0], minlength=15) / n
    assert np.abs(freq - probs).sum() / 2 < 0.04  # total variation: sampling noise only
    assert len(levels) == 3 and torch.isinf(levels[2][-1]).sum() == 1  # item 14's last code has one sibling


# --- the reward model ---------------------------------------------------------------------------
@pytest.mark.slow
def test_the_reward_model_learns_watch_fraction_and_dislikes_above_chance():
    from edgewise.cloud.data.rec_synth import generate_synthetic, make_config
    from edgewise.cloud.rec.align.reward_model import train_reward_model

    torch.set_num_threads(1)
    ds, _ = generate_synthetic(make_config(n_users=300, n_items=40, n_topics=4, seed=5))
    seqs = ds.sequences()
    model, report = train_reward_model(
        seqs,
        ds.user_slices("watch_time"),
        ds.user_slices("disliked"),
        ds.item_duration,
        d_model=16,
        max_len=20,
        steps=150,
        batch_size=256,
        lr=1e-2,
        holdout=0.25,
    )
    held = report["heldout"]
    assert held["examples"] > 1000
    assert held["watch_fraction"]["mae"] < held["watch_fraction"]["mae_constant"]
    assert held["watch_fraction"]["r2"] > 0.1
    assert held["dislike"]["auc"] > 0.65  # 0.5 is chance
