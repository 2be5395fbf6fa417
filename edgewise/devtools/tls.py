"""A self-signed TLS certificate for a server on this machine (tests, the demo, emulated boards).

::

    cert, key = self_signed_cert(folder)            # folder/server.pem, folder/server.key
    MosquittoBroker(tls=(cert, key))                # clients trust ``cert`` as their CA

The certificate is its own CA (``CA:true``) and names ``127.0.0.1`` and ``localhost``, so a client
that is given it as its CA file verifies the server's name for real; it is valid for ``days``.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from pathlib import Path


def self_signed_cert(folder: str | os.PathLike, host: str = "127.0.0.1", days: int = 7) -> tuple[Path, Path]:
    """Write ``server.pem`` (the certificate, also the clients' CA) and ``server.key`` (mode 0600)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    names: list[x509.GeneralName] = [x509.DNSName("localhost")]
    try:
        names.append(x509.IPAddress(ipaddress.ip_address(host)))
    except ValueError:
        names.append(x509.DNSName(host))
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "server.pem", folder / "server.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.touch(mode=0o600)
    key_path.chmod(0o600)
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path
