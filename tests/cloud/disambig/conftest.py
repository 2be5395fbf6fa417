"""Fixtures: one small synthesized disambiguation corpus per session (a few templates of every kind
by 4 espeak-ng speakers), and fake DEBATE-style releases built in tmp_path from short tones."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tests.conftest import missing_tool

SEED = 3
N_SPEAKERS = 4  # 20% held out: 1 val, 1 test, 2 train
TEMPLATES = ("eat-grandma", "telescope", "took-money", "fish-tonight", "going-home", "passed-exam")
READINGS = 2 + 2 + 3 + 2 + 2 + 2  # of those templates


def require_tools() -> None:
    if shutil.which("espeak-ng") is None or shutil.which("sox") is None:
        missing_tool("espeak-ng and sox are not installed (apt-get install espeak-ng sox)")


@pytest.fixture(scope="session")
def disambig_corpus(tmp_path_factory) -> Path:
    """The corpus folder: TEMPLATES x N_SPEAKERS, no background noise (the acoustic checks read
    pitch and pauses; the eval tests do not need noise either)."""
    require_tools()
    from edgewise.cli import main

    out = tmp_path_factory.mktemp("disambig") / "corpus"
    args = ["data", "disambig", "--out", str(out), "--n-speakers", str(N_SPEAKERS), "--seed", str(SEED)]
    assert (
        main([*args, "--templates", ",".join(TEMPLATES), "--workers", "2", "--no-noise", "--no-progress"])
        == 0
    )
    return out


def write_tone(path: Path, freq: float, seconds: float = 0.3, sample_rate: int = 16000) -> Path:
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(
        str(path), (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32), sample_rate, subtype="PCM_16"
    )
    return path


DEBATE_ITEMS = {
    "p01": ("task_pause", "他说不过你", ["he cannot out-argue you", "he said no more than you"]),
    "s01": (
        "Task_Stres",
        "我没说他拿了钱",
        ["someone else said it", "he took something else", "I only hinted"],
    ),
}
DEBATE_SPEAKERS = ("S01", "S02", "S03", "S04", "S05", "S06", "S07")


def debate_rows() -> list[dict[str, str]]:
    """Every speaker records every reading of every item (answer as an index)."""
    rows = []
    for speaker in DEBATE_SPEAKERS:
        for item, (task, text, meanings) in DEBATE_ITEMS.items():
            for answer in range(len(meanings)):
                rows.append(
                    {
                        "audio": f"audio/{speaker}/{item}_{answer}.wav",
                        "text": text,
                        "meanings": " | ".join(meanings),
                        "answer": str(answer),
                        "speaker": speaker,
                        "task": task,
                        "item": item,
                    }
                )
    return rows


def make_debate(
    root: Path, rows: list[dict] | None = None, *, jsonl: bool = False, sample_rate: int = 44100
) -> Path:
    """A fake release: tones at ``sample_rate`` and metadata.csv (or .jsonl) with ``rows``."""
    rows = debate_rows() if rows is None else rows
    for k, row in enumerate(rows):
        if not str(row.get("audio", "")).startswith("missing/"):
            write_tone(root / row["audio"], 150.0 + 10 * k, sample_rate=sample_rate)
    root.mkdir(parents=True, exist_ok=True)
    if jsonl:
        lines = [json.dumps({**r, "meanings": r["meanings"].split(" | ")}, ensure_ascii=False) for r in rows]
        (root / "metadata.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    else:
        with (root / "metadata.csv").open("w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    return root
