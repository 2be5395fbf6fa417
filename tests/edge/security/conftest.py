"""Fleet keys, signed bundles, a local https server, and MQTT clients that log in.

The daemon and broker fixtures are the daemon and telemetry folders' (imported, not copied): real
daemon processes and a real Mosquitto. The https server is a real TLS server on 127.0.0.1 with a
self-signed certificate that the daemon trusts through ``download.ca``.
"""

from __future__ import annotations

import http.server
import json
import ssl
import subprocess
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edgewise.bundle import generate_keypair, sign_manifest, write_archive
from edgewise.devtools.tls import self_signed_cert
from edgewise.edge.install import activate, install_bundle
from edgewise.edge.telemetry.schema import decode
from tests.edge.daemon.conftest import bundle_version, daemons  # noqa: F401  (fixture)
from tests.edge.telemetry.conftest import BASE, DEVICE, FLEET, broker, make_broker  # noqa: F401
from tests.loopback_sshd import sshd  # noqa: F401  (fixture)


@pytest.fixture(scope="session")
def keys(tmp_path_factory):
    """Two ed25519 key pairs: ``fleet`` (the devices trust it) and ``other`` (they do not)."""
    folder = tmp_path_factory.mktemp("keys")
    made = {}
    for name in ("fleet", "other"):
        key_id = generate_keypair(folder / f"{name}.key", folder / f"{name}.pub")
        made[name] = {"key": folder / f"{name}.key", "pub": folder / f"{name}.pub", "id": key_id}
    return made


def signed_copy(src: Path, dest_parent: Path, version: str, key: Path | None, **manifest_changes) -> Path:
    """A copy of the bundle folder with ``version`` (and other manifest changes, such as ``name``),
    signed with ``key`` (None: left unsigned)."""
    dest_parent.mkdir(parents=True, exist_ok=True)
    folder = bundle_version(src, dest_parent, version, **manifest_changes)
    if key is not None:
        sign_manifest(folder, key)
    return folder


@pytest.fixture(scope="session")
def signed_v1(ser_bundle, keys, tmp_path_factory):
    """The test bundle (1.0.0) signed with the fleet key: what a secure device runs."""
    return signed_copy(ser_bundle, tmp_path_factory.mktemp("signed-v1"), "1.0.0", keys["fleet"]["key"])


@pytest.fixture
def secure_root(tmp_path, signed_v1):
    """An install root running the fleet-signed 1.0.0."""
    root = tmp_path / "root"
    activate(root, install_bundle(root, signed_v1))
    return root


def archive(folder: Path, www: Path) -> Path:
    www.mkdir(parents=True, exist_ok=True)
    return write_archive(folder, www / f"{folder.name}.tar.gz")


# --------------------------------------------------------------------------------------------------
# https


class FileServer:
    """A real http or https server on 127.0.0.1 serving ``folder``; ``redirects`` maps a path to a
    Location it answers 302 with."""

    def __init__(self, folder: Path, tls: tuple[Path, Path] | None = None) -> None:
        self.redirects: dict[str, str] = {}
        redirects = self.redirects

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, directory=str(folder), **kwargs)

            def do_GET(self):  # noqa: N802
                if self.path in redirects:
                    self.send_response(302)
                    self.send_header("Location", redirects[self.path])
                    self.end_headers()
                    return
                super().do_GET()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        if tls is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*tls)
            self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.scheme = "https" if tls else "http"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"{self.scheme}://127.0.0.1:{self.server.server_address[1]}/{path.lstrip('/')}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def servers(tmp_path):
    """``{"www": folder, "https": FileServer, "http": FileServer, "ca": cert}`` over one folder."""
    www = tmp_path / "www"
    www.mkdir()
    cert, key = self_signed_cert(tmp_path)
    made = {"https": FileServer(www, tls=(cert, key)), "http": FileServer(www)}
    yield {"www": www, "ca": cert, **made}
    for server in made.values():
        server.close()


# --------------------------------------------------------------------------------------------------
# MQTT clients with credentials


class Client:
    """A paho client that logs in (or not), records what it receives, and reports its CONNACK;
    with ``ca`` it connects to the broker's TLS listener and verifies it with that CA."""

    def __init__(
        self,
        mqtt_broker,
        username: str | None = None,
        password: str | None = None,
        client_id: str = "",
        ca: Path | None = None,
    ) -> None:
        self.messages: list[mqtt.MQTTMessage] = []
        self.connack: list = []
        self.granted: list = []
        self.disconnects: list = []  # reason codes of every disconnect (the broker's or ours)
        self._cond = threading.Condition()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id)
        if username is not None:
            self.client.username_pw_set(username, password)
        self._topics: list[str] = []
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda c, u, mid, codes, p: self._note(self.granted, codes)
        self.client.on_message = lambda c, u, m: self._note(self.messages, m)
        self.client.on_disconnect = lambda c, u, flags, code, p: self._note(self.disconnects, code)
        port = mqtt_broker.port
        if ca is not None:  # the broker's TLS listener, verified with its CA
            self.client.tls_set(ca_certs=str(ca))
            port = mqtt_broker.tls_port
        self.client.connect(mqtt_broker.host, port, keepalive=5)
        self.client.loop_start()

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if self._topics and not reason_code.is_failure:  # again after a reconnect (clean session)
            client.subscribe([(t, 1) for t in self._topics])
        self._note(self.connack, reason_code)

    def _note(self, into: list, item) -> None:
        with self._cond:
            into.append(item)
            self._cond.notify_all()

    def wait(self, predicate, timeout: float = 10.0) -> bool:
        with self._cond:
            return self._cond.wait_for(predicate, timeout)

    def connected(self, timeout: float = 5.0) -> bool:
        assert self.wait(lambda: self.connack, timeout), "no CONNACK"
        return not self.connack[0].is_failure

    def subscribe(self, *topics: str) -> None:
        n = len(self.granted)
        self._topics += topics
        self.client.subscribe([(t, 1) for t in topics])
        assert self.wait(lambda: len(self.granted) > n, 5), "no SUBACK"

    def publish(self, topic: str, payload: bytes | str) -> None:
        self.client.publish(topic, payload, qos=1).wait_for_publish(5)

    def topics(self) -> list[str]:
        with self._cond:
            return [m.topic for m in self.messages]

    def payloads(self) -> list:
        with self._cond:
            return [decode(m.payload) for m in self.messages]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def mqtt_clients():
    """``mqtt_clients(broker, username=None, password=None, client_id="")`` -> a started Client,
    closed at the end (an empty client id: paho makes a random one)."""
    made: list[Client] = []

    def make(mqtt_broker, username=None, password=None, client_id="") -> Client:
        client = Client(mqtt_broker, username, password, client_id)
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()


def start_daemon(make_daemon, root, mqtt_broker, **settings):
    """A real daemon (``make_daemon``: the ``daemons`` fixture) on ``root`` with no audio (stdin
    left open), healthy before it is returned."""
    d = make_daemon(root, mqtt_broker, {"source": "stdin", "stdin_format": "raw"}, **settings)
    d.start(stdin=subprocess.PIPE)
    d.wait_health(lambda h: h["ok"])
    return d


def send_command(
    client: Client, action: str, args: dict | None = None, cmd_id: str | None = None, base: str = BASE
) -> str:
    """Publish a command to the device whose topics start with ``base``; returns its id."""
    cmd_id = cmd_id or f"{action}-{time.monotonic_ns()}"
    client.publish(f"{base}/cmd", json.dumps({"id": cmd_id, "action": action, "args": args or {}}))
    return cmd_id


def ack_for(client: Client, cmd_id: str, timeout: float = 60.0):
    """The command_ack with ``cmd_id`` that ``client`` (subscribed to .../cmd/ack) received."""

    def found():
        return next((p for p in client.payloads() if p.type == "command_ack" and p.id == cmd_id), None)

    assert client.wait(lambda: found() is not None, timeout), f"no ack for {cmd_id}: {client.payloads()[-5:]}"
    return found()
