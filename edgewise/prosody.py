"""Prosodic functionals of one utterance in numpy: pitch, loudness, voicing, rhythm, spectral tilt.

A small, licence-free stand-in for the eGeMAPS functionals (openSMILE's licence bars commercial use,
so a device cannot ship it), used by the device's speaker adaptation: what a speaker's baseline
shifts (their own pitch, level and tempo) is mostly prosodic, so these are the features that
per-speaker statistics normalize. Imports numpy only; shared by the cloud (fitting the adaptation
head) and the device (running it), so both compute exactly the same numbers.

Pitch is the normalized autocorrelation peak over 40 ms frames every 10 ms, between ``F0_MIN`` and
``F0_MAX``; a frame is voiced when the peak reaches ``VOICING`` and the frame is not silent.
"""

from __future__ import annotations

import numpy as np

SAMPLE_RATE = 16000
FRAME = 640  # 40 ms: two periods of the lowest pitch
HOP = 160  # 10 ms
F0_MIN, F0_MAX = 60.0, 400.0
VOICING = 0.5  # normalized autocorrelation peak of a voiced frame
OCTAVE_MARGIN = 0.85  # a shorter lag whose peak reaches this share of the highest one wins
SILENCE_DB = 40.0  # a frame this far below the utterance's loudest is silence
VERSION = 1

NAMES = (
    "f0_mean_st", "f0_std_st", "f0_p20_st", "f0_p50_st", "f0_p80_st", "f0_range_st",
    "f0_delta_abs_st", "f0_slope_st_per_s", "f0_final_st",
    "loud_mean_db", "loud_std_db", "loud_p20_db", "loud_p80_db", "loud_range_db", "loud_voiced_db",
    "voiced_fraction", "voiced_runs_per_s", "voiced_run_mean_s", "pause_mean_s", "pause_std_s",
    "pauses_per_s", "alpha_ratio_db", "hammarberg_db", "centroid_hz", "duration_s",
)  # fmt: skip


def _frames(audio: np.ndarray) -> np.ndarray:
    if audio.size < FRAME:
        audio = np.pad(audio, (0, FRAME - audio.size))
    count = 1 + (audio.size - FRAME) // HOP
    idx = np.arange(FRAME)[None, :] + HOP * np.arange(count)[:, None]
    return audio[idx]


def pitch_track(
    audio: np.ndarray, sample_rate: int = SAMPLE_RATE
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per 10 ms frame: F0 in Hz (0 where unvoiced), voiced mask, loudness in dB (RMS)."""
    if sample_rate != SAMPLE_RATE:
        raise ValueError(f"prosody expects {SAMPLE_RATE} Hz audio, got {sample_rate} Hz")
    frames = _frames(np.asarray(audio, dtype=np.float64))
    frames = frames - frames.mean(axis=1, keepdims=True)
    loud = 10.0 * np.log10(np.mean(frames**2, axis=1) + 1e-10)
    windowed = frames * np.hanning(FRAME)
    spec = np.fft.rfft(windowed, n=2 * FRAME)
    acf = np.fft.irfft(np.abs(spec) ** 2)[:, :FRAME]
    # divide by the window's own autocorrelation so the peak of a periodic frame is close to 1
    win_acf = np.fft.irfft(np.abs(np.fft.rfft(np.hanning(FRAME), n=2 * FRAME)) ** 2)[:FRAME]
    norm = acf / np.maximum(acf[:, :1], 1e-12) / np.maximum(win_acf / win_acf[0], 1e-3)
    lo, hi = int(sample_rate / F0_MAX), int(sample_rate / F0_MIN)
    band = norm[:, lo : hi + 1]
    # the first local maximum close to the highest one: multiples of the period score about as
    # high (more so after dividing by the window's autocorrelation), and would halve the pitch
    inner = np.zeros_like(band, dtype=bool)
    inner[:, 1:-1] = (band[:, 1:-1] >= band[:, :-2]) & (band[:, 1:-1] >= band[:, 2:])
    near_top = inner & (band >= OCTAVE_MARGIN * band.max(axis=1, keepdims=True))
    lag = np.where(near_top.any(axis=1), near_top.argmax(axis=1), band.argmax(axis=1))
    peak = band[np.arange(len(band)), lag]
    # parabolic interpolation around the peak for sub-sample lags
    left = band[np.arange(len(band)), np.maximum(lag - 1, 0)]
    right = band[np.arange(len(band)), np.minimum(lag + 1, band.shape[1] - 1)]
    denom = left - 2 * peak + right
    shift = np.where(np.abs(denom) > 1e-9, 0.5 * (left - right) / np.where(denom == 0, 1, denom), 0.0)
    f0 = sample_rate / (lo + lag + np.clip(shift, -0.5, 0.5))
    voiced = (peak >= VOICING) & (loud > loud.max() - SILENCE_DB)
    return np.where(voiced, f0, 0.0), voiced, loud


def _runs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Lengths (frames) of the runs of True and of the inner runs of False in ``mask``."""
    if not mask.any():
        return np.zeros(0), np.zeros(0)
    edges = np.flatnonzero(np.diff(np.concatenate([[0], mask.astype(int), [0]])))
    starts, ends = edges[::2], edges[1::2]
    return ends - starts, starts[1:] - ends[:-1]


def _band_db(power: np.ndarray, freqs: np.ndarray, lo: float, hi: float, how: str) -> np.ndarray:
    sel = (freqs >= lo) & (freqs < hi)
    values = power[:, sel].sum(axis=1) if how == "sum" else power[:, sel].max(axis=1)
    return 10.0 * np.log10(values + 1e-12)


def prosody_features(audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """The ``NAMES`` functionals of one utterance (float64, finite)."""
    audio = np.asarray(audio, dtype=np.float64)
    f0, voiced, loud = pitch_track(audio, sample_rate)
    seconds = audio.size / sample_rate
    active = loud > loud.max() - SILENCE_DB
    if voiced.sum() >= 2:
        st = 12.0 * np.log2(f0[voiced] / 27.5)
        t = np.flatnonzero(voiced) * HOP / sample_rate
        p20, p50, p80 = np.percentile(st, [20, 50, 80])
        slope = np.polyfit(t, st, 1)[0] if np.ptp(t) > 0 else 0.0
        delta = np.abs(np.diff(st))
        pitch = [
            st.mean(),
            st.std(),
            p20,
            p50,
            p80,
            p80 - p20,
            np.median(delta),
            slope,
            st[-max(1, len(st) // 5) :].mean() - p50,
        ]
    else:
        pitch = [0.0] * 9
    lq = loud[active] if active.any() else loud
    l20, l80 = np.percentile(lq, [20, 80])
    loudness = [lq.mean(), lq.std(), l20, l80, l80 - l20, loud[voiced].mean() if voiced.any() else lq.mean()]
    runs, gaps = _runs(voiced)
    hop_s = HOP / sample_rate
    pauses = gaps[gaps * hop_s >= 0.1] * hop_s
    rhythm = [
        voiced.mean(),
        len(runs) / max(seconds, 1e-3),
        runs.mean() * hop_s if runs.size else 0.0,
        pauses.mean() if pauses.size else 0.0,
        pauses.std() if pauses.size else 0.0,
        pauses.size / max(seconds, 1e-3),
    ]
    frames = _frames(audio)[voiced if voiced.any() else active]
    power = np.abs(np.fft.rfft(frames * np.hanning(FRAME), axis=1)) ** 2
    freqs = np.fft.rfftfreq(FRAME, 1.0 / sample_rate)
    alpha = (_band_db(power, freqs, 50, 1000, "sum") - _band_db(power, freqs, 1000, 5000, "sum")).mean()
    hammarberg = (_band_db(power, freqs, 0, 2000, "max") - _band_db(power, freqs, 2000, 5000, "max")).mean()
    centroid = float(((power * freqs).sum(axis=1) / np.maximum(power.sum(axis=1), 1e-12)).mean())
    out = np.array(pitch + loudness + rhythm + [alpha, hammarberg, centroid, seconds], dtype=np.float64)
    return np.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0)
