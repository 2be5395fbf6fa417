"""The ``offload:`` section: when the device asks the cloud, how, and how long it waits.

It lives in two places, merged key by key (nested mappings too), the daemon's over the profile's:

- the device profile (``edgewise/devices/*.yaml``, :class:`edgewise.devices.DeviceProfile`): the
  policy that suits the device and its link (timeouts, retries, breaker, when to ask);
- ``daemon.yaml`` (``offload:``): the site (the cloud's ``url``, ``token_file``, ``ca_file``), and
  any override (``enabled: false`` turns offload off on one device).

::

    offload:
      route: http                  # or mqtt: through the daemon's broker connection
      url: https://cloud.example:8443  # the server's base URL (the one that serves /health)
      token_file: /etc/edgewise/cloud.token  # the bearer token, one line (keep it 0600)
      ca_file: /etc/edgewise/cloud.pem       # the CA (or self-signed cert) that signs the cloud's TLS
      timeout_s: 2.0               # one attempt's limit
      retries: 1                   # attempts after the first (timeouts, unreachable, 5xx, 429)
      backoff: {base_s: 0.2, max_s: 2.0, jitter: 0.5}
      breaker: {failures: 5, cooldown_s: 30}
      ser: {model: ser-teacher, below: 0.6}   # ask when the top probability is below 0.6
      rec: {model: onerec-8b}      # ask when k or beam is over the bundle's, or candidates: cloud
      vision: {model: keye-vl-8b}  # the describe command: always (no on-device model)

A task without its section is never offloaded. The url must be https; plain http is accepted for
a loopback host only (127.0.0.0/8, ::1, localhost). The section of a profile is checked for its
shape when the profile loads (a profile is read on a workstation too, where the device's files do
not exist); :func:`resolve_offload` checks the merged section in full (url present for the http
route, files present, a task named) where it will run: the daemon at start, ``edgewise recommend
--offload``. Errors name the file and field.

The longest a request can wait before the device's answer is used (:attr:`OffloadConfig.max_wait_s`)
is ``timeout_s * (retries + 1)`` plus the backoff delays (at most ``min(max_s, base_s * 2**i)``
before retry ``i + 1``).
"""

from __future__ import annotations

import ipaddress
import urllib.parse
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator

from edgewise.config import StrictModel, load_config
from edgewise.errors import ConfigError

LOOPBACK_NAMES = ("localhost",)
MAX_TOKEN_BYTES = 4096


class Backoff(StrictModel):
    """Delay before retry ``i + 1``: ``min(max_s, base_s * 2**i)``, cut by up to ``jitter`` of
    itself at random (0: always the full delay; 1: anything from 0 to it)."""

    base_s: float = Field(0.2, gt=0, le=60)
    max_s: float = Field(2.0, gt=0, le=600)
    jitter: float = Field(0.5, ge=0, le=1)

    def ceiling(self, retry: int) -> float:
        """The delay before retry ``retry + 1`` without jitter (its upper bound)."""
        return min(self.max_s, self.base_s * 2**retry)


class BreakerSettings(StrictModel):
    """``failures`` failed requests in a row open the breaker: no request goes out (the device's
    answer is used at once) for ``cooldown_s``; then one trial request (half-open) closes it on
    success or opens it again."""

    failures: int = Field(5, ge=1, le=1000)
    cooldown_s: float = Field(30.0, gt=0, le=86400)


class SerRule(StrictModel):
    """Ask the cloud when the device's top probability is below ``below``."""

    model: str = Field(min_length=1, max_length=256)
    below: float = Field(0.6, gt=0, le=1)


class RecRule(StrictModel):
    """Ask the cloud when a request wants more than the bundle gives: ``k`` above its ``top_k``,
    ``beam`` above its beam, or ``candidates: "cloud"``."""

    model: str = Field(min_length=1, max_length=256)


class VisionRule(StrictModel):
    """Image and video understanding (the ``describe`` command): always the cloud."""

    model: str = Field(min_length=1, max_length=256)
    max_tokens: int = Field(256, ge=1, le=32768)
    prompt: str = Field("Describe this image.", min_length=1, max_length=4000)


class OffloadConfig(StrictModel):
    enabled: bool = True
    route: Literal["http", "mqtt"] = "http"
    url: str | None = None  # the http route's server; unused by the mqtt route
    token_file: Path | None = None
    ca_file: Path | None = None
    timeout_s: float = Field(2.0, gt=0, le=600)
    retries: int = Field(1, ge=0, le=10)
    backoff: Backoff = Backoff()
    breaker: BreakerSettings = BreakerSettings()
    max_reply_mb: float = Field(16.0, gt=0, le=1024)
    ser: SerRule | None = None
    rec: RecRule | None = None
    vision: VisionRule | None = None

    @field_validator("url")
    @classmethod
    def _url(cls, url: str | None) -> str | None:
        return None if url is None else check_url(url)

    @field_validator("token_file", "ca_file")
    @classmethod
    def _home(cls, path: Path | None) -> Path | None:
        return None if path is None else path.expanduser()

    @property
    def max_wait_s(self) -> float:
        """The longest a request waits for the cloud before the device's answer is used."""
        backoff = sum(self.backoff.ceiling(i) for i in range(self.retries))
        return self.timeout_s * (self.retries + 1) + backoff

    @property
    def tasks(self) -> list[str]:
        return [name for name in ("ser", "rec", "vision") if getattr(self, name) is not None]


class _Section(StrictModel):
    """The section under its own name, so that errors read ``field 'offload.timeout_s'``."""

    offload: OffloadConfig


def check_url(url: str) -> str:
    """The cloud's base URL, without a trailing ``/``; ValueError unless https (or http to loopback)."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ValueError(f"expected an https:// URL of the cloud server, got {url!r}")
    if parts.username or parts.password:
        raise ValueError("a URL must not carry credentials: put the bearer token in token_file")
    if parts.query or parts.fragment:
        raise ValueError(f"expected the server's base URL without a query or fragment, got {url!r}")
    if parts.scheme == "http" and not is_loopback(parts.hostname):
        raise ValueError(
            f"plain http is allowed only to a loopback host (127.0.0.1, ::1, localhost), got {url!r}; "
            "use https (and ca_file for the cloud's own certificate)"
        )
    try:
        parts.port  # noqa: B018  (raises on a port out of range)
    except ValueError as exc:
        raise ValueError(f"{url!r}: {exc}") from None
    return url.rstrip("/")


def is_loopback(host: str) -> bool:
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """``override`` over ``base``, key by key; nested mappings are merged the same way."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def resolve_offload(
    profile_section: OffloadConfig | None, override: Mapping[str, Any] | None, where: str
) -> OffloadConfig | None:
    """The offload settings a device runs with: ``override`` (daemon.yaml's ``offload:``) merged
    over the profile's section, checked in full; None when neither has one or it is disabled.

    ``where`` names the override's file for errors (the profile's own problems were reported when
    it loaded). Raises ConfigError naming the field: an http route without ``url``, a missing
    ``token_file`` or ``ca_file``, a token file that is empty, no task section.
    """
    if profile_section is None and override is None:
        return None
    if override is not None and not isinstance(override, Mapping):
        raise ConfigError(f"{where}: field 'offload': expected a mapping, got {type(override).__name__}")
    base = profile_section.model_dump(exclude_unset=True, mode="python") if profile_section else {}
    config = load_config(_Section, {"offload": merge(base, override or {})}, name=where).offload
    if not config.enabled:
        return None
    if config.route == "http" and config.url is None:
        raise ConfigError(
            f"{where}: field 'offload.url' is required for route http (the cloud server's https:// URL)"
        )
    for name in ("token_file", "ca_file"):
        path = getattr(config, name)
        if path is not None and not path.is_file():
            raise ConfigError(f"{where}: field 'offload.{name}': file not found: {path}")
    if config.token_file is not None:
        read_token(config.token_file, f"{where}: field 'offload.token_file'")
    if not config.tasks:
        raise ConfigError(
            f"{where}: field 'offload': no task to offload; give at least one of 'ser', 'rec', 'vision'"
        )
    return config


def read_token(path: Path, where: str) -> str:
    """The bearer token: the file's one line, printable ASCII, no spaces."""
    try:
        raw = path.read_bytes()[: MAX_TOKEN_BYTES + 1]
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read {path}: {exc.strerror or exc}") from None
    token = raw.decode("ascii", "replace").strip()
    if not token:
        raise ConfigError(f"{where}: {path} is empty; expected the bearer token on one line")
    if len(raw) > MAX_TOKEN_BYTES or not all(33 <= ord(c) < 127 for c in token):
        raise ConfigError(
            f"{where}: {path} does not hold one token (printable ASCII, no spaces, at most "
            f"{MAX_TOKEN_BYTES} bytes)"
        )
    return token
