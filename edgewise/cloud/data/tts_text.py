"""Seeded English text for TTS corpora: varied sentences a voice must phrase and intone right.

Every sentence comes from one of several kinds (statements with clauses, lists, yes/no and wh-
questions, exclamations, numbers, dates, times, money, abbreviations, quotes), filled from word
lists with a seeded generator: the same seed gives the same sentences, and no data set is read.
"""

from __future__ import annotations

import numpy as np

from edgewise.textnorm import MONTHS

NAMES = [
    "Anna",
    "Ben",
    "Carla",
    "David",
    "Elena",
    "Frank",
    "Grace",
    "Henry",
    "Irene",
    "Jack",
    "Karen",
    "Leo",
    "Maria",
    "Nathan",
    "Olivia",
    "Peter",
    "Quinn",
    "Rachel",
    "Sam",
    "Tina",
    "Victor",
    "Wendy",
    "Yusuf",
    "Zoe",
    "Smith",
    "Brown",
    "Laura",
    "Martin",
]
PLACES = [
    "the station",
    "the old library",
    "the market",
    "the kitchen",
    "the river",
    "the garden",
    "the office",
    "the airport",
    "the hospital",
    "the museum",
    "the school",
    "the harbor",
    "the mountain cabin",
    "the bakery",
    "the parking lot",
    "the north gate",
    "Boston",
    "Chicago",
    "Denver",
    "Seattle",
    "London",
    "Paris",
    "the city center",
    "the village",
]
OBJECTS = [
    "the blue umbrella",
    "a cup of coffee",
    "the new printer",
    "three apples",
    "the heavy box",
    "a small dog",
    "the garden hose",
    "the red bicycle",
    "the weather report",
    "the train ticket",
    "an old camera",
    "the spare key",
    "the shopping list",
    "a warm blanket",
    "the radio",
    "the window",
    "the front door",
    "the map",
    "a letter",
    "the lamp",
    "the battery",
    "the sensor",
    "the package",
    "the kettle",
    "the thermostat",
    "the heater",
    "the fridge",
    "the laptop",
]
ADJECTIVES = [
    "quiet",
    "bright",
    "cold",
    "warm",
    "heavy",
    "strange",
    "simple",
    "careful",
    "early",
    "late",
    "broken",
    "clean",
    "noisy",
    "gentle",
    "tired",
    "happy",
    "ready",
    "busy",
    "empty",
    "full",
    "huge",
    "tiny",
]
VERBS_PAST = [
    "found",
    "moved",
    "opened",
    "closed",
    "cleaned",
    "checked",
    "carried",
    "painted",
    "fixed",
    "ordered",
    "borrowed",
    "returned",
    "packed",
    "dropped",
    "lifted",
    "watched",
    "forgot",
    "noticed",
    "bought",
    "sold",
]
VERBS_BASE = [
    "find",
    "move",
    "open",
    "close",
    "clean",
    "check",
    "carry",
    "paint",
    "fix",
    "order",
    "borrow",
    "return",
    "pack",
    "lift",
    "watch",
    "bring",
    "start",
    "stop",
    "call",
    "visit",
    "turn on",
    "turn off",
    "read",
    "write",
]
TIMES = [
    "this morning",
    "last night",
    "yesterday",
    "on Monday",
    "after lunch",
    "before dinner",
    "tomorrow",
    "next week",
    "at noon",
    "in the evening",
    "every Friday",
    "since Tuesday",
    "later today",
    "right now",
]
CONNECTORS = ("but", "and", "so", "because", "although", "while", "until", "unless", "after", "before")
EXCLAIM = [
    "What a lovely day",
    "That was amazing",
    "Watch out",
    "I can't believe it",
    "Well done",
    "Oh no",
    "How wonderful",
    "Stop right there",
    "That is incredible",
    "Hurry up",
    "Look at that",
    "Good morning",
]
WH = ("Where", "When", "Why", "How", "What")
UNITS = ("kg", "km", "cm", "ml", "mph")


def _ordinal_suffix(n: int) -> str:
    """The suffix of an ordinal: 1st, 2nd, 3rd, 4th, 11th, 12th, 13th, 21st."""
    if 10 <= n % 100 <= 20:
        return "th"
    return {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")


def _pick(rng: np.random.Generator, items):
    return items[int(rng.integers(len(items)))]


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _clause(rng: np.random.Generator) -> str:
    return f"{_pick(rng, NAMES)} {_pick(rng, VERBS_PAST)} {_pick(rng, OBJECTS)}"


def _statement(rng) -> str:
    parts = [_clause(rng)]
    if rng.random() < 0.6:
        parts.append(f" at {_pick(rng, PLACES)}")
    if rng.random() < 0.5:
        parts.append(f" {_pick(rng, TIMES)}")
    return _cap("".join(parts)) + "."


def _compound(rng) -> str:
    first = _clause(rng) + (f" {_pick(rng, TIMES)}" if rng.random() < 0.5 else "")
    second = f"{_pick(rng, NAMES)} {_pick(rng, VERBS_PAST)} {_pick(rng, OBJECTS)}"
    if rng.random() < 0.3:
        second += f" near {_pick(rng, PLACES)}"
    return _cap(f"{first}, {_pick(rng, CONNECTORS)} {second}") + "."


def _intro(rng) -> str:
    lead = _pick(rng, ("If it rains", "When the light turns green", "After the meeting", "Before you leave",
                       "As soon as possible", "In the end", "To be honest", "On the other hand",
                       "Later that evening", "For now"))  # fmt: skip
    return f"{lead}, {_pick(rng, ('please', 'we should', 'you can', 'they will'))} {_pick(rng, VERBS_BASE)} {_pick(rng, OBJECTS)}."


def _list(rng) -> str:
    n = int(rng.integers(3, 5))
    items = [o for o in rng.permutation(OBJECTS)[:n]]
    lead = _pick(rng, ("We need", "Please bring", "She packed", "The box holds", "Remember to check"))
    return f"{lead} {', '.join(items[:-1])}, and {items[-1]}."


def _yes_no(rng) -> str:
    aux = _pick(rng, ("Did", "Can", "Will", "Should", "Could"))
    verb = _pick(rng, VERBS_BASE)
    tail = f" at {_pick(rng, PLACES)}" if rng.random() < 0.5 else f" {_pick(rng, TIMES)}"
    return f"{aux} {_pick(rng, NAMES)} {verb} {_pick(rng, OBJECTS)}{tail}?"


def _wh(rng) -> str:
    wh = _pick(rng, WH)
    if wh == "What":
        return f"What did {_pick(rng, NAMES)} {_pick(rng, VERBS_BASE)} at {_pick(rng, PLACES)}?"
    return f"{wh} did {_pick(rng, NAMES)} {_pick(rng, VERBS_BASE)} {_pick(rng, OBJECTS)}?"


def _tag_question(rng) -> str:
    return f"{_cap(_clause(rng))} {_pick(rng, TIMES)}, didn't {_pick(rng, ('they', 'we', 'you'))}?"


def _exclamation(rng) -> str:
    lead = _pick(rng, EXCLAIM)
    if rng.random() < 0.5:
        return f"{lead}, the {_pick(rng, ADJECTIVES)} {_pick(rng, OBJECTS).split()[-1]} is back!"
    return f"{lead}!"


def _numbers(rng) -> str:
    kind = int(rng.integers(6))
    name = _pick(rng, NAMES)
    if kind == 0:
        return f"{name} paid ${rng.integers(1, 500)}.{rng.integers(0, 100):02d} for {_pick(rng, OBJECTS)}."
    if kind == 1:
        return f"The meeting is on {_pick(rng, MONTHS)} {rng.integers(1, 29)}, {rng.integers(1950, 2031)}."
    if kind == 2:
        hour, minute = int(rng.integers(1, 13)), int(rng.choice([0, 5, 15, 30, 45, int(rng.integers(60))]))
        return (
            f"The train leaves at {hour}:{minute:02d} {_pick(rng, ('am', 'pm'))} from {_pick(rng, PLACES)}."
        )
    if kind == 3:
        return f"About {rng.integers(2, 99)}% of the {rng.integers(100, 20000):,} visitors came {_pick(rng, TIMES)}."
    if kind == 4:
        return f"It is {rng.integers(2, 300)} {_pick(rng, UNITS)} to {_pick(rng, PLACES)}, {_pick(rng, ('Dr.', 'Mr.', 'Mrs.'))} {_pick(rng, NAMES)} said."
    floor = int(rng.integers(1, 12))
    return f"Room {rng.integers(1, 40)} is on the {floor}{_ordinal_suffix(floor)} floor, e.g. near the {_pick(rng, ADJECTIVES)} stairs."


def _quote(rng) -> str:
    said = _pick(rng, ("said", "asked", "shouted", "whispered"))
    if said == "asked":
        return f'"{_yes_no(rng)}" {_pick(rng, NAMES)} asked.'
    return f'"{_statement(rng)[:-1]}," {_pick(rng, NAMES)} {said}.'


KINDS = {
    "statement": (_statement, 0.16),
    "compound": (_compound, 0.14),
    "intro": (_intro, 0.08),
    "list": (_list, 0.08),
    "yes_no": (_yes_no, 0.12),
    "wh_question": (_wh, 0.08),
    "tag_question": (_tag_question, 0.04),
    "exclamation": (_exclamation, 0.08),
    "numbers": (_numbers, 0.14),
    "quote": (_quote, 0.08),
}


def generate_sentences(n: int, seed: int) -> list[tuple[str, str]]:
    """``n`` distinct ``(kind, sentence)`` pairs; the same seed gives the same list."""
    rng = np.random.default_rng(seed)
    names = list(KINDS)
    weights = np.array([KINDS[k][1] for k in names])
    weights = weights / weights.sum()
    seen: set[str] = set()
    out: list[tuple[str, str]] = []
    attempts = 0
    while len(out) < n:
        attempts += 1
        if attempts > 50 * n + 1000:
            raise RuntimeError(f"could only make {len(out)} distinct sentences of {n}")
        kind = names[int(rng.choice(len(names), p=weights))]
        text = KINDS[kind][0](rng)
        if text not in seen:
            seen.add(text)
            out.append((kind, text))
    return out
