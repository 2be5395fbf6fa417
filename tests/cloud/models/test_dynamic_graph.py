"""The dynamic-graph SER backbone: its graphs, its structure loss, training and export.

HRF equivalence is covered with every other architecture in test_hrf_reparam.py (it walks ARCHS).
"""

from __future__ import annotations

import copy
import json

import pytest
import torch

from edgewise.cli import main
from edgewise.cloud.models.backbones import GraphLayer
from edgewise.cloud.models.registry import build_model
from tests.cloud.train.conftest import FAST


def test_structure_loss_comes_from_a_training_forward_once_and_never_from_eval():
    model = build_model({"arch": "dynamic_graph", "size": "micro"})
    model.train()
    model(torch.randn(2, 120, 64))
    loss = model.pop_structure_loss()
    assert loss is not None and loss.requires_grad and torch.isfinite(loss)
    assert model.pop_structure_loss() is None  # handed over once
    model.eval()
    model(torch.randn(1, 120, 64))
    assert model.pop_structure_loss() is None
    copy.deepcopy(model)  # no graph tensor left behind: the merge pass can copy it


def test_updates_are_degree_normalized_and_padded_nodes_are_ignored():
    torch.manual_seed(0)
    layer = GraphLayer(d_model=16, d_ff=32, nodes=4).eval()
    x = torch.randn(1, 4, 16)
    valid = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    out = layer(x, valid)
    changed = x.clone()
    changed[0, 3] = 100.0  # a padded node: whatever it holds, the real nodes get the same update
    again = layer(changed, valid)
    assert torch.allclose(out[0, :3], again[0, :3], atol=1e-5)


def test_graph_loss_pulls_similar_nodes_together():
    torch.manual_seed(0)
    layer = GraphLayer(d_model=16, d_ff=32, nodes=6).train()
    x = torch.randn(1, 6, 16)
    valid = torch.ones(1, 6)
    layer(x, valid)
    apart = layer.structure_loss.item()
    layer(x[:, :1].expand(1, 6, 16).clone(), valid)  # identical nodes: nothing to smooth
    assert layer.structure_loss.item() < apart


def test_a_dynamic_graph_run_trains_and_exports_to_onnx_and_tflite_within_tolerance(edge_corpus, tmp_path):
    pytest.importorskip("ai_edge_litert", reason="the tflite extra")
    run = tmp_path / "run"
    argv = ["-q", "train", "ser", "--data", str(edge_corpus), "--out", str(run), *FAST]
    assert (
        main(
            [*argv, "--set", "optim.epochs=2", "--set", "model.arch=dynamic_graph", "--set", "graph_loss=0.2"]
        )
        == 0
    )
    info = json.loads((run / "model.json").read_text())
    assert info["model"]["arch"] == "dynamic_graph"
    export = [
        "-q",
        "export",
        str(run),
        "--out",
        str(tmp_path / "out"),
        "--format",
        "onnx",
        "--format",
        "tflite",
    ]
    assert (
        main([*export, "--precision", "fp32", "--window-seconds", "1.0", "--no-vad", "--threads", "1"]) == 0
    )
    manifest = json.loads(next((tmp_path / "out").glob("*/manifest.json")).read_text())
    artifacts = manifest["models"]["classifier"]["artifacts"]
    assert {a["format"] for a in artifacts} == {"onnx", "tflite"}
    assert all(a["parity"]["passed"] for a in artifacts)
