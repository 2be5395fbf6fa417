"""A device that speaks: a real daemon process with the tts bundle installed, no audio input
(``audio.source: none``), answering ``tts`` commands over a real Mosquitto.

Each bad command is one ``ok: false`` ack naming the problem, and the daemon keeps answering.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import soundfile as sf

from edgewise.edge.install import activate, install_bundle
from tests.edge.daemon.conftest import TOPICS, ack_for, command
from tests.edge.telemetry.strategies import nested

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


@pytest.fixture
def tts_root(tmp_path, tts_bundle):
    """An install root with the tts bundle installed and current."""
    root = tmp_path / "root"
    activate(root, install_bundle(root, tts_bundle))
    return root


@pytest.fixture
def speaking_daemon(tts_root, broker, subscribe, daemons):
    """(daemon, subscriber): the daemon is up, its voice loaded and self-tested, and online."""
    sub = subscribe(broker, TOPICS)
    d = daemons(tts_root, broker, {"source": "none"}).start()
    health = d.wait_health(lambda h: h["ok"], timeout=120)
    assert health["model"] == "tts-tiny/1.0.0"
    sub.wait_for(lambda ps: any(p.type == "status" and p.state == "online" for p in ps))
    yield d, sub
    assert d.stop() == 0


def test_a_tts_command_writes_a_wav_and_publishes_an_event(speaking_daemon, broker, tts_root):
    d, sub = speaking_daemon
    command(broker, "tts", {"text": "Hello from the device.", "seed": 3}, "say1")
    ack = ack_for(sub, "say1", timeout=60)
    assert ack.ok, ack.error
    path = Path(ack.result["path"])
    assert path.parent == tts_root / "speech" and path.name == "say1.wav"
    info = sf.info(path)
    assert info.samplerate == 22050 and info.subtype == "PCM_16"
    assert ack.result["audio_seconds"] > 0
    assert info.frames / 22050 == pytest.approx(ack.result["audio_seconds"], abs=1e-3)
    assert ack.result["timings"]["total"] > 0 and ack.result["timings"]["first_audio"] > 0
    assert ack.result["spoken_text"] == "Hello from the device."
    assert "played" not in ack.result  # play was not asked for

    events = sub.wait_for(lambda ps: any(p.type == "event" and p.task == "tts" for p in ps), timeout=30)
    (event,) = [p for p in events if p.type == "event" and p.task == "tts"]
    assert event.latency_ms > 0 and event.model.name == "tts-tiny"
    assert event.source.kind == "command" and event.source.name == "say1"
    assert event.result["path"] == str(path) and event.result["timings"]["rtf"] > 0


BAD = {
    "empty": ({"text": ""}, "text is empty"),
    "blank": ({"text": "  \n "}, "text is empty"),
    "not-str": ({"text": 42}, "args.text must be a string, got int"),
    "missing": ({}, "args.text is required"),
    "unknown": ({"text": "Hi.", "volume": 11}, "unknown argument(s) ['volume']"),
    "steps": ({"text": "Hi.", "steps": 0}, "args.steps must be between 1 and 64"),
    "emoji": ({"text": "😀🎉"}, "nothing speakable"),
    "script": ({"text": "你好世界"}, "nothing speakable"),
}


def test_bad_tts_commands_are_failed_acks_and_the_daemon_keeps_speaking(speaking_daemon, broker, tts_root):
    d, sub = speaking_daemon
    for cmd_id, (args, _) in BAD.items():
        command(broker, "tts", args, cmd_id)
    raw = '{"id": "deep", "action": "tts", "args": ' + nested(4000) + "}"
    command(broker, "tts", raw=raw.encode())
    for cmd_id, (_, expected) in BAD.items():
        ack = ack_for(sub, cmd_id, timeout=60)
        assert ack.ok is False and expected in ack.error, (cmd_id, ack.error)
        assert "Traceback" not in ack.error and "\n" not in ack.error
    deep = ack_for(sub, "deep")
    assert deep.ok is False and "nested" in deep.error and "levels deep" in deep.error

    command(broker, "tts", {"text": "Still here."}, "after")
    ack = ack_for(sub, "after", timeout=60)
    assert ack.ok and Path(ack.result["path"]).is_file()
    assert sorted(p.name for p in (tts_root / "speech").iterdir()) == ["after.wav"]  # bad ones wrote nothing
    assert not any(p.type == "error" for p in sub.payloads())  # a refused command is not an error event
    assert d.proc.poll() is None


def test_infer_sent_to_a_voice_says_the_model_takes_text(speaking_daemon, broker):
    d, sub = speaking_daemon
    command(broker, "infer", {"pcm16_b64": "AAAA" * 4000, "sample_rate": 16000}, "i1")
    ack = ack_for(sub, "i1")
    assert ack.ok is False and "takes text" in ack.error and "tts" in ack.error

    command(broker, "status", cmd_id="s1")
    status = ack_for(sub, "s1")
    assert status.ok and status.result["running"] == "tts-tiny/1.0.0"
    assert status.result["pipeline"]["task"] == "tts" and status.result["torch_loaded"] is False


def test_the_command_id_cannot_write_outside_the_speech_folder(speaking_daemon, broker, tts_root):
    d, sub = speaking_daemon
    command(broker, "tts", {"text": "A path in an id."}, "../../escape")
    ack = ack_for(sub, "../../escape", timeout=60)
    assert ack.ok, ack.error
    path = Path(ack.result["path"])
    assert path.parent == tts_root / "speech" and path.is_file()
    assert json.dumps(ack.result)  # the result is plain JSON
