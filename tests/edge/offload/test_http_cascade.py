"""The cascade over real HTTPS to a fake cloud in a thread: when the device asks, what comes back,
and how it fails: down, hanging, 401, malformed, wrong certificate, and the circuit breaker."""

from __future__ import annotations

import base64
import time

import numpy as np
import pytest

from edgewise.devtools.tls import self_signed_cert
from edgewise.edge.offload.cascade import Offload, describe_result, rec_result, ser_result
from edgewise.edge.offload.describe import DescribeInputError
from edgewise.edge.offload.http_route import HttpRoute
from edgewise.edge.offload.wire import OffloadFailure
from edgewise.edge.telemetry.schema import Telemetry
from edgewise.errors import EdgewiseError
from tests.edge.offload.conftest import TOKEN, make_config
from tests.edge.offload.fake_cloud import CHAT_TEXT, SER_REPLY

AUDIO = np.random.default_rng(0).normal(0, 0.05, 16000).astype(np.float32)
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 32


def ser_device(top: float) -> dict:
    rest = (1 - top) / 3
    return {
        "label": "sad",
        "probabilities": {"angry": rest, "happy": rest, "neutral": rest, "sad": top},
        "audio_seconds": 1.0,
        "frontend_ms": 1.0,
        "model_ms": 2.0,
        "latency_ms": 3.0,
    }


def rec_device(k: int = 5) -> dict:
    return {
        "k": k, "beam": 20, "unknown": [], "unknown_count": 0, "history_used": 3, "truncated": 0,
        "items": [f"i{i}" for i in range(k)], "titles": [f"Item {i}" for i in range(k)],
        "scores": [-1.0 * i for i in range(k)], "fallback": None, "timings": {"total_ms": 2.0},
    }  # fmt: skip


def test_a_confident_answer_stays_on_the_device(cloud, config_for):
    offload = Offload.from_config(config_for())
    result = ser_result(offload, AUDIO, ser_device(0.9))
    assert result["source"] == "device" and result["label"] == "sad"
    assert result["offload"] == {"asked": False, "why": "confidence 0.900 is at least 0.6"}
    assert cloud.behaviour.hits() == 0


def test_low_confidence_goes_to_the_cloud_and_says_so(cloud, config_for):
    offload = Offload.from_config(config_for())
    result = ser_result(offload, AUDIO, ser_device(0.4))
    assert result["source"] == "cloud" and result["label"] == "happy"
    assert result["probabilities"] == dict(zip(SER_REPLY["labels"], SER_REPLY["scores"]))
    info = result["offload"]
    assert info["why"] == "confidence 0.400 is below 0.6" and info["code"] is None and info["attempts"] == 1
    assert info["device"] == {"label": "sad", "confidence": 0.4}
    t = info["timings"]
    assert (
        t["device_ms"] == 3.0
        and t["cloud_ms"] > 0
        and t["total_ms"] == pytest.approx(3.0 + t["cloud_ms"], abs=0.01)
    )
    assert t["cloud_server"] == {"total_ms": 12.5}
    (request,) = cloud.behaviour.requests
    assert request["path"] == "/v1/audio/classifications" and request["authorization"] == f"Bearer {TOKEN}"
    body = request["body"]
    assert body["model"] == "ser-teacher" and body["sample_rate"] == 16000
    assert len(base64.b64decode(body["pcm16_b64"])) == 2 * AUDIO.size  # the utterance itself


def test_no_offload_marks_the_device(cloud):
    assert ser_result(None, AUDIO, ser_device(0.1))["source"] == "device"
    assert (
        rec_result(None, {"history": ["a"], "k": 50}, rec_device(), top_k=10, beam=20)["source"] == "device"
    )
    with pytest.raises(EdgewiseError, match="candidates 'cloud' needs a cloud"):
        rec_result(None, {"history": ["a"], "candidates": "cloud"}, rec_device(), top_k=10, beam=20)
    with pytest.raises(EdgewiseError, match="no model for images or video and no cloud to ask"):
        describe_result(None, {"image_b64": base64.b64encode(PNG).decode()})


def test_cloud_down_falls_back_within_the_bound(cloud, config_for):
    config = config_for()
    offload = Offload.from_config(config)
    cloud.stop()  # the port refuses connections
    t0 = time.perf_counter()
    result = ser_result(offload, AUDIO, ser_device(0.4))
    elapsed = time.perf_counter() - t0
    assert result["source"] == "device-fallback" and result["label"] == "sad"
    info = result["offload"]
    assert info["code"] == "unreachable" and "cannot connect" in info["reason"] and info["attempts"] == 2
    assert elapsed <= config.max_wait_s + 0.5
    print(f"\nrefused: fallback after {elapsed * 1000:.0f} ms (bound {config.max_wait_s * 1000:.0f} ms)")


def test_a_hanging_cloud_times_out_and_falls_back_within_the_bound(cloud, config_for):
    config = config_for(timeout_s=0.4, retries=2)
    cloud.behaviour.mode, cloud.behaviour.hang_s = "hang", 3.0
    offload = Offload.from_config(config)
    t0 = time.perf_counter()
    result = ser_result(offload, AUDIO, ser_device(0.4))
    elapsed = time.perf_counter() - t0
    assert result["source"] == "device-fallback"
    info = result["offload"]
    assert info["code"] == "timeout" and info["attempts"] == 3 and "within 0.4 s" in info["reason"]
    assert config.timeout_s * 3 <= elapsed <= config.max_wait_s + 0.5  # waited for each attempt, no longer
    assert info["timings"]["cloud_ms"] == pytest.approx(elapsed * 1000, rel=0.1)
    assert cloud.behaviour.hits() == 3
    print(f"\nhanging: fallback after {elapsed * 1000:.0f} ms (bound {config.max_wait_s * 1000:.0f} ms)")


def test_the_breaker_opens_after_n_failures_stops_calling_and_half_opens(cloud, config_for):
    config = config_for(retries=1, breaker={"failures": 3, "cooldown_s": 0.6})
    cloud.behaviour.mode, cloud.behaviour.status = "status", 503
    offload = Offload.from_config(config)
    for _ in range(3):
        result = ser_result(offload, AUDIO, ser_device(0.4))
        assert result["source"] == "device-fallback" and result["offload"]["code"] == "busy"
    assert cloud.behaviour.hits() == 6  # 503 is retried: 2 attempts a request
    assert offload.breaker.state == "open"
    t0 = time.perf_counter()
    result = ser_result(offload, AUDIO, ser_device(0.4))
    assert (time.perf_counter() - t0) < 0.05
    assert result["source"] == "device-fallback" and result["offload"]["code"] == "breaker_open"
    assert result["offload"]["attempts"] == 0 and result["offload"]["breaker"] == "open"
    assert cloud.behaviour.hits() == 6  # nothing reached the cloud
    cloud.behaviour.mode = "ok"
    time.sleep(0.65)
    assert offload.breaker.state == "half-open"
    result = ser_result(offload, AUDIO, ser_device(0.4))
    assert result["source"] == "cloud" and offload.breaker.state == "closed"
    assert cloud.behaviour.hits() == 7
    report = offload.take_stats()
    assert report == {
        "asked": 5, "cloud": 1, "fallbacks": 4, "failed": 0, "reasons": {"busy": 3, "breaker_open": 1},
        "breaker": "closed", "breaker_opened": 1, "cloud_ms": report["cloud_ms"],
    }  # fmt: skip
    assert report["cloud_ms"]["p50"] > 0
    Telemetry(offload=report)  # what the daemon publishes validates against the schema
    assert offload.take_stats()["asked"] == 0  # per interval


def test_a_failed_half_open_trial_opens_the_breaker_again(cloud, config_for):
    offload = Offload.from_config(config_for(retries=0, breaker={"failures": 1, "cooldown_s": 0.3}))
    cloud.behaviour.mode = "malformed"
    assert ser_result(offload, AUDIO, ser_device(0.4))["offload"]["code"] == "malformed"
    assert offload.breaker.state == "open"
    time.sleep(0.35)
    assert ser_result(offload, AUDIO, ser_device(0.4))["offload"]["code"] == "malformed"  # the trial
    assert offload.breaker.state == "open" and cloud.behaviour.hits() == 2
    assert ser_result(offload, AUDIO, ser_device(0.4))["offload"]["code"] == "breaker_open"


def test_401_falls_back_with_the_reason_and_is_not_retried(cloud, cert, tmp_path):
    wrong = tmp_path / "wrong.token"
    wrong.write_text("not-the-token\n")
    offload = Offload.from_config(make_config(cloud.url, wrong, cert[0]))
    result = ser_result(offload, AUDIO, ser_device(0.4))
    info = result["offload"]
    assert result["source"] == "device-fallback" and info["code"] == "unauthorized"
    assert "HTTP 401" in info["reason"] and "invalid bearer token" in info["reason"]
    assert info["attempts"] == 1 and cloud.behaviour.hits() == 1


@pytest.mark.parametrize(
    ("mode", "says"),
    [("malformed", "'labels' must be a non-empty list of strings"), ("garbage", "not valid JSON")],
)
def test_a_malformed_reply_falls_back_with_the_reason(cloud, config_for, mode, says):
    cloud.behaviour.mode = mode
    offload = Offload.from_config(config_for())
    result = ser_result(offload, AUDIO, ser_device(0.4))
    assert result["source"] == "device-fallback" and result["offload"]["code"] == "malformed"
    assert says in result["offload"]["reason"] and cloud.behaviour.hits() == 1


def test_a_certificate_the_ca_file_does_not_sign_is_refused(cloud, token_file, tmp_path):
    other_ca, _ = self_signed_cert(tmp_path / "other")
    offload = Offload.from_config(make_config(cloud.url, token_file, other_ca))
    result = ser_result(offload, AUDIO, ser_device(0.4))
    assert result["source"] == "device-fallback" and result["offload"]["code"] == "tls"
    assert "certificate did not verify" in result["offload"]["reason"]
    assert cloud.behaviour.hits() == 0  # the token never left the device


def test_redirects_are_not_followed(cloud, cert):
    route = HttpRoute(cloud.url, token=TOKEN, ca_file=cert[0])
    with pytest.raises(OffloadFailure, match="HTTP 307") as caught:
        route.post("/redirect", {}, 1.0)
    assert caught.value.code == "redirect"


def test_rec_asks_the_cloud_for_more_than_the_bundle_gives(cloud, config_for):
    offload = Offload.from_config(config_for())
    within = rec_result(offload, {"history": ["a", "b"], "k": 5}, rec_device(5), top_k=10, beam=20)
    assert (
        within["source"] == "device" and within["offload"]["asked"] is False and cloud.behaviour.hits() == 0
    )
    more = rec_result(offload, {"history": ["a", "b"], "k": 15}, rec_device(15), top_k=10, beam=20)
    assert more["source"] == "cloud" and more["offload"]["why"] == "k 15 is above the bundle's top_k 10"
    assert more["items"] == [f"cloud-{i}" for i in range(15)] and len(more["titles"]) == 15
    assert more["offload"]["device"]["items"] == [f"i{i}" for i in range(15)]
    assert cloud.behaviour.requests[-1]["body"] == {"model": "onerec-8b", "history": ["a", "b"], "k": 15}
    wide = rec_result(offload, {"history": ["a"], "k": 5, "beam": 40}, rec_device(5), top_k=10, beam=20)
    assert wide["source"] == "cloud" and wide["offload"]["why"] == "beam 40 is above the bundle's beam 20"
    asked = rec_result(offload, {"history": ["a"], "candidates": "cloud"}, rec_device(10), top_k=10, beam=20)
    assert asked["source"] == "cloud" and len(asked["items"]) == 10  # k: the device's (the bundle's top_k)
    assert asked["offload"]["why"] == "the request asks for the cloud's candidates"
    cloud.stop()
    down = rec_result(offload, {"history": ["a"], "k": 15}, rec_device(15), top_k=10, beam=20)
    assert down["source"] == "device-fallback" and down["items"] == [f"i{i}" for i in range(15)]


def test_describe_is_answered_by_the_cloud_only(cloud, config_for):
    offload = Offload.from_config(config_for())
    image = base64.b64encode(PNG).decode()
    result = describe_result(offload, {"image_b64": image, "prompt": "What is it?"})
    assert result["source"] == "cloud" and result["text"] == CHAT_TEXT and result["model"] == "keye-vl-8b"
    assert result["offload"]["timings"]["device_ms"] is None and result["offload"]["timings"]["cloud_ms"] > 0
    (request,) = cloud.behaviour.requests
    assert request["path"] == "/v1/chat/completions" and request["body"]["max_tokens"] == 256
    (message,) = request["body"]["messages"]
    assert message["content"][0] == {"type": "text", "text": "What is it?"}
    assert message["content"][1]["image_url"]["url"] == f"data:image/png;base64,{image}"
    with pytest.raises(DescribeInputError, match="not a PNG, JPEG, GIF, WebP, MP4 or WebM file"):
        describe_result(offload, {"image_b64": base64.b64encode(b"hello").decode()})
    with pytest.raises(DescribeInputError, match="not valid base64"):
        describe_result(offload, {"image_b64": "***"})
    with pytest.raises(DescribeInputError, match="no image or video part"):
        describe_result(offload, {"messages": [{"role": "user", "content": "hi"}]})
    with pytest.raises(DescribeInputError, match="must be a data:image"):
        describe_result(offload, {"messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]}]})  # fmt: skip
    cloud.stop()
    with pytest.raises(
        EdgewiseError, match=r"the cloud gave no answer \(unreachable: .*\); this device has no model"
    ):
        describe_result(offload, {"image_b64": image})
    report = offload.take_stats()
    assert report["cloud"] == 1 and report["failed"] == 1 and report["fallbacks"] == 0


def test_plain_http_to_loopback_works_without_tls(token_file):
    from tests.edge.offload.fake_cloud import CloudBehaviour, FakeCloud

    plain = FakeCloud(CloudBehaviour(token=TOKEN), None)
    try:
        offload = Offload.from_config(make_config(plain.url, token_file, None))
        assert ser_result(offload, AUDIO, ser_device(0.4))["source"] == "cloud"
    finally:
        plain.stop()
