"""The MQTT route to the cloud, through the daemon's own broker connection.

A fleet's broker pins each device to one connection (``use_username_as_clientid``, see
:mod:`edgewise.edge.deploy.broker_acl`): a second connection with the device's login would knock
the first offline. So the route rides on the daemon's telemetry client: :class:`OffloadTelemetryClient`
is a :class:`~edgewise.edge.telemetry.client.TelemetryClient` that also subscribes to
``edgewise/<fleet>/<device>/offload/reply`` on every connect and hands the replies to the waiting
requests; :class:`MqttRoute` publishes a request (:class:`~edgewise.edge.offload.wire.OffloadRequest`)
on ``.../offload`` at QoS 1 and waits for the reply with its id. Requests skip the outbox: an
answer that comes after the timeout is of no use, so a request is never stored to be sent later,
and a device that is not connected fails at once (``not_connected``).

The broker's ACL must let the device read ``edgewise/<fleet>/<device>/offload/reply`` and the
cloud's bridge write ``edgewise/<fleet>/+/offload/reply``.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from edgewise.edge.offload.wire import (
    OffloadFailure,
    OffloadReply,
    OffloadRequest,
    code_for_status,
    error_message,
    parse_envelope,
)
from edgewise.edge.telemetry.client import TelemetryClient

log = logging.getLogger(__name__)

OFFLOAD_QOS = 1


def offload_topics(base: str) -> tuple[str, str]:
    """(request topic, reply topic) of the device whose topics start with ``base``."""
    return f"{base}/offload", f"{base}/offload/reply"


class _Waiter:
    __slots__ = ("done", "reply")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.reply: OffloadReply | OffloadFailure | None = None


class OffloadTelemetryClient(TelemetryClient):
    """The telemetry client, plus the offload reply topic (subscribed on every connect)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.offload_topic, self.offload_reply_topic = offload_topics(self.topics.base)
        self._waiters: dict[str, _Waiter] = {}
        self._waiters_lock = threading.Lock()
        self._reply_sub_mid: int | None = None
        self._reply_subscribed = threading.Event()
        self.stray_replies = 0  # replies no request waited for (late or duplicated)

    # paho callbacks (on paho's network thread: never raise, never block)

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:  # noqa: ANN001
        super()._on_connect(client, userdata, flags, reason_code, properties)
        try:
            if not reason_code.is_failure:
                self._reply_subscribed.clear()
                self._reply_sub_mid = client.subscribe(self.offload_reply_topic, qos=OFFLOAD_QOS)[1]
        except Exception:  # pragma: no cover - defensive
            log.exception("offload: could not subscribe to %s", self.offload_reply_topic)

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:  # noqa: ANN001
        if mid == self._reply_sub_mid:
            if any(rc.is_failure for rc in reason_codes):
                log.error(
                    "offload: the broker refused the subscription to %s (%s): the mqtt route cannot get "
                    "replies; the broker's ACL must let this device read it",
                    self.offload_reply_topic,
                    reason_codes,
                )
            else:
                self._reply_subscribed.set()
            return
        super()._on_subscribe(client, userdata, mid, reason_codes, properties)

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:  # noqa: ANN001
        self._reply_subscribed.clear()
        super()._on_disconnect(client, userdata, flags, reason_code, properties)

    def _on_message(self, client, userdata, message) -> None:  # noqa: ANN001
        if message.topic != self.offload_reply_topic:
            super()._on_message(client, userdata, message)
            return
        try:
            self._deliver(bytes(message.payload))
        except Exception:  # pragma: no cover - defensive
            log.exception("offload: error handling a reply")

    def _deliver(self, raw: bytes) -> None:
        try:
            reply = parse_envelope(raw, OffloadReply, max_bytes=self.config.max_command_bytes)
        except OffloadFailure as exc:
            log.warning("offload: a malformed reply on %s: %s", self.offload_reply_topic, exc)
            return
        with self._waiters_lock:
            waiter = self._waiters.pop(reply.id, None)
        if waiter is None:
            self.stray_replies += 1
            log.info("offload: a reply for %s, which no request waits for (late or repeated)", reply.id)
            return
        waiter.reply = reply
        waiter.done.set()

    # the route's side

    def ready(self) -> bool:
        return self._connected.is_set() and self._reply_subscribed.is_set()

    def offload_send(self, request: OffloadRequest) -> _Waiter:
        """Register a waiter for ``request.id`` and publish the request; OffloadFailure when the
        device is not connected (nothing is queued)."""
        if not self.ready():
            raise OffloadFailure(
                "not_connected",
                f"mqtt: not connected to the broker {self.config.host}:{self.config.port}"
                if not self._connected.is_set()
                else f"mqtt: not subscribed to {self.offload_reply_topic} (yet)",
            )
        waiter = _Waiter()
        with self._waiters_lock:
            self._waiters[request.id] = waiter
        mqtt_client = self._mqtt
        info = (
            mqtt_client.publish(self.offload_topic, request.to_json(), qos=OFFLOAD_QOS)
            if mqtt_client
            else None
        )
        if info is None or info.rc != 0:
            self.offload_forget(request.id)
            raise OffloadFailure(
                "not_connected", f"mqtt: the request could not be published ({getattr(info, 'rc', None)})"
            )
        return waiter

    def offload_forget(self, request_id: str) -> None:
        with self._waiters_lock:
            self._waiters.pop(request_id, None)


class MqttRoute:
    name = "mqtt"

    def __init__(self, client: OffloadTelemetryClient, *, token: str | None = None) -> None:
        self.client = client
        self.token = token

    def describe(self) -> str:
        return f"mqtt {self.client.offload_topic}"

    def post(self, path: str, body: dict[str, Any], timeout_s: float) -> Any:
        """One attempt over MQTT: publish, wait for the reply with the request's id; the parsed
        body of a 2xx reply, else OffloadFailure."""
        request = OffloadRequest(
            path=path,
            body=body,
            reply_to=self.client.offload_reply_topic,
            timeout_s=timeout_s,
            authorization=f"Bearer {self.token}" if self.token else None,
        )
        waiter = self.client.offload_send(request)
        try:
            if not waiter.done.wait(timeout_s):
                raise OffloadFailure("timeout", f"{self.describe()}: no reply within {timeout_s:g} s")
        finally:
            self.client.offload_forget(request.id)
        reply = waiter.reply
        assert isinstance(reply, OffloadReply)
        if not 200 <= reply.status < 300:
            message = error_message(reply.body) or "no message"
            raise OffloadFailure(
                code_for_status(reply.status), f"{self.describe()}{path}: status {reply.status}: {message}"
            )
        return reply.body
