"""One trained tiny SER model exported to ONNX and TFLite, shared by the edge tests.

Building it needs the training and export extras; the edge code under test does not import torch
(tests/edge/test_no_torch.py checks that in a clean interpreter).
"""

from __future__ import annotations

import pytest

from tests.cloud.train.conftest import FAST, make_tone_corpus


@pytest.fixture(scope="session")
def edge_corpus(tmp_path_factory):
    return make_tone_corpus(tmp_path_factory.mktemp("edge-corpus"))


@pytest.fixture(scope="session")
def ser_bundle(edge_corpus, tmp_path_factory):
    """A bundle folder with onnx fp32/int8-dynamic and tflite fp32/int8-dynamic of a tiny model."""
    pytest.importorskip("torch")
    from edgewise.cli import main

    runs = tmp_path_factory.mktemp("edge-runs")
    train = [
        "-q",
        "train",
        "ser",
        "--config",
        "tiny",
        "--data",
        str(edge_corpus),
        "--out",
        str(runs / "tiny"),
    ]
    assert main([*train, "--set", "optim.epochs=3", *FAST[2:]]) == 0
    out = tmp_path_factory.mktemp("edge-bundles")
    export = ["-q", "export", str(runs / "tiny"), "--out", str(out), "--format", "onnx", "--format", "tflite"]
    export += ["--precision", "fp32", "--precision", "int8", "--quant", "dynamic", "--window-seconds", "1.0"]
    assert main([*export, "--threads", "1"]) == 0
    return out / "ser-tiny-1.0.0"
