"""The merge pass: no HRF, no BatchNorm, same outputs, and the exported graph shows it."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from edgewise.cloud.models import HRFConfig, ModelConfig, build_model, count_parameters, plain_config
from edgewise.export.errors import ExportError
from edgewise.export.merge import merge_for_export, training_leftovers
from tests.cloud.models.conftest import randomize_
from tests.conftest import require_module


def _bn_affine_parameters(model: nn.Module) -> int:
    return sum(
        p.numel()
        for m in model.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm)
        for p in m.parameters()
    )


def test_conformer_loses_hrf_and_batchnorm_and_keeps_its_outputs():
    cfg = ModelConfig(arch="conformer", hrf=HRFConfig(expansion=2.0))
    trained = randomize_(build_model(cfg)).eval()  # training form, random weights and BN statistics
    merged, report = merge_for_export(trained, cfg.n_mels)
    assert training_leftovers(trained) and not training_leftovers(merged)
    assert report.hrf_merged == 4 and report.batchnorms_folded == 2
    plain = build_model(plain_config(cfg))
    # HRF merging gives the plain model's parameter count; folding drops only BatchNorm's affine pair.
    assert count_parameters(merged) == count_parameters(plain) - _bn_affine_parameters(plain)
    assert report.parameters_after == count_parameters(merged)
    x = torch.randn(3, 77, cfg.n_mels)
    with torch.no_grad():
        torch.testing.assert_close(merged(x), trained(x), atol=1e-5, rtol=1e-4)


def test_conv_transformer_keeps_the_plain_parameter_count():
    cfg = ModelConfig(arch="conv_transformer", hrf=HRFConfig())
    merged, report = merge_for_export(randomize_(build_model(cfg)).eval(), cfg.n_mels)
    assert count_parameters(merged) == count_parameters(build_model(plain_config(cfg)))
    assert report.batchnorms_folded == 0 and report.hrf_merged == 2


def test_a_batchnorm_without_a_folding_rule_is_refused():
    class Odd(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(8, 8)
            self.bn = nn.BatchNorm1d(8)

        def forward(self, x):
            return self.bn(self.lin(x).transpose(1, 2)).mean(-1)

    with pytest.raises(ExportError, match="no folding rule for bn"):
        merge_for_export(Odd().eval(), 8)


@pytest.mark.slow
def test_exported_conformer_graph_has_no_batchnorm(tmp_path):
    onnx = require_module("onnx")
    from edgewise.edge.backends import OnnxBackend
    from edgewise.export.onnx_export import export_fp32

    cfg = ModelConfig(arch="conformer", hrf=HRFConfig())
    trained = randomize_(build_model(cfg)).eval()
    merged, _ = merge_for_export(trained, cfg.n_mels)
    path = export_fp32(merged, tmp_path / "conformer.onnx", cfg.n_mels)
    graph = onnx.load(str(path)).graph
    assert not [n for n in graph.node if n.op_type == "BatchNormalization"]
    assert all(not n.metadata_props for n in graph.node)  # no stack traces with build paths
    runner = OnnxBackend(path)
    x = torch.randn(2, 45, cfg.n_mels)
    with torch.no_grad():
        expected = trained(x).numpy()  # the unmerged training form
    torch.testing.assert_close(
        torch.from_numpy(runner(x.numpy())), torch.from_numpy(expected), atol=1e-4, rtol=1e-3
    )
