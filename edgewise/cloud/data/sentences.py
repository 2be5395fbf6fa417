"""Emotionally neutral sentences for the synthetic corpus, built from small word lists.

Every sentence is a declarative statement about everyday things (no questions, no exclamations,
no emotion words), so its text says nothing about the label it is spoken with; all classes draw
from the same pool. Each sentence is kept as a tuple of phrases, the units that the synthesizer
gives their own pitch and may separate with a pause.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass

TIMES = (
    "on Tuesday",
    "in the morning",
    "after lunch",
    "by noon",
    "later that week",
    "at ten o'clock",
    "before the meeting",
    "on the first day",
)
SUBJECTS = (
    "the driver",
    "my neighbour",
    "the teacher",
    "a clerk",
    "the student",
    "our manager",
    "the farmer",
    "his sister",
)
ACTIONS = (
    "moved the boxes",
    "checked the map",
    "opened the window",
    "painted the fence",
    "read the report",
    "carried the chairs",
    "counted the tickets",
    "cleaned the table",
    "parked the van",
    "sorted the letters",
)
PLACES = (
    "near the station",
    "in the kitchen",
    "behind the library",
    "by the river",
    "at the office",
    "next to the bakery",
    "on the second floor",
    "outside the school",
)
# Two phrase orders, so sentences do not all share one rhythm.
ORDERS = (("time", "subject_action", "place"), ("subject_action", "place", "time"))

DEFAULT_POOL_SIZE = 400
POOL_SEED = 20240611  # fixed: the pool is the same for every corpus seed


@dataclass(frozen=True)
class Sentence:
    """One sentence as phrases; ``text`` is the written form stored in the manifest."""

    phrases: tuple[str, ...]

    @property
    def text(self) -> str:
        body = " ".join(self.phrases)
        return body[0].upper() + body[1:] + "."


def all_sentences() -> list[Sentence]:
    """Every combination of the word lists, in a fixed order (10,240 sentences)."""
    out = []
    for order, time, subject, action, place in itertools.product(ORDERS, TIMES, SUBJECTS, ACTIONS, PLACES):
        slots = {"time": time, "subject_action": f"{subject} {action}", "place": place}
        out.append(Sentence(tuple(slots[name] for name in order)))
    return out


def sentence_pool(size: int = DEFAULT_POOL_SIZE) -> list[Sentence]:
    """A fixed, distinct sample of ``size`` sentences (the same list on every call)."""
    sentences = all_sentences()
    if not 0 < size <= len(sentences):
        raise ValueError(f"sentence pool size must be 1..{len(sentences)}, got {size}")
    return random.Random(POOL_SEED).sample(sentences, size)
