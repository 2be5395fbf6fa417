"""A daemon that cannot trust its key does not start; the fleet ACL on a real Mosquitto."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
import yaml

from edgewise.edge.deploy.broker_acl import (
    PIN_CLIENT_ID,
    add_users,
    broker_config_lines,
    device_user,
    hash_password,
    render_acl,
)
from tests.edge.security.conftest import BASE, DEVICE, FLEET, ack_for, send_command

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
QUIET_S = 1.5  # how long a message that must not arrive is waited for (delivery here takes ms)


def run_daemon(config, tmp_path, **fields):
    path = tmp_path / "daemon.yaml"
    mqtt = {"host": "127.0.0.1", "port": 1, "fleet": FLEET, "device": DEVICE}
    path.write_text(yaml.safe_dump({"root": str(tmp_path / "root"), "mqtt": mqtt, **fields}))
    return subprocess.run(
        [sys.executable, "-m", "edgewise", "daemon", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": REPO},
    )


@pytest.mark.parametrize(
    "content, expected",
    [
        (None, "public key file not found"),
        (b"not a key", "expected a PEM ed25519 public key or 32 raw bytes, got 9 bytes"),
    ],
    ids=["missing", "not-a-key"],
)
def test_an_unusable_public_key_stops_the_daemon_at_start(tmp_path, content, expected):
    key = tmp_path / "fleet.pub"
    if content is not None:
        key.write_bytes(content)
    res = run_daemon(None, tmp_path, public_key=str(key))
    assert res.returncode == 2, res.stdout + res.stderr
    assert f"daemon.yaml: public_key: {key}: {expected}" in res.stderr
    assert "Traceback" not in res.stderr
    assert not (tmp_path / "root" / "health.json").exists()  # it never ran without a model


def test_the_old_download_schemes_field_says_what_replaced_it(tmp_path):
    res = run_daemon(None, tmp_path, download={"schemes": ["http", "https"]})
    assert res.returncode == 2 and "allow_insecure_http" in res.stderr, res.stderr


def test_the_password_hash_is_mosquittos_pbkdf2_format():
    hashed = hash_password("secret", salt=b"0123456789ab")
    assert hashed.startswith("$7$101$MDEyMzQ1Njc4OWFi$") and hashed == hash_password(
        "secret", salt=b"0123456789ab"
    )
    acl = render_acl("lab", ["a"], ["ops"])
    device = "user lab.a\ntopic write edgewise/lab/a/#\ntopic read edgewise/lab/a/cmd\n"
    assert device + "topic read edgewise/lab/a/offload/reply\n" in acl
    operator = "user ops\ntopic read edgewise/lab/#\ntopic write edgewise/lab/+/cmd\n"
    assert operator + "topic write edgewise/lab/+/offload/reply\n" in acl


@pytest.fixture
def acl_broker(make_broker, tmp_path):
    """Mosquitto with the fleet files broker_acl writes: devices a, b and dev1; operator ops."""
    given, _ = add_users(
        tmp_path / "fleet", FLEET, devices=dict.fromkeys(["a", "b", DEVICE]), operators={"ops": None}
    )
    broker = make_broker(password_file=tmp_path / "fleet" / "passwords", acl_file=tmp_path / "fleet" / "acl")
    return broker, given


@pytest.fixture
def pinned_acl_broker(make_broker, tmp_path):
    """Mosquitto configured as broker_config_lines recommends (use_username_as_clientid too):
    devices a, b and dev1; operator ops."""
    given, _ = add_users(
        tmp_path / "fleet", FLEET, devices=dict.fromkeys(["a", "b", DEVICE]), operators={"ops": None}
    )
    lines = broker_config_lines(tmp_path / "fleet")
    assert PIN_CLIENT_ID in lines
    written = {
        "allow_anonymous",
        "password_file",
        "acl_file",
        "set_tcp_nodelay",
    }  # MosquittoBroker writes these
    broker = make_broker(
        password_file=tmp_path / "fleet" / "passwords",
        acl_file=tmp_path / "fleet" / "acl",
        extra_config=[line for line in lines if line.split()[0] not in written],
    )
    return broker, given


def test_a_device_cannot_knock_another_offline_with_its_client_id(pinned_acl_broker, mqtt_clients):
    broker, given = pinned_acl_broker
    a_user, b_user = device_user(FLEET, "a"), device_user(FLEET, "b")
    b_id = f"edgewise-{FLEET}-b"  # the daemon's default client id for device b
    operator = mqtt_clients(broker, "ops", given["ops"])
    b = mqtt_clients(broker, b_user, given[b_user], client_id=b_id)
    assert operator.connected() and b.connected()
    operator.subscribe(f"edgewise/{FLEET}/#")
    a = mqtt_clients(broker, a_user, given[a_user], client_id=b_id)  # a, logged in, with b's id
    assert a.connected()
    time.sleep(QUIET_S)
    assert b.disconnects == [] and b.client.is_connected()
    b.publish(f"edgewise/{FLEET}/b/events", b"b is still here")
    a.publish(f"edgewise/{FLEET}/a/events", b"a works too, as itself")
    assert operator.wait(lambda: len(operator.messages) >= 2, 5)
    got = {(m.topic, m.payload) for m in operator.messages}
    assert got == {
        (f"edgewise/{FLEET}/b/events", b"b is still here"),
        (f"edgewise/{FLEET}/a/events", b"a works too, as itself"),
    }


def test_a_device_reaches_only_its_own_topics(acl_broker, mqtt_clients):
    broker, given = acl_broker
    a_user, b_user = device_user(FLEET, "a"), device_user(FLEET, "b")
    assert not mqtt_clients(broker).connected()  # anonymous: refused
    assert not mqtt_clients(broker, a_user, "wrong").connected()
    operator = mqtt_clients(broker, "ops", given["ops"])
    a = mqtt_clients(broker, a_user, given[a_user])
    b = mqtt_clients(broker, b_user, given[b_user])
    assert operator.connected() and a.connected() and b.connected()
    operator.subscribe(f"edgewise/{FLEET}/#")
    a.subscribe(
        f"edgewise/{FLEET}/a/cmd",
        f"edgewise/{FLEET}/b/cmd",
        f"edgewise/{FLEET}/b/events",
        f"edgewise/{FLEET}/a/offload/reply",
        f"edgewise/{FLEET}/b/offload/reply",
    )

    # as device b, on a connection of its own (Mosquitto drops the message and the connection)
    forger = mqtt_clients(broker, a_user, given[a_user])
    assert forger.connected()
    forger.client.publish(f"edgewise/{FLEET}/b/events", b"forged by a", qos=0)
    a.publish(f"edgewise/{FLEET}/a/events", b"a's own event")  # the positive control
    assert operator.wait(lambda: f"edgewise/{FLEET}/a/events" in operator.topics(), 5)
    b.publish(f"edgewise/{FLEET}/b/events", b"b's own event")  # a must not read b's events either
    operator.publish(f"edgewise/{FLEET}/b/cmd", b"for b")  # a must not read b's commands
    operator.publish(f"edgewise/{FLEET}/b/offload/reply", b"b's answer")  # nor b's cloud answers
    operator.publish(f"edgewise/{FLEET}/a/offload/reply", b"a's answer")  # the cloud answers a
    operator.publish(f"edgewise/{FLEET}/a/cmd", b"for a")  # ... and a gets its own commands
    assert a.wait(lambda: f"edgewise/{FLEET}/a/cmd" in a.topics(), 5)
    time.sleep(QUIET_S)
    assert sorted(a.topics()) == [f"edgewise/{FLEET}/a/cmd", f"edgewise/{FLEET}/a/offload/reply"]
    got = [(m.topic, m.payload) for m in operator.messages]
    assert (f"edgewise/{FLEET}/b/events", b"forged by a") not in got
    assert (f"edgewise/{FLEET}/b/events", b"b's own event") in got


def test_a_daemon_logs_in_and_works_within_its_acl(
    pinned_acl_broker, secure_root, daemons, mqtt_clients, keys
):
    """On the recommended broker config (client ids pinned to logins): the daemon's own client id
    is replaced by its username and it works; another device using that id does not knock it off."""
    broker, given = pinned_acl_broker
    operator = mqtt_clients(broker, "ops", given["ops"])
    assert operator.connected()
    operator.subscribe(*(f"{BASE}/{kind}" for kind in ("status", "telemetry", "events", "cmd/ack")))
    user = device_user(FLEET, DEVICE)
    d = daemons(
        secure_root, broker, {"source": "stdin", "stdin_format": "raw"}, public_key=str(keys["fleet"]["pub"])
    )
    cfg = yaml.safe_load(d.config.read_text())
    cfg["mqtt"] |= {"username": user, "password": given[user]}
    d.config.write_text(yaml.safe_dump(cfg))
    d.start(stdin=subprocess.PIPE)
    d.wait_health(lambda h: h["ok"])
    ack = ack_for(operator, send_command(operator, "status"), timeout=30)  # cmd read, ack written
    assert ack.ok and ack.result["running"] == "ser-tiny/1.0.0"
    assert any(p.type == "status" and p.state == "online" for p in operator.payloads())

    def statuses():
        return [p.state for p in operator.payloads() if p.type == "status"]

    before = statuses()
    a_user = device_user(FLEET, "a")
    intruder = mqtt_clients(broker, a_user, given[a_user], f"edgewise-{FLEET}-{DEVICE}")  # the daemon's id
    assert intruder.connected()
    time.sleep(QUIET_S)
    ack = ack_for(operator, send_command(operator, "status"), timeout=30)
    assert ack.ok
    assert statuses() == before, statuses()  # never knocked off: no offline will, no second login
    assert d.stop() == 0
