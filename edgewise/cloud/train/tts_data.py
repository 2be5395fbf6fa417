"""Training data of the TTS family: mels, pitch and prosody targets, computed once and cached.

For every sentence of a split: the 80-band log-mel (:func:`edgewise.tts_dsp.tts_log_mel`), F0
per frame (:func:`edgewise.tts_dsp.pitch`), and from the teacher's durations the prosody targets
the model learns without labels: which word boundaries are breaks, and the stylised pitch
contour of the last word (the terminal intonation). The cache is one ``.npz`` per split beside the
corpus, keyed by the corpus manifest and the front-end settings.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgewise.cloud.data.tts_corpus import TTSCorpus, TTSRow
from edgewise.errors import DataError
from edgewise.phonemes import PhonemeIds, boundary_positions
from edgewise.tts_dsp import MelSpec, pitch, tts_log_mel

log = logging.getLogger(__name__)
CACHE_VERSION = 1


def break_targets(ids: np.ndarray, durations: np.ndarray, table: PhonemeIds, min_frames: int) -> np.ndarray:
    """Per id: 1 where a word boundary holds a pause of at least ``min_frames`` (its id and the pad after it)."""
    target = np.zeros(len(ids), dtype=np.float32)
    for pos in boundary_positions(ids, table):
        frames = durations[pos] + (durations[pos + 1] if pos + 1 < len(ids) else 0)
        target[pos] = float(frames >= min_frames)
    return target


def contour(logf0: np.ndarray, durations: np.ndarray, mask: np.ndarray, points: int) -> np.ndarray:
    """The smoothed log-F0 over the frames of the masked ids, resampled to ``points`` values and
    centred on the utterance's mean (speaker-independent shape); zeros without voicing."""
    ends = np.cumsum(durations)
    starts = ends - durations
    idx = np.flatnonzero(mask > 0)
    if idx.size == 0 or not np.any(logf0):
        return np.zeros(points, dtype=np.float32)
    segment = logf0[starts[idx[0]] : ends[idx[-1]]]
    if segment.size < 2:
        return np.zeros(points, dtype=np.float32)
    resampled = np.interp(np.linspace(0, segment.size - 1, points), np.arange(segment.size), segment)
    return (resampled - logf0[logf0 != 0].mean()).astype(np.float32)


@dataclass
class SplitData:
    rows: list[TTSRow]
    mel: np.ndarray  # (total_frames, n_mels) float32
    f0: np.ndarray  # (total_frames,) Hz, 0 unvoiced
    offsets: np.ndarray  # (n + 1,) frame offsets per row

    def mel_of(self, i: int) -> np.ndarray:
        return self.mel[self.offsets[i] : self.offsets[i + 1]]

    def f0_of(self, i: int) -> np.ndarray:
        return self.f0[self.offsets[i] : self.offsets[i + 1]]


def _features(path: str) -> tuple[np.ndarray, np.ndarray]:
    import soundfile as sf

    audio, sr = sf.read(path, dtype="float32", always_2d=False)
    if sr != MelSpec.sample_rate:
        from edgewise.audio import resample

        audio = resample(audio, sr, MelSpec.sample_rate)
    return tts_log_mel(audio), pitch(audio).astype(np.float32)


def _cache_key(corpus: TTSCorpus, split: str) -> str:
    manifest = corpus.root / f"{split}.jsonl"
    stamp = (
        manifest.read_bytes()
        if manifest.is_file()
        else json.dumps([r.id for r in corpus.rows[split]]).encode()
    )
    digest = hashlib.sha256(stamp + json.dumps(MelSpec().to_dict(), sort_keys=True).encode())
    return f"{split}-v{CACHE_VERSION}-{digest.hexdigest()[:12]}"


def load_split(
    corpus: TTSCorpus, split: str, *, workers: int = 2, cache_dir: Path | None = None
) -> SplitData:
    from edgewise.fsutil import atomic_path
    from edgewise.parallel import process_pool

    rows = corpus.split(split)
    cache_dir = cache_dir or corpus.root / "cache"
    path = cache_dir / f"{_cache_key(corpus, split)}.npz"
    if path.is_file():
        with np.load(path) as z:
            return SplitData(rows, z["mel"], z["f0"], z["offsets"])
    log.info("computing mels and pitch for %d %s sentences (cached in %s)", len(rows), split, cache_dir)
    paths = [str(corpus.audio_path(r)) for r in rows]
    with process_pool(workers) as pool:
        results = list(pool.map(_features, paths, chunksize=16))
    mels, f0s = zip(*results)
    for row, mel in zip(rows, mels):
        if row.durations is not None and sum(row.durations) != mel.shape[0]:
            # the teacher's audio was cut to whole frames when written; a mismatch means another file
            raise DataError(f"{row.path}: {mel.shape[0]} frames but durations sum to {sum(row.durations)}")
    offsets = np.concatenate([[0], np.cumsum([m.shape[0] for m in mels])])
    data = SplitData(rows, np.concatenate(mels), np.concatenate(f0s), offsets)
    cache_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(path, suffix=".npz") as tmp:
        np.savez(tmp, mel=data.mel, f0=data.f0, offsets=data.offsets)
    return data


def mel_stats(data: SplitData) -> tuple[np.ndarray, np.ndarray]:
    mean = data.mel.mean(axis=0)
    std = data.mel.std(axis=0) + 1e-3
    return mean.astype(np.float32), std.astype(np.float32)
