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
