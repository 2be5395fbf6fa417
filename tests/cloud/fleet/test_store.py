"""The store, the same tests on SQLite and on a real PostgreSQL server: batches commit whole or not
at all, replays are counted and not stored twice, device state and device_models follow the rules."""

import sqlite3

import pytest

from edgewise.cloud.fleet.classify import Decision, Message, classify
from edgewise.cloud.fleet.store import StoreError, TransientStoreError, open_store
from edgewise.edge.telemetry.schema import (
    CommandAck,
    ErrorEvent,
    Event,
    ModelRef,
    Percentiles,
    Status,
    Telemetry,
    encode,
)
from edgewise.errors import ConfigError

pytestmark = pytest.mark.timeout(120)

V1, V2 = ModelRef(name="ser-tiny", version="1.0.0"), ModelRef(name="ser-tiny", version="1.1.0")


def msg(kind, payload, device="dev1", *, at, fleet="lab"):
    raw = payload if isinstance(payload, bytes) else encode(payload)
    return classify(Message(f"edgewise/{fleet}/{device}/{kind}", raw, received_at=at))


def test_a_batch_stores_every_kind_and_counts_add_up(store_url, open_stores):
    store = open_stores(store_url)
    batch = [
        msg("status", Status(state="online", model=V1, ts=100.0), at=1000.0),
        msg("telemetry", Telemetry(ts=110.0, interval_s=10, inferences=50, latency_ms=Percentiles(p50=3, p90=5, p99=9)), at=1001.0),
        msg("events", Event(id="e1", ts=105.0, label="happy", latency_ms=3.5, model=V1), at=1002.0),
        msg("events", ErrorEvent(id="x1", ts=106.0, code="audio", message="mic gone"), at=1003.0),
        msg("cmd/ack", CommandAck(id="c1", action="status", ok=True, result={"up": 1}, ts=107.0), at=1004.0),
        msg("cmd", b"a command to the device", at=1005.0),
        msg("events", b"{broken", at=1006.0),
    ]  # fmt: skip
    outcomes = store.write(batch, worker="w1")
    assert outcomes == ["stored"] * 5 + ["ignored", "rejected"]
    assert store.row_counts() == {
        "devices": 1, "status": 1, "telemetry": 1, "events": 2, "command_acks": 1,
        "rejected_payloads": 1, "device_models": 1,
    }  # fmt: skip
    totals = store.counter_totals()
    received = sum(totals["received"].values())
    assert (
        received == 7 == sum(sum(totals[c].values()) for c in ("stored", "duplicates", "ignored", "rejected"))
    )
    assert totals["rejected"] == {"malformed": 1} and totals["ignored"] == {"cmd": 1}
    (device,) = store.devices()
    assert (device["state"], device["model_name"], device["model_version"]) == ("online", "ser-tiny", "1.0.0")
    assert (device["first_seen"], device["last_seen"]) == (1000.0, 1004.0)
    assert store.command_acks()[0]["ok"] is True
    # a late, older report (a device's outbox backlog) does not become the newest
    store.write([msg("telemetry", Telemetry(ts=90.0, interval_s=10, inferences=1), at=1010.0)], worker="w1")
    assert store.latest_telemetry()[("lab", "dev1")]["ts"] == 110.0
    # the status and an event name the same model: one row, its task from the event, since the status
    assert [(m["task"], m["model_version"], m["since"]) for m in store.device_models()] == [
        ("ser", "1.0.0", 100.0)
    ]
    (rejected,) = store.rejected()
    assert rejected["reason"] == "malformed" and rejected["head"] == b"{broken" and rejected["size"] == 7


def test_replays_are_counted_as_duplicates_and_stored_once(store_url, open_stores):
    store = open_stores(store_url)
    ev = Event(id="e1", ts=5.0, label="a")
    assert store.write([msg("events", ev, at=1.0)], worker="w1") == ["stored"]
    again = [
        msg("events", ev, at=2.0),
        msg("events", ev, at=3.0),
        msg("events", Event(id="e2", ts=6.0), at=4.0),
    ]
    assert store.write(again, worker="w2") == ["duplicate", "duplicate", "stored"]
    assert store.row_counts()["events"] == 2
    totals = store.counter_totals()
    assert totals["duplicates"] == {"events": 2} and totals["stored"] == {"events": 2}
    # two copies in one batch: the first is stored, the second is its duplicate
    assert store.write([msg("events", Event(id="e3", ts=7.0), at=6.0)] * 2, worker="w1") == [
        "stored",
        "duplicate",
    ]
    # the same event id from another device is another event
    assert store.write([msg("events", ev, device="dev2", at=5.0)], worker="w1") == ["stored"]


def test_a_batch_that_fails_half_way_leaves_nothing_behind(store_url, open_stores, monkeypatch):
    store = open_stores(store_url)
    store.write([msg("events", Event(id="before", ts=1.0), at=1.0)], worker="w1")
    before = (store.row_counts(), store.counters())

    def database_goes_away(*args, **kwargs):
        raise sqlite3.OperationalError("disk I/O error") if store.kind == "sqlite" else _pg_operational()

    monkeypatch.setattr(type(store), "_upsert_devices", database_goes_away)  # after the events went in
    batch = [msg("events", Event(id=f"e{i}", ts=2.0 + i), at=2.0) for i in range(5)]
    with pytest.raises(TransientStoreError, match="disk I/O error|server closed"):
        store.write(batch, worker="w1")
    assert (store.row_counts(), store.counters()) == before
    monkeypatch.undo()
    assert store.write(batch, worker="w1") == ["stored"] * 5  # the retry stores it all


def _pg_operational():
    import psycopg

    return psycopg.OperationalError("server closed the connection unexpectedly")


def test_a_payload_the_database_refuses_is_turned_away_alone(store_url, open_stores):
    """classify() keeps such payloads out; should one get through, its batch still goes in."""
    store = open_stores(store_url)
    sneaky = Event.model_construct(
        schema_version=1, type="event", id="bad", ts=3.0, task="ser", model=None, label="\ud800",
        probabilities={}, latency_ms=None, source=None, result={},
    )  # fmt: skip
    bad = Decision(
        "store", Message("edgewise/lab/dev1/events", b"{}", received_at=3.0), "events", "lab", "dev1", sneaky
    )
    batch = [
        msg("events", Event(id="ok1", ts=1.0), at=1.0),
        bad,
        msg("events", Event(id="ok2", ts=2.0), at=2.0),
    ]
    assert store.write(batch, worker="w1") == ["stored", "rejected", "stored"]
    assert store.rejected()[0]["reason"] == "unstorable"
    assert store.counter_totals()["rejected"] == {"unstorable": 1}


def test_the_status_received_last_wins_even_when_the_will_is_older(store_url, open_stores):
    """The last will carries the ts of its connection, older than the online it replaces."""
    store = open_stores(store_url)
    store.write([msg("status", Status(state="online", model=V1, ts=100.0), at=1000.0)], worker="w1")
    will = Status(state="offline", reason="connection lost", model=V1, ts=99.5)
    store.write([msg("status", will, at=1010.0)], worker="w1")
    (device,) = store.devices()
    assert (device["state"], device["state_reason"], device["last_seen"]) == (
        "offline",
        "connection lost",
        1010.0,
    )
    # a redelivered copy of the older online status is a duplicate, not a state change
    assert store.write(
        [msg("status", Status(state="online", model=V1, ts=100.0), at=1020.0)], worker="w2"
    ) == ["duplicate"]
    assert store.devices()[0]["state"] == "offline"


def test_device_models_follow_the_newest_report_and_learn_the_task(store_url, open_stores):
    store = open_stores(store_url)
    store.write([msg("status", Status(state="online", model=V1, ts=100.0), at=1.0)], worker="w1")
    assert [(m["task"], m["model_version"], m["since"]) for m in store.device_models()] == [
        ("", "1.0.0", 100.0)
    ]
    store.write([msg("events", Event(id="a", ts=101.0, task="ser", model=V1), at=2.0)], worker="w1")
    assert [(m["task"], m["model_version"], m["since"]) for m in store.device_models()] == [
        ("ser", "1.0.0", 100.0)
    ]
    store.write([msg("status", Status(state="online", model=V2, ts=200.0), at=3.0)], worker="w1")
    # a backlog of events made before the switch arrives late: the device still runs 1.1.0
    store.write([msg("events", Event(id="b", ts=150.0, task="ser", model=V1), at=4.0)], worker="w1")
    (row,) = store.device_models()
    assert (row["fleet"], row["device"], row["task"], row["model_name"], row["model_version"], row["since"]) == (
        "lab", "dev1", "ser", "ser-tiny", "1.1.0", 200.0,
    )  # fmt: skip
    # another device's status for a model whose task is known gets the task straight away
    store.write(
        [msg("status", Status(state="online", model=V1, ts=300.0), device="dev2", at=5.0)], worker="w1"
    )
    assert {(m["device"], m["task"]) for m in store.device_models()} == {("dev1", "ser"), ("dev2", "ser")}


def test_two_stores_on_one_file_write_in_turn(sqlite_url, open_stores):
    a, b = open_stores(sqlite_url), open_stores(sqlite_url)
    for i in range(20):
        (a if i % 2 else b).write(
            [msg("events", Event(id=f"e{i}", ts=float(i)), at=float(i))], worker=f"w{i % 2}"
        )
    assert a.row_counts()["events"] == 20
    assert a.query("PRAGMA journal_mode")[0]["journal_mode"] == "wal"
    assert (
        a.query("PRAGMA synchronous")[0]["synchronous"] == 2
    )  # FULL: an acknowledged row survives a power cut


def test_store_urls_and_their_errors(tmp_path):
    with pytest.raises(StoreError, match="no such store"):
        open_store(tmp_path / "missing.sqlite", create=False)
    with pytest.raises(ConfigError, match="unknown scheme 'mysql'"):
        open_store("mysql://db/fleet")
    with pytest.raises(ConfigError, match="unknown option"):
        open_store(f"sqlite:///{tmp_path}/x.sqlite?journal=off")
    (tmp_path / "junk.sqlite").write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError, match="not a usable SQLite store"):
        open_store(tmp_path / "junk.sqlite")
    with open_store(f"sqlite:///{tmp_path}/n.sqlite?synchronous=normal") as store:
        assert store.query("PRAGMA synchronous")[0]["synchronous"] == 1
        assert store.url == f"sqlite:///{tmp_path}/n.sqlite"


def test_an_unreachable_postgresql_is_a_clear_error(pg_server):
    from edgewise.devtools.mosquitto import free_port

    with pytest.raises(StoreError, match=r"postgresql://edgewise:\*\*\*@127.0.0.1:\d+/x: cannot connect"):
        open_store(f"postgresql://edgewise:secret@127.0.0.1:{free_port()}/x", connect_timeout_s=2)
