"""Convert a DEBATE-style release into the disambiguation corpus format.

DEBATE (Guo et al., 2025: Mandarin, 1,001 ambiguous sentences each recorded by 10 speakers, three
tasks: pronunciation, pause, stress) could not be downloaded here, and its release does not
document its file layout, so this reads the following **assumed** layout; a release laid out
otherwise needs its metadata rewritten into it (one row per recording)::

    ROOT/metadata.csv      (or ROOT/metadata.jsonl: one JSON object per line, same fields)
    ROOT/<audio files>     any layout; metadata names each file relative to ROOT

    field      meaning
    audio      the recording, a path relative to ROOT (wav, flac, ogg: anything soundfile reads)
    text       the ambiguous sentence as written (the same for every reading)
    meanings   the candidate meanings: in CSV separated by " | " (or a JSON list); in JSONL a list
    answer     which meaning the speaker intended: a 0-based index, or a letter A, B, C, ...
    speaker    the speaker's id
    task       pause, stress or pronunciation (also Task_Pause, Task_Stres, Task_Proun)
    item       optional: the sentence's id, shared by its recordings (default: from the text)

Every row is checked before any audio is converted, and every bad row is reported at once, each
named by file, row and column (a missing or unreadable audio file, an empty text, fewer than two
meanings, an answer out of range, an unknown task, an item whose text or meanings differ between
rows). The audio is converted to 16 kHz mono PCM16 under ``wavs/SPEAKER/``; splits are by speaker
(sorted ids: the last 15% test, the 15% before them val, at least one each); ``label`` is the
answer's index, ``template`` the item, ``kind`` the task as a disambiguation kind (pause ->
grouping, stress -> focus, pronunciation -> pronunciation), ``meaning`` the intended meaning.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import re
import shutil
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgewise.cloud.data.corpus import Corpus, Utterance, load_edgewise, write_manifests
from edgewise.errors import DataError

log = logging.getLogger(__name__)

METADATA_FILES = ("metadata.csv", "metadata.jsonl")
FIELDS = ("audio", "text", "meanings", "answer", "speaker", "task")
TASKS = {
    "pause": "grouping",
    "task_pause": "grouping",
    "stress": "focus",
    "task_stres": "focus",
    "task_stress": "focus",
    "pronunciation": "pronunciation",
    "task_proun": "pronunciation",
    "task_pronunciation": "pronunciation",
}
HELDOUT_FRACTION = 0.15
SAMPLE_RATE = 16000
MAX_LISTED = 30  # bad rows shown in one error; the count says how many more


@dataclass(frozen=True)
class DebateRow:
    where: str  # "metadata.csv row 3"
    audio: Path
    text: str
    meanings: tuple[str, ...]
    answer: int
    speaker: str
    task: str
    item: str

    @property
    def kind(self) -> str:
        return TASKS[self.task.lower()]


def find_metadata(root: Path) -> Path:
    found = [root / name for name in METADATA_FILES if (root / name).is_file()]
    if not found:
        raise DataError(
            f"{root}: no {' or '.join(METADATA_FILES)}; expected the DEBATE layout described in "
            "`edgewise data disambig --help` (one row per recording: audio, text, meanings, answer, "
            "speaker, task)"
        )
    if len(found) > 1:
        raise DataError(f"{root}: both {' and '.join(f.name for f in found)}; keep one")
    return found[0]


def read_debate(root: str | Path) -> list[DebateRow]:
    """Every row of the release's metadata, checked; all bad rows reported in one DataError."""
    root = Path(root).expanduser().resolve()
    if not root.is_dir():
        raise DataError(f"{root}: DEBATE folder not found")
    metadata = find_metadata(root)
    rows, problems = [], []
    for where, record in _records(metadata):
        row = _check_row(root, where, record, problems)
        if row is not None:
            rows.append(row)
    _check_items(rows, problems)
    problems.sort(key=_row_number)
    if problems:
        shown = problems[:MAX_LISTED]
        more = f"\n  ... and {len(problems) - len(shown)} more" if len(problems) > len(shown) else ""
        raise DataError(f"{metadata}: {len(problems)} bad row(s):\n  " + "\n  ".join(shown) + more)
    if not rows:
        raise DataError(f"{metadata}: no rows")
    return rows


def _row_number(problem: str) -> int:
    """The row or line number a problem names first, to list problems in file order."""
    found = re.search(r" (?:row|line) (\d+)", problem)
    return int(found.group(1)) if found else 0


def _records(metadata: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    name = metadata.name
    if metadata.suffix == ".csv":
        with metadata.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            absent = [f for f in FIELDS if f not in (reader.fieldnames or ())]
            if absent:
                raise DataError(
                    f"{metadata}: missing column(s) {', '.join(absent)}; expected {', '.join(FIELDS)} "
                    f"(and optionally item), got {', '.join(reader.fieldnames or ()) or 'no header'}"
                )
            for k, record in enumerate(reader, start=1):
                yield f"{name} row {k} (line {reader.line_num})", record
        return
    with metadata.open(encoding="utf-8-sig") as fh:
        for line_no, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            where = f"{name} line {line_no}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{where}: not valid JSON ({exc})") from None
            if not isinstance(record, dict):
                raise DataError(f"{where}: expected a JSON object, got {type(record).__name__}")
            yield where, record


def _check_row(root: Path, where: str, record: dict[str, Any], problems: list[str]) -> DebateRow | None:
    before = len(problems)

    def bad(column: str, message: str) -> None:
        problems.append(f"{where}, column {column!r}: {message}")

    values = {f: record.get(f) for f in FIELDS}
    for f in FIELDS:
        if values[f] is None or (isinstance(values[f], str) and not values[f].strip()):
            bad(f, "missing or empty")
    if len(problems) > before:
        return None
    audio = root / str(values["audio"]).strip()
    if not audio.is_file():
        bad("audio", f"file not found: {values['audio']}")
    meanings = _meanings(values["meanings"])
    if meanings is None or len(meanings) < 2:
        bad("meanings", f"expected at least two candidate meanings, got {values['meanings']!r}")
    elif len(set(meanings)) != len(meanings):
        bad("meanings", f"the same meaning is listed twice: {values['meanings']!r}")
    answer = _answer(values["answer"])
    if answer is None:
        bad("answer", f"expected a 0-based index or a letter A, B, ..., got {values['answer']!r}")
    elif meanings and len(meanings) >= 2 and answer >= len(meanings):
        bad("answer", f"{values['answer']!r} is out of range for {len(meanings)} meanings")
    task = str(values["task"]).strip()
    if task.lower() not in TASKS:
        bad("task", f"unknown task {task!r}; expected pause, stress or pronunciation (or Task_Pause, ...)")
    if len(problems) > before:
        return None
    text = str(values["text"]).strip()
    item = str(record.get("item") or "").strip() or "t" + hashlib.sha1(text.encode()).hexdigest()[:10]
    return DebateRow(
        where=where,
        audio=audio,
        text=text,
        meanings=tuple(meanings or ()),
        answer=int(answer or 0),
        speaker=str(values["speaker"]).strip(),
        task=task,
        item=item,
    )


def _meanings(value: Any) -> list[str] | None:
    if isinstance(value, list):
        items = value
    elif isinstance(value, str) and value.strip().startswith("["):
        try:
            items = json.loads(value)
        except json.JSONDecodeError:
            return None
        if not isinstance(items, list):
            return None
    elif isinstance(value, str):
        items = value.split("|")
    else:
        return None
    out = [str(m).strip() for m in items]
    return None if any(not m for m in out) else out


def _answer(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value >= 0 else None
    text = str(value).strip()
    if text.isdigit():
        return int(text)
    if len(text) == 1 and text.upper() in "ABCDEFGH":
        return ord(text.upper()) - ord("A")
    return None


def _check_items(rows: list[DebateRow], problems: list[str]) -> None:
    """Every recording of an item has the item's text, meanings and task."""
    first: dict[str, DebateRow] = {}
    for row in rows:
        seen = first.setdefault(row.item, row)
        for column, mine, theirs in (
            ("text", row.text, seen.text),
            ("meanings", row.meanings, seen.meanings),
            ("task", row.kind, seen.kind),
        ):
            if mine != theirs:
                problems.append(
                    f"{row.where}, column {column!r}: item {row.item!r} has {theirs!r} at {seen.where}, "
                    f"here {mine!r}"
                )


def speaker_splits(speakers: list[str]) -> dict[str, str]:
    """Speaker -> split by sorted id: the last 15% test, the 15% before them val (at least 1 each)."""
    ordered = sorted(set(speakers))
    if len(ordered) < 3:
        raise DataError(f"DEBATE: need at least 3 speakers for speaker-disjoint splits, found {len(ordered)}")
    held = max(1, round(len(ordered) * HELDOUT_FRACTION))
    n_train = len(ordered) - 2 * held
    return {
        s: "train" if i < n_train else "val" if i < n_train + held else "test" for i, s in enumerate(ordered)
    }


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._") or "x"


def convert_debate(
    root: str | Path, out_dir: str | Path, *, force: bool = False, progress: bool = True
) -> Corpus:
    """Check the release at ``root``, convert its audio and write the corpus to ``out_dir``."""
    from tqdm import tqdm

    from edgewise.audio import load_audio, write_wav
    from edgewise.cloud.data.synth import _move_into_place, check_target
    from edgewise.errors import AudioError

    root = Path(root).expanduser().resolve()
    out = Path(out_dir).expanduser().absolute()
    check_target(out, force)
    rows = read_debate(root)
    split_of = speaker_splits([r.speaker for r in rows])
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        utterances, extras, unreadable = [], [], []
        for k, row in enumerate(
            tqdm(rows, desc="converting", unit="file", file=sys.stderr, disable=not progress)
        ):
            try:
                audio = load_audio(row.audio, SAMPLE_RATE)
            except AudioError as exc:
                unreadable.append(f"{row.where}, column 'audio': {exc}")
                continue
            path = staging / "wavs" / _safe(row.speaker) / f"{k:05d}-{_safe(row.item)}.wav"
            write_wav(path, audio, SAMPLE_RATE)
            utterances.append(
                Utterance(
                    path=path,
                    label=str(row.answer),
                    speaker=row.speaker,
                    split=split_of[row.speaker],
                    text=row.text,
                )
            )
            extras.append(
                {
                    "template": row.item,
                    "kind": row.kind,
                    "reading": row.answer,
                    "meaning": row.meanings[row.answer],
                    "n_readings": len(row.meanings),
                    "task": row.task,
                    "source": row.audio.relative_to(root).as_posix(),
                }
            )
        if unreadable:
            raise DataError(
                f"{root}: {len(unreadable)} audio file(s) cannot be read:\n  " + "\n  ".join(unreadable)
            )
        labels = [str(k) for k in range(max(len(r.meanings) for r in rows))]
        write_manifests(staging, utterances, labels, debate_meta(root, rows, split_of), extra_columns=extras)
        check_target(out, force)
        _move_into_place(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    log.info("converted %d DEBATE recordings from %s into %s", len(rows), root, out)
    return load_edgewise(out)


def debate_meta(root: Path, rows: list[DebateRow], split_of: dict[str, str]) -> dict[str, Any]:
    templates: dict[str, Any] = {}
    for row in rows:
        templates.setdefault(row.item, {"kind": row.kind, "text": row.text, "meanings": list(row.meanings)})
    return {
        "task": "disambig",
        "source": "debate",
        "sample_rate": SAMPLE_RATE,
        "generator": {"command": "edgewise data disambig --debate", "from": str(root)},
        "templates": templates,
        "speaker_splits": dict(sorted(split_of.items())),
    }
