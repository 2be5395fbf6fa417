"""Speaker-adaptive SER through a real daemon process and a real Mosquitto.

One daemon (the bundle with a speaker adapter, no audio input) serves the whole module: ``infer``
with a speaker counts that speaker's utterances, the ``adaptation`` command shows and resets them,
the statistics survive a restart (``ROOT/adaptation/<bundle name>.json``), bad speakers and bad
arguments are refused acks, and a bundle without an adapter says so. The tests run in file order
(the last one swaps the model and back).
"""

from __future__ import annotations

import base64
import json
import shutil
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from edgewise.devtools.mosquitto import MosquittoBroker
from edgewise.edge.install import activate, install_bundle
from edgewise.errors import MissingDependencyError
from tests.conftest import missing_tool
from tests.edge.daemon.conftest import TOPICS, DaemonProcess, ack_for, bundle_version, command
from tests.edge.telemetry.conftest import Subscriber

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]


@dataclass
class Adapting:
    daemon: DaemonProcess
    sub: Subscriber
    broker: MosquittoBroker
    wav_b64: str
    state: Path  # ROOT/adaptation/<bundle name>.json

    def ask(self, action: str, args: dict | None, cmd_id: str):
        command(self.broker, action, args, cmd_id)
        return ack_for(self.sub, cmd_id)

    def infer(self, speaker: str, cmd_id: str):
        ack = self.ask("infer", {"wav_b64": self.wav_b64, "speaker": speaker}, cmd_id)
        assert ack.ok, ack.error
        return ack

    def speakers(self, cmd_id: str) -> dict:
        ack = self.ask("adaptation", {}, cmd_id)
        assert ack.ok, ack.error
        return ack.result["speakers"]

    def start(self) -> None:
        self.daemon.start()
        self.daemon.wait_health(lambda h: h["ok"], timeout=120)


@pytest.fixture(scope="module")
def adapting(tmp_path_factory, adapt_bundle, edge_corpus):
    """The adapt bundle installed and current, its daemon (``audio.source: none``, the default
    ``adaptation:`` settings) started and online, and a subscriber to its topics."""
    tmp = tmp_path_factory.mktemp("adaptation-daemon")
    try:
        broker = MosquittoBroker(workdir=tmp / "broker")
    except MissingDependencyError as exc:
        missing_tool(str(exc))
    broker.start()
    root = tmp / "root"
    activate(root, install_bundle(root, adapt_bundle))  # as edge-deploy installs it
    (tmp / "daemon").mkdir()
    daemon = DaemonProcess(root, broker, {"source": "none"}, tmp / "daemon")
    sub = Subscriber(broker, TOPICS)
    wav = sorted((edge_corpus / "wavs").glob("test*.wav"))[0]
    name = json.loads((adapt_bundle / "manifest.json").read_text())["name"]
    session = Adapting(
        daemon, sub, broker, base64.b64encode(wav.read_bytes()).decode(), root / "adaptation" / f"{name}.json"
    )
    try:
        session.start()
        sub.wait_for(lambda ps: any(p.type == "status" and p.state == "online" for p in ps))
        yield session
    finally:
        sub.close()
        if daemon.proc is not None and daemon.proc.poll() is None:
            daemon.proc.kill()
            daemon.proc.wait()
        broker.close()


@pytest.fixture(scope="module")
def heard(adapting):
    """Alice three times, then Bob once: their infer acks, in order."""
    return [adapting.infer(who, f"heard-{i}") for i, who in enumerate(["alice"] * 3 + ["bob"])]


def test_each_speaker_is_counted_and_listed(adapting, heard):
    blocks = [ack.result["adaptation"] for ack in heard]
    assert [(b["speaker"], b["heard"]) for b in blocks] == [
        ("alice", 0),
        ("alice", 1),
        ("alice", 2),
        ("bob", 0),
    ]
    for ack, block in zip(heard, blocks, strict=True):
        assert ack.result["label"] in ack.result["probabilities"]
        assert block["unadapted"]["label"] in block["unadapted"]["probabilities"]
        assert abs(sum(block["unadapted"]["probabilities"].values()) - 1) < 1e-3
        assert 0 <= block["reliability"] <= 1 and block["ms"] >= 0
    assert blocks[0]["reliability"] < blocks[2]["reliability"]  # more heard, more trusted

    speakers = adapting.speakers("list-1")
    assert {name: s["heard"] for name, s in speakers.items()} == {"alice": 3, "bob": 1}
    assert speakers["alice"]["weight"] > speakers["bob"]["weight"] > 0
    state = json.loads(adapting.state.read_text())  # written after every utterance
    assert set(state["speakers"]) == {"alice", "bob"}


def test_each_infer_with_a_speaker_is_an_event_that_names_them(adapting, heard):
    dropped = [line for line in adapting.daemon.output().splitlines() if "not stored" in line]
    assert not dropped, dropped[0]  # an event the telemetry schema refused is only logged
    events = adapting.sub.wait_count("event", len(heard))[: len(heard)]  # nothing else came before
    assert [e.source.kind for e in events] == ["command"] * len(heard)
    for event, ack in zip(events, heard, strict=True):
        assert event.label == ack.result["label"]
        assert event.result["adaptation"]["speaker"] == ack.result["adaptation"]["speaker"]
        assert event.result["adaptation"]["heard"] == ack.result["adaptation"]["heard"]


def test_statistics_survive_a_restart_and_a_reset_forgets(adapting, heard):
    before = adapting.speakers("before-restart")
    assert before["alice"]["heard"] == 3
    assert adapting.daemon.stop() == 0
    adapting.start()
    after = adapting.speakers("after-restart")
    assert after == before  # heard, weight and last seen, as they were

    reset = adapting.ask("adaptation", {"reset": "alice"}, "reset-alice")
    assert reset.ok, reset.error
    assert reset.result["reset"] == ["alice"] and set(reset.result["speakers"]) == {"bob"}
    state = json.loads(adapting.state.read_text())
    assert set(state["speakers"]) == {"bob"}  # persisted at once

    again = adapting.infer("alice", "alice-again").result["adaptation"]
    assert again["speaker"] == "alice" and again["heard"] == 0
    assert adapting.infer("bob", "bob-again").result["adaptation"]["heard"] == 1  # Bob was kept

    everyone = adapting.ask("adaptation", {"reset": "all"}, "reset-all")
    assert everyone.ok and everyone.result["reset"] == ["alice", "bob"] and everyone.result["speakers"] == {}
    assert json.loads(adapting.state.read_text())["speakers"] == {}


def test_bad_speakers_and_arguments_are_refused_and_the_daemon_keeps_answering(adapting):
    bad = {
        "bad-speaker": ("infer", {"wav_b64": adapting.wav_b64, "speaker": "../x"}, "infer: args.speaker"),
        "long-speaker": ("infer", {"wav_b64": adapting.wav_b64, "speaker": "a" * 65}, "args.speaker"),
        "reset-nobody": ("adaptation", {"reset": "nobody"}, "no statistics for speaker 'nobody'"),
        "reset-number": ("adaptation", {"reset": 5}, "adaptation: args.reset"),
        "bogus": ("adaptation", {"bogus": 1}, "unknown argument(s) ['bogus']"),
    }
    for cmd_id, (action, args, _) in bad.items():
        command(adapting.broker, action, args, cmd_id)
    for cmd_id, (_, _, expected) in bad.items():
        ack = ack_for(adapting.sub, cmd_id)
        assert ack.ok is False and expected in ack.error, (cmd_id, ack.error)
        assert "Traceback" not in ack.error

    status = adapting.ask("status", None, "status-after-bad")
    assert status.ok and status.result["running"] == "ser-tiny/1.0.0"
    assert "../x" not in status.result["pipeline"]["adaptation"]["speakers"]
    assert adapting.daemon.proc.poll() is None


def test_a_bundle_without_an_adapter_says_so(adapting, adapt_bundle, tmp_path):
    manifest = json.loads((adapt_bundle / "manifest.json").read_text())
    preprocessing = {k: v for k, v in manifest["preprocessing"].items() if k != "speaker_adaptation"}
    plain = bundle_version(adapt_bundle, tmp_path, "1.1.0", preprocessing=preprocessing)
    shutil.rmtree(plain / "ser")  # no adapter: no adapter file
    switched_at = time.time()
    activate(adapting.daemon.root, install_bundle(adapting.daemon.root, plain))
    adapting.daemon.signal(signal.SIGHUP)
    health = adapting.daemon.wait_health(lambda h: h["model"] == "ser-tiny/1.1.0", after=switched_at)
    assert health["ok"] is True, health

    ack = adapting.ask("adaptation", {}, "no-adapter")
    assert ack.ok is False and "carries no speaker adapter" in ack.error
    infer = adapting.ask("infer", {"wav_b64": adapting.wav_b64, "speaker": "alice"}, "plain-infer")
    assert infer.ok and "adaptation" not in infer.result  # classified, not adapted

    back = adapting.ask("rollback", None, "back-to-the-adapter")  # the other tests' model again
    assert back.ok and back.result["model"] == "ser-tiny/1.0.0", back.error
    assert adapting.ask("adaptation", {}, "adapter-again").ok
