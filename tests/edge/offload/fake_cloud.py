"""A small stand-in for the cloud's app (edgewise cloud serve is another module's): a real HTTPS
server (stdlib http.server, TLS from edgewise.devtools.tls) in a thread, and a real MQTT responder,
both answering the contract's endpoints with fixed answers, and misbehaving on request.

``CloudBehaviour`` is shared and mutable: tests switch ``mode`` while the server runs:

- ``ok``: the answers below;
- ``hang``: accept the request and answer nothing for ``hang_s`` (the client must time out);
- ``status``: answer ``status`` with an OpenAI error body (503, 401, ...);
- ``malformed``: a 200 whose JSON lacks what the endpoint promises;
- ``garbage``: a 200 that is not JSON.

A wrong or missing bearer token is a 401 in any mode (when a token is set). Every request is
recorded (path, headers, body), so tests can count what reached the cloud.
"""

from __future__ import annotations

import json
import ssl
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

LABELS = ["angry", "happy", "neutral", "sad"]
SER_REPLY = {
    "model": "ser-teacher",
    "label": "happy",
    "confidence": 0.91,
    "labels": LABELS,
    "scores": [0.03, 0.91, 0.04, 0.02],
    "timings": {"total_ms": 12.5},
}
CHAT_TEXT = "A red square on a white background."


def rec_reply(body: dict[str, Any]) -> dict[str, Any]:
    k = int(body.get("k") or 10)
    items = [f"cloud-{i}" for i in range(k)]
    return {
        "model": body.get("model"),
        "items": items,
        "titles": [f"Cloud item {i}" for i in range(k)],
        "scores": [-0.1 * (i + 1) for i in range(k)],
        "unknown": [],
        "timings": {"total_ms": 30.0},
    }


def chat_reply(body: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "model": body.get("model"),
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": CHAT_TEXT}, "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": 20, "completion_tokens": 8, "total_tokens": 28},
    }


def error_body(status: int) -> dict[str, Any]:
    messages = {401: "invalid bearer token", 404: "model not served", 503: "backend not ready"}
    return {"error": {"message": messages.get(status, f"status {status}"), "type": "error", "code": status}}


@dataclass
class CloudBehaviour:
    token: str | None = None
    mode: str = "ok"
    status: int = 503
    hang_s: float = 30.0
    requests: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def hits(self, path: str | None = None) -> int:
        with self.lock:
            return sum(1 for r in self.requests if path is None or r["path"] == path)

    def answer(self, path: str, authorization: str | None, body: Any) -> tuple[int, bytes]:
        """(status, body bytes) for one request, after ``hang`` (the caller sleeps)."""
        with self.lock:
            self.requests.append(
                {"path": path, "authorization": authorization, "body": body, "ts": time.time()}
            )
            mode = self.mode
        if self.token is not None and authorization != f"Bearer {self.token}":
            return 401, json.dumps(error_body(401)).encode()
        if mode == "hang":
            time.sleep(self.hang_s)
            return 503, json.dumps(error_body(503)).encode()
        if mode == "status":
            return self.status, json.dumps(error_body(self.status)).encode()
        if mode == "garbage":
            return 200, b"<html>not json</html>"
        if mode == "malformed":
            return 200, json.dumps({"model": "x", "label": 7, "items": "nope"}).encode()
        if path == "/v1/audio/classifications":
            reply = SER_REPLY
        elif path == "/v1/recommendations":
            reply = rec_reply(body)
        elif path == "/v1/chat/completions":
            reply = chat_reply(body)
        else:
            return 404, json.dumps(error_body(404)).encode()
        return 200, json.dumps(reply).encode()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    behaviour: CloudBehaviour

    def do_POST(self) -> None:  # noqa: N802
        length = int(self.headers.get("Content-Length", "0"))
        raw = self.rfile.read(length)
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        if self.path == "/redirect":
            self.send_response(307)
            self.send_header("Location", "https://127.0.0.1:1/elsewhere")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        status, payload = self.server.behaviour.answer(self.path, self.headers.get("Authorization"), body)
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
        except OSError:
            pass  # the client gave up (a timeout test)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass


class FakeCloud:
    """The HTTPS (or, with ``cert=None``, plain http) server on 127.0.0.1, in a thread."""

    def __init__(self, behaviour: CloudBehaviour, cert: tuple[Path, Path] | None, port: int = 0) -> None:
        self.behaviour = behaviour
        self.cert = cert
        self.server = ThreadingHTTPServer(("127.0.0.1", port), _Handler)
        self.server.daemon_threads = True
        self.server.behaviour = behaviour
        if cert is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(str(cert[0]), str(cert[1]))
            self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    @property
    def url(self) -> str:
        return f"{'https' if self.cert else 'http'}://127.0.0.1:{self.port}"

    def stop(self) -> None:
        """Stop listening: the port refuses connections from here on."""
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


class MqttResponder:
    """The cloud's side of the MQTT route, for tests: answers ``edgewise/+/+/offload`` requests on
    their ``reply_to`` with :meth:`CloudBehaviour.answer` (``mode: hang`` answers nothing)."""

    def __init__(self, broker: Any, behaviour: CloudBehaviour) -> None:
        self.behaviour = behaviour
        self._subscribed = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="fake-cloud-bridge")
        self.client.on_connect = lambda c, *a: c.subscribe("edgewise/+/+/offload", qos=1)
        self.client.on_subscribe = lambda *a: self._subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect(broker.host, broker.port, keepalive=5)
        self.client.loop_start()
        assert self._subscribed.wait(5), "the responder got no SUBACK"

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        request = json.loads(message.payload)
        if self.behaviour.mode == "hang":
            with self.behaviour.lock:
                self.behaviour.requests.append({"path": request["path"], "body": request["body"]})
            return

        def reply() -> None:  # not on paho's network thread
            status, body = self.behaviour.answer(
                request["path"], request.get("authorization"), request["body"]
            )
            payload = {"schema": 1, "type": "offload_reply", "id": request["id"], "status": status,
                       "body": json.loads(body) if body.startswith(b"{") else body.decode()}  # fmt: skip
            client.publish(request["reply_to"], json.dumps(payload), qos=1)

        threading.Thread(target=reply, daemon=True).start()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
