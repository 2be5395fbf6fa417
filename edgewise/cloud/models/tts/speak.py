"""PyTorch's whole voice for one sentence (acoustic model -> vocoder -> inverse STFT), and its word
error rate: the reference the export gate compares the device's pipeline with, and what the
acoustic trainer's evaluations (``edgewise train tts --vocoder RUN``) and the TTS report score.

The device's own pipeline is :class:`edgewise.edge.pipelines.tts.TTSPipeline` (numpy, no torch).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

NOISE_FRAMES_PER_ID = 64  # the starting noise is cut from this many frames per phoneme id (ample)


@dataclass
class Sentence:
    """One sentence as the models take it: its text and the phoneme-id inputs."""

    text: str
    ids: np.ndarray  # (N,) int64
    boundary: np.ndarray  # (N,) float32, 1 at word boundaries
    last: np.ndarray  # (N,) float32, 1 on the last word


def corpus_sentences(corpus: Any, split: str, n: int) -> list[Sentence]:
    """The first ``n`` sentences of a corpus split, with the ids the corpus stores."""
    from edgewise.phonemes import PhonemeIds, boundary_mask, last_word_mask

    table = PhonemeIds(corpus.id_map)
    out = []
    for row in corpus.split(split)[:n]:
        ids = np.asarray(row.ids, dtype=np.int64)
        text = row.normalized or row.text
        out.append(Sentence(text, ids, boundary_mask(ids, table), last_word_mask(ids, table)))
    return out


def speak(
    acoustic: Any,
    vocoder: Any,
    s: Sentence,
    noise: np.ndarray,
    mean: np.ndarray,
    std: np.ndarray,
    steps: int,
) -> tuple[np.ndarray, np.ndarray]:
    """(normalised mel (T, n_mels), audio) of one sentence; ``noise`` (>= T frames) is the flow's
    starting point, already scaled by the temperature."""
    from edgewise.cloud.models.tts.acoustic import synthesise
    from edgewise.tts_dsp import istft

    with torch.inference_mode():
        mel, _ = synthesise(
            acoustic, torch.from_numpy(s.ids[None]), torch.from_numpy(s.boundary[None]),
            torch.from_numpy(s.last[None]), steps=steps, temperature=1.0, noise=torch.from_numpy(noise),
        )  # fmt: skip
        raw = mel.numpy() * std + mean
        log_mag, phase = vocoder(torch.from_numpy(raw[None].astype(np.float32)))
    return mel.numpy(), istft(log_mag[0].numpy(), phase[0].numpy())


def sentence_noise(s: Sentence, n_mels: int, seed: int) -> np.ndarray:
    """Standard normal starting noise for ``s``, long enough for any duration it may get."""
    rng = np.random.default_rng(seed)
    return rng.standard_normal((len(s.ids) * NOISE_FRAMES_PER_ID, n_mels)).astype(np.float32)


def word_error_rate_of(
    acoustic: Any,
    vocoder: Any,
    sentences: Sequence[Sentence],
    mean: np.ndarray,
    std: np.ndarray,
    *,
    sample_rate: int,
    steps: int | None = None,
    temperature: float | None = None,
    asr: Any = None,
) -> float:
    """Word error rate of the offline recognizer (pocketsphinx) on PyTorch's audio of ``sentences``
    (sentence i starts from the noise of seed i, so two runs of one model give the same figure)."""
    from edgewise.textnorm import word_error_rate
    from edgewise.tts_eval import recognizer, transcribe

    cfg = acoustic.config
    steps = steps or cfg.flow.steps
    temperature = cfg.flow.temperature if temperature is None else temperature
    asr = asr if asr is not None else recognizer()
    hyps = []
    for i, s in enumerate(sentences):
        noise = sentence_noise(s, cfg.n_mels, i) * temperature
        _, audio = speak(acoustic, vocoder, s, noise, mean, std, steps)
        hyps.append(transcribe(asr, audio, sample_rate))
    return word_error_rate([s.text for s in sentences], hyps)
