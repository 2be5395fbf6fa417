"""A device that recommends: a real daemon process with the rec bundle installed, no audio input
(``audio.source: none``), answering ``recommend`` commands over a real Mosquitto.

Each bad command is one ``ok: false`` ack naming the problem, and the daemon keeps answering.
"""

from __future__ import annotations

import signal
import time

import pytest

from edgewise.edge.install import activate, install_bundle
from tests.edge.daemon.conftest import TOPICS, ack_for, bundle_version, command
from tests.edge.rec_tamper import swap_catalogue

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


@pytest.fixture
def recommending_daemon(tmp_path, rec_bundle, broker, subscribe, daemons):
    """(daemon, subscriber): the rec bundle installed and current, loaded, self-tested and online."""
    root = tmp_path / "root"
    activate(root, install_bundle(root, rec_bundle))
    sub = subscribe(broker, TOPICS)
    d = daemons(root, broker, {"source": "none"}).start()
    health = d.wait_health(lambda h: h["ok"], timeout=120)
    assert health["model"] == "rec-lazy-small/1.0.0"
    sub.wait_for(lambda ps: any(p.type == "status" and p.state == "online" for p in ps))
    yield d, sub
    assert d.stop() == 0


BAD = {
    "no-history": ({"k": 3}, "args.history is required"),
    "not-a-list": ({"history": "i1,i2"}, "args.history must be a list of item ids"),
    "unknown-arg": ({"history": ["i1"], "top": 3}, "unknown argument(s) ['top']"),
    "all-unknown": ({"history": ["nope", "never"]}, "none of the 2 history item ids"),
    "k-over-beam": ({"history": ["i1"], "k": 30, "beam": 20}, "k must be between 1 and the beam width (20)"),
    "beam-huge": ({"history": ["i1"], "beam": 100000}, "beam must be between 1 and 256"),
    "k-text": ({"history": ["i1"], "k": "ten"}, "k must be an integer"),
}


def test_recommend_commands_are_answered_and_bad_ones_refused(recommending_daemon, broker):
    d, sub = recommending_daemon
    command(broker, "recommend", {"history": ["i3", "i5", "i7", "zz"], "k": 5, "beam": 20}, "r1")
    ack = ack_for(sub, "r1", timeout=60)
    assert ack.ok, ack.error
    result = ack.result
    assert len(result["items"]) == len(result["scores"]) == len(result["titles"]) == 5
    assert result["unknown"] == ["zz"] and result["fallback"] is None
    assert result["timings"]["total_ms"] > 0 and result["timings"]["decode_ms"] > 0

    events = sub.wait_for(lambda ps: any(p.type == "event" and p.task == "rec" for p in ps), timeout=30)
    (event,) = [p for p in events if p.type == "event" and p.task == "rec"]
    assert event.model.name == "rec-lazy-small" and event.latency_ms > 0
    assert event.source.kind == "command" and event.source.name == "r1"
    assert event.result["items"] == result["items"]

    for cmd_id, (args, _) in BAD.items():
        command(broker, "recommend", args, cmd_id)
    for cmd_id, (_, expected) in BAD.items():
        bad = ack_for(sub, cmd_id, timeout=60)
        assert bad.ok is False and expected in bad.error, (cmd_id, bad.error)
        assert "Traceback" not in bad.error

    command(broker, "recommend", {"history": []}, "new-user")
    fresh = ack_for(sub, "new-user", timeout=60)
    assert fresh.ok and fresh.result["fallback"] == "popular" and len(fresh.result["items"]) == 10

    command(broker, "infer", {"pcm16_b64": "AAAA" * 4000, "sample_rate": 16000}, "audio")
    infer = ack_for(sub, "audio")
    assert infer.ok is False and "takes history, not audio" in infer.error and "recommend" in infer.error

    command(broker, "tts", {"text": "Hello."}, "speak")
    speak = ack_for(sub, "speak")
    assert speak.ok is False and "does not speak" in speak.error

    command(broker, "status", cmd_id="s1")
    status = ack_for(sub, "s1")
    assert status.ok and status.result["pipeline"]["task"] == "rec" and status.result["torch_loaded"] is False
    assert not any(p.type == "error" for p in sub.payloads())  # a refused command is not an error event
    assert d.proc.poll() is None


def test_a_rec_bundle_of_another_catalogue_is_refused_and_the_old_one_keeps_answering(
    recommending_daemon, broker, rec_bundle, tmp_path
):
    d, sub = recommending_daemon
    ask = {"history": ["i3", "i5", "i7"], "k": 5, "beam": 20}
    command(broker, "recommend", ask, "before")
    before = ack_for(sub, "before", timeout=60)
    assert before.ok, before.error

    # v1.1.0: IDs and trie that agree with each other and with the manifest, but not with the model
    v2 = bundle_version(rec_bundle, tmp_path, "1.1.0")
    swap_catalogue(v2)

    switched_at = time.time()
    activate(d.root, install_bundle(d.root, v2))  # its graphs pass the device check: only the tables differ
    d.signal(signal.SIGHUP)
    health = d.wait_health(lambda h: h["model"] == "rec-lazy-small/1.1.0", after=switched_at, timeout=120)
    assert health["ok"] is False and "another catalogue" in health["error"], health
    assert "rec/semantic_ids.npz" in health["error"]
    errors = sub.wait_for(
        lambda ps: any(p.type == "error" and p.code == "model_load" for p in ps), timeout=30
    )
    (message,) = [p.message for p in errors if p.type == "error" and p.code == "model_load"]
    assert "rec-lazy-small/1.1.0" in message and "another catalogue" in message

    command(broker, "recommend", ask, "after")
    after = ack_for(sub, "after", timeout=60)
    assert after.ok, after.error
    assert after.result["items"] == before.result["items"]  # still v1, same answer
    assert after.result["scores"] == before.result["scores"]
    events = sub.wait_for(
        lambda ps: any(p.type == "event" and p.task == "rec" and p.source.name == "after" for p in ps),
        timeout=30,
    )
    (event,) = [p for p in events if p.type == "event" and p.task == "rec" and p.source.name == "after"]
    assert event.model.version == "1.0.0"  # answered by the model that kept running

    command(broker, "status", cmd_id="s1")
    status = ack_for(sub, "s1")
    assert status.ok and status.result["running"] == "rec-lazy-small/1.0.0"
    assert d.proc.poll() is None
