"""The offload bridge: devices with no direct route to the cloud ask over MQTT.

A device publishes an :class:`~edgewise.edge.offload.wire.OffloadRequest` (path, body, bearer
token, correlation id) on ``edgewise/<fleet>/<device>/offload`` at QoS 1; the bridge answers on
``edgewise/<fleet>/<device>/offload/reply`` at QoS 1 with an
:class:`~edgewise.edge.offload.wire.OffloadReply` carrying the request's id and what the HTTP
endpoint would have answered (status and body), because it calls the same
:meth:`Service.handle <edgewise.cloud.serve.service.Service.handle>` the HTTP app calls: same
token check, limits, errors and counters (``transport="mqtt"`` in ``/metrics``).

Bridges subscribe with the MQTT 5 shared subscription ``$share/<group>/edgewise/<fleet>/+/offload``,
so the broker hands each request to one bridge of the group: run several to split the load.
Requests are answered by a pool of ``workers`` threads, so a slow model does not stall the
network loop. What is refused without a reply (counted by reason): an envelope that is not an
offload request (``malformed``) and one whose deadline (``ts + timeout_s``, with
:data:`CLOCK_SKEW_S` of slack) has passed (``expired``: the device has stopped waiting). A
``reply_to`` other than the request topic's ``/reply`` is answered with a 400 on the right topic
(the bridge never publishes where a request tells it to). A speech reply's audio is base64 in
``body.audio_b64`` with ``body.content_type``.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from edgewise.cloud.serve.config import MqttConfig, mqtt_password, mqtt_tls
from edgewise.cloud.serve.service import ApiError, Service
from edgewise.edge.telemetry.login import apply_login, send_immediately
from edgewise.errors import EdgewiseError

log = logging.getLogger(__name__)

ROOT = "edgewise"
QOS = 1
CLOCK_SKEW_S = 30.0


class BridgeError(EdgewiseError):
    """The bridge could not connect or subscribe (the message says to what and why)."""


def request_filter(config: MqttConfig) -> str:
    return f"$share/{config.group}/{ROOT}/{config.fleet}/+/offload"


def reply_topic(request_topic: str) -> str:
    return f"{request_topic}/reply"


class MqttBridge:
    """One bridge process's connection: :meth:`start`, then requests are answered until :meth:`stop`."""

    def __init__(self, service: Service, config: MqttConfig) -> None:
        self.service = service
        self.config = config
        self.answered = 0  # replies published by this bridge (tests and logs)
        self._client: Any = None
        self._pool: ThreadPoolExecutor | None = None
        self._subscribed = threading.Event()
        self._failure: str | None = None
        self._lock = threading.Lock()

    # -- connection -------------------------------------------------------------------------------

    def start(self, timeout: float = 15.0) -> MqttBridge:

        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

        cfg = self.config
        client_id = cfg.client_id or f"edgewise-offload-bridge-{uuid.uuid4().hex[:12]}"
        client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=MQTTProtocolVersion.MQTTv5,
            reconnect_on_failure=True,
        )
        client.suppress_exceptions = True
        apply_login(client, username=cfg.username, password=mqtt_password(cfg), tls=mqtt_tls(cfg))
        send_immediately(client)
        client.on_connect = self._on_connect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        client.reconnect_delay_set(1, 30)
        self._pool = ThreadPoolExecutor(max_workers=cfg.workers, thread_name_prefix="offload-bridge")
        self._client = client
        try:
            client.connect(cfg.host, cfg.port, keepalive=cfg.keepalive_s)
        except (OSError, ValueError) as exc:
            self.stop()
            raise BridgeError(
                f"offload bridge: cannot connect to the broker {cfg.host}:{cfg.port} ({exc})"
            ) from None
        client.loop_start()
        if not self._subscribed.wait(timeout):
            why = self._failure or f"no subscription within {timeout:g} s"
            self.stop()
            raise BridgeError(f"offload bridge: {cfg.host}:{cfg.port}: {why}")
        log.info(
            "offload bridge: answering %s on %s:%d as %s", request_filter(cfg), cfg.host, cfg.port, client_id
        )
        return self

    def stop(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.disconnect()
            client.loop_stop()
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=False)
            self._pool = None

    def send_command(self, fleet: str, device: str, payload: bytes, timeout: float = 10.0) -> None:
        """Publish a device command on ``edgewise/<fleet>/<device>/cmd`` (QoS 1) over this
        connection (a fleet's broker allows one connection per login) and wait for the broker's
        PUBACK; BridgeError when it is not connected or the broker does not take it."""
        from edgewise.edge.telemetry.topics import Topics

        client = self._client
        if client is None or not client.is_connected():
            raise BridgeError(f"not connected to the broker {self.config.host}:{self.config.port}")
        topic = Topics(fleet, device).cmd
        info = client.publish(topic, payload, qos=QOS)
        try:
            info.wait_for_publish(timeout)
        except (RuntimeError, ValueError) as exc:
            raise BridgeError(f"{topic}: the command was not published ({exc})") from None
        if not info.is_published():
            raise BridgeError(f"{topic}: the broker did not acknowledge the command within {timeout:g} s")

    def __enter__(self) -> MqttBridge:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- paho callbacks (on paho's thread: they must not raise or block) --------------------------

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:  # noqa: ANN001
        if reason_code.is_failure:
            self._failure = f"the broker refused the connection ({reason_code})"
            log.warning("offload bridge: %s", self._failure)
            return
        client.subscribe(request_filter(self.config), qos=QOS)  # again after every reconnect

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:  # noqa: ANN001
        refused = [rc for rc in reason_codes if rc.is_failure]
        if refused:
            self._failure = (
                f"the broker refused the subscription to {request_filter(self.config)} ({refused[0]})"
            )
            log.warning("offload bridge: %s", self._failure)
            return
        self._subscribed.set()

    def _on_message(self, client, userdata, message) -> None:  # noqa: ANN001
        pool = self._pool
        if pool is None:
            return
        with contextlib.suppress(RuntimeError):  # shutting down
            pool.submit(self._answer, message.topic, bytes(message.payload))

    # -- one request ------------------------------------------------------------------------------

    def _answer(self, topic: str, payload: bytes) -> None:
        try:
            self._answer_one(topic, payload)
        except Exception:  # never lose the worker thread
            log.exception("offload bridge: %s: internal error", topic)
            self.service.metrics.reject("internal_error", "mqtt")

    def _answer_one(self, topic: str, payload: bytes) -> None:
        from edgewise.edge.offload.wire import OffloadFailure, OffloadReply, OffloadRequest, parse_envelope

        metrics = self.service.metrics
        try:
            request = parse_envelope(payload, OffloadRequest, max_bytes=self.config.max_payload_bytes)
        except OffloadFailure as exc:
            metrics.reject("malformed", "mqtt")
            log.info("offload bridge: %s: dropped: %s", topic, exc.detail)
            return
        if request.ts + request.timeout_s + CLOCK_SKEW_S < time.time():
            metrics.reject("expired", "mqtt")
            log.info("offload bridge: %s: request %s dropped: its deadline has passed", topic, request.id)
            return
        answer_on = reply_topic(topic)
        if request.reply_to != answer_on:
            reply = ApiError(400, "bad_reply_to", f"reply_to must be {answer_on!r}, got {request.reply_to!r}",
                             "reply_to").reply()  # fmt: skip
            metrics.observe(request.path, 400, 0.0, "bad_reply_to", "mqtt")
        else:
            raw = json.dumps(request.body, separators=(",", ":")).encode("utf-8")
            reply = self.service.handle(request.path, raw, request.authorization, transport="mqtt")
        body = reply.body
        if isinstance(body, bytes):
            body = {"audio_b64": base64.b64encode(body).decode("ascii"), "content_type": reply.media_type,
                    "timings": reply.timings}  # fmt: skip
        out = OffloadReply(id=request.id, status=reply.status, body=body)
        client = self._client
        if client is None:
            return
        client.publish(answer_on, out.to_json(), qos=QOS)
        with self._lock:
            self.answered += 1


def run_bridge(service: Service, config: MqttConfig, stop: threading.Event) -> None:
    """Answer until ``stop`` is set (the command's ``--bridge-only``)."""
    with MqttBridge(service, config):
        stop.wait()
