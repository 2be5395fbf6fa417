"""Read a disambiguation corpus: the project's corpus format plus the columns that say which reading.

Made by ``edgewise data disambig`` (synthesized, or converted from a DEBATE release). On top of
what :func:`~edgewise.cloud.data.corpus.load_edgewise` checks (files, labels, speaker-disjoint
splits), every row needs ``template``, ``kind`` and ``meaning``, and its ``label`` is the reading's
index (``reading``, where present, must agree). How many readings a template has comes from
``corpus.json``'s ``templates`` table, else from the ``n_readings`` column, else from the largest
reading seen; a row whose reading is out of that range, or a template whose text or kind differs
between rows, is an error naming the manifest, the line and the column.
"""

from __future__ import annotations

import csv
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgewise.cloud.data.corpus import SPLITS, load_edgewise, read_corpus_info
from edgewise.errors import DataError

REQUIRED_COLUMNS = ("template", "kind", "meaning")


@dataclass(frozen=True)
class Item:
    """One utterance: which template it speaks and which of its readings it means."""

    path: Path
    split: str
    speaker: str
    template: str
    kind: str
    text: str
    reading: int
    meaning: str
    n_readings: int


@dataclass
class DisambigCorpus:
    root: Path
    items: list[Item]
    info: dict[str, Any] = field(default_factory=dict)

    def split(self, name: str) -> list[Item]:
        items = [it for it in self.items if it.split == name]
        if not items:
            raise DataError(f"{self.root}: the {name} split is empty")
        return items

    @property
    def kinds(self) -> list[str]:
        return sorted({it.kind for it in self.items})

    @property
    def n_classes(self) -> int:
        return max(it.n_readings for it in self.items)


def load_disambig(path: str | Path) -> DisambigCorpus:
    """The corpus at ``path`` with every row's template, kind, reading and meaning, checked."""
    root = Path(path).expanduser().resolve()
    load_edgewise(root)  # files, labels and speakers: the same checks as every corpus
    info = read_corpus_info(root)
    table = info.get("templates") if isinstance(info.get("templates"), dict) else {}
    rows: list[tuple[str, dict[str, str]]] = []
    for split in SPLITS:
        manifest = root / f"{split}.csv"
        with manifest.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            absent = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or ())]
            if absent:
                raise DataError(
                    f"{manifest}: missing column(s) {', '.join(absent)}; a disambiguation corpus has "
                    f"{', '.join(REQUIRED_COLUMNS)} beside path,label,speaker,text "
                    "(made by `edgewise data disambig`)"
                )
            for row in reader:
                rows.append((f"{manifest} line {reader.line_num}", {**row, "_split": split}))
    readings_of = _readings_per_template(rows, table)
    items, first_seen = [], {}
    for where, row in rows:
        template, kind, text = row["template"].strip(), row["kind"].strip(), row["text"]
        reading = _reading(where, row)
        for column, value in (("template", template), ("kind", kind), ("meaning", row["meaning"].strip())):
            if not value:
                raise DataError(f"{where}: column {column!r} is empty")
        seen = first_seen.setdefault(template, (where, kind, text))
        for column, value, before in (("kind", kind, seen[1]), ("text", text, seen[2])):
            if value != before:
                raise DataError(
                    f"{where}: column {column!r} is {value!r}, but template {template!r} has {before!r} "
                    f"at {seen[0]}"
                )
        n = readings_of[template]
        if reading >= n:
            raise DataError(f"{where}: column 'label': reading {reading}, but template {template!r} has {n}")
        rel = row["path"].strip()
        items.append(
            Item(
                path=Path(rel) if os.path.isabs(rel) else root / rel,
                split=row["_split"],
                speaker=row["speaker"].strip(),
                template=template,
                kind=kind,
                text=text,
                reading=reading,
                meaning=row["meaning"].strip(),
                n_readings=n,
            )
        )
    return DisambigCorpus(root=root, items=items, info=info)


def _reading(where: str, row: dict[str, str]) -> int:
    label = row["label"].strip()
    if not label.isdigit():
        raise DataError(f"{where}: column 'label': expected the reading's index (0, 1, ...), got {label!r}")
    reading = row.get("reading")
    if reading is not None and reading.strip() and reading.strip() != label:
        raise DataError(f"{where}: column 'reading' is {reading.strip()!r} but 'label' is {label!r}")
    return int(label)


def _readings_per_template(rows: list[tuple[str, dict[str, str]]], table: dict[str, Any]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for template, spec in table.items():
        if isinstance(spec, dict):
            listed = spec.get("readings", spec.get("meanings"))
            if isinstance(listed, list):
                counts[template] = len(listed)
    column: Counter[str] = Counter()
    for where, row in rows:
        template = row["template"].strip()
        if template in counts:
            continue
        value = (row.get("n_readings") or "").strip()
        if value:
            if not value.isdigit() or int(value) < 2:
                raise DataError(f"{where}: column 'n_readings': expected a whole number >= 2, got {value!r}")
            column[template] = max(column[template], int(value))
        elif row["label"].strip().isdigit():
            column[template] = max(column[template], int(row["label"].strip()) + 1, 2)
    return {**column, **counts}
