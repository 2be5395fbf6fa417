"""The telemetry client's settings: where the broker is, who the device is, how to deliver.

::

    config = TelemetryConfig.load("telemetry.yaml")        # or a mapping; errors name the field
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from edgewise.config import StrictModel, load_config
from edgewise.edge.telemetry.topics import id_problem


class TLSConfig(StrictModel):
    """TLS to the broker. ``ca``: CA bundle to verify the broker (system CAs when null);
    ``cert``/``key``: client certificate and key (both or neither); ``insecure``: skip certificate
    and host name verification (testing only). A leading ``~`` in a path is the user's home (as
    bootstrap writes it for a profile rooted under ``~``)."""

    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None
    insecure: bool = False

    @field_validator("ca", "cert", "key")
    @classmethod
    def _exists(cls, path: Path | None) -> Path | None:
        if path is None:
            return None
        path = path.expanduser()
        if not path.is_file():
            raise ValueError(f"file not found: {path}")
        return path

    @model_validator(mode="after")
    def _cert_and_key(self) -> TLSConfig:
        if (self.cert is None) != (self.key is None):
            raise ValueError("'cert' and 'key' go together: give both or neither")
        return self


class TelemetryConfig(StrictModel):
    """Everything the client needs; load from YAML or a mapping with :meth:`load`."""

    host: str = Field("localhost", min_length=1)
    port: int = Field(1883, ge=1, le=65535)
    fleet: str
    device: str
    client_id: str | None = Field(None, min_length=1, description="default: edgewise-FLEET-DEVICE")
    username: str | None = None
    password: SecretStr | None = None
    tls: TLSConfig | None = None
    keepalive_s: int = Field(30, ge=5, le=65535)
    reconnect_min_s: float = Field(1.0, gt=0)
    reconnect_max_s: float = Field(60.0, gt=0)
    protocol: Literal["auto", "5", "3.1.1"] = "auto"
    telemetry_qos: Literal[0, 1] = 0
    outbox_path: Path
    outbox_max_rows: int = Field(10_000, ge=1)
    outbox_max_bytes: int = Field(64 * 1024 * 1024, ge=1024)
    outbox_sync: Literal["normal", "full"] = "full"  # full: a put survives a power cut (see outbox)
    max_inflight: int = Field(100, ge=1, le=10_000)
    # A QoS 1 message the broker had no subscriber for (MQTT 5 PUBACK 0x10) or over a quota (0x97)
    # stays in the outbox; its topic is tried again after min_s, doubling up to max_s (see client).
    no_subscriber_retry_min_s: float = Field(1.0, ge=0.05)
    no_subscriber_retry_max_s: float = Field(30.0, ge=0.05)
    max_command_bytes: int = Field(8 * 1024 * 1024, ge=1024)  # larger commands are refused unread

    @field_validator("fleet", "device", mode="before")
    @classmethod
    def _topic_level(cls, value: Any) -> Any:
        problem = id_problem(value)
        if problem:
            raise ValueError(problem)
        return value

    @field_validator("outbox_path")
    @classmethod
    def _home(cls, path: Path) -> Path:
        return path.expanduser()

    @field_validator("protocol", mode="before")
    @classmethod
    def _protocol_str(cls, value: Any) -> Any:
        return str(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else value

    @model_validator(mode="after")
    def _consistent(self) -> TelemetryConfig:
        if self.reconnect_max_s < self.reconnect_min_s:
            raise ValueError(
                f"reconnect_max_s ({self.reconnect_max_s:g}) is below reconnect_min_s ({self.reconnect_min_s:g})"
            )
        if self.no_subscriber_retry_max_s < self.no_subscriber_retry_min_s:
            raise ValueError(
                f"no_subscriber_retry_max_s ({self.no_subscriber_retry_max_s:g}) is below "
                f"no_subscriber_retry_min_s ({self.no_subscriber_retry_min_s:g})"
            )
        if self.password is not None and self.username is None:
            raise ValueError("a password needs a username")
        return self

    @classmethod
    def load(
        cls, source: str | os.PathLike | Mapping[str, Any], *, name: str | None = None
    ) -> TelemetryConfig:
        """Validate a YAML file or a mapping; a ConfigError names the bad field."""
        if isinstance(source, Mapping):
            source = dict(source)
        return load_config(
            cls, source, name=name or ("telemetry config" if isinstance(source, dict) else None)
        )

    @property
    def resolved_client_id(self) -> str:
        return self.client_id or f"edgewise-{self.fleet}-{self.device}"
