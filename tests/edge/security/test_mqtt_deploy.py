"""MQTT ``deploy`` on a real daemon process: only fleet-signed bundles, over https, never older.

Every refusal leaves the running model as it was: the daemon's health report, ``current`` and the
``status`` command all still name 1.0.0.
"""

from __future__ import annotations

import pytest

from edgewise.bundle import sha256_file
from edgewise.edge.install import status
from tests.edge.security.conftest import BASE, ack_for, archive, send_command, signed_copy, start_daemon

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]
V1 = "ser-tiny/1.0.0"


def still_running_v1(d, root, operator) -> None:
    assert status(root)["current"] == V1
    assert d.health()["model"] == V1 and d.proc.poll() is None
    ack = ack_for(operator, send_command(operator, "status"))
    assert ack.ok and ack.result["running"] == V1


def test_only_a_fleet_signed_newer_bundle_over_https_is_installed(
    secure_root, broker, daemons, mqtt_clients, servers, keys, ser_bundle, tmp_path
):
    fleet, other = keys["fleet"], keys["other"]
    src = tmp_path / "src"
    www = servers["www"]
    unsigned = archive(signed_copy(ser_bundle, src / "u", "1.1.0", None), www)
    wrong = archive(signed_copy(ser_bundle, src / "w", "1.2.0", other["key"]), www)
    older = archive(signed_copy(ser_bundle, src / "o", "0.9.0", fleet["key"]), www)
    good = archive(signed_copy(ser_bundle, src / "g", "1.3.0", fleet["key"]), www)
    tampered_dir = signed_copy(ser_bundle, src / "t", "1.4.0", fleet["key"])
    model = next((tampered_dir / "models").glob("*.onnx"))
    model.write_bytes(model.read_bytes()[:-1] + b"\x01")
    tampered = archive(tampered_dir, www)
    https, http = servers["https"], servers["http"]
    https.redirects["/to-http.tar.gz"] = http.url(good.name)

    operator = mqtt_clients(broker)
    assert operator.connected()
    operator.subscribe(f"{BASE}/cmd/ack")
    d = start_daemon(
        daemons, secure_root, broker, public_key=str(fleet["pub"]), download={"ca": str(servers["ca"])}
    )

    def deploy(url, **args):
        return ack_for(operator, send_command(operator, "deploy", {"url": url, **args}))

    ack = deploy(https.url(unsigned.name))
    assert not ack.ok
    assert ack.error.startswith(f"deploy refused: {https.url(unsigned.name)}: the bundle is not signed")
    assert f"fleet key {fleet['id']}" in ack.error
    still_running_v1(d, secure_root, operator)

    ack = deploy(https.url(wrong.name))
    assert not ack.ok and "the signature does not verify with the fleet key " + fleet["id"] in ack.error
    assert f"signed with key {other['id']}" in ack.error
    still_running_v1(d, secure_root, operator)

    ack = deploy(https.url(older.name))
    assert not ack.ok
    assert "deploy refused: ser-tiny 0.9.0 is older than ser-tiny 1.0.0, installed here before" in ack.error
    assert "rollback" in ack.error
    still_running_v1(d, secure_root, operator)

    ack = deploy(http.url(good.name))  # plain http, without the development flag
    assert not ack.ok and "is plain http" in ack.error and "allow_insecure_http" in ack.error
    ack = deploy(https.url("to-http.tar.gz"))  # https that redirects to http
    assert not ack.ok and f"a redirect from {https.url('to-http.tar.gz')}" in ack.error
    ack = deploy(https.url(tampered.name))  # signed, then an artifact changed
    assert not ack.ok and "sha256 mismatch" in ack.error
    ack = deploy(https.url("missing.tar.gz"))
    assert not ack.ok and "download failed" in ack.error
    ack = deploy("file:///etc/passwd")
    assert not ack.ok and "scheme 'file' not allowed" in ack.error
    still_running_v1(d, secure_root, operator)
    assert not list(secure_root.glob("download-*"))  # nothing left behind by the refusals
    assert sorted(p.name for p in (secure_root / "models" / "ser-tiny").iterdir()) == ["1.0.0"]

    ack = deploy(https.url(good.name), sha256=sha256_file(good))
    assert ack.ok and ack.result["model"] == "ser-tiny/1.3.0" and ack.result["changed"], ack
    assert status(secure_root)["current"] == "ser-tiny/1.3.0"
    ack = deploy(https.url(good.name))  # the same version again: nothing to do, and it says so
    assert ack.ok and ack.result["changed"] is False
    assert ack.result["message"] == "ser-tiny/1.3.0 is already installed and current"
    ack = ack_for(operator, send_command(operator, "rollback"))  # the explicit way back
    assert ack.ok and ack.result["model"] == V1
    assert d.stop() == 0


def test_no_way_down_through_another_model_nor_a_rebuild_taken_for_the_running_version(
    secure_root, broker, daemons, mqtt_clients, servers, keys, ser_bundle, tmp_path, monkeypatch
):
    """All fleet-signed: 2.0.0 runs; 2.0.0+rebuild is refused (not acked as the running one); kws
    0.1.0 runs; ser-tiny 1.5.0 is still refused (2.0.0 was installed before). The archive is unpacked
    under the install root: the daemon's system temp dir (TMPDIR, a folder of its own here) is not
    touched by a deploy (creating and removing anything in it would change its mtime)."""
    systemp = tmp_path / "system-tmp"
    systemp.mkdir()
    monkeypatch.setenv("TMPDIR", str(systemp))  # the daemon process inherits it
    key, www = keys["fleet"]["key"], servers["www"]
    src = tmp_path / "src"
    v2 = archive(signed_copy(ser_bundle, src / "v2", "2.0.0", key), www)
    rebuild = archive(signed_copy(ser_bundle, src / "rebuild", "2.0.0+rebuild", key), www)
    kws = archive(signed_copy(ser_bundle, src / "kws", "0.1.0", key, name="kws"), www)
    older = archive(signed_copy(ser_bundle, src / "older", "1.5.0", key), www)
    operator = mqtt_clients(broker)
    assert operator.connected()
    operator.subscribe(f"{BASE}/cmd/ack")
    d = start_daemon(
        daemons,
        secure_root,
        broker,
        public_key=str(keys["fleet"]["pub"]),
        download={"ca": str(servers["ca"])},
    )
    https = servers["https"]

    def deploy(path):
        return ack_for(operator, send_command(operator, "deploy", {"url": https.url(path.name)}))

    untouched = systemp.stat().st_mtime_ns
    ack = deploy(v2)
    assert ack.ok and ack.result["model"] == "ser-tiny/2.0.0" and ack.result["changed"], ack
    assert systemp.stat().st_mtime_ns == untouched  # nothing created or removed there
    assert not list(secure_root.glob("download-*"))  # the unpacked copy went with the download

    ack = deploy(rebuild)
    assert not ack.ok and ack.error.startswith(
        "deploy refused: ser-tiny 2.0.0+rebuild has the same precedence as ser-tiny 2.0.0"
    )
    assert "build metadata" in ack.error
    assert not (secure_root / "models" / "ser-tiny" / "2.0.0+rebuild").exists()

    ack = deploy(kws)
    assert ack.ok and ack.result["model"] == "kws/0.1.0", ack
    ack = deploy(older)
    assert not ack.ok
    assert "deploy refused: ser-tiny 1.5.0 is older than ser-tiny 2.0.0, installed here before" in ack.error
    assert status(secure_root)["current"] == "kws/0.1.0" and d.health()["model"] == "kws/0.1.0"
    assert not (secure_root / "models" / "ser-tiny" / "1.5.0").exists()

    ack = deploy(v2)  # the highest again, not running: switched to
    assert ack.ok and ack.result["model"] == "ser-tiny/2.0.0" and ack.result["changed"], ack
    assert d.stop() == 0


def test_a_daemon_without_a_key_refuses_every_deploy(
    secure_root, broker, daemons, mqtt_clients, servers, keys, ser_bundle, tmp_path
):
    good = archive(signed_copy(ser_bundle, tmp_path / "src", "1.3.0", keys["fleet"]["key"]), servers["www"])
    operator = mqtt_clients(broker)
    assert operator.connected()
    operator.subscribe(f"{BASE}/cmd/ack")
    d = start_daemon(daemons, secure_root, broker, download={"ca": str(servers["ca"])})
    ack = ack_for(operator, send_command(operator, "deploy", {"url": servers["https"].url(good.name)}))
    assert not ack.ok and ack.error.startswith("deploy refused: this daemon trusts no signing key")
    assert "public_key" in ack.error
    still_running_v1(d, secure_root, operator)
    assert d.stop() == 0


def test_http_is_accepted_only_with_the_development_flag(
    secure_root, broker, daemons, mqtt_clients, servers, keys, ser_bundle, tmp_path
):
    good = archive(signed_copy(ser_bundle, tmp_path / "src", "1.3.0", keys["fleet"]["key"]), servers["www"])
    operator = mqtt_clients(broker)
    assert operator.connected()
    operator.subscribe(f"{BASE}/cmd/ack")
    start_daemon(
        daemons,
        secure_root,
        broker,
        public_key=str(keys["fleet"]["pub"]),
        download={"allow_insecure_http": True},
    )
    ack = ack_for(operator, send_command(operator, "deploy", {"url": servers["http"].url(good.name)}))
    assert ack.ok and ack.result["model"] == "ser-tiny/1.3.0", ack
