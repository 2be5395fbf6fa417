"""The shared numpy log-mel front-end."""

import numpy as np
import pytest

from edgewise.errors import ConfigError
from edgewise.features import LogMelConfig, log_mel, mel_filterbank, num_frames
from tests.conftest import require_module


def test_shape_and_frame_count():
    cfg = LogMelConfig()
    for n in (400, 16000, 48001):
        feats = log_mel(np.random.default_rng(0).normal(size=n).astype(np.float32) * 0.1, cfg)
        assert feats.shape == (num_frames(n, cfg), cfg.n_mels)
        assert feats.dtype == np.float32 and np.isfinite(feats).all()


def test_matches_a_torch_stft_reference():
    torch = require_module("torch")
    cfg = LogMelConfig()
    audio = np.random.default_rng(1).normal(size=16000).astype(np.float32) * 0.1
    window = torch.hann_window(cfg.win_length, periodic=True, dtype=torch.float64)
    spec = torch.stft(
        torch.from_numpy(audio.astype(np.float64)),
        cfg.n_fft,
        cfg.hop_length,
        cfg.win_length,
        window=window,
        center=True,
        pad_mode="reflect",
        return_complex=True,
    )
    power = (spec.abs() ** 2).numpy().T
    fb = mel_filterbank(cfg.sample_rate, cfg.n_fft, cfg.n_mels, cfg.f_min, cfg.f_max)
    ref = np.log(power @ fb.T + cfg.log_offset)
    np.testing.assert_allclose(log_mel(audio, cfg), ref, atol=2e-4, rtol=1e-4)


def test_filterbank_peaks_rise_in_frequency_and_cover_the_band():
    cfg = LogMelConfig()
    fb = mel_filterbank(cfg.sample_rate, cfg.n_fft, cfg.n_mels, cfg.f_min, cfg.f_max)
    assert fb.shape == (cfg.n_mels, cfg.n_fft // 2 + 1)
    peaks = fb.argmax(axis=1)
    assert (np.diff(peaks) >= 0).all() and peaks[-1] > peaks[0]
    assert (fb.sum(axis=1) > 0).all()  # no empty filter


def test_a_tone_lights_the_right_mel_bin():
    cfg = LogMelConfig()
    t = np.arange(16000) / 16000
    low = log_mel(0.5 * np.sin(2 * np.pi * 300 * t).astype(np.float32), cfg).mean(0).argmax()
    high = log_mel(0.5 * np.sin(2 * np.pi * 3000 * t).astype(np.float32), cfg).mean(0).argmax()
    assert high > low + 10


def test_normalization_uses_the_recorded_stats():
    cfg = LogMelConfig(n_mels=8, f_max=4000)
    audio = np.random.default_rng(2).normal(size=8000).astype(np.float32)
    raw = log_mel(audio, cfg)
    fitted = cfg.with_stats(raw.mean(0), raw.std(0))
    normed = log_mel(audio, fitted)
    np.testing.assert_allclose(normed.mean(0), 0, atol=1e-4)
    assert LogMelConfig.from_dict(fitted.to_dict()) == fitted


def test_bad_configs_name_the_field():
    with pytest.raises(ConfigError, match="win_length 600 exceeds n_fft 512"):
        LogMelConfig(win_length=600)
    with pytest.raises(ConfigError, match="'mean' has 3 values, expected n_mels=64"):
        LogMelConfig(mean=(0.0, 0.0, 0.0), std=None)
    with pytest.raises(ConfigError, match="n_fft must be even, got 401"):
        LogMelConfig(n_fft=401)
    with pytest.raises(ConfigError, match="unknown field"):
        LogMelConfig.from_dict({"n_mels": 64, "hop": 10})
