"""Fixtures for the model tests: weights randomized so that fusion bugs cannot hide."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
from torch import nn


@torch.no_grad()
def randomize_(model: nn.Module, seed: int = 0) -> nn.Module:
    """Redraw every parameter (fan-in scaled normal) and every BatchNorm running statistic."""
    gen = torch.Generator().manual_seed(seed)
    for param in model.parameters():
        std = 1.0 / math.sqrt(param[0].numel()) if param.dim() > 1 else 0.5
        param.copy_(torch.randn(param.shape, generator=gen) * std)
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.running_mean.copy_(torch.randn(module.running_mean.shape, generator=gen))
            module.running_var.copy_(torch.rand(module.running_var.shape, generator=gen) * 1.5 + 0.5)
    return model


@pytest.fixture
def randomize() -> Callable[..., nn.Module]:
    return randomize_
