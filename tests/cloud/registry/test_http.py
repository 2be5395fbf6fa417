"""The registry's HTTP refusals, on a real server: each names the problem, nothing is stored half."""

from __future__ import annotations

import pytest
import yaml

from edgewise.cloud.serve.auth import hash_token, new_token, write_secret
from edgewise.devtools.mosquitto import free_port
from edgewise.devtools.tls import self_signed_cert
from tests.cloud.serve.conftest import ServerProcess

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def server(tmp_path, keys):
    """A registry without a broker or fleet store (promotions can be recorded, not sent)."""
    folder = tmp_path / "cloud"
    self_signed_cert(folder / "tls")
    token = new_token()
    (folder / "tokens.sha256").write_text(hash_token(token) + "\n")
    write_secret(folder / "client" / "token", token + "\n")
    config = {
        "port": free_port(),
        "registry": {"root": "registry", "public_key": str(keys["fleet"]["pub"]), "max_push_bytes": 4096},
    }
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    server = ServerProcess(folder / "config.yaml", tmp_path / "serve.log").start()
    yield server
    server.stop()


def error(reply) -> tuple[int, str, str]:
    status, body, _ = reply
    return status, body["error"]["code"], body["error"]["message"]


def test_the_registry_refuses_what_it_cannot_take_and_says_why(server):
    assert error(server.request("GET", "/registry/v1/bundles", auth=False))[:2] == (401, "unauthorized")
    assert error(server.request("GET", "/registry/v1/bundles", auth="wrong"))[:2] == (401, "unauthorized")
    status, code, message = error(server.request("POST", "/registry/v1/bundles", raw=b"x" * 5000))
    assert (status, code) == (413, "too_large") and "over the limit of 4096" in message
    status, code, message = error(server.request("POST", "/registry/v1/bundles", raw=b""))
    assert (status, code) == (400, "bundle_refused") and "empty body" in message
    status, code, message = error(server.request("POST", "/registry/v1/bundles", raw=b"not a tarball"))
    assert (status, code) == (400, "bundle_refused") and "not a bundle" in message
    status, code, message = error(server.request("GET", "/registry/v1/bundles/ser-tiny/1.0.0"))
    assert (status, code) == (404, "not_found") and "no versions of ser-tiny" in message
    status, code, message = error(server.request("GET", "/registry/v1/bundles/ser-tiny/1.0/archive"))
    assert (status, code) == (400, "bundle_refused") and "semantic version" in message
    for body, wanted in [
        ({"name": "ser-tiny"}, "the body must be"),
        ({"name": "ser-tiny", "version": "1.0.0", "colour": "red"}, "unknown field(s) ['colour']"),
        ({"name": "ser-tiny", "version": "1.0.0"}, "no versions of ser-tiny"),
    ]:
        status, _, message = error(server.request("POST", "/registry/v1/fleets/lab/promote", body))
        assert status in (400, 404) and wanted in message, message
    status, code, message = error(server.request("GET", "/registry/v1/fleets/a+b"))
    assert (status, code) == (400, "bad_fleet") and "fleet 'a+b'" in message
    assert not (server.config.parent / "registry" / "bundles").exists()  # nothing stored, not even half
    _, metrics, _ = server.request("GET", "/metrics")
    counted = {
        line.split('reason="')[1].split('"')[0]: float(line.rsplit(" ", 1)[1])
        for line in metrics.decode().splitlines()
        if line.startswith("edgewise_serve_rejected_total") and "registry_" in line
    }
    assert counted == {
        "registry_unauthorized": 2,
        "registry_too_large": 1,
        "registry_bundle_refused": 3,
        "registry_not_found": 2,
        "registry_bad_request": 2,
        "registry_bad_fleet": 1,
    }, counted
