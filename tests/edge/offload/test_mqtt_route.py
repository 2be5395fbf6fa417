"""The MQTT route on a real Mosquitto: the device's telemetry client carries the requests, a small
responder plays the cloud's bridge; round trip, timeout, an error status, no connection, and the
client's own commands still working beside it."""

from __future__ import annotations

import json
import time

import numpy as np
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edgewise.edge.offload.cascade import Offload, ser_result
from edgewise.edge.offload.config import resolve_offload
from edgewise.edge.offload.mqtt_route import OffloadTelemetryClient
from edgewise.edge.telemetry.config import TelemetryConfig
from tests.edge.offload.conftest import TOKEN
from tests.edge.offload.fake_cloud import CloudBehaviour, MqttResponder
from tests.edge.offload.test_http_cascade import AUDIO, ser_device
from tests.edge.telemetry.conftest import BASE, client_config

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def device(broker, tmp_path):
    """The device's OffloadTelemetryClient, connected, answering ``status`` commands."""
    config = TelemetryConfig.load(client_config(broker, tmp_path / "outbox.db"))
    client = OffloadTelemetryClient(config, command_handler=lambda command: {"pong": command.id})
    client.start()
    assert client.wait_connected(10)
    deadline = time.monotonic() + 5
    while not client.ready():
        assert time.monotonic() < deadline, "the reply topic was never subscribed"
        time.sleep(0.01)
    yield client
    client.close(flush_timeout=2)


@pytest.fixture
def responder(broker):
    r = MqttResponder(broker, CloudBehaviour(token=TOKEN))
    yield r
    r.close()


def mqtt_offload(client, token_file, **overrides) -> Offload:
    section = {"route": "mqtt", "token_file": str(token_file), "timeout_s": 0.5, "retries": 1,
               "backoff": {"base_s": 0.05, "max_s": 0.2}, "ser": {"model": "ser-teacher"}, **overrides}  # fmt: skip
    return Offload.from_config(resolve_offload(None, section, "test"), mqtt_client=client)


def test_a_request_goes_out_and_the_reply_comes_back_by_correlation_id(device, responder, token_file):
    offload = mqtt_offload(device, token_file)
    result = ser_result(offload, AUDIO, ser_device(0.4))
    assert result["source"] == "cloud" and result["label"] == "happy"
    info = result["offload"]
    assert info["route"] == "mqtt" and info["attempts"] == 1 and info["timings"]["cloud_ms"] > 0
    (request,) = responder.behaviour.requests
    assert request["path"] == "/v1/audio/classifications" and request["authorization"] == f"Bearer {TOKEN}"
    assert request["body"]["model"] == "ser-teacher"
    print(f"\nmqtt round trip: {info['timings']['cloud_ms']:.1f} ms")


def test_no_reply_times_out_and_falls_back_within_the_bound(device, responder, token_file):
    responder.behaviour.mode = "hang"
    offload = mqtt_offload(device, token_file)
    t0 = time.perf_counter()
    result = ser_result(offload, AUDIO, ser_device(0.4))
    elapsed = time.perf_counter() - t0
    assert result["source"] == "device-fallback" and result["offload"]["code"] == "timeout"
    assert result["offload"]["attempts"] == 2 and responder.behaviour.hits() == 2
    assert 2 * 0.5 <= elapsed <= offload.config.max_wait_s + 0.5
    print(
        f"\nmqtt timeout: fallback after {elapsed * 1000:.0f} ms (bound {offload.config.max_wait_s * 1000:.0f} ms)"
    )


def test_an_error_status_from_the_bridge_is_the_reason(device, responder, tmp_path):
    wrong = tmp_path / "wrong.token"
    wrong.write_text("nope\n")
    result = ser_result(mqtt_offload(device, wrong), AUDIO, ser_device(0.4))
    assert result["source"] == "device-fallback" and result["offload"]["code"] == "unauthorized"
    assert (
        "status 401" in result["offload"]["reason"] and "invalid bearer token" in result["offload"]["reason"]
    )


def test_a_device_without_a_connection_falls_back_at_once(broker, tmp_path, token_file):
    config = TelemetryConfig.load(client_config(broker, tmp_path / "outbox.db"))
    client = OffloadTelemetryClient(config)  # never started: not connected
    try:
        offload = mqtt_offload(client, token_file)
        t0 = time.perf_counter()
        result = ser_result(offload, AUDIO, ser_device(0.4))
        assert time.perf_counter() - t0 < 0.5
        assert result["source"] == "device-fallback" and result["offload"]["code"] == "not_connected"
    finally:
        client.close(flush_timeout=0)


def test_commands_still_work_and_stray_replies_are_dropped(device, responder, broker, subscribe, token_file):
    sub = subscribe(broker, [f"{BASE}/cmd/ack"])
    other = mqtt.Client(CallbackAPIVersion.VERSION2)
    other.connect(broker.host, broker.port)
    other.loop_start()
    stray = {"schema": 1, "type": "offload_reply", "id": "nobody-waits", "status": 200, "body": {}}
    other.publish(f"{BASE}/offload/reply", json.dumps(stray), qos=1).wait_for_publish(5)
    other.publish(f"{BASE}/offload/reply", b"not json", qos=1).wait_for_publish(5)
    other.publish(f"{BASE}/cmd", json.dumps({"id": "c1", "action": "status"}), qos=1).wait_for_publish(5)
    other.disconnect()
    other.loop_stop()
    (ack,) = sub.wait_count("command_ack", 1)
    assert ack.ok and ack.result == {"pong": "c1"}
    deadline = time.monotonic() + 5
    while device.stray_replies < 1:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    # and the route still works after them
    assert (
        ser_result(mqtt_offload(device, token_file), np.zeros(16000, np.float32), ser_device(0.4))["source"]
        == "cloud"
    )
