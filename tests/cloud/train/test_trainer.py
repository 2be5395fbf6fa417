"""`edgewise train ser` and `edgewise eval ser`, end to end on a small corpus."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
import torch

from edgewise.cli import main
from edgewise.cloud.models.hrf import count_parameters
from edgewise.cloud.models.registry import ModelConfig, build_model
from edgewise.cloud.train.checkpoint import load_weights_into
from edgewise.cloud.train.run import load_run_model
from edgewise.errors import EdgewiseError

from .conftest import FAST, make_tone_corpus


@pytest.fixture(scope="module")
def trained_run(tone_corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "tiny"
    assert (
        main(
            [
                "train",
                "ser",
                "--config",
                "tiny",
                "--data",
                str(tone_corpus),
                "--out",
                str(out),
                "--set",
                "optim.epochs=12",
                *FAST[2:],
            ]
        )
        == 0
    )
    return out


def test_run_directory_has_every_artifact(trained_run):
    for name in (
        "config.yaml",
        "model.json",
        "model.safetensors",
        "metrics.json",
        "confusion.png",
        "history.jsonl",
        "checkpoints/best.safetensors",
        "checkpoints/last.safetensors",
    ):
        assert (trained_run / name).is_file(), name
    metrics = json.loads((trained_run / "metrics.json").read_text())
    assert set(metrics["per_class_recall"]) == {"neutral", "happy", "sad", "angry"}
    for key in ("ua", "wa", "macro_f1"):
        assert 0.0 <= metrics[key] <= 1.0
    assert metrics["split"] == "test" and metrics["n"] == 24


def test_training_learns_the_task(trained_run):
    metrics = json.loads((trained_run / "metrics.json").read_text())
    assert metrics["ua"] >= 0.6, metrics  # chance is 0.25 on four balanced classes


def test_saved_model_is_merged_and_equals_the_training_form(trained_run):
    info = json.loads((trained_run / "model.json").read_text())
    assert info["model"]["hrf"] is None and info["trained_with"]["hrf"] is not None
    plain = build_model(ModelConfig(**info["model"]))
    load_weights_into(
        plain, trained_run / "model.safetensors"
    )  # strict: the plain backbone's keys and shapes
    assert count_parameters(plain) == info["parameters"] < info["trained_with"]["parameters_training_form"]
    metrics = json.loads((trained_run / "metrics.json").read_text())
    assert metrics["merge_max_abs_diff"] < 1e-4
    assert len(info["features"]["mean"]) == info["features"]["n_mels"]


def test_eval_reproduces_the_test_metrics(trained_run, tone_corpus, tmp_path, capsys):
    out = tmp_path / "eval.json"
    assert main(["eval", "ser", str(trained_run), "--data", str(tone_corpus), "--out", str(out)]) == 0
    again = json.loads(out.read_text())
    metrics = json.loads((trained_run / "metrics.json").read_text())
    assert again["ua"] == pytest.approx(metrics["ua"]) and again["confusion"] == metrics["confusion"]


def test_resume_continues_from_the_last_epoch(tone_corpus, tmp_path):
    out = tmp_path / "run"
    args = ["train", "ser", "--data", str(tone_corpus), "--out", str(out), *FAST]
    assert main([*args, "--set", "optim.epochs=2", "--set", "patience=50"]) == 0
    assert main([*args, "--set", "optim.epochs=3", "--set", "patience=50", "--resume"]) == 0
    epochs = [json.loads(line)["epoch"] for line in (out / "history.jsonl").read_text().splitlines()]
    assert epochs == [0, 1, 2]


def test_resume_refuses_a_changed_config_and_keeps_the_teacher(trained_run, tone_corpus, tmp_path, capsys):
    out = tmp_path / "student"
    args = ["train", "ser", "--data", str(tone_corpus), "--out", str(out), *FAST, "--set", "patience=50"]
    assert main([*args, "--teacher", str(trained_run), "--set", "optim.epochs=1"]) == 0
    assert main([*args, "--set", "optim.epochs=2", "--set", "optim.lr=0.5", "--resume"]) == 2
    assert "optim.lr: 0.003 -> 0.5" in capsys.readouterr().err
    assert main([*args, "--set", "optim.epochs=2", "--resume"]) == 0  # no --teacher: the run's own is used
    info = json.loads((out / "model.json").read_text())
    assert info["trained_with"]["kd"]["teacher"] == str(trained_run.resolve())
    assert len((out / "history.jsonl").read_text().splitlines()) == 2


def test_output_that_is_a_file_or_unwritable_is_refused_before_work(tone_corpus, tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("x")
    assert main(["train", "ser", "--data", str(tone_corpus), "--out", str(afile), *FAST]) == 2
    assert "not a directory" in capsys.readouterr().err
    assert main(["train", "ser", "--data", str(tone_corpus), "--out", str(afile / "run"), *FAST]) == 2
    assert "cannot create the run directory" in capsys.readouterr().err


def test_existing_output_is_not_overwritten(trained_run, tone_corpus, capsys):
    before = (trained_run / "model.safetensors").read_bytes()
    assert main(["train", "ser", "--data", str(tone_corpus), "--out", str(trained_run), *FAST]) == 2
    assert "not empty" in capsys.readouterr().err
    assert (trained_run / "model.safetensors").read_bytes() == before


def test_distillation_from_a_teacher_run(trained_run, tone_corpus, tmp_path):
    out = tmp_path / "student"
    assert (
        main(
            [
                "train",
                "ser",
                "--config",
                "tiny",
                "--teacher",
                str(trained_run),
                "--data",
                str(tone_corpus),
                "--out",
                str(out),
                "--set",
                "kd.hidden_weight=0.5",
                "--set",
                "model.size=tiny",
                *FAST,
            ]
        )
        == 0
    )
    kd = json.loads((out / "model.json").read_text())["trained_with"]["kd"]
    assert kd["teacher"] == str(trained_run.resolve()) and kd["hidden_weight"] == 0.5


def test_teacher_with_another_front_end_is_refused(trained_run, tone_corpus, tmp_path, capsys):
    code = main(
        [
            "train",
            "ser",
            "--teacher",
            str(trained_run),
            "--data",
            str(tone_corpus),
            "--out",
            str(tmp_path / "s"),
            "--set",
            "features.n_mels=40",
            "--set",
            "model.n_mels=40",
            *FAST,
        ]
    )
    assert code == 2 and "front-end differs" in capsys.readouterr().err


def test_unknown_config_key_and_wrong_type_name_the_field(tone_corpus, tmp_path, capsys):
    base = ["train", "ser", "--data", str(tone_corpus), "--out", str(tmp_path / "r")]
    assert main([*base, "--set", "optim.learning_rate=0.1"]) == 2
    assert "unknown field 'optim.learning_rate'" in capsys.readouterr().err
    assert main([*base, "--set", "optim.batch_size=many"]) == 2
    assert "field 'optim.batch_size'" in capsys.readouterr().err
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("model:\n  arch: lstm\n")
    assert main([*base[:2], "--config", str(bad_yaml), *base[2:]]) == 2
    err = capsys.readouterr().err
    assert "bad.yaml" in err and "model.arch" in err
    assert not (tmp_path / "r").exists()


def test_unusable_audio_fails_clearly_or_is_skipped(tmp_path, capsys):
    corpus = make_tone_corpus(tmp_path / "c", speakers_per_split=(2, 1, 1), per_class=2)
    victim = sorted((corpus / "wavs").glob("train0_happy_*.wav"))[0]
    victim.write_bytes(victim.read_bytes()[:100])  # truncated
    args = ["train", "ser", "--data", str(corpus), *FAST, "--set", "optim.epochs=1"]
    assert main([*args, "--out", str(tmp_path / "r1")]) == 2
    err = capsys.readouterr().err
    assert victim.name in err and "truncated" in err and "--skip-bad" in err
    assert main([*args, "--out", str(tmp_path / "r2"), "--skip-bad"]) == 0


def test_checkpoint_of_another_architecture_is_refused(trained_run):
    other = build_model(ModelConfig(arch="conformer", size="tiny"))
    with pytest.raises(EdgewiseError, match="does not fit this architecture"):
        load_weights_into(other, trained_run / "model.safetensors")


def test_run_model_loads_without_unpickling(trained_run):
    model, info = load_run_model(trained_run)
    x = torch.randn(1, 123, info.features.n_mels)
    assert model(x).shape == (1, 4)


@pytest.mark.slow
def test_ddp_under_torchrun_keeps_ranks_in_sync(tone_corpus, tmp_path):
    torchrun = shutil.which("torchrun", path=str(__import__("pathlib").Path(sys.executable).parent))
    assert torchrun, "torchrun comes with torch"
    out = tmp_path / "ddp"
    result = subprocess.run(
        [
            torchrun,
            "--standalone",
            "--nproc_per_node=2",
            "-m",
            "edgewise",
            "train",
            "ser",
            "--data",
            str(tone_corpus),
            "--out",
            str(out),
            *FAST,
            "--set",
            "optim.epochs=2",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    ddp = json.loads((out / "metrics.json").read_text())["ddp"]
    assert ddp == {"world_size": 2, "backend": "gloo", "params_in_sync": True}
