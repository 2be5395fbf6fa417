"""Session fixtures shared across test folders: one tiny trained SER run and its bundle.

Training and export need the cloud and export extras; the edge and bench code under test does not
import torch (tests/edge/test_no_torch.py checks that in a clean interpreter).
"""

from __future__ import annotations

import pytest

from tests.cloud.train.conftest import FAST, make_tone_corpus


@pytest.fixture(scope="session")
def edge_corpus(tmp_path_factory):
    return make_tone_corpus(tmp_path_factory.mktemp("edge-corpus"))


@pytest.fixture(scope="session")
def tiny_run(edge_corpus, tmp_path_factory):
    """A tiny ConvTransformer run (HRF, 3 epochs) on the tone corpus."""
    pytest.importorskip("torch")
    from edgewise.cli import main

    run = tmp_path_factory.mktemp("edge-runs") / "tiny"
    train = ["-q", "train", "ser", "--config", "tiny", "--data", str(edge_corpus), "--out", str(run)]
    assert main([*train, "--set", "optim.epochs=3", *FAST[2:]]) == 0
    return run


@pytest.fixture(scope="session")
def ser_bundle(tiny_run, tmp_path_factory):
    """The bundle folder (its .tar.gz beside it): onnx fp32/int8-dynamic, tflite fp32/int8-dynamic
    with a 1 s window, and the Silero VAD role."""
    from edgewise.cli import main

    out = tmp_path_factory.mktemp("edge-bundles")
    export = ["-q", "export", str(tiny_run), "--out", str(out), "--format", "onnx", "--format", "tflite"]
    export += ["--precision", "fp32", "--precision", "int8", "--quant", "dynamic", "--window-seconds", "1.0"]
    assert main([*export, "--threads", "1"]) == 0
    return out / "ser-tiny-1.0.0"
