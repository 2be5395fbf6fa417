"""The serve config: one YAML file, validated once by :class:`ServeConfig`, errors that name the field.

::

    engine: embedded            # embedded (FastAPI under uvicorn) | ray (the same app, N replicas) | vllm
    host: 127.0.0.1
    port: 8443
    tls: {cert: tls/server.pem, key: tls/server.key}   # the default; `tls: none` on loopback only
    auth: {tokens_file: tokens.sha256}                 # the default; `auth: none` on loopback only
    max_request_bytes: 10485760                        # a larger body is refused with 413
    models:
      - {id: ser-teacher, task: ser, run: runs/ser-base}          # a trained run (torch, lazy)
      - {id: rec-cloud, task: rec, run: runs/rec-lazy}
      - {id: tts-joe, task: tts, bundle: bundles/tts-tiny-1.0.0}  # a bundle: the edge pipelines
      - {id: keye-vl-8b, task: chat, upstream: https://gpu-box:8000, upstream_ca: tls/gpu.pem,
         upstream_key_file: vllm.key}                             # chat: forwarded to vLLM
    ray: {num_replicas: 2, num_cpus_per_replica: 1}
    vllm: {preset: keye-vl-8b, tensor_parallel_size: 2, api_key_file: vllm.key}
    mqtt: {host: broker.local, port: 8883, ca_file: tls/broker.pem}  # the offload bridge

Relative paths are relative to the config file's folder (what ``edgewise cloud serve-init`` writes
is a folder that can move as a whole).

Where a model comes from, per task:

- ``bundle``: ser, rec and tts, through the device's own torch-free pipelines
  (:mod:`edgewise.edge.pipelines`) with a device profile (``device``, default ``x86-local``). The
  cloud then answers exactly as a device running that bundle would, and needs no torch.
- ``run``: ser and rec (the lazy decoder-only model), a finished ``edgewise train`` run, in PyTorch
  (imported when the model loads). The SER teacher and the cloud recommender only exist as runs:
  they are never exported for a device.
- ``upstream``: chat, an OpenAI-compatible server (vLLM with Keye-VL-8B or the OneRec 8B) the
  app forwards ``/v1/chat/completions`` to, so devices reach every model through one URL and token.
"""

from __future__ import annotations

import ipaddress
import os
import urllib.parse
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from edgewise.config import StrictModel, load_config
from edgewise.errors import ConfigError

TASKS = ("ser", "rec", "tts", "chat")
SOURCES = ("bundle", "run", "upstream")
SOURCES_OF_TASK = {
    "ser": ("bundle", "run"),
    "rec": ("bundle", "run"),
    "tts": ("bundle",),
    "chat": ("upstream",),
}
DEFAULT_MAX_REQUEST_BYTES = 10 * 1024 * 1024
LOOPBACK_NAMES = ("localhost",)


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 or localhost (0.0.0.0 and :: listen everywhere: not loopback)."""
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class TLSConfig(StrictModel):
    """The server's certificate (PEM, the chain when there is one) and its private key."""

    cert: Path = Path("tls/server.pem")
    key: Path = Path("tls/server.key")


class AuthConfig(StrictModel):
    """Bearer tokens: ``tokens_file`` holds one sha256 hex digest per line (never a plain token)."""

    tokens_file: Path = Path("tokens.sha256")


class ModelEntry(StrictModel):
    id: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:/-]*$")
    task: Literal["ser", "rec", "tts", "chat"]
    bundle: Path | None = None
    run: Path | None = None
    upstream: str | None = None
    # bundle: the device profile whose runtime order picks the artifact, threads, signature key
    device: str = "x86-local"
    threads: int | None = Field(None, ge=1, le=256)
    public_key: Path | None = None
    # rec run: its data set (for the most popular items an empty history gets); default: the
    # path the run recorded
    data: Path | None = None
    # chat upstream: its CA (self-signed cert), a file with its API key, its name for the model
    upstream_ca: Path | None = None
    upstream_key_file: Path | None = None
    upstream_model: str | None = None
    upstream_timeout_s: float = Field(120.0, gt=0, le=3600)

    @field_validator("upstream")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is None:
            return value
        parsed = urllib.parse.urlsplit(value)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise ValueError("expected an http(s) URL of an OpenAI-compatible server, e.g. https://gpu:8000")
        if parsed.scheme == "http" and not is_loopback(parsed.hostname):
            raise ValueError("plain http is allowed for a loopback upstream only; use https")
        if parsed.path not in ("", "/", "/v1", "/v1/"):
            raise ValueError("give the server's base URL (the app adds /v1/chat/completions)")
        return value.rstrip("/").removesuffix("/v1")

    @model_validator(mode="after")
    def _one_source(self) -> ModelEntry:
        given = [name for name in SOURCES if getattr(self, name) is not None]
        allowed = SOURCES_OF_TASK[self.task]
        if len(given) != 1:
            raise ValueError(
                f"model {self.id!r}: give exactly one source ({' or '.join(allowed)}), got "
                f"{', '.join(given) or 'none'}"
            )
        if given[0] not in allowed:
            raise ValueError(
                f"model {self.id!r}: a {self.task} model is served from {' or '.join(allowed)}, not {given[0]}"
            )
        return self

    @property
    def source(self) -> str:
        return next(name for name in SOURCES if getattr(self, name) is not None)


class RayConfig(StrictModel):
    """The same app as a Ray Serve deployment."""

    num_replicas: int = Field(2, ge=1, le=1024)
    num_cpus_per_replica: float = Field(1.0, gt=0, le=256)
    # an existing cluster (``ray start --head`` there; "auto" for one on this machine); unset:
    # start a local one with ``num_cpus`` CPUs (unset: all)
    address: str | None = None
    num_cpus: int | None = Field(None, ge=1)


class VllmConfig(StrictModel):
    """``vllm serve`` for the large models (:mod:`edgewise.cloud.serve.vllm`); a preset fills the
    model and its needs, every field given here overrides it."""

    preset: Literal["keye-vl-8b", "onerec-8b"] | None = None
    model: str | None = Field(None, min_length=1)  # a hub id or a local folder
    served_model_name: str | None = Field(None, min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:/-]*$")
    tensor_parallel_size: int = Field(1, ge=1, le=1024)
    pipeline_parallel_size: int = Field(1, ge=1, le=1024)
    # nodes > 1: multi-node through a Ray cluster (``ray start`` on each node first)
    nodes: int = Field(1, ge=1, le=1024)
    distributed_executor_backend: Literal["ray", "mp"] | None = None
    max_model_len: int | None = Field(None, ge=16)
    gpu_memory_utilization: float | None = Field(None, gt=0, le=1)
    dtype: Literal["auto", "half", "float16", "bfloat16", "float", "float32"] | None = None
    # dummy: random weights of the real architecture, nothing downloaded (throughput runs)
    load_format: Literal["auto", "safetensors", "pt", "dummy"] | None = None
    trust_remote_code: bool | None = None
    # vLLM compares plain API keys (VLLM_API_KEY): a 0600 file holding the clients' token
    api_key_file: Path | None = None
    executable: str = "vllm"
    extra_args: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _model_named(self) -> VllmConfig:
        if self.preset is None and self.model is None:
            raise ValueError("give vllm.preset (keye-vl-8b, onerec-8b) or vllm.model (a hub id or a folder)")
        if self.nodes > 1 and self.distributed_executor_backend == "mp":
            raise ValueError("nodes > 1 runs through a Ray cluster: distributed_executor_backend must be ray")
        return self


class MqttConfig(StrictModel):
    """The broker the offload bridge (:mod:`edgewise.cloud.serve.mqtt_bridge`) answers on."""

    host: str = "127.0.0.1"
    port: int = Field(1883, ge=1, le=65535)
    ca_file: Path | None = None  # set: MQTT over TLS, the broker's certificate checked against it
    username: str | None = None
    password_file: Path | None = None
    group: str = Field("offload", pattern=r"^[A-Za-z0-9_-]+$")  # the shared subscription's group
    fleet: str = Field("+", pattern=r"^(\+|[A-Za-z0-9_-]+)$")  # one fleet, or + for all
    client_id: str | None = None
    workers: int = Field(2, ge=1, le=64)  # requests answered at once
    max_payload_bytes: int = Field(DEFAULT_MAX_REQUEST_BYTES, ge=1024)
    keepalive_s: int = Field(30, ge=5, le=3600)


def mqtt_password(cfg: MqttConfig) -> str | None:
    """The login's password, from ``password_file`` (0600), or None."""
    if cfg.username is None or cfg.password_file is None:
        return None
    from edgewise.cloud.serve.auth import read_secret

    return read_secret(cfg.password_file, "mqtt.password_file")


def mqtt_tls(cfg: MqttConfig) -> Any:
    """The broker's TLS (edgewise.edge.telemetry.config.TLSConfig) when ``ca_file`` is set, else None."""
    if cfg.ca_file is None:
        return None
    from edgewise.edge.telemetry.config import TLSConfig

    return TLSConfig(ca=cfg.ca_file)


class FleetSection(StrictModel):
    """The fleet page, its JSON and its metrics at ``/fleet/`` behind the token
    (:mod:`edgewise.cloud.fleet.app`), read from the ingest's store."""

    store: str = Field("fleet.sqlite", min_length=1)  # a file (relative: to the config) or postgresql://...
    stale_after_s: float = Field(120.0, gt=0)


class RegistrySection(StrictModel):
    """The model registry at ``/registry/v1/`` (:mod:`edgewise.cloud.registry.app`)."""

    root: Path = Path("registry")
    public_key: Path  # the fleet key: a push not signed with it is refused, as a device would refuse it
    # the https base URL devices download archives from (their deploy command's url); default
    # https://HOST:PORT of this server
    public_url: str | None = None
    max_push_bytes: int = Field(2 * 1024**3, ge=1024)

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, value: str | None) -> str | None:
        if value is None:
            return value
        parsed = urllib.parse.urlsplit(value)
        if parsed.scheme != "https" and not (parsed.scheme == "http" and is_loopback(parsed.hostname or "")):
            raise ValueError(
                "devices download over https only: expected https://HOST[:PORT] (http on loopback)"
            )
        return value.rstrip("/")


class ServeConfig(StrictModel):
    engine: Literal["embedded", "ray", "vllm"] = "embedded"
    host: str = "127.0.0.1"
    port: int = Field(8443, ge=1, le=65535)
    tls: TLSConfig | Literal["none"] = Field(default_factory=TLSConfig)
    auth: AuthConfig | Literal["none"] = Field(default_factory=AuthConfig)
    max_request_bytes: int = Field(DEFAULT_MAX_REQUEST_BYTES, ge=1024, le=1 << 31)
    max_audio_seconds: float = Field(60.0, gt=0, le=3600)
    models: list[ModelEntry] = Field(default_factory=list)
    ray: RayConfig = Field(default_factory=RayConfig)
    vllm: VllmConfig | None = None
    mqtt: MqttConfig | None = None
    fleet: FleetSection | None = None
    registry: RegistrySection | None = None

    @model_validator(mode="after")
    def _consistent(self) -> ServeConfig:
        plain = [name for name in ("tls", "auth") if getattr(self, name) == "none"]
        if plain and not is_loopback(self.host):
            raise ValueError(
                f"{' and '.join(f'{n}: none' for n in plain)} is allowed on a loopback host only "
                f"(127.0.0.1, ::1, localhost), not {self.host!r}"
            )
        if self.engine == "vllm":
            if self.vllm is None:
                raise ValueError("engine vllm needs a vllm section (preset or model)")
            if self.auth != "none" and self.vllm.api_key_file is None:
                raise ValueError(
                    "engine vllm with auth: vLLM checks plain API keys, so give vllm.api_key_file (a 0600 "
                    "file holding the token, e.g. the client token serve-init wrote) or auth: none on loopback"
                )
        elif not self.models and self.fleet is None and self.registry is None:
            raise ValueError(
                f"engine {self.engine} serves the models listed in 'models' (or a fleet or registry "
                "section): none given"
            )
        if self.registry is not None and self.registry.public_url is None and self.host in ("0.0.0.0", "::"):
            raise ValueError(
                "registry.public_url: the server listens on every address, so say which one devices "
                "download from (https://NAME:PORT)"
            )
        ids = [m.id for m in self.models]
        dup = sorted({i for i in ids if ids.count(i) > 1})
        if dup:
            raise ValueError(f"model ids must be unique: {', '.join(dup)} given more than once")
        return self

    @property
    def scheme(self) -> str:
        return "http" if self.tls == "none" else "https"

    def model(self, model_id: str) -> ModelEntry | None:
        return next((m for m in self.models if m.id == model_id), None)


_PATH_FIELDS = {
    "tls": ("cert", "key"),
    "auth": ("tokens_file",),
    "vllm": ("api_key_file",),
    "mqtt": ("ca_file", "password_file"),
    "registry": ("root", "public_key"),
}
_MODEL_PATHS = ("bundle", "run", "public_key", "data", "upstream_ca", "upstream_key_file")


def resolve_paths(config: ServeConfig, base: str | os.PathLike) -> ServeConfig:
    """A copy of ``config`` with every relative path made absolute against ``base`` (the config
    file's folder); a vllm ``model`` that names an existing relative folder too."""
    base = Path(base).resolve()

    def fix(p: Path | None) -> Path | None:
        return p if p is None or p.is_absolute() else base / p

    update: dict[str, Any] = {}
    for section, fields in _PATH_FIELDS.items():
        part = getattr(config, section)
        if isinstance(part, StrictModel):
            update[section] = part.model_copy(update={f: fix(getattr(part, f)) for f in fields})
    if config.vllm is not None and config.vllm.model and (base / config.vllm.model).is_dir():
        update["vllm"] = update["vllm"].model_copy(update={"model": str(base / config.vllm.model)})
    if (
        config.fleet is not None
        and "://" not in config.fleet.store
        and not Path(config.fleet.store).is_absolute()
    ):
        update["fleet"] = config.fleet.model_copy(update={"store": str(base / config.fleet.store)})
    update["models"] = [
        m.model_copy(update={f: fix(getattr(m, f)) for f in _MODEL_PATHS}) for m in config.models
    ]
    return config.model_copy(update=update)


def load_serve_config(
    source: str | os.PathLike | dict[str, Any], *, base: str | os.PathLike | None = None
) -> ServeConfig:
    """Validate a YAML file (paths relative to its folder) or a mapping (paths relative to ``base``,
    default the current folder)."""
    if isinstance(source, dict):
        config = load_config(ServeConfig, source, name="serve config")
        return resolve_paths(config, base or Path.cwd())
    path = Path(source)
    config = load_config(ServeConfig, path)
    return resolve_paths(config, base or path.resolve().parent)


def check_files(config: ServeConfig, where: str = "serve config") -> None:
    """The files the server reads at start exist (ConfigError naming the field and path)."""
    wanted: list[tuple[str, Path]] = []
    if isinstance(config.tls, TLSConfig):
        wanted += [("tls.cert", config.tls.cert), ("tls.key", config.tls.key)]
    if isinstance(config.auth, AuthConfig) and config.engine != "vllm":  # vLLM takes vllm.api_key_file
        wanted.append(("auth.tokens_file", config.auth.tokens_file))
    if config.engine != "vllm":
        for i, m in enumerate(config.models):
            source = getattr(m, m.source)
            if m.source != "upstream" and not Path(source).is_dir():
                wanted.append((f"models[{i}].{m.source} ({m.id})", Path(source)))
            for name in ("public_key", "upstream_ca", "upstream_key_file"):
                if getattr(m, name) is not None:
                    wanted.append((f"models[{i}].{name}", getattr(m, name)))
    if config.registry is not None:
        wanted.append(("registry.public_key", config.registry.public_key))
    missing = [f"{where}: {field}: {path} not found" for field, path in wanted if not path.exists()]
    if missing:
        hint = (
            "\n(edgewise cloud serve-init DIR writes a config folder with its certificate and token)"
            if any(f.startswith(("tls", "auth")) for f, p in wanted if not p.exists())
            else ""
        )
        raise ConfigError("\n".join(missing) + hint)
