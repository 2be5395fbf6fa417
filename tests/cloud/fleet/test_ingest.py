"""``edgewise cloud ingest`` as real processes against a real Mosquitto, into SQLite and a real
PostgreSQL: workers split the stream, a kill -9 or a broker restart loses nothing, bad input is
rejected and counted, logins and TLS work the way the fleet's ACL says."""

from __future__ import annotations

import threading
import time

import pytest

from edgewise.edge.telemetry.schema import Event, Status, encode
from tests.cloud.fleet.conftest import MODEL, broker_args, event_payload, wait_rows

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

DEVICES = [f"dev{i}" for i in range(5)]


def publish_events(pub, n: int, *, start: int = 0, pause_every: int = 0, pause_s: float = 0.0) -> set[str]:
    """``n`` events spread over DEVICES; returns their ids."""
    ids = set()
    for i in range(start, start + n):
        device = DEVICES[i % len(DEVICES)]
        pub.publish(f"edgewise/lab/{device}/events", event_payload(i))
        ids.add(f"ev{i:07d}")
        if pause_every and (i + 1) % pause_every == 0:
            time.sleep(pause_s)
    return ids


def stored_ids(store) -> set[str]:
    return {r["key"] for r in store.query("SELECT key FROM events")}


def per_worker(store, counter: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for row in store.counters():
        if row["counter"] == counter:
            out[row["worker"]] = out.get(row["worker"], 0) + int(row["value"])
    return out


def test_two_workers_split_a_stream_with_no_loss_and_no_duplicates(
    store_url, make_broker, publisher, ingest_process, open_stores
):
    broker = make_broker()
    store = open_stores(store_url)  # creates the tables before the workers race to
    workers = [ingest_process(broker_args(broker, store_url, name)) for name in ("w1", "w2")]
    for w in workers:
        w.wait_subscribed()
    pub = publisher(broker)
    n = 3000
    sent = publish_events(pub, n)
    pub.wait_all_acked()
    wait_rows(store, "events", n)
    time.sleep(0.5)  # anything extra would show now
    assert stored_ids(store) == sent
    stored = per_worker(store, "stored")
    assert sum(stored.values()) == n and set(stored) == {"w1", "w2"}
    assert min(stored.values()) > n * 0.3, f"the broker did not split the stream: {stored}"
    assert per_worker(store, "duplicates") == {}
    for w in workers:
        assert w.terminate() == 0
        assert "ingest: stopped after" in w.log()
    print(f"\n{store.kind}: stored per worker {stored}")


# SQLite only: the worker acknowledges after the commit whichever store it writes (the two-worker
# and bad-input tests run on both); benchmarks/cloud_report.py measures both stores across restarts
@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
def test_kill_9_mid_stream_then_restart_loses_nothing(
    store_url, make_broker, publisher, ingest_process, open_stores
):
    """The broker keeps the worker's session while it is dead: its queued and its unacknowledged
    messages come when it returns; what it had committed but not acknowledged comes again and is
    counted as a duplicate, not stored twice."""
    broker = make_broker()
    store = open_stores(store_url)
    args = broker_args(broker, store_url, "w1")
    worker = ingest_process(args)
    worker.wait_subscribed()
    pub = publisher(broker)
    n = 4000
    sent: set[str] = set()
    sender = threading.Thread(
        target=lambda: sent.update(publish_events(pub, n, pause_every=100, pause_s=0.02))
    )
    sender.start()
    wait_rows(store, "events", n // 4)
    worker.kill9()
    at_kill = store.row_counts()["events"]
    time.sleep(1.0)  # the stream goes on without a worker
    restarted = ingest_process(args)
    restarted.wait_subscribed()
    sender.join(60)
    pub.wait_all_acked()
    wait_rows(store, "events", n)
    time.sleep(0.5)
    assert stored_ids(store) == sent
    assert at_kill < n, "the kill came after the stream ended: it tested nothing"
    dups = sum(per_worker(store, "duplicates").values())
    assert sum(per_worker(store, "stored").values()) == n
    assert "session resumed" in restarted.log()
    print(f"\n{store.kind}: killed at {at_kill}/{n} stored; 0 lost; {dups} redelivered duplicate(s)")


# SQLite only: the worker acknowledges after the commit whichever store it writes (the two-worker
# and bad-input tests run on both); benchmarks/cloud_report.py measures both stores across restarts
@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
def test_a_broker_restart_with_persistence_loses_nothing(
    store_url, make_broker, publisher, ingest_process, open_stores
):
    """Everything the broker acknowledged before it stopped, queued for a worker that was behind,
    is saved and delivered after the restart; the worker's session resumes and it subscribes
    again (Mosquitto 2.0.11 does not restore shared subscriptions: see edgewise.cloud.fleet.ingest)."""
    import signal

    broker = make_broker(persistence=True)
    store = open_stores(store_url)
    worker = ingest_process(broker_args(broker, store_url, "w1"))
    worker.wait_subscribed()
    pub = publisher(broker)
    n = 3000
    sent = publish_events(pub, 200)
    wait_rows(store, "events", 200)
    worker.proc.send_signal(signal.SIGSTOP)  # a worker that falls behind: a backlog builds up
    try:
        sent |= publish_events(pub, n // 2 - 200, start=200)
        pub.wait_all_acked()
        at_restart = store.row_counts()["events"]
        broker.restart()  # clean stop: mosquitto saves the sessions and their queued messages
    finally:
        worker.proc.send_signal(signal.SIGCONT)
    worker.wait_subscribed(count=2)
    sent |= publish_events(pub, n - n // 2, start=n // 2)
    pub.wait_all_acked(90)
    wait_rows(store, "events", n, timeout=90)
    time.sleep(0.5)
    assert at_restart < n // 2, "nothing was queued at the broker when it restarted: it tested nothing"
    assert stored_ids(store) == sent
    assert "session resumed" in worker.log() and worker.proc.poll() is None
    print(f"\n{store.kind}: {n // 2 - at_restart} queued at the broker across its restart; 0 lost")


def test_bad_input_is_rejected_counted_and_never_half_stored(
    store_url, make_broker, publisher, ingest_process, open_stores, tmp_path
):
    broker = make_broker()
    store = open_stores(store_url)
    (tmp_path / "devices.txt").write_text("lab/dev0\nlab/dev1\n")
    worker = ingest_process(
        broker_args(
            broker, store_url, "w1", "--devices", str(tmp_path / "devices.txt"), "--max-bytes", "4096"
        )
    )
    worker.wait_subscribed()
    pub = publisher(broker)
    good = [Event(id=f"good{i}", label="happy", latency_ms=1.0, model=MODEL) for i in range(3)]
    sends = [
        ("edgewise/lab/dev0/events", encode(good[0])),
        (
            "edgewise/lab/dev0/events",
            b'{"schema":1,"type":"event","id":"half","latency_ms":"fast"}',
        ),  # malformed
        ("edgewise/lab/dev0/events", b"\x00\x01 not json"),  # malformed
        ("edgewise/lab/dev0/events", encode(Event(id="big", result={"blob": "x" * 5000}))),  # oversized
        ("edgewise/lab/dev1/events", encode(good[1])),
        ("edgewise/lab/dev0/events", encode(good[0])),  # replayed
        ("edgewise/lab/dev0/events", encode(good[0])),  # replayed
        ("edgewise/lab/intruder/events", encode(Event(id="evil", label="x"))),  # unknown device
        ("edgewise/lab/intruder/status", encode(Status(state="online"))),  # unknown device
        ("edgewise/lab/dev1/status", encode(good[2])),  # wrong type for the topic
        ("edgewise/lab/dev1/diary", encode(good[2])),  # not a device topic
        ("edgewise/lab/dev1/cmd", b'{"id":"1","action":"status"}'),  # to the device: ignored
        ("edgewise/lab/dev1/events", encode(good[2])),
    ]
    for topic, payload in sends:
        pub.publish(topic, payload)
    pub.wait_all_acked()
    deadline = time.monotonic() + 30
    while sum(store.counter_totals()["received"].values()) < len(sends):
        assert time.monotonic() < deadline, store.counter_totals()
        time.sleep(0.1)
    totals = store.counter_totals()
    assert totals["rejected"] == {
        "malformed": 2,
        "oversized": 1,
        "unknown_device": 2,
        "wrong_type": 1,
        "bad_topic": 1,
    }
    assert totals["duplicates"] == {"events": 2}
    assert totals["ignored"] == {"cmd": 1}
    assert totals["stored"] == {"events": 3}
    assert stored_ids(store) == {"good0", "good1", "good2"}
    assert {d["device"] for d in store.devices()} == {
        "dev0",
        "dev1",
    }  # the intruder left no trace but its rejection
    assert store.row_counts()["rejected_payloads"] == 7
    reasons = {r["reason"]: r for r in store.rejected(limit=20)}
    assert "4096" in reasons["oversized"]["detail"] and reasons["oversized"]["size"] > 5000
    assert reasons["malformed"]["topic"] == "edgewise/lab/dev0/events"


def test_sigterm_stops_cleanly_and_the_session_keeps_what_comes_meanwhile(
    sqlite_url, make_broker, publisher, ingest_process, open_stores
):
    broker = make_broker()
    store = open_stores(sqlite_url)
    args = broker_args(broker, sqlite_url, "w1")
    worker = ingest_process(args)
    worker.wait_subscribed()
    pub = publisher(broker)
    sent = publish_events(pub, 200)
    wait_rows(store, "events", 200)
    assert worker.terminate() == 0
    assert "ingest: stopped after" in worker.log() and "200 stored" in worker.log()
    sent |= publish_events(pub, 300, start=200)  # nobody is listening, the broker keeps them
    pub.wait_all_acked()
    time.sleep(0.5)
    assert store.row_counts()["events"] == 200
    again = ingest_process(args)
    again.wait_subscribed()
    wait_rows(store, "events", 500)
    assert stored_ids(store) == sent and "session resumed" in again.log()


def test_a_worker_that_leaves_hands_its_share_to_the_others(
    sqlite_url, make_broker, publisher, ingest_process, open_stores
):
    broker = make_broker()
    store = open_stores(sqlite_url)
    staying = ingest_process(broker_args(broker, sqlite_url, "w1"))
    leaving = ingest_process(broker_args(broker, sqlite_url, "w2", "--leave"))
    staying.wait_subscribed()
    leaving.wait_subscribed()
    assert leaving.terminate() == 0 and "left group 'ingest'" in leaving.log()
    pub = publisher(broker)
    sent = publish_events(pub, 400)
    pub.wait_all_acked()
    wait_rows(store, "events", 400, timeout=30)  # without --leave, half would wait for w2
    assert stored_ids(store) == sent and per_worker(store, "stored") == {"w1": 400}


def test_retained_status_is_read_at_connect_and_the_last_will_marks_a_device_offline(
    sqlite_url, make_broker, ingest_process, open_stores, tmp_path
):
    from tests.edge.telemetry.conftest import ClientProcess, client_config

    broker = make_broker()
    store = open_stores(sqlite_url)
    device = ClientProcess(
        client_config(broker, tmp_path / "outbox.sqlite", device="early", telemetry_qos=1),
        events=3,
        tmp_path=tmp_path,
    )
    try:
        device.wait_ready()  # online (retained) before any worker exists
        worker = ingest_process(broker_args(broker, sqlite_url, "w1"))
        worker.wait_subscribed()
        deadline = time.monotonic() + 20
        while not store.devices() or store.devices()[0]["state"] != "online":
            assert time.monotonic() < deadline, store.devices()
            time.sleep(0.1)
        # its events went out before any worker had ever subscribed: the broker had nobody to give
        # them to (PUBACK 0x10), so the device kept them and sends them again once somebody listens
        wait_rows(store, "events", 3, timeout=30)
        device.kill()  # kill -9: the broker publishes the device's last will
        deadline = time.monotonic() + 20
        while store.devices()[0]["state"] != "offline":
            assert time.monotonic() < deadline, store.devices()
            time.sleep(0.1)
    finally:
        device.kill()
    (row,) = store.devices()
    assert (row["device"], row["state_reason"], row["model_name"]) == ("early", "connection lost", "ser-tiny")
    assert store.row_counts()["events"] == 3  # once each
    assert store.device_models()[0]["model_version"] == "1.0.0"


def test_operator_login_over_tls_sees_only_what_the_fleet_acl_lets_it_read(
    sqlite_url, make_broker, publisher, ingest_process, open_stores, tmp_path
):
    """Mosquitto 2.0.11 grants the subscription ``$share/ingest/edgewise/+/+/#`` to the operator of
    fleet ``lab`` and then delivers only the messages its ``read edgewise/lab/#`` rule allows."""
    from edgewise.devtools.tls import self_signed_cert
    from edgewise.edge.deploy.broker_acl import ACL, PASSWORDS, PIN_CLIENT_ID, add_users, render_acl

    folder = tmp_path / "fleet-broker"
    given, _ = add_users(folder, "lab", devices={"dev0": None}, operators={"ingest1": None})
    more, _ = add_users(folder, "other", devices={"x": None})
    (folder / ACL).write_text(
        render_acl("lab", ["dev0"], ["ingest1"]) + "\n" + render_acl("other", ["x"], [])
    )
    cert, key = self_signed_cert(tmp_path / "tls")
    broker = make_broker(
        password_file=folder / PASSWORDS, acl_file=folder / ACL, extra_config=[PIN_CLIENT_ID], tls=(cert, key)
    )
    store = open_stores(sqlite_url)
    (tmp_path / "ingest1.pw").write_text(given["ingest1"] + "\n")
    tls_args = [
        "--host",
        broker.host,
        "--port",
        str(broker.tls_port),
        "--tls-ca",
        str(cert),
        "--store",
        sqlite_url,
    ]
    (tmp_path / "wrong.pw").write_text("not-the-password\n")
    wrong = ingest_process(
        [*tls_args, "--username", "ingest1", "--password-file", str(tmp_path / "wrong.pw")]
    )
    assert wrong.proc.wait(30) == 2
    assert "refused the connection" in wrong.log() and "username 'ingest1'" in wrong.log()
    login = ["--username", "ingest1", "--password-file", str(tmp_path / "ingest1.pw")]
    worker = ingest_process([*tls_args, *login, "--broker-dir", str(folder)])
    worker.wait_subscribed()
    assert "as ingest1" in worker.log()  # the session is named after the login
    lab = publisher(
        broker, username="lab.dev0", password=given["lab.dev0"], tls_ca=cert, port=broker.tls_port
    )
    other = publisher(broker, username="other.x", password=more["other.x"])
    for i in range(5):
        lab.publish("edgewise/lab/dev0/events", event_payload(i))
        other.publish("edgewise/other/x/events", event_payload(100 + i))
    lab.wait_all_acked()
    other.wait_all_acked()
    wait_rows(store, "events", 5)
    time.sleep(1.0)
    assert {d["fleet"] for d in store.devices()} == {"lab"}
    assert sum(store.counter_totals()["received"].values()) == 5  # fleet other's never reached the worker
