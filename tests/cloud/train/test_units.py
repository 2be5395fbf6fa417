"""Small pure pieces of the trainer: KD loss, metrics, config overrides, checkpoints."""

import numpy as np
import pytest
import torch

from edgewise.cloud.train.checkpoint import load_training_state, save_training_state
from edgewise.cloud.train.config import apply_overrides, resolve_config
from edgewise.cloud.train.distill import logit_kd_loss
from edgewise.cloud.train.metrics import classification_report
from edgewise.errors import ConfigError


def test_kd_loss_is_zero_for_identical_logits_and_grows_with_disagreement():
    t = torch.randn(8, 4)
    assert logit_kd_loss(t, t, 4.0).item() == pytest.approx(0.0, abs=1e-6)
    near = logit_kd_loss(t + 0.1 * torch.randn(8, 4), t, 4.0).item()
    far = logit_kd_loss(-t, t, 4.0).item()
    assert 0 < near < far


def test_kd_loss_is_scaled_by_t_squared():
    s, t = torch.randn(16, 4), torch.randn(16, 4)
    raw = torch.nn.functional.kl_div(
        torch.log_softmax(s / 2, -1), torch.softmax(t / 2, -1), reduction="batchmean"
    )
    assert logit_kd_loss(s, t, 2.0).item() == pytest.approx(4 * raw.item(), rel=1e-5)


def test_metrics_ua_is_mean_recall_not_accuracy():
    y_true = np.array([0] * 8 + [1] * 2)
    y_pred = np.array([0] * 8 + [0] * 2)  # majority class only
    r = classification_report(y_true, y_pred, ["a", "b"])
    assert r["wa"] == pytest.approx(0.8) and r["ua"] == pytest.approx(0.5)
    assert r["per_class_recall"] == {"a": 1.0, "b": 0.0}
    assert r["confusion"] == [[8, 0], [2, 0]]


def test_presets_load_and_overrides_apply():
    cfg = resolve_config("tiny", ["model.arch=speechformer", "optim.lr=0.01", "model.hrf=null"])
    assert cfg.model.arch == "speechformer" and cfg.optim.lr == 0.01 and cfg.model.hrf is None
    for preset in ("tiny", "small", "base"):
        assert resolve_config(preset).model.size == preset


def test_bad_override_and_unknown_preset():
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        apply_overrides({}, ["novalue"])
    with pytest.raises(ConfigError, match="not a shipped preset"):
        resolve_config("huge")


def test_training_state_round_trip(tmp_path):
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    save_training_state(tmp_path / "s.safetensors", model, opt, {"epoch": 5})
    model2 = torch.nn.Linear(3, 2)
    opt2 = torch.optim.AdamW(model2.parameters(), lr=0.5)
    meta = load_training_state(tmp_path / "s.safetensors", model2, opt2)
    assert meta["epoch"] == 5 and opt2.param_groups[0]["lr"] == 0.1
    torch.testing.assert_close(model2.weight, model.weight)
    s1, s2 = opt.state_dict()["state"][0], opt2.state_dict()["state"][0]
    torch.testing.assert_close(s1["exp_avg"], s2["exp_avg"])
    assert float(s1["step"]) == float(s2["step"])


def test_feature_cache_follows_label_order_and_survives_damage(tone_corpus, tmp_path):
    from edgewise.cloud.data.corpus import load_corpus
    from edgewise.cloud.train.featcache import compute_features
    from edgewise.features import LogMelConfig

    utts = load_corpus(tone_corpus).split("val")
    names = ("neutral", "happy", "sad", "angry")
    first = compute_features(utts, names, LogMelConfig(), tmp_path, progress=False)
    flipped = compute_features(utts, names[::-1], LogMelConfig(), tmp_path, progress=False)
    np.testing.assert_array_equal(flipped.labels, 3 - first.labels)
    for entry in tmp_path.glob("*.npz"):
        entry.write_bytes(entry.read_bytes()[:50])  # damaged: recomputed, not a crash
    again = compute_features(utts, names, LogMelConfig(), tmp_path, progress=False)
    np.testing.assert_array_equal(again.frames, first.frames)


def test_early_stopping_counts_evaluations_without_a_better_value_and_survives_its_state():
    from edgewise.cloud.train.early_stopping import EarlyStopping

    early = EarlyStopping(patience=2)
    assert [early.update(v) for v in (0.5, 0.6, 0.6, 0.55)] == [True, True, False, False]
    assert (early.best, early.bad, early.stopped) == (0.6, 2, True)
    again = EarlyStopping.from_state(early.state("best_ua", "bad_epochs"), 2, "best_ua", "bad_epochs")
    assert (again.best, again.bad, again.stopped) == (0.6, 2, True)
    never = EarlyStopping(patience=None)
    assert not any(never.update(0.1) and never.stopped for _ in range(5)) and not never.stopped
    assert EarlyStopping.from_state({}, 3, "best", "bad_evals") == EarlyStopping(3)
