"""The task registry: targets read from the corpus's fields, and a clear error for a missing one."""

import pytest

from edgewise.cloud.data.corpus import load_corpus
from edgewise.cloud.para.tasks import TASKS, check_fields, corpus_fields, parse_tasks, supported, task_targets
from edgewise.errors import ConfigError, DataError
from tests.cloud.para.conftest import make_para_corpus


def test_every_field_of_an_edgewise_corpus_is_read(para_corpus):
    corpus = load_corpus(para_corpus)
    fields = corpus_fields(corpus)
    assert len(fields) == len(corpus.utterances)
    first = fields[0]
    assert first["label"] == corpus.utterances[0].label
    assert first["voice"].startswith("en-us+") and first["gender"] == "male"
    assert 90 <= int(first["rate"]) < 260 and 0 <= int(first["pitch"]) < 100


def test_targets_of_each_kind(para_corpus):
    corpus = load_corpus(para_corpus)
    fields = corpus_fields(corpus)
    accent = task_targets(TASKS["accent"], corpus, fields)
    assert accent.classes == ("en-gb", "en-us")  # the voice's part before '+'
    assert accent.values[0] == accent.classes.index("en-us")
    emotion = task_targets(TASKS["emotion"], corpus, fields)
    assert set(emotion.classes) == set(corpus.labels)
    rate = task_targets(TASKS["rate"], corpus, fields)
    assert rate.classes is None and rate.values.dtype.kind == "f"
    assert rate.values[0] == float(fields[0]["rate"])


def test_a_missing_field_names_the_task_the_field_and_the_corpus(tmp_path):
    root = make_para_corpus(tmp_path / "no-gender", per_class=1, columns=("voice", "rate", "pitch"))
    corpus = load_corpus(root)
    fields = corpus_fields(corpus)
    assert not supported(TASKS["gender"], fields) and supported(TASKS["accent"], fields)
    with pytest.raises(DataError) as exc:
        check_fields([TASKS["accent"], TASKS["gender"]], corpus, fields)
    message = str(exc.value)
    assert "task 'gender'" in message and "field 'gender'" in message and str(corpus.root) in message


def test_unknown_tasks_are_listed_with_the_valid_ones():
    with pytest.raises(ConfigError) as exc:
        parse_tasks(["emotion,loudness", "speed"])
    message = str(exc.value)
    assert "loudness, speed" in message
    assert "valid tasks: emotion, gender, accent, rate, pitch" in message
    assert [t.name for t in parse_tasks(["rate,emotion", "rate"])] == ["rate", "emotion"]
