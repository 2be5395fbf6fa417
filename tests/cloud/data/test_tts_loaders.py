"""Recorded TTS corpora in their published layouts (LJSpeech, VCTK), read by ``load_tts_corpus``.

The trees are built in tmp_path with real audio files (a short synthetic voiced signal written
with soundfile: PCM16 wav at 22.05 kHz for LJSpeech, FLAC at 48 kHz for VCTK); no dataset file
is committed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from edgewise.cloud.data.tts_corpus import SPLITS, load_tts_corpus
from edgewise.errors import DataError
from edgewise.phonemes import PhonemeIds
from tests.conftest import require_module

LJ_LINES = {
    "LJ001-0001": ("Printing, in the only sense with which we are at present concerned.", None),
    "LJ001-0002": ("in being comparatively modern.", None),
    "LJ002-0010": ("It cost £3 in 1829.", "It cost three pounds in eighteen twenty-nine."),
    "LJ003-0042": ("Was he there?", None),
}
VCTK_LINES = {
    "p225": {"p225_001": "Please call Stella.", "p225_002": "Ask her to bring these things with her."},
    "p226": {"p226_001": "Six spoons of fresh snow peas?", "p226_003": "We also need a small plastic snake."},
}


@pytest.fixture(autouse=True)
def _piper():
    require_module("piper", "piper-tts is not installed (the tts extra: its symbol table and espeak-ng)")


def write_voice(path: Path, sr: int, seconds: float = 0.4, f0: float = 140.0) -> Path:
    """A short harmonic signal with a little noise, as PCM16 (wav) or FLAC by the suffix."""
    t = np.arange(int(seconds * sr)) / sr
    wave = sum(np.sin(2 * np.pi * k * f0 * t) / k for k in range(1, 6)) * 0.15
    wave = wave + np.random.default_rng(int(f0)).normal(0, 0.005, t.shape)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), wave.astype(np.float32), sr, subtype="PCM_16")
    return path


def make_ljspeech(root: Path, lines=LJ_LINES) -> Path:
    csv_lines = []
    for k, (uid, (text, normalized)) in enumerate(lines.items()):
        write_voice(root / "wavs" / f"{uid}.wav", 22050, f0=120 + 10 * k)
        csv_lines.append(f"{uid}|{text}|{normalized or text}")
    (root / "metadata.csv").write_text("\n".join(csv_lines) + "\n", encoding="utf-8")
    return root


def make_vctk(root: Path) -> Path:
    for speaker, lines in VCTK_LINES.items():
        for uid, text in lines.items():
            (root / "txt" / speaker).mkdir(parents=True, exist_ok=True)
            (root / "txt" / speaker / f"{uid}.txt").write_text(text + "\n")
            write_voice(root / "wav48_silence_trimmed" / speaker / f"{uid}_mic1.flac", 48000, f0=vctk_f0(uid))
    return root


def vctk_f0(uid: str) -> float:
    return 150.0 + 10 * (list(VCTK_LINES[uid[:4]]).index(uid))


def all_rows(corpus):
    return [r for split in SPLITS for r in corpus.rows[split]]


def test_ljspeech_layout_is_detected_and_read(tmp_path):
    corpus = load_tts_corpus(make_ljspeech(tmp_path / "LJSpeech-1.1"))
    assert corpus.meta["source"] == "ljspeech"
    rows = {r.id: r for r in all_rows(corpus)}
    assert set(rows) == set(LJ_LINES)
    for uid, row in rows.items():
        text, normalized = LJ_LINES[uid]
        assert row.text == (normalized or text)  # the normalised column when there is one
        assert row.durations is None and row.speaker == "ljspeech"
        assert corpus.audio_path(row) == corpus.root / "wavs" / f"{uid}.wav"
        assert row.phonemes and not any(ch.isdigit() for ch in row.normalized)


def test_ljspeech_rows_get_piper_ids_and_sentence_types(tmp_path):
    corpus = load_tts_corpus(make_ljspeech(tmp_path / "lj"))
    table = PhonemeIds(corpus.id_map)
    rows = {r.id: r for r in all_rows(corpus)}
    for row in rows.values():
        assert row.ids[0] == table.id_map["^"][0] and row.ids[-1] == table.id_map["$"][0]
        assert len(row.ids) == 2 * len(row.phonemes) + 3
    assert rows["LJ003-0042"].sentence_type == "?"
    assert rows["LJ001-0001"].sentence_type == "."


def test_ljspeech_without_normalized_column_uses_the_text(tmp_path):
    root = tmp_path / "lj"
    write_voice(root / "wavs" / "a1.wav", 22050)
    (root / "metadata.csv").write_text("a1|It is 5 past 3.\n")
    (row,) = all_rows(load_tts_corpus(root))
    assert row.text == "It is 5 past 3." and row.normalized == "It is five past three."


def test_ljspeech_missing_audio_is_a_data_error_naming_the_line(tmp_path):
    root = make_ljspeech(tmp_path / "lj")
    (root / "wavs" / "LJ002-0010.wav").unlink()
    with pytest.raises(DataError, match=r"metadata\.csv:3: audio file wavs/LJ002-0010\.wav is missing"):
        load_tts_corpus(root)


def test_ljspeech_line_without_text_is_a_data_error(tmp_path):
    root = make_ljspeech(tmp_path / "lj")
    with open(root / "metadata.csv", "a") as fh:
        fh.write("LJ009-0001\n")
    with pytest.raises(DataError, match=r"metadata\.csv:5: expected id\|text"):
        load_tts_corpus(root)


def test_ljspeech_empty_transcript_is_a_data_error(tmp_path):
    root = make_ljspeech(tmp_path / "lj")
    write_voice(root / "wavs" / "LJ009-0002.wav", 22050)
    with open(root / "metadata.csv", "a") as fh:
        fh.write("LJ009-0002| | \n")
    with pytest.raises(DataError, match=r"metadata\.csv:5: LJ009-0002 has an empty transcript"):
        load_tts_corpus(root)


def test_vctk_layout_is_detected_and_read(tmp_path):
    corpus = load_tts_corpus(make_vctk(tmp_path / "VCTK-Corpus-0.92"))
    assert corpus.meta["source"] == "vctk"
    rows = {r.id: r for r in all_rows(corpus)}
    expected = {uid: (spk, text) for spk, lines in VCTK_LINES.items() for uid, text in lines.items()}
    assert set(rows) == set(expected)
    for uid, row in rows.items():
        speaker, text = expected[uid]
        assert (row.speaker, row.text, row.durations) == (speaker, text, None)
        assert row.path == f"wav48_silence_trimmed/{speaker}/{uid}_mic1.flac"
        assert corpus.audio_path(row).is_file()
    assert rows["p226_001"].sentence_type == "?"


def test_vctk_transcripts_without_recordings_are_skipped(tmp_path):
    root = make_vctk(tmp_path / "vctk")
    (root / "txt" / "p315").mkdir()
    (root / "txt" / "p315" / "p315_001.txt").write_text("No recording exists for this one.")
    ids = {r.id for r in all_rows(load_tts_corpus(root))}
    assert "p315_001" not in ids and len(ids) == 4


def test_splits_are_seeded_by_the_id(tmp_path):
    a = load_tts_corpus(make_ljspeech(tmp_path / "a"))
    b = load_tts_corpus(make_ljspeech(tmp_path / "b"))
    assert {s: [r.id for r in a.rows[s]] for s in SPLITS} == {s: [r.id for r in b.rows[s]] for s in SPLITS}


def test_recorded_audio_gives_training_features(tmp_path):
    """The trainer's feature step reads these files: 48 kHz FLAC is resampled to 22.05 kHz mels."""
    require_module("torch")  # tts_data lives in the training half
    from edgewise.cloud.train.tts_data import load_split

    corpus = load_tts_corpus(make_vctk(tmp_path / "vctk"))
    split = next(s for s in SPLITS if corpus.rows[s])
    data = load_split(corpus, split, workers=1, cache_dir=tmp_path / "cache")
    for i, row in enumerate(data.rows):
        seconds = sf.info(str(corpus.audio_path(row))).duration
        assert data.mel_of(i).shape == (int(seconds * 22050) // 256, 80)
        f0 = data.f0_of(i)
        assert np.median(f0[f0 > 0]) == pytest.approx(vctk_f0(row.id), rel=0.02)


def test_an_unknown_layout_is_a_data_error(tmp_path):
    (tmp_path / "audio").mkdir()
    write_voice(tmp_path / "audio" / "x.wav", 22050)
    with pytest.raises(DataError, match="not a TTS corpus edgewise reads"):
        load_tts_corpus(tmp_path)


def test_a_missing_directory_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="no such corpus directory"):
        load_tts_corpus(tmp_path / "nowhere")


def test_an_empty_layout_is_a_data_error(tmp_path):
    (tmp_path / "wavs").mkdir()
    (tmp_path / "metadata.csv").write_text("")
    with pytest.raises(DataError, match="no utterances found in the ljspeech layout"):
        load_tts_corpus(tmp_path)
