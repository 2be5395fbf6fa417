"""The TTS signal processing shared by training, export and the device (edgewise.tts_dsp)."""

from __future__ import annotations

import numpy as np
import pytest

from edgewise.features import _window
from edgewise.tts_dsp import MelSpec, StreamingISTFT, istft, pitch, smooth_log_f0, tts_log_mel

SPEC = MelSpec()
SR = SPEC.sample_rate


def exact_stft(audio: np.ndarray, spec: MelSpec = SPEC) -> tuple[np.ndarray, np.ndarray]:
    """(log-magnitude, phase) of ``audio`` framed exactly as tts_log_mel frames it."""
    padded = np.pad(audio, (spec.pad, spec.pad + spec.n_fft), mode="reflect")
    n = len(audio) // spec.hop
    frames = np.lib.stride_tricks.sliding_window_view(padded, spec.n_fft)[:: spec.hop][:n]
    stft = np.fft.rfft(frames * _window(spec.n_fft, spec.n_fft), axis=-1)
    return np.log(np.abs(stft) + 1e-12), np.angle(stft)


def noise(n: int, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(n) * 0.1).astype(np.float32)


def tone(freq: float, seconds: float = 1.0) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return 0.5 * np.sin(2 * np.pi * freq * t)


@pytest.mark.parametrize("n", [0, 255, 256, 1000, 256 * 40, 256 * 40 + 17])
def test_log_mel_has_len_over_hop_frames(n):
    mel = tts_log_mel(noise(n))
    assert mel.shape == (n // SPEC.hop, SPEC.n_mels)
    assert mel.dtype == np.float32 and np.isfinite(mel).all()


def test_log_mel_of_silence_is_the_floor():
    assert np.allclose(tts_log_mel(np.zeros(2560)), np.log(SPEC.log_floor))


def test_log_mel_puts_a_tone_in_the_right_band():
    low, high = tts_log_mel(tone(200.0)), tts_log_mel(tone(3000.0))
    assert low.mean(0).argmax() < high.mean(0).argmax()


@pytest.mark.parametrize("frames", [1, 2, 3, 40])
def test_istft_inverts_an_exact_stft(frames):
    audio = noise(frames * SPEC.hop + 100, seed=frames)
    log_mag, phase = exact_stft(audio)
    out = istft(log_mag, phase)
    assert out.shape == (frames * SPEC.hop,)
    np.testing.assert_allclose(out, audio[: frames * SPEC.hop], atol=1e-4)


def test_istft_of_no_frames_is_empty():
    bins = SPEC.n_fft // 2 + 1
    assert istft(np.zeros((0, bins)), np.zeros((0, bins))).shape == (0,)


def test_streaming_istft_in_uneven_chunks_equals_istft():
    log_mag, phase = exact_stft(noise(256 * 45, seed=3))
    whole = istft(log_mag, phase)
    stream, parts, i = StreamingISTFT(SPEC), [], 0
    for size in (1, 3, 7, 2, 13, 19):
        parts.append(stream.push(log_mag[i : i + size], phase[i : i + size]))
        i += size
    assert i == len(log_mag)
    parts.append(stream.flush())
    np.testing.assert_allclose(np.concatenate(parts), whole, atol=1e-6)


def test_streaming_istft_emits_audio_before_the_end():
    log_mag, phase = exact_stft(noise(256 * 20, seed=4))
    stream = StreamingISTFT(SPEC)
    first = stream.push(log_mag[:10], phase[:10])
    assert first.size == 10 * SPEC.hop - SPEC.pad  # all but the overlap still to come
    rest = stream.push(log_mag[10:], phase[10:])
    assert first.size + rest.size + stream.flush().size == 20 * SPEC.hop


def test_istft_clips_runaway_magnitudes():
    bins = SPEC.n_fft // 2 + 1
    out = istft(np.full((8, bins), 50.0), np.zeros((8, bins)))
    assert np.isfinite(out).all() and np.abs(out).max() < 1e5


@pytest.mark.parametrize("freq", [100.0, 150.0, 220.0])
def test_pitch_of_a_tone_is_within_one_percent(freq):
    f0 = pitch(tone(freq))
    assert f0.shape == (SR // SPEC.hop,)
    inner = f0[2:-2]
    assert (inner > 0).all()
    assert np.abs(inner / freq - 1).max() < 0.01


def test_pitch_follows_a_harmonic_rich_voice():
    t = np.arange(SR) / SR
    wave = sum(np.sin(2 * np.pi * k * 130.0 * t) / k for k in range(1, 6)) * 0.2
    f0 = pitch(wave)[2:-2]
    assert np.median(np.abs(f0 / 130.0 - 1)) < 0.01


def test_pitch_of_noise_is_mostly_unvoiced():
    f0 = pitch(np.random.default_rng(0).standard_normal(SR) * 0.3)
    assert (f0 == 0).mean() > 0.9


def test_pitch_of_silence_is_unvoiced():
    assert not pitch(np.zeros(SR)).any()


def test_smooth_log_f0_fills_unvoiced_gaps_between_voiced_frames():
    f0 = np.array([0, 0, 100, 110, 0, 0, 120, 0, 0], dtype=float)
    out = smooth_log_f0(f0)
    assert out.shape == f0.shape and (out > 0).all()
    assert np.log(100) - 1e-9 <= out.min() and out.max() <= np.log(120) + 1e-9
    assert np.all(np.diff(out) >= -1e-12)  # rising voiced frames give a rising contour


def test_smooth_log_f0_removes_an_octave_jump():
    f0 = np.full(30, 120.0)
    f0[15] = 240.0  # one octave error
    assert np.abs(smooth_log_f0(f0) - np.log(120.0)).max() < 1e-9


@pytest.mark.parametrize("f0", [np.zeros(12), np.array([0, 0, 150.0, 0])])
def test_smooth_log_f0_without_voicing_stays_zero(f0):
    assert not smooth_log_f0(f0).any()
