"""The shared step loop's best-checkpoint selection, early stopping and resume, with a scripted job."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from pydantic import Field

from edgewise.cloud.models.hrf import HRFConfig
from edgewise.cloud.train.checkpoint import load_tensors
from edgewise.cloud.train.step_loop import Job, StepTrainOptions, run_job
from edgewise.config import StrictModel


class _Model(StrictModel):
    hrf: HRFConfig | None = None


class _Optim(StrictModel):
    lr: float = 0.1
    weight_decay: float = 0.0
    steps: int = 6
    warmup_steps: int = 0
    grad_clip: float = 1.0


class _Config(StrictModel):
    name: str = "scripted"
    seed: int = 0
    threads: int | None = 1
    model: _Model = _Model()
    optim: _Optim = _Optim()
    eval_every: int = 1
    patience: int | None = Field(None, gt=0)


def _job(scores: dict[int, float], weights_at: dict[int, torch.Tensor]):
    def build(cfg, opts, dist):
        model = torch.nn.Linear(2, 1)

        def step(m, rng):
            return {"total": (m(torch.ones(1, 2)) - 5.0).pow(2).sum()}

        def evaluate(m, step_no):
            weights_at[step_no] = m.weight.detach().clone()
            return {"val_score": scores[step_no]}

        return Job(
            "scripted", model, step, evaluate, lambda trained, merged: {}, dict, best_metric="val_score"
        )

    return build


def _shipped(run: Path) -> torch.Tensor:
    return load_tensors(run / "model.safetensors")[0]["weight"]


def _steps(run: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (run / "history.jsonl").read_text().splitlines()]


def test_the_best_evaluation_ships_and_patience_stops_the_run(tmp_path):
    weights: dict[int, torch.Tensor] = {}
    scores = {1: 0.1, 2: 0.3, 3: 0.2, 4: 0.25, 5: 0.1, 6: 0.9}
    run_job(_Config(patience=3), StepTrainOptions(Path("-"), tmp_path / "run"), _job(scores, weights))
    assert _steps(tmp_path / "run") == [1, 2, 3, 4, 5]  # three evaluations without a better score
    torch.testing.assert_close(_shipped(tmp_path / "run"), weights[2])
    assert not torch.equal(weights[2], weights[5])


def test_resume_keeps_the_best_score_and_an_early_stop(tmp_path):
    run, weights = tmp_path / "run", {}
    scores = {1: 0.1, 2: 0.3, 3: 0.2, 4: 0.25, 5: 0.28, 6: 0.29}
    run_job(_Config(optim=_Optim(steps=3)), StepTrainOptions(Path("-"), run), _job(scores, weights))
    run_job(
        _Config(optim=_Optim(steps=6)), StepTrainOptions(Path("-"), run, resume=True), _job(scores, weights)
    )
    assert _steps(run) == [1, 2, 3, 4, 5, 6]
    torch.testing.assert_close(_shipped(run), weights[2])  # 0.25..0.29 never beat the 0.3 before the resume

    stopped = tmp_path / "stopped"
    run_job(_Config(patience=1), StepTrainOptions(Path("-"), stopped), _job({1: 0.5, 2: 0.1}, weights))
    assert _steps(stopped) == [1, 2]
    run_job(
        _Config(patience=1, optim=_Optim(steps=10)),
        StepTrainOptions(Path("-"), stopped, resume=True),
        _job({}, weights),
    )
    assert _steps(stopped) == [1, 2]  # finished without training on
