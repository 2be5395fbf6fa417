"""One tiny trained run and one exported bundle per session, shared by the export tests."""

from __future__ import annotations

import pytest

from edgewise.cli import main
from tests.cloud.train.conftest import FAST, make_tone_corpus

EXPORT_ALL = ["--precision", "fp32", "--precision", "fp16", "--precision", "int8"]
EXPORT_ALL += ["--quant", "dynamic", "--quant", "static", "--threads", "1"]


@pytest.fixture(scope="session")
def export_corpus(tmp_path_factory):
    return make_tone_corpus(tmp_path_factory.mktemp("export-corpus"))


@pytest.fixture(scope="session")
def trained_run(export_corpus, tmp_path_factory):
    """A conv_transformer run, 3 epochs: enough for a task metric above chance, in a few seconds."""
    out = tmp_path_factory.mktemp("export-runs") / "tiny"
    args = ["-q", "train", "ser", "--config", "tiny", "--data", str(export_corpus), "--out", str(out)]
    assert main([*args, "--set", "optim.epochs=3", *FAST[2:]]) == 0
    return out


@pytest.fixture(scope="session")
def exported(trained_run, tmp_path_factory):
    """``edgewise export`` with every ONNX precision: (bundle folder, archive, CLI output)."""
    out = tmp_path_factory.mktemp("bundles")
    assert main(["-q", "export", str(trained_run), "--out", str(out), *EXPORT_ALL]) == 0
    return out / "ser-tiny-1.0.0", out / "ser-tiny-1.0.0.tar.gz"
