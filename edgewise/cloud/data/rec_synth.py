"""Synthetic recommendation data and the user simulator behind it (for RL, tests and scale).

The world: ``n_topics`` topics; each item has a sparse topic mixture (Dirichlet), a main topic, a
quality, a popularity and a duration (log-normal seconds); each user has sparse interests over
topics (Dirichlet) that drift slowly from a first mixture towards a second over their history.

A history is drawn item after item, so a sequential recommender has structure to learn:

- the next item's topic follows the previous item's topic through a sparse topic-transition
  matrix (with probability ``topic_follow``), otherwise it is drawn from the user's interests;
- with probability ``series_continue`` the next item is the next one of the same topic's series;
- with probability ``popularity_bias`` it is a globally popular item, whatever the topic;
- within a topic, items are drawn by popularity and quality.

Each logged interaction carries the simulator's response (:meth:`UserSimulator.respond`): how
long the user watched (``watch_time`` seconds, never above the item's duration) and whether they
disliked it. Longer items are watched longer in absolute terms but for a smaller fraction, so raw
watch time is biased towards long items (what duration-aware reward shaping corrects); dislikes
are likelier when the user's affinity for the item is low.

Generation is chunked over users (``chunk_users`` at a time, one vectorized step per position in
the history) and never builds a users x items matrix: memory is the output arrays plus one chunk.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field, model_validator

from edgewise.cloud.data.rec_data import DATASET_FILE, SIMULATOR_FILE, RecDataset, read_dataset_info
from edgewise.config import StrictModel, format_validation_error
from edgewise.errors import ConfigError, DataError

log = logging.getLogger(__name__)

CATEGORY_NAMES = (
    "news", "music", "sports", "comedy", "cooking", "gaming", "travel", "science", "fashion",
    "animals", "diy", "fitness", "history", "tech", "art", "nature",
)  # fmt: skip
STATE_ARRAYS = (
    "user_interest", "item_topics", "item_quality", "item_duration", "item_popularity",
    "item_topic", "topic_transition",
)  # fmt: skip


class SimulatorConfig(StrictModel):
    """The synthetic world and how its users behave. Durations are in seconds."""

    n_users: int = Field(1000, ge=1)
    n_items: int = Field(500, ge=2)
    n_topics: int = Field(16, ge=1)
    min_history: int = Field(5, ge=1, description="fewest interactions per user")
    max_history: int = Field(35, ge=1, description="most interactions per user (uniform in between)")
    seed: int = 0
    user_concentration: float = Field(
        0.15, gt=0, description="Dirichlet alpha of user interests (small: few topics)"
    )
    item_concentration: float = Field(0.1, gt=0, description="Dirichlet alpha of item topic mixtures")
    transition_concentration: float = Field(0.1, gt=0, description="Dirichlet alpha of topic-transition rows")
    topic_follow: float = Field(
        0.5, ge=0, le=1, description="P(next topic follows the previous item's topic)"
    )
    series_continue: float = Field(
        0.15, ge=0, le=1, description="P(next item is the next of the same series)"
    )
    popularity_bias: float = Field(0.1, ge=0, le=1, description="P(a globally popular item)")
    popularity_sigma: float = Field(1.0, ge=0, description="log-normal spread of item popularity")
    drift: float = Field(0.3, ge=0, le=1, description="how far interests move from first to last interaction")
    affinity_slope: float = Field(6.0, gt=0)
    affinity_center: float = Field(
        0.35, description="topic match (cosine) at which affinity is 1/2 for average quality"
    )
    quality_weight: float = Field(0.5, ge=0)
    duration_median_s: float = Field(60.0, gt=0)
    duration_sigma: float = Field(0.9, ge=0, description="log-normal sigma of item durations")
    duration_min_s: float = Field(5.0, gt=0)
    duration_max_s: float = Field(1200.0, gt=0)
    duration_exponent: float = Field(
        0.4, ge=0, lt=1, description="expected watch fraction scales as (duration / median) ** -exponent"
    )
    watch_concentration: float = Field(6.0, gt=0, description="Beta concentration of the watched fraction")
    dislike_threshold: float = Field(
        0.3, ge=0, le=1, description="affinity below which dislikes become likely"
    )
    dislike_max: float = Field(0.5, ge=0, le=1, description="dislike probability at zero affinity, about")
    dislike_sharpness: float = Field(15.0, gt=0)
    mean_gap_s: float = Field(3600.0, gt=0, description="mean time between a user's interactions")
    start_time: int = Field(1_700_000_000, description="epoch seconds of the first day of activity")
    chunk_users: int = Field(65536, ge=1, description="users generated per vectorized chunk")

    @model_validator(mode="after")
    def _ranges(self) -> SimulatorConfig:
        if self.min_history > self.max_history:
            raise ValueError(f"min_history ({self.min_history}) exceeds max_history ({self.max_history})")
        if not self.duration_min_s <= self.duration_median_s <= self.duration_max_s:
            raise ValueError("expected duration_min_s <= duration_median_s <= duration_max_s")
        return self


def make_config(**values: Any) -> SimulatorConfig:
    """A :class:`SimulatorConfig` from keyword values; a bad value is a ConfigError naming the field."""
    from pydantic import ValidationError

    try:
        return SimulatorConfig(**values)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, "synthetic")) from None


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _dirichlet(rng: np.random.Generator, alpha: float, size: tuple[int, int]) -> np.ndarray:
    """Rows on the simplex (gamma draws normalized; never an all-zero row)."""
    g = rng.standard_gamma(alpha, size=size) + 1e-12
    return g / g.sum(axis=1, keepdims=True)


def _categorical(rng: np.random.Generator, probs: np.ndarray) -> np.ndarray:
    """One index per row of ``probs`` (rows need not be normalized)."""
    cum = np.cumsum(probs, axis=1)
    r = rng.random(probs.shape[0])[:, None] * cum[:, -1:]
    return np.minimum((cum <= r).sum(axis=1), probs.shape[1] - 1)


class UserSimulator:
    """Users' latent interests and items' latent properties; answers "what would user u do if
    shown items i1..iK?" with sampled responses and the true expected affinity."""

    def __init__(self, config: SimulatorConfig, **state: np.ndarray):
        self.config = config
        missing = [k for k in STATE_ARRAYS if k not in state]
        if missing:
            raise ValueError(f"missing simulator state: {', '.join(missing)}")
        self.user_interest = np.asarray(state["user_interest"], dtype=np.float32)
        self.item_topics = np.asarray(state["item_topics"], dtype=np.float32)
        self.item_quality = np.asarray(state["item_quality"], dtype=np.float32)
        self.item_duration = np.asarray(state["item_duration"], dtype=np.float32)
        self.item_popularity = np.asarray(state["item_popularity"], dtype=np.float32)
        self.item_topic = np.asarray(state["item_topic"], dtype=np.int32)
        self.topic_transition = np.asarray(state["topic_transition"], dtype=np.float32)
        self._item_unit = self.item_topics / np.linalg.norm(self.item_topics, axis=1, keepdims=True)
        self._check_shapes("simulator")

    def _check_shapes(self, source: str) -> None:
        c = self.config
        expected = {
            "user_interest": (c.n_users, c.n_topics),
            "item_topics": (c.n_items, c.n_topics),
            "item_quality": (c.n_items,),
            "item_duration": (c.n_items,),
            "item_popularity": (c.n_items,),
            "item_topic": (c.n_items,),
            "topic_transition": (c.n_topics, c.n_topics),
        }
        for name, shape in expected.items():
            if getattr(self, name).shape != shape:
                raise DataError(
                    f"{source}: simulator field '{name}' has shape {getattr(self, name).shape}, expected {shape}"
                )

    @property
    def n_users(self) -> int:
        return self.config.n_users

    @property
    def n_items(self) -> int:
        return self.config.n_items

    def state_arrays(self) -> dict[str, np.ndarray]:
        return {k: getattr(self, k) for k in STATE_ARRAYS}

    # --- responses -----------------------------------------------------------------------------
    def affinity(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """(B, K) float32 in (0, 1): how much each user likes each item, from their current interests."""
        users, items = self._check_indices(users, items)
        return self._affinity(self.user_interest[users], items)

    def _affinity(self, interest: np.ndarray, items: np.ndarray) -> np.ndarray:
        c = self.config
        unit = interest / np.linalg.norm(interest, axis=1, keepdims=True)
        match = np.einsum("bt,bkt->bk", unit, self._item_unit[items])
        z = c.affinity_slope * (match - c.affinity_center) + c.quality_weight * self.item_quality[items]
        return _sigmoid(z).astype(np.float32)

    def respond(self, users: np.ndarray, items: np.ndarray, rng: np.random.Generator | None = None) -> dict:
        """Sampled responses of ``users`` (B,) to ``items`` (B, K): ``watch_time`` (seconds, at most
        the duration), ``watch_fraction``, ``disliked`` (bool) and ``affinity`` (the true expected
        value the responses are drawn around), each (B, K)."""
        users, items = self._check_indices(users, items)
        return self._respond(self.user_interest[users], items, rng or np.random.default_rng())

    def _respond(self, interest: np.ndarray, items: np.ndarray, rng: np.random.Generator) -> dict:
        c = self.config
        affinity = self._affinity(interest, items)
        duration = self.item_duration[items]
        expected = affinity * (duration / c.duration_median_s) ** (-c.duration_exponent)
        expected = np.clip(expected, 0.02, 0.98)
        fraction = rng.beta(expected * c.watch_concentration, (1.0 - expected) * c.watch_concentration)
        p_dislike = c.dislike_max * _sigmoid(c.dislike_sharpness * (c.dislike_threshold - affinity))
        disliked = rng.random(affinity.shape) < p_dislike
        fraction = np.where(disliked, fraction * rng.uniform(0.0, 0.3, affinity.shape), fraction)
        fraction = np.clip(fraction, 0.0, 1.0).astype(np.float32)
        return {
            "watch_time": (fraction * duration).astype(np.float32),
            "watch_fraction": fraction,
            "disliked": disliked,
            "affinity": affinity,
        }

    def _check_indices(self, users: np.ndarray, items: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        users = np.asarray(users)
        items = np.asarray(items)
        if users.ndim != 1 or items.ndim != 2 or items.shape[0] != users.shape[0]:
            raise ValueError(f"expected users (B,) and items (B, K), got {users.shape} and {items.shape}")
        if users.size and (users.min() < 0 or users.max() >= self.n_users):
            raise ValueError(f"user index out of range 0..{self.n_users - 1}")
        if items.size and (items.min() < 0 or items.max() >= self.n_items):
            raise ValueError(f"item index out of range 0..{self.n_items - 1}")
        return users.astype(np.int64), items.astype(np.int64)

    # --- persistence ---------------------------------------------------------------------------
    @classmethod
    def load(cls, data_dir: str | os.PathLike) -> UserSimulator:
        """The simulator saved beside a synthetic dataset (``DATA/simulator.npz`` and its config
        in ``DATA/dataset.json``)."""
        root = Path(data_dir).expanduser()
        info = read_dataset_info(root)
        path = root / SIMULATOR_FILE
        if "simulator" not in info or not path.is_file():
            raise DataError(
                f"{root}: this dataset has no user simulator ({SIMULATOR_FILE} and a 'simulator' entry in "
                f"{DATASET_FILE}); only `edgewise data rec synthetic` writes one"
            )
        from pydantic import ValidationError

        try:
            config = SimulatorConfig.model_validate(info["simulator"])
        except ValidationError as exc:
            raise DataError(format_validation_error(exc, f"{root / DATASET_FILE} simulator")) from None
        try:
            with np.load(path, allow_pickle=False) as npz:
                state = {k: npz[k] for k in npz.files}
        except (OSError, ValueError) as exc:
            raise DataError(f"{path}: cannot read: {exc}") from None
        missing = [k for k in STATE_ARRAYS if k not in state]
        if missing:
            raise DataError(f"{path}: field(s) {', '.join(missing)} missing")
        sim = cls.__new__(cls)
        sim.config = config
        for name in STATE_ARRAYS:
            setattr(sim, name, state[name])
        sim._check_shapes(str(path))
        sim._item_unit = sim.item_topics / np.linalg.norm(sim.item_topics, axis=1, keepdims=True)
        return sim


# --- the world ---------------------------------------------------------------------------------
def _category_name(topic: int) -> str:
    base = CATEGORY_NAMES[topic % len(CATEGORY_NAMES)]
    return base if topic < len(CATEGORY_NAMES) else f"{base} {topic // len(CATEGORY_NAMES) + 1}"


def _length_word(seconds: float) -> str:
    return "short" if seconds < 30 else "medium-length" if seconds < 180 else "long"


def _make_items(cfg: SimulatorConfig, rng: np.random.Generator) -> dict[str, np.ndarray]:
    topics = _dirichlet(rng, cfg.item_concentration, (cfg.n_items, cfg.n_topics))
    main = np.argmax(topics, axis=1).astype(np.int32)
    duration = np.exp(rng.normal(np.log(cfg.duration_median_s), cfg.duration_sigma, cfg.n_items))
    return {
        "item_topics": topics.astype(np.float32),
        "item_topic": main,
        "item_quality": rng.standard_normal(cfg.n_items).astype(np.float32),
        "item_duration": np.clip(duration, cfg.duration_min_s, cfg.duration_max_s).astype(np.float32),
        "item_popularity": np.exp(cfg.popularity_sigma * rng.standard_normal(cfg.n_items)).astype(np.float32),
        "topic_transition": _dirichlet(
            rng, cfg.transition_concentration, (cfg.n_topics, cfg.n_topics)
        ).astype(np.float32),
    }


class _Sampler:
    """Item draws without a users x items matrix: by topic (searchsorted over per-topic cumulative
    weights laid end to end), by global popularity, and "next in series" within a topic."""

    def __init__(self, cfg: SimulatorConfig, items: dict[str, np.ndarray]):
        topic = items["item_topic"].astype(np.int64)
        weight = items["item_popularity"].astype(np.float64) * np.exp(
            cfg.quality_weight * items["item_quality"].astype(np.float64)
        )
        self.order = np.lexsort((np.arange(len(topic)), topic))  # by topic, then id
        sorted_topic = topic[self.order]
        cum = np.cumsum(weight[self.order])
        starts = np.searchsorted(sorted_topic, np.arange(cfg.n_topics), side="left")
        ends = np.searchsorted(sorted_topic, np.arange(cfg.n_topics), side="right")
        self.has_items = ends > starts
        before = np.where(starts > 0, cum[np.maximum(starts - 1, 0)], 0.0)
        total = np.where(self.has_items, cum[np.maximum(ends - 1, 0)] - before, 1.0)
        self.key = sorted_topic + (cum - before[sorted_topic]) / total[sorted_topic]
        self.key[ends[self.has_items] - 1] = np.flatnonzero(self.has_items) + 1.0  # exact upper ends
        transition = items["topic_transition"].astype(np.float64)
        row_cum = np.cumsum(transition, axis=1)
        self.transition_key = (np.arange(cfg.n_topics)[:, None] + row_cum / row_cum[:, -1:]).ravel()
        self.n_topics = cfg.n_topics
        pop = np.cumsum(items["item_popularity"].astype(np.float64))
        self.pop_cum = pop / pop[-1]
        # the next item of the same topic in id order (wrapping): a "series"
        nxt = np.empty(len(topic), dtype=np.int64)
        pos = np.arange(len(topic))
        following = np.where(pos + 1 < ends[sorted_topic], pos + 1, starts[sorted_topic])
        nxt[self.order] = self.order[following]
        self.next_in_series = nxt

    def by_topic(self, rng: np.random.Generator, z: np.ndarray) -> np.ndarray:
        r = np.minimum(rng.random(z.shape[0]), 1.0 - 1e-9)
        idx = np.searchsorted(self.key, z + r, side="right")
        return self.order[np.minimum(idx, len(self.order) - 1)]

    def next_topic(self, rng: np.random.Generator, previous: np.ndarray) -> np.ndarray:
        """A topic drawn from the transition row of each previous topic."""
        r = np.minimum(rng.random(previous.shape[0]), 1.0 - 1e-9)
        idx = np.searchsorted(self.transition_key, previous + r, side="right")
        return np.minimum(idx - previous * self.n_topics, self.n_topics - 1)

    def by_popularity(self, rng: np.random.Generator, n: int) -> np.ndarray:
        idx = np.searchsorted(self.pop_cum, rng.random(n), side="right")
        return np.minimum(idx, len(self.pop_cum) - 1)


def generate_synthetic(
    cfg: SimulatorConfig | None = None, *, progress: bool = False
) -> tuple[RecDataset, UserSimulator]:
    """A synthetic dataset (watch_time, disliked, item_duration, item titles and categories) and
    the simulator that produced it. The same config (seed included) gives identical results."""
    cfg = cfg or SimulatorConfig()
    started = time.perf_counter()
    rng = np.random.default_rng([cfg.seed, 0])
    items = _make_items(cfg, rng)
    sampler = _Sampler(cfg, items)
    lengths = rng.integers(cfg.min_history, cfg.max_history + 1, size=cfg.n_users)
    n_rows = int(lengths.sum())
    out = {
        "user": np.empty(n_rows, np.int32),
        "item": np.empty(n_rows, np.int32),
        "timestamp": np.empty(n_rows, np.int64),
        "watch_time": np.empty(n_rows, np.float32),
        "disliked": np.empty(n_rows, np.bool_),
    }
    interest = np.empty((cfg.n_users, cfg.n_topics), np.float32)
    sim = UserSimulator(cfg, user_interest=interest, **items)  # interest is filled chunk by chunk
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    n_chunks = -(-cfg.n_users // cfg.chunk_users)
    for k in range(n_chunks):
        lo, hi = k * cfg.chunk_users, min(cfg.n_users, (k + 1) * cfg.chunk_users)
        chunk = _generate_chunk(cfg, sim, sampler, lengths[lo:hi], np.random.default_rng([cfg.seed, 1, k]))
        interest[lo:hi] = chunk.pop("interest")
        for name, values in chunk.items():
            out[name][offsets[lo] : offsets[hi]] = values
        out["user"][offsets[lo] : offsets[hi]] += lo
        if progress:
            log.info("synthetic: %d/%d users", hi, cfg.n_users)
    item_fields = _item_fields(cfg, items)
    meta = {
        "source": "synthetic",
        "licence": "generated by edgewise's user simulator; no third-party data",
        "config": cfg.model_dump(),
        "cleaning": {"rows_read": n_rows, "bad_rows_skipped": 0, "duplicates_dropped": 0, "out_of_order": 0},
        "generation_seconds": round(time.perf_counter() - started, 3),
    }
    ds = RecDataset(
        user_ids=[f"u{u}" for u in range(cfg.n_users)],
        item_ids=[f"i{i}" for i in range(cfg.n_items)],
        item_duration=items["item_duration"],
        item_fields=item_fields,
        meta=meta,
        **out,
    )
    return ds, sim


def _item_fields(cfg: SimulatorConfig, items: dict[str, np.ndarray]) -> dict[str, list[str]]:
    topic, duration = items["item_topic"], items["item_duration"]
    titles = [f"topic-{int(z)} clip {i}" for i, z in enumerate(topic)]
    categories = [_category_name(int(z)) for z in topic]
    descriptions = [
        f"A {_length_word(float(d))} {c} clip of {int(round(float(d)))} seconds."
        for c, d in zip(categories, duration)
    ]
    return {"title": titles, "category": categories, "description": descriptions}


def _generate_chunk(
    cfg: SimulatorConfig, sim: UserSimulator, sampler: _Sampler, lengths: np.ndarray, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """Histories of one chunk of users, step by step over positions; rows user-major, time order."""
    n, steps = len(lengths), int(lengths.max())
    start = _dirichlet(rng, cfg.user_concentration, (n, cfg.n_topics)).astype(np.float32)
    end = _dirichlet(rng, cfg.user_concentration, (n, cfg.n_topics)).astype(np.float32)
    delta = end - start
    span = np.maximum(lengths - 1, 1).astype(np.float32)
    item = np.zeros((n, steps), np.int32)
    watch = np.zeros((n, steps), np.float32)
    disliked = np.zeros((n, steps), np.bool_)
    first = cfg.start_time + rng.integers(0, 30 * 86400, size=n)
    gaps = np.maximum(1, rng.exponential(cfg.mean_gap_s, size=(n, steps))).astype(np.int64)
    gaps[:, 0] = first
    timestamp = np.cumsum(gaps, axis=1)
    prev = np.zeros(n, np.int64)
    for t in range(steps):
        w = (np.float32(cfg.drift) * np.minimum(t / span, np.float32(1.0)))[:, None]
        interest = start + w * delta
        if t == 0:
            z = _categorical(rng, interest)
        else:  # the previous item's topic leads (sparse transitions), or the user's interests do
            follow = rng.random(n) < cfg.topic_follow
            z = np.empty(n, np.int64)
            z[follow] = sampler.next_topic(rng, sim.item_topic[prev[follow]].astype(np.int64))
            z[~follow] = _categorical(rng, interest[~follow])
        chosen = sampler.by_topic(rng, z)
        popular = (rng.random(n) < cfg.popularity_bias) | ~sampler.has_items[z]
        chosen = np.where(popular, sampler.by_popularity(rng, n), chosen)
        if t > 0:
            series = rng.random(n) < cfg.series_continue
            chosen = np.where(series, sampler.next_in_series[prev], chosen)
        response = sim._respond(interest, chosen[:, None], rng)
        item[:, t] = chosen
        watch[:, t] = response["watch_time"][:, 0]
        disliked[:, t] = response["disliked"][:, 0]
        prev = chosen
    valid = np.arange(steps)[None, :] < lengths[:, None]
    users = np.broadcast_to(np.arange(n, dtype=np.int32)[:, None], (n, steps))
    return {
        "user": users[valid],
        "item": item[valid],
        "timestamp": timestamp[valid],
        "watch_time": watch[valid],
        "disliked": disliked[valid],
        "interest": ((1.0 - cfg.drift) * start + cfg.drift * end).astype(np.float32),
    }


def simulator_summary(sim: UserSimulator) -> dict[str, Any]:
    """A few numbers about the simulated world (for the CLI's JSON summary)."""
    d = sim.item_duration
    return {
        "topics": sim.config.n_topics,
        "duration_s": {"median": round(float(np.median(d)), 1), "min": float(d.min()), "max": float(d.max())},
        "seed": sim.config.seed,
    }


__all__ = ["SimulatorConfig", "UserSimulator", "generate_synthetic", "make_config", "simulator_summary"]
