"""The fusion maths: two linears into one, BatchNorm into the layer before it."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from edgewise.cloud.models import fold_batchnorm, fuse_linear_linear

TOL = {"atol": 1e-5, "rtol": 1e-4}


def _random_bn(channels: int, affine: bool = True) -> nn.BatchNorm1d:
    bn = nn.BatchNorm1d(channels, affine=affine, eps=1e-3)
    with torch.no_grad():
        bn.running_mean.normal_()
        bn.running_var.uniform_(0.2, 3.0)
        if affine:
            bn.weight.normal_()
            bn.bias.normal_()
    return bn.eval()


@pytest.mark.parametrize(("d_in", "hidden", "d_out"), [(16, 16, 32), (16, 4, 24), (16, 48, 8)])
@pytest.mark.parametrize(("bias1", "bias2"), [(True, True), (True, False), (False, True), (False, False)])
def test_fuse_linear_linear_equals_the_two_linears(d_in, hidden, d_out, bias1, bias2):
    torch.manual_seed(0)
    first, second = nn.Linear(d_in, hidden, bias=bias1), nn.Linear(hidden, d_out, bias=bias2)
    fused = fuse_linear_linear(first, second)
    x = torch.randn(3, 7, d_in)
    assert (fused.in_features, fused.out_features) == (d_in, d_out)
    assert (fused.bias is not None) == (bias1 or bias2)
    torch.testing.assert_close(fused(x), second(first(x)), **TOL)


def test_fuse_linear_linear_refuses_mismatched_widths():
    with pytest.raises(ValueError, match="cannot fuse"):
        fuse_linear_linear(nn.Linear(4, 5), nn.Linear(6, 3))


@pytest.mark.parametrize(
    "layer",
    [
        nn.Conv1d(8, 8, kernel_size=5, padding=2, groups=8),  # depthwise
        nn.Conv1d(8, 12, kernel_size=1),  # pointwise
        nn.Conv1d(8, 12, kernel_size=3, padding=1, bias=False),
    ],
    ids=["depthwise", "pointwise", "no-bias"],
)
@pytest.mark.parametrize("affine", [True, False])
def test_fold_batchnorm_into_conv1d(layer, affine):
    torch.manual_seed(1)
    bn = _random_bn(layer.out_channels, affine)
    folded = fold_batchnorm(layer, bn)
    x = torch.randn(2, 8, 29)
    torch.testing.assert_close(folded(x), bn(layer(x)), **TOL)
    assert type(folded) is type(layer)
    assert folded.bias is not None


def test_fold_batchnorm_into_linear():
    torch.manual_seed(2)
    layer, bn = nn.Linear(10, 6), _random_bn(6)
    x = torch.randn(5, 10)
    torch.testing.assert_close(fold_batchnorm(layer, bn)(x), bn(layer(x)), **TOL)


def test_fold_batchnorm_leaves_its_inputs_alone():
    layer, bn = nn.Conv1d(4, 4, 3), _random_bn(4)
    before = layer.weight.clone()
    fold_batchnorm(layer, bn)
    assert torch.equal(layer.weight, before)


def test_fold_batchnorm_refuses_mismatched_channels_and_missing_statistics():
    with pytest.raises(ValueError, match="output channels"):
        fold_batchnorm(nn.Conv1d(4, 6, 1), nn.BatchNorm1d(4))
    with pytest.raises(ValueError, match="running statistics"):
        fold_batchnorm(nn.Conv1d(4, 4, 1), nn.BatchNorm1d(4, track_running_stats=False))
