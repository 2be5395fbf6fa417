"""The log-mel front-end, implemented once in numpy and shared by training and the edge runtime.

Its parameters (:class:`LogMelConfig`) travel with every model: the trainer records them in the
run, export copies them into the bundle manifest, and the edge runtime rebuilds the very same
front-end from them. This module never imports torch.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from functools import lru_cache
from typing import Any

import numpy as np

from edgewise.errors import ConfigError


@dataclass(frozen=True)
class LogMelConfig:
    """Log-mel spectrogram parameters plus the per-bin normalization fitted on the training split."""

    sample_rate: int = 16000
    n_fft: int = 512
    win_length: int = 400  # 25 ms
    hop_length: int = 160  # 10 ms
    n_mels: int = 64
    f_min: float = 20.0
    f_max: float = 8000.0
    log_offset: float = 1e-6
    mean: tuple[float, ...] | None = field(default=None, compare=True)
    std: tuple[float, ...] | None = field(default=None, compare=True)

    def __post_init__(self) -> None:
        if self.n_fft % 2:
            raise ConfigError(f"features: n_fft must be even, got {self.n_fft}")
        if self.win_length > self.n_fft:
            raise ConfigError(f"features: win_length {self.win_length} exceeds n_fft {self.n_fft}")
        if not 0 <= self.f_min < self.f_max <= self.sample_rate / 2:
            raise ConfigError(
                f"features: need 0 <= f_min < f_max <= sample_rate/2, got {self.f_min}, {self.f_max}"
            )
        for name in ("mean", "std"):
            value = getattr(self, name)
            if value is not None and len(value) != self.n_mels:
                raise ConfigError(
                    f"features: '{name}' has {len(value)} values, expected n_mels={self.n_mels}"
                )

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for name in ("mean", "std"):
            if data[name] is not None:
                data[name] = list(data[name])
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LogMelConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"features: unknown field(s) {unknown}; expected some of {sorted(known)}")
        values = dict(data)
        for name in ("mean", "std"):
            if values.get(name) is not None:
                values[name] = tuple(float(v) for v in values[name])
        return cls(**values)

    def without_stats(self) -> LogMelConfig:
        return LogMelConfig(**{**self.to_dict(), "mean": None, "std": None})

    def with_stats(self, mean: np.ndarray, std: np.ndarray) -> LogMelConfig:
        return LogMelConfig(
            **{**self.to_dict(), "mean": tuple(map(float, mean)), "std": tuple(map(float, std))}
        )

    @property
    def frames_per_second(self) -> float:
        return self.sample_rate / self.hop_length


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    """Slaney's mel scale: linear below 1 kHz, logarithmic above (librosa's default)."""
    hz = np.asarray(hz, dtype=np.float64)
    f_sp = 200.0 / 3
    mel = hz / f_sp
    min_log_hz, min_log_mel, logstep = 1000.0, 1000.0 / f_sp, np.log(6.4) / 27.0
    return np.where(hz >= min_log_hz, min_log_mel + np.log(np.maximum(hz, 1e-10) / min_log_hz) / logstep, mel)


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    mel = np.asarray(mel, dtype=np.float64)
    f_sp = 200.0 / 3
    min_log_hz, min_log_mel, logstep = 1000.0, 1000.0 / f_sp, np.log(6.4) / 27.0
    return np.where(mel >= min_log_mel, min_log_hz * np.exp(logstep * (mel - min_log_mel)), f_sp * mel)


@lru_cache(maxsize=8)
def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, f_min: float, f_max: float) -> np.ndarray:
    """Slaney-normalized triangular filters, shape (n_mels, n_fft // 2 + 1)."""
    fft_freqs = np.linspace(0.0, sample_rate / 2, n_fft // 2 + 1)
    mel_points = np.linspace(_hz_to_mel(f_min), _hz_to_mel(f_max), n_mels + 2)
    hz_points = _mel_to_hz(mel_points)
    widths = np.diff(hz_points)
    ramps = hz_points[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / widths[:-1, None]
    upper = ramps[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    weights *= (2.0 / (hz_points[2 : n_mels + 2] - hz_points[:n_mels]))[:, None]
    weights.setflags(write=False)
    return weights


@lru_cache(maxsize=8)
def _window(n_fft: int, win_length: int) -> np.ndarray:
    win = np.zeros(n_fft)
    start = (n_fft - win_length) // 2
    win[start : start + win_length] = np.hanning(win_length + 1)[:-1]  # periodic Hann
    win.setflags(write=False)
    return win


def log_mel(audio: np.ndarray, cfg: LogMelConfig, *, normalize: bool = True) -> np.ndarray:
    """Log-mel features of mono float audio, shape (frames, n_mels), float32.

    Frames are centred (reflect padding of n_fft // 2), so there are ``1 + len(audio) // hop``
    frames. With ``normalize`` and fitted stats, each bin is standardized with the training mean/std.
    """
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim != 1:
        raise ValueError(f"log_mel expects 1-D mono audio, got shape {audio.shape}")
    pad = cfg.n_fft // 2
    mode = "reflect" if audio.shape[0] > pad else "constant"
    padded = np.pad(audio, pad, mode=mode)
    frames = np.lib.stride_tricks.sliding_window_view(padded, cfg.n_fft)[:: cfg.hop_length]
    spec = np.fft.rfft(frames * _window(cfg.n_fft, cfg.win_length), axis=-1)
    power = spec.real**2 + spec.imag**2
    mel = power @ mel_filterbank(cfg.sample_rate, cfg.n_fft, cfg.n_mels, cfg.f_min, cfg.f_max).T
    feats = np.log(mel + cfg.log_offset).astype(np.float32)
    return normalize_features(feats, cfg) if normalize else feats


def normalize_features(feats: np.ndarray, cfg: LogMelConfig) -> np.ndarray:
    """Standardize each mel bin with the training mean/std recorded in ``cfg`` (no-op without stats)."""
    if cfg.mean is None or cfg.std is None:
        return feats
    return (feats - np.asarray(cfg.mean, dtype=np.float32)) / np.asarray(cfg.std, dtype=np.float32)


def num_frames(num_samples: int, cfg: LogMelConfig) -> int:
    return 1 + num_samples // cfg.hop_length
