"""The numpy prosodic functionals: pitch on known tones, voicing, pauses, and bad input."""

from __future__ import annotations

import numpy as np
import pytest

from edgewise import prosody

SR = prosody.SAMPLE_RATE


def harmonic(f0: float, seconds: float, amplitude: float = 0.3) -> np.ndarray:
    """A voiced-like tone: the first five harmonics of ``f0`` with falling amplitude."""
    t = np.arange(int(seconds * SR)) / SR
    return (amplitude * sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 6))).astype(np.float32)


@pytest.mark.parametrize("f0", [90.0, 150.0, 240.0])
def test_pitch_of_a_harmonic_tone(f0):
    hz, voiced, _ = prosody.pitch_track(harmonic(f0, 1.0))
    assert voiced.mean() > 0.9
    assert np.median(hz[voiced]) == pytest.approx(f0, rel=0.02)


def test_a_higher_tone_has_a_higher_pitch_mean_and_semitone_distance():
    names = list(prosody.NAMES)
    low = prosody.prosody_features(harmonic(110.0, 1.0))
    high = prosody.prosody_features(harmonic(220.0, 1.0))
    # an octave is 12 semitones
    assert high[names.index("f0_mean_st")] - low[names.index("f0_mean_st")] == pytest.approx(12.0, abs=0.5)


def test_pauses_and_voiced_runs_are_counted():
    names = list(prosody.NAMES)
    gap = np.zeros(int(0.3 * SR), dtype=np.float32)
    audio = np.concatenate([harmonic(150, 0.4), gap, harmonic(150, 0.4), gap, harmonic(150, 0.4)])
    feats = dict(zip(names, prosody.prosody_features(audio)))
    assert feats["pauses_per_s"] * feats["duration_s"] == pytest.approx(2, abs=0.01)
    assert feats["pause_mean_s"] == pytest.approx(0.3, abs=0.05)
    assert feats["voiced_runs_per_s"] * feats["duration_s"] == pytest.approx(3, abs=0.01)
    assert 0.5 < feats["voiced_fraction"] < 0.9


def test_silence_and_noise_give_finite_features_without_pitch():
    names = list(prosody.NAMES)
    for audio in (np.zeros(SR, np.float32), np.random.default_rng(0).normal(0, 0.05, SR).astype(np.float32)):
        feats = prosody.prosody_features(audio)
        assert feats.shape == (len(names),)
        assert np.isfinite(feats).all()
        assert feats[names.index("voiced_fraction")] < 0.1


def test_audio_shorter_than_a_frame_still_gives_every_feature():
    feats = prosody.prosody_features(harmonic(150, 0.01))
    assert feats.shape == (len(prosody.NAMES),) and np.isfinite(feats).all()


def test_another_sample_rate_is_refused():
    with pytest.raises(ValueError, match="16000 Hz"):
        prosody.prosody_features(harmonic(150, 0.5), 22050)
