"""The corpus contract: edgewise's layout round-trips, and every bad manifest row is named."""

from __future__ import annotations

import json

import pytest

from edgewise.cloud.data.corpus import EMOTIONS, SPLITS, Corpus, Utterance, load_corpus, write_manifests
from edgewise.errors import ConfigError, DataError

from .conftest import write_tone


def make_corpus(root):
    """Two speakers per split, every label once per speaker, plus an extra 'duration' column."""
    utts, extras = [], []
    for split in SPLITS:
        for s in range(2):
            for k, label in enumerate(EMOTIONS):
                path = write_tone(root / "wavs" / f"{split}{s}_{label}.wav", 200 + 20 * k)
                utts.append(Utterance(path, label, f"{split}{s}", split, f"Sentence {k}, quoted."))
                extras.append({"duration": "0.100"})
    write_manifests(root, utts, EMOTIONS, {"seed": 3, "n": len(utts)}, extra_columns=extras)
    return root


def rewrite_row(manifest, line_no, **changes):
    """Change fields of one data line (1-based file line numbers, header is line 1)."""
    lines = manifest.read_text().splitlines()
    header = lines[0].split(",")
    fields = lines[line_no - 1].split(",", len(header) - 1)
    for key, value in changes.items():
        fields[header.index(key)] = value
    lines[line_no - 1] = ",".join(fields)
    manifest.write_text("\n".join(lines) + "\n")


def test_round_trip_keeps_every_utterance_with_absolute_paths(tmp_path):
    root = make_corpus(tmp_path / "c")
    corpus = load_corpus(root)
    assert corpus.source == "edgewise"
    assert corpus.labels == EMOTIONS
    assert len(corpus.utterances) == 24
    assert all(u.path.is_absolute() and u.path.is_file() for u in corpus.utterances)
    assert corpus.split("val")[0].text == "Sentence 0, quoted."
    assert corpus.counts()["test"] == dict.fromkeys(EMOTIONS, 2)
    assert corpus.speakers("train") == ["train0", "train1"]


def test_manifest_paths_are_relative_and_extra_columns_kept(tmp_path):
    root = make_corpus(tmp_path / "c")
    lines = (root / "train.csv").read_text().splitlines()
    assert lines[0] == "path,label,speaker,text,duration"
    assert lines[1].startswith("wavs/train0_neutral.wav,neutral,train0,")
    info = json.loads((root / "corpus.json").read_text())
    assert info["schema_version"] == 1 and info["labels"] == list(EMOTIONS) and info["seed"] == 3
    assert info["speakers"]["val"] == ["val0", "val1"]
    assert info["counts"]["train"]["sad"] == 2


def test_corpus_json_path_is_accepted(tmp_path):
    root = make_corpus(tmp_path / "c")
    assert load_corpus(root / "corpus.json").root == root.resolve()


def test_missing_audio_file_names_csv_line_and_path(tmp_path):
    root = make_corpus(tmp_path / "c")
    (root / "wavs" / "val1_sad.wav").unlink()  # val.csv: header, val0 x4, val1 neutral, happy, sad -> line 8
    with pytest.raises(DataError) as err:
        load_corpus(root)
    msg = str(err.value)
    assert "val.csv line 8" in msg and "wavs/val1_sad.wav" in msg and "not found" in msg


def test_unknown_label_names_row_label_and_allowed_labels(tmp_path):
    root = make_corpus(tmp_path / "c")
    rewrite_row(root / "test.csv", 3, label="fearful")
    with pytest.raises(DataError) as err:
        load_corpus(root)
    msg = str(err.value)
    assert "test.csv line 3" in msg and "'fearful'" in msg and "neutral, happy, sad, angry" in msg


def test_missing_column_names_file_and_expected_columns(tmp_path):
    root = make_corpus(tmp_path / "c")
    manifest = root / "train.csv"
    lines = manifest.read_text().splitlines()
    manifest.write_text("\n".join([lines[0].replace("speaker", "talker"), *lines[1:]]) + "\n")
    with pytest.raises(DataError) as err:
        load_corpus(root)
    msg = str(err.value)
    assert "train.csv" in msg and "missing column(s) speaker" in msg and "path, label, speaker, text" in msg


def test_short_row_names_its_line(tmp_path):
    root = make_corpus(tmp_path / "c")
    manifest = root / "train.csv"
    manifest.write_text(manifest.read_text() + "wavs/train0_sad.wav,sad\n")
    with pytest.raises(DataError, match=r"train\.csv line 10: expected 5 fields as in the header, got 2"):
        load_corpus(root)


def test_speaker_in_two_splits_is_refused(tmp_path):
    root = make_corpus(tmp_path / "c")
    rewrite_row(root / "test.csv", 2, speaker="train0")
    with pytest.raises(DataError, match=r"speaker-disjoint.*train0 \(train, test\)"):
        load_corpus(root)


def test_missing_split_manifest_is_named(tmp_path):
    root = make_corpus(tmp_path / "c")
    (root / "val.csv").unlink()
    with pytest.raises(DataError, match=r"val\.csv: manifest not found"):
        load_corpus(root)


def test_bad_schema_version_is_named(tmp_path):
    root = make_corpus(tmp_path / "c")
    info = json.loads((root / "corpus.json").read_text())
    (root / "corpus.json").write_text(json.dumps({**info, "schema_version": 99}))
    with pytest.raises(DataError, match=r"corpus\.json: field 'schema_version': expected 1, got 99"):
        load_corpus(root)


def test_split_unknown_or_empty_is_a_data_error(tmp_path):
    corpus = Corpus(tmp_path, EMOTIONS, [Utterance(tmp_path / "a.wav", "sad", "s1", "train")], "edgewise")
    assert len(corpus.split("train")) == 1
    with pytest.raises(DataError, match="unknown split 'dev'; expected one of train, val, test"):
        corpus.split("dev")
    with pytest.raises(DataError, match="the val split of this edgewise corpus is empty"):
        corpus.split("val")


def test_unrecognised_directory_lists_supported_layouts(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(DataError) as err:
        load_corpus(tmp_path)
    msg = str(err.value)
    for name in ("edgewise:", "ravdess:", "cremad:", "iemocap:"):
        assert name in msg


def test_missing_directory_and_unknown_format(tmp_path):
    with pytest.raises(DataError, match="corpus directory not found"):
        load_corpus(tmp_path / "nope")
    with pytest.raises(ConfigError, match="unknown corpus format 'timit'"):
        load_corpus(tmp_path, fmt="timit")


def test_write_manifests_refuses_shared_speakers(tmp_path):
    a = write_tone(tmp_path / "a.wav")
    utts = [Utterance(a, "sad", "s1", "train"), Utterance(a, "sad", "s1", "test")]
    with pytest.raises(DataError, match="speaker-disjoint"):
        write_manifests(tmp_path / "c", utts, EMOTIONS, {})
