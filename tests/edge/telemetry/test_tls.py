"""TLS to the broker: a private CA, a server certificate for 127.0.0.1, and the client's tls config."""

import datetime
import ipaddress

import pytest

from edgewise.edge.telemetry.client import TelemetryClient
from tests.edge.telemetry.conftest import BASE, client_config

pytestmark = pytest.mark.timeout(60)


def write_certificates(folder):
    """ca.pem, server.pem and server.key (CA-signed, for IP 127.0.0.1)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)

    def cert(subject, issuer, key, signer, *, ca):
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if not ca:
            san = x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
            builder = builder.add_extension(san, critical=False)
        return builder.sign(signer, hashes.SHA256())

    ca_key, server_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_cert = cert("edgewise test CA", "edgewise test CA", ca_key, ca_key, ca=True)
    server_cert = cert("127.0.0.1", "edgewise test CA", server_key, ca_key, ca=False)
    pem = serialization.Encoding.PEM
    (folder / "ca.pem").write_bytes(ca_cert.public_bytes(pem))
    (folder / "server.pem").write_bytes(server_cert.public_bytes(pem))
    (folder / "server.key").write_bytes(
        server_key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return folder / "ca.pem"


def test_tls_with_a_private_ca(make_broker, subscribe, tmp_path):
    certs = tmp_path / "certs"
    certs.mkdir()
    ca = write_certificates(certs)
    tls_lines = [f"cafile {ca}", f"certfile {certs / 'server.pem'}", f"keyfile {certs / 'server.key'}"]
    broker = make_broker(extra_config=tls_lines)
    sub = subscribe(broker, [f"{BASE}/events"], tls_ca=ca)  # someone reads it (else PUBACK 0x10)

    verified = TelemetryClient(client_config(broker, tmp_path / "a.sqlite", tls={"ca": str(ca)}))
    verified.start()
    assert verified.wait_connected(10)
    verified.publish_event(label="over tls")
    assert verified.close(flush_timeout=5)  # True: the broker acknowledged the event
    assert [p.label for p in sub.wait_count("event", 1)] == ["over tls"]

    # Without our CA the system store cannot verify the broker: no connection, nothing sent.
    unverified = TelemetryClient(client_config(broker, tmp_path / "b.sqlite", tls={}, device="dev2"))
    unverified.start()
    unverified.publish_event(label="never")
    assert not unverified.wait_connected(0.5)
    assert not unverified.close(flush_timeout=0)

    insecure = TelemetryClient(
        client_config(broker, tmp_path / "c.sqlite", tls={"insecure": True}, device="dev3")
    )
    insecure.start()
    assert insecure.wait_connected(10)
    assert insecure.close(flush_timeout=1)
