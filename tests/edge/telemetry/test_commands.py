"""Command bytes in, one ack out: hostile payloads are refused by name and never stop the worker."""

from __future__ import annotations

import json
import time

import pytest

from edgewise.edge.supervisor import Supervisor
from edgewise.edge.telemetry.client import COMMANDS, TelemetryClient
from edgewise.edge.telemetry.commands import MAX_COMMAND_DEPTH, CommandRunner, parse_command, peek_command
from edgewise.edge.telemetry.schema import PayloadError, load_json
from edgewise.safejson import json_depth
from tests.edge.telemetry.conftest import BASE, client_config

pytestmark = pytest.mark.timeout(60)

DEEP = b'{"id":"deep","action":"status","args":' + b"[" * 4000 + b"]" * 4000 + b"}"  # ~8 KB


def run(raw: bytes, handler=lambda c: {"ran": c.id}, **kwargs):
    return CommandRunner(source="cmd", **kwargs).run(raw, handler)


def test_nesting_is_counted_on_the_bytes_outside_strings():
    assert json_depth(b"1") == 0 and json_depth(b"{}") == 1
    assert json_depth(b'[{"a": "[[[[\\"[", "b": [[]]}]') == 4
    assert json_depth(b"[" * 4000) == 4000  # unclosed: still counted, never parsed
    assert json_depth(b'"' + b"\\" * 9 + b"[[[") == 0  # an unterminated string hides the rest


def test_a_deeply_nested_command_is_refused_before_parsing_with_its_id():
    ack = run(DEEP)
    assert (ack.id, ack.action, ack.ok) == ("deep", "status", False)
    assert "nested 4001 levels deep; at most 32" in ack.error
    ack = run(b"[" * 100_000)  # nothing to recover an id from
    assert (ack.id, ack.ok) == (None, False) and "nested 100000 levels" in ack.error
    nested = {"id": "ok", "action": "status", "args": {"a": [[[1]]]}}
    assert run(json.dumps(nested).encode()).result == {"ran": "ok"}  # ordinary nesting is fine


def test_an_oversized_command_is_refused_unread_with_its_id():
    raw = json.dumps({"id": "big", "action": "infer", "args": {"pcm16_b64": "A" * 5000}}).encode()
    ack = run(raw, max_bytes=4096)
    assert (ack.id, ack.action, ack.ok) == ("big", "infer", False)
    assert f"{len(raw)} bytes is over the limit of 4096 bytes" in ack.error


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"\xff\xfe{}", "not UTF-8"),
        ('{"id":"u16","action":"status"}'.encode("utf-16"), "not UTF-8"),
        (b'{"id":"n","action":"status","args":{"x":' + b"9" * 5000 + b"}}", "4300 digits"),
        (b'{"id":"nan","action":"status","args":{"x":NaN}}', "NaN"),
        (b'{"id":"s","action":"status","args":"x"}', "field 'args'"),
        (b'{"id":"' + b"x" * 200 + b'","action":"status"}', "field 'id'"),
        (b"", "not valid JSON"),
        (b"null", "expected a JSON object"),
    ],
)
def test_invalid_commands_are_clean_payload_errors(raw, message):
    with pytest.raises(PayloadError, match=message):
        parse_command(raw)
    ack = run(raw)
    assert ack.ok is False and message in ack.error


def test_many_problems_are_listed_up_to_ten():
    raw = json.dumps({"id": "x", "action": "status", **{f"extra{i}": i for i in range(5000)}}).encode()
    ack = run(raw)
    assert ack.error.count("unknown field") == 10 and "and 4990 more problem(s)" in ack.error


def test_peek_finds_id_and_action_in_the_plain_pairs_of_an_unparsable_start():
    assert peek_command(DEEP) == ("deep", "status")
    assert peek_command(b'{"action" : "infer", "id": 42, "args": {' + b"[" * 99) == ("42", "infer")
    assert peek_command(b'{"args": [' + b"[" * 99 + b'"id": "hidden"') == (None, None)
    assert peek_command(b"\x00\xff") == (None, None)
    assert MAX_COMMAND_DEPTH == 32


def test_a_handler_that_returns_what_json_cannot_hold_is_an_error_ack():
    deep_result: dict = {}
    cur = deep_result
    for _ in range(5000):
        cur["k"] = cur = {}
    ack = run(b'{"id":"r","action":"status"}', handler=lambda c: deep_result)
    assert ack.ok is False and "nested deeper than 64 levels" in ack.error
    with pytest.raises(PayloadError, match="nested 65 levels"):
        load_json(b"[" * 65 + b"]" * 65)


def test_a_command_worker_killed_by_its_handler_is_restarted_and_reported(
    broker, subscribe, open_clients, tmp_path
):
    """SystemExit from a handler ends a plain thread; the supervisor restarts the worker, the
    killing command is still acked, and the next telemetry payload counts the restart."""

    def handler(command):
        if command.id == "die":
            raise SystemExit(3)
        return {"id": command.id}

    sub = subscribe(broker, [f"{BASE}/cmd/ack", f"{BASE}/telemetry"])
    client = TelemetryClient(
        client_config(broker, tmp_path / "outbox.sqlite"),
        command_handler=handler,
        supervisor=Supervisor(backoff_min_s=0.05),
    )
    open_clients.append(client)
    client.start()
    assert client.wait_connected(10)
    for cmd_id in ("die", "after"):
        sub.client.publish(f"{BASE}/cmd", json.dumps({"id": cmd_id, "action": "status"}), qos=1)
    acks = sub.wait_count("command_ack", 2)
    assert (acks[0].id, acks[0].ok) == ("die", False) and "stopped (SystemExit)" in acks[0].error
    assert (acks[1].id, acks[1].ok, acks[1].result) == ("after", True, {"id": "after"})
    assert client.publish_telemetry().thread_restarts == {COMMANDS: 1}
    assert sub.wait_count("telemetry", 1)[0].thread_restarts == {COMMANDS: 1}
    start = time.monotonic()
    assert client.close(flush_timeout=5) and time.monotonic() - start < 5
