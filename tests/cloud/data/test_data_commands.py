"""``edgewise data speech`` and ``edgewise data inspect`` through the real CLI entry point."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

from edgewise.cli import main
from edgewise.cloud.data.corpus import EMOTIONS, Utterance, load_corpus, write_manifests

from .conftest import SR, needs_tools, write_tone


def test_inspect_prints_counts_speakers_and_duration(speech_corpus, capsys):
    assert main(["data", "inspect", str(speech_corpus.root)]) == 0
    out = capsys.readouterr().out
    header = next(line for line in out.splitlines() if line.startswith("split"))
    assert header.split() == ["split", *EMOTIONS, "total", "speakers", "duration"]
    rows = {
        line.split()[0]: line.split() for line in out.splitlines() if line.split()[:1] in (["train"], ["all"])
    }
    assert rows["all"][5] == "48"
    assert "train speakers:" in out and "min" in out


def test_inspect_json_matches_the_corpus(speech_corpus, capsys):
    assert main(["data", "inspect", str(speech_corpus.root), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["source"] == "edgewise"
    assert summary["counts"] == speech_corpus.counts()
    assert summary["speakers"]["val"] == speech_corpus.speakers("val")
    assert 48 * 1.0 < summary["total_duration_s"] < 48 * 12.0
    assert summary["total_duration_s"] == pytest.approx(sum(summary["duration_s"].values()), abs=0.05)


def test_inspect_reads_a_real_corpus_layout(ravdess_root, capsys):
    assert main(["data", "inspect", str(ravdess_root), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["source"] == "ravdess" and summary["speakers"]["test"] == ["Actor_21", "Actor_22"]


def test_inspect_of_a_non_corpus_is_a_user_error(tmp_path, capsys):
    assert main(["data", "inspect", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "not a corpus in any supported layout" in err and "Traceback" not in err


def break_files(root):
    """Five RAVDESS files, each unusable in its own way: {file: what the report must say}."""
    files = sorted(u.path for u in load_corpus(root).utterances)  # the files the corpus uses
    truncated, header_only, nan, garbage, silent = files[0], files[5], files[10], files[15], files[20]
    data = truncated.read_bytes()
    truncated.write_bytes(data[: len(data) - 1000])  # cut inside the data
    header_only.write_bytes(header_only.read_bytes()[:44])
    tone = sf.read(str(nan), dtype="float32")[0]
    tone[5] = np.nan
    sf.write(str(nan), tone, SR, subtype="FLOAT")
    garbage.write_bytes(b"this is not audio at all" * 10)
    sf.write(str(silent), np.zeros(1600, dtype=np.float32), SR, subtype="PCM_16")
    return {
        truncated: "truncated wav: header declares",
        header_only: "truncated wav: header declares",
        nan: "non-finite audio: 1 NaN",
        garbage: "cannot decode audio",
        silent: "silent audio",
    }


def test_inspect_lists_every_unusable_file_in_one_run(ravdess_root, capsys):
    bad = break_files(ravdess_root)
    assert main(["data", "inspect", str(ravdess_root)]) == 2
    err = capsys.readouterr().err
    assert f"{len(bad)} of " in err and "audio file(s) cannot be used" in err and "Traceback" not in err
    lines = [line.strip() for line in err.splitlines()]
    for path, reason in bad.items():
        assert any(line.startswith(f"{path}: ") and reason in line for line in lines), (path, reason, err)


def test_inspect_lists_every_missing_file_of_an_edgewise_corpus(tmp_path, capsys):
    utts = [
        Utterance(
            write_tone(tmp_path / "wavs" / f"{split}{i}.wav", 200 + i), EMOTIONS[i], f"{split}-spk", split
        )
        for split in ("train", "val", "test")
        for i in range(4)
    ]
    write_manifests(tmp_path, utts, EMOTIONS, {"generator": "tests"})
    gone = [utts[1].path, utts[6].path, utts[11].path]  # one per split
    for path in gone:
        path.unlink()
    assert main(["data", "inspect", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "3 audio file(s) not found" in err
    for path, manifest in zip(gone, ("train.csv line 3", "val.csv line 4", "test.csv line 5")):
        assert f"{manifest}: audio file not found: wavs/{path.name}" in err


@needs_tools
def test_speech_writes_a_corpus_and_refuses_to_overwrite_without_force(tmp_path, capsys):
    out = tmp_path / "corpus"
    args = [
        "data",
        "speech",
        "--out",
        str(out),
        "--n",
        "24",
        "--seed",
        "2",
        "--workers",
        "2",
        "--no-progress",
    ]
    assert main([*args, "--no-noise"]) == 0
    corpus = load_corpus(out)
    assert len(corpus.utterances) == 24
    assert (
        json.loads((out / "corpus.json").read_text())["generator"]["settings"]["channel"]["noise_snr_db"]
        is None
    )
    capsys.readouterr()
    assert main(args) == 2
    assert "--force" in capsys.readouterr().err
    assert main([*args, "--force", "--noise-snr", "20,25", "--augment", "gain"]) == 0
    info = json.loads((out / "corpus.json").read_text())
    assert info["generator"]["settings"]["channel"]["noise_snr_db"] == [20.0, 25.0]
    assert len(load_corpus(out).split("train")) == 2 * 16


@pytest.mark.parametrize(
    "bad, message",
    [
        (["--n", "0"], "expected a number of at least 1"),
        (["--noise-snr", "30,10"], "MIN must not exceed MAX"),
        (["--augment", "noise,echo"], "unknown augmentation(s) echo"),
        (["--no-noise", "--noise-snr", "10,20"], "not allowed with argument"),
    ],
)
def test_speech_bad_arguments_exit_2_with_a_message(tmp_path, capsys, bad, message):
    with pytest.raises(SystemExit) as exit_info:
        main(["data", "speech", "--out", str(tmp_path / "c"), *bad])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
