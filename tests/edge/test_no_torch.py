"""Devices have no room for torch: the edge package and the shared contract must not import it."""

import subprocess
import sys

CHECK = "import sys, {mods}; bad = [m for m in ('torch',) if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)"


def run_isolated(modules: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", CHECK.format(mods=modules)], capture_output=True, text=True, timeout=60
    )


def test_edge_package_does_not_import_torch():
    result = run_isolated("edgewise.edge")
    assert result.returncode == 0, result.stdout + result.stderr


def test_shared_contract_modules_do_not_import_torch():
    result = run_isolated("edgewise.features, edgewise.audio, edgewise.config, edgewise.errors")
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_check_itself_can_fail():
    # Guards the test above against passing vacuously: importing the trainer does pull torch in.
    result = run_isolated("edgewise.cloud.train.checkpoint")
    assert result.returncode == 1 and "torch" in result.stdout
