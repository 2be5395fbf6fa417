"""The missing-tool rule of tests/conftest.py: a skip here, a failure under CI=true.

Each test runs a small pytest session (pytester) with tests/conftest.py loaded as a plugin.
"""

from __future__ import annotations

import pytest

PLUGIN = ["-p", "tests.conftest", "-p", "no:cacheprovider"]

TESTS = """
import pytest
from tests.conftest import missing_tool, require_module

def test_helper():
    missing_tool("espeak-ng and sox are not installed (apt-get install espeak-ng sox)")

def test_module():
    require_module("edgewise_no_such_module")

def test_plain_importorskip():
    pytest.importorskip("edgewise_no_such_module")

@pytest.mark.skipif(True, reason="OpenSSH server is not installed")
def test_skipif_marker():
    pass

@pytest.mark.skipif(True, reason="needs a machine that is not the Pi")
def test_a_skip_for_another_reason():
    pass

def test_hardware():
    pytest.skip("TensorRT is not installed (needs an NVIDIA GPU)")

def test_present():
    assert require_module("json").dumps([]) == "[]"
"""


@pytest.fixture
def session(pytester, monkeypatch):
    pytester.makepyfile(test_inner=TESTS)

    def run(ci: str | None):
        if ci is None:
            monkeypatch.delenv("CI", raising=False)
        else:
            monkeypatch.setenv("CI", ci)
        return pytester.runpytest(*PLUGIN, "-rfEs")

    return run


def test_without_ci_a_missing_tool_is_a_skip_that_names_it(session):
    result = session(None)
    result.assert_outcomes(passed=1, skipped=6)
    result.stdout.fnmatch_lines(["*espeak-ng and sox are not installed*"])


def test_under_ci_a_missing_tool_fails_and_other_skips_stay_skips(session):
    result = session("true")
    # a skipif marker is evaluated in setup: a failure there is reported as an error
    result.assert_outcomes(passed=1, failed=3, errors=1, skipped=2)
    for line in (
        "FAILED*test_helper*espeak-ng and sox are not installed*CI=true*",
        "FAILED*test_module*edgewise_no_such_module*",
        "FAILED*test_plain_importorskip*edgewise_no_such_module*",
        "ERROR*test_skipif_marker*OpenSSH server is not installed*",
        "SKIPPED*needs a machine that is not the Pi*",
        "SKIPPED*TensorRT is not installed (needs an NVIDIA GPU)*",
    ):
        result.stdout.fnmatch_lines([line])
    assert result.ret == pytest.ExitCode.TESTS_FAILED


def test_ci_false_is_not_ci(session):
    session("false").assert_outcomes(passed=1, skipped=6)


def test_under_ci_a_module_level_importorskip_is_a_collection_error(pytester, monkeypatch):
    pytester.makepyfile(test_mod="import pytest\npytest.importorskip('edgewise_no_such_module')\n")
    monkeypatch.setenv("CI", "true")
    result = pytester.runpytest(*PLUGIN)
    assert result.ret != pytest.ExitCode.OK
    result.stdout.fnmatch_lines(["*edgewise_no_such_module*"])
    monkeypatch.delenv("CI")
    pytester.runpytest(*PLUGIN).assert_outcomes(skipped=1)
