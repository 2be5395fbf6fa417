"""What goes over the wire: the cloud's endpoints, the bodies the device sends, the checks on the
replies, and the MQTT route's envelopes. The standard library and pydantic only: the cloud's MQTT
bridge (edgewise/cloud/serve/mqtt_bridge.py) may import this module for the envelopes.

HTTP (the contract of issue 15, served by ``edgewise cloud serve``):

=================================  ==================================================================
endpoint                           body the device sends
=================================  ==================================================================
``POST /v1/audio/classifications``  ``{"model", "pcm16_b64", "sample_rate": 16000}``
``POST /v1/recommendations``        ``{"model", "history", "k", "beam"?}``
``POST /v1/chat/completions``       ``{"model", "messages", "max_tokens"}`` (image/video parts)
=================================  ==================================================================

with ``Authorization: Bearer <token>`` when a token file is configured. A reply that is not the
JSON the endpoint promises is a ``malformed`` failure (the device's answer is used).

MQTT (``offload.route: mqtt``, for a device with no direct route to the cloud). The request goes
out on ``edgewise/<fleet>/<device>/offload`` at QoS 1::

    {"schema": 1, "type": "offload_request", "id": "<correlation id, 32 hex>", "ts": 1767225600.1,
     "method": "POST", "path": "/v1/recommendations", "body": {...},
     "reply_to": "edgewise/<fleet>/<device>/offload/reply", "timeout_s": 2.0,
     "authorization": "Bearer <token>"}            # only when a token file is configured

and the bridge answers on ``reply_to`` (``edgewise/<fleet>/<device>/offload/reply``) at QoS 1::

    {"schema": 1, "type": "offload_reply", "id": "<the request's id>", "status": 200, "body": {...}}

``status`` and ``body`` are what the HTTP endpoint would have answered (an error's body is the
OpenAI error object ``{"error": {"message", "type", "code"}}``). A reply whose id no request is
waiting for (late, duplicated) is dropped.
"""

from __future__ import annotations

import base64
import math
import time
import uuid
from typing import Any, Literal

import numpy as np
from pydantic import ConfigDict, Field, ValidationError

from edgewise.config import StrictModel, format_validation_error
from edgewise.errors import EdgewiseError

SER_PATH = "/v1/audio/classifications"
REC_PATH = "/v1/recommendations"
CHAT_PATH = "/v1/chat/completions"
SAMPLE_RATE = 16000


class OffloadFailure(EdgewiseError):
    """The cloud gave no usable answer. ``code`` is a slug telemetry counts by (``timeout``,
    ``unreachable``, ``connection``, ``tls``, ``unauthorized``, ``forbidden``, ``model_not_found``,
    ``bad_request``, ``too_large``, ``busy``, ``server_error``, ``redirect``, ``malformed``,
    ``breaker_open``, ``not_connected``); the message says what happened, where."""

    # codes after which another attempt may succeed
    RETRYABLE = frozenset({"timeout", "unreachable", "connection", "busy", "server_error", "not_connected"})
    # codes that say the cloud is up (the request was refused): they close the breaker, not open it
    ALIVE = frozenset({"bad_request", "too_large", "model_not_found"})

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code, self.detail = code, message

    @property
    def retryable(self) -> bool:
        return self.code in self.RETRYABLE


def code_for_status(status: int) -> str:
    return {
        400: "bad_request",
        401: "unauthorized",
        403: "forbidden",
        404: "model_not_found",
        413: "too_large",
        422: "bad_request",
        429: "busy",
        503: "busy",
    }.get(status, "server_error" if status >= 500 else "redirect" if 300 <= status < 400 else "bad_request")


def error_message(body: Any) -> str | None:
    """The message of an OpenAI-shaped error body, if it is one."""
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        message = body["error"].get("message")
        return str(message)[:500] if message is not None else None
    return None


# --------------------------------------------------------------------------------------------------
# requests


def ser_request(model: str, audio: np.ndarray) -> dict[str, Any]:
    """The utterance as 16 kHz PCM16 (what the device classified)."""
    pcm = (np.clip(np.asarray(audio, dtype=np.float32), -1.0, 1.0) * 32767).astype("<i2")
    return {
        "model": model,
        "pcm16_b64": base64.b64encode(pcm.tobytes()).decode("ascii"),
        "sample_rate": SAMPLE_RATE,
    }


def rec_request(model: str, history: list[str], k: int, beam: int | None) -> dict[str, Any]:
    body: dict[str, Any] = {"model": model, "history": history, "k": k}
    if beam is not None:
        body["beam"] = beam
    return body


def chat_request(model: str, messages: list[dict[str, Any]], max_tokens: int) -> dict[str, Any]:
    return {"model": model, "messages": messages, "max_tokens": max_tokens}


# --------------------------------------------------------------------------------------------------
# replies: each check returns the parts the device uses, or raises OffloadFailure("malformed")


def _malformed(where: str, what: str) -> OffloadFailure:
    return OffloadFailure("malformed", f"{where}: {what}")


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def check_ser_reply(body: Any, where: str) -> dict[str, Any]:
    """``{"label", "probabilities": {label: score}, "model", "timings"}`` from a classification."""
    if not isinstance(body, dict):
        raise _malformed(where, f"expected a JSON object, got {type(body).__name__}")
    label, labels, scores = body.get("label"), body.get("labels"), body.get("scores")
    if not isinstance(labels, list) or not labels or not all(isinstance(x, str) for x in labels):
        raise _malformed(where, "'labels' must be a non-empty list of strings")
    if not isinstance(scores, list) or len(scores) != len(labels) or not all(_finite(s) for s in scores):
        raise _malformed(where, f"'scores' must be {len(labels)} finite numbers, one per label")
    if not isinstance(label, str) or label not in labels:
        raise _malformed(where, f"'label' must be one of 'labels', got {label!r}")
    return {
        "label": label,
        "probabilities": {k: round(float(s), 6) for k, s in zip(labels, scores)},
        "model": body.get("model") if isinstance(body.get("model"), str) else None,
        "timings": _timings(body),
    }


def check_rec_reply(body: Any, where: str) -> dict[str, Any]:
    """``{"items", "titles", "scores", "model", "timings"}`` from a recommendation."""
    if not isinstance(body, dict):
        raise _malformed(where, f"expected a JSON object, got {type(body).__name__}")
    items = body.get("items")
    if not isinstance(items, list) or not all(
        isinstance(x, (str, int)) and not isinstance(x, bool) for x in items
    ):
        raise _malformed(where, "'items' must be a list of item ids")
    titles = body.get("titles")
    if titles is None:
        titles = [""] * len(items)
    if (
        not isinstance(titles, list)
        or len(titles) != len(items)
        or not all(isinstance(t, str) for t in titles)
    ):
        raise _malformed(where, f"'titles' must be {len(items)} strings, one per item")
    scores = body.get("scores")
    if scores is not None and (
        not isinstance(scores, list) or len(scores) != len(items) or not all(_finite(s) for s in scores)
    ):
        raise _malformed(where, f"'scores' must be null or {len(items)} finite numbers, one per item")
    return {
        "items": [str(x) for x in items],
        "titles": titles,
        "scores": None if scores is None else [round(float(s), 6) for s in scores],
        "model": body.get("model") if isinstance(body.get("model"), str) else None,
        "timings": _timings(body),
    }


def check_chat_reply(body: Any, where: str) -> dict[str, Any]:
    """``{"text", "model", "finish_reason", "usage"}`` from a chat completion (the first choice)."""
    try:
        choice = body["choices"][0]
        text = choice["message"]["content"]
    except (KeyError, IndexError, TypeError):
        raise _malformed(where, "expected an OpenAI chat completion (choices[0].message.content)") from None
    if not isinstance(text, str):
        raise _malformed(where, f"choices[0].message.content must be a string, got {type(text).__name__}")
    usage = body.get("usage") if isinstance(body.get("usage"), dict) else None
    return {
        "text": text,
        "model": body.get("model") if isinstance(body.get("model"), str) else None,
        "finish_reason": choice.get("finish_reason") if isinstance(choice, dict) else None,
        "usage": {k: v for k, v in usage.items() if _finite(v)} if usage else None,
    }


def _timings(body: dict[str, Any]) -> dict[str, float] | None:
    timings = body.get("timings")
    if not isinstance(timings, dict):
        return None
    return {str(k): round(float(v), 3) for k, v in timings.items() if _finite(v)} or None


# --------------------------------------------------------------------------------------------------
# the MQTT route's envelopes


class _Envelope(StrictModel):
    model_config = ConfigDict(populate_by_name=True, allow_inf_nan=False, extra="forbid")

    schema_version: Literal[1] = Field(1, alias="schema")
    id: str = Field(default_factory=lambda: uuid.uuid4().hex, min_length=1, max_length=128)
    ts: float = Field(default_factory=time.time)

    def to_json(self) -> bytes:
        return self.model_dump_json(by_alias=True, exclude_none=True).encode("utf-8")


class OffloadRequest(_Envelope):
    type: Literal["offload_request"] = "offload_request"
    method: Literal["POST"] = "POST"
    path: str = Field(pattern=r"^/v1/[a-z/]+$")
    body: dict[str, Any]
    reply_to: str = Field(min_length=1)
    timeout_s: float = Field(gt=0)
    authorization: str | None = None


class OffloadReply(_Envelope):
    type: Literal["offload_reply"] = "offload_reply"
    status: int = Field(ge=100, le=599)
    body: Any = None


def parse_envelope(raw: bytes, cls: type[_Envelope], *, max_bytes: int) -> _Envelope:
    """A request or reply from MQTT bytes; OffloadFailure("malformed") naming the problem."""
    from edgewise import safejson

    where = cls.model_fields["type"].default
    try:
        obj = safejson.load_json(raw, source=where, max_bytes=max_bytes, error=_EnvelopeError)
    except _EnvelopeError as exc:
        raise OffloadFailure("malformed", str(exc)) from None
    try:
        return cls.model_validate(obj)
    except ValidationError as exc:
        raise OffloadFailure("malformed", format_validation_error(exc, where).replace("\n", "; ")) from None


class _EnvelopeError(EdgewiseError):
    pass
