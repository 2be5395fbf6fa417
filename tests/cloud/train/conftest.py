"""A small, learnable corpus of synthetic 'voices' for trainer tests (fast; no espeak-ng needed).

Each class is a distinct pitch contour (flat, rising, falling, high warble) around a per-speaker
base pitch, with harmonics and noise: easy for a model, so a test can assert that training learned.
"""

from __future__ import annotations

import numpy as np
import pytest

from edgewise.audio import write_wav
from edgewise.cloud.data.corpus import EMOTIONS, Utterance, write_manifests

SR = 16000


def voice(label: str, base_hz: float, seconds: float, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    contour = {
        "neutral": np.full_like(t, 1.0),
        "happy": 1.0 + 0.5 * t / seconds,
        "sad": 1.0 - 0.35 * t / seconds,
        "angry": 1.6 + 0.15 * np.sin(2 * np.pi * 6 * t),
    }[label]
    phase = 2 * np.pi * np.cumsum(base_hz * contour) / SR
    wave = sum(np.sin(k * phase) / k for k in range(1, 6))
    wave = wave / np.max(np.abs(wave)) * 0.3
    return (wave + rng.normal(0, 0.01, size=t.shape)).astype(np.float32)


def make_tone_corpus(root, speakers_per_split=(6, 2, 2), per_class=3, seed=0):
    rng = np.random.default_rng(seed)
    utts = []
    for split, n_spk in zip(("train", "val", "test"), speakers_per_split):
        for s in range(n_spk):
            speaker = f"{split}{s}"
            base = float(rng.uniform(100, 220))
            for label in EMOTIONS:
                for k in range(per_class):
                    path = root / "wavs" / f"{speaker}_{label}_{k}.wav"
                    write_wav(path, voice(label, base, float(rng.uniform(0.6, 1.2)), rng), SR)
                    utts.append(Utterance(path=path, label=label, speaker=speaker, split=split, text=""))
    write_manifests(root, utts, EMOTIONS, {"generator": "tests: pitch contours", "sample_rate": SR})
    return root


@pytest.fixture(scope="session")
def tone_corpus(tmp_path_factory):
    return make_tone_corpus(tmp_path_factory.mktemp("tone-corpus"))


FAST = [
    "--set",
    "optim.epochs=4",
    "--set",
    "optim.batch_size=16",
    "--set",
    "optim.warmup_epochs=0",
    "--set",
    "augment.crop_seconds=0.5",
    "--set",
    "threads=1",
    "--no-progress",
]
