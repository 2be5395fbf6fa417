"""Fixed input windows for artifacts that cannot take a dynamic time axis (TFLite).

One policy, used by the export parity gate (on the PyTorch side and the artifact side) and by the
edge runtime, so the device computes exactly what was checked:

* an utterance of at most ``frames`` frames is tiled (repeated from its start) to fill the window;
  repeating keeps the per-frame statistics that mean pooling sees, where zero padding dilutes them
  (measured on the tiny SER model: UA unchanged with tiling, 3 points lower with zero padding at a
  4 s window);
* a longer utterance is cut into windows of ``frames`` frames every ``hop`` frames, the last one
  aligned to the utterance's end, and the logits of the windows are averaged.

numpy only: the edge runtime imports this module.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from edgewise.errors import ConfigError

POLICY = "tile-short, hop-long, mean-logits"


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
    def from_seconds(cls, seconds: float, hop_length: int, sample_rate: int) -> WindowSpec:
        frames = round(seconds * sample_rate / hop_length)
        return cls(frames=frames, hop=max(1, frames // 2))

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "window") -> WindowSpec:
        try:
            return cls(frames=int(data["frames"]), hop=int(data["hop"]))
        except (KeyError, TypeError, ValueError):
            raise ConfigError(f"{where}: expected {{frames: int, hop: int}}, got {data!r}") from None

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "policy": POLICY}


def split_windows(features: np.ndarray, spec: WindowSpec) -> np.ndarray:
    """(time, n_mels) -> (n_windows, spec.frames, n_mels) following the module's policy."""
    if features.ndim != 2 or features.shape[0] < 1:
        raise ValueError(f"expected (time >= 1, n_mels) features, got shape {features.shape}")
    total = features.shape[0]
    if total <= spec.frames:
        reps = -(-spec.frames // total)
        return np.tile(features, (reps, 1))[: spec.frames][None]
    starts = list(range(0, total - spec.frames + 1, spec.hop))
    if starts[-1] != total - spec.frames:
        starts.append(total - spec.frames)
    return np.stack([features[s : s + spec.frames] for s in starts])


def run_windowed(
    run: Callable[[np.ndarray], np.ndarray], features: np.ndarray, spec: WindowSpec
) -> np.ndarray:
    """Run a fixed-shape model ((1, frames, n_mels) -> (1, classes)) on each utterance of a batch.

    ``features`` is (batch, time, n_mels); returns (batch, classes), each row the mean of the
    utterance's window logits.
    """
    rows = []
    for utterance in np.asarray(features, dtype=np.float32):
        windows = split_windows(utterance, spec)
        logits = [np.asarray(run(np.ascontiguousarray(w[None])), dtype=np.float32) for w in windows]
        rows.append(np.concatenate(logits).mean(axis=0))
    return np.stack(rows)
