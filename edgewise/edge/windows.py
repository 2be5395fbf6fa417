"""Fitting utterances to models that limit their time axis, and averaging the pieces' logits.

Two kinds of limit, one policy:

* :class:`WindowSpec`: a fixed window of ``frames`` frames (TFLite, which cannot take a dynamic time
  axis). Built from ``--window-seconds`` with :meth:`WindowSpec.from_seconds`, it holds exactly the
  frames the front-end makes from that many seconds of audio (``1 + samples // hop``: a 3 s clip
  is 301 frames and fits one 301-frame window).
* :class:`FrameRange`: a dynamic time axis limited to ``[min_frames, max_frames]`` (a TensorRT
  engine's optimization profile). Utterances inside the range run as they are.

For both, and in the export parity gate (on the PyTorch side and the artifact side) as on the
device, so the device computes exactly what was checked:

* an utterance shorter than the minimum is tiled (repeated from its start) up to the minimum;
  repeating keeps the per-frame statistics that mean pooling sees, where zero padding dilutes them
  (measured on the tiny SER model: UA unchanged with tiling, 3 points lower with zero padding at a
  4 s window);
* a longer utterance than the maximum is cut into pieces of the maximum every ``hop`` frames, the
  last one aligned to the utterance's end, and the logits of the pieces are averaged.

numpy only: the edge runtime imports this module.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import numpy as np

from edgewise.errors import ConfigError
from edgewise.features import LogMelConfig, num_frames

POLICY = "tile-short, hop-long, mean-logits"


def _starts(total: int, size: int, hop: int) -> list[int]:
    """Piece starts every ``hop`` frames, plus one aligned to the end when the hops miss it."""
    starts = list(range(0, total - size + 1, hop))
    if starts[-1] != total - size:
        starts.append(total - size)
    return starts


def fit_frames(features: np.ndarray, min_frames: int, max_frames: int, hop: int) -> np.ndarray:
    """(time, n_mels) -> (pieces, frames, n_mels) with min_frames <= frames <= max_frames.

    Shorter than ``min_frames``: one piece, tiled up to ``min_frames``. In range: one piece, as it
    is. Longer than ``max_frames``: pieces of ``max_frames`` every ``hop``, the last at the end.
    """
    if features.ndim != 2 or features.shape[0] < 1:
        raise ValueError(f"expected (time >= 1, n_mels) features, got shape {features.shape}")
    total = features.shape[0]
    if total < min_frames:
        reps = -(-min_frames // total)
        return np.tile(features, (reps, 1))[:min_frames][None]
    if total <= max_frames:
        return features[None]
    return np.stack([features[s : s + max_frames] for s in _starts(total, max_frames, hop)])


class Splitter(Protocol):
    def split(self, features: np.ndarray) -> np.ndarray: ...


@dataclass(frozen=True)
class WindowSpec:
    """A fixed window of ``frames`` feature frames, taken every ``hop`` frames."""

    frames: int
    hop: int

    def __post_init__(self) -> None:
        if self.frames < 2:
            raise ConfigError(f"window: frames must be at least 2, got {self.frames}")
        if not 1 <= self.hop <= self.frames:
            raise ConfigError(f"window: hop must be between 1 and frames ({self.frames}), got {self.hop}")

    @classmethod
    def from_seconds(cls, seconds: float, features: LogMelConfig) -> WindowSpec:
        """The window that holds exactly the frames ``features`` makes from ``seconds`` of audio."""
        if not seconds > 0:
            raise ConfigError(f"window: seconds must be positive, got {seconds}")
        frames = num_frames(round(seconds * features.sample_rate), features)
        return cls(frames=frames, hop=max(1, frames // 2))

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "window") -> WindowSpec:
        try:
            return cls(frames=int(data["frames"]), hop=int(data["hop"]))
        except (KeyError, TypeError, ValueError):
            raise ConfigError(f"{where}: expected {{frames: int, hop: int}}, got {data!r}") from None

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "policy": POLICY}

    def split(self, features: np.ndarray) -> np.ndarray:
        return fit_frames(features, self.frames, self.frames, self.hop)


@dataclass(frozen=True)
class FrameRange:
    """A dynamic time axis limited to ``[min_frames, max_frames]``; longer input in ``hop`` steps."""

    min_frames: int
    max_frames: int
    hop: int

    def __post_init__(self) -> None:
        if not 1 <= self.min_frames <= self.max_frames:
            raise ConfigError(
                f"frame range: expected 1 <= min_frames <= max_frames, got {self.min_frames}, {self.max_frames}"
            )
        if not 1 <= self.hop <= self.max_frames:
            raise ConfigError(
                f"frame range: hop must be between 1 and max_frames ({self.max_frames}), got {self.hop}"
            )

    @classmethod
    def halving(cls, min_frames: int, max_frames: int) -> FrameRange:
        """Pieces of ``max_frames`` every ``max_frames // 2``, as fixed windows are taken."""
        return cls(min_frames, max_frames, max(1, max_frames // 2))

    def split(self, features: np.ndarray) -> np.ndarray:
        return fit_frames(features, self.min_frames, self.max_frames, self.hop)


def split_windows(features: np.ndarray, spec: Splitter) -> np.ndarray:
    """(time, n_mels) -> (n_pieces, frames, n_mels) following the module's policy."""
    return spec.split(features)


def run_windowed(run: Callable[[np.ndarray], np.ndarray], features: np.ndarray, spec: Splitter) -> np.ndarray:
    """Run a model ((1, frames, n_mels) -> (1, classes)) on the pieces of each utterance of a batch.

    ``features`` is (batch, time, n_mels); returns (batch, classes), each row the mean of the
    utterance's piece logits. ``spec`` is a :class:`WindowSpec` or a :class:`FrameRange`.
    """
    rows = []
    for utterance in np.asarray(features, dtype=np.float32):
        pieces = spec.split(utterance)
        logits = [np.asarray(run(np.ascontiguousarray(p[None])), dtype=np.float32) for p in pieces]
        rows.append(np.concatenate(logits).mean(axis=0))
    return np.stack(rows)
