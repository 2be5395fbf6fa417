"""``edgewise train rec`` and ``edgewise eval rec`` end to end on a small synthetic data set (real files,
real training, the CLI's exit codes)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgewise.cli import main
from tests.conftest import REC_TINY

pytestmark = pytest.mark.slow

# the session's tiny rec config (tests/conftest.py), but each test sets its own steps
TINY = [
    a for k, v in REC_TINY.items() if k not in ("optim.steps", "eval_every") for a in ("--set", f"{k}={v}")
]


@pytest.fixture(scope="module")
def lazy_run(rec_run) -> Path:
    """The session's tiny lazy run (30 steps on 120 synthetic users, 60 items)."""
    return rec_run


@pytest.fixture(scope="module")
def data(rec_run) -> Path:
    return rec_run.parent / "data"


def _train(data: Path, out: Path, config: str, steps: int, *extra: str) -> int:
    args = ["-q", "train", "rec", "--config", config, "--data", str(data), "--out", str(out)]
    return main([*args, *TINY, "--set", f"optim.steps={steps}", "--set", "eval_every=10", *extra])


def test_a_lazy_run_has_the_run_layout_and_merged_weights(lazy_run: Path):
    for name in ("config.yaml", "model.json", "model.safetensors", "metrics.json", "history.jsonl"):
        assert (lazy_run / name).is_file(), name
    assert (lazy_run / "checkpoints" / "best.safetensors").is_file()
    info = json.loads((lazy_run / "model.json").read_text())
    assert info["task"] == "rec" and info["kind"] == "lazy" and info["n_items"] == 60
    assert info["model"]["hrf"] is None and info["trained_with"]["hrf"] is not None
    metrics = json.loads((lazy_run / "metrics.json").read_text())
    assert metrics["merge_max_abs_diff"] < 1e-4
    assert metrics["parameters"] < metrics["parameters_training_form"]
    assert metrics["users"]["evaluated"] + metrics["users"]["dropped_too_short"] == 120
    assert metrics["test"]["invalid_rate"] == 0.0  # the trie allows only real items
    assert 0 <= metrics["test"]["ndcg@10"] <= metrics["test"]["hr@10"] <= 1
    assert 0 <= metrics["tokenizer"]["collision_rate"] <= 1 and metrics["tokenizer"]["levels"] == 2
    ids = json.loads((lazy_run / "semantic_ids.json").read_text())
    assert len(ids["codes"]) == 60
    items = json.loads((lazy_run / "items.json").read_text())
    assert len(items["ids"]) == 60


def test_eval_rec_reproduces_the_runs_test_metrics(lazy_run: Path, capsys):
    capsys.readouterr()
    assert main(["-q", "eval", "rec", str(lazy_run), "--split", "test"]) == 0
    printed = json.loads(capsys.readouterr().out)
    metrics = json.loads((lazy_run / "metrics.json").read_text())["test"]
    for key in ("hr@5", "ndcg@5", "hr@10", "ndcg@10", "invalid_rate"):
        assert printed[key] == pytest.approx(metrics[key]), key


def test_training_learns_something_an_untrained_model_does_not(data, lazy_run: Path, tmp_path):
    untrained = tmp_path / "untrained"
    assert _train(data, untrained, "lazy-small", 1, "--set", "optim.lr=1e-9") == 0
    trained = json.loads((lazy_run / "metrics.json").read_text())["valid"]
    chance = json.loads((untrained / "metrics.json").read_text())["valid"]
    assert trained["hr@10"] > chance["hr@10"] + 0.05


@pytest.mark.parametrize("config", ["sasrec", "encdec"])
def test_the_other_kinds_train_and_evaluate_under_the_same_protocol(data, tmp_path, config):
    run = tmp_path / config
    assert _train(data, run, config, 20) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics["test"]) >= {"hr@5", "ndcg@5", "hr@10", "ndcg@10"}
    assert metrics["merge_max_abs_diff"] < 1e-4
    assert (run / "semantic_ids.json").is_file() == (config != "sasrec")


def test_resume_continues_the_run_to_more_steps(data, tmp_path):
    run = tmp_path / "resumed"
    assert _train(data, run, "sasrec", 10) == 0
    assert _train(data, run, "sasrec", 20, "--resume") == 0
    steps = [json.loads(line)["step"] for line in (run / "history.jsonl").read_text().splitlines()]
    assert steps == [10, 20]


def test_resume_refuses_a_changed_model(data, tmp_path, capsys):
    run = tmp_path / "changed"
    assert _train(data, run, "sasrec", 10) == 0
    capsys.readouterr()
    assert _train(data, run, "sasrec", 20, "--resume", "--set", "model.d_model=32") == 2
    assert "model.d_model" in capsys.readouterr().err


def test_a_student_distils_from_a_teacher_with_its_semantic_ids(data, lazy_run: Path, tmp_path):
    student = tmp_path / "student"
    extra = ["--teacher", str(lazy_run), "--set", "model.n_layers=1", "--set", "tokenizer.seed=7"]
    assert _train(data, student, "lazy-small", 10, *extra) == 0
    info = json.loads((student / "model.json").read_text())
    assert info["teacher"]["kind"] == "lazy"
    ours = json.loads((student / "semantic_ids.json").read_text())
    theirs = json.loads((lazy_run / "semantic_ids.json").read_text())
    assert np.array_equal(ours["codes"], theirs["codes"])  # not re-tokenized (tokenizer.seed differs)
    history = [json.loads(line) for line in (student / "history.jsonl").read_text().splitlines()]
    assert all("train_kd" in h for h in history)


def test_ddp_under_torchrun_trains_a_rec_run_with_ranks_in_sync(data, tmp_path):
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    assert torchrun, "torchrun comes with torch"
    out = tmp_path / "ddp"
    args = ["train", "rec", "--config", "lazy-small", "--data", str(data), "--out", str(out), *TINY]
    result = subprocess.run(
        [torchrun, "--standalone", "--nproc_per_node=2", "-m", "edgewise", "-q", *args,
         "--set", "optim.steps=20", "--set", "eval_every=10"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["ddp"] == {"world_size": 2, "backend": "gloo", "params_in_sync": True}
    assert metrics["test"]["invalid_rate"] == 0.0 and (out / "model.safetensors").is_file()
    assert len((out / "history.jsonl").read_text().splitlines()) == 2  # one line per evaluation, not per rank


def test_bad_input_is_a_clear_error(data, lazy_run: Path, tmp_path, capsys):
    capsys.readouterr()
    assert _train(tmp_path / "nothing-here", tmp_path / "r1", "lazy-small", 5) == 2
    assert "nothing-here" in capsys.readouterr().err
    assert _train(data, tmp_path / "r2", "sasrec", 5, "--teacher", str(lazy_run)) == 2
    assert "teacher" in capsys.readouterr().err
    assert main(["-q", "eval", "rec", str(tmp_path)]) == 2
    assert "not a finished training run" in capsys.readouterr().err
    assert _train(data, tmp_path / "r3", "no-such-preset", 5) == 2
    assert "no-such-preset" in capsys.readouterr().err
    assert _train(data, tmp_path / "r4", "encdec", 5, "--teacher", str(lazy_run)) == 2
    assert "a lazy teacher cannot teach a encdec student" in capsys.readouterr().err
    assert _train(data, tmp_path / "r5", "lazy-small", 5, "--set", "beam=5") == 2
    assert "beam" in capsys.readouterr().err
    assert main(["-q", "eval", "rec", str(lazy_run), "--beam", "4"]) == 2
    assert "beam" in capsys.readouterr().err


def test_a_data_set_of_short_histories_is_refused(tmp_path, capsys):
    rows = ["user,item,timestamp"] + [f"u{u},i{(u + k) % 5},{100 * k}" for u in range(6) for k in range(3)]
    (tmp_path / "short.csv").write_text("\n".join(rows) + "\n")
    assert main(["-q", "data", "rec", "csv", str(tmp_path / "short.csv"), "--out", str(tmp_path / "d")]) == 0
    capsys.readouterr()
    assert _train(tmp_path / "d", tmp_path / "r", "lazy-small", 5) == 2
    err = capsys.readouterr().err
    assert "no user has 4 or more interactions; nothing to train on" in err and "Traceback" not in err
    assert not (tmp_path / "r" / "model.json").exists()


def test_eval_refuses_a_data_set_with_other_items(lazy_run: Path, tmp_path, capsys):
    other = tmp_path / "other"
    args = [
        "-q",
        "data",
        "rec",
        "synthetic",
        "--users",
        "80",
        "--items",
        "60",
        "--seed",
        "9",
        "--out",
        str(other),
    ]
    assert main(args) == 0
    items = json.loads((lazy_run / "items.json").read_text())
    ours = (other / "items.jsonl").read_text().splitlines()
    if [json.loads(line)["id"] for line in ours] == items["ids"]:  # same ids by construction: rename one
        rows = [json.loads(line) for line in ours]
        rows[3]["id"] = "renamed"
        (other / "items.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    capsys.readouterr()
    assert main(["-q", "eval", "rec", str(lazy_run), "--data", str(other)]) == 2
    assert "not the same items" in capsys.readouterr().err
