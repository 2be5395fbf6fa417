"""The cascade in real daemon processes over a real Mosquitto: the SER daemon asks the fake cloud
(HTTPS, token, its own CA) when unsure, falls back in bounded time when the cloud hangs, stops asking
once the breaker opens, and reports it all in telemetry; the recommending daemon asks for more than
its bundle gives and answers ``describe`` through the cloud; the MQTT route through the daemon's own
connection."""

from __future__ import annotations

import base64
import time

import numpy as np
import pytest

from edgewise.edge.install import activate, install_bundle
from tests.edge.daemon.conftest import TOPICS, ack_for, command
from tests.edge.daemon.test_daemon import pcm16
from tests.edge.offload.fake_cloud import CHAT_TEXT, CloudBehaviour, MqttResponder
from tests.edge.offload.test_http_cascade import PNG

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

NOISE = base64.b64encode(pcm16(np.random.default_rng(3).normal(0, 0.05, 16000).astype(np.float32))).decode()
TIMING = {"timeout_s": 1.0, "retries": 1, "backoff": {"base_s": 0.05, "max_s": 0.2, "jitter": 0.5}}


def site(cloud, token_file, cert) -> dict:
    return {"url": cloud.url, "token_file": str(token_file), "ca_file": str(cert[0]), **TIMING}


def timed_command(broker, sub, action, args, cmd_id):
    t0 = time.perf_counter()
    command(broker, action, args, cmd_id)
    ack = ack_for(sub, cmd_id, timeout=60)
    return ack, time.perf_counter() - t0


def offload_reports(sub) -> list:
    return [p.offload for p in sub.payloads("telemetry") if p.offload is not None]


def totals(reports) -> dict:
    keys = ("asked", "cloud", "fallbacks", "failed", "breaker_opened")
    out = {k: sum(getattr(r, k) for r in reports) for k in keys}
    reasons: dict[str, int] = {}
    for r in reports:
        for code, n in r.reasons.items():
            reasons[code] = reasons.get(code, 0) + n
    return {**out, "reasons": reasons}


def test_ser_daemon_asks_when_unsure_falls_back_when_the_cloud_hangs_and_breaks_the_circuit(
    root, broker, subscribe, daemons, cloud, token_file, cert
):
    offload = {
        **site(cloud, token_file, cert),
        "breaker": {"failures": 2, "cooldown_s": 120},
        "ser": {"model": "ser-teacher", "below": 1.0},
    }  # fmt: skip  (below 1: unsure unless certain)
    sub = subscribe(broker, TOPICS)
    d = daemons(root, broker, {"source": "none"}, offload=offload).start()
    assert d.wait_health(lambda h: h["ok"])["ok"]

    ack, _ = timed_command(broker, sub, "infer", {"pcm16_b64": NOISE}, "i1")
    assert ack.ok, ack.error
    result = ack.result
    assert result["source"] == "cloud" and result["label"] == "happy", result
    assert result["offload"]["why"].startswith("confidence") and result["offload"]["device"]["label"]
    assert cloud.behaviour.requests[-1]["body"]["model"] == "ser-teacher"
    events = sub.wait_for(lambda ps: any(p.type == "event" for p in ps))
    (event,) = [p for p in events if p.type == "event"]
    assert event.label == "happy" and event.result["source"] == "cloud"

    cloud.behaviour.mode, cloud.behaviour.hang_s = "hang", 5.0  # accepts, never answers in time
    bound = 1.0 * 2 + 0.05  # timeout_s * (retries + 1) + the backoff ceiling
    for cmd_id in ("i2", "i3"):
        ack, elapsed = timed_command(broker, sub, "infer", {"pcm16_b64": NOISE}, cmd_id)
        assert ack.ok and ack.result["source"] == "device-fallback", ack.result
        assert ack.result["offload"]["code"] == "timeout" and ack.result["offload"]["attempts"] == 2
        assert 2.0 <= elapsed <= bound + 1.5, elapsed  # + MQTT, the model and the ack's way back
        print(
            f"\ndaemon {cmd_id}: timed out, device answer after {elapsed * 1000:.0f} ms (bound {bound * 1000:.0f} ms)"
        )
    hits = cloud.behaviour.hits()
    ack, elapsed = timed_command(broker, sub, "infer", {"pcm16_b64": NOISE}, "i4")
    assert ack.result["source"] == "device-fallback" and ack.result["offload"]["code"] == "breaker_open"
    assert cloud.behaviour.hits() == hits and elapsed < 1.0  # the open breaker asks nobody
    print(f"daemon i4: breaker open, device answer after {elapsed * 1000:.0f} ms")

    command(broker, "describe", {"image_b64": base64.b64encode(PNG).decode()}, "look")
    look = ack_for(sub, "look")
    assert look.ok is False and "no model for images or video and no cloud to ask" in look.error

    command(broker, "status", cmd_id="s1")
    status = ack_for(sub, "s1").result["offload"]
    assert status["tasks"] == ["ser"] and status["breaker"] == "open" and status["route"] == cloud.url

    reports = sub.wait_for(lambda ps: totals(offload_reports_of(ps))["asked"] >= 4, timeout=10)
    assert totals(offload_reports_of(reports)) == {
        "asked": 4, "cloud": 1, "fallbacks": 3, "failed": 0, "breaker_opened": 1,
        "reasons": {"timeout": 2, "breaker_open": 1},
    }  # fmt: skip
    assert offload_reports_of(reports)[-1].breaker == "open"
    assert d.stop() == 0  # attempts still hanging in the cloud do not hold the daemon


def offload_reports_of(payloads) -> list:
    return [p.offload for p in payloads if p.type == "telemetry" and p.offload is not None]


@pytest.fixture
def rec_root(tmp_path, rec_bundle):
    root = tmp_path / "rec-root"
    activate(root, install_bundle(root, rec_bundle))
    return root


def test_rec_daemon_asks_for_more_than_its_bundle_and_describes_through_the_cloud(
    rec_root, broker, subscribe, daemons, cloud, token_file, cert
):
    offload = {
        **site(cloud, token_file, cert),
        "rec": {"model": "onerec-8b"},
        "vision": {"model": "keye-vl-8b"},
    }
    sub = subscribe(broker, TOPICS)
    d = daemons(rec_root, broker, {"source": "none"}, offload=offload).start()
    assert d.wait_health(lambda h: h["ok"], timeout=120)["ok"]

    command(broker, "recommend", {"history": ["i3", "i5"], "k": 5}, "r1")
    within = ack_for(sub, "r1", timeout=60)
    assert within.ok and within.result["source"] == "device" and within.result["offload"]["asked"] is False
    assert cloud.behaviour.hits() == 0

    command(broker, "recommend", {"history": ["i3", "i5"], "k": 25, "beam": 30}, "r2")
    more = ack_for(sub, "r2", timeout=60)
    assert more.ok and more.result["source"] == "cloud", more.result
    assert more.result["items"] == [f"cloud-{i}" for i in range(25)]
    assert "is above the bundle's" in more.result["offload"]["why"]
    assert len(more.result["offload"]["device"]["items"]) == 25  # the device's answer, kept

    command(broker, "recommend", {"history": ["i3"], "candidates": "cloud"}, "r3")
    asked = ack_for(sub, "r3", timeout=60)
    assert asked.ok and asked.result["source"] == "cloud"
    assert cloud.behaviour.requests[-1]["body"]["history"] == ["i3"]
    command(broker, "recommend", {"history": ["i3"], "candidates": "sky"}, "r4")
    bad = ack_for(sub, "r4")
    assert not bad.ok and "args.candidates must be one of ['device', 'cloud']" in bad.error

    command(broker, "describe", {"image_b64": base64.b64encode(PNG).decode(), "prompt": "What?"}, "look")
    look = ack_for(sub, "look", timeout=60)
    assert look.ok and look.result["text"] == CHAT_TEXT and look.result["source"] == "cloud"
    events = sub.wait_for(lambda ps: any(p.type == "event" and p.task == "vision" for p in ps))
    (seen,) = [p for p in events if p.type == "event" and p.task == "vision"]
    assert seen.model.name == "keye-vl-8b" and seen.result["text"] == CHAT_TEXT

    cloud.stop()
    command(broker, "recommend", {"history": ["i3", "i5"], "k": 25, "beam": 30}, "r5")
    down = ack_for(sub, "r5", timeout=60)
    assert down.ok and down.result["source"] == "device-fallback"
    assert down.result["offload"]["code"] == "unreachable" and len(down.result["items"]) == 25
    command(broker, "describe", {"image_b64": base64.b64encode(PNG).decode()}, "look2")
    blind = ack_for(sub, "look2", timeout=60)
    assert blind.ok is False and "the cloud gave no answer (unreachable" in blind.error
    assert "Traceback" not in blind.error
    reports = sub.wait_for(lambda ps: totals(offload_reports_of(ps))["asked"] >= 5, timeout=10)
    got = totals(offload_reports_of(reports))
    assert got["cloud"] == 3 and got["fallbacks"] == 1 and got["failed"] == 1
    assert got["reasons"] == {"unreachable": 2}
    assert d.stop() == 0


def test_the_mqtt_route_rides_on_the_daemon_connection(root, broker, subscribe, daemons, token_file):
    responder = MqttResponder(broker, CloudBehaviour(token=None))
    try:
        offload = {"route": "mqtt", **TIMING, "ser": {"model": "ser-teacher", "below": 1.0}}
        sub = subscribe(broker, TOPICS)
        d = daemons(root, broker, {"source": "none"}, offload=offload).start()
        assert d.wait_health(lambda h: h["ok"])["ok"]
        sub.wait_for(lambda ps: any(p.type == "status" and p.state == "online" for p in ps))
        ack, elapsed = timed_command(broker, sub, "infer", {"pcm16_b64": NOISE}, "m1")
        assert ack.ok and ack.result["source"] == "cloud" and ack.result["offload"]["route"] == "mqtt"
        print(f"\ndaemon over mqtt: cloud answer, command to ack {elapsed * 1000:.0f} ms")
        responder.behaviour.mode = "hang"
        ack, elapsed = timed_command(broker, sub, "infer", {"pcm16_b64": NOISE}, "m2")
        assert ack.result["source"] == "device-fallback" and ack.result["offload"]["code"] == "timeout"
        assert 2.0 <= elapsed <= 2.05 + 1.5
        print(f"daemon over mqtt: no reply, device answer after {elapsed * 1000:.0f} ms")
        assert d.stop() == 0
    finally:
        responder.close()
