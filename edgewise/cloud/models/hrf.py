"""HRF re-parameterization: a linear layer that exists only while training.

Every feed-forward block can be built with an extra ``Linear(d_model, h)`` between its norm and
its first linear layer (no activation in between). Two linear maps in a row are one linear map,
so :func:`reparameterize_model` merges them for inference and the deployed graph is exactly the
plain backbone (RepVGG / MobileOne / timm convention: blocks own an idempotent
``reparameterize()``, one function walks the tree, deep copy by default).

The fusion maths sits in small pure functions: :func:`fuse_linear_linear` for HRF and
:func:`fold_batchnorm` for the export step (conv or linear followed by BatchNorm).
"""

from __future__ import annotations

import copy

import torch
from pydantic import Field, model_validator
from torch import nn

from edgewise.config import StrictModel


class HRFConfig(StrictModel):
    """Width of the training-time HRF layer: ``rank`` if given, else ``round(expansion * d_model)``."""

    expansion: float | None = Field(default=1.0, gt=0)
    rank: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _needs_a_width(self) -> HRFConfig:
        if self.expansion is None and self.rank is None:
            raise ValueError("set 'expansion' or 'rank'")
        return self

    def hidden_dim(self, d_model: int) -> int:
        """The HRF layer's output width for a block of width ``d_model``."""
        if self.rank is not None:
            return self.rank
        return max(1, round(self.expansion * d_model))


@torch.no_grad()
def fuse_linear_linear(first: nn.Linear, second: nn.Linear) -> nn.Linear:
    """One Linear equal to ``second(first(x))``: W = W2 @ W1, b = W2 @ b1 + b2 (computed in float64)."""
    if first.out_features != second.in_features:
        raise ValueError(
            f"cannot fuse: first gives {first.out_features} features, second takes {second.in_features}"
        )
    has_bias = first.bias is not None or second.bias is not None
    w2 = second.weight.double()
    fused = nn.Linear(
        first.in_features,
        second.out_features,
        bias=has_bias,
        device=second.weight.device,
        dtype=second.weight.dtype,
    )
    fused.weight.copy_(w2 @ first.weight.double())
    if has_bias:
        bias = torch.zeros(second.out_features, dtype=torch.float64, device=w2.device)
        if first.bias is not None:
            bias += w2 @ first.bias.double()
        if second.bias is not None:
            bias += second.bias.double()
        fused.bias.copy_(bias)
    return fused


@torch.no_grad()
def fold_batchnorm(
    layer: nn.Conv1d | nn.Conv2d | nn.Linear, bn: nn.modules.batchnorm._BatchNorm
) -> nn.Module:
    """A copy of ``layer`` that computes ``bn(layer(x))`` with BatchNorm's running statistics.

    Works for any convolution (depthwise, pointwise, grouped) or Linear whose output channels are
    BatchNorm's features. The result always has a bias.
    """
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError("cannot fold a BatchNorm without running statistics (track_running_stats=False)")
    out_channels = layer.weight.shape[0]
    if out_channels != bn.num_features:
        raise ValueError(
            f"cannot fold: layer has {out_channels} output channels, BatchNorm {bn.num_features}"
        )
    var = bn.running_var.double()
    scale = torch.rsqrt(var + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight.double()
    shift = -bn.running_mean.double() * scale
    if bn.bias is not None:
        shift = shift + bn.bias.double()
    bias = layer.bias.double() * scale + shift if layer.bias is not None else shift

    folded = copy.deepcopy(layer)
    weight_shape = (-1,) + (1,) * (layer.weight.dim() - 1)
    folded.weight.copy_(layer.weight.double() * scale.view(weight_shape))
    folded.bias = nn.Parameter(bias.to(layer.weight.dtype))
    return folded


def reparameterize_model(model: nn.Module, inplace: bool = False) -> nn.Module:
    """Merge every training-time branch (calls ``reparameterize()`` on each module that has one).

    Returns a deep copy unless ``inplace``. An edgewise backbone comes back with exactly the
    modules, parameters and state_dict keys of the same backbone built without HRF, and its
    ``config.hrf`` set to None.
    """
    if not inplace:
        model = copy.deepcopy(model)
    for module in list(model.modules()):
        reparameterize = getattr(module, "reparameterize", None)
        if callable(reparameterize):
            reparameterize()
    config = getattr(model, "config", None)
    if config is not None and getattr(config, "hrf", None) is not None:
        model.config = config.model_copy(update={"hrf": None})
    return model


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of scalar parameters (shared parameters counted once)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
