"""The Mosquitto helper: a lossless config, a clear error when mosquitto is missing or fails."""

import pytest

from edgewise.devtools.mosquitto import BrokerError, MosquittoBroker, accepts_connections, find_tool
from edgewise.errors import MissingDependencyError

pytestmark = pytest.mark.timeout(60)


def test_missing_mosquitto_says_how_to_install_it(tmp_path, monkeypatch):
    with pytest.raises(MissingDependencyError, match="apt-get install mosquitto"):
        MosquittoBroker(executable=tmp_path / "no-such-mosquitto")
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr("edgewise.devtools.mosquitto._SEARCH", (str(tmp_path),))
    with pytest.raises(MissingDependencyError, match="mosquitto .*not installed.*apt-get install mosquitto"):
        find_tool("mosquitto")


def test_config_loses_nothing_and_the_port_is_reusable(make_broker):
    broker = make_broker()
    text = broker.config_text()
    for line in (f"listener {broker.port} 127.0.0.1", "max_queued_messages 0", "max_inflight_messages 0"):
        assert line in text.splitlines()
    assert "allow_anonymous true" in text
    port = broker.port
    broker.stop()
    assert not broker.running and not accepts_connections(broker.host, port)
    broker.start()
    assert broker.running and broker.port == port and accepts_connections(broker.host, port)


def test_a_broker_that_cannot_start_reports_its_log(make_broker):
    with pytest.raises(BrokerError, match="mosquitto exited at start.*(?s:.*)no_such_option"):
        make_broker(extra_config=["no_such_option 1"])


def test_password_file_turns_off_anonymous_access(make_broker):
    broker = make_broker(users={"a": "pw-a", "b": "pw-b"})
    text = broker.config_text()
    assert "allow_anonymous false" in text and f"password_file {broker.password_file}" in text
    users = [line.split(":")[0] for line in broker.password_file.read_text().splitlines()]
    assert users == ["a", "b"]


def test_a_tls_listener_takes_clients_that_trust_its_certificate_only(make_broker, tmp_path):
    """The TLS listener the demo and the board tests use: a client given the broker's certificate
    as its CA connects (and logs in); one that trusts only the system CAs is refused at the handshake."""
    import ssl

    import paho.mqtt.client as mqtt

    from edgewise.devtools.tls import self_signed_cert

    cert, key = self_signed_cert(tmp_path / "tls")
    assert oct(key.stat().st_mode & 0o777) == "0o600"
    broker = make_broker(users={"dev": "pw"}, tls=(cert, key))
    assert f"listener {broker.tls_port} 127.0.0.1" in broker.config_text().splitlines()

    def connect(ca: str | None) -> int:
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        client.username_pw_set("dev", "pw")
        client.tls_set(ca_certs=ca)
        try:
            return int(client.connect(broker.host, broker.tls_port, keepalive=5))
        finally:
            client.disconnect()

    assert connect(str(cert)) == 0
    with pytest.raises(ssl.SSLCertVerificationError):
        connect(None)
    with pytest.raises(BrokerError, match="tls: .*no such file"):
        MosquittoBroker(tls=(tmp_path / "nope.pem", key))
