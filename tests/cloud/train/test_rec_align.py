"""``edgewise train align`` end to end on a tiny synthetic data set: the session's tiny lazy run
aligned with simulator feedback (real files, real training, the CLI's exit codes), read back by
``edgewise eval rec``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from edgewise.cli import main
from tests.cloud.train.test_rec_train import TINY

pytestmark = pytest.mark.slow

# an easy setting: a large step size, no anchor, so 30 steps visibly move the policy
EASY = [
    "--set",
    "optim.lr=3e-3",
    "--set",
    "anchor.kl=0",
    "--set",
    "rollout.users=32",
    "--set",
    "rollout.group=8",
]


@pytest.fixture(scope="module")
def policy(rec_run) -> Path:
    """The session's tiny lazy run (tests/conftest.py: 30 steps on 120 synthetic users, 60 items)."""
    return rec_run


@pytest.fixture(scope="module")
def data(rec_run) -> Path:
    return rec_run.parent / "data"


def _train(data: Path, out: Path, config: str, steps: int) -> int:
    args = ["-q", "train", "rec", "--config", config, "--data", str(data), "--out", str(out), *TINY]
    return main([*args, "--set", f"optim.steps={steps}", "--set", "eval_every=10"])


def _align(policy: Path, data: Path, out: Path, steps: int, *extra: str) -> int:
    args = ["-q", "train", "align", "--policy", str(policy), "--data", str(data), "--out", str(out)]
    return main(
        [*args, "--set", "threads=1", "--set", f"optim.steps={steps}", "--set", "eval_every=10", *extra]
    )


@pytest.fixture(scope="module")
def aligned(policy, data, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("runs") / "aligned"
    assert _align(policy, data, run, 30, *EASY) == 0
    return run


def test_an_aligned_run_is_a_rec_run_that_eval_rec_reads(aligned: Path, capsys):
    for name in (
        "config.yaml",
        "align.yaml",
        "model.json",
        "model.safetensors",
        "metrics.json",
        "history.jsonl",
    ):
        assert (aligned / name).is_file(), name
    assert (aligned / "semantic_ids.json").is_file() and (aligned / "items.json").is_file()
    info = json.loads((aligned / "model.json").read_text())
    assert info["task"] == "rec" and info["kind"] == "lazy" and info["n_items"] == 60
    assert info["aligned_from"]["method"] == "gbpo" and info["aligned_from"]["shaping"] == "dars"
    capsys.readouterr()
    assert main(["-q", "eval", "rec", str(aligned), "--split", "test"]) == 0
    printed = json.loads(capsys.readouterr().out)
    metrics = json.loads((aligned / "metrics.json").read_text())
    for key in ("hr@10", "ndcg@10", "invalid_rate"):
        assert printed[key] == pytest.approx(metrics["test"][key]), key
    assert printed["invalid_rate"] == 0.0
    history = [json.loads(line) for line in (aligned / "history.jsonl").read_text().splitlines()]
    assert [h["step"] for h in history] == [10, 20, 30]
    assert all(
        {"train_pg", "train_kl", "train_reward", "val_reward", "val_ndcg@10"} <= set(h) for h in history
    )


def test_alignment_raises_the_simulator_reward_of_the_recommendations(aligned: Path):
    metrics = json.loads((aligned / "metrics.json").read_text())
    before, after = metrics["train_users"]["reference"], metrics["train_users"]["aligned"]
    assert before["source"] == "simulator" and before["users"] == after["users"] > 50
    assert after["reward"] > before["reward"] + 0.03
    held = metrics["heldout"]
    assert held["reference"]["users"] == held["aligned"]["users"] == 24  # 20% of 120, never rolled out
    assert set(metrics["reference"]) == {"valid", "test"}


def test_ecpo_with_a_learned_reward_model_trains_and_reports_its_accuracy(policy, data, tmp_path):
    run = tmp_path / "ecpo-model"
    extra = ["--config", "align-model", "--set", "method=ecpo", "--set", "reward_model.steps=30"]
    assert _align(policy, data, run, 4, *extra, "--set", "rollout.users=8", "--set", "rollout.group=4") == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["alignment"]["method"] == "ecpo" and metrics["alignment"]["reward"] == "model"
    report = metrics["reward_model"]["heldout"]
    assert report["examples"] > 0 and 0.0 <= report["dislike"]["auc"] <= 1.0
    assert metrics["heldout"]["aligned"]["source"] == "simulator"  # measured by the world, not the model


def test_an_encdec_policy_aligns_with_beam_candidates_and_the_ce_anchor(data, tmp_path):
    policy = tmp_path / "encdec"
    assert _train(data, policy, "encdec", 4) == 0
    run = tmp_path / "aligned-encdec"
    extra = ["--set", "rollout.sampler=beam", "--set", "rollout.group=4", "--set", "anchor.ce=0.5"]
    assert _align(policy, data, run, 3, *extra, "--set", "rollout.users=8") == 0
    assert json.loads((run / "model.json").read_text())["kind"] == "encdec"
    history = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    assert history[-1]["train_ce"] > 0 and history[-1]["train_kl"] >= 0
    assert main(["-q", "eval", "rec", str(run)]) == 0


def test_resume_of_a_finished_run_continues_and_stays_readable(aligned: Path, policy, data, tmp_path, capsys):
    run = tmp_path / "resumed"
    shutil.copytree(aligned, run)
    capsys.readouterr()
    assert _align(policy, data, run, 40, *EASY, "--set", "rollout.users=16", "--resume") == 2
    assert "rollout.users" in capsys.readouterr().err
    assert "task: rec\n" in (run / "config.yaml").read_text()  # put back after the refusal
    assert _align(policy, data, run, 40, *EASY, "--resume") == 0
    steps = [json.loads(line)["step"] for line in (run / "history.jsonl").read_text().splitlines()]
    assert steps == [10, 20, 30, 40]
    assert main(["-q", "eval", "rec", str(run)]) == 0


def test_a_sasrec_policy_is_refused(data, tmp_path, capsys):
    sasrec = tmp_path / "sasrec"
    assert _train(data, sasrec, "sasrec", 2) == 0
    capsys.readouterr()
    assert _align(sasrec, data, tmp_path / "out", 2) == 2
    err = capsys.readouterr().err
    assert "only generative policies" in err and str(sasrec) in err
    assert not (tmp_path / "out" / "model.json").exists()


def test_simulator_rewards_need_a_data_set_with_a_simulator(policy, data, tmp_path, capsys):
    logged_only = tmp_path / "logged-only"
    shutil.copytree(data, logged_only)
    (logged_only / "simulator.npz").unlink()
    capsys.readouterr()
    assert _align(policy, logged_only, tmp_path / "out", 2) == 2
    err = capsys.readouterr().err
    assert "simulator.npz" in err and str(logged_only) in err


def test_a_bad_config_names_the_field(policy, data, tmp_path, capsys):
    capsys.readouterr()
    assert _align(policy, data, tmp_path / "out", 2, "--set", "method=ppo") == 2
    assert "method" in capsys.readouterr().err
    assert _align(policy, data, tmp_path / "out2", 2, "--config", "no-such-align") == 2
    assert "align-gbpo" in capsys.readouterr().err


def _ratings_only(data: Path, out: Path) -> Path:
    """The synthetic data set as a ratings-only one (as MovieLens is): 1-5 stars from the watched
    fraction, no watch times, durations, dislikes or simulator."""
    import dataclasses

    import numpy as np

    from edgewise.cloud.data.rec_data import load_rec_dataset, save_rec_dataset

    ds = load_rec_dataset(data)
    fraction = np.clip(ds.watch_time / ds.item_duration[ds.item], 0, 1)
    stars = 1 + np.round(4 * fraction)
    save_rec_dataset(
        dataclasses.replace(ds, rating=stars, watch_time=None, disliked=None, item_duration=None), out
    )
    return out


def test_ratings_become_feedback_and_a_ratings_only_data_set_aligns(policy, data, tmp_path):
    from edgewise.cloud.data.rec_data import load_rec_dataset
    from edgewise.cloud.train.rec_align import feedback_view

    rated = _ratings_only(data, tmp_path / "rated")
    ds = load_rec_dataset(rated)
    view = feedback_view(ds, rated)
    assert view.item_duration.tolist() == [1.0] * ds.n_items
    assert view.watch_time.min() == 0.0 and view.watch_time.max() == 1.0  # 1..5 stars onto [0, 1]
    assert view.disliked.tolist() == (ds.rating <= 2).tolist()
    assert feedback_view(load_rec_dataset(data), data).watch_time is not None  # logged feedback kept as is

    run = tmp_path / "aligned-rated"
    extra = ["--config", "align-model", "--set", "reward_model.steps=30", "--set", "rollout.users=8"]
    assert _align(policy, rated, run, 3, *extra, "--set", "rollout.group=4") == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["heldout"]["aligned"]["source"] == "model"  # no simulator: the reward model measures
    assert metrics["reward_model"]["heldout"]["examples"] > 0


def test_a_data_set_without_feedback_is_refused_with_what_it_lacks(policy, data, tmp_path, capsys):
    import dataclasses

    from edgewise.cloud.data.rec_data import load_rec_dataset, save_rec_dataset

    bare = tmp_path / "bare"
    ds = load_rec_dataset(data)
    save_rec_dataset(dataclasses.replace(ds, watch_time=None, disliked=None, item_duration=None), bare)
    capsys.readouterr()
    assert _align(policy, bare, tmp_path / "out", 2, "--config", "align-model") == 2
    err = capsys.readouterr().err
    assert str(bare) in err and "no watch_time or item_duration" in err and "ratings" in err
    assert not (tmp_path / "out" / "model.json").exists()
