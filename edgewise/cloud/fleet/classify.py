"""One MQTT message in, one decision out: store it, ignore it, or reject it with a reason.

Nothing here touches the store or the network, so every rule is a plain function call to test.
The checks run cheapest first, and the payload is parsed only when the topic, the device and the
size have passed:

==================  ===============================================================================
reason              when
==================  ===============================================================================
``bad_topic``       not ``edgewise/<fleet>/<device>/<kind>`` with a kind that devices publish
``unknown_device``  an allowlist is configured (:mod:`.allowlist`) and the device is not on it
``oversized``       the payload is over ``max_bytes`` (checked before it is parsed)
``malformed``       not a valid payload (:func:`edgewise.edge.telemetry.schema.decode`: not UTF-8
                    JSON, nested too deeply, unknown type or schema, a field out of range), or it
                    holds something the store cannot keep (a NUL character, an integer over 2^63-1)
``wrong_type``      a valid payload on the wrong topic (an ``event`` on ``.../status``)
==================  ===============================================================================

Replays are not decided here: the store recognises them by the payload's key (:func:`payload_key`)
and counts them as duplicates. Messages on the topics that go *to* devices or to the offload
bridge (``.../cmd``, ``.../offload`` and below) are ``ignore``: the subscription ``edgewise/+/+/#``
sees them, but they are not telemetry.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Any, Literal

from edgewise.edge.telemetry.schema import (
    CommandAck,
    ErrorEvent,
    Event,
    Payload,
    PayloadError,
    Status,
    Telemetry,
    decode,
)
from edgewise.edge.telemetry.topics import ROOT, id_problem

DEFAULT_MAX_BYTES = 256 * 1024
REASONS = ("bad_topic", "unknown_device", "oversized", "malformed", "wrong_type", "unstorable")
STORED_KINDS = ("status", "telemetry", "events", "cmd/ack")
# the payload types each stored topic kind carries
TYPES_BY_KIND: dict[str, tuple[type[Payload], ...]] = {
    "status": (Status,),
    "telemetry": (Telemetry,),
    "events": (Event, ErrorEvent),
    "cmd/ack": (CommandAck,),
}
IGNORED_KINDS = ("cmd", "offload")  # and anything below offload/ (offload/reply)
MAX_INT64 = 2**63 - 1
# What could make a valid payload unstorable, as it looks in JSON text: the escape of NUL, of a
# surrogate, or 19 digits in a row. Payloads without any of these (nearly all) skip the full walk.
_MAYBE_UNSTORABLE = re.compile(rb"\\u0000|\\u[dD][89abcdefABCDEF]|[0-9]{19}")
DETAIL_CHARS = 2000  # of a rejection's reason text kept in the store


@dataclass
class Message:
    """What arrived from the broker (``mid`` and ``generation`` are the worker's, for the ack)."""

    topic: str
    payload: bytes
    qos: int = 1
    retained: bool = False
    received_at: float = field(default_factory=time.time)
    mid: int = 0
    generation: int = 0
    copy: bool = False  # a second copy of a live message (the status snapshot's): ack, never store


@dataclass
class Decision:
    action: Literal["store", "ignore", "reject"]
    message: Message
    kind: str  # the topic's kind ("status", "cmd/ack", "offload/reply"...), "?" when unreadable
    fleet: str | None = None
    device: str | None = None
    payload: Payload | None = None
    reason: str | None = None
    detail: str | None = None

    @property
    def key(self) -> str:
        """The payload's dedupe key (see :func:`payload_key`); only for ``store`` decisions."""
        assert self.payload is not None
        return payload_key(self.payload)


def payload_key(payload: Payload) -> str:
    """What makes a payload unique for one device, so that a replay is recognised:

    * ``event`` / ``error``: its ``id``;
    * ``command_ack``: the command's ``id`` (a device acks a command once), or ``@ts`` without one;
    * ``telemetry``: its ``ts`` (the end of its window);
    * ``status``: ``state@ts`` (the last will keeps the ``ts`` of its connection, so an ``online``
      and the ``offline`` will of one connection can share a ``ts``).
    """
    if isinstance(payload, (Event, ErrorEvent)):
        return payload.id
    if isinstance(payload, CommandAck):
        return payload.id if payload.id is not None else f"@{payload.ts!r}"
    if isinstance(payload, Telemetry):
        return repr(payload.ts)
    if isinstance(payload, Status):
        return f"{payload.state}@{payload.ts!r}"
    raise TypeError(f"no key for {type(payload).__name__}")


def split_topic(topic: str) -> tuple[str, str, str] | None:
    """``(fleet, device, kind)`` for ``edgewise/F/D/KIND...`` with valid ids, else None."""
    parts = topic.split("/")
    if len(parts) < 4 or parts[0] != ROOT or id_problem(parts[1]) or id_problem(parts[2]):
        return None
    return parts[1], parts[2], "/".join(parts[3:])


def classify(
    message: Message,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    known: Any = None,
) -> Decision:
    """Decide what to do with ``message``. ``known``: an object with ``knows(fleet, device)`` (an
    :class:`~.allowlist.Allowlist`), or None to accept every device."""
    parts = split_topic(message.topic)
    if parts is None:
        return _reject(
            message, "?", None, None, "bad_topic", f"not an edgewise device topic: {message.topic!r}"
        )
    fleet, device, kind = parts
    if kind in IGNORED_KINDS or kind.startswith("offload/"):
        return Decision("ignore", message, kind, fleet, device)
    if kind not in STORED_KINDS:
        return _reject(
            message, kind, fleet, device, "bad_topic", f"topic kind {kind!r} is not one devices publish"
        )
    if known is not None and not known.knows(fleet, device):
        return _reject(
            message, kind, fleet, device, "unknown_device", f"device {fleet}/{device} is not on the allowlist"
        )
    size = len(message.payload)
    if size > max_bytes:
        return _reject(
            message, kind, fleet, device, "oversized", f"{size} bytes is over the limit of {max_bytes} bytes"
        )
    try:
        payload = decode(message.payload, source=message.topic)
    except PayloadError as exc:
        return _reject(message, kind, fleet, device, "malformed", str(exc))
    allowed = TYPES_BY_KIND[kind]
    if not isinstance(payload, allowed):
        names = " or ".join(repr(t.model_fields["type"].default) for t in allowed)
        return _reject(
            message,
            kind,
            fleet,
            device,
            "wrong_type",
            f"{message.topic}: a {payload.type!r} payload on a {kind!r} topic (expected {names})",
        )
    problem = unstorable(payload) if _MAYBE_UNSTORABLE.search(message.payload) else None
    if problem:
        return _reject(message, kind, fleet, device, "malformed", f"{message.topic}: {problem}")
    return Decision("store", message, kind, fleet, device, payload=payload)


def unstorable(payload: Payload) -> str | None:
    """Why a valid payload cannot be kept the same way by every store, or None: text with a NUL
    character (PostgreSQL's text type cannot hold one) or an integer beyond 64 bits."""
    stack: list[tuple[str, Any]] = [("", payload.model_dump(by_alias=True))]
    while stack:
        where, value = stack.pop()
        if isinstance(value, str):
            problem = _text_problem(value)
            if problem:
                return f"field '{where}' {problem}"
        elif isinstance(value, bool):
            continue
        elif isinstance(value, int):
            if abs(value) > MAX_INT64:
                return f"field '{where}': integer {value} is beyond 64 bits"
        elif isinstance(value, dict):
            for k, v in value.items():
                problem = _text_problem(k) if isinstance(k, str) else None
                if problem:
                    return f"field '{where}' has a key that {problem}"
                stack.append((f"{where}.{k}" if where else str(k), v))
        elif isinstance(value, (list, tuple)):
            stack.extend((f"{where}[{i}]", v) for i, v in enumerate(value))
    return None


def _text_problem(text: str) -> str | None:
    if "\x00" in text:
        return "holds a NUL character (U+0000), which the store cannot keep"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # JSON's "\ud800": a lone surrogate, no character at all
        return "holds a lone surrogate (an escape like \\ud800), which is not text the store can keep"
    return None


def _reject(
    message: Message, kind: str, fleet: str | None, device: str | None, reason: str, detail: str
) -> Decision:
    return Decision("reject", message, kind, fleet, device, reason=reason, detail=detail[:DETAIL_CHARS])
