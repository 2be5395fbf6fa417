"""``edge-deploy --bootstrap`` over a real (loopback) sshd writes a device secure from first boot."""

from __future__ import annotations

import stat

import pytest
import yaml

from edgewise.devtools.tls import self_signed_cert
from edgewise.edge.deploy import inventory
from edgewise.edge.deploy.broker_acl import read_password_file
from edgewise.edge.deploy.cli import main

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


@pytest.fixture(autouse=True)
def inventory_file(tmp_path, monkeypatch):
    path = tmp_path / "inventory" / "devices.json"
    monkeypatch.setenv("EDGEWISE_INVENTORY", str(path))
    return path


def mode(path):
    return stat.S_IMODE(path.stat().st_mode)


def test_bootstrap_installs_the_key_credentials_tls_and_the_broker_acl(sshd, tmp_path, keys, capsys):
    root, broker_dir = tmp_path / "device", tmp_path / "broker"
    ca, _ = self_signed_cert(tmp_path)
    base = [*sshd["flags"], "--device", "local", "--root", str(root), "--bootstrap", "--skip-install"]
    base += [
        "--fleet",
        "lab",
        "--device-id",
        "pi-7",
        "--mqtt-host",
        "broker.lan",
        "--broker-dir",
        str(broker_dir),
    ]

    assert main(base) == 2  # no fleet key: refused before the device is touched
    assert "--bootstrap needs the fleet's public key" in capsys.readouterr().err and not root.exists()

    assert main([*base, "--key", str(keys["fleet"]["pub"]), "--mqtt-ca", str(ca)]) == 0
    out = capsys.readouterr().out
    config = root / "daemon.yaml"
    data = yaml.safe_load(config.read_text())
    assert mode(config) == 0o600  # it holds the device's broker password
    assert data["public_key"] == f"{root}/keys/fleet.pub"
    assert (root / "keys" / "fleet.pub").read_bytes() == keys["fleet"]["pub"].read_bytes()
    mqtt = data["mqtt"]
    assert (mqtt["host"], mqtt["port"], mqtt["username"]) == ("broker.lan", 8883, "lab.pi-7")
    assert mqtt["tls"] == {"ca": f"{root}/keys/mqtt-ca.pem"} and len(mqtt["password"]) >= 24
    assert (root / "keys" / "mqtt-ca.pem").read_bytes() == ca.read_bytes()

    from edgewise.edge.daemon import load_daemon_config

    cfg, telemetry = load_daemon_config(config)  # the daemon accepts it: key readable, TLS CA there
    assert cfg.public_key == root / "keys" / "fleet.pub" and telemetry.username == "lab.pi-7"

    users = read_password_file(broker_dir / "passwords")
    assert list(users) == ["lab.pi-7"] and users["lab.pi-7"].startswith("$7$")
    assert mqtt["password"] not in (broker_dir / "passwords").read_text()  # only the hash
    acl = (broker_dir / "acl").read_text()
    assert "user lab.pi-7\ntopic write edgewise/lab/pi-7/#\ntopic read edgewise/lab/pi-7/cmd\n" in acl
    assert mode(broker_dir / "passwords") == 0o600 and "broker: user lab.pi-7 added" in out
    assert inventory.load()["pi-7"]["root"] == str(root)

    # again: the kept daemon.yaml keeps its login, so the broker entry is left alone
    assert main([*base, "--key", str(keys["fleet"]["pub"])]) == 0
    assert "daemon.yaml was kept" in capsys.readouterr().out
    assert read_password_file(broker_dir / "passwords") == users
