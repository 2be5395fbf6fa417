"""Payloads: versioned JSON with schema and type first, strict validation, documented fields."""

import json

import numpy as np
import pytest

from edgewise.edge.telemetry import schema
from edgewise.edge.telemetry.schema import (
    PAYLOAD_TYPES,
    Command,
    CommandAck,
    ErrorEvent,
    Event,
    PayloadError,
    Source,
    Status,
    Telemetry,
    decode,
    encode,
)

EXAMPLES = [
    Status(state="online", model={"name": "ser-tiny", "version": "1.0.0"}, uptime_s=12.5),
    Telemetry(interval_s=60, inferences=10, latency_ms={"p50": 3, "p90": 5, "p99": 9}, temperature_c=None),
    Event(
        label="happy",
        probabilities={"happy": np.float32(0.75), "sad": 0.25},
        latency_ms=4.2,
        source=Source(kind="mic", name="default", start_s=3.0, end_s=6.0, sample_rate=16000),
        result={"frames": np.arange(3)},
    ),
    ErrorEvent(code="audio", message="microphone disappeared", detail={"device": "hw:1"}),
    Command(id="c-1", action="deploy", args={"bundle": "https://example.invalid/b.tar.gz"}),
    CommandAck(id="c-1", action="deploy", ok=True, result={"version": "1.1.0"}),
]


@pytest.mark.parametrize("payload", EXAMPLES, ids=lambda p: p.type)
def test_round_trip_with_schema_and_type_first(payload):
    data = encode(payload)
    obj = json.loads(data)
    assert list(obj)[:2] == ["schema", "type"] and obj["schema"] == 1
    assert decode(data) == payload


def test_numpy_values_become_plain_json():
    event = EXAMPLES[2]
    obj = json.loads(encode(event))
    assert obj["probabilities"] == {"happy": 0.75, "sad": 0.25} and obj["result"] == {"frames": [0, 1, 2]}


@pytest.mark.parametrize(
    "data, message",
    [
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "expected a JSON object"),
        (b'{"schema": 2, "type": "event"}', "field 'schema': version 2 is not supported"),
        (b'{"schema": 1, "type": "weather"}', "field 'type': unknown payload type 'weather'"),
        (b'{"schema": 1, "type": "event", "colour": "red"}', "unknown field 'colour'"),
        (b'{"schema": 1, "type": "status", "state": "asleep"}', "field 'state'"),
        (b'{"schema": 1, "type": "telemetry", "cpu_percent": -1}', "field 'cpu_percent'"),
    ],
)
def test_invalid_payloads_name_the_problem(data, message):
    with pytest.raises(PayloadError, match=message):
        decode(data)


def test_commands_may_omit_schema_and_type_but_not_their_fields():
    cmd = decode(b'{"id": "7", "action": "status"}', expect=Command)
    assert isinstance(cmd, Command) and cmd.args == {}
    with pytest.raises(PayloadError, match="field 'action'"):
        decode(b'{"id": "7", "action": "explode"}', expect=Command)
    with pytest.raises(PayloadError, match="field 'id' is required"):
        decode(b'{"action": "status"}', expect=Command)
    with pytest.raises(PayloadError, match="expected 'command', got 'event'"):
        decode(encode(Event()), expect=Command)


def test_nan_and_non_json_values_are_refused():
    with pytest.raises(ValueError, match="finite"):
        Telemetry(cpu_percent=float("nan"))
    with pytest.raises(ValueError, match="not a JSON value"):
        Event(result={"when": object()})


def test_ack_ok_and_error_are_exclusive():
    with pytest.raises(ValueError, match="needs an error message"):
        CommandAck(id="1", ok=False)
    with pytest.raises(ValueError, match="ok ack has no error"):
        CommandAck(id="1", ok=True, error="x")


def test_module_docstring_documents_every_field():
    doc = schema.__doc__
    for type_name, cls in PAYLOAD_TYPES.items():
        assert f"``{type_name}``" in doc, type_name
        for name, field in cls.model_fields.items():
            shown = field.alias or name
            if shown not in ("schema", "type"):
                assert f"``{shown}``" in doc, f"{type_name}.{shown} is not documented"
