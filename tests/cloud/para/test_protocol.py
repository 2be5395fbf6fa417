"""The protocol: train-split standardization, the layer-weighted MLP head, seeded early-stopped training."""

import numpy as np

from tests.conftest import require_module

torch = require_module("torch")

from edgewise.cloud.para.protocol import HeadConfig, LayerWeightedHead, standardize, train_head  # noqa: E402

FAST = HeadConfig(hidden=32, max_epochs=60, patience=15, batch_size=32, lr=3e-3)


def _splits(x, y, n_train=240, n_val=80):
    cut = (slice(0, n_train), slice(n_train, n_train + n_val), slice(n_train + n_val, None))
    return (
        {s: x[c] for s, c in zip(("train", "val", "test"), cut)},
        {s: y[c] for s, c in zip(("train", "val", "test"), cut)},
    )


def test_standardize_uses_the_train_split_only():
    rng = np.random.default_rng(0)
    train = rng.normal(5.0, 3.0, size=(200, 2, 4))
    train[:, 1, 3] = 7.0  # a constant column
    other = train[:10] + 1.0
    z_train, z_other = standardize(train, other)
    assert np.allclose(z_train[:, 0].mean(axis=0), 0.0, atol=1e-6)
    assert np.allclose(z_train[:, 0].std(axis=0), 1.0, atol=1e-5)
    assert np.all(z_train[:, 1, 3] == 0.0)
    expected = (other[:, 0, 0] - train[:, 0, 0].mean()) / train[:, 0, 0].std()
    assert np.allclose(z_other[:, 0, 0], expected, atol=1e-5)


def test_standardize_turns_non_finite_values_into_zero():
    train = np.array([[[1.0, np.nan]], [[3.0, 2.0]], [[5.0, 4.0]]])
    (z,) = standardize(train)
    assert np.isfinite(z).all()
    assert z[0, 0, 1] == 0.0


def test_head_starts_with_equal_layer_weights_and_mixes_layers_by_them():
    torch.manual_seed(0)
    head = LayerWeightedHead(n_layers=3, dims=5, n_out=2, hidden=8, dropout=0.0).eval()
    assert torch.allclose(head.layer_weights(), torch.full((3,), 1 / 3))
    x = torch.randn(4, 3, 5)
    with torch.no_grad():
        head.layer_logits.copy_(torch.tensor([0.0, 2.0, -1.0]))
        w = torch.softmax(torch.tensor([0.0, 2.0, -1.0]), 0)
        assert torch.allclose(head(x), head.mlp((w[None, :, None] * x).sum(1)), atol=1e-6)


def test_training_moves_the_weight_to_the_layer_that_carries_the_signal():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(400, 3, 8)).astype(np.float32)
    y = (x[:, 1, 0] + x[:, 1, 1] > 0).astype(np.int64)  # only layer 1 knows the class
    feats, targets = _splits(x, y)
    result = train_head(feats, targets, "classification", ("no", "yes"), seed=0, cfg=FAST)
    weights = result.layer_weights
    assert np.argmax(weights) == 1 and weights[1] > 0.5, weights
    assert result.test["ua"] > 0.7  # chance: 0.5


def test_regression_is_trained_on_standardized_targets_and_scored_in_their_units():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(400, 1, 6)).astype(np.float32)
    y = 170.0 + 35.0 * (x[:, 0, 0] - 0.5 * x[:, 0, 2])  # words per minute, say
    feats, targets = _splits(x, y)
    result = train_head(feats, targets, "regression", None, seed=0, cfg=FAST)
    assert result.test["ccc"] > 0.9
    assert result.test["mae"] < 0.3 * np.abs(targets["test"] - targets["test"].mean()).mean()
    assert 1 <= result.best_epoch <= result.epochs <= FAST.max_epochs


def test_a_seed_gives_the_same_head_twice():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(400, 2, 4)).astype(np.float32)
    y = (x[:, 0, 0] > 0).astype(np.int64)
    feats, targets = _splits(x, y)
    cfg = HeadConfig(hidden=16, max_epochs=8, patience=8)
    a = train_head(feats, targets, "classification", ("a", "b"), seed=7, cfg=cfg)
    b = train_head(feats, targets, "classification", ("a", "b"), seed=7, cfg=cfg)
    assert a.test == b.test and a.layer_weights == b.layer_weights and a.best_epoch == b.best_epoch


def test_early_stopping_stops_when_val_stops_improving():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(400, 1, 4)).astype(np.float32)
    y = rng.integers(0, 2, size=400)  # noise: val UA cannot keep improving
    feats, targets = _splits(x, y)
    result = train_head(
        feats, targets, "classification", ("a", "b"), seed=0, cfg=HeadConfig(max_epochs=200, patience=5)
    )
    assert result.epochs < 200
    assert result.epochs - result.best_epoch == 5
