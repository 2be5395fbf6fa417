"""The daemon as a real process: audio in, events and telemetry out over a real Mosquitto."""

from __future__ import annotations

import base64
import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from edgewise.edge.install import activate, install_bundle, status
from tests.edge.daemon.conftest import TOPICS, ack_for, bundle_version, command

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


def pcm16(audio: np.ndarray) -> bytes:
    return (np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes()


def stream_of(track) -> bytes:
    """The track and 1.5 s of quiet after it: a live stream's last utterance ends only once the
    VAD has heard enough silence after it."""
    quiet = np.random.default_rng(1).normal(0, 0.003, 24000).astype(np.float32)
    return pcm16(np.concatenate([track.audio, quiet]))


def test_speech_in_events_out_then_a_clean_stop(root, broker, subscribe, daemons, speech_track):
    sub = subscribe(broker, TOPICS)
    d = daemons(root, broker, {"source": "file", "files": [str(speech_track.wav)]}).start()
    assert d.wait_health()["ok"] is True
    events = sub.wait_count("event", 3, timeout=30)
    assert len(events) == 3  # three sentences, three utterances
    for e in events:
        assert e.model.name == "ser-tiny" and e.model.version == "1.0.0"
        assert e.label in e.probabilities and abs(sum(e.probabilities.values()) - 1) < 1e-4
        assert e.source.kind == "file" and e.source.name.endswith("track.wav") and e.latency_ms > 0
    starts = [e.source.start_s for e in events]
    assert starts == sorted(starts)
    telemetry = sub.wait_for(lambda ps: any(p.type == "telemetry" and p.inferences for p in ps))
    report = next(p for p in telemetry if p.type == "telemetry" and p.inferences)
    assert report.latency_ms.p50 > 0 and report.rss_mb > 10
    online = [p for p in sub.payloads("status") if p.state == "online" and p.model]
    assert online and online[-1].model.version == "1.0.0"
    assert d.stop() == 0
    sub.wait_for(lambda ps: any(p.type == "status" and p.state == "offline" for p in ps))
    assert not (root / "daemon.pid").exists()


def test_a_new_bundle_is_swapped_in_while_audio_keeps_flowing(
    root, broker, subscribe, daemons, speech_track, tmp_path, ser_bundle
):
    sub = subscribe(broker, TOPICS)
    d = daemons(root, broker, {"source": "stdin", "stdin_format": "raw"}).start(stdin=subprocess.PIPE)
    d.wait_health(lambda h: h["ok"])
    track = stream_of(speech_track)
    d.proc.stdin.write(track)
    d.proc.stdin.flush()
    sub.wait_count("event", 3, timeout=30)
    v2 = bundle_version(ser_bundle, tmp_path, "1.1.0")
    switched_at = time.time()
    activate(root, install_bundle(root, v2))
    d.signal(signal.SIGHUP)
    d.proc.stdin.write(track)  # audio keeps coming while the new model loads
    d.proc.stdin.flush()
    assert d.wait_health(lambda h: h["model"] == "ser-tiny/1.1.0", after=switched_at)["ok"] is True
    d.proc.stdin.write(track)
    d.proc.stdin.close()
    events = sub.wait_count("event", 9, timeout=30)
    assert len(events) == 9  # no utterance lost across the switch
    assert events[-1].model.version == "1.1.0" and events[0].model.version == "1.0.0"
    sub.wait_for(lambda ps: any(p.type == "status" and p.model and p.model.version == "1.1.0" for p in ps))
    assert status(root)["last_good"] == "ser-tiny/1.1.0"
    assert d.stop() == 0


def test_a_model_that_fails_to_load_leaves_the_old_one_running(
    root, broker, subscribe, daemons, tmp_path, ser_bundle, speech_track
):
    sub = subscribe(broker, TOPICS)
    d = daemons(root, broker, {"source": "stdin", "stdin_format": "raw"}).start(stdin=subprocess.PIPE)
    d.wait_health(lambda h: h["ok"])
    bad = bundle_version(ser_bundle, tmp_path, "2.0.0", task="asr")  # verifies, but no pipeline runs it
    switched_at = time.time()
    activate(root, install_bundle(root, bad))
    d.signal(signal.SIGHUP)
    health = d.wait_health(lambda h: h["model"] == "ser-tiny/2.0.0", after=switched_at)
    assert health["ok"] is False and "no edge pipeline for bundle task 'asr'" in health["error"]
    errors = sub.wait_for(lambda ps: any(p.type == "error" and p.code == "model_load" for p in ps))
    assert any("ser-tiny/2.0.0" in p.message for p in errors if p.type == "error")
    d.proc.stdin.write(stream_of(speech_track))
    d.proc.stdin.close()
    events = sub.wait_count("event", 3, timeout=30)
    assert {e.model.version for e in events} == {"1.0.0"}  # the old model kept working
    assert d.stop() == 0


def test_commands_status_infer_rollback_and_garbage(
    root, broker, subscribe, daemons, tmp_path, ser_bundle, speech_track
):
    activate(root, install_bundle(root, bundle_version(ser_bundle, tmp_path, "1.1.0")))
    sub = subscribe(broker, TOPICS)
    d = daemons(root, broker, {"source": "stdin", "stdin_format": "raw"}).start(stdin=subprocess.PIPE)
    d.wait_health(lambda h: h["ok"] and h["model"] == "ser-tiny/1.1.0")
    sub.wait_for(lambda ps: any(p.type == "status" and p.state == "online" for p in ps))

    command(broker, "status", cmd_id="s1")
    ack = ack_for(sub, "s1")
    assert ack.ok and ack.result["running"] == "ser-tiny/1.1.0" and ack.result["torch_loaded"] is False

    audio = speech_track.audio[speech_track.bounds[0][0] : speech_track.bounds[0][1]]
    command(
        broker, "infer", {"pcm16_b64": base64.b64encode(pcm16(audio)).decode(), "sample_rate": 16000}, "i1"
    )
    ack = ack_for(sub, "i1")
    assert ack.ok and ack.result["label"] in ack.result["probabilities"]

    command(broker, "infer", {"pcm16_b64": "%%% not base64"}, "i2")
    assert "could not be decoded" in ack_for(sub, "i2").error
    command(broker, "status", raw=b"\xff\xfe garbage")
    acks = sub.wait_for(
        lambda ps: any(
            p.type == "command_ack" and not p.ok and "invalid command" in (p.error or "") for p in ps
        )
    )
    assert acks
    command(
        broker,
        "infer",
        raw=json.dumps({"id": "big", "action": "infer", "args": {"pcm16_b64": "A" * 4_000_000}}).encode(),
    )
    assert ack_for(sub, "big").ok is False  # 3 MB of zeros decodes to 94 s: over max_infer_seconds

    command(broker, "rollback", cmd_id="r1")
    ack = ack_for(sub, "r1")
    assert ack.ok and ack.result["model"] == "ser-tiny/1.0.0"
    assert d.proc.poll() is None  # nothing above took the daemon down
    assert d.stop() == 0


def test_kill_9_during_a_bundle_switch_always_comes_back_with_a_working_model(
    root, broker, daemons, tmp_path, ser_bundle
):
    versions = [install_bundle(root, bundle_version(ser_bundle, tmp_path, f"1.{i}.0")) for i in (1, 2)]
    rng = np.random.default_rng(0)
    trials = 5
    for trial in range(trials):
        d = daemons(root, broker, {"source": "stdin", "stdin_format": "raw"}).start(stdin=subprocess.PIPE)
        d.wait_health(lambda h: h["ok"])
        activate(root, versions[trial % 2])
        d.signal(signal.SIGHUP)
        time.sleep(float(rng.uniform(0, 0.3)))  # somewhere in the load, self-test or switch
        d.proc.kill()
        d.proc.wait()
    d = daemons(root, broker, {"source": "stdin", "stdin_format": "raw"}).start(stdin=subprocess.PIPE)
    health = d.wait_health(lambda h: True)
    assert health["ok"] is True and health["model"] in {"ser-tiny/1.0.0", "ser-tiny/1.1.0", "ser-tiny/1.2.0"}
    assert d.stop() == 0


def test_without_a_sound_card_the_daemon_says_so_and_keeps_serving(
    root, broker, subscribe, daemons, monkeypatch
):
    from pathlib import Path

    if list(Path("/proc/asound").glob("card*")):
        pytest.skip("this machine has a sound card")
    monkeypatch.setenv("ALSA_CONFIG_PATH", "/usr/share/alsa/alsa.conf")
    sub = subscribe(broker, TOPICS)
    d = daemons(root, broker, {"source": "mic"}, retry_audio_s=60).start()
    d.wait_health(lambda h: h["ok"])
    errors = sub.wait_for(lambda ps: any(p.type == "error" and p.code == "audio" for p in ps), timeout=30)
    message = next(p.message for p in errors if p.type == "error" and p.code == "audio")
    assert "audio input" in message
    command(broker, "status", cmd_id="s1")
    assert ack_for(sub, "s1").ok
    assert d.stop() == 0


def test_edge_deploy_switches_the_running_daemon_and_waits_for_its_health(
    root, broker, subscribe, daemons, tmp_path, ser_bundle
):
    sub = subscribe(broker, TOPICS)
    d = daemons(root, broker, {"source": "stdin", "stdin_format": "raw"}).start(stdin=subprocess.PIPE)
    d.wait_health(lambda h: h["ok"])
    v2 = bundle_version(ser_bundle, tmp_path, "1.4.0")
    deploy = subprocess.run(
        [sys.executable, "-m", "edgewise.edge.deploy.cli", "--device", "local", "--root", str(root), str(v2)],
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert deploy.returncode == 0, deploy.stdout + deploy.stderr
    health = d.health()
    assert health["ok"] and health["model"] == "ser-tiny/1.4.0" and health["pid"] == d.proc.pid
    sub.wait_for(lambda ps: any(p.type == "status" and p.model and p.model.version == "1.4.0" for p in ps))
    assert d.stop() == 0
