"""A paho client's login and TLS, set the same way by every MQTT connection edgewise makes: the
device's telemetry client, and the cloud's ingest workers, offload bridges and registry."""

from __future__ import annotations

import ssl
from typing import Any

from edgewise.edge.telemetry.config import TLSConfig


def apply_login(client: Any, *, username: str | None, password: str | None, tls: TLSConfig | None) -> None:
    """Set ``username``/``password`` (when there is a username) and TLS (when ``tls`` is given:
    the broker verified against ``tls.ca``, the system's CAs when None; a client certificate when
    both ``cert`` and ``key`` are given; ``insecure`` skips verification, for testing only)."""
    if username is not None:
        client.username_pw_set(username, password)
    if tls is not None:
        client.tls_set(
            ca_certs=str(tls.ca) if tls.ca else None,
            certfile=str(tls.cert) if tls.cert else None,
            keyfile=str(tls.key) if tls.key else None,
            cert_reqs=ssl.CERT_NONE if tls.insecure else ssl.CERT_REQUIRED,
        )
        if tls.insecure:
            client.tls_insecure_set(True)
