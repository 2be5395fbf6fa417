"""``edgewise data speech`` and ``edgewise data inspect`` through the real CLI entry point."""

from __future__ import annotations

import json

import pytest

from edgewise.cli import main
from edgewise.cloud.data.corpus import EMOTIONS, load_corpus

from .conftest import needs_tools


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
