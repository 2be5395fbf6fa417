"""The manifest contract: field models, validation and ``parse_manifest`` (see the package docstring)."""

from __future__ import annotations

import json
import posixpath
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import AwareDatetime, Field, StrictInt, StringConstraints, ValidationError, field_validator

from edgewise.config import StrictModel, format_validation_error
from edgewise.errors import ConfigError, DataError
from edgewise.features import LogMelConfig
from edgewise.safejson import load_json

SCHEMA_VERSION = 1
MANIFEST_NAME = "manifest.json"
SIGNATURE_NAME = "manifest.sig"
PRECISIONS = ("fp32", "fp16", "int8")
DTYPES = ("float32", "float16", "bfloat16", "float64", "int8", "uint8", "int16", "int32", "int64", "bool")

_CHUNK = 1 << 20  # 1 MiB: hashing and copying stream in chunks of this size
_SLUG_RE = r"^[a-z0-9][a-z0-9_-]*$"
_SEMVER_RE = (
    r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
    r"(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?$"
)
_SYMBOLIC_DIM = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_RESERVED = {MANIFEST_NAME, SIGNATURE_NAME}
_SCALAR = r'(?:-?[0-9][0-9.eE+-]*|"[A-Za-z0-9_.:+ -]*"|true|false|null)'
# json.dumps(indent=2) puts each list item on its own line; strings never hold a raw newline, so a
# match starting "[\n" is always a real list, never text inside a string.
_SCALAR_LIST = re.compile(rf"\[\n(\s*{_SCALAR}(?:,\n\s*{_SCALAR})*)\n\s*\]")

Slug = Annotated[str, StringConstraints(pattern=_SLUG_RE, max_length=64)]
SemVer = Annotated[str, StringConstraints(pattern=_SEMVER_RE, max_length=128)]


class BundleError(DataError):
    """A bundle or its manifest is invalid, or an archive is unsafe to extract."""


class IntegrityError(BundleError):
    """An artifact is missing or differs (size, sha256) from what the manifest records."""


class SignatureError(BundleError):
    """manifest.sig is missing or malformed, a key is unusable, or the signature does not verify."""


# --------------------------------------------------------------------------------------------------
# Manifest schema


def plain_json(value: Any, where: str) -> Any:
    """``value`` as plain JSON (numpy scalars/arrays converted); NaN, inf and other types refused."""
    if isinstance(value, np.ndarray):
        value = value.tolist()
    elif isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        raise ValueError(f"{where} is {value}; JSON has no NaN or infinity")
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, (list, tuple)):
        return [plain_json(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, dict):
        out = {}
        for key, v in value.items():
            if not isinstance(key, str):
                raise ValueError(f"{where} has a non-string key {key!r}")
            out[key] = plain_json(v, f"{where}.{key}")
        return out
    raise ValueError(f"{where} is a {type(value).__name__}, not a JSON value")


def _check_relpath(path: str) -> str:
    """A normalized relative POSIX path that stays inside the bundle and is not a reserved name."""
    if not path or "\\" in path or "\x00" in path:
        raise ValueError(f"artifact path {path!r} must be a non-empty POSIX path")
    if path.startswith("/"):
        raise ValueError(f"artifact path {path!r} must be relative to the bundle")
    if ".." in path.split("/"):
        raise ValueError(f"artifact path {path!r} must not contain '..'")
    if posixpath.normpath(path) != path:
        raise ValueError(f"artifact path {path!r} is not normalized (expected {posixpath.normpath(path)!r})")
    if path in _RESERVED:
        raise ValueError(f"artifact path {path!r} is reserved for the bundle itself")
    return path


class TensorSpec(StrictModel):
    """One input or output of a model: name, shape (ints and symbolic dims), numpy dtype name."""

    name: str = Field(min_length=1)
    shape: list[int | str]
    dtype: Literal[DTYPES]  # type: ignore[valid-type]

    @field_validator("shape", mode="before")
    @classmethod
    def _dims(cls, shape: Any) -> Any:
        if not isinstance(shape, (list, tuple)):
            raise ValueError("a shape must be a list of dimensions")
        for i, dim in enumerate(shape):
            ok_int = isinstance(dim, int) and not isinstance(dim, bool) and dim >= 0
            ok_sym = isinstance(dim, str) and _SYMBOLIC_DIM.match(dim)
            if not (ok_int or ok_sym):
                raise ValueError(
                    f"dimension {i} is {dim!r}; expected an int >= 0 or a symbolic name like 'batch'"
                )
        return list(shape)


class ArtifactEntry(StrictModel):
    """One file implementing a model role in one format and precision."""

    path: str
    format: Slug
    precision: Literal[PRECISIONS]  # type: ignore[valid-type]
    size_bytes: StrictInt = Field(ge=0)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    runtime: Slug
    fixed_shape: dict[str, list[Annotated[StrictInt, Field(ge=0)]]] | None = None
    parity: dict[str, Any] = Field(default_factory=dict)
    extra: dict[str, Any] = Field(default_factory=dict)

    @field_validator("path")
    @classmethod
    def _path_inside(cls, path: str) -> str:
        return _check_relpath(path)

    @property
    def quant(self) -> str | None:
        """The int8 quantization mode (``extra.quant``: ``dynamic`` or ``static``), or None."""
        return self.extra.get("quant")

    @field_validator("parity", "extra")
    @classmethod
    def _json(cls, value: dict[str, Any], info) -> dict[str, Any]:
        return plain_json(value, info.field_name)


class ModelEntry(StrictModel):
    """One role of the pipeline: its tensor interface and the artifacts that implement it."""

    inputs: list[TensorSpec] = Field(min_length=1)
    outputs: list[TensorSpec] = Field(min_length=1)
    artifacts: list[ArtifactEntry] = Field(default_factory=list)
    extra: dict[str, Any] = Field(default_factory=dict)

    @field_validator("inputs", "outputs")
    @classmethod
    def _unique_names(cls, specs: list[TensorSpec], info) -> list[TensorSpec]:
        names = [s.name for s in specs]
        dups = sorted({n for n in names if names.count(n) > 1})
        if dups:
            raise ValueError(f"duplicate {info.field_name} name(s) {dups}")
        return specs

    @field_validator("extra")
    @classmethod
    def _json(cls, value: dict[str, Any]) -> dict[str, Any]:
        return plain_json(value, "extra")

    @field_validator("artifacts")
    @classmethod
    def _fixed_shapes_match_inputs(cls, artifacts: list[ArtifactEntry], info) -> list[ArtifactEntry]:
        if "inputs" not in info.data:
            return artifacts  # the inputs are invalid and already reported
        inputs = {s.name: s.shape for s in info.data["inputs"]}
        for i, art in enumerate(artifacts):
            for name, shape in (art.fixed_shape or {}).items():
                where = f"artifact {i} ({art.path}) fixed_shape"
                if name not in inputs:
                    raise ValueError(f"{where} names input {name!r}; the inputs are {sorted(inputs)}")
                spec = inputs[name]
                if len(shape) != len(spec) or any(isinstance(d, int) and d != s for d, s in zip(spec, shape)):
                    raise ValueError(
                        f"{where} for {name!r} is {shape}, which does not fit the input shape {spec}"
                    )
        return artifacts


class _ManifestHeader(StrictModel):
    """The manifest fields that describe the bundle as a whole (everything but the models)."""

    schema_version: Literal[1] = SCHEMA_VERSION
    name: Slug
    version: SemVer
    task: Slug
    created: AwareDatetime = Field(default_factory=lambda: datetime.now(timezone.utc).replace(microsecond=0))
    labels: list[str] | None = None
    preprocessing: dict[str, Any] = Field(default_factory=dict)

    @property
    def bundle_name(self) -> str:
        return f"{self.name}-{self.version}"

    @field_validator("labels")
    @classmethod
    def _labels(cls, labels: list[str] | None) -> list[str] | None:
        if labels is not None:
            if not labels or any(not label for label in labels):
                raise ValueError("labels must be a non-empty list of non-empty names (or null)")
            dups = sorted({x for x in labels if labels.count(x) > 1})
            if dups:
                raise ValueError(f"duplicate label(s) {dups}")
        return labels

    @field_validator("preprocessing", mode="before")
    @classmethod
    def _preprocessing(cls, value: Any) -> Any:
        if isinstance(value, dict) and isinstance(value.get("log_mel"), LogMelConfig):
            value = {**value, "log_mel": value["log_mel"].to_dict()}
        if not isinstance(value, dict):
            return value  # pydantic reports the type error
        value = plain_json(value, "preprocessing")
        if "log_mel" in value:
            if not isinstance(value["log_mel"], dict):
                raise ValueError("'log_mel' must be a mapping of LogMelConfig fields")
            try:
                LogMelConfig.from_dict(value["log_mel"])
            except (ConfigError, TypeError, ValueError) as exc:
                raise ValueError(f"log_mel: {exc}") from None
        return value


class Manifest(_ManifestHeader):
    """manifest.json: see the module docstring for the schema."""

    models: dict[Slug, ModelEntry] = Field(min_length=1)
    provenance: dict[str, Any] = Field(default_factory=dict)

    @field_validator("models")
    @classmethod
    def _models(cls, models: dict[str, ModelEntry]) -> dict[str, ModelEntry]:
        seen: dict[str, str] = {}
        for role, entry in models.items():
            if not entry.artifacts:
                raise ValueError(f"model {role!r} has no artifacts")
            for art in entry.artifacts:
                if art.path in seen:
                    raise ValueError(f"artifact path {art.path!r} is used by {seen[art.path]!r} and {role!r}")
                seen[art.path] = role
        return models

    @field_validator("provenance")
    @classmethod
    def _json(cls, value: dict[str, Any]) -> dict[str, Any]:
        return plain_json(value, "provenance")

    def log_mel(self) -> LogMelConfig:
        """The SER front-end recorded in ``preprocessing.log_mel``."""
        if "log_mel" not in self.preprocessing:
            raise BundleError(
                f"{MANIFEST_NAME}: field 'preprocessing.log_mel' is missing (task {self.task!r}); "
                f"present: {sorted(self.preprocessing)}"
            )
        return LogMelConfig.from_dict(self.preprocessing["log_mel"])

    def to_json_bytes(self) -> bytes:
        """Indented JSON with short lists of scalars (shapes, mean/std) kept on one line."""
        data = self.model_dump(mode="json")
        text = json.dumps(data, indent=2, ensure_ascii=False, allow_nan=False)
        text = _SCALAR_LIST.sub(
            lambda m: "[" + ", ".join(x.strip() for x in m.group(1).split(",")) + "]", text
        )
        if json.loads(text) != data:  # the compaction must never change what the manifest says
            raise RuntimeError("manifest compaction changed the manifest; this is a bug")
        return (text + "\n").encode("utf-8")


def _reject_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [k for k, _ in pairs]
    dups = sorted({k for k in keys if keys.count(k) > 1})
    if dups:
        raise ValueError(f"duplicate key(s) {dups}")
    return dict(pairs)


def parse_manifest(data: bytes, source: str = MANIFEST_NAME) -> Manifest:
    """Validate manifest bytes; ``source`` (the file) starts every error message."""
    raw = load_json(data, source=source, error=BundleError, object_pairs_hook=_reject_duplicate_keys)
    if not isinstance(raw, dict):
        raise BundleError(f"{source}: expected a JSON object at the top level, got {type(raw).__name__}")
    if "schema_version" not in raw:
        raise BundleError(f"{source}: field 'schema_version' is required")
    found = raw["schema_version"]
    if type(found) is not int or found != SCHEMA_VERSION:
        hint = " (a newer edgewise wrote it: upgrade to read it)" if type(found) is int and found > 1 else ""
        raise BundleError(
            f"{source}: schema_version {found!r} is not supported; this edgewise reads {SCHEMA_VERSION}{hint}"
        )
    try:
        return Manifest.model_validate(raw)
    except ValidationError as exc:
        raise BundleError(format_validation_error(exc, source)) from None


def _read_manifest(root: Path) -> Manifest:
    path = root / MANIFEST_NAME
    if not path.is_file():
        raise BundleError(f"{root}: not a bundle: {MANIFEST_NAME} is missing")
    return parse_manifest(path.read_bytes(), str(path))
