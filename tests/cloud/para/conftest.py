"""A tiny corpus for the paralinguistic benchmark, synthesized in numpy (no espeak-ng): every field a
task reads (label, gender, voice, rate, pitch) is audible, so a head can learn each task.

Each utterance is a harmonic tone: its ``pitch`` setting (0-99) sets the base frequency, the voice's
gender shifts it (male lower), its accent picks the harmonics (``en-us`` odd ones only, ``en-gb``
all), its ``rate`` (words per minute) sets how fast the level pulses like syllables, and its
emotion label the pitch contour (as in tests/cloud/train's tone corpus).
"""

from __future__ import annotations

import numpy as np
import pytest

from edgewise.audio import write_wav
from edgewise.cloud.data.corpus import EMOTIONS, Utterance, write_manifests
from tests.conftest import require_module

SR = 16000
CONTOURS = {
    "neutral": lambda t, d: np.ones_like(t),
    "happy": lambda t, d: 1.0 + 0.5 * t / d,
    "sad": lambda t, d: 1.0 - 0.35 * t / d,
    "angry": lambda t, d: 1.4 + 0.15 * np.sin(2 * np.pi * 6 * t),
}
# speakers per split: (accent, gender); val and test hold one of each accent and gender
SPEAKERS = {
    "train": [("en-us", "male"), ("en-us", "female"), ("en-gb", "male"), ("en-gb", "female")] * 2,
    "val": [("en-us", "male"), ("en-gb", "female")],
    "test": [("en-us", "female"), ("en-gb", "male")],
}


def tone(label: str, accent: str, gender: str, pitch: int, rate: int, seconds: float, rng) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    base = (90.0 if gender == "male" else 170.0) + 1.2 * pitch
    phase = 2 * np.pi * np.cumsum(base * CONTOURS[label](t, seconds)) / SR
    harmonics = (1, 3, 5, 7) if accent == "en-us" else (1, 2, 3, 4, 5, 6)
    wave = sum(np.sin(k * phase) / k for k in harmonics)
    syllables = 0.55 + 0.45 * np.sin(2 * np.pi * (rate / 60.0) * t) ** 2
    wave = wave * syllables / np.max(np.abs(wave)) * 0.3
    return (wave + rng.normal(0, 0.005, size=t.shape)).astype(np.float32)


def make_para_corpus(root, per_class: int = 2, seed: int = 0, columns=("voice", "gender", "rate", "pitch")):
    """Write the corpus into ``root``; ``columns`` picks which extra manifest columns it gets."""
    rng = np.random.default_rng(seed)
    utts, extras = [], []
    for split, speakers in SPEAKERS.items():
        for s, (accent, gender) in enumerate(speakers):
            speaker = f"{split}{s}"
            for label in EMOTIONS:
                for k in range(per_class):
                    pitch, rate = int(rng.integers(0, 100)), int(rng.integers(90, 260))
                    path = root / "wavs" / f"{speaker}_{label}_{k}.wav"
                    audio = tone(label, accent, gender, pitch, rate, float(rng.uniform(0.6, 1.0)), rng)
                    write_wav(path, audio, SR)
                    utts.append(Utterance(path=path, label=label, speaker=speaker, split=split, text=""))
                    row = {"voice": f"{accent}+{'m' if gender == 'male' else 'f'}{s}", "gender": gender}
                    row |= {"rate": rate, "pitch": pitch}
                    extras.append({c: row[c] for c in columns})
    write_manifests(
        root, utts, EMOTIONS, {"generator": "tests: para tones", "sample_rate": SR}, extra_columns=extras
    )
    return root


def make_onnx_encoder(path, input_shape, out_dims=8, reduce=False):
    """A stand-in for a user's encoder: x -> MatMul(W) -> y, the input first made (batch, samples, 1)
    when it is audio (rank 2), and with ``reduce`` averaged to a scalar."""
    onnx = require_module("onnx")
    from onnx import TensorProto, helper, numpy_helper

    audio = len(input_shape) == 2
    width = 1 if audio else input_shape[-1] if isinstance(input_shape[-1], int) else 64
    weights = np.random.default_rng(0).normal(size=(width, out_dims)).astype(np.float32)
    init = [
        numpy_helper.from_array(weights, "W"),
        numpy_helper.from_array(np.array([2], dtype=np.int64), "axes"),
    ]
    nodes = [helper.make_node("Unsqueeze", ["x", "axes"], ["x3"])] if audio else []
    nodes.append(helper.make_node("MatMul", ["x3" if audio else "x", "W"], ["h" if reduce else "y"]))
    out_shape = [*input_shape[:2], out_dims]
    if reduce:
        nodes.append(helper.make_node("ReduceMean", ["h"], ["y"], keepdims=0))
        out_shape = []
    graph = helper.make_graph(
        nodes,
        "enc",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, input_shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)],
        initializer=init,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="session")
def para_corpus(tmp_path_factory):
    """48 utterances: 8 train, 2 val and 2 test speakers, one utterance per emotion each."""
    return make_para_corpus(tmp_path_factory.mktemp("para-corpus"), per_class=1)
