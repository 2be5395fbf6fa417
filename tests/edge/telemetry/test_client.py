"""TelemetryClient against a real Mosquitto, with a real paho subscriber on the other side."""

import json
import signal
import time

import pytest

from edgewise.edge.telemetry.client import BrokerRefusedError, TelemetryClient, TelemetryError
from edgewise.edge.telemetry.outbox import Outbox
from edgewise.edge.telemetry.schema import Event, Telemetry
from tests.edge.telemetry.conftest import BASE, Subscriber, client_config

pytestmark = pytest.mark.timeout(60)


def labels(payloads):
    return [p.label for p in payloads if p.type == "event"]


def wait_disconnected(client, timeout=5.0):
    deadline = time.monotonic() + timeout
    while client.connected:
        assert time.monotonic() < deadline, "the client did not notice the broker going away"
        time.sleep(0.01)


def start_client(broker, tmp_path, open_clients, *, wait=True, **overrides):
    client = TelemetryClient(
        client_config(broker, tmp_path / "outbox.sqlite", **overrides.pop("config", {})), **overrides
    )
    open_clients.append(client)
    client.start()
    if wait:
        assert client.wait_connected(10)
    return client


def test_online_status_is_retained_and_the_last_will_fires_on_sigkill(
    broker, subscribe, client_process, tmp_path
):
    live = subscribe(broker, [f"{BASE}/status"])
    proc = client_process(client_config(broker, tmp_path / "outbox.sqlite"))
    proc.wait_ready()
    live.wait_count("status", 1)  # the broker has the online status now
    late = subscribe(broker, [f"{BASE}/status"])  # subscribes after the device came online
    (online,) = late.wait_count("status", 1)
    assert late.messages[0].retain and online.state == "online" and online.reason is None
    assert online.model.name == "ser-tiny" and online.edgewise_version

    proc.signal(signal.SIGKILL)
    statuses = late.wait_count("status", 2)
    assert statuses[1].state == "offline" and statuses[1].reason == "connection lost"
    after = subscribe(broker, [f"{BASE}/status"])  # the broker kept the will as the retained status
    (retained,) = after.wait_count("status", 1)
    assert after.messages[0].retain and retained.state == "offline"


def test_sigterm_flushes_and_publishes_offline(broker, subscribe, client_process, tmp_path):
    sub = subscribe(broker, [f"{BASE}/#"])
    proc = client_process(client_config(broker, tmp_path / "outbox.sqlite"), events=300)
    proc.wait_ready()
    proc.signal(signal.SIGTERM)  # right after storing 300 events: close() must deliver them
    assert proc.wait() == 0
    payloads = sub.wait_for(lambda ps: any(p.type == "status" and p.state == "offline" for p in ps))
    assert labels(payloads) == [str(i) for i in range(300)]
    assert payloads[-1].type == "status" and payloads[-1].reason == "shutdown"
    with Outbox(tmp_path / "outbox.sqlite") as box:
        assert box.depth() == 0


def test_events_arrive_at_qos1_in_order(broker, subscribe, open_clients, tmp_path):
    sub = subscribe(broker, [f"{BASE}/events"])
    client = start_client(broker, tmp_path, open_clients)
    sent = [client.publish_event(label=str(i), probabilities={"a": 1.0}) for i in range(500)]
    assert client.flush(10) and client.outbox.depth() == 0
    got = sub.wait_count("event", 500)
    assert [e.id for e in got] == [e.id for e in sent]
    assert {m.qos for m in sub.messages} == {1}
    assert got[0].model is None and got[0].probabilities == {"a": 1.0}


def test_packets_leave_at_once_on_both_ends_of_the_connection(broker, open_clients, tmp_path):
    """TCP_NODELAY on the device's socket, and the broker config edgewise writes asks Mosquitto for
    the same (set_tcp_nodelay): with Nagle on, a command's round trip waited for delayed ACKs."""
    import socket

    client = start_client(broker, tmp_path, open_clients)
    assert client._mqtt.socket().getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
    assert "set_tcp_nodelay true" in broker.config_text().splitlines()


def test_qos0_telemetry_waits_out_a_broker_outage_and_is_deleted_once_written(
    make_broker, subscribe, open_clients, tmp_path
):
    broker = make_broker(persistence=True, extra_config=["queue_qos0_messages true"])
    sub = subscribe(broker, [f"{BASE}/telemetry"], client_id="cloud", persistent=True)
    client = start_client(broker, tmp_path, open_clients)  # telemetry_qos defaults to 0
    broker.stop()
    wait_disconnected(client)
    for i in range(5):
        client.publish_telemetry(interval_s=i)
    time.sleep(0.3)
    assert client.outbox.depth() == 5  # a QoS 0 publish without a connection is not "written"
    broker.start()
    got = sub.wait_count("telemetry", 5)
    assert [t.interval_s for t in got] == [0, 1, 2, 3, 4] and {m.qos for m in sub.messages} == {0}
    assert client.flush(5)


def test_broker_down_then_back_loses_nothing(make_broker, subscribe, open_clients, tmp_path):
    broker = make_broker(persistence=True)
    # A persistent session: the broker queues for the subscriber while it reconnects after the restart.
    sub = subscribe(broker, [f"{BASE}/events"], client_id="cloud", persistent=True)
    client = start_client(broker, tmp_path, open_clients)
    client.publish_event(label="before")
    sub.wait_count("event", 1)
    assert client.flush(5)

    broker.stop()
    wait_disconnected(client)
    for i in range(200):
        client.publish_event(label=str(i))
    time.sleep(0.3)  # the client keeps retrying meanwhile
    assert client.outbox.depth() == 200
    broker.start()  # same port

    got = sub.wait_for(lambda ps: len(labels(ps)) >= 201 and labels(ps)[-1] == "199", timeout=20)
    # All of them, once each, in order. ("before" may come twice: the subscriber's own PUBACK for it
    # can be lost in the broker restart, and the broker then redelivers it, as QoS 1 allows.)
    assert [x for x in labels(got) if x != "before"] == [str(i) for i in range(200)]
    assert client.flush(5)


def test_pending_outbox_is_delivered_after_a_client_restart(
    make_broker, subscribe, client_process, open_clients, tmp_path
):
    broker = make_broker(start=False)  # the broker is down while the first process runs
    config = client_config(broker, tmp_path / "outbox.sqlite")
    proc = client_process(config, events=50, wait_connected=False)
    proc.wait_ready()
    proc.signal(signal.SIGKILL)
    proc.wait()

    broker.start()
    sub = subscribe(broker, [f"{BASE}/events"])
    client = start_client(broker, tmp_path, open_clients)  # same outbox file
    got = sub.wait_count("event", 50)
    assert labels(got) == [str(i) for i in range(50)]
    assert client.flush(5)


def test_full_outbox_drops_telemetry_first_and_reports_it(broker, subscribe, open_clients, tmp_path):
    sub = subscribe(broker, [f"{BASE}/telemetry", f"{BASE}/events"])
    client = TelemetryClient(
        client_config(broker, tmp_path / "outbox.sqlite", outbox_max_rows=10, telemetry_qos=1)
    )
    open_clients.append(client)
    # Not started yet: everything waits in the outbox, as while the broker is unreachable.
    for i in range(4):
        client.publish_telemetry(Telemetry(interval_s=i))
    for i in range(8):
        client.publish_event(label=str(i))  # the last two evict the two oldest telemetry reports
    report = client.publish_telemetry(interval_s=99, inferences=8)
    assert report.dropped == {"telemetry": 2} and report.outbox_depth == 10
    client.start()
    got = sub.wait_for(lambda ps: len(ps) == 10)
    assert [p.type for p in got].count("event") == 8 and labels(got) == [str(i) for i in range(8)]
    reports = [p for p in got if p.type == "telemetry"]
    # telemetry 0 and 1 went to make room for events 6 and 7, telemetry 2 for the report itself
    assert [t.interval_s for t in reports] == [3, 99]
    assert reports[-1].dropped == {"telemetry": 2}
    assert client.flush(5)  # every PUBACK is in: the outbox has room again
    assert client.publish_telemetry().dropped == {"telemetry": 1}  # the third drop, reported next
    assert client.publish_telemetry().dropped == {}


def test_commands_are_acked_with_the_handler_result(broker, subscribe, open_clients, tmp_path):
    calls = []

    def handler(command):
        calls.append(command.id)
        if command.action == "reload":
            raise RuntimeError("bundle checksum mismatch")
        return {"action": command.action, "args": command.args}

    acks = subscribe(broker, [f"{BASE}/cmd/ack"])
    start_client(broker, tmp_path, open_clients, command_handler=handler)
    cloud = acks.client
    cloud.publish(
        f"{BASE}/cmd",
        json.dumps({"schema": 1, "type": "command", "id": "c1", "action": "infer", "args": {"x": 1}}),
        qos=1,
    )
    cloud.publish(f"{BASE}/cmd", json.dumps({"id": "c2", "action": "reload"}), qos=1)
    cloud.publish(
        f"{BASE}/cmd", json.dumps({"id": "c1", "action": "infer", "args": {"x": 1}}), qos=1
    )  # a redelivery
    got = acks.wait_count("command_ack", 3)
    assert (got[0].id, got[0].ok, got[0].result) == ("c1", True, {"action": "infer", "args": {"x": 1}})
    assert (got[1].id, got[1].ok, got[1].result) == ("c2", False, None)
    assert got[1].error == "RuntimeError: bundle checksum mismatch"
    assert got[2] == got[0]  # the same ack again, without running the handler twice
    assert calls == ["c1", "c2"]


def test_invalid_commands_get_ok_false_acks_and_the_client_lives_on(
    broker, subscribe, open_clients, tmp_path
):
    acks = subscribe(broker, [f"{BASE}/cmd/ack"])
    client = start_client(broker, tmp_path, open_clients, command_handler=lambda c: object())  # not JSON
    cloud = acks.client
    cloud.publish(f"{BASE}/cmd", b"\xff not json", qos=1)
    cloud.publish(f"{BASE}/cmd", json.dumps({"id": "c3", "action": "explode"}), qos=1)
    cloud.publish(f"{BASE}/cmd", json.dumps({"id": "c4", "action": "status"}), qos=1)
    got = acks.wait_count("command_ack", 3)
    assert (got[0].id, got[0].ok) == (None, False) and "not valid JSON" in got[0].error
    assert (got[1].id, got[1].action, got[1].ok) == ("c3", "explode", False) and "field 'action'" in got[
        1
    ].error
    assert (got[2].id, got[2].ok) == ("c4", False) and "not JSON" in got[2].error
    client.command_handler = None
    cloud.publish(f"{BASE}/cmd", json.dumps({"id": "c5", "action": "status"}), qos=1)
    assert "no command handler" in acks.wait_count("command_ack", 4)[3].error
    assert client.connected


def test_close_flushes_a_backlog_then_goes_offline(make_broker, subscribe, tmp_path):
    broker = make_broker(persistence=True)
    sub = subscribe(broker, [f"{BASE}/events", f"{BASE}/status"], client_id="cloud", persistent=True)
    broker.stop()  # the broker keeps the subscriber's session while it is down
    client = TelemetryClient(client_config(broker, tmp_path / "outbox.sqlite"))
    client.start()
    for i in range(100):
        client.publish_event(Event(label=str(i)))
    assert not client.wait_connected(0.2)
    broker.start()
    assert client.close(flush_timeout=10)  # waits for the connection, then for every PUBACK
    payloads = sub.wait_for(lambda ps: ps and ps[-1].type == "status" and ps[-1].state == "offline")
    assert labels(payloads) == [str(i) for i in range(100)]
    with pytest.raises(TelemetryError, match="closed"):
        client.publish_event(label="late")


def test_set_status_republishes_the_retained_status(broker, subscribe, open_clients, tmp_path):
    sub = subscribe(broker, [f"{BASE}/status", f"{BASE}/events"])
    client = start_client(broker, tmp_path, open_clients)
    client.set_status(model={"name": "ser-small", "version": "2.0.0"})
    client.publish_event(label="x")
    got = sub.wait_for(lambda ps: len(ps) >= 3)
    assert got[1].type == "status" and got[1].model.version == "2.0.0"
    assert got[2].model.name == "ser-small"  # events carry the deployed model by default


def test_wrong_password_is_a_clear_error(make_broker, open_clients, tmp_path):
    broker = make_broker(users={"device": "right-password"})
    auth = {"username": "device", "password": "wrong-password"}
    client = start_client(broker, tmp_path / "a", open_clients, wait=False, config=auth)
    with pytest.raises(
        BrokerRefusedError,
        match=r"refused the connection: (Not authorized|Bad user name or password) \(username 'device'; check 'username' and 'password'",
    ):
        client.wait_connected(10)
    anonymous = start_client(broker, tmp_path / "b", open_clients, wait=False)
    with pytest.raises(BrokerRefusedError, match="Not authorized.*no username"):
        anonymous.wait_connected(10)
    good = start_client(
        broker,
        tmp_path / "c",
        open_clients,
        config={"username": "device", "password": "right-password", "device": "dev2"},
    )
    assert good.connected


def test_falls_back_to_mqtt_311_when_the_broker_refuses_v5(open_clients, tmp_path):
    from tests.edge.telemetry.fake_broker import V311OnlyBroker

    with V311OnlyBroker() as fake:
        client = TelemetryClient(client_config(fake, tmp_path / "outbox.sqlite"))
        open_clients.append(client)
        client.start()
        assert client.wait_connected(10) and client.protocol == "3.1.1"
        fake.wait_for_publish(f"{BASE}/status")
        assert fake.protocol_levels[:2] == [5, 4]  # v5 refused, then 3.1.1
        client.close(flush_timeout=1)


def test_subscriber_helper_sees_nothing_without_a_device(broker):
    # Guards the tests above: a subscriber alone gets no retained status, so what they see is real.
    sub = Subscriber(broker, [f"{BASE}/#"])
    time.sleep(0.2)
    assert sub.messages == []
    sub.close()
