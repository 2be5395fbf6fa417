"""Rewards from watch time and dislikes, and Duration-Aware Reward Shaping (DARS, OneRec-V2).

Raw watch time favours long items: a user watches a 10-minute clip longer than a 20-second one
even when they like the short one more (in the synthetic world, expected watch time grows as
``affinity * duration ** 0.6``). DARS ranks a watch time among watch times of items of similar
length instead:

1. items are put in ``buckets`` duration buckets with log-spaced edges between the shortest and
   the longest item (:func:`duration_bucket_edges`, :func:`duration_buckets`);
2. a watch time ``w`` of item ``i`` by user ``u`` becomes its mid-rank percentile among the logged
   watch times of ``u``'s own interactions in ``i``'s bucket, blended with its percentile among
   everyone's logged watch times in that bucket, weighted by ``n_u`` and ``prior_weight``
   pseudo-interactions: ``q = (n_u * q_user + k * q_all) / (n_u + k)`` (a user with no logged item
   in the bucket gets ``q_all``; with many, mostly their own);
3. the reward is ``q - dislike_penalty * disliked`` (``disliked`` a flag or a probability).

So a long item watched for its bucket's typical time scores about 0.5, the same as a short item
watched for *its* bucket's typical time, although the raw seconds differ tenfold; a long item only
scores higher if it is watched longer than long items usually are.

:class:`WatchTimeReward` (raw seconds over the logged median) and :class:`WatchFractionReward`
(the watched fraction, which favours short items) are the unshaped rewards DARS is compared with.
Every reward is a callable ``(users (B,), items (B, K), watch_time (B, K), disliked (B, K)) ->
(B, K)``; ``users`` are the data set's user indices, ``items`` 0-based item indices.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

SHAPINGS = ("dars", "watch_time", "watch_fraction")


class Reward(Protocol):
    def __call__(
        self, users: np.ndarray, items: np.ndarray, watch_time: np.ndarray, disliked: np.ndarray
    ) -> np.ndarray: ...


def duration_bucket_edges(durations: np.ndarray, n_buckets: int) -> np.ndarray:
    """``n_buckets + 1`` log-spaced edges from the shortest to the longest duration (seconds > 0)."""
    durations = np.asarray(durations, dtype=np.float64)
    if n_buckets < 1:
        raise ValueError(f"n_buckets must be at least 1, got {n_buckets}")
    if durations.size == 0 or durations.min() <= 0:
        raise ValueError("durations must be a non-empty array of positive seconds")
    lo, hi = float(durations.min()), float(durations.max())
    if hi <= lo:
        hi = lo * (1 + 1e-9)
    return np.geomspace(lo, hi, n_buckets + 1)


def duration_buckets(durations: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """The bucket (0 .. len(edges) - 2) of each duration; values outside the edges go to the end buckets."""
    inner = np.asarray(edges, dtype=np.float64)[1:-1]
    return np.searchsorted(inner, np.asarray(durations, dtype=np.float64), side="right").astype(np.int64)


class GroupedPercentile:
    """Mid-rank percentile of a value among the reference values of its group, vectorized.

    ``(count below + half the count equal) / n``; 0.5 where the group has no reference value
    (nothing known). Reference values must be >= 0 (watch times).
    """

    def __init__(self, groups: np.ndarray, values: np.ndarray) -> None:
        groups = np.asarray(groups, dtype=np.int64).ravel()
        values = np.asarray(values, dtype=np.float64).ravel()
        if groups.shape != values.shape:
            raise ValueError(f"groups {groups.shape} and values {values.shape} disagree")
        if values.size and values.min() < 0:
            raise ValueError("reference values must be >= 0")
        self.scale = float(values.max()) + 1.0 if values.size else 1.0
        order = np.lexsort((values, groups))
        self.groups = groups[order]
        self.keys = self.groups + self._fraction(values[order])  # one sorted key: group, then value

    def _fraction(self, values: np.ndarray) -> np.ndarray:
        return np.clip(values / self.scale, 0.0, 1.0 - 1e-9)

    def __call__(self, groups: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(percentiles, reference counts), both shaped like ``values``."""
        groups = np.broadcast_to(np.asarray(groups, dtype=np.int64), np.shape(values))
        values = np.asarray(values, dtype=np.float64)
        start = np.searchsorted(self.groups, groups, side="left")
        n = np.searchsorted(self.groups, groups, side="right") - start
        key = groups + self._fraction(values)
        below = np.searchsorted(self.keys, key, side="left") - start
        equal = np.searchsorted(self.keys, key, side="right") - start - below
        pct = np.where(n > 0, (below + 0.5 * equal) / np.maximum(n, 1), 0.5)
        return pct, n


class DurationAwareReward:
    """DARS (see the module docstring), fitted on logged feedback: ``log_users`` (data set user
    indices), ``log_items`` (0-based) and ``log_watch_time`` (seconds), one entry per interaction."""

    def __init__(
        self,
        item_duration: np.ndarray,
        log_users: np.ndarray,
        log_items: np.ndarray,
        log_watch_time: np.ndarray,
        *,
        buckets: int = 8,
        prior_weight: float = 5.0,
        dislike_penalty: float = 1.0,
    ) -> None:
        self.edges = duration_bucket_edges(item_duration, buckets)
        self.item_bucket = duration_buckets(item_duration, self.edges)
        self.n_buckets = buckets
        self.prior_weight = float(prior_weight)
        self.dislike_penalty = float(dislike_penalty)
        bucket = self.item_bucket[np.asarray(log_items, dtype=np.int64)]
        watch = np.asarray(log_watch_time, dtype=np.float64)
        self._everyone = GroupedPercentile(bucket, watch)
        self._per_user = GroupedPercentile(np.asarray(log_users, dtype=np.int64) * buckets + bucket, watch)

    def percentile(self, users: np.ndarray, items: np.ndarray, watch_time: np.ndarray) -> np.ndarray:
        """The blended within-bucket percentile of each watch time, (B, K) in [0, 1]."""
        items = np.asarray(items, dtype=np.int64)
        bucket = self.item_bucket[items]
        users = np.asarray(users, dtype=np.int64).reshape(-1, *([1] * (items.ndim - 1)))
        q_all, _ = self._everyone(bucket, watch_time)
        q_user, n_user = self._per_user(users * self.n_buckets + bucket, watch_time)
        weight = n_user + self.prior_weight
        return np.where(
            weight > 0, (n_user * q_user + self.prior_weight * q_all) / np.maximum(weight, 1e-12), q_all
        )

    def __call__(self, users, items, watch_time, disliked) -> np.ndarray:
        q = self.percentile(users, items, watch_time)
        return (q - self.dislike_penalty * np.asarray(disliked, dtype=np.float64)).astype(np.float32)


class WatchTimeReward:
    """Raw watch time in units of the logged median watch time, minus the dislike penalty."""

    def __init__(self, log_watch_time: np.ndarray, *, dislike_penalty: float = 1.0) -> None:
        self.scale = max(float(np.median(log_watch_time)), 1e-6) if len(log_watch_time) else 1.0
        self.dislike_penalty = float(dislike_penalty)

    def __call__(self, users, items, watch_time, disliked) -> np.ndarray:
        penalty = self.dislike_penalty * np.asarray(disliked, dtype=np.float64)
        return (np.asarray(watch_time, dtype=np.float64) / self.scale - penalty).astype(np.float32)


class WatchFractionReward:
    """The watched share of the item's duration, minus the dislike penalty (biased to short items)."""

    def __init__(self, item_duration: np.ndarray, *, dislike_penalty: float = 1.0) -> None:
        self.item_duration = np.asarray(item_duration, dtype=np.float64)
        self.dislike_penalty = float(dislike_penalty)

    def __call__(self, users, items, watch_time, disliked) -> np.ndarray:
        fraction = np.asarray(watch_time, dtype=np.float64) / self.item_duration[np.asarray(items)]
        penalty = self.dislike_penalty * np.asarray(disliked, dtype=np.float64)
        return (np.clip(fraction, 0.0, 1.0) - penalty).astype(np.float32)


def make_reward(
    kind: str,
    item_duration: np.ndarray,
    log_users: np.ndarray,
    log_items: np.ndarray,
    log_watch_time: np.ndarray,
    *,
    buckets: int,
    prior_weight: float,
    dislike_penalty: float,
) -> Reward:
    """The reward named ``kind`` (``dars``, ``watch_time`` or ``watch_fraction``) fitted on the logs;
    the settings come from the align config's ``shaping`` (its defaults are the only ones)."""
    if kind == "dars":
        return DurationAwareReward(
            item_duration,
            log_users,
            log_items,
            log_watch_time,
            buckets=buckets,
            prior_weight=prior_weight,
            dislike_penalty=dislike_penalty,
        )
    if kind == "watch_time":
        return WatchTimeReward(log_watch_time, dislike_penalty=dislike_penalty)
    if kind == "watch_fraction":
        return WatchFractionReward(item_duration, dislike_penalty=dislike_penalty)
    raise ValueError(f"unknown reward shaping {kind!r}; expected one of {', '.join(SHAPINGS)}")
