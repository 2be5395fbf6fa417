"""Property-based fuzzing of the parsers that read what arrives over MQTT: whatever the bytes, the
command path gives an ack and the payload decoder a payload or a PayloadError, never another
exception. A small sample runs here; ``benchmarks/fuzz_parsers.py`` runs 10^5 cases per parser."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, example, given, settings
from pydantic import ValidationError

from edgewise.edge.telemetry.commands import CommandRunner, parse_command
from edgewise.edge.telemetry.schema import CommandAck, Event, PayloadError, Telemetry, decode, encode
from tests.edge.telemetry.strategies import (
    command_bytes,
    event_fields,
    nested,
    payload_bytes,
    telemetry_fields,
)

SAMPLE = settings(max_examples=60, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
DEEP_COMMAND = b'{"id":"deep","action":"status","args":' + b"[" * 4000 + b"]" * 4000 + b"}"


@SAMPLE
@given(command_bytes)
@example(DEEP_COMMAND)
@example(b'{"id":"t","action":"status","type":{}}')
@example(nested(5000).encode())
def test_any_bytes_on_cmd_give_exactly_one_ack(raw):
    ran = []
    ack = CommandRunner(source="cmd", max_bytes=1 << 16).run(raw, lambda c: ran.append(c.id) or {"id": c.id})
    assert isinstance(ack, CommandAck)
    assert ack.ok == bool(ran)  # ok exactly when the handler ran
    assert ack.ok or ack.error
    assert decode(encode(ack)) == ack  # the ack itself is always a valid payload


@SAMPLE
@given(command_bytes)
def test_the_command_parser_raises_only_payload_errors(raw):
    try:
        command = parse_command(raw)
    except PayloadError as exc:
        assert str(exc)
        return
    assert command.id and json.loads(encode(command))["action"] == command.action


@SAMPLE
@given(payload_bytes)
@example(b'{"schema":1,"type":[]}')
@example(b'{"schema":1,"type":"telemetry","interval_s":' + b"1" * 5000 + b"}")
def test_any_payload_bytes_decode_to_a_payload_or_a_payload_error(raw):
    try:
        payload = decode(raw)
    except PayloadError as exc:
        assert str(exc)
        return
    assert decode(encode(payload)) == payload  # what decodes also encodes and reads back the same


@SAMPLE
@given(telemetry_fields | event_fields)
def test_builders_refuse_bad_fields_by_name_and_build_only_valid_json(fields):
    for cls in (Telemetry, Event):
        try:
            payload = cls.model_validate(fields)
        except ValidationError as exc:
            assert exc.errors()
            continue
        assert decode(encode(payload)) == payload


def test_builders_refuse_circular_and_too_deep_values_without_recursing():
    loop: dict = {}
    loop["self"] = loop
    with pytest.raises(ValidationError, match="nested deeper than 64 levels"):
        Event(result=loop)
    with pytest.raises(ValidationError, match="nested deeper than 64 levels"):
        Event(result={"x": json.loads(nested(100))})
    assert Event(result={"x": json.loads(nested(60))}).result  # deep but within the limit
