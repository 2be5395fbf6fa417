"""Fixtures: a speech track synthesized with espeak-ng at test time, the Silero model, subprocesses.

The track is three sentences separated by 1 s of silence, with 0.5 s of silence before and after
and white noise at -45 dBFS throughout. The known boundaries are where each sentence's samples
start and stop (espeak's own leading and trailing silence trimmed off).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from edgewise.audio import load_audio, write_wav
from edgewise.edge.audio.vad import find_silero_vad_onnx
from tests.conftest import missing_tool

SR = 16000
SENTENCES = (
    "The weather was bright and warm this morning.",
    "She packed a small bag and left early.",
    "Nobody expected the train to arrive on time.",
)
LEAD_S, GAP_S, TAIL_S = 0.5, 1.0, 0.5
NOISE_DBFS = -45.0
TOLERANCE_S = 0.15  # detected speech boundaries must lie this close to the known ones
REPO = Path(__file__).resolve().parents[3]


@dataclass(frozen=True)
class SpeechTrack:
    audio: np.ndarray  # float32 mono 16 kHz
    bounds: list[tuple[int, int]]  # known [start, end) sample of each sentence
    wav: Path  # the same audio as PCM16 wav

    @property
    def bounds_s(self) -> list[tuple[float, float]]:
        return [(a / SR, b / SR) for a, b in self.bounds]


@pytest.fixture(scope="session")
def speech_track(tmp_path_factory) -> SpeechTrack:
    if shutil.which("espeak-ng") is None or shutil.which("sox") is None:
        missing_tool("espeak-ng and sox are not installed (apt-get install espeak-ng sox)")
    folder = tmp_path_factory.mktemp("speech")
    pieces = [np.zeros(int(LEAD_S * SR), dtype=np.float32)]
    bounds, pos = [], pieces[0].size
    for i, text in enumerate(SENTENCES):
        path = folder / f"s{i}.wav"
        subprocess.run(["espeak-ng", "-v", "en-us", "-w", str(path), text], check=True, capture_output=True)
        speech = load_audio(path, SR)
        voiced = np.flatnonzero(np.abs(speech) > 0.01)
        speech = speech[voiced[0] : voiced[-1] + 1]
        bounds.append((pos, pos + speech.size))
        gap = np.zeros(int((GAP_S if i < len(SENTENCES) - 1 else TAIL_S) * SR), dtype=np.float32)
        pieces += [speech, gap]
        pos += speech.size + gap.size
    audio = np.concatenate(pieces)
    rng = np.random.default_rng(0)
    audio = (audio + 10 ** (NOISE_DBFS / 20) * rng.standard_normal(audio.size)).astype(np.float32)
    audio = np.clip(audio, -1.0, 1.0)
    wav = write_wav(folder / "track.wav", audio, SR)
    return SpeechTrack(load_audio(wav, SR), bounds, wav)  # as read back: PCM16-rounded


@pytest.fixture(scope="session")
def silero_onnx() -> Path:
    path = find_silero_vad_onnx()
    if path is None:
        missing_tool("the silero-vad package (which ships silero_vad.onnx) is not installed")
    return path


def assert_matches_known(spans, track: SpeechTrack, tolerance_s: float = TOLERANCE_S) -> None:
    """One (speech_start, speech_end) sample span per sentence, within ``tolerance_s`` of the known."""
    found = [(round(a / SR, 3), round(b / SR, 3)) for a, b in spans]
    assert len(found) == len(track.bounds), f"found {found}, expected {track.bounds_s}"
    for (a, b), (ka, kb) in zip(found, track.bounds_s):
        assert abs(a - ka) <= tolerance_s and abs(b - kb) <= tolerance_s, (
            f"found {found}, expected {track.bounds_s}"
        )


def speech_spans(utterances) -> list[tuple[int, int]]:
    return [(u.speech_start, u.speech_end) for u in utterances]


def run_python(code: str, *, args=(), env: dict[str, str] | None = None, stdin=None, timeout: float = 60):
    """Run ``code`` in a fresh interpreter from the repository root; returns CompletedProcess."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=REPO,
        env=full_env,
        stdin=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
