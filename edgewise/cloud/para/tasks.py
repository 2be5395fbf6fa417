"""The task registry: what each paralinguistic task predicts and which corpus field it reads.

Adding a task is one row in :data:`TASKS`. A task reads one field of each utterance: the
:class:`~edgewise.cloud.data.corpus.Utterance`'s own (``label``, ``speaker``, ``text``) or an extra
column of an edgewise corpus's manifests (``voice``, ``gender``, ``rate``, ``pitch``, ...), which
:func:`corpus_fields` reads, the one place that does.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgewise.cloud.data.corpus import SPLITS, Corpus
from edgewise.errors import ConfigError, DataError

CLASSIFICATION, REGRESSION = "classification", "regression"
PRIMARY_METRIC = {CLASSIFICATION: "ua", REGRESSION: "ccc"}


def _as_number(value: str) -> float:
    return float(value)


@dataclass(frozen=True)
class TaskSpec:
    name: str
    kind: str  # CLASSIFICATION | REGRESSION
    field: str  # the corpus field the target comes from
    target: Callable[[str], str | float]  # the field's text -> the target (a class name or a number)
    description: str

    @property
    def primary(self) -> str:
        return PRIMARY_METRIC[self.kind]


TASKS: dict[str, TaskSpec] = {
    t.name: t
    for t in (
        TaskSpec("emotion", CLASSIFICATION, "label", str, "the emotion label"),
        TaskSpec("gender", CLASSIFICATION, "gender", str, "the voice's gender"),
        TaskSpec(
            "accent",
            CLASSIFICATION,
            "voice",
            lambda voice: voice.split("+", 1)[0],
            "the voice's language and accent (en-us+m3 -> en-us)",
        ),
        TaskSpec("rate", REGRESSION, "rate", _as_number, "the generator's speaking rate (words per minute)"),
        TaskSpec("pitch", REGRESSION, "pitch", _as_number, "the generator's pitch setting (espeak-ng -p)"),
        TaskSpec(
            "disambig",
            CLASSIFICATION,
            "reading",
            str,
            "which reading of the text was meant (a corpus of edgewise data disambig)",
        ),
    )
}


def parse_tasks(values: Sequence[str] | None) -> list[TaskSpec] | None:
    """``["emotion,gender", "rate"]`` -> the specs in order; None when none were given."""
    if not values:
        return None
    names = [n.strip() for v in values for n in v.split(",") if n.strip()]
    unknown = [n for n in names if n not in TASKS]
    if unknown:
        raise ConfigError(f"--tasks: unknown task(s) {', '.join(unknown)}; valid tasks: {', '.join(TASKS)}")
    if not names:
        raise ConfigError(f"--tasks: no task named; valid tasks: {', '.join(TASKS)}")
    return [TASKS[n] for n in dict.fromkeys(names)]


def corpus_fields(corpus: Corpus) -> list[dict[str, str]]:
    """Every field of each utterance, in ``corpus.utterances`` order: the Utterance's own fields and,
    for an edgewise corpus, the extra columns of its manifests (an empty cell is left out)."""
    extra: dict[str, dict[str, str]] = {}
    if corpus.source == "edgewise":
        for split in SPLITS:
            manifest = corpus.root / f"{split}.csv"
            with manifest.open(newline="", encoding="utf-8-sig") as fh:
                for row in csv.DictReader(fh):
                    rel = (row.get("path") or "").strip()
                    path = Path(rel) if os.path.isabs(rel) else corpus.root / rel
                    extra[str(path)] = {k: v.strip() for k, v in row.items() if k and v and v.strip()}
    out = []
    for u in corpus.utterances:
        own = {"label": u.label, "speaker": u.speaker, "split": u.split, "text": u.text}
        out.append({**extra.get(str(u.path), {}), **{k: v for k, v in own.items() if v}})
    return out


def supported(task: TaskSpec, fields: list[dict[str, str]]) -> bool:
    """Whether every utterance has the field the task reads."""
    return all(task.field in row for row in fields)


def check_fields(tasks: Sequence[TaskSpec], corpus: Corpus, fields: list[dict[str, str]]) -> None:
    """Refuse a task whose field the corpus lacks (for all utterances or some), naming all three."""
    for task in tasks:
        lacking = [u for u, row in zip(corpus.utterances, fields) if task.field not in row]
        if not lacking:
            continue
        if len(lacking) == len(fields):
            raise DataError(
                f"task {task.name!r} needs the corpus field {task.field!r}, which the {corpus.source} "
                f"corpus {corpus.root} does not have"
            )
        raise DataError(
            f"task {task.name!r} needs the corpus field {task.field!r}: {len(lacking)} of {len(fields)} "
            f"utterances of {corpus.root} have none (first: {lacking[0].path})"
        )


@dataclass
class Targets:
    """One task's targets for every utterance: class indices (with ``classes``) or numbers."""

    values: np.ndarray  # int64 class indices or float64 numbers, in corpus.utterances order
    classes: tuple[str, ...] | None


def task_targets(task: TaskSpec, corpus: Corpus, fields: list[dict[str, str]]) -> Targets:
    raw = []
    for u, row in zip(corpus.utterances, fields):
        try:
            raw.append(task.target(row[task.field]))
        except ValueError:
            raise DataError(
                f"task {task.name!r}: {u.path}: field {task.field!r} is {row[task.field]!r}, not a number"
            ) from None
    if task.kind == REGRESSION:
        return Targets(np.asarray(raw, dtype=np.float64), None)
    classes = tuple(sorted(set(raw)))
    index = {c: i for i, c in enumerate(classes)}
    return Targets(np.asarray([index[v] for v in raw], dtype=np.int64), classes)
