"""RAVDESS, CREMA-D and IEMOCAP in their published layouts: mapped, filtered, split by speaker."""

from __future__ import annotations

import itertools
from collections import Counter

import pytest

from edgewise.cloud.data.corpora import cremad_splits, load_iemocap
from edgewise.cloud.data.corpus import EMOTIONS, SPLITS, load_corpus
from edgewise.errors import DataError

from .conftest import CREMAD_SPEAKERS, RAVDESS_ACTORS, iemocap_eval_text, write_tone


def assert_speaker_disjoint(corpus):
    speakers = {s: set(corpus.speakers(s)) for s in SPLITS}
    for a, b in itertools.combinations(SPLITS, 2):
        assert not speakers[a] & speakers[b], (a, b)


# --- RAVDESS ----------------------------------------------------------------------------------


def test_ravdess_is_detected_mapped_and_split_by_actor(ravdess_root):
    corpus = load_corpus(ravdess_root)
    assert corpus.source == "ravdess" and corpus.labels == EMOTIONS
    # 8 emotions + 1 song per actor; only neutral, happy, sad, angry speech is kept
    assert len(corpus.utterances) == 4 * len(RAVDESS_ACTORS)
    by_code = {u.path.name.split("-")[2]: u.label for u in corpus.utterances}
    assert by_code == {"01": "neutral", "03": "happy", "04": "sad", "05": "angry"}
    assert all(u.path.name.split("-")[1] == "01" for u in corpus.utterances)  # no song
    assert corpus.speakers("train") == ["Actor_01", "Actor_02"]
    assert corpus.speakers("val") == ["Actor_17", "Actor_18"]
    assert corpus.speakers("test") == ["Actor_21", "Actor_22"]
    assert_speaker_disjoint(corpus)
    assert corpus.split("test")[0].text == "Kids are talking by the door."


def test_ravdess_malformed_name_is_named(ravdess_root):
    write_tone(ravdess_root / "Actor_02" / "03-01-05-01.wav")
    with pytest.raises(DataError, match=r"Actor_02/03-01-05-01\.wav: not a RAVDESS file name"):
        load_corpus(ravdess_root)


def test_ravdess_actor_mismatch_is_refused(ravdess_root):
    write_tone(ravdess_root / "Actor_01" / "03-01-05-01-01-01-02.wav")
    with pytest.raises(DataError, match="says actor 02, but it lies in Actor_01"):
        load_corpus(ravdess_root)


# --- CREMA-D ----------------------------------------------------------------------------------


def test_cremad_is_detected_mapped_and_split_by_speaker(cremad_root):
    corpus = load_corpus(cremad_root)
    assert corpus.source == "cremad"
    assert len(corpus.utterances) == 4 * len(CREMAD_SPEAKERS)  # DIS and FEA dropped
    assert Counter(u.label for u in corpus.utterances) == dict.fromkeys(EMOTIONS, len(CREMAD_SPEAKERS))
    assert {u.path.name.split("_")[2]: u.label for u in corpus.utterances} == {
        "NEU": "neutral",
        "HAP": "happy",
        "SAD": "sad",
        "ANG": "angry",
    }
    assert corpus.speakers("val") == ["1006"] and corpus.speakers("test") == ["1007"]
    assert_speaker_disjoint(corpus)
    assert corpus.utterances[0].text == "Don't forget a jacket."


def test_cremad_audio_folder_itself_is_accepted(cremad_root):
    corpus = load_corpus(cremad_root / "AudioWAV")
    assert corpus.source == "cremad" and len(corpus.utterances) == 28


def test_cremad_split_of_the_full_corpus():
    split = cremad_splits(str(s) for s in range(1001, 1092))
    counts = Counter(split.values())
    assert counts == {"train": 63, "val": 14, "test": 14}
    assert split["1063"] == "train" and split["1064"] == "val" and split["1078"] == "test"


def test_cremad_malformed_name_is_named(cremad_root):
    write_tone(cremad_root / "AudioWAV" / "1001-DFA-ANG.wav")
    with pytest.raises(DataError, match=r"1001-DFA-ANG\.wav: not a CREMA-D file name"):
        load_corpus(cremad_root, fmt="cremad")


# --- IEMOCAP ----------------------------------------------------------------------------------


def test_iemocap_is_detected_mapped_and_split_by_session(iemocap_root):
    corpus = load_corpus(iemocap_root)
    assert corpus.source == "iemocap"
    assert len(corpus.utterances) == 5 * 5  # per session: 6 turns, 'fru' dropped
    labels = {u.path.stem.rsplit("_", 1)[1]: u.label for u in corpus.utterances}
    assert labels == {"F000": "neutral", "M000": "happy", "M001": "angry", "F002": "sad", "M002": "happy"}
    assert corpus.speakers("test") == ["Ses05F", "Ses05M"]
    assert corpus.speakers("val") == ["Ses04F", "Ses04M"]
    assert corpus.speakers("train") == ["Ses01F", "Ses01M", "Ses02F", "Ses02M", "Ses03F", "Ses03M"]
    assert_speaker_disjoint(corpus)
    texts = {u.path.stem: u.text for u in corpus.utterances if u.text}
    assert texts["Ses01F_impro01_F000"] == "Excuse me."


def test_iemocap_leave_one_session_out(iemocap_root):
    corpus = load_iemocap(iemocap_root, test_session=1, val_session=None)
    assert corpus.speakers("test") == ["Ses01F", "Ses01M"]
    assert corpus.speakers("val") == []
    with pytest.raises(DataError, match="val split of this iemocap corpus is empty"):
        corpus.split("val")


def test_iemocap_malformed_label_line_names_file_and_line(iemocap_root):
    label_file = iemocap_root / "Session2" / "dialog" / "EmoEvaluation" / "Ses02F_impro01.txt"
    lines = label_file.read_text().splitlines()
    bad = next(i for i, line in enumerate(lines) if "M001" in line)
    lines[bad] = "[6.0000 - 8.5000]\tSes02F_impro01_M001\tang"  # the [V, A, D] part is missing
    label_file.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError) as err:
        load_corpus(iemocap_root)
    msg = str(err.value)
    assert f"Ses02F_impro01.txt line {bad + 1}" in msg and "not an IEMOCAP evaluation line" in msg


def test_iemocap_missing_wav_names_label_file_and_utterance(iemocap_root):
    (iemocap_root / "Session3" / "sentences" / "wav" / "Ses03F_impro01" / "Ses03F_impro01_F002.wav").unlink()
    with pytest.raises(
        DataError, match=r"Ses03F_impro01\.txt line \d+: audio for Ses03F_impro01_F002 not found"
    ):
        load_corpus(iemocap_root)


def test_iemocap_eval_text_fixture_has_the_real_line_shape():
    line = iemocap_eval_text("Ses01F_impro01").splitlines()[2]
    assert line == "[0.0000 - 2.5000]\tSes01F_impro01_F000\tneu\t[2.5000, 3.0000, 2.5000]"


# --- detection --------------------------------------------------------------------------------


def test_explicit_format_that_does_not_match_says_what_is_missing(cremad_root):
    with pytest.raises(DataError, match="no Actor_XX folders"):
        load_corpus(cremad_root, fmt="ravdess")
