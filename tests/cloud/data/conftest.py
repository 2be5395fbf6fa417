"""Fixtures: one small synthesized corpus per session, and tiny real-corpus trees built in tmp_path.

The real-corpus trees (RAVDESS, CREMA-D, IEMOCAP) hold 0.1 s tones in the published layouts;
no dataset file is ever committed.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from edgewise.cloud.data.synth import synthesize_corpus
from tests.conftest import missing_tool

SR = 16000
SEED = 7
N_SMALL = 48

needs_tools = pytest.mark.skipif(
    shutil.which("espeak-ng") is None or shutil.which("sox") is None,
    reason="espeak-ng and sox are not installed (apt-get install espeak-ng sox)",
)


def write_tone(path: Path, freq: float = 220.0, seconds: float = 0.1) -> Path:
    """A short sine plus a little noise, PCM16 (stands in for a corpus's speech file)."""
    t = np.arange(int(seconds * SR)) / SR
    rng = np.random.default_rng(int(freq))
    audio = 0.3 * np.sin(2 * np.pi * freq * t) + 0.01 * rng.standard_normal(t.shape)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), audio.astype(np.float32), SR, subtype="PCM_16")
    return path


@pytest.fixture(scope="session")
def speech_corpus(tmp_path_factory):
    """A 48-utterance synthesized corpus (seed 7), shared by the read-only tests."""
    if shutil.which("espeak-ng") is None or shutil.which("sox") is None:
        missing_tool("espeak-ng and sox are not installed (apt-get install espeak-ng sox)")
    out = tmp_path_factory.mktemp("speech") / "corpus"
    return synthesize_corpus(out, N_SMALL, SEED, workers=2, progress=False)


# --- RAVDESS ----------------------------------------------------------------------------------

RAVDESS_ACTORS = (1, 2, 17, 18, 21, 22)  # two per split, one male (odd) and one female (even)


def make_ravdess(root: Path) -> Path:
    """Every emotion 01..08 spoken once per actor, plus one sung file (vocal channel 02)."""
    for actor in RAVDESS_ACTORS:
        folder = root / f"Actor_{actor:02d}"
        for emotion in range(1, 9):
            write_tone(folder / f"03-01-{emotion:02d}-01-01-01-{actor:02d}.wav", 200 + emotion)
        write_tone(folder / f"03-02-05-01-02-01-{actor:02d}.wav", 300)
    return root


@pytest.fixture
def ravdess_root(tmp_path):
    return make_ravdess(tmp_path / "ravdess")


# --- CREMA-D ----------------------------------------------------------------------------------

CREMAD_SPEAKERS = tuple(str(s) for s in range(1001, 1008))
CREMAD_CODES = ("ANG", "DIS", "FEA", "HAP", "NEU", "SAD")


def make_cremad(root: Path) -> Path:
    for k, speaker in enumerate(CREMAD_SPEAKERS):
        for j, emotion in enumerate(CREMAD_CODES):
            write_tone(root / "AudioWAV" / f"{speaker}_DFA_{emotion}_XX.wav", 150 + 10 * k + j)
    return root


@pytest.fixture
def cremad_root(tmp_path):
    return make_cremad(tmp_path / "cremad")


# --- IEMOCAP ----------------------------------------------------------------------------------

# (utterance suffix, emotion code): exc counts as happy, fru is dropped.
IEMOCAP_TURNS = (
    ("F000", "neu"),
    ("M000", "exc"),
    ("F001", "fru"),
    ("M001", "ang"),
    ("F002", "sad"),
    ("M002", "hap"),
)

EVAL_HEADER = "% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]\n\n"


def iemocap_eval_text(dialog: str, turns=IEMOCAP_TURNS) -> str:
    lines = [EVAL_HEADER]
    for i, (suffix, emotion) in enumerate(turns):
        lines.append(
            f"[{i * 3:.4f} - {i * 3 + 2.5:.4f}]\t{dialog}_{suffix}\t{emotion}\t[2.5000, 3.0000, 2.5000]\n"
        )
        lines.append("C-E1:\tNeutral;\t()\nA-E1:\tval 3; act 2; dom  3;\t()\n\n")
    return "".join(lines)


def make_iemocap(root: Path) -> Path:
    for session in range(1, 6):
        dialog = f"Ses{session:02d}F_impro01"
        base = root / f"Session{session}"
        for k, (suffix, _) in enumerate(IEMOCAP_TURNS):
            write_tone(base / "sentences" / "wav" / dialog / f"{dialog}_{suffix}.wav", 180 + 10 * k)
        eval_dir = base / "dialog" / "EmoEvaluation"
        eval_dir.mkdir(parents=True)
        (eval_dir / f"{dialog}.txt").write_text(iemocap_eval_text(dialog))
        (eval_dir / "Categorical").mkdir()  # the real tree has these subfolders; they are not label files
        transcripts = base / "dialog" / "transcriptions"
        transcripts.mkdir(parents=True)
        (transcripts / f"{dialog}.txt").write_text(f"{dialog}_F000 [000.0000-002.5000]: Excuse me.\n")
    return root


@pytest.fixture
def iemocap_root(tmp_path):
    return make_iemocap(tmp_path / "iemocap")
