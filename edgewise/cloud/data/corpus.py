"""The corpus contract: labelled utterances in speaker-disjoint train/val/test splits.

The trainer sees every corpus through :func:`load_corpus`, whatever made it: edgewise's own
layout (written by ``edgewise data speech`` or by hand) or a real corpus in its published layout
(RAVDESS, CREMA-D, IEMOCAP; see :mod:`edgewise.cloud.data.corpora`).

edgewise's layout::

    DIR/corpus.json           schema_version, labels, how it was made, speakers and counts per split
    DIR/train.csv             path,label,speaker,text[,extra columns]; paths relative to DIR
    DIR/val.csv
    DIR/test.csv
    DIR/wavs/...              16 kHz mono PCM16

Reading checks every row and refuses, with the file and line, a missing audio file, a label that
is not in ``corpus.json``, a missing column, and a speaker that appears in two splits.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgewise.errors import ConfigError, DataError
from edgewise.fsutil import atomic_path, write_text_atomic

EMOTIONS = ("neutral", "happy", "sad", "angry")
SPLITS = ("train", "val", "test")
SCHEMA_VERSION = 1
CORPUS_FILE = "corpus.json"
MANIFEST_COLUMNS = ("path", "label", "speaker", "text")


@dataclass(frozen=True)
class Utterance:
    path: Path  # absolute
    label: str
    speaker: str
    split: str
    text: str = ""


@dataclass
class Corpus:
    root: Path
    labels: tuple[str, ...]
    utterances: list[Utterance]
    source: str  # "edgewise" | "iemocap" | "ravdess" | "cremad"

    def split(self, name: str) -> list[Utterance]:
        """The utterances of one split; an unknown or empty split is a DataError."""
        if name not in SPLITS:
            raise DataError(f"unknown split {name!r}; expected one of {', '.join(SPLITS)}")
        items = [u for u in self.utterances if u.split == name]
        if not items:
            raise DataError(f"{self.root}: the {name} split of this {self.source} corpus is empty")
        return items

    def speakers(self, name: str) -> list[str]:
        """Sorted speaker ids of one split (empty list for an empty split)."""
        return sorted({u.speaker for u in self.utterances if u.split == name})

    def counts(self) -> dict[str, dict[str, int]]:
        """Utterances per split and label, every split and label present (zeros included)."""
        table = {s: dict.fromkeys(self.labels, 0) for s in SPLITS}
        for u in self.utterances:
            table[u.split][u.label] += 1
        return table


@dataclass(frozen=True)
class Layout:
    """One on-disk corpus layout that :func:`load_corpus` can read."""

    name: str
    pattern: str  # what the directory looks like, shown when nothing matches
    detect: Callable[[Path], bool]
    load: Callable[[Path], Corpus]


def layouts() -> tuple[Layout, ...]:
    """Every supported layout, in detection order."""
    from edgewise.cloud.data import corpora

    own = Layout(
        "edgewise",
        "DIR/corpus.json with DIR/train.csv, val.csv, test.csv (made by `edgewise data speech`)",
        is_edgewise_corpus,
        load_edgewise,
    )
    return (own, *corpora.LAYOUTS)


def load_corpus(path: str | Path, fmt: str = "auto") -> Corpus:
    """Read the corpus at ``path``; ``fmt`` is ``auto`` or one of the layout names."""
    root = Path(path).expanduser().resolve()
    if root.is_file() and root.name == CORPUS_FILE:
        root = root.parent
    if not root.is_dir():
        raise DataError(f"{root}: corpus directory not found")
    known = layouts()
    names = [layout.name for layout in known]
    if fmt != "auto":
        if fmt not in names:
            raise ConfigError(f"unknown corpus format {fmt!r}; expected auto or one of {', '.join(names)}")
        return next(layout for layout in known if layout.name == fmt).load(root)
    for layout in known:
        if layout.detect(root):
            return layout.load(root)
    listing = "\n".join(f"  {layout.name}: {layout.pattern}" for layout in known)
    raise DataError(f"{root}: not a corpus in any supported layout; expected one of:\n{listing}")


def check_speakers_disjoint(utterances: Iterable[Utterance], where: str | Path) -> None:
    """Refuse a speaker who appears in more than one split (it would leak into evaluation)."""
    splits_of: dict[str, set[str]] = {}
    for u in utterances:
        splits_of.setdefault(u.speaker, set()).add(u.split)
    shared = {spk: s for spk, s in splits_of.items() if len(s) > 1}
    if shared:
        order = {name: i for i, name in enumerate(SPLITS)}
        shown = "; ".join(
            f"{spk} ({', '.join(sorted(s, key=lambda x: order.get(x, 99)))})"
            for spk, s in sorted(shared.items())[:10]
        )
        raise DataError(
            f"{where}: splits must be speaker-disjoint, but {len(shared)} speaker(s) appear in "
            f"more than one split: {shown}"
        )


# --- edgewise's own layout -------------------------------------------------------------------


def is_edgewise_corpus(root: Path) -> bool:
    return (root / CORPUS_FILE).is_file()


def read_corpus_info(root: Path) -> dict[str, Any]:
    """Read and check ``corpus.json`` (schema version and labels)."""
    path = root / CORPUS_FILE
    if not path.is_file():
        raise DataError(f"{path}: not found; an edgewise corpus has {CORPUS_FILE} beside its manifests")
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(info, dict):
        raise DataError(f"{path}: expected a JSON object, got {type(info).__name__}")
    version = info.get("schema_version")
    if version != SCHEMA_VERSION:
        raise DataError(f"{path}: field 'schema_version': expected {SCHEMA_VERSION}, got {version!r}")
    labels = info.get("labels")
    if (
        not isinstance(labels, list)
        or not labels
        or not all(isinstance(x, str) and x for x in labels)
        or len(set(labels)) != len(labels)
    ):
        raise DataError(f"{path}: field 'labels': expected a list of distinct label names, got {labels!r}")
    return info


def load_edgewise(root: Path) -> Corpus:
    """Read ``corpus.json`` and the three split manifests, validating every row."""
    labels = tuple(read_corpus_info(root)["labels"])
    utterances: list[Utterance] = []
    missing: list[str] = []  # every row whose audio file is missing, reported together
    for split in SPLITS:
        manifest = root / f"{split}.csv"
        if not manifest.is_file():
            raise DataError(
                f"{manifest}: manifest not found; an edgewise corpus has "
                f"{', '.join(f'{s}.csv' for s in SPLITS)} beside {CORPUS_FILE}"
            )
        utterances.extend(read_manifest(manifest, root, labels, split, missing=missing))
    if missing:
        raise DataError(f"{root}: {len(missing)} audio file(s) not found:\n  " + "\n  ".join(missing))
    check_speakers_disjoint(utterances, root)
    return Corpus(root=root, labels=labels, utterances=utterances, source="edgewise")


def read_manifest(
    manifest: Path, root: Path, labels: Sequence[str], split: str, *, missing: list[str] | None = None
) -> list[Utterance]:
    """Rows of one split manifest as utterances; any bad row is a DataError naming its line.

    With ``missing``, a row whose audio file does not exist is appended to it (one line naming the
    row and the file) and left out, so the caller can report every missing file at once.
    """
    expected = ", ".join(MANIFEST_COLUMNS)
    with manifest.open(newline="", encoding="utf-8-sig") as fh:  # -sig: tolerate a BOM from spreadsheets
        reader = csv.DictReader(fh)
        header = reader.fieldnames
        if not header:
            raise DataError(f"{manifest}: empty file; expected a header with columns {expected}")
        absent = [c for c in MANIFEST_COLUMNS if c not in header]
        if absent:
            raise DataError(
                f"{manifest}: missing column(s) {', '.join(absent)}; expected columns {expected} "
                f"(extra columns allowed), got {', '.join(header)}"
            )
        out = []
        for row in reader:
            where = f"{manifest} line {reader.line_num}"
            utt = _manifest_row(row, where, root, labels, split, len(header))
            if not utt.path.is_file():
                problem = f"{where}: audio file not found: {row['path'].strip()} (looked for {utt.path})"
                if missing is None:
                    raise DataError(problem)
                missing.append(problem)
                continue
            out.append(utt)
    return out


def _manifest_row(
    row: dict[str | None, Any], where: str, root: Path, labels: Sequence[str], split: str, n_columns: int
) -> Utterance:
    surplus = len(row.get(None) or [])  # DictReader keeps surplus fields under None ...
    short = sum(v is None for k, v in row.items() if k is not None)  # ... and fills short rows with None
    if surplus or short:
        got = n_columns + surplus - short
        raise DataError(f"{where}: expected {n_columns} fields as in the header, got {got}")
    rel, label, speaker = row["path"].strip(), row["label"].strip(), row["speaker"].strip()
    if not rel:
        raise DataError(f"{where}: empty 'path'")
    if label not in labels:
        raise DataError(f"{where}: unknown label {label!r}; allowed labels: {', '.join(labels)}")
    if not speaker:
        raise DataError(f"{where}: empty 'speaker'; every utterance needs a speaker id")
    path = Path(rel) if os.path.isabs(rel) else root / rel
    return Utterance(path=path, label=label, speaker=speaker, split=split, text=row["text"])


def write_manifests(
    out_dir: str | Path,
    utterances: Sequence[Utterance],
    labels: Sequence[str],
    meta: Mapping[str, Any],
    *,
    extra_columns: Sequence[Mapping[str, Any]] | None = None,
) -> None:
    """Write ``corpus.json`` and one manifest per split into ``out_dir``.

    Paths under ``out_dir`` are stored relative to it, others absolute. ``meta`` is merged into
    ``corpus.json`` after schema_version and labels; speakers and counts per split are computed.
    ``extra_columns``, if given, holds one mapping per utterance of additional manifest columns.
    """
    out_dir = Path(out_dir)
    if extra_columns is not None and len(extra_columns) != len(utterances):
        raise ValueError(f"extra_columns has {len(extra_columns)} rows for {len(utterances)} utterances")
    extras: Sequence[Mapping[str, Any]] = extra_columns or [{}] * len(utterances)
    for u in utterances:
        if u.split not in SPLITS:
            raise DataError(f"{u.path}: unknown split {u.split!r}; expected one of {', '.join(SPLITS)}")
        if u.label not in labels:
            raise DataError(f"{u.path}: unknown label {u.label!r}; allowed labels: {', '.join(labels)}")
    check_speakers_disjoint(utterances, out_dir)
    corpus = Corpus(root=out_dir, labels=tuple(labels), utterances=list(utterances), source="edgewise")
    info = {
        "schema_version": SCHEMA_VERSION,
        "labels": list(labels),
        **meta,
        "speakers": {s: corpus.speakers(s) for s in SPLITS},
        "counts": corpus.counts(),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out_dir / CORPUS_FILE, json.dumps(info, indent=2) + "\n")
    extra_names = list(dict.fromkeys(k for row in extras for k in row))
    for split in SPLITS:
        rows = [(u, x) for u, x in zip(utterances, extras) if u.split == split]
        _write_manifest(out_dir / f"{split}.csv", out_dir, rows, extra_names)


def _write_manifest(
    manifest: Path, out_dir: Path, rows: list[tuple[Utterance, Mapping[str, Any]]], extra_names: list[str]
) -> None:
    with atomic_path(manifest) as tmp, tmp.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow([*MANIFEST_COLUMNS, *extra_names])
        for u, extra in rows:
            writer.writerow(
                [
                    _manifest_path(Path(u.path), out_dir),
                    u.label,
                    u.speaker,
                    u.text,
                    *(extra.get(k, "") for k in extra_names),
                ]
            )


def _manifest_path(path: Path, out_dir: Path) -> str:
    """``path`` relative to ``out_dir`` in POSIX form when it lies inside it, else absolute."""
    for base, target in ((out_dir.absolute(), path.absolute()), (out_dir.resolve(), path.resolve())):
        if target.is_relative_to(base):
            return target.relative_to(base).as_posix()
    return str(path.absolute())
