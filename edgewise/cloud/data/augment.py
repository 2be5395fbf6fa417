"""Waveform augmentation in numpy: additive noise at an SNR, gain, speed perturbation.

Every random choice comes from the ``numpy.random.Generator`` the caller passes in, so a seeded
generator gives the same output bytes on every run. The synthesizer uses :func:`add_noise` for
its default background noise and :func:`augment` for the extra training copies that
``--augment`` asks for.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgewise.audio import resample

NOISE_COLORS = ("white", "pink")
AUGMENTATIONS = ("noise", "gain", "speed")


@dataclass(frozen=True)
class AugmentSettings:
    """Ranges the random augmentation parameters are drawn from."""

    noise_snr_db: tuple[float, float] = (5.0, 20.0)
    gain_db: tuple[float, float] = (-6.0, 6.0)
    speed_factors: tuple[float, ...] = (0.9, 1.1)


def signal_power(audio: np.ndarray) -> float:
    """Mean square of the samples."""
    return float(np.mean(np.square(audio, dtype=np.float64)))


def colored_noise(n: int, color: str, rng: np.random.Generator) -> np.ndarray:
    """``n`` samples of white or pink (1/f power) noise with mean power exactly 1."""
    if color not in NOISE_COLORS:
        raise ValueError(f"unknown noise color {color!r}; expected one of {', '.join(NOISE_COLORS)}")
    noise = rng.standard_normal(n)
    if color == "pink":
        spec = np.fft.rfft(noise)
        freqs = np.arange(spec.shape[0], dtype=np.float64)
        freqs[0] = 1.0
        spec /= np.sqrt(freqs)
        spec[0] = 0.0
        noise = np.fft.irfft(spec, n=n)
    noise -= noise.mean()
    return noise / np.sqrt(np.mean(noise**2))


def add_noise(audio: np.ndarray, snr_db: float, rng: np.random.Generator, color: str = "white") -> np.ndarray:
    """``audio`` plus noise whose power is ``snr_db`` below the power of the whole signal."""
    power = signal_power(audio)
    if power == 0.0:
        raise ValueError("cannot set an SNR against a silent signal")
    noise = colored_noise(audio.shape[0], color, rng) * np.sqrt(power / 10.0 ** (snr_db / 10.0))
    return (audio + noise).astype(np.float32)


def apply_gain(audio: np.ndarray, gain_db: float) -> np.ndarray:
    """``audio`` scaled by ``gain_db`` decibels (no clipping here; the wav writer clips)."""
    return (audio * 10.0 ** (gain_db / 20.0)).astype(np.float32)


def speed_perturb(audio: np.ndarray, factor: float, sample_rate: int = 16000) -> np.ndarray:
    """Play ``audio`` ``factor`` times faster (tempo and pitch together, as Kaldi's speed perturbation).

    The signal is resampled as if it had been recorded at ``factor * sample_rate``, so its length
    becomes ``len / factor``.
    """
    if factor <= 0:
        raise ValueError(f"speed factor must be positive, got {factor}")
    return resample(audio, int(round(sample_rate * factor)), sample_rate)


def augment(
    audio: np.ndarray,
    kind: str,
    rng: np.random.Generator,
    settings: AugmentSettings = AugmentSettings(),  # noqa: B008 - frozen, never mutated
    sample_rate: int = 16000,
) -> tuple[np.ndarray, str]:
    """One augmented copy of ``audio`` and a short note of the parameter drawn (for the manifest)."""
    if kind == "noise":
        snr = float(rng.uniform(*settings.noise_snr_db))
        color = NOISE_COLORS[int(rng.integers(len(NOISE_COLORS)))]
        return add_noise(audio, snr, rng, color), f"{color} snr={snr:.1f}dB"
    if kind == "gain":
        gain = float(rng.uniform(*settings.gain_db))
        return apply_gain(audio, gain), f"gain={gain:+.1f}dB"
    if kind == "speed":
        factor = float(settings.speed_factors[int(rng.integers(len(settings.speed_factors)))])
        return speed_perturb(audio, factor, sample_rate), f"speed={factor:g}"
    raise ValueError(f"unknown augmentation {kind!r}; expected one of {', '.join(AUGMENTATIONS)}")


def parse_augmentations(text: str) -> tuple[str, ...]:
    """``"noise,gain"`` -> ``("noise", "gain")``; an unknown name is a ValueError naming the choices."""
    kinds = tuple(dict.fromkeys(k.strip() for k in text.split(",") if k.strip()))
    unknown = [k for k in kinds if k not in AUGMENTATIONS]
    if unknown:
        raise ValueError(
            f"unknown augmentation(s) {', '.join(unknown)}; expected a comma-separated list of "
            f"{', '.join(AUGMENTATIONS)}"
        )
    return kinds
