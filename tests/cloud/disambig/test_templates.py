"""The template table: every reading speaks the template's words; kinds, ids and files are checked."""

from __future__ import annotations

from collections import Counter

import pytest

from edgewise.cloud.disambig.templates import (
    BUILTIN,
    KINDS,
    load_templates,
    marked_to_ssml,
    select_templates,
    vary_ssml,
    words,
)
from edgewise.errors import ConfigError


def test_builtin_table_has_every_kind_and_two_or_three_readings_each():
    assert 20 <= len(BUILTIN) <= 30
    assert len({t.id for t in BUILTIN}) == len(BUILTIN)
    kinds = Counter(t.kind for t in BUILTIN)
    assert set(kinds) == set(KINDS) and min(kinds.values()) >= 6
    assert {len(t.readings) for t in BUILTIN} == {2, 3}


def test_every_reading_speaks_exactly_the_text_and_readings_differ():
    for t in BUILTIN:
        assert all(words(r.ssml) == words(t.text) for r in t.readings), t.id
        assert len({r.ssml for r in t.readings}) == len(t.readings), t.id
        assert "<" not in t.text and not t.text.endswith((".", "?", ","))


def test_each_kind_marks_its_readings_with_its_own_cue():
    by_id = {t.id: t for t in BUILTIN}
    grandma = [r.ssml for r in by_id["eat-grandma"].readings]
    assert "<break" in grandma[0] and "<break" not in grandma[1]
    stressed = [
        r.ssml.split("<emphasis")[1].split(">")[2].split("<")[0] for r in by_id["took-money"].readings
    ]
    assert stressed == ["money", "I", "say"]
    for tid, rising in (("going-home", 1), ("passed-exam", 0)):
        ends = [r.ssml for r in by_id[tid].readings]
        assert 'pitch="+' in ends[rising] and ends[rising].endswith("?</prosody></speak>")
        assert 'pitch="-' in ends[1 - rising] and ends[1 - rising].endswith(".</prosody></speak>")
        assert by_id[tid].readings[rising].meaning.startswith("asks whether")


def test_reading_order_carries_no_convention_across_templates():
    """The question, the extra break or the earlier stress is reading 0 in some templates and not
    in others: an audio-only model cannot map one cue to one index without knowing the template."""
    first_is_question = {t.readings[0].meaning.startswith("asks") for t in BUILTIN if t.kind == "question"}
    first_has_more_breaks = {
        t.readings[0].ssml.count("<break") > t.readings[-1].ssml.count("<break")
        for t in BUILTIN
        if t.kind == "grouping" and t.readings[0].ssml.count("<break") != t.readings[-1].ssml.count("<break")
    }
    first_stress_earlier = {
        t.readings[0].ssml.index("<emphasis") < t.readings[1].ssml.index("<emphasis")
        for t in BUILTIN
        if t.kind == "focus"
    }
    assert first_is_question == first_has_more_breaks == first_stress_earlier == {True, False}


def test_markup_and_variation():
    ssml = marked_to_ssml("Let's eat, | *grandma*.", break_ms=300)
    assert '<break time="300ms"/>' in ssml and "<emphasis" in ssml and ssml.startswith("<speak>")
    varied = vary_ssml(ssml, break_scale=1.5, accent_scale=0.5)
    assert '<break time="450ms"/>' in varied and 'pitch="+25%"' in varied
    assert 'pitch="-8%"' in vary_ssml('<prosody pitch="-15%">x</prosody>', accent_scale=0.5)
    assert '"1200ms"' in vary_ssml('<break time="0.6s"/>', break_scale=2.0)


def test_select_by_kind_and_id_and_unknown_names_are_errors():
    assert {t.kind for t in select_templates(BUILTIN, kinds=["focus"])} == {"focus"}
    assert [t.id for t in select_templates(BUILTIN, ids=["panda", "going-home"])] == ["panda", "going-home"]
    with pytest.raises(ConfigError, match="unknown template kind.*tone.*grouping, focus, question"):
        select_templates(BUILTIN, kinds=["focus", "tone"])
    with pytest.raises(ConfigError, match="unknown template id.*nope"):
        select_templates(BUILTIN, ids=["nope"])


GOOD_READINGS = """
    readings:
      - {meaning: "it was the cat", ssml: "<speak>The <emphasis>cat</emphasis> sat.</speak>"}
      - {meaning: "it sat", ssml: "<speak>The cat <emphasis>sat</emphasis>.</speak>"}
"""


def test_a_template_file_is_read_and_checked(tmp_path):
    path = tmp_path / "t.yaml"
    path.write_text("templates:\n  - id: cat\n    kind: focus\n    text: The cat sat\n" + GOOD_READINGS)
    [cat] = load_templates(path)
    assert cat.kind == "focus" and len(cat.readings) == 2


@pytest.mark.parametrize(
    "kind, text, message",
    [
        ("tone", "The cat sat", "field 'templates.0.kind'"),
        ("focus", "The dog sat", "speaks 'the cat sat', not the template's words 'the dog sat'"),
    ],
)
def test_a_bad_template_file_names_the_field(tmp_path, kind, text, message):
    path = tmp_path / "t.yaml"
    path.write_text(f"templates:\n  - id: cat\n    kind: {kind}\n    text: {text}\n" + GOOD_READINGS)
    with pytest.raises(ConfigError) as info:
        load_templates(path)
    assert str(path) in str(info.value) and message in str(info.value)
