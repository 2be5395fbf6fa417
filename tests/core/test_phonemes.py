"""Phonemes and Piper-layout phoneme ids (edgewise.phonemes), with both real espeak-ng backends."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from edgewise.errors import ConfigError
from edgewise.phonemes import (
    BACKENDS,
    BOS,
    EOS,
    PAD,
    PhonemeIds,
    Phonemizer,
    boundary_mask,
    default_id_map,
    last_word_mask,
    sentence_type,
)
from tests.conftest import missing_tool, require_module

TWO_SENTENCES = "Hello there, my friend. Are you coming?"


def make_phonemizer(backend: str) -> Phonemizer:
    if backend == "piper":
        require_module("piper", "piper-tts is not installed (the tts extra)")
    elif shutil.which("espeak-ng") is None:
        missing_tool("espeak-ng is not installed (apt-get install espeak-ng)")
    return Phonemizer(backend)


@pytest.fixture(scope="module")
def table() -> PhonemeIds:
    require_module("piper", "piper-tts is not installed (the tts extra)")
    return PhonemeIds(default_id_map())


@pytest.fixture(scope="module")
def piper() -> Phonemizer:
    return make_phonemizer("piper")


@pytest.mark.parametrize("backend", BACKENDS)
def test_backend_gives_clauses_with_terminators(backend):
    clauses = make_phonemizer(backend).clauses(TWO_SENTENCES)
    assert [c.terminator for c in clauses] == [",", ".", "?"]
    assert [c.end_of_sentence for c in clauses] == [False, True, True]
    assert all(c.phonemes.strip() for c in clauses)
    assert all("(" not in c.phonemes for c in clauses)  # espeak's language-switch marks are removed


@pytest.mark.parametrize("backend", BACKENDS)
def test_backend_groups_symbols_by_sentence(backend):
    sentences = make_phonemizer(backend).sentences(TWO_SENTENCES)
    assert len(sentences) == 2
    assert sentences[0][-1] == "." and sentences[1][-1] == "?"
    assert ", " in "".join(sentences[0])  # Piper's convention: a space after a comma
    assert all(len(s) == 1 for sentence in sentences for s in sentence)  # one symbol per item


@pytest.mark.parametrize("backend", BACKENDS)
def test_text_without_punctuation_is_one_unterminated_clause(backend):
    clauses = make_phonemizer(backend).clauses("no punctuation here")
    assert len(clauses) == 1
    assert clauses[0].terminator == "" and clauses[0].end_of_sentence


@pytest.mark.parametrize("backend", BACKENDS)
def test_an_unterminated_sentence_gets_no_trailing_space(backend):
    (symbols,) = make_phonemizer(backend).sentences("no punctuation here")
    assert symbols[-1] != " "


@pytest.mark.parametrize("backend", BACKENDS)
def test_blank_text_has_no_clauses(backend):
    assert make_phonemizer(backend).clauses("  ") == []


def test_the_two_backends_agree_on_a_plain_sentence():
    text = "The cat sat on the mat."
    assert make_phonemizer("espeak-ng").sentences(text) == make_phonemizer("piper").sentences(text)


def test_unknown_backend_is_a_config_error_listing_the_backends():
    with pytest.raises(ConfigError, match=r"unknown backend 'festival'.*piper, espeak-ng"):
        Phonemizer("festival")


def test_ids_follow_pipers_layout(table):
    symbols = ["h", "ə", " ", "a", "."]
    ids, unknown = table.ids(symbols)
    assert unknown == []
    assert ids[0] == table.id_map[BOS][0] and ids[-1] == table.id_map[EOS][0]
    body = ids[1:-1]
    assert body[0::2] == [table.pad] * (len(symbols) + 1)  # PAD after BOS and after every symbol
    assert body[1::2] == [table.id_map[s][0] for s in symbols]
    assert len(ids) == 2 * len(symbols) + 3


def test_symbols_invert_ids(table):
    symbols = ["h", "ə", " ", "a", ".", "?"]
    ids, _ = table.ids(symbols)
    assert table.symbols(ids) == symbols
    assert table.symbols(np.asarray(ids, dtype=np.int64)) == symbols  # a corpus row's array too


def test_unknown_symbols_are_skipped_and_reported(table):
    ids, unknown = table.ids(["a", "☃", "b", "☃"])
    assert unknown == ["☃", "☃"]
    assert ids == table.ids(["a", "b"])[0]


def test_an_id_map_without_pad_is_a_config_error():
    with pytest.raises(ConfigError, match="'_'"):
        PhonemeIds({BOS: [1], EOS: [2], "a": [3]})


def test_table_knows_pad_space_and_terminators(table):
    assert table.pad == table.id_map[PAD][0]
    assert table.space == table.id_map[" "][0]
    assert set(table.terminators.values()) == set(",.?!:;")
    assert table.n_symbols > max(i for v in table.id_map.values() for i in v)


def _ids(table, symbols):
    return np.asarray(table.ids(symbols)[0])


def test_boundary_mask_marks_spaces_and_punctuation(table, piper):
    (symbols,) = piper.sentences("The cat sat, then left.")
    ids = _ids(table, symbols)
    marked = [symbols[(i - 2) // 2] for i in np.flatnonzero(boundary_mask(ids, table))]
    # symbol k sits at id position 2 + 2k (after BOS and its pad)
    assert marked == [s for s in symbols if s in " ,."]
    assert marked.count(" ") == symbols.count(" ") and marked[-1] == "."


def test_last_word_mask_covers_the_last_word(table, piper):
    (symbols,) = piper.sentences("The cat sat, then left.")
    ids = _ids(table, symbols)
    mask = last_word_mask(ids, table)
    last_space = len(symbols) - 1 - symbols[::-1].index(" ")
    word = symbols[last_space + 1 : -1]  # the symbols of "left", before the "."
    covered = np.flatnonzero(mask)
    # symbol k sits at id position 2 + 2k; the mask runs from the pad after the last space to the
    # pad before the "."
    assert covered.tolist() == list(range(2 + 2 * last_space + 1, 2 + 2 * (len(symbols) - 1)))
    assert [symbols[(i - 2) // 2] for i in covered[1::2]] == word


def test_last_word_mask_without_terminator(table, piper):
    (symbols,) = piper.sentences("the last word")
    ids = _ids(table, symbols)
    covered = np.flatnonzero(last_word_mask(ids, table))
    last_space = len(symbols) - 1 - symbols[::-1].index(" ")
    assert covered.tolist() == list(range(2 + 2 * last_space + 1, len(ids) - 1))  # up to EOS


def test_last_word_mask_ignores_a_trailing_clause_break(table, piper):
    """A streamed clause ends with ", ": its last word is the one before the comma, not the space."""
    (whole,) = piper.sentences("one two three.")
    (clause,) = piper.sentences("one two three,")
    assert clause[-2:] == [",", " "]
    a = last_word_mask(_ids(table, whole), table)
    b = last_word_mask(_ids(table, clause), table)
    assert np.flatnonzero(a).tolist() == np.flatnonzero(b).tolist()
    assert a.sum() > 2


def test_last_word_mask_of_a_single_word(table):
    ids = _ids(table, ["h", "a", "ɪ"])
    assert np.flatnonzero(last_word_mask(ids, table)).tolist() == list(range(1, len(ids) - 1))


def test_last_word_mask_of_nothing_is_zero(table):
    assert not last_word_mask(_ids(table, []), table).any()


@pytest.mark.parametrize(
    ("symbols", "kind"),
    [
        (list("ɑːɹ juː?"), "?"),
        (list("stɑːp!"), "!"),
        (list("aɪ siː."), "."),
        (list("nˈoʊ pʌŋk"), "."),  # no terminator: a statement
        (list("wˈʌt?  "), "?"),  # trailing spaces are skipped
        (list("wˈɛl, "), "."),  # a clause that ends at a comma is not a question
        ([], "."),
    ],
)
def test_sentence_type(symbols, kind):
    assert sentence_type(symbols) == kind
