"""The corpus-difficulty baseline: eGeMAPS functionals + logistic regression, plain and z-scored per
speaker, through the CLI on real wav files."""

from __future__ import annotations

import json

import numpy as np

from edgewise.cloud.baseline import normalize_per_speaker
from tests.conftest import require_module

require_module("opensmile")


def test_per_speaker_normalization_centres_and_scales_each_speaker_on_its_own():
    rng = np.random.default_rng(0)
    speakers = ["a"] * 5 + ["b"] * 4 + ["c"]
    x = rng.normal(size=(10, 3)) * [1.0, 5.0, 0.0] + [0.0, 100.0, 7.0]
    x[5:9] += 50.0  # speaker b sits far from a: normalization must remove that offset
    z = normalize_per_speaker(x, speakers)
    for spk in ("a", "b"):
        rows = np.array(speakers) == spk
        np.testing.assert_allclose(z[rows][:, :2].mean(axis=0), 0.0, atol=1e-12)
        np.testing.assert_allclose(z[rows][:, :2].std(axis=0), 1.0, atol=1e-12)
    assert np.all(z[:, 2] == 0.0)  # constant within every speaker: 0, not NaN
    assert np.all(z[9] == 0.0)  # a speaker with one utterance has nothing to scale by


def test_baseline_grades_a_corpus_and_speaker_norm_removes_the_speakers_pitch(edge_corpus, tmp_path, capsys):
    """The tone corpus puts each class at a pitch relative to a random per-speaker base, so z-scoring
    within speakers must not lose to the plain baseline."""
    from edgewise.cli import main

    reports = {}
    for name, extra in (("plain", []), ("speaker", ["--speaker-norm"])):
        out = tmp_path / f"{name}.json"
        assert main(["-q", "eval", "baseline", "--data", str(edge_corpus), "--out", str(out), *extra]) == 0
        reports[name] = json.loads(out.read_text())
        assert json.loads(capsys.readouterr().out) == reports[name]
    for report in reports.values():
        assert report["split"] == "test"
        assert 0.0 <= report["ua"] <= 1.0
        assert sum(report["support"].values()) == report["n"] > 0
        assert report["C"] in (0.01, 0.1, 1.0, 10.0)
    assert reports["plain"]["speaker_normalized"] is False
    assert reports["speaker"]["speaker_normalized"] is True
    assert "per speaker" in reports["speaker"]["model"]
    assert reports["speaker"]["ua"] >= max(reports["plain"]["ua"], 0.9)


def test_baseline_on_a_missing_corpus_is_a_clear_error(tmp_path, capsys):
    from edgewise.cli import main

    assert main(["eval", "baseline", "--data", str(tmp_path / "nope")]) != 0
    err = capsys.readouterr().err
    assert "nope" in err and "Traceback" not in err
