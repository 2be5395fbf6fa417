"""Speaker-adaptive SER: per-speaker running statistics and the head that reads them (numpy only).

Most of what one utterance of the synthesized corpus cannot tell apart is the speaker's own
baseline (their pitch, level and tempo): the same features z-scored within each speaker separate
the emotions far better. A device hears the same people again and again, so it can learn each
speaker's baseline as utterances arrive. This module is the contract between the cloud, which fits
the head (:mod:`edgewise.cloud.train.speaker_adapter`), and the device, which runs it
(:mod:`edgewise.edge.adaptation`):

* the features of one utterance are the prosodic functionals (:mod:`edgewise.prosody`) next to the
  SER model's own logits, scaled by the training set's mean and standard deviation (so the
  population's statistics are 0 and 1);
* :class:`SpeakerStats` keeps a speaker's count, sum and sum of squares of those features, with a
  forgetting horizon (older utterances weigh less once ``horizon`` are counted);
* an utterance is normalized with its speaker's statistics *including itself*, each shrunk towards
  the population by ``prior_weight`` pseudo-utterances: with nothing heard the features are the
  population-scaled ones, and the estimate converges to the speaker's own as utterances arrive;
* a linear head (multinomial logistic regression) maps the normalized features, plus the
  reliability ``count / (count + prior_weight)``, to the class scores. It is fitted on the training
  speakers with every number of utterances heard simulated, so it is right at 0 heard and at 20.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgewise import prosody

FORMAT = "edgewise-speaker-adapter/1"
VAR_FLOOR = 1e-4


def normalize(
    x: np.ndarray, count: float, total: np.ndarray, total_sq: np.ndarray, prior_weight: float
) -> tuple[np.ndarray, float]:
    """Scaled features ``x`` (D,) normalized by a speaker's statistics that already include ``x``.

    ``count``, ``total`` and ``total_sq`` are the (decayed) count, sum and sum of squares; the
    population's mean 0 and variance 1 count as ``prior_weight`` utterances. Returns the normalized
    features and the reliability ``count / (count + prior_weight)``.
    """
    weight = count + prior_weight
    mean = total / weight
    var = (total_sq + prior_weight) / weight - mean**2
    return (x - mean) / np.sqrt(np.maximum(var, VAR_FLOOR)), count / weight


@dataclass
class SpeakerStats:
    """One speaker's running count, sum and sum of squares of the scaled features."""

    count: float = 0.0
    total: np.ndarray | None = None
    total_sq: np.ndarray | None = None
    heard: int = 0  # utterances ever heard (not decayed)
    last_seen: float = 0.0

    def add(self, x: np.ndarray, horizon: float) -> None:
        """Count ``x``; past ``horizon`` utterances the old ones are scaled down so the effective
        count stays at ``horizon`` (an exponential forgetting with time constant ``horizon``)."""
        if self.total is None:
            self.total, self.total_sq = np.zeros_like(x), np.zeros_like(x)
        if self.count + 1 > horizon:
            keep = (horizon - 1) / self.count if self.count > 0 else 0.0
            self.count *= keep
            self.total = self.total * keep
            self.total_sq = self.total_sq * keep
        self.count += 1.0
        self.total = self.total + x
        self.total_sq = self.total_sq + x**2
        self.heard += 1

    def to_json(self) -> dict[str, Any]:
        return {
            "count": self.count,
            "total": [] if self.total is None else self.total.tolist(),
            "total_sq": [] if self.total_sq is None else self.total_sq.tolist(),
            "heard": self.heard,
            "last_seen": self.last_seen,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any], dim: int, where: str) -> SpeakerStats:
        total, total_sq = data.get("total") or [], data.get("total_sq") or []
        if len(total) != len(total_sq) or (total and len(total) != dim):
            raise ValueError(f"{where}: statistics of {len(total)} features, the head reads {dim}")
        stats = cls(
            count=float(data["count"]),
            heard=int(data.get("heard", 0)),
            last_seen=float(data.get("last_seen", 0.0)),
        )
        if total:
            stats.total, stats.total_sq = np.asarray(total, float), np.asarray(total_sq, float)
        if not (np.isfinite(stats.count) and stats.count >= 0):
            raise ValueError(f"{where}: count must be a non-negative number, got {data['count']!r}")
        return stats


@dataclass
class AdapterHead:
    """The fitted part, shipped in the bundle: scaling, prior weight and the linear head."""

    labels: list[str]
    scale_mean: np.ndarray  # (D,)
    scale_std: np.ndarray  # (D,)
    weights: np.ndarray  # (C, D + 1): the last column reads the reliability
    bias: np.ndarray  # (C,)
    prior_weight: float = 3.0
    prosody_version: int = prosody.VERSION
    fitted: dict[str, Any] = field(default_factory=dict)  # what it was fitted on, for provenance

    @property
    def feature_names(self) -> list[str]:
        return [*prosody.NAMES, *(f"logit_{label}" for label in self.labels)]

    @property
    def dim(self) -> int:
        return len(self.scale_mean)

    def features(self, audio: np.ndarray, logits: np.ndarray, sample_rate: int) -> np.ndarray:
        """The scaled features of one utterance: prosody of ``audio`` and the model's ``logits``."""
        raw = np.concatenate([prosody.prosody_features(audio, sample_rate), np.asarray(logits, float)])
        return (raw - self.scale_mean) / self.scale_std

    def scores(self, normalized: np.ndarray, reliability: float) -> np.ndarray:
        return self.weights @ np.append(normalized, reliability) + self.bias

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "labels": list(self.labels),
            "features": self.feature_names,
            "prosody_version": self.prosody_version,
            "prior_weight": self.prior_weight,
            "scale_mean": self.scale_mean.tolist(),
            "scale_std": self.scale_std.tolist(),
            "weights": self.weights.tolist(),
            "bias": self.bias.tolist(),
            "fitted": self.fitted,
        }

    def save(self, path: Path) -> Path:
        path.write_text(json.dumps(self.to_json()) + "\n")
        return path

    @classmethod
    def from_json(cls, data: Any, where: str) -> AdapterHead:
        """Checked: the format, the prosody version this code computes, and every shape."""
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            got = data.get("format") if isinstance(data, dict) else type(data).__name__
            raise ValueError(f"{where}: format must be {FORMAT!r}, got {got!r}")
        if data.get("prosody_version") != prosody.VERSION:
            raise ValueError(
                f"{where}: fitted on prosody features version {data.get('prosody_version')!r}, "
                f"this edgewise computes version {prosody.VERSION}; fit the adapter again"
            )
        try:
            head = cls(
                labels=[str(x) for x in data["labels"]],
                scale_mean=np.asarray(data["scale_mean"], float),
                scale_std=np.asarray(data["scale_std"], float),
                weights=np.asarray(data["weights"], float),
                bias=np.asarray(data["bias"], float),
                prior_weight=float(data["prior_weight"]),
                fitted=dict(data.get("fitted") or {}),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{where}: {type(exc).__name__}: {exc}") from None
        dim, n_classes = len(prosody.NAMES) + len(head.labels), len(head.labels)
        shapes = {
            "scale_mean": (head.scale_mean.shape, (dim,)),
            "scale_std": (head.scale_std.shape, (dim,)),
            "weights": (head.weights.shape, (n_classes, dim + 1)),
            "bias": (head.bias.shape, (n_classes,)),
        }
        for name, (got, expected) in shapes.items():
            if got != expected:
                raise ValueError(f"{where}: {name} has shape {got}, expected {expected}")
        if not (head.scale_std > 0).all() or head.prior_weight <= 0:
            raise ValueError(f"{where}: scale_std and prior_weight must be positive")
        return head

    @classmethod
    def load(cls, path: Path) -> AdapterHead:
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"{path}: cannot read the speaker adapter: {exc}") from None
        return cls.from_json(data, str(path))


def simulate_heard(
    scaled: np.ndarray,
    speakers: np.ndarray,
    prior_weight: float,
    rng: np.random.Generator,
    draws: int = 6,
    counts: tuple[int, ...] = (0, 1, 2, 3, 5, 8, 12, 20),
) -> tuple[np.ndarray, np.ndarray]:
    """Training rows for the head: for each speaker, ``draws`` times, pick how many of their
    utterances were heard before, and normalize each remaining one as the device would (its
    speaker's statistics over the heard ones plus itself). Returns (rows (N, D + 1), row index)."""
    rows, index = [], []
    for speaker in np.unique(speakers):
        mine = np.flatnonzero(speakers == speaker)
        for _ in range(draws):
            n = int(rng.choice(counts))
            order = rng.permutation(mine)
            heard, rest = order[:n], order[n:]
            total, total_sq = scaled[heard].sum(0), (scaled[heard] ** 2).sum(0)
            for i in rest:
                z, reliability = normalize(
                    scaled[i], n + 1.0, total + scaled[i], total_sq + scaled[i] ** 2, prior_weight
                )
                rows.append(np.append(z, reliability))
                index.append(i)
    return np.asarray(rows), np.asarray(index)
