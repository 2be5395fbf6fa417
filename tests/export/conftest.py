"""One exported bundle per session, shared by the export tests; the trained run is the shared
``tiny_run`` of tests/conftest.py."""

from __future__ import annotations

import pytest

from tests import prebuild


@pytest.fixture(scope="session")
def exported(pytestconfig, tiny_run, tmp_path_factory):
    """``edgewise export`` with every ONNX precision (fp32, fp16, int8 dynamic and static; built by
    tests/prebuild.py, in the background while the suite runs): (bundle folder, archive)."""
    done = prebuild.prebuilt(pytestconfig, "exported")
    if done is not None:
        return done / "ser-tiny-1.0.0", done / "ser-tiny-1.0.0.tar.gz"
    return prebuild.build_exported(tiny_run, tmp_path_factory.mktemp("bundles"))
