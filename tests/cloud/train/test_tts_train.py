"""``edgewise train tts`` and ``edgewise train vocoder``: the run layout, the HRF merge check, resuming,
and the refusals. The runs are the session fixture ``tts_runs`` (tiny presets, 30 steps each on the
``tts_corpus`` fixture); resuming works on a copy so the shared runs stay as they are."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from edgewise.cli import main
from tests.conftest import TTS_FAST, TTS_SMALL, require_module

torch = require_module("torch")

RUNS = {"tts": 0, "vocoder": 1}  # index into the tts_runs fixture
STEPS, EVAL_EVERY = 30, 15  # as TTS_FAST sets them
EXTRA = TTS_SMALL  # what the fixture set for each run beyond TTS_FAST


def history(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines() if line]


def train(kind: str, corpus: Path, out: Path, *args: str) -> int:
    return main(["-q", "train", kind, "--data", str(corpus), "--out", str(out), "--no-progress", *args])


@pytest.mark.slow
@pytest.mark.parametrize("kind", list(RUNS))
def test_a_run_has_its_files(kind, tts_runs):
    run = tts_runs[RUNS[kind]]
    for name in ("config.yaml", "model.json", "model.safetensors", "metrics.json", "history.jsonl"):
        assert (run / name).is_file(), name
    assert (run / "checkpoints" / "last.safetensors").is_file()
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["task"] == kind and config["optim"]["steps"] == STEPS
    assert config["model"]["hrf"] is not None  # trained with HRF


@pytest.mark.slow
@pytest.mark.parametrize("kind", list(RUNS))
def test_model_json_holds_the_merged_config(kind, tts_runs):
    run = tts_runs[RUNS[kind]]
    info = json.loads((run / "model.json").read_text())
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert info["task"] == kind
    assert info["model"]["hrf"] is None  # the weights are merged: the plain architecture
    assert {k: v for k, v in info["model"].items() if k != "hrf"} == {
        k: v for k, v in config["model"].items() if k != "hrf"
    }
    assert info["trained_with"]["hrf"] == config["model"]["hrf"]
    assert info["trained_with"]["parameters_training_form"] > info["parameters"]
    assert info["provenance"]["steps"] == STEPS and info["provenance"]["seed"] == config["seed"]


@pytest.mark.slow
@pytest.mark.parametrize("kind", list(RUNS))
def test_metrics_show_the_merge_is_exact(kind, tts_runs):
    metrics = json.loads((tts_runs[RUNS[kind]] / "metrics.json").read_text())
    assert metrics["merge_max_abs_diff"] is not None
    assert 0 <= metrics["merge_max_abs_diff"] < 1e-4
    assert metrics["parameters"] < metrics["parameters_training_form"]
    val = [k for k in metrics if k.startswith("val_")]
    assert val and all(metrics[k] == metrics[k] for k in val)  # finite, not NaN


@pytest.mark.slow
@pytest.mark.parametrize("kind", list(RUNS))
def test_history_has_one_line_per_evaluation(kind, tts_runs):
    records = history(tts_runs[RUNS[kind]])
    assert [r["step"] for r in records] == list(range(EVAL_EVERY, STEPS + 1, EVAL_EVERY))
    assert all(
        any(k.startswith("train_") for k in r) and any(k.startswith("val_") for k in r) for r in records
    )


@pytest.mark.slow
def test_the_merged_weights_load_into_the_plain_models(tts_runs):
    from edgewise.cloud.train.tts_trainer import load_acoustic_run, load_vocoder_run

    acoustic, info = load_acoustic_run(tts_runs[0])
    vocoder, _ = load_vocoder_run(tts_runs[1])
    assert acoustic.config.hrf is None and vocoder.config.hrf is None
    assert not any(".hrf." in k for k in [*acoustic.state_dict(), *vocoder.state_dict()])
    assert len(info["mel_mean"]) == len(info["mel_std"]) == acoustic.config.n_mels


@pytest.mark.slow
def test_acoustic_run_records_what_the_device_needs(tts_runs, tts_corpus):
    info = json.loads((tts_runs[0] / "model.json").read_text())
    corpus = json.loads((tts_corpus / "corpus.json").read_text())
    assert info["phoneme_id_map"] == corpus["phoneme_id_map"]
    assert info["phonemizer"] == corpus["phonemizer"]
    assert info["teacher"]["sha256"] == corpus["teacher"]["sha256"]
    assert "model_card" not in info["teacher"]
    assert all(s > 0 for s in info["mel_std"])


@pytest.mark.slow
def test_a_wrong_kind_of_run_is_refused(tts_runs):
    from edgewise.cloud.train.tts_trainer import load_acoustic_run
    from edgewise.errors import EdgewiseError

    with pytest.raises(EdgewiseError, match="a 'vocoder' run, expected a 'tts' run"):
        load_acoustic_run(tts_runs[1])


@pytest.mark.slow
def test_a_vocoder_run_adds_the_word_error_rate(tts_runs, tts_corpus, tmp_path):
    """--vocoder RUN: evaluations score pocketsphinx's WER on PyTorch's audio of val sentences."""
    require_module("pocketsphinx")
    run = shutil.copytree(tts_runs[RUNS["tts"]], tmp_path / "tts")
    before = history(run)
    overrides = [*TTS_FAST, *EXTRA["tts"], "--set", "optim.steps=32", "--set", "eval_sentences=2"]
    assert train("tts", tts_corpus, run, "--resume", "--vocoder", str(tts_runs[1]), *overrides) == 0
    after = history(run)
    assert all("val_wer" not in r for r in before)  # the fixture trained without a vocoder
    assert after[-1]["step"] == 32 and isinstance(after[-1]["val_wer"], float) and after[-1]["val_wer"] >= 0
    assert "val_wer" in json.loads((run / "metrics.json").read_text())  # the merged model's, at the end


@pytest.mark.slow
def test_a_missing_vocoder_run_is_refused_before_training(tts_runs, tts_corpus, tmp_path, capsys):
    run = shutil.copytree(tts_runs[RUNS["tts"]], tmp_path / "tts")
    before = history(run)
    overrides = [*TTS_FAST, *EXTRA["tts"], "--set", "optim.steps=32"]
    assert train("tts", tts_corpus, run, "--resume", "--vocoder", str(tmp_path / "nope"), *overrides) == 2
    assert "nope" in capsys.readouterr().err
    assert history(run) == before  # not one step trained


# -- resuming ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_resume_continues_a_run_to_more_steps(tts_runs, tts_corpus, tmp_path):
    run = shutil.copytree(tts_runs[RUNS["vocoder"]], tmp_path / "voc")
    before = history(run)
    overrides = [*TTS_FAST, *EXTRA["vocoder"], "--set", "optim.steps=40"]
    assert train("vocoder", tts_corpus, run, "--resume", *overrides) == 0
    after = history(run)
    assert after[: len(before)] == before
    assert [r["step"] for r in after[len(before) :]] == [40]
    info = json.loads((run / "model.json").read_text())
    assert info["provenance"]["steps"] == 40
    assert yaml.safe_load((run / "config.yaml").read_text())["optim"]["steps"] == 40
    from edgewise.cloud.train.checkpoint import load_tensors

    assert load_tensors(run / "checkpoints" / "last.safetensors")[1]["step"] == 40
    assert json.loads((run / "metrics.json").read_text())["merge_max_abs_diff"] < 1e-4


@pytest.mark.slow
@pytest.mark.parametrize(
    ("kind", "change", "field"),
    [
        ("tts", "model.encoder.n_layers=2", "model.encoder.n_layers: 4 -> 2"),
        ("tts", "model.hrf=null", "model.hrf"),
        ("vocoder", "model.dim=96", "model.dim: 192 -> 96"),
        ("vocoder", "optim.lr=0.01", "optim.lr: 0.001 -> 0.01"),
    ],
)
def test_resume_refuses_a_changed_setting_naming_the_field(kind, change, field, tts_runs, tts_corpus, capsys):
    """Refused before any work, so the shared run is used as is (nothing is written)."""
    run = tts_runs[RUNS[kind]]
    stamp = (run / "history.jsonl").read_text()
    assert train(kind, tts_corpus, run, "--resume", *TTS_FAST, *EXTRA[kind], "--set", change) == 2
    err = capsys.readouterr().err
    assert "--resume continues this run's config; these would change" in err and field in err
    assert "Traceback" not in err
    assert (run / "history.jsonl").read_text() == stamp


def test_resume_without_a_checkpoint_is_refused(tmp_path, capsys):
    (tmp_path / "corpus").mkdir()
    assert train("tts", tmp_path / "corpus", tmp_path / "run", "--resume") == 2
    assert "nothing to resume (no checkpoints/last.safetensors)" in capsys.readouterr().err


# -- refusals ---------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("kind", list(RUNS))
def test_a_fresh_run_into_a_non_empty_out_is_refused(kind, tts_runs, tts_corpus, capsys):
    run = tts_runs[RUNS[kind]]
    files = sorted(p.name for p in run.iterdir())
    assert train(kind, tts_corpus, run, *TTS_FAST) == 2
    assert f"{run}: output directory exists and is not empty; choose another --out or pass --resume" in (
        capsys.readouterr().err
    )
    assert sorted(p.name for p in run.iterdir()) == files


@pytest.mark.parametrize(
    ("kind", "presets"), [("tts", "(base, tiny)"), ("vocoder", "(vocoder-base, vocoder-tiny)")]
)
def test_an_unknown_preset_is_refused_listing_the_presets(kind, presets, tmp_path, capsys):
    assert train(kind, tmp_path, tmp_path / "run", "--config", "enormous") == 2
    err = capsys.readouterr().err
    assert f"{kind} config 'enormous': not a shipped preset {presets} nor a YAML file" in err
    assert not (tmp_path / "run").exists()


def test_a_bad_override_names_the_field(tmp_path, capsys):
    assert train("tts", tmp_path, tmp_path / "run", "--set", "optim.steps=-3") == 2
    err = capsys.readouterr().err
    assert "optim.steps" in err and "Traceback" not in err


def test_a_directory_that_is_not_a_corpus_is_refused(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert train("vocoder", tmp_path / "empty", tmp_path / "run") == 2
    assert "not a TTS corpus edgewise reads" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
