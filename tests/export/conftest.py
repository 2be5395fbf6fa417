"""One exported bundle per session, shared by the export tests; the trained run is the shared
``tiny_run`` of tests/conftest.py."""

from __future__ import annotations

import pytest

from edgewise.cli import main

EXPORT_ALL = ["--precision", "fp32", "--precision", "fp16", "--precision", "int8"]
EXPORT_ALL += ["--quant", "dynamic", "--quant", "static", "--threads", "1"]


@pytest.fixture(scope="session")
def exported(tiny_run, tmp_path_factory):
    """``edgewise export`` with every ONNX precision: (bundle folder, archive, CLI output)."""
    out = tmp_path_factory.mktemp("bundles")
    assert main(["-q", "export", str(tiny_run), "--out", str(out), *EXPORT_ALL]) == 0
    return out / "ser-tiny-1.0.0", out / "ser-tiny-1.0.0.tar.gz"
