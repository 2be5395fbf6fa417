"""What ingest does with one message before the store sees it: store, ignore, or reject with a reason."""

import json

import pytest

from edgewise.cloud.fleet.allowlist import Allowlist
from edgewise.cloud.fleet.classify import Message, classify, payload_key
from edgewise.edge.telemetry.schema import CommandAck, Event, Status, Telemetry, encode
from edgewise.errors import ConfigError

pytestmark = pytest.mark.timeout(60)

EVENT = encode(Event(id="e1", label="happy", latency_ms=3.0))


def decide(topic, payload, **kwargs):
    return classify(Message(topic, payload), **kwargs)


@pytest.mark.parametrize(
    ("topic", "payload", "kind"),
    [
        ("edgewise/lab/dev1/status", encode(Status(state="online")), "status"),
        ("edgewise/lab/dev1/telemetry", encode(Telemetry(interval_s=10, inferences=3)), "telemetry"),
        ("edgewise/lab/dev1/events", EVENT, "events"),
        ("edgewise/lab/dev1/cmd/ack", encode(CommandAck(id="c1", action="status", ok=True)), "cmd/ack"),
    ],
)
def test_each_device_topic_stores_its_own_payload_type(topic, payload, kind):
    d = decide(topic, payload)
    assert (d.action, d.kind, d.fleet, d.device) == ("store", kind, "lab", "dev1")


@pytest.mark.parametrize(
    "topic", ["edgewise/lab/dev1/cmd", "edgewise/lab/dev1/offload", "edgewise/lab/dev1/offload/reply"]
)
def test_commands_and_offload_traffic_are_ignored_not_rejected(topic):
    d = decide(topic, b"anything at all, even not JSON" * 100_000)
    assert d.action == "ignore" and d.reason is None


@pytest.mark.parametrize(
    ("topic", "payload", "reason", "detail"),
    [
        ("edgewise/lab/dev1/weather", EVENT, "bad_topic", "kind 'weather'"),
        ("edgewise/lab/$dev/events", EVENT, "bad_topic", "not an edgewise device topic"),
        ("other/lab/dev1/events", EVENT, "bad_topic", "not an edgewise device topic"),
        ("edgewise/lab/dev1/events", b"{not json", "malformed", "not valid JSON"),
        ("edgewise/lab/dev1/events", b"\xff\xfe", "malformed", "not UTF-8"),
        ("edgewise/lab/dev1/events", b"[" * 100 + b"]" * 100, "malformed", "levels deep"),
        ("edgewise/lab/dev1/events", b'{"schema":2,"type":"event"}', "malformed", "version 2"),
        (
            "edgewise/lab/dev1/events",
            b'{"schema":1,"type":"event","latency_ms":-1}',
            "malformed",
            "latency_ms",
        ),
        ("edgewise/lab/dev1/events", b'{"schema":1,"type":"event","surprise":1}', "malformed", "surprise"),
        ("edgewise/lab/dev1/status", EVENT, "wrong_type", "'event' payload on a 'status' topic"),
        ("edgewise/lab/dev1/events", encode(Telemetry()), "wrong_type", "expected 'event' or 'error'"),
    ],
)
def test_bad_input_is_rejected_with_a_reason_that_names_the_problem(topic, payload, reason, detail):
    d = decide(topic, payload)
    assert d.action == "reject" and d.reason == reason
    assert detail in d.detail


def test_oversized_payloads_are_refused_before_they_are_parsed():
    huge = b'{"schema":1,"type":"event","label":"' + b"x" * 5000 + b'"}'
    d = decide("edgewise/lab/dev1/events", huge, max_bytes=4096)
    assert d.reason == "oversized" and "5" in d.detail and "4096" in d.detail
    assert decide("edgewise/lab/dev1/events", huge, max_bytes=10_000).action == "store"


@pytest.mark.parametrize(
    ("field", "value", "detail"),
    [
        ("label", "a\u0000b", "NUL character"),
        ("label", "\ud800", "lone surrogate"),
        ("result", {"n": 2**70}, "beyond 64 bits"),
        ("probabilities", {"\u0000": 0.5}, "key that holds a NUL"),
    ],
)
def test_valid_json_the_databases_cannot_keep_is_malformed(field, value, detail):
    payload = json.dumps({"schema": 1, "type": "event", "id": "x", field: value}).encode()
    d = decide("edgewise/lab/dev1/events", payload)
    assert (d.action, d.reason) == ("reject", "malformed") and detail in d.detail


def test_an_allowlist_rejects_unknown_devices_and_is_reread_when_it_changes(tmp_path):
    listing = tmp_path / "devices.txt"
    listing.write_text("# the lab\nlab/dev1\n")
    known = Allowlist(listing, recheck_s=0)
    assert decide("edgewise/lab/dev1/events", EVENT, known=known).action == "store"
    d = decide("edgewise/lab/intruder/events", EVENT, known=known)
    assert (d.reason, d.detail) == ("unknown_device", "device lab/intruder is not on the allowlist")
    listing.write_text("lab/dev1\nlab/intruder\n")
    assert decide("edgewise/lab/intruder/events", EVENT, known=known).action == "store"


def test_the_allowlist_reads_yaml_and_a_fleet_broker_folder(tmp_path):
    from edgewise.edge.deploy.broker_acl import add_users

    add_users(tmp_path / "broker", "lab", devices={"dev1": None, "dev2": None}, operators={"ingest1": None})
    (tmp_path / "more.yaml").write_text("field: [probe-1, probe-2]\n")
    known = Allowlist(tmp_path / "more.yaml", tmp_path / "broker")
    assert known.devices == {("lab", "dev1"), ("lab", "dev2"), ("field", "probe-1"), ("field", "probe-2")}
    (tmp_path / "bad.txt").write_text("lab/de+v\n")
    with pytest.raises(ConfigError, match=r"bad.txt:1: device id must not contain '\+'"):
        Allowlist(tmp_path / "bad.txt")


def test_payload_keys_recognise_replays():
    ev = Event(id="abc", label="x")
    assert payload_key(ev) == "abc"
    assert payload_key(CommandAck(id="c9", ok=True)) == "c9"
    assert payload_key(CommandAck(id=None, ok=False, error="bad", ts=5.0)) == "@5.0"
    assert payload_key(Telemetry(ts=12.5)) == "12.5"
    online, will = Status(state="online", ts=7.0), Status(state="offline", ts=7.0)
    assert payload_key(online) != payload_key(will)  # the will keeps its connection's ts
