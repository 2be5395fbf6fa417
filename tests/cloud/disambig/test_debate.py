"""The DEBATE-style loader: a fake release converts into the corpus format; bad rows are named."""

from __future__ import annotations

import csv
import json

import pytest
import soundfile as sf

from edgewise.cli import main
from edgewise.cloud.data.corpus import SPLITS, load_corpus
from edgewise.cloud.disambig.corpus import load_disambig
from edgewise.cloud.disambig.debate import convert_debate, read_debate, speaker_splits
from edgewise.errors import DataError

from .conftest import DEBATE_ITEMS, DEBATE_SPEAKERS, debate_rows, make_debate


def test_a_release_converts_into_the_corpus_format(tmp_path, capsys):
    root = make_debate(tmp_path / "debate")
    out = tmp_path / "corpus"
    assert main(["data", "disambig", "--debate", str(root), "--out", str(out), "--no-progress"]) == 0
    corpus = load_corpus(out)
    n_readings = sum(len(m) for _, _, m in DEBATE_ITEMS.values())
    assert len(corpus.utterances) == len(DEBATE_SPEAKERS) * n_readings
    assert corpus.labels == ("0", "1", "2")
    # 7 speakers: 1 val, 1 test (15%, at least one), by sorted id
    assert [corpus.speakers(s) for s in SPLITS] == [list(DEBATE_SPEAKERS[:5]), ["S06"], ["S07"]]
    info = sf.info(str(corpus.utterances[0].path))
    assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")  # from 44.1 kHz
    items = load_disambig(out).items
    stress = [it for it in items if it.template == "s01"]
    assert {it.kind for it in stress} == {"focus"} and {it.n_readings for it in stress} == {3}
    assert {it.kind for it in items if it.template == "p01"} == {"grouping"}
    second = next(it for it in stress if it.reading == 1)
    assert second.meaning == "he took something else" and second.text == "我没说他拿了钱"
    meta = json.loads((out / "corpus.json").read_text(encoding="utf-8"))
    assert meta["source"] == "debate" and meta["templates"]["s01"]["meanings"][2] == "I only hinted"


def test_jsonl_metadata_letters_and_a_missing_item_id(tmp_path):
    rows = [{**r, "answer": "AB"[int(r["answer"])]} for r in debate_rows() if r["item"] == "p01"]
    for r in rows:
        del r["item"]
    root = make_debate(tmp_path / "debate", rows, jsonl=True, sample_rate=16000)
    read = read_debate(root)
    assert [r.answer for r in read[:2]] == [0, 1]
    assert len({r.item for r in read}) == 1 and read[0].item.startswith("t")  # one id from the text
    convert_debate(root, tmp_path / "corpus", progress=False)
    assert len(load_disambig(tmp_path / "corpus").items) == len(rows)


def test_every_bad_row_is_named_by_file_row_and_column(tmp_path):
    rows = debate_rows()
    rows[0]["answer"] = "2"  # p01 has two meanings
    rows[2]["task"] = "tone"
    rows[3]["meanings"] = "only one"
    rows[4]["audio"] = "missing/x.wav"
    rows[5]["text"] = "another text"  # p01's text differs from its first row's
    rows[6]["speaker"] = ""
    root = make_debate(tmp_path / "debate", rows)
    with pytest.raises(DataError) as info:
        read_debate(root)
    message = str(info.value)
    assert "metadata.csv: 6 bad row(s)" in message
    for expected in (
        "metadata.csv row 1 (line 2), column 'answer': '2' is out of range for 2 meanings",
        "metadata.csv row 3 (line 4), column 'task': unknown task 'tone'",
        "metadata.csv row 4 (line 5), column 'meanings': expected at least two candidate meanings",
        "metadata.csv row 5 (line 6), column 'audio': file not found: missing/x.wav",
        "metadata.csv row 6 (line 7), column 'text': item 'p01' has '他说不过你' at metadata.csv row 2",
        "metadata.csv row 7 (line 8), column 'speaker': missing or empty",
    ):
        assert expected in message
    out = tmp_path / "corpus"
    assert main(["data", "disambig", "--debate", str(root), "--out", str(out)]) == 2
    assert not out.exists()


def test_missing_columns_and_missing_metadata_are_errors(tmp_path):
    root = tmp_path / "debate"
    root.mkdir()
    with pytest.raises(DataError, match="no metadata.csv or metadata.jsonl"):
        read_debate(root)
    with (root / "metadata.csv").open("w", newline="") as fh:
        csv.writer(fh).writerows([["audio", "text", "speaker"], ["a.wav", "x", "s1"]])
    with pytest.raises(DataError, match="missing column.*meanings, answer, task"):
        read_debate(root)


def test_speaker_splits_need_three_speakers():
    assert speaker_splits(["b", "a", "c", "a"]) == {"a": "train", "b": "val", "c": "test"}
    with pytest.raises(DataError, match="at least 3 speakers"):
        speaker_splits(["a", "b"])
