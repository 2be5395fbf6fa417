"""The merge pass: remove every training-time structure before a model is exported.

1. HRF: :func:`~edgewise.cloud.models.hrf.reparameterize_model` folds each HRF linear layer into
   the FFN's first linear layer (a run's ``model.safetensors`` is already merged; this makes the pass
   safe for a training-form model too).
2. BatchNorm: each (convolution, BatchNorm) pair listed in :data:`FOLDABLE` is replaced by one
   convolution with :func:`~edgewise.cloud.models.hrf.fold_batchnorm` and the BatchNorm by
   ``nn.Identity``; a BatchNorm with no folding rule is an error rather than a silent leftover.

The merged model must give the same outputs as the input model on a random input (``atol`` 1e-5,
``rtol`` 1e-4) before anything is exported.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch import nn

from edgewise.cloud.models.hrf import count_parameters, fold_batchnorm, reparameterize_model
from edgewise.cloud.models.layers import ConformerConvModule, FeedForward
from edgewise.export.errors import ExportError

log = logging.getLogger(__name__)

# (module type, convolution attribute, BatchNorm attribute): the BatchNorm directly follows the conv.
FOLDABLE: tuple[tuple[type[nn.Module], str, str], ...] = ((ConformerConvModule, "depthwise", "batchnorm"),)


@dataclass(frozen=True)
class MergeReport:
    hrf_merged: int  # HRF layers folded into fc1
    batchnorms_folded: int
    parameters_before: int
    parameters_after: int
    max_abs_diff: float  # merged vs input model on a random input

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def fold_batchnorms(model: nn.Module) -> int:
    """Fold every known (conv, BatchNorm) pair in place; return how many were folded."""
    folded = 0
    for module in model.modules():
        for kind, conv_name, bn_name in FOLDABLE:
            if isinstance(module, kind) and isinstance(
                getattr(module, bn_name), nn.modules.batchnorm._BatchNorm
            ):
                setattr(
                    module, conv_name, fold_batchnorm(getattr(module, conv_name), getattr(module, bn_name))
                )
                setattr(module, bn_name, nn.Identity())
                folded += 1
    return folded


def training_leftovers(model: nn.Module) -> list[str]:
    """Names of modules that should not reach an exported graph (BatchNorm, unmerged HRF)."""
    names = [n for n, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    names += [
        f"{n}.hrf" for n, m in model.named_modules() if isinstance(m, FeedForward) and m.hrf is not None
    ]
    return names


@torch.no_grad()
def merge_for_export(
    model: nn.Module,
    n_mels: int,
    *,
    atol: float = 1e-5,
    rtol: float = 1e-4,
    frames: int = 101,
    seed: int = 0,
) -> tuple[nn.Module, MergeReport]:
    """A deploy-form copy of ``model`` (HRF merged, BatchNorm folded), checked equal to it."""
    model = model.eval()
    hrf = sum(1 for m in model.modules() if isinstance(m, FeedForward) and m.hrf is not None)
    merged = reparameterize_model(model).eval()
    folded = fold_batchnorms(merged)
    leftovers = training_leftovers(merged)
    if leftovers:
        raise ExportError(
            f"merge: no folding rule for {', '.join(leftovers)}; the exported graph would keep "
            "training-time structure (add the pair to edgewise.export.merge.FOLDABLE)"
        )
    x = torch.randn(2, frames, n_mels, generator=torch.Generator().manual_seed(seed))
    expected, actual = model(x), merged(x)
    diff = float((expected - actual).abs().max())
    if not torch.allclose(actual, expected, atol=atol, rtol=rtol):
        raise ExportError(
            f"merge: the merged model differs from the trained one by {diff:.3g} "
            f"(allowed atol {atol:g}, rtol {rtol:g}); refusing to export"
        )
    report = MergeReport(hrf, folded, count_parameters(model), count_parameters(merged), diff)
    log.info(
        "merge: %d HRF layers merged, %d BatchNorms folded, %d -> %d parameters, max |diff| %.2e",
        hrf,
        folded,
        report.parameters_before,
        report.parameters_after,
        diff,
    )
    return merged, report
