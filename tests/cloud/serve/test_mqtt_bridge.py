"""The offload bridge on a real Mosquitto: devices publish requests on .../offload, two bridges in
one shared-subscription group split them, each reply comes back once on .../offload/reply with the
request's id and what the HTTP endpoint would have said (same token check, errors and counters)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from edgewise.cloud.serve.auth import hash_token
from edgewise.cloud.serve.config import load_serve_config
from edgewise.cloud.serve.mqtt_bridge import MqttBridge
from edgewise.cloud.serve.service import Service
from edgewise.devtools.mosquitto import free_port
from tests.cloud.serve.conftest import REPO, ServerProcess, edit_config, pcm16_b64, serve_init
from tests.conftest import missing_tool

TOKEN = "device-token-for-the-bridge"


@pytest.fixture(scope="module")
def broker():
    from edgewise.devtools.mosquitto import MosquittoBroker
    from edgewise.errors import MissingDependencyError

    try:
        broker = MosquittoBroker()
    except MissingDependencyError as exc:
        missing_tool(str(exc))
    with broker:
        yield broker


@pytest.fixture(scope="module")
def service(ser_bundle, rec_bundle, tmp_path_factory):
    folder = tmp_path_factory.mktemp("bridge")
    (folder / "tokens.sha256").write_text(hash_token(TOKEN) + "\n")
    data = {
        "tls": "none",
        "models": [{"id": "ser-tiny", "task": "ser", "bundle": str(ser_bundle)},
                   {"id": "rec-tiny", "task": "rec", "bundle": str(rec_bundle)}],
    }  # fmt: skip
    svc = Service(load_serve_config(data, base=folder)).load()
    yield svc
    svc.close()


@pytest.fixture(scope="module")
def bridges(service, broker):
    from edgewise.cloud.serve.config import MqttConfig

    config = MqttConfig(host=broker.host, port=broker.port, workers=2, fleet="fleet1")
    pair = [MqttBridge(service, config).start(), MqttBridge(service, config).start()]
    yield pair
    for bridge in pair:
        bridge.stop()


class Device:
    """A device's side of the route: publish requests, collect replies by id."""

    def __init__(self, broker, fleet: str = "fleet1", device: str = "dev1") -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

        self.topic = f"edgewise/{fleet}/{device}/offload"
        self.replies: dict[str, list[dict]] = {}
        self.lock = threading.Lock()
        subscribed = threading.Event()
        self.client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id=f"{device}-{uuid.uuid4().hex[:6]}",
                                  protocol=MQTTProtocolVersion.MQTTv5)  # fmt: skip
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *a: subscribed.set()
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        self.client.subscribe(self.topic + "/reply", qos=1)
        assert subscribed.wait(10)

    def _on_message(self, client, userdata, message) -> None:
        reply = json.loads(message.payload)
        with self.lock:
            self.replies.setdefault(reply["id"], []).append(reply)

    def ask(self, path: str, body: dict, *, token: str | None = TOKEN, **fields) -> str:
        from edgewise.edge.offload.wire import OffloadRequest

        request = OffloadRequest(path=path, body=body, reply_to=self.topic + "/reply", timeout_s=5.0,
                                 authorization=f"Bearer {token}" if token else None, **fields)  # fmt: skip
        self.client.publish(self.topic, request.to_json(), qos=1).wait_for_publish(5)
        return request.id

    def wait(self, ids: list[str], timeout: float = 30) -> dict[str, list[dict]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if all(i in self.replies for i in ids):
                    break
            time.sleep(0.05)
        time.sleep(0.3)  # a duplicate would arrive now
        with self.lock:
            return {i: list(self.replies.get(i, [])) for i in ids}

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def device(broker):
    dev = Device(broker)
    yield dev
    dev.close()


def test_two_bridges_split_the_requests_and_answer_each_once(bridges, device, service, rec_bundle):
    items = json.loads((rec_bundle / "rec" / "items.json").read_text())["ids"]
    before = [b.answered for b in bridges]
    ids = [
        device.ask("/v1/recommendations", {"model": "rec-tiny", "history": items[i : i + 3], "k": 3})
        for i in range(24)
    ]
    replies = device.wait(ids)
    for i, request_id in enumerate(ids):
        assert len(replies[request_id]) == 1, f"request {i}: {len(replies[request_id])} replies"
        reply = replies[request_id][0]
        assert reply["type"] == "offload_reply" and reply["status"] == 200, reply
        assert len(reply["body"]["items"]) == 3 and "total_ms" in reply["body"]["timings"]
    # the same answer as the service gives directly (the HTTP app's path)
    direct = service.handle(
        "/v1/recommendations",
        json.dumps({"model": "rec-tiny", "history": items[0:3], "k": 3}).encode(),
        f"Bearer {TOKEN}",
    )
    assert replies[ids[0]][0]["body"]["items"] == direct.body["items"]
    shares = [b.answered - n for b, n in zip(bridges, before)]
    assert sum(shares) == 24 and min(shares) > 0, shares  # the shared subscription split them


def test_classification_over_mqtt(bridges, device, edge_corpus):
    wav = sorted(Path(edge_corpus).glob("wavs/test*.wav"))[0]
    request_id = device.ask(
        "/v1/audio/classifications", {"model": "ser-tiny", "pcm16_b64": pcm16_b64(wav), "sample_rate": 16000}
    )
    reply = device.wait([request_id])[request_id][0]
    assert reply["status"] == 200 and reply["body"]["label"] in reply["body"]["labels"]


def test_refusals_come_back_with_the_http_status(bridges, device, service):
    asked = {
        "no token": device.ask("/v1/recommendations", {"model": "rec-tiny", "history": ["i1"]}, token=None),
        "wrong token": device.ask(
            "/v1/recommendations", {"model": "rec-tiny", "history": ["i1"]}, token="nope"
        ),
        "unknown model": device.ask("/v1/recommendations", {"model": "onerec-8b", "history": ["i1"]}),
        "bad field": device.ask("/v1/recommendations", {"model": "rec-tiny", "history": ["i1"], "k": "3"}),
        "chat": device.ask(
            "/v1/chat/completions", {"model": "keye-vl-8b", "messages": [{"role": "user", "content": "hi"}]}
        ),
    }
    replies = device.wait(list(asked.values()))
    status = {what: replies[i][0]["status"] for what, i in asked.items()}
    assert status == {
        "no token": 401,
        "wrong token": 401,
        "unknown model": 404,
        "bad field": 400,
        "chat": 404,
    }
    assert replies[asked["unknown model"]][0]["body"]["error"]["code"] == "model_not_found"
    assert replies[asked["bad field"]][0]["body"]["error"]["param"] == "k"
    text = service.metrics.render()
    assert (
        'reason="invalid_api_key",transport="mqtt"' in text
        and 'reason="model_not_found",transport="mqtt"' in text
    )


def test_malformed_and_expired_requests_are_dropped_and_counted(bridges, device, service):
    from edgewise.edge.offload.wire import OffloadRequest

    malformed = service.metrics.rejected_count("malformed")
    expired = service.metrics.rejected_count("expired")
    for payload in (
        b"not json",
        b"[" * 10_000,
        json.dumps({"schema": 1, "type": "offload_request", "id": "x"}).encode(),
    ):
        device.client.publish(device.topic, payload, qos=1).wait_for_publish(5)
    late = OffloadRequest(path="/v1/recommendations", body={"model": "rec-tiny", "history": ["i1"]},
                          reply_to=device.topic + "/reply", timeout_s=1.0, ts=time.time() - 3600,
                          authorization=f"Bearer {TOKEN}")  # fmt: skip
    device.client.publish(device.topic, late.to_json(), qos=1).wait_for_publish(5)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and (
        service.metrics.rejected_count("malformed") < malformed + 3
        or service.metrics.rejected_count("expired") < expired + 1
    ):
        time.sleep(0.05)
    assert service.metrics.rejected_count("malformed") == malformed + 3
    assert service.metrics.rejected_count("expired") == expired + 1
    assert device.wait([late.id], timeout=1)[late.id] == [] and not device.replies.get("x")  # no reply
    # the bridges still answer
    ok = device.ask("/v1/recommendations", {"model": "rec-tiny", "history": ["i1"]})
    assert device.wait([ok])[ok][0]["status"] == 200


def test_reply_to_elsewhere_is_refused_on_the_devices_own_topic(bridges, device):
    from edgewise.edge.offload.wire import OffloadRequest

    request = OffloadRequest(path="/v1/recommendations", body={"model": "rec-tiny", "history": ["i1"]},
                             reply_to="edgewise/fleet1/other-device/offload/reply", timeout_s=5.0,
                             authorization=f"Bearer {TOKEN}")  # fmt: skip
    device.client.publish(device.topic, request.to_json(), qos=1).wait_for_publish(5)
    reply = device.wait([request.id])[request.id][0]
    assert reply["status"] == 400 and reply["body"]["error"]["param"] == "reply_to"


def _config_with_mqtt(folder, ser_bundle, rec_bundle, broker, fleet: str) -> Path:
    """A server answering ``fleet`` only (the module's two bridges answer fleet1)."""
    config = serve_init(
        folder, f"bundle:ser-tiny={ser_bundle}", f"bundle:rec-tiny={rec_bundle}", port=free_port()
    )
    mqtt = {
        "host": broker.host,
        "port": broker.port,
        "workers": 1,
        "fleet": fleet,
        "group": f"offload-{fleet}",
    }
    return edit_config(config, mqtt=mqtt)


def _wait_for_line(proc: subprocess.Popen, prefix: str, timeout: float = 120) -> str:
    """The first line of ``proc``'s output that starts with ``prefix`` (an error with all it printed);
    a thread reads the pipe, so nothing here blocks past ``timeout``."""
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True).start()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [line for line in list(lines) if line.startswith(prefix)]
        if found:
            return found[0]
        if proc.poll() is not None:
            time.sleep(0.2)
            break
        time.sleep(0.05)
    raise AssertionError(f"no line starting with {prefix!r}:\n{''.join(lines)}")


def test_the_served_app_answers_over_mqtt_too(serve_deps, broker, ser_bundle, rec_bundle, tmp_path):
    """``serve`` with an mqtt section: one process, one set of models, both transports counted."""
    config = _config_with_mqtt(tmp_path / "cloud", ser_bundle, rec_bundle, broker, "fleet2")
    token = (tmp_path / "cloud" / "client" / "token").read_text().strip()
    device = Device(broker, fleet="fleet2", device="dev-http-and-mqtt")
    body = {"model": "rec-tiny", "history": ["i1"]}
    try:
        with ServerProcess(config, tmp_path / "server.log") as server:
            request_id = device.ask("/v1/recommendations", body, token=token)
            assert device.wait([request_id])[request_id][0]["status"] == 200
            assert server.request("POST", "/v1/recommendations", body)[0] == 200
            metrics = server.request("GET", "/metrics")[1].decode()
            for transport in ("http", "mqtt"):
                assert f'endpoint="/v1/recommendations",status="200",transport="{transport}"}} 1' in metrics
            assert server.stop() == 0  # SIGTERM: a graceful stop (bridge and models closed too)
    finally:
        device.close()


def test_bridge_only_processes_answer_and_stop_cleanly(broker, ser_bundle, rec_bundle, tmp_path):
    config = _config_with_mqtt(tmp_path / "cloud", ser_bundle, rec_bundle, broker, "fleet3")
    token = (tmp_path / "cloud" / "client" / "token").read_text().strip()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    command = [
        sys.executable,
        "-m",
        "edgewise",
        "cloud",
        "serve",
        "--config",
        str(config),
        "--bridge-only",
    ]
    proc = subprocess.Popen(
        command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    device = Device(broker, fleet="fleet3", device="dev-bridge-only")
    try:
        assert "ser-tiny, rec-tiny" in _wait_for_line(proc, "edgewise: offload bridge for")
        request_id = device.ask("/v1/recommendations", {"model": "rec-tiny", "history": ["i1"]}, token=token)
        assert device.wait([request_id])[request_id][0]["status"] == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        device.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
