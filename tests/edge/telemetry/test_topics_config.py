"""Topic layout and config validation: bad ids and unknown keys are ConfigErrors naming the field."""

import pytest

from edgewise.edge.telemetry.client import TelemetryClient
from edgewise.edge.telemetry.config import TelemetryConfig
from edgewise.edge.telemetry.topics import Topics, fleet_filter, parse_topic
from edgewise.errors import ConfigError

GOOD = {"fleet": "lab", "device": "pi-01", "outbox_path": "outbox.sqlite"}


def test_topic_layout():
    t = Topics("lab", "pi-01")
    assert (t.status, t.telemetry, t.events, t.cmd, t.cmd_ack) == (
        "edgewise/lab/pi-01/status",
        "edgewise/lab/pi-01/telemetry",
        "edgewise/lab/pi-01/events",
        "edgewise/lab/pi-01/cmd",
        "edgewise/lab/pi-01/cmd/ack",
    )
    assert fleet_filter("lab", "status") == "edgewise/lab/+/status"
    assert parse_topic(t.cmd_ack) == ("lab", "pi-01", "cmd/ack")
    with pytest.raises(ValueError, match="not an edgewise device topic"):
        parse_topic("edgewise/lab/pi-01/other")


@pytest.mark.parametrize("bad", ["", "a/b", "+", "fleet#", "$SYS", "tab\there"])
@pytest.mark.parametrize("field", ["fleet", "device"])
def test_bad_ids_are_refused_naming_the_field(field, bad):
    kwargs = {"fleet": "lab", "device": "pi-01", field: bad}
    with pytest.raises(ConfigError, match=f"field '{field}'"):
        Topics(**kwargs)
    with pytest.raises(ConfigError, match=f"field '{field}'"):
        TelemetryConfig.load({**GOOD, field: bad})


def test_unknown_key_is_refused_naming_it():
    with pytest.raises(ConfigError, match="unknown field 'hots'"):
        TelemetryConfig.load({**GOOD, "hots": "broker.local"})


def test_client_refuses_a_bad_config_before_touching_disk(tmp_path):
    outbox = tmp_path / "outbox.sqlite"
    with pytest.raises(ConfigError, match="field 'fleet'.*'/'"):
        TelemetryClient({**GOOD, "fleet": "a/b", "outbox_path": str(outbox)})
    assert not outbox.exists()


def test_yaml_config_errors_name_nested_fields(tmp_path):
    cert = tmp_path / "client.crt"
    cert.write_text("not really a certificate")
    path = tmp_path / "telemetry.yaml"
    path.write_text(
        "fleet: lab\ndevice: pi-01\noutbox_path: o.sqlite\nport: 99999\n"
        f"tls:\n  cert: {cert}\n  ca: {tmp_path / 'missing-ca.pem'}\n"
    )
    with pytest.raises(ConfigError) as err:
        TelemetryConfig.load(path)
    msg = str(err.value)
    assert f"{path}: field 'port'" in msg
    assert "field 'tls.ca'" in msg and "file not found" in msg
    path.write_text(f"fleet: lab\ndevice: pi-01\noutbox_path: o.sqlite\ntls:\n  cert: {cert}\n")
    with pytest.raises(ConfigError, match="field 'tls': .*'cert' and 'key' go together"):
        TelemetryConfig.load(path)


def test_config_consistency_and_defaults():
    with pytest.raises(ConfigError, match="reconnect_max_s .* below reconnect_min_s"):
        TelemetryConfig.load({**GOOD, "reconnect_min_s": 5, "reconnect_max_s": 1})
    with pytest.raises(ConfigError, match="password needs a username"):
        TelemetryConfig.load({**GOOD, "password": "x"})
    with pytest.raises(ConfigError, match="field 'telemetry_qos'"):
        TelemetryConfig.load({**GOOD, "telemetry_qos": 2})
    with pytest.raises(ConfigError, match="no_subscriber_retry_max_s .* below no_subscriber_retry_min_s"):
        TelemetryConfig.load({**GOOD, "no_subscriber_retry_min_s": 5, "no_subscriber_retry_max_s": 2})
    with pytest.raises(ConfigError, match="field 'no_subscriber_retry_min_s'"):
        TelemetryConfig.load({**GOOD, "no_subscriber_retry_min_s": 0})  # would probe without pause
    cfg = TelemetryConfig.load({**GOOD, "protocol": 5, "username": "u", "password": "secret"})
    assert cfg.protocol == "5" and cfg.resolved_client_id == "edgewise-lab-pi-01"
    assert (cfg.no_subscriber_retry_min_s, cfg.no_subscriber_retry_max_s) == (1.0, 30.0)
    assert "secret" not in repr(cfg)  # the password is a SecretStr


def test_tls_and_outbox_paths_under_home_are_expanded(tmp_path, monkeypatch):
    """bootstrap writes ``tls.ca: ~/.local/share/edgewise/keys/mqtt-ca.pem`` for a profile rooted
    under ``~``: the ``~`` is the user's home, not a folder named '~' in the working directory."""
    home = tmp_path / "home"
    keys = home / ".local/share/edgewise/keys"
    keys.mkdir(parents=True)
    for name in ("mqtt-ca.pem", "device.pem", "device.key"):
        (keys / name).write_text("-----BEGIN CERTIFICATE-----\n")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "telemetry.yaml"
    path.write_text(
        "fleet: lab\ndevice: pi-01\noutbox_path: ~/.local/share/edgewise/outbox.db\ntls:\n"
        "  ca: ~/.local/share/edgewise/keys/mqtt-ca.pem\n"
        "  cert: ~/.local/share/edgewise/keys/device.pem\n"
        "  key: ~/.local/share/edgewise/keys/device.key\n"
    )
    config = TelemetryConfig.load(path)
    assert config.tls.ca == keys / "mqtt-ca.pem"
    assert (config.tls.cert, config.tls.key) == (keys / "device.pem", keys / "device.key")
    assert config.outbox_path == home / ".local/share/edgewise/outbox.db"
    (keys / "mqtt-ca.pem").unlink()
    with pytest.raises(ConfigError, match=f"field 'tls.ca'.*file not found: {keys / 'mqtt-ca.pem'}"):
        TelemetryConfig.load(path)
