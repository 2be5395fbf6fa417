"""The daemon as a real process against a real Mosquitto: hostile commands and a missing broker.

An empty install root is enough here (no model is loaded): the command worker and the MQTT
session are what is under test, and ``status`` answers without a model.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import time

import pytest

from tests.edge.daemon import conftest as daemon_fixtures
from tests.edge.daemon.conftest import DEVICE, FLEET, TOPICS, ack_for, command

daemons = daemon_fixtures.daemons  # the real daemon process fixture

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


def mqtt_settings(broker, **extra) -> dict:
    return {
        "host": broker.host,
        "port": broker.port,
        "fleet": FLEET,
        "device": DEVICE,
        "keepalive_s": 5,
        "reconnect_min_s": 0.05,
        "reconnect_max_s": 0.5,
        **extra,
    }


def test_hostile_commands_are_refused_and_the_daemon_keeps_answering(tmp_path, broker, subscribe, daemons):
    # Before the fix, DEEP raised RecursionError in the command thread: it died, no command was
    # answered again, and the retained status still said "online".
    sub = subscribe(broker, TOPICS)
    d = daemons(
        tmp_path / "root",
        broker,
        {"source": "stdin", "stdin_format": "raw"},
        mqtt=mqtt_settings(broker, max_command_bytes=64 * 1024),
    ).start(stdin=subprocess.PIPE)
    d.wait_health()
    sub.wait_for(lambda ps: any(p.type == "status" and p.state == "online" for p in ps))

    command(broker, None, raw=b'{"id":"deep","action":"status","args":' + b"[" * 4000 + b"]" * 4000 + b"}")
    ack = ack_for(sub, "deep", timeout=20.0)
    assert ack.ok is False and "nested 4001 levels deep; at most 32" in ack.error
    command(
        broker,
        None,
        raw=json.dumps({"id": "big", "action": "infer", "args": {"pcm16_b64": "A" * 70_000}}).encode(),
    )
    ack = ack_for(sub, "big", timeout=20.0)
    assert ack.ok is False and "over the limit of 65536 bytes" in ack.error
    command(broker, None, raw=b"[" * 50_000)  # no id to answer to: an ack with id null still says why
    sub.wait_for(lambda ps: any(p.type == "command_ack" and p.id is None and "nested" in p.error for p in ps))

    command(broker, None, raw=json.dumps({"id": "after", "action": "status"}).encode())
    ack = ack_for(sub, "after", timeout=20.0)
    assert ack.ok is True and ack.result["torch_loaded"] is False
    report = sub.wait_count("telemetry", 1)[-1]
    assert report.thread_restarts == {}  # refused per message: nothing had to be restarted
    assert d.proc.poll() is None
    assert d.stop() == 0


def test_an_unreachable_broker_is_logged_once_then_retries_sparsely_then_the_connection(
    tmp_path, make_broker, subscribe, daemons
):
    broker = make_broker(start=False)  # a free port nobody listens on yet
    where = f"{broker.host}:{broker.port}"
    d = daemons(tmp_path / "root", broker, {"source": "stdin", "stdin_format": "raw"})
    d.start(stdin=subprocess.PIPE)
    deadline = time.monotonic() + 30
    while "after 8 attempts" not in d.output():  # ~2.5 s of 0.05 -> 0.5 s backoff
        assert time.monotonic() < deadline, d.output()[-3000:]
        assert d.proc.poll() is None, d.output()[-3000:]
        time.sleep(0.1)
    broker.start()
    deadline = time.monotonic() + 30
    while f"connected to {where}" not in d.output():
        assert time.monotonic() < deadline, d.output()[-3000:]
        time.sleep(0.1)
    log = d.output()
    first = re.findall(rf"WARNING .*cannot connect to the MQTT broker at {re.escape(where)}: (.+?);", log)
    assert first == ["Connection refused"]
    retries = re.findall(rf"still no connection to {re.escape(where)} after (\d+) attempts", log)
    assert [int(n) for n in retries[:3]] == [2, 4, 8]  # backoff logged at 2, 4, 8... attempts
    attempts = int(re.search(rf"connected to {re.escape(where)} .* after (\d+) failed attempt", log)[1])
    assert attempts >= 8 and len(retries) <= math.log2(attempts) + 1  # not a line per attempt
    sub = subscribe(broker, TOPICS)
    command(broker, None, raw=json.dumps({"id": "s", "action": "status"}).encode())
    assert ack_for(sub, "s", timeout=20.0).ok
    assert d.stop() == 0
