"""Augmentation: the SNR, gain and speed asked for are the ones delivered, deterministically."""

from __future__ import annotations

import numpy as np
import pytest

from edgewise.cloud.data.augment import (
    add_noise,
    apply_gain,
    augment,
    colored_noise,
    parse_augmentations,
    speed_perturb,
)

SR = 16000


def speechlike(seconds: float = 1.0) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 3 * t) ** 2
    return (0.3 * envelope * np.sin(2 * np.pi * 180 * t)).astype(np.float32)


def measured_snr(clean: np.ndarray, noisy: np.ndarray) -> float:
    noise = noisy.astype(np.float64) - clean
    return 10 * np.log10(np.mean(clean.astype(np.float64) ** 2) / np.mean(noise**2))


@pytest.mark.parametrize("color", ["white", "pink"])
@pytest.mark.parametrize("snr", [0.0, 10.0, 25.0])
def test_noise_is_added_at_the_requested_snr(color, snr):
    clean = speechlike()
    noisy = add_noise(clean, snr, np.random.default_rng(1), color)
    assert noisy.dtype == np.float32 and noisy.shape == clean.shape
    assert measured_snr(clean, noisy) == pytest.approx(snr, abs=0.5)


def test_pink_noise_has_more_low_than_high_frequency_power():
    noise = colored_noise(SR * 4, "pink", np.random.default_rng(0))
    power = np.abs(np.fft.rfft(noise)) ** 2
    freqs = np.fft.rfftfreq(noise.size, 1 / SR)
    low = power[(freqs > 50) & (freqs < 500)].mean()
    high = power[(freqs > 4000) & (freqs < 7000)].mean()
    assert low / high > 8  # 1/f: about 8 to 140 times over this span
    assert np.mean(noise**2) == pytest.approx(1.0)


def test_noise_is_deterministic_for_a_seeded_generator():
    clean = speechlike(0.5)
    a = add_noise(clean, 12.0, np.random.default_rng(5), "pink")
    b = add_noise(clean, 12.0, np.random.default_rng(5), "pink")
    c = add_noise(clean, 12.0, np.random.default_rng(6), "pink")
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


@pytest.mark.parametrize("gain_db", [-6.0, 0.0, 3.5])
def test_gain_in_db_is_exact(gain_db):
    clean = speechlike(0.3)
    out = apply_gain(clean, gain_db)
    ratio_db = 20 * np.log10(
        np.sqrt(np.mean(out.astype(np.float64) ** 2) / np.mean(clean.astype(np.float64) ** 2))
    )
    assert ratio_db == pytest.approx(gain_db, abs=1e-4)


@pytest.mark.parametrize("factor", [0.9, 1.0, 1.1])
def test_speed_changes_duration_by_the_factor(factor):
    clean = speechlike(1.0)
    out = speed_perturb(clean, factor, SR)
    assert abs(out.size - clean.size / factor) <= 1


def test_speed_raises_the_pitch_with_the_tempo():
    clean = speechlike(1.0)
    out = speed_perturb(clean, 1.1, SR)
    peak_hz = np.argmax(np.abs(np.fft.rfft(out))) * SR / out.size
    assert peak_hz == pytest.approx(180 * 1.1, abs=2)


def test_augment_draws_from_the_settings_and_describes_them():
    clean = speechlike(0.5)
    noisy, note = augment(clean, "noise", np.random.default_rng(0))
    assert note.split()[0] in ("white", "pink") and "snr=" in note
    snr = float(note.split("snr=")[1].removesuffix("dB"))
    assert 5.0 <= snr <= 20.0
    assert measured_snr(clean, noisy) == pytest.approx(snr, abs=0.5)
    fast, note = augment(clean, "speed", np.random.default_rng(0))
    assert note in ("speed=0.9", "speed=1.1")
    with pytest.raises(ValueError, match="unknown augmentation 'reverb'"):
        augment(clean, "reverb", np.random.default_rng(0))


def test_parse_augmentations():
    assert parse_augmentations("noise, speed,noise") == ("noise", "speed")
    with pytest.raises(ValueError, match="unknown augmentation.*echo.*noise, gain, speed"):
        parse_augmentations("noise,echo")
