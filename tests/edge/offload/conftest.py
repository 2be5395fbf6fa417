"""A fake cloud over real HTTPS (its own self-signed certificate and a bearer token) and offload
configs pointing at it."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgewise.devtools.tls import self_signed_cert
from edgewise.edge.offload.config import OffloadConfig, resolve_offload
from tests.edge.daemon.conftest import daemons, root  # noqa: F401  (fixtures)
from tests.edge.offload.fake_cloud import CloudBehaviour, FakeCloud
from tests.edge.telemetry.conftest import broker, make_broker, subscribe  # noqa: F401  (fixtures)

TOKEN = "t0ken-for-tests_0123456789"
RULES = {
    "ser": {"model": "ser-teacher", "below": 0.6},
    "rec": {"model": "onerec-8b"},
    "vision": {"model": "keye-vl-8b"},
}


@pytest.fixture
def cert(tmp_path) -> tuple[Path, Path]:
    return self_signed_cert(tmp_path / "tls")


@pytest.fixture
def token_file(tmp_path) -> Path:
    path = tmp_path / "cloud.token"
    path.write_text(TOKEN + "\n")
    path.chmod(0o600)
    return path


@pytest.fixture
def cloud(cert):
    """A running fake cloud (HTTPS, token required); stopped at the end."""
    fake = FakeCloud(CloudBehaviour(token=TOKEN), cert)
    yield fake
    fake.stop()


def make_config(url: str | None, token_file: Path | None, ca_file: Path | None, **overrides) -> OffloadConfig:
    """A checked offload config (what the daemon runs with): the fake cloud, all three tasks, and
    fast timings unless overridden."""
    section = {
        "url": url,
        "token_file": str(token_file) if token_file else None,
        "ca_file": str(ca_file) if ca_file else None,
        "timeout_s": 0.5,
        "retries": 1,
        "backoff": {"base_s": 0.05, "max_s": 0.2, "jitter": 0.5},
        "breaker": {"failures": 3, "cooldown_s": 0.5},
        **RULES,
        **overrides,
    }
    config = resolve_offload(None, {k: v for k, v in section.items() if v is not None}, "test")
    assert config is not None
    return config


@pytest.fixture
def config_for(cloud, token_file, cert):
    """``config_for(**overrides)`` -> an OffloadConfig for the fake cloud."""
    return lambda **overrides: make_config(cloud.url, token_file, cert[0], **overrides)
