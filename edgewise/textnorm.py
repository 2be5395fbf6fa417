"""Text normalisation and chunking for speech synthesis (torch-free: the device runs it too).

:func:`normalize` turns what users type into words a phonemizer reads the same way everywhere:
numbers, currency, percentages, times, ordinals, years and common abbreviations are spelled out;
SSML-like markup is stripped (its text kept); emoji and characters of scripts the English voice
cannot say are dropped and reported, never passed on. :func:`split_sentences` and
:func:`split_clauses` cut long text into the units the TTS pipeline streams.

The training corpus's reference transcripts go through the same function, so the word error rate
compares like with like.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field

_ONES = [
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
]
_TENS = ["_", "_", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]
_SCALES = ((10**9, "billion"), (10**6, "million"), (1000, "thousand"))
_ORDINAL_IRREGULAR = {
    "one": "first",
    "two": "second",
    "three": "third",
    "five": "fifth",
    "eight": "eighth",
    "nine": "ninth",
    "twelve": "twelfth",
}
MONTHS = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
]
ABBREVIATIONS = {
    "mr.": "mister",
    "mrs.": "missus",
    "ms.": "miss",
    "dr.": "doctor",
    "prof.": "professor",
    "st.": "saint",
    "jr.": "junior",
    "sr.": "senior",
    "vs.": "versus",
    "etc.": "et cetera",
    "e.g.": "for example",
    "i.e.": "that is",
    "approx.": "approximately",
    "km": "kilometers",
    "kg": "kilograms",
    "cm": "centimeters",
    "mm": "millimeters",
    "ml": "milliliters",
    "mph": "miles per hour",
    "°c": "degrees celsius",
    "°f": "degrees fahrenheit",
}
CURRENCIES = {"$": ("dollar", "dollars", "cent", "cents"), "€": ("euro", "euros", "cent", "cents"),
              "£": ("pound", "pounds", "penny", "pence")}  # fmt: skip
MAX_NUMBER = 10**12


def number_words(n: int) -> str:
    """Cardinal words for 0 <= n < 10**12 ("one hundred twenty three"); larger ones digit by digit."""
    if n < 0:
        return "minus " + number_words(-n)
    if n >= MAX_NUMBER:
        return " ".join(_ONES[int(d)] for d in str(n))
    if n < 20:
        return _ONES[n]
    if n < 100:
        tens, ones = divmod(n, 10)
        return _TENS[tens] + (f" {_ONES[ones]}" if ones else "")
    if n < 1000:
        hundreds, rest = divmod(n, 100)
        return f"{_ONES[hundreds]} hundred" + (f" {number_words(rest)}" if rest else "")
    for scale, name in _SCALES:
        if n >= scale:
            high, rest = divmod(n, scale)
            return f"{number_words(high)} {name}" + (f" {number_words(rest)}" if rest else "")
    raise AssertionError(n)


def ordinal_words(n: int) -> str:
    words = number_words(n).split()
    last = words[-1]
    if last in _ORDINAL_IRREGULAR:
        words[-1] = _ORDINAL_IRREGULAR[last]
    elif last.endswith("y"):
        words[-1] = last[:-1] + "ieth"
    else:
        words[-1] = last + "th"
    return " ".join(words)


def year_words(n: int) -> str:
    """Years the way they are said: 1984 "nineteen eighty four", 2005 "two thousand five", 2024 "twenty twenty four"."""
    if 2000 <= n < 2010 or n % 1000 == 0 or not 1000 <= n < 10000:
        return number_words(n)
    high, low = divmod(n, 100)
    if low == 0:
        return f"{number_words(high)} hundred"
    return f"{number_words(high)} {'oh ' if low < 10 else ''}{number_words(low)}"


def _digits(text: str) -> int:
    return int(text.replace(",", ""))


def _decimal(whole: str, frac: str | None) -> str:
    words = number_words(_digits(whole))
    if frac:
        words += " point " + " ".join(_ONES[int(d)] for d in frac)
    return words


def _currency(m: re.Match) -> str:
    one, many, sub_one, sub_many = CURRENCIES[m["sym"]]
    whole = _digits(m["whole"])
    scale = m["scale"]
    if scale:  # "$2.5 million"
        return f"{_decimal(m['whole'], m['frac'])} {scale.lower()} {many}"
    words = f"{number_words(whole)} {one if whole == 1 else many}"
    cents = int((m["frac"] + "0")[:2]) if m["frac"] else 0
    if cents:
        sub = f"{number_words(cents)} {sub_one if cents == 1 else sub_many}"
        words = sub if whole == 0 else f"{words} and {sub}"  # "$0.99": "ninety nine cents"
    return words


def _time(m: re.Match) -> str:
    hour, minute = int(m["h"]), int(m["m"] or 0)
    words = number_words(hour)
    if minute:
        words += (" oh " if minute < 10 else " ") + number_words(minute)
    elif not m["ampm"]:
        words += " o'clock"
    if m["ampm"]:
        words += " " + " ".join(m["ampm"].replace(".", "").lower())
        if m["ampm"].endswith(".") and re.match(r"\s*$|\s+[A-Z]", m.string[m.end() :]):
            words += "."  # "at 3 p.m." ends the sentence too
    return words


def _decade(m: re.Match) -> str:
    """A decade as said: 1990s -> "nineteen nineties", 1900s -> "nineteen hundreds"."""
    words = year_words(int(m[1])).split()
    words[-1] = words[-1][:-1] + "ies" if words[-1].endswith("y") else words[-1] + "s"
    return " ".join(words)


def _date(m: re.Match) -> str:
    return f"{m['month']} {ordinal_words(int(m['day']))}"


def _number(m: re.Match) -> str:
    text = m.group(0)
    if re.fullmatch(r"(1[1-9]|20)\d\d", text) and m["frac"] is None:  # a four-digit 1100-2099: a year
        return year_words(int(text))
    return _decimal(m["whole"], m["frac"])


_UNITS = ("km", "kg", "cm", "mm", "ml", "mph")

_RULES: tuple[tuple[re.Pattern, object], ...] = (
    (re.compile(r"</?[A-Za-z][^<>]{0,200}>"), " "),  # SSML-like tags: keep the text between them
    (re.compile(r"\bno\.\s?(?=\d)", re.I), "number "),  # "No. 5" (but "I said no." stays)
    (re.compile(r"&(amp|lt|gt|quot|apos);"), lambda m: {"amp": " and ", "lt": "<", "gt": ">"}.get(m[1], "'")),
    (
        re.compile(
            r"(?P<sym>[$€£])\s?(?P<whole>\d[\d,]*)(?:\.(?P<frac>\d+))?(?:\s?(?P<scale>million|billion|thousand)\b)?",
            re.I,
        ),
        _currency,
    ),
    (re.compile(r"\b(?P<h>[01]?\d|2[0-3]):(?P<m>[0-5]\d)(?:\s?(?P<ampm>[ap]\.?m\.?)(?!\w))?", re.I), _time),
    (re.compile(r"\b(?P<h>1[0-2]|[1-9])(?P<m>)\s?(?P<ampm>[ap]\.?m\.?)(?!\w)", re.I), _time),  # "3pm"
    (
        re.compile(r"\b(?P<month>" + "|".join(MONTHS) + r")\s(?P<day>[1-9]|[12]\d|3[01])(?:st|nd|rd|th)?\b"),
        _date,
    ),
    (re.compile(r"\b(\d+)(st|nd|rd|th)\b", re.I), lambda m: ordinal_words(int(m[1]))),
    (re.compile(r"\b(1[1-9]\d0|20[0-9]0)'?s\b"), _decade),
    (re.compile(r"(\d)\s?–\s?(?=\d)"), r"\1 to "),  # ranges with an en dash: "10–20"
    (re.compile(r"[–—]"), ", "),
    (re.compile(r"\b(\d[\d,]*(?:\.\d+)?)(" + "|".join(_UNITS) + r")\b"), r"\1 \2"),  # "5km" -> "5 km"
    (re.compile(r"(\d[\d,]*(?:\.\d+)?)\s?%"), lambda m: f"{m[1]} percent"),
    (re.compile(r"(?<![\w.])-(?=\d)"), "minus "),
    (re.compile(r"\b(?P<whole>\d{1,3}(?:,\d{3})+|\d+)(?:\.(?P<frac>\d+))?\b"), _number),
    (re.compile(r"\s&\s"), " and "),
    (re.compile(r"\s\+\s"), " plus "),
    (re.compile(r"\s=\s"), " equals "),
)
_ABBREV = re.compile(
    r"(?<![\w.])("
    + "|".join(re.escape(a) for a in sorted(ABBREVIATIONS, key=len, reverse=True))
    + r")(?![\w])",
    re.I,
)
# What the English voice can say: Latin letters (accents are folded), digits and punctuation.
_KEEP_CATEGORIES = ("L", "N", "P", "Z")
_PUNCT_MAP = str.maketrans({"“": '"', "”": '"', "‘": "'", "’": "'", "…": "..."})
# Latin letters NFKD does not take apart.
_LATIN_FOLD = {"ß": "ss", "æ": "ae", "Æ": "Ae", "ø": "o", "Ø": "O", "œ": "oe", "Œ": "Oe", "ł": "l", "Ł": "L",
               "đ": "d", "Đ": "D", "ð": "d", "Ð": "D", "þ": "th", "Þ": "Th", "ı": "i"}  # fmt: skip
# Abbreviations that never end a sentence before a capital ("Dr. Smith", "e.g. Paris").
_NEVER_FINAL = {"mr.", "mrs.", "ms.", "dr.", "prof.", "st.", "e.g.", "i.e.", "vs."}


@dataclass
class Normalized:
    text: str
    dropped: list[str] = field(default_factory=list)  # characters removed (emoji, other scripts)

    @property
    def empty(self) -> bool:
        return not any(ch.isalnum() for ch in self.text)


def _fold_latin(text: str) -> tuple[str, list[str]]:
    out, dropped = [], []
    for ch in unicodedata.normalize("NFKD", text):
        if unicodedata.combining(ch):
            continue  # accents: "café" -> "cafe"
        cat = unicodedata.category(ch)
        if ch.isascii() or ch in "°€£":
            out.append(ch)
        elif ch in _LATIN_FOLD:
            out.append(_LATIN_FOLD[ch])
        elif cat[0] in _KEEP_CATEGORIES and cat[0] != "L" and cat[0] != "N":
            out.append(" " if cat[0] == "Z" else ch)
        else:
            if cat not in ("Cf", "Mn"):  # joiners and variation selectors go unreported (invisible)
                dropped.append(ch)
            out.append(" ")
    return "".join(out), dropped


def _abbreviation(m: re.Match) -> str:
    key, rest = m[1].lower(), m.string[m.end() :]
    words = ABBREVIATIONS[key]
    before_capital = re.match(r"\s+[A-Z]", rest) is not None
    if key == "st.":
        words = "saint" if before_capital else "street"  # "St. Louis", "Main St."
    if key.endswith(".") and (not rest.strip() or (before_capital and key not in _NEVER_FINAL)):
        words += "."  # "etc. Then", "King Jr." at the end: the sentence still ends here
    return words


def normalize(text: str) -> Normalized:
    """Spoken-form English text, and the characters that had to be dropped."""
    text = text.translate(_PUNCT_MAP)
    text, dropped = _fold_latin(text)
    for pattern, repl in _RULES:
        text = pattern.sub(repl, text)
    text = _ABBREV.sub(_abbreviation, text)
    text = re.sub(r"[\x00-\x1f\x7f]", " ", text)
    text = re.sub(r"\s+", " ", text).strip()
    text = re.sub(r"\s+([,.;:!?])", r"\1", text)
    return Normalized(text, dropped)


_SENTENCE_END = re.compile(r"(?<=[.!?][\"')\]])\s+|(?<=[.!?])\s+")
_CLAUSE_END = re.compile(r"(?<=[,;:])\s+")


def split_sentences(text: str) -> list[str]:
    """Sentences of normalised text, each with its terminal punctuation."""
    return [s.strip() for s in _SENTENCE_END.split(text) if s.strip()]


def split_clauses(sentence: str, max_words: int) -> list[str]:
    """A sentence cut at commas/semicolons/colons into pieces of at most ``max_words`` words where it can;
    a clause with no punctuation that is still longer is cut every ``max_words`` words."""
    if max_words < 1:
        raise ValueError(f"split_clauses: max_words must be at least 1, got {max_words}")
    pieces: list[str] = []
    for clause in _CLAUSE_END.split(sentence):
        words = clause.split()
        while len(words) > max_words:
            pieces.append(" ".join(words[:max_words]))
            words = words[max_words:]
        if words:
            if pieces and len(pieces[-1].split()) + len(words) <= max_words:
                pieces[-1] += " " + " ".join(words)
            else:
                pieces.append(" ".join(words))
    return pieces


def words_for_wer(text: str) -> list[str]:
    """Lower-case words without punctuation: how references and recognizer output are compared."""
    return re.findall(r"[a-z0-9']+", normalize(text).text.lower().replace("'", ""))


def word_error_rate(references: list[str], hypotheses: list[str]) -> float:
    """Corpus-level WER: word edit distance summed over pairs, over the reference word count."""
    errors = words = 0
    for ref, hyp in zip(references, hypotheses, strict=True):
        r, h = words_for_wer(ref), words_for_wer(hyp)
        errors += _edit_distance(r, h)
        words += len(r)
    return errors / max(words, 1)


def _edit_distance(a: list[str], b: list[str]) -> int:
    row = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        prev, row[0] = row[0], i
        for j, y in enumerate(b, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (x != y))
    return row[-1]
