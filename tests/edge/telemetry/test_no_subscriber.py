"""Nobody reads the topic (yet): a v5 broker answers a QoS 1 publish with PUBACK 0x10 ("No matching
subscribers") and drops the message. The device keeps it in the outbox and tries again with backoff
until a subscriber is there. The lost-500 case: Mosquitto 2.0.11 restores the cloud ingest worker's
persistent session after a restart but not its ``$share/...`` subscription, until the worker
subscribes again."""

import logging
import time

import pytest

from edgewise.edge.telemetry.client import TelemetryClient
from edgewise.edge.telemetry.schema import decode
from tests.edge.telemetry.conftest import BASE, client_config
from tests.edge.telemetry.fake_broker import V5Broker

pytestmark = pytest.mark.timeout(60)

SHARED = "$share/ingest/edgewise/+/+/#"  # the cloud ingest worker's subscription
EVENTS = f"{BASE}/events"
FAST = {"no_subscriber_retry_min_s": 0.1, "no_subscriber_retry_max_s": 0.4}


def labels(payloads):
    return [p.label for p in payloads if p.type == "event"]


def wait_until(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def start_client(broker, tmp_path, open_clients, **config):
    client = TelemetryClient(client_config(broker, tmp_path / "outbox.sqlite", **config))
    open_clients.append(client)
    client.start()
    assert client.wait_connected(10)
    return client


def test_events_published_before_any_subscriber_arrive_once_a_shared_one_subscribes(
    broker, subscribe, open_clients, tmp_path
):
    client = start_client(broker, tmp_path, open_clients)
    for i in range(50):
        client.publish_event(label=str(i))
    time.sleep(0.5)  # the first PUBACK 0x10 put the topic on hold (default: a probe after 1 s)
    assert client.outbox.depth() == 50 and client.held_topics == (EVENTS,)
    t0 = time.monotonic()  # nothing but held rows left: a flush (a daemon's stop) does not wait them out
    assert not client.flush(5) and time.monotonic() - t0 < 1.0 and client.outbox.depth() == 50
    ingest = subscribe(broker, [SHARED], client_id="ingest", v5=True)
    got = ingest.wait_count("event", 50)
    assert labels(got) == [str(i) for i in range(50)]
    assert client.flush(5) and client.outbox.depth() == 0


def test_broker_restart_with_the_ingest_worker_back_late_loses_nothing(
    make_broker, subscribe, open_clients, tmp_path
):
    broker = make_broker(persistence=True)
    ingest = subscribe(broker, [SHARED], client_id="ingest", v5=True, persistent=True)
    client = start_client(broker, tmp_path, open_clients, outbox_sync="normal", **FAST)
    client.publish_event(label="before")
    ingest.wait_count("event", 1)
    assert client.flush(5)

    ingest.pause()  # the worker hangs (SIGSTOP) across the restart
    broker.stop()
    wait_until(lambda: not client.connected)
    broker.start()
    assert client.wait_connected(10)
    for i in range(500):  # the benchmark's gap: 500 of 500 were lost before the fix
        client.publish_event(label=str(i))
    wait_until(lambda: client.held_topics == (EVENTS,))  # no shared subscription was restored: 0x10
    time.sleep(0.3)
    assert client.outbox.depth() == 500
    ingest.resume()  # back, and subscribed again
    want = [str(i) for i in range(500)]
    # ("before" may come twice: the worker's PUBACK for it can be lost in the restart.)
    got = ingest.wait_for(lambda ps: [x for x in labels(ps) if x != "before"] == want)
    assert [x for x in labels(got) if x != "before"] == want  # all, once each, in order
    assert client.flush(5) and client.held_topics == ()


def probe_bound(window: float, lo: float, hi: float) -> int:
    """The most probes a window can hold: waits of lo, 2 lo, 4 lo... up to hi, from the hold's start."""
    t, delay, n = 0.0, lo, 0
    while t + delay <= window:
        t += delay
        delay = min(2 * delay, hi)
        n += 1
    return n + 1  # and one more at the window's edge


def test_with_nobody_subscribed_the_device_backs_off_and_keeps_to_its_outbox_limits(
    broker, subscribe, open_clients, tmp_path
):
    lo, hi, window = 0.2, 0.8, 3.0
    client = start_client(
        broker,
        tmp_path,
        open_clients,
        outbox_max_rows=25,
        no_subscriber_retry_min_s=lo,
        no_subscriber_retry_max_s=hi,
    )
    sent = []
    publish = client._mqtt.publish

    def counting(topic, payload, *args, **kwargs):
        sent.append((time.monotonic(), topic, payload))
        return publish(topic, payload, *args, **kwargs)

    client._mqtt.publish = counting  # every message the pump hands to paho
    for i in range(20):
        client.publish_event(label=str(i))
    wait_until(lambda: client.held_topics == (EVENTS,))
    start, cpu = time.monotonic(), time.process_time()
    time.sleep(window)
    cpu = time.process_time() - cpu
    probes = [t for t, topic, _ in sent if t >= start and topic == EVENTS]
    assert 2 <= len(probes) <= probe_bound(window, lo, hi), probes
    assert all(b - a >= lo * 0.9 for a, b in zip(probes, probes[1:], strict=False))
    assert cpu < 0.5 * window  # this process (pump, paho) mostly sleeps
    before = [payload for t, topic, payload in sent if t < start and topic == EVENTS]
    assert len(set(before)) == len(before)  # each sent once at most (then held), then only probes
    assert client.outbox.depth() == 20

    for i in range(20, 30):  # 5 over the limit: the oldest events make room, as the policy says
        client.publish_event(label=str(i))
    report = client.publish_telemetry(interval_s=1)  # QoS 0: it goes, and it tells
    assert report.outbox_depth == 25 and report.dropped == {"event": 5}
    # (putting the report itself dropped event 5: reported next time)

    ingest = subscribe(broker, [SHARED], v5=True)
    got = ingest.wait_count("event", 24)
    assert labels(got) == [str(i) for i in range(6, 30)]  # the rest, in order, after the drops
    assert client.flush(5)


def test_a_topic_nobody_reads_does_not_hold_up_the_others(broker, subscribe, open_clients, tmp_path):
    client = start_client(broker, tmp_path, open_clients, telemetry_qos=1, **FAST)
    telemetry = subscribe(broker, [f"{BASE}/telemetry"])
    for i in range(5):
        client.publish_event(label=str(i))
    wait_until(lambda: client.held_topics == (EVENTS,))
    for i in range(3):
        client.publish_telemetry(interval_s=i)
    assert [t.interval_s for t in telemetry.wait_count("telemetry", 3)] == [0, 1, 2]
    wait_until(lambda: client.outbox.depth() == 5)  # the events wait; the telemetry is delivered
    events = subscribe(broker, [EVENTS])
    assert labels(events.wait_count("event", 5)) == [str(i) for i in range(5)]
    assert client.flush(5) and client.held_topics == ()


def test_quota_exceeded_waits_and_other_refusals_are_dropped(open_clients, tmp_path, caplog):
    """0x97 (quota exceeded) passes: held like 0x10. 0x87 (not authorized) and the other failure
    codes: that message will never be taken; it is dropped with a warning, the rest go on."""
    caplog.set_level(logging.WARNING, logger="edgewise.edge.telemetry.client")
    with V5Broker() as fake:
        client = TelemetryClient(client_config(fake, tmp_path / "outbox.sqlite", **FAST))
        open_clients.append(client)
        client.start()
        assert client.wait_connected(10) and client.protocol == "5"

        def accepted():
            return [decode(p).label for t, p in fake.accepted if t == EVENTS]

        fake.puback_code = 0x97
        for i in range(3):
            client.publish_event(label=f"q{i}")
        wait_until(lambda: client.held_topics == (EVENTS,))
        wait_until(lambda: len(fake.answered) >= 4)  # the three, then a probe
        assert client.outbox.depth() == 3 and accepted() == []
        fake.puback_code = 0
        wait_until(lambda: client.outbox.depth() == 0)  # the next probe is taken: the hold ends
        assert accepted() == ["q0", "q1", "q2"] and client.held_topics == ()
        assert "no subscriber for edgewise/lab/dev1/events (PUBACK: Quota exceeded)" in caplog.text

        fake.puback_code = 0x87
        client.publish_event(label="refused")
        assert client.flush(5) and client.held_topics == ()  # gone: the broker will never take it
        assert "rejected outbox message" in caplog.text and "Not authorized (dropped)" in caplog.text
        fake.puback_code = 0
        client.publish_event(label="after")
        assert client.flush(5) and accepted() == ["q0", "q1", "q2", "after"]
