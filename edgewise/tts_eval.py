"""How a voice is judged, the same way in the export gate, ``edgewise bench`` and benchmarks/ (numpy only).

- Intelligibility: the word error rate of the offline recognizer pocketsphinx (its wheel ships an
  English model) against the normalised text (:func:`transcribe`, :func:`edgewise.textnorm.word_error_rate`).
  pocketsphinx is a weak recognizer: compare voices side by side on the same sentences, never
  against an absolute figure.
- Prosody against a reference recording of the same sentence: both are aligned by dynamic time
  warping on their log-mels (:func:`dtw_path`), then log-F0 RMSE (in cents) and correlation are
  taken over the frames voiced in both (:func:`f0_agreement`); the terminal contour's direction
  (:func:`final_rise`) says whether a sentence ends rising.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgewise.errors import MissingDependencyError
from edgewise.tts_dsp import MelSpec, pitch, smooth_log_f0, tts_log_mel

DEFAULT_SPEC = MelSpec()


# A first pass only (no flat-lexicon second pass, no best-path rescoring) and a cap on active HMMs:
# about 2x faster on this machine's 2 cores, for bulk transcripts where speed beats the last words
FAST_SEARCH = {"fwdflat": False, "bestpath": False, "maxhmmpf": 3000}


def recognizer(fast: bool = False) -> Any:
    """pocketsphinx's English decoder at 16 kHz (``fast``: :data:`FAST_SEARCH`)."""
    try:
        from pocketsphinx import Decoder
    except ImportError:
        raise MissingDependencyError(
            "the word error rate needs pocketsphinx: pip install 'edgewise[tts-eval]'"
        ) from None
    return Decoder(samprate=16000, loglevel="FATAL", **(FAST_SEARCH if fast else {}))


def transcribe(decoder: Any, audio: np.ndarray, sample_rate: int) -> str:
    """What the recognizer hears in float mono ``audio`` (resampled to its 16 kHz)."""
    from edgewise.audio import resample

    if audio.size == 0:
        return ""
    pcm = np.clip(resample(np.asarray(audio, dtype=np.float32), sample_rate, 16000), -1, 1)
    decoder.start_utt()
    decoder.process_raw((pcm * 32767).astype(np.int16).tobytes(), full_utt=True)
    decoder.end_utt()
    hyp = decoder.hyp()
    return hyp.hypstr if hyp is not None else ""


def dtw_path(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Frame indices (ia, ib) of the cheapest monotonic alignment of feature sequences a, b."""
    cost = np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1))
    n, m = cost.shape
    acc = np.full((n + 1, m + 1), np.inf)
    acc[0, 0] = 0.0
    for i in range(1, n + 1):  # rows in Python, columns vectorised per anti-dependency
        row = acc[i]
        prev = acc[i - 1]
        diag_up = np.minimum(prev[:-1], prev[1:]) + cost[i - 1]
        for j in range(1, m + 1):
            row[j] = min(diag_up[j - 1], row[j - 1] + cost[i - 1, j - 1])
    i, j = n, m
    ia, ib = [], []
    while i > 0 and j > 0:
        ia.append(i - 1)
        ib.append(j - 1)
        step = np.argmin([acc[i - 1, j - 1], acc[i - 1, j], acc[i, j - 1]])
        i, j = (i - 1, j - 1) if step == 0 else (i - 1, j) if step == 1 else (i, j - 1)
    return np.array(ia[::-1]), np.array(ib[::-1])


def f0_agreement(
    audio: np.ndarray, reference: np.ndarray, spec: MelSpec = DEFAULT_SPEC
) -> dict[str, float | None]:
    """log-F0 RMSE (cents) and correlation of ``audio`` against ``reference`` after DTW alignment,
    over frames voiced in both; None when fewer than 10 such frames."""
    a_mel, b_mel = tts_log_mel(audio, spec), tts_log_mel(reference, spec)
    if len(a_mel) < 2 or len(b_mel) < 2:
        return {"f0_rmse_cents": None, "f0_corr": None, "voiced_frames": 0}
    ia, ib = dtw_path(a_mel, b_mel)
    fa, fb = pitch(audio, spec)[ia], pitch(reference, spec)[ib]
    voiced = (fa > 0) & (fb > 0)
    if voiced.sum() < 10:
        return {"f0_rmse_cents": None, "f0_corr": None, "voiced_frames": int(voiced.sum())}
    la, lb = np.log2(fa[voiced]), np.log2(fb[voiced])
    return {
        "f0_rmse_cents": float(1200 * np.sqrt(np.mean((la - lb) ** 2))),
        "f0_corr": float(np.corrcoef(la, lb)[0, 1]),
        "voiced_frames": int(voiced.sum()),
    }


def final_rise(
    audio: np.ndarray, last_word_frames: tuple[int, int] | None = None, spec: MelSpec = DEFAULT_SPEC
) -> float | None:
    """Slope of the stylised log-F0 over the last word (or the last voiced 400 ms), in semitones:
    positive = rising. None without enough voicing."""
    f0 = pitch(audio, spec)
    voiced = np.flatnonzero(f0 > 0)
    if voiced.size < 6:
        return None
    if last_word_frames is not None:
        start, end = last_word_frames
    else:
        end = voiced[-1] + 1
        start = max(0, end - int(0.4 * spec.sample_rate / spec.hop))
    segment = f0[start:end]
    if (segment > 0).sum() < 4:
        return None
    contour = smooth_log_f0(segment)
    half = max(1, len(contour) // 2)
    return float(12 * (contour[half:].mean() - contour[:half].mean()) / np.log(2))
