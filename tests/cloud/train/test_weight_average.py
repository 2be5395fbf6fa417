"""Weight averaging (``optim.ema``): the average's arithmetic, and the step loop scoring it beside
the trained weights, keeping the better one and resuming it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from edgewise.cloud.train.checkpoint import load_tensors
from edgewise.cloud.train.weight_average import WeightAverage
from tests.cloud.train.test_rec_train import _train


def test_the_average_follows_the_weights_with_a_ramped_decay():
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    average = WeightAverage(model, decay=0.99)
    start = average.model[0].weight.clone()
    assert average.rate() == pytest.approx(1 / 10)  # the first update mostly takes the new weights
    with torch.no_grad():
        model[0].weight.add_(1.0)
        model[1].running_mean.fill_(5.0)
    average.update(model)
    expected = 0.1 * start + 0.9 * model[0].weight
    assert torch.allclose(average.model[0].weight, expected)
    assert torch.equal(average.model[1].running_mean, model[1].running_mean)  # buffers copied
    for _ in range(2000):
        average.update(model)
    assert average.rate() == 0.99  # the ramp ends at the configured decay
    assert torch.allclose(average.model[0].weight, model[0].weight, atol=1e-5)
    assert not any(p.requires_grad for p in average.model.parameters())
    with pytest.raises(ValueError, match="ema decay"):
        WeightAverage(model, decay=1.0)


@pytest.mark.slow
def test_each_evaluation_scores_both_and_the_better_one_ships(rec_run: Path, tmp_path):
    data = rec_run.parent / "data"
    run = tmp_path / "ema"
    assert _train(data, run, "sasrec", 20, "--set", "optim.ema=0.5") == 0
    history = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    assert [h["step"] for h in history] == [10, 20]
    assert all("val_ndcg@10" in h and "ema_val_ndcg@10" in h for h in history)
    best = max(max(h["val_ndcg@10"], h["ema_val_ndcg@10"]) for h in history)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["valid"]["ndcg@10"] == pytest.approx(best, abs=1e-6)  # the selected weights shipped
    info = json.loads((run / "model.json").read_text())
    assert info["trained_with"]["ema"] == 0.5
    assert info["trained_with"]["selected"]["weights"] in ("trained", "ema")


@pytest.mark.slow
def test_a_resumed_run_continues_its_average(rec_run: Path, tmp_path):
    data = rec_run.parent / "data"
    run = tmp_path / "resumed"
    assert _train(data, run, "sasrec", 10, "--set", "optim.ema=0.9") == 0
    assert load_tensors(run / "checkpoints" / "ema.safetensors")[1] == {"step": 10, "updates": 10}
    assert _train(data, run, "sasrec", 20, "--set", "optim.ema=0.9", "--resume") == 0
    assert load_tensors(run / "checkpoints" / "ema.safetensors")[1] == {"step": 20, "updates": 20}
