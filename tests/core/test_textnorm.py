"""Text normalisation for speech (edgewise.textnorm): what users type becomes words a voice reads."""

from __future__ import annotations

import pytest

from edgewise.textnorm import (
    normalize,
    number_words,
    split_clauses,
    split_sentences,
    word_error_rate,
    words_for_wer,
)


def said(text: str) -> str:
    return normalize(text).text


@pytest.mark.parametrize(
    ("n", "words"),
    [
        (0, "zero"),
        (7, "seven"),
        (13, "thirteen"),
        (40, "forty"),
        (99, "ninety nine"),
        (101, "one hundred one"),
        (1_000_001, "one million one"),
        (2_000_300_000, "two billion three hundred thousand"),
    ],
)
def test_number_words_spell_cardinals(n, words):
    assert number_words(n) == words


def test_cardinals_in_text_are_spelled_out():
    assert said("I have 3 cats and 21 dogs.") == "I have three cats and twenty one dogs."


def test_decimals_read_digit_by_digit_after_point():
    assert said("Pi is about 3.14 today") == "Pi is about three point one four today"


def test_thousands_separators_are_read_as_one_number():
    assert said("There were 1,234,567 people") == (
        "There were one million two hundred thirty four thousand five hundred sixty seven people"
    )


@pytest.mark.parametrize(
    ("year", "words"),
    [
        ("1984", "nineteen eighty four"),
        ("2005", "two thousand five"),
        ("2024", "twenty twenty four"),
        ("1905", "nineteen oh five"),
        ("1900", "nineteen hundred"),
    ],
)
def test_years_are_read_as_years(year, words):
    assert said(f"It was {year}.") == f"It was {words}."


def test_decades():
    assert said("the 1990s and the 1900s") == "the nineteen nineties and the nineteen hundreds"


def test_ordinals():
    assert said("The 1st, 2nd, 3rd, 11th, 12th and 21st.") == (
        "The first, second, third, eleventh, twelfth and twenty first."
    )


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("$5.99", "five dollars and ninety nine cents"),
        ("$1.01", "one dollar and one cent"),
        ("€3.50", "three euros and fifty cents"),
        ("£2.05", "two pounds and five pence"),
        ("£1", "one pound"),
        ("$0.99", "ninety nine cents"),
        ("$1,250", "one thousand two hundred fifty dollars"),
        ("$2.5 million", "two point five million dollars"),
        ("€3 billion", "three billion euros"),
    ],
)
def test_currency(text, words):
    assert said(f"It costs {text} now") == f"It costs {words} now"


def test_percent():
    assert said("50% and 12.5 %") == "fifty percent and twelve point five percent"


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("3:30 pm", "three thirty p m"),
        ("5:00", "five o'clock"),
        ("10:05", "ten oh five"),
        ("7:15 a.m.", "seven fifteen a m"),
        ("3pm", "three p m"),
    ],
)
def test_times(text, words):
    assert said(f"Meet at {text} or later") == f"Meet at {words} or later"


def test_a_time_at_the_end_keeps_the_sentence_end():
    assert split_sentences(said("Meet at 3 p.m. Then go home.")) == ["Meet at three p m.", "Then go home."]


def test_dates_read_the_day_as_an_ordinal():
    assert said("On March 5th we go.") == "On March fifth we go."
    assert said("The meeting is on May 3, 2024.") == "The meeting is on May third, twenty twenty four."


def test_abbreviations():
    assert said("Dr. Smith met Mr. Jones, e.g. at noon.") == (
        "doctor Smith met mister Jones, for example at noon."
    )


def test_a_sentence_ending_in_an_abbreviation_still_ends():
    assert split_sentences(said("We bought apples, pears, etc. Then we left.")) == [
        "We bought apples, pears, et cetera.",
        "Then we left.",
    ]


def test_no_is_number_only_before_a_number():
    assert said("No. 5 is here") == "number five is here"
    assert said("I said no.") == "I said no."


def test_units_glued_to_numbers():
    assert said("It is 5km away and 10kg.") == "It is five kilometers away and ten kilograms."


def test_ranges_with_an_en_dash():
    assert said("pages 10–20") == "pages ten to twenty"


def test_negative_numbers():
    assert said("It is -5 outside") == "It is minus five outside"


def test_ssml_like_markup_is_stripped_and_its_text_kept():
    n = normalize("<speak>Hello <break time='1s'/> <emphasis level=\"strong\">world</emphasis></speak>")
    assert n.text == "Hello world"
    assert n.dropped == []


def test_entities_are_decoded():
    assert said("Salt &amp; pepper") == "Salt and pepper"


def test_emoji_and_other_scripts_are_dropped_and_reported():
    n = normalize("Hi 😀 there, Привет 你好!")
    assert n.text == "Hi there,!"
    assert "😀" in n.dropped
    assert {"П", "р", "и", "в", "е", "т", "你", "好"} <= set(n.dropped)
    assert all(ch not in n.text for ch in n.dropped)


def test_invisible_emoji_joiners_are_dropped_but_not_reported():
    n = normalize("a 👍🏽\u200d b")
    assert n.text == "a b"
    assert "\u200d" not in n.dropped and "👍" in n.dropped


def test_accents_are_folded():
    assert said("café naïve résumé Zoë") == "cafe naive resume Zoe"
    assert said("Straße Øresund") == "Strasse Oresund"


@pytest.mark.parametrize("text", ["", "   ", "\n\t ", "😀😀", "<p></p>", "...!?"])
def test_nothing_sayable_is_empty(text):
    assert normalize(text).empty


def test_text_is_not_empty():
    assert not normalize(" ok ").empty


def test_split_sentences_keeps_terminators_and_closing_quotes():
    assert split_sentences('He said "Stop." Then he left! Why? Fine.') == [
        'He said "Stop."',
        "Then he left!",
        "Why?",
        "Fine.",
    ]


def test_split_sentences_of_text_without_a_terminator():
    assert split_sentences("  just words  ") == ["just words"]
    assert split_sentences("   ") == []


@pytest.mark.parametrize("max_words", [1, 2, 3, 5, 8])
def test_split_clauses_never_exceeds_max_words_and_keeps_every_word(max_words):
    sentence = (
        "one two three, four five six seven eight nine ten eleven twelve; thirteen, fourteen "
        "fifteen sixteen: seventeen eighteen nineteen twenty twenty-one"
    )
    pieces = split_clauses(sentence, max_words)
    assert all(1 <= len(p.split()) <= max_words for p in pieces)
    assert " ".join(pieces).split() == sentence.split()


def test_split_clauses_cuts_at_punctuation_first():
    assert split_clauses("one two three, four five six", 4) == ["one two three,", "four five six"]


def test_split_clauses_joins_short_clauses():
    assert split_clauses("yes, no, maybe so", 5) == ["yes, no, maybe so"]


def test_split_clauses_rejects_a_zero_limit():
    with pytest.raises(ValueError, match="max_words"):
        split_clauses("one two", 0)


def test_words_for_wer_compares_spoken_forms():
    assert words_for_wer("Dr. Smith paid $5!") == ["doctor", "smith", "paid", "five", "dollars"]


@pytest.mark.parametrize(
    ("ref", "hyp", "errors"),
    [
        ("the cat sat on the mat", "the cat sat on the mat", 0),
        ("the cat sat on the mat", "the cat sit on the mat", 1),  # one substitution
        ("the cat sat on the mat", "the cat sat on mat", 1),  # one deletion
        ("the cat sat on the mat", "the big cat sat on the mat", 1),  # one insertion
        ("the cat sat on the mat", "a dog sat in mat", 4),  # 3 substitutions, 1 deletion
        ("the cat sat on the mat", "", 6),
    ],
)
def test_word_error_rate_counts_edits_over_reference_words(ref, hyp, errors):
    assert word_error_rate([ref], [hyp]) == pytest.approx(errors / 6)


def test_word_error_rate_is_pooled_over_the_corpus():
    # 1 error in 2 words, 0 errors in 8 words: 1 / 10 (not the mean of 0.5 and 0)
    refs = ["hello world", "one two three four five six seven eight"]
    hyps = ["hello word", "one two three four five six seven eight"]
    assert word_error_rate(refs, hyps) == pytest.approx(0.1)


def test_word_error_rate_needs_paired_lists():
    with pytest.raises(ValueError):
        word_error_rate(["a b"], [])
