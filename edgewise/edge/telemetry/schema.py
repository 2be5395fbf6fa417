"""Telemetry payloads: versioned JSON, one pydantic model per message type.

Every payload is a UTF-8 JSON object whose first two fields are ``"schema": 1`` and ``"type"``.
Times (``ts``) are Unix epoch seconds (UTC) as floats. Unknown fields are refused when this module
decodes a payload; a change that old readers cannot ignore bumps ``schema``. Numbers must be finite
(no NaN or infinity), and the free-form dicts (``result``, ``detail``, ``args``) hold plain JSON
only, nested at most ``MAX_DEPTH`` (64) levels: :func:`decode` counts the nesting of the raw text
before it parses anything, so no payload can exhaust the parser's stack. Topics are described in :mod:`edgewise.edge.telemetry.topics`; the topic names the device,
so payloads do not repeat it.

``status`` (topic ``.../status``, QoS 1, retained)
--------------------------------------------------
====================  =============================================================================
field                 content
====================  =============================================================================
``state``             ``"online"`` or ``"offline"``
``reason``            why offline: ``"shutdown"`` (clean close) or ``"connection lost"`` (the last
                      will, sent by the broker); ``null`` when online
``model``             ``{"name", "version"}`` of the deployed model, or ``null``
``uptime_s``          seconds since the telemetry client was created (last will: as of connecting)
``edgewise_version``  the device's edgewise version
``ts``                when the status was made (for the last will: when the client connected)
====================  =============================================================================

``telemetry`` (topic ``.../telemetry``, QoS 0 or 1 by config)
-------------------------------------------------------------
One report per interval; ``ts`` is the end of the window and ``interval_s`` its length.

====================  =============================================================================
``interval_s``        length of the window in seconds
``inferences``        inferences completed in the window
``inference_errors``  inferences that failed in the window
``label_counts``      label -> count in the window (``{}`` when the task has no labels)
``latency_ms``        ``{"p50", "p90", "p99"}`` inference latency in ms, ``null`` when no inferences
``cpu_percent``       process CPU use over the window (100 = one core), ``null`` if unknown
``rss_mb``            resident memory of the process in MB (10^6 bytes), ``null`` if unknown
``temperature_c``     SoC temperature in degrees C where readable, else ``null``
``outbox_depth``      messages waiting in the outbox (filled in by the client)
``dropped``           kind -> messages the full outbox dropped since the previous telemetry report,
                      e.g. ``{"telemetry": 3}`` (filled in by the client; ``{}`` when none)
``thread_restarts``   worker thread -> times it failed and was restarted since the process started,
                      e.g. ``{"telemetry-commands": 1}`` (filled in by the client; ``{}`` when none)
``offload``           the cloud offload in the window (:mod:`edgewise.edge.offload`), ``null`` when
                      the device has none configured: ``{"asked"`` (requests sent to the cloud or
                      stopped by the open breaker), ``"cloud"`` (answered by the cloud),
                      ``"fallbacks"`` (answered by the device after the cloud failed),
                      ``"failed"`` (cloud-only requests, such as ``describe``, left unanswered),
                      ``"reasons"`` (failure code -> count, e.g. ``{"timeout": 2}``),
                      ``"breaker"`` (``"closed"``, ``"open"`` or ``"half-open"`` at the report),
                      ``"breaker_opened"`` (times it opened in the window), ``"cloud_ms"``
                      (``{"p50", "p90", "p99"}`` of the cloud leg of answered requests, or
                      ``null``)``}``
====================  =============================================================================

``event`` (topic ``.../events``, QoS 1)
---------------------------------------
One inference result. SER fills ``label`` and ``probabilities``; other pipelines (TTS,
recommender) put their output in ``result``.

====================  =============================================================================
``id``                unique id (32 hex digits by default)
``ts``                when the result was produced
``task``              the pipeline's task, e.g. ``"ser"``
``model``             ``{"name", "version"}`` or ``null``
``label``             top label or ``null``
``probabilities``     label -> probability (``{}`` when not a classifier)
``latency_ms``        inference latency in ms, or ``null``
``source``            where the input came from, or ``null``: ``{"kind"`` (``"mic"``, ``"file"``,
                      ``"stream"``...), ``"name"`` (device or path), ``"start_s"``, ``"end_s"``
                      (segment within the source), ``"sample_rate"``, ``"speaker"`` (an ``infer``
                      command's speaker, for SER speaker adaptation)``}``; all but ``kind`` nullable
``result``            free-form JSON object for task-specific output
====================  =============================================================================

``error`` (topic ``.../events``, QoS 1)
---------------------------------------
====================  =============================================================================
``id``, ``ts``        as for ``event``
``code``              what failed: a slug such as ``"inference"``, ``"audio"``, ``"deploy"``
``message``           human-readable message
``model``             ``{"name", "version"}`` or ``null``
``detail``            free-form JSON object
====================  =============================================================================

``command`` (topic ``.../cmd``, to the device, QoS 1)
-----------------------------------------------------
``schema`` and ``type`` may be omitted (they default to ``1`` and ``"command"``); commands sent
while the device is offline are not queued by the broker.

====================  =============================================================================
``id``                the sender's id for the command (1-128 characters), echoed in the ack
``action``            ``"deploy"``, ``"rollback"``, ``"reload"``, ``"status"``, ``"describe"``
                      (an image or video, answered by the cloud: :mod:`edgewise.edge.offload`),
                      ``"adaptation"`` (SER speaker statistics: ``{}`` shows them,
                      ``{"reset": "NAME"}`` or ``{"reset": "all"}`` forgets),
                      or a model family's command: ``"infer"`` (ser), ``"tts"``, ``"recommend"`` (rec)
``args``              JSON object of action arguments (``{}`` by default)
``ts``                when it was sent, or ``null``
====================  =============================================================================

``command_ack`` (topic ``.../cmd/ack``, QoS 1)
----------------------------------------------
====================  =============================================================================
``id``                the command's id; ``null`` only when the command was not JSON with an id
``action``            the command's action, or ``null`` when unreadable
``ok``                ``true`` if the handler returned, ``false`` if the command was invalid or the
                      handler raised
``result``            the handler's return value (any JSON) when ``ok``, else ``null``
``error``             ``null`` when ``ok``, else the reason (``"ValueError: ..."``)
``ts``                when the ack was made
====================  =============================================================================

Example::

    {"schema":1,"type":"event","id":"5f0c...","ts":1767225600.25,"task":"ser",
     "model":{"name":"ser-tiny","version":"1.0.0"},"label":"happy",
     "probabilities":{"neutral":0.1,"happy":0.8,"sad":0.05,"angry":0.05},"latency_ms":4.2,
     "source":{"kind":"mic","name":"default","start_s":12.0,"end_s":15.0,"sample_rate":16000},
     "result":{}}
"""

from __future__ import annotations

import time
import uuid
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, ValidationError, field_validator, model_validator

import edgewise
from edgewise import safejson
from edgewise.bundle import plain_json
from edgewise.config import StrictModel, format_validation_error
from edgewise.errors import EdgewiseError
from edgewise.tasks import TASKS

SCHEMA_VERSION = 1
# the daemon's own actions, then each model family's command (the task registry's daemon_command)
ACTIONS = ("deploy", "rollback", "reload", "status", "describe", "adaptation") + tuple(
    dict.fromkeys(spec.daemon_command for spec in TASKS.values() if spec.daemon_command)
)
MAX_DEPTH = safejson.MAX_DEPTH  # arrays and objects inside one another, the payload counting as 1
MAX_PROBLEMS = 10  # validation problems listed in one error message
_MAX_NODES = 1_000_000  # values in one free-form field built from Python objects

NonNegative = Annotated[float, Field(ge=0)]
Count = Annotated[int, Field(ge=0)]


class PayloadError(EdgewiseError):
    """A payload is not valid JSON, has an unsupported schema or type, or fails validation."""


def _now() -> float:
    return time.time()


def _new_id() -> str:
    return uuid.uuid4().hex


def load_json(data: bytes | bytearray | str, **kwargs: Any) -> Any:
    """:func:`edgewise.safejson.load_json` raising :class:`PayloadError` (size and nesting are
    checked on the raw bytes before the parser runs)."""
    kwargs.setdefault("max_depth", MAX_DEPTH)
    return safejson.load_json(data, error=PayloadError, **kwargs)


def _bounded_json(value: Any, where: str) -> Any:
    """:func:`plain_json` for values built in Python, after an iterative check that they are not
    nested deeper than MAX_DEPTH (or circular), which plain_json's recursion could not survive."""
    stack, nodes = [(value, 1)], 0
    while stack:
        item, depth = stack.pop()
        nodes += 1
        if nodes > _MAX_NODES:
            raise ValueError(f"{where} holds more than {_MAX_NODES} values")
        if isinstance(item, (dict, list, tuple)):
            if depth > MAX_DEPTH:
                raise ValueError(f"{where} is nested deeper than {MAX_DEPTH} levels (or is circular)")
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
    return plain_json(value, where)


# --------------------------------------------------------------------------------------------------
# Payloads


class Payload(StrictModel):
    """Base of every payload: ``schema`` first, finite numbers only, unknown fields refused."""

    model_config = ConfigDict(populate_by_name=True, allow_inf_nan=False)

    schema_version: Literal[1] = Field(SCHEMA_VERSION, alias="schema")

    def to_json(self) -> bytes:
        return encode(self)


class ModelRef(StrictModel):
    name: str = Field(min_length=1)
    version: str = Field(min_length=1)


class Percentiles(StrictModel):
    model_config = ConfigDict(allow_inf_nan=False)

    p50: NonNegative
    p90: NonNegative
    p99: NonNegative


class Source(StrictModel):
    model_config = ConfigDict(allow_inf_nan=False)

    kind: str = Field(min_length=1)
    name: str | None = None
    start_s: NonNegative | None = None
    end_s: NonNegative | None = None
    sample_rate: Annotated[int, Field(gt=0)] | None = None
    speaker: str | None = Field(None, min_length=1, max_length=64)  # who spoke, when the command named them


class Status(Payload):
    type: Literal["status"] = "status"
    state: Literal["online", "offline"]
    reason: str | None = None
    model: ModelRef | None = None
    uptime_s: NonNegative = 0.0
    edgewise_version: str = edgewise.__version__
    ts: float = Field(default_factory=_now)


class OffloadReport(StrictModel):
    model_config = ConfigDict(allow_inf_nan=False)

    asked: Count = 0
    cloud: Count = 0
    fallbacks: Count = 0
    failed: Count = 0
    reasons: dict[str, Count] = Field(default_factory=dict)
    breaker: Literal["closed", "open", "half-open"] = "closed"
    breaker_opened: Count = 0
    cloud_ms: Percentiles | None = None


class Telemetry(Payload):
    type: Literal["telemetry"] = "telemetry"
    ts: float = Field(default_factory=_now)
    interval_s: NonNegative = 0.0
    inferences: Count = 0
    inference_errors: Count = 0
    label_counts: dict[str, Count] = Field(default_factory=dict)
    latency_ms: Percentiles | None = None
    cpu_percent: NonNegative | None = None
    rss_mb: NonNegative | None = None
    temperature_c: float | None = None
    outbox_depth: Count = 0
    dropped: dict[str, Count] = Field(default_factory=dict)
    thread_restarts: dict[str, Count] = Field(default_factory=dict)
    offload: OffloadReport | None = None


class Event(Payload):
    type: Literal["event"] = "event"
    id: str = Field(default_factory=_new_id, min_length=1, max_length=128)
    ts: float = Field(default_factory=_now)
    task: str = Field("ser", min_length=1)
    model: ModelRef | None = None
    label: str | None = None
    probabilities: dict[str, float] = Field(default_factory=dict)
    latency_ms: NonNegative | None = None
    source: Source | None = None
    result: dict[str, Any] = Field(default_factory=dict)

    @field_validator("probabilities", mode="before")
    @classmethod
    def _plain_probabilities(cls, value: Any) -> Any:
        return _bounded_json(value, "probabilities") if isinstance(value, dict) else value

    @field_validator("result")
    @classmethod
    def _json(cls, value: dict[str, Any]) -> dict[str, Any]:
        return _bounded_json(value, "result")


class ErrorEvent(Payload):
    type: Literal["error"] = "error"
    id: str = Field(default_factory=_new_id, min_length=1, max_length=128)
    ts: float = Field(default_factory=_now)
    code: str = Field("error", min_length=1)
    message: str = Field(min_length=1)
    model: ModelRef | None = None
    detail: dict[str, Any] = Field(default_factory=dict)

    @field_validator("detail")
    @classmethod
    def _json(cls, value: dict[str, Any]) -> dict[str, Any]:
        return _bounded_json(value, "detail")


class Command(Payload):
    type: Literal["command"] = "command"
    id: str = Field(min_length=1, max_length=128)
    action: Literal[ACTIONS]  # type: ignore[valid-type]
    args: dict[str, Any] = Field(default_factory=dict)
    ts: float | None = None

    @field_validator("args")
    @classmethod
    def _json(cls, value: dict[str, Any]) -> dict[str, Any]:
        return _bounded_json(value, "args")


class CommandAck(Payload):
    type: Literal["command_ack"] = "command_ack"
    id: str | None
    action: str | None = None
    ok: bool
    result: Any = None
    error: str | None = None
    ts: float = Field(default_factory=_now)

    @field_validator("result")
    @classmethod
    def _json(cls, value: Any) -> Any:
        return _bounded_json(value, "result")

    @model_validator(mode="after")
    def _ok_xor_error(self) -> CommandAck:
        if self.ok and self.error is not None:
            raise ValueError("an ok ack has no error")
        if not self.ok and not self.error:
            raise ValueError("an ack with ok=false needs an error message")
        if not self.ok and self.result is not None:
            raise ValueError("an ack with ok=false has no result")
        return self


PAYLOAD_TYPES: dict[str, type[Payload]] = {
    "status": Status,
    "telemetry": Telemetry,
    "event": Event,
    "error": ErrorEvent,
    "command": Command,
    "command_ack": CommandAck,
}


def encode(payload: Payload) -> bytes:
    """Compact UTF-8 JSON with ``schema`` and ``type`` first."""
    return payload.model_dump_json(by_alias=True).encode("utf-8")


def decode(
    data: bytes | str | dict[str, Any],
    *,
    expect: type[Payload] | None = None,
    source: str = "payload",
    max_bytes: int | None = None,
    max_depth: int = MAX_DEPTH,
) -> Payload:
    """Parse and validate a payload; ``expect`` restricts the type (a missing ``schema``/``type``
    then defaults to it, so ``mosquitto_pub -m '{"id":"1","action":"status"}'`` is a command).
    Text is read with :func:`load_json` (``max_bytes``, ``max_depth``).

    Raises :class:`PayloadError` naming the field for anything invalid.
    """
    if isinstance(data, (bytes, bytearray, str)):
        obj = load_json(data, source=source, max_bytes=max_bytes, max_depth=max_depth)
    else:
        obj = data
    if not isinstance(obj, dict):
        raise PayloadError(f"{source}: expected a JSON object, got {type(obj).__name__}")
    schema = obj.get("schema", SCHEMA_VERSION if expect is not None else None)
    if schema != SCHEMA_VERSION:
        raise PayloadError(f"{source}: field 'schema': version {schema!r} is not supported (expected 1)")
    kind = obj.get("type")
    if kind is None and expect is not None:
        cls = expect
    elif not isinstance(kind, str) or kind not in PAYLOAD_TYPES:  # a list or object is no type either
        raise PayloadError(
            f"{source}: field 'type': unknown payload type {kind!r}; expected one of {', '.join(PAYLOAD_TYPES)}"
        )
    else:
        cls = PAYLOAD_TYPES[kind]
        if expect is not None and cls is not expect:
            raise PayloadError(
                f"{source}: field 'type': expected {expect.model_fields['type'].default!r}, got {kind!r}"
            )
    try:
        return cls.model_validate(obj)
    except ValidationError as exc:
        raise PayloadError(_problems(exc, source)) from None


def _problems(exc: ValidationError, source: str) -> str:
    """The validation problems, one a line, at most MAX_PROBLEMS of them."""
    lines = format_validation_error(exc, source).splitlines()
    if len(lines) > MAX_PROBLEMS:
        lines = [*lines[:MAX_PROBLEMS], f"{source}: ... and {len(lines) - MAX_PROBLEMS} more problem(s)"]
    return "\n".join(lines)
