"""The disambiguation templates: one text, 2 or 3 readings, each reading marked up in SSML.

Three kinds, each a way prosody picks a meaning that the words leave open:

- ``grouping``: where the phrase breaks fall (a ``<break>`` and a comma's boundary tone):
  "Let's eat, | grandma" vs "Let's eat grandma"; attachment and coordination ambiguities.
- ``focus``: which word carries the contrastive stress (a raised, slower, louder word inside
  ``<emphasis>``): "I didn't say he took the *money*" vs "*I* didn't say ...".
- ``question``: the terminal intonation: a falling end (statement) vs a rising end (question).

A template row is ``id``, ``kind``, ``text`` (plain, without markup or final punctuation) and
``readings``: ``[{meaning, ssml}]``. Every reading's SSML must speak exactly the template's words
(checked), so the text alone never tells the readings apart. The table below is written with a
small markup (``|`` a break, ``*word*`` the stressed word) turned into SSML by the row helpers;
your own table (``--template-file``, YAML: ``templates: [{id, kind, text, readings: [{meaning,
ssml}]}]``) gives SSML directly and is checked the same way.

The sentences are the textbook examples of each ambiguity, written here; no data set is copied.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from edgewise.config import StrictModel, load_config
from edgewise.errors import ConfigError

KINDS = ("grouping", "focus", "question")
MAX_READINGS = 4
BREAK_MS = 400
STRESS = '<emphasis level="strong"><prosody pitch="+50%" rate="75%" volume="+6dB">{}</prosody></emphasis>'
RISING = '<prosody pitch="+35%">{}?</prosody>'  # the last word of a question
FALLING = '<prosody pitch="-15%">{}.</prosody>'  # the last word of a statement
_WORD = re.compile(r"[a-z0-9']+")


class Reading(StrictModel):
    meaning: str = Field(min_length=1)
    ssml: str = Field(min_length=1)


class Template(StrictModel):
    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]*$", max_length=40)
    kind: Literal["grouping", "focus", "question"]
    text: str = Field(min_length=1)
    readings: list[Reading] = Field(min_length=2, max_length=MAX_READINGS)

    @model_validator(mode="after")
    def _readings_speak_the_text(self) -> Template:
        check_readings(self)
        return self

    def summary(self) -> dict:
        return {"kind": self.kind, "text": self.text, "readings": [r.model_dump() for r in self.readings]}


class TemplateTable(StrictModel):
    templates: list[Template] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_ids(self) -> TemplateTable:
        ids = [t.id for t in self.templates]
        repeated = sorted({i for i in ids if ids.count(i) > 1})
        if repeated:
            raise ValueError(f"template id(s) used more than once: {', '.join(repeated)}")
        return self


def words(text: str) -> list[str]:
    """The words of ``text`` (or of SSML, tags removed): lower case, punctuation dropped."""
    return _WORD.findall(re.sub(r"<[^>]*>", " ", text).lower().replace("\u2019", "'"))


def check_readings(template: Template) -> None:
    """Every reading is well-formed ``<speak>`` SSML of exactly the template's words; readings and
    meanings are distinct. Raises ValueError naming the reading."""
    expected = words(template.text)
    if not expected:
        raise ValueError(f"template {template.id!r}: text {template.text!r} has no words")
    for k, reading in enumerate(template.readings):
        where = f"template {template.id!r} reading {k}"
        try:
            root = ET.fromstring(reading.ssml)
        except ET.ParseError as exc:
            raise ValueError(f"{where}: ssml is not well-formed XML ({exc})") from None
        if root.tag != "speak":
            raise ValueError(f"{where}: ssml must be one <speak> element, got <{root.tag}>")
        spoken = words("".join(root.itertext()))
        if spoken != expected:
            raise ValueError(
                f"{where}: ssml speaks {' '.join(spoken)!r}, not the template's words {' '.join(expected)!r}"
            )
    for field in ("ssml", "meaning"):
        values = [getattr(r, field) for r in template.readings]
        if len(set(values)) != len(values):
            raise ValueError(f"template {template.id!r}: two readings have the same {field}")


# --- the row helpers: a small markup turned into SSML -----------------------------------------


def marked_to_ssml(marked: str, break_ms: int = BREAK_MS) -> str:
    """``|`` -> ``<break time=.../>``, ``*word*`` -> the stressed word, wrapped in ``<speak>``."""
    body = re.sub(r"\*([^*]+)\*", lambda m: STRESS.format(m.group(1)), marked)
    body = re.sub(r"\s*\|\s*", f' <break time="{break_ms}ms"/> ', body)
    return f"<speak>{body.strip()}</speak>"


def _row(id: str, kind: str, text: str, readings: Sequence[tuple[str, str]]) -> Template:
    return Template(
        id=id,
        kind=kind,
        text=text,
        readings=[Reading(meaning=meaning, ssml=marked_to_ssml(marked)) for meaning, marked in readings],
    )


def grouping(id: str, text: str, *readings: tuple[str, str]) -> Template:
    """Readings as ``(meaning, marked)``; ``|`` marks a break (with its comma, if any)."""
    return _row(id, "grouping", text, readings)


def focus(id: str, text: str, *readings: tuple[str, str]) -> Template:
    """Readings as ``(meaning, marked)``; ``*word*`` is the word with contrastive stress."""
    return _row(id, "focus", text, readings)


def question(id: str, text: str, clause: str, asked_first: bool = False) -> Template:
    """The statement (falling end, "says that CLAUSE") and the question (rising end, "asks whether
    CLAUSE"), in that order unless ``asked_first``."""
    head, last = text.rsplit(" ", 1)
    readings = [
        Reading(meaning=f"says that {clause}", ssml=f"<speak>{head} {FALLING.format(last)}</speak>"),
        Reading(meaning=f"asks whether {clause}", ssml=f"<speak>{head} {RISING.format(last)}</speak>"),
    ]
    return Template(id=id, kind="question", text=text, readings=readings[::-1] if asked_first else readings)


# --- the table --------------------------------------------------------------------------------
# The order of a template's readings carries no convention across templates (as the order of a
# benchmark's candidate meanings does not): the break, the earlier stress or the question comes
# first in some templates and last in others, so "reading 0" means no one cue, and a model must
# know which template it hears to map a cue to a reading.

BUILTIN: tuple[Template, ...] = (
    grouping(
        "eat-grandma",
        "Let's eat grandma",
        ("grandma is asked to come and eat", "Let's eat, | grandma."),
        ("grandma is what gets eaten", "Let's eat grandma."),
    ),
    grouping(
        "old-men-women",
        "The old men and women left early",
        ("the men and the women were all old", "The old men and women left early."),
        ("only the men were old", "The old men | and women left early."),
    ),
    grouping(
        "telescope",
        "I saw the man with the telescope",
        ("I looked through the telescope", "I saw the man, | with the telescope."),
        ("the man was holding the telescope", "I saw | the man with the telescope."),
    ),
    grouping(
        "hostess-smile",
        "The hostess greeted the girl with a smile",
        ("the girl was smiling", "The hostess greeted | the girl with a smile."),
        ("the hostess was smiling", "The hostess greeted the girl, | with a smile."),
    ),
    grouping(
        "woman-man",
        "Woman without her man is nothing",
        ("a woman is nothing without her man", "Woman without her man | is nothing."),
        ("a man is nothing without a woman", "Woman, | without her, | man is nothing."),
    ),
    grouping(
        "said-yesterday",
        "Jane said Bill left yesterday",
        ("Jane said it yesterday", "Jane said Bill left, | yesterday."),
        ("Bill left yesterday", "Jane said | Bill left yesterday."),
    ),
    grouping(
        "ham-eggs-toast",
        "I want ham and eggs or toast",
        ("ham, and also either eggs or toast", "I want ham, | and eggs or toast."),
        ("either ham and eggs, or else toast", "I want ham and eggs, | or toast."),
    ),
    grouping(
        "plus-times",
        "Three plus four times two",
        ("three, plus four times two: eleven", "Three, | plus four times two."),
        ("three plus four, then doubled: fourteen", "Three plus four, | times two."),
    ),
    grouping(
        "teacher-fool",
        "The teacher said the student is a fool",
        ("the student calls the teacher a fool", "The teacher, | said the student, | is a fool."),
        ("the teacher calls the student a fool", "The teacher said | the student is a fool."),
    ),
    grouping(
        "panda",
        "The panda eats shoots and leaves",
        ("the panda's food is shoots and leaves", "The panda eats shoots and leaves."),
        ("the panda eats, fires a gun, and goes away", "The panda eats, | shoots, | and leaves."),
    ),
    grouping(
        "sister-lawyer",
        "I met the sister of the lawyer who lives in Paris",
        ("the sister lives in Paris", "I met the sister of the lawyer, | who lives in Paris."),
        ("the lawyer lives in Paris", "I met the sister, | of the lawyer who lives in Paris."),
    ),
    focus(
        "took-money",
        "I didn't say he took the money",
        ("he took something else, not the money", "I didn't say he took the *money*."),
        ("someone else said it, not me", "*I* didn't say he took the money."),
        ("I only hinted at it, I never said it", "I didn't *say* he took the money."),
    ),
    focus(
        "gave-book",
        "She gave the book to John",
        ("she, not someone else, gave it", "*She* gave the book to John."),
        ("it was the book, not something else", "She gave the *book* to John."),
        ("John got it, not someone else", "She gave the book to *John*."),
    ),
    focus(
        "red-car",
        "Mary bought a red car",
        ("the car is red, not another colour", "Mary bought a *red* car."),
        ("she bought it, she did not rent it", "Mary *bought* a red car."),
        ("Mary bought it, not someone else", "*Mary* bought a red car."),
    ),
    focus(
        "apples-sundays",
        "He only eats apples on Sundays",
        ("he eats apples on no other day", "He only eats apples on *Sundays*."),
        ("on Sundays he eats nothing but apples", "He only eats *apples* on Sundays."),
    ),
    focus(
        "thought-movie",
        "I thought the movie was good",
        ("I expected it to be good, and it was not", "I *thought* the movie was good."),
        ("I liked it, even if others did not", "*I* thought the movie was good."),
    ),
    focus(
        "fish-tonight",
        "We are having fish tonight",
        ("fish, not meat", "We are having *fish* tonight."),
        ("tonight, not tomorrow", "We are having fish *tonight*."),
    ),
    focus(
        "blue-shirt",
        "I want the blue shirt",
        ("the blue one, not the red one", "I want the *blue* shirt."),
        ("I want it, not you", "*I* want the blue shirt."),
    ),
    question("going-home", "You are going home", "you are going home"),
    question("passed-exam", "She passed the exam", "she passed the exam", asked_first=True),
    question("meeting-noon", "The meeting is at noon", "the meeting is at noon"),
    question("finished-report", "You finished the report", "you finished the report", asked_first=True),
    question("coming-along", "He is coming with us", "he is coming with us"),
    question("raining-again", "It is raining again", "it is raining again", asked_first=True),
    question("sold-house", "They sold the house", "they sold the house"),
)


def load_templates(path: str | Path | None = None) -> list[Template]:
    """The built-in table, or the one in the YAML file ``path`` (checked, errors name the field)."""
    if path is None:
        return list(BUILTIN)
    return load_config(TemplateTable, Path(path), name=str(path)).templates


def select_templates(
    templates: Sequence[Template], kinds: Sequence[str] | None = None, ids: Sequence[str] | None = None
) -> list[Template]:
    """The templates of ``kinds`` (all if None) and, if given, only ``ids``; unknown names are errors."""
    unknown_kinds = [k for k in kinds or () if k not in KINDS]
    if unknown_kinds:
        raise ConfigError(f"unknown template kind(s) {', '.join(unknown_kinds)}; expected {', '.join(KINDS)}")
    known_ids = [t.id for t in templates]
    unknown_ids = [i for i in ids or () if i not in known_ids]
    if unknown_ids:
        raise ConfigError(
            f"unknown template id(s) {', '.join(unknown_ids)}; the table has {', '.join(known_ids)}"
        )
    chosen = [t for t in templates if (not kinds or t.kind in kinds) and (not ids or t.id in ids)]
    if not chosen:
        raise ConfigError("no template left after choosing --kinds and --templates")
    return chosen


def vary_ssml(ssml: str, break_scale: float = 1.0, accent_scale: float = 1.0) -> str:
    """``ssml`` with every break ``break_scale`` times as long and every relative pitch change
    (``pitch="+50%"``) ``accent_scale`` times as large: how strongly a speaker marks the reading."""

    def one_break(m: re.Match) -> str:
        ms = float(m.group(1)) * (1000.0 if m.group(2) == "s" else 1.0)
        return f'time="{max(0, round(ms * break_scale))}ms"'

    def one_pitch(m: re.Match) -> str:
        return f'pitch="{round(float(m.group(1)) * accent_scale):+d}%"'

    out = re.sub(r'time="(\d+(?:\.\d+)?)(ms|s)"', one_break, ssml)
    return re.sub(r'pitch="([+-]\d+(?:\.\d+)?)%"', one_pitch, out)
