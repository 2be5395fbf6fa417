"""The bundle contract: what export writes and the edge runtime reads.

This module is shared by both halves, so it imports neither torch nor any runtime (numpy, pydantic
and the standard library only; ``cryptography`` is imported lazily, for signatures).

Layout
------
A bundle is a directory ``NAME-VERSION/`` and, beside it, the same directory as
``NAME-VERSION.tar.gz`` (one top-level folder, regular files and folders only, no links)::

    ser-tiny-1.0.0/
      manifest.json          the contract below
      manifest.sig           optional: ed25519 signature over the exact bytes of manifest.json
      models/ser.onnx        the artifacts, at the relative paths the manifest names
      models/ser.int8.onnx
      models/ser.fp32.tflite

manifest.json (``schema_version`` 1)
------------------------------------
Unknown fields are refused everywhere except inside the free-form dicts (``preprocessing``,
``provenance``, ``parity``, ``extra``), whose values must be plain JSON (finite numbers only).

=====================================  ======================================================================
field                                  content
=====================================  ======================================================================
``schema_version``                     ``1``; any other value is refused ("schema_version 7 is not supported")
``name``                               slug: lowercase letters, digits, ``-``, ``_`` (at most 64)
``version``                            semantic version (``1.0.0``, ``1.1.0-rc.1+build.5``)
``task``                               slug: ``ser``, later ``tts``, ``recommender``
``created``                            ISO 8601 time with a zone (``2026-05-09T07:35:25Z``)
``labels``                             list of unique class names, or ``null``
``preprocessing``                      dict; SER: ``log_mel`` (a ``LogMelConfig`` dict with the training
                                       ``mean``/``std``, validated on load)
``models``                             role -> model entry (SER: ``classifier``; TTS: ``acoustic``,
                                       ``vocoder``); at least one role, each with at least one artifact
``models.R.inputs`` / ``outputs``      list of ``{name, shape, dtype}``; ``shape`` items are ints >= 0 or
                                       symbolic names (``"batch"``, ``"time"``); ``dtype`` a numpy name
``models.R.extra``                     dict (e.g. KV-cache layout, vocoder hop size)
``models.R.artifacts[]``               one entry per file that implements the role:
``  .path``                            relative POSIX path inside the bundle (no ``..``, unique)
``  .format``                          slug: ``onnx``, ``tflite``, ``tensorrt-onnx`` (graph + build spec)
``  .precision``                       ``fp32``, ``fp16`` or ``int8``
``  .size_bytes`` / ``.sha256``        checked on every load (sha256 as 64 lowercase hex digits)
``  .runtime``                         slug: ``onnxruntime``, ``litert``, ``tensorrt``, ...
``  .fixed_shape``                     ``null`` (dynamic) or input name -> list of ints (same rank as the
                                       input, agreeing with its fixed dimensions); TFLite's window
``  .parity``                          dict: ``max_abs_diff``, ``tolerance``, task metric, ``passed``
``  .extra``                           dict
``provenance``                         dict: training run, corpus hash, edgewise/torch versions, git commit
=====================================  ======================================================================

The signature is not part of the manifest: ``manifest.sig`` is a small JSON file
``{"algorithm": "ed25519", "key_id": "...", "signature": "<base64>"}`` over the manifest's bytes, and
each artifact is bound to the manifest by its sha256, so one signature covers the whole bundle.

API
---
``BundleWriter`` builds a bundle in a temporary folder beside the destination and renames it into
place at the end (nothing is left behind on error); ``load_bundle`` opens a folder or an archive,
validates the manifest, checks every artifact's size and sha256 (streamed) and, given a public key,
the signature; ``safe_extract`` unpacks an archive refusing anything that could escape it.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import os
import posixpath
import re
import shutil
import tarfile
import tempfile
import weakref
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import AwareDatetime, Field, StrictInt, StringConstraints, ValidationError, field_validator

from edgewise import __version__
from edgewise.config import StrictModel, format_validation_error
from edgewise.errors import ConfigError, DataError, MissingDependencyError
from edgewise.features import LogMelConfig
from edgewise.fsutil import atomic_path, current_umask, fsync_dir, write_text_atomic

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
    try:
        raw = json.loads(data.decode("utf-8"), object_pairs_hook=_reject_duplicate_keys)
    except (UnicodeDecodeError, ValueError) as exc:
        raise BundleError(f"{source}: not valid JSON: {exc}") from None
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


# --------------------------------------------------------------------------------------------------
# Files: hashing, copying, archiving, safe extraction


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, streamed in 1 MiB chunks (constant memory)."""
    digest = hashlib.sha256()
    buf = bytearray(_CHUNK)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as fh:
        while n := fh.readinto(view):
            digest.update(view[:n])
    return digest.hexdigest()


def _copy_hashing(src: str | os.PathLike | bytes, dest: Path) -> tuple[int, str]:
    """Copy a file (or write bytes) to ``dest``, fsynced; return its size and sha256."""
    digest, size = hashlib.sha256(), 0
    with open(dest, "xb") as out:
        if isinstance(src, (bytes, bytearray, memoryview)):
            out.write(src)
            digest.update(src)
            size = len(src)
        else:
            with open(src, "rb") as fh:
                while chunk := fh.read(_CHUNK):
                    out.write(chunk)
                    digest.update(chunk)
                    size += len(chunk)
        out.flush()
        os.fsync(out.fileno())
    return size, digest.hexdigest()


def _fsync_dirs(root: Path) -> None:
    for dirpath, _, _ in os.walk(root):
        fsync_dir(dirpath)


def _tar_into(src_dir: Path, out_path: Path, arcname: str, mtime: int) -> None:
    """A reproducible .tar.gz of ``src_dir`` under ``arcname/``: sorted, owner 0, fixed times and modes."""
    with (
        open(out_path, "wb") as raw,
        gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=6) as gz,
        tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        for path in [src_dir, *sorted(src_dir.rglob("*"))]:
            rel = path.relative_to(src_dir).as_posix()
            if path.is_symlink() or not (path.is_file() or path.is_dir()):
                raise BundleError(f"{path}: a bundle may hold only regular files and folders")
            info = tar.gettarinfo(str(path), arcname=arcname if rel == "." else f"{arcname}/{rel}")
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mtime = mtime
            info.mode = 0o755 if info.isdir() else 0o644
            if info.isdir():
                tar.addfile(info)
            else:
                with open(path, "rb") as fh:
                    tar.addfile(info, fh)


def write_archive(bundle_dir: str | os.PathLike, dest: str | os.PathLike | None = None) -> Path:
    """Write ``bundle_dir`` as a .tar.gz (default: beside it, ``NAME-VERSION.tar.gz``), atomically.

    Use it after :func:`sign_manifest` on an existing bundle so the archive carries the signature.
    """
    bundle_dir = Path(bundle_dir)
    manifest = _read_manifest(bundle_dir)
    dest = Path(dest) if dest else bundle_dir.with_name(f"{bundle_dir.name}.tar.gz")
    with atomic_path(dest) as tmp:
        _tar_into(bundle_dir, tmp, bundle_dir.name, int(manifest.created.timestamp()))
    return dest


def archive_manifest(archive: str | os.PathLike) -> bytes | None:
    """The bytes of ``NAME-VERSION/manifest.json`` inside an archive, or None (unreadable, absent)."""
    try:
        with tarfile.open(archive, "r:*") as tar:
            for member in tar:
                parts = [p for p in member.name.split("/") if p not in ("", ".")]
                if member.isfile() and len(parts) == 2 and parts[1] == MANIFEST_NAME:
                    fh = tar.extractfile(member)
                    return fh.read() if fh else None
    except (tarfile.TarError, OSError):
        return None
    return None


def archive_for(bundle: str | os.PathLike, workdir: str | os.PathLike) -> tuple[Path, bool]:
    """The ``.tar.gz`` to ship a bundle as: the archive given; the one beside a folder when it holds
    the same manifest (so the same bundle); else a fresh one written into ``workdir``.

    Returns the archive and whether it was newly written.
    """
    bundle = Path(bundle)
    if bundle.is_file():
        return bundle, False
    beside = bundle.with_name(f"{bundle.name}.tar.gz")
    if beside.is_file() and archive_manifest(beside) == (bundle / MANIFEST_NAME).read_bytes():
        return beside, False
    return write_archive(bundle, Path(workdir) / f"{bundle.name}.tar.gz"), True


def _member_kind(m: tarfile.TarInfo) -> str:
    if m.ischr():
        return "character device"
    if m.isblk():
        return "block device"
    if m.isfifo():
        return "fifo"
    return f"special member (type {m.type!r})"


def _safe_member_name(tar_path: Path, m: tarfile.TarInfo) -> str | None:
    """The normalized relative name to extract ``m`` to (None for the root '.'), or a BundleError."""
    where = f"{tar_path}: member {m.name!r}"
    if m.issym() or m.islnk():
        kind = "symbolic" if m.issym() else "hard"
        raise BundleError(
            f"{where} is a {kind} link to {m.linkname!r}; bundle archives may not contain links"
        )
    if not (m.isfile() or m.isdir()):
        raise BundleError(f"{where} is a {_member_kind(m)}; only regular files and folders are allowed")
    if m.name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", m.name):
        raise BundleError(f"{where} has an absolute path; members must be relative")
    if ".." in re.split(r"[/\\]", m.name):
        raise BundleError(f"{where} contains '..'; members must stay inside the destination")
    norm = posixpath.normpath(m.name)
    return None if norm == "." else norm


_TAR_ERRORS = (tarfile.TarError, OSError, EOFError, zlib.error)


def _open_tar(tar_path: Path) -> tarfile.TarFile:
    try:
        return tarfile.open(tar_path, "r:*")
    except (tarfile.TarError, OSError) as exc:
        raise BundleError(f"{tar_path}: not a readable tar archive: {exc}") from None


def _extraction_plan(tar: tarfile.TarFile, tar_path: Path) -> list[tuple[tarfile.TarInfo, str]]:
    """Every member checked before anything is written: (member, normalized name) pairs."""
    try:
        members = tar.getmembers()
    except _TAR_ERRORS as exc:
        raise BundleError(f"{tar_path}: corrupt archive: {exc}") from None
    plan: list[tuple[tarfile.TarInfo, str]] = []
    seen: dict[str, bool] = {}  # name -> is a folder (a folder may be listed twice, a file may not)
    for m in members:
        name = _safe_member_name(tar_path, m)
        if name is None:
            continue
        if name in seen and not (seen[name] and m.isdir()):
            raise BundleError(f"{tar_path}: member {m.name!r} appears twice")
        seen[name] = m.isdir()
        plan.append((m, name))
    return plan


def _extract_member(tar: tarfile.TarFile, tar_path: Path, m: tarfile.TarInfo, target: Path) -> None:
    try:
        if m.isdir():
            target.mkdir(parents=True, exist_ok=True)
            return
        target.parent.mkdir(parents=True, exist_ok=True)
        with tar.extractfile(m) as src, open(target, "xb") as out:
            shutil.copyfileobj(src, out, _CHUNK)
            out.flush()
            os.fsync(out.fileno())
    except _TAR_ERRORS as exc:
        raise BundleError(f"{tar_path}: cannot extract member {m.name!r}: {exc}") from None


def safe_extract(tar_path: str | os.PathLike, dest: str | os.PathLike) -> Path:
    """Extract a tar archive into the new directory ``dest``, refusing anything unsafe.

    Every member is checked before anything is written: absolute paths, ``..``, links of any kind,
    devices and fifos, and duplicates are refused with the member named. Files are extracted into a
    temporary folder beside ``dest`` (fresh permissions, no owners or modes from the archive) that is
    renamed to ``dest`` at the end; on any error it is removed and ``dest`` does not appear.
    """
    tar_path, dest = Path(tar_path), Path(dest)
    if dest.exists() or dest.is_symlink():
        raise BundleError(f"{dest}: already exists; safe_extract writes a new directory")
    with _open_tar(tar_path) as tar:
        plan = _extraction_plan(tar, tar_path)
        dest.parent.mkdir(parents=True, exist_ok=True)
        needed, free = sum(m.size for m, _ in plan), shutil.disk_usage(dest.parent).free
        if needed > free:
            raise BundleError(f"{tar_path}: needs {needed} bytes to extract, {dest.parent} has {free} free")
        tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent))
        try:
            for m, name in plan:
                _extract_member(tar, tar_path, m, tmp / name)
            os.chmod(tmp, 0o777 & ~current_umask())
            _fsync_dirs(tmp)
            os.rename(tmp, dest)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    fsync_dir(dest.parent)
    return dest


# --------------------------------------------------------------------------------------------------
# Signatures (ed25519, via the optional `cryptography` package)


def _crypto():
    try:
        from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError:
        raise MissingDependencyError(
            "bundle signatures need the 'cryptography' package: pip install 'cryptography>=41'"
        ) from None
    return InvalidSignature, UnsupportedAlgorithm, serialization, ed25519


def _read_key_file(path: Path, kind: str) -> bytes:
    if not path.is_file():
        raise SignatureError(f"{path}: {kind} key file not found")
    return path.read_bytes()


def _load_private_key(path: str | os.PathLike):
    _, unsupported, serialization, ed25519 = _crypto()
    path = Path(path)
    data = _read_key_file(path, "private")
    if data.lstrip().startswith(b"-----BEGIN"):
        try:
            key = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError, unsupported) as exc:
            raise SignatureError(f"{path}: not a usable PEM private key: {exc}") from None
    elif len(data) == 32:
        key = ed25519.Ed25519PrivateKey.from_private_bytes(data)
    else:
        raise SignatureError(
            f"{path}: expected a PEM ed25519 private key or 32 raw bytes, got {len(data)} bytes"
        )
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise SignatureError(f"{path}: expected an ed25519 private key, got {type(key).__name__}")
    return key


def _load_public_key(path: str | os.PathLike):
    _, unsupported, serialization, ed25519 = _crypto()
    path = Path(path)
    data = _read_key_file(path, "public")
    if data.lstrip().startswith(b"-----BEGIN"):
        try:
            key = serialization.load_pem_public_key(data)
        except (ValueError, unsupported) as exc:
            raise SignatureError(f"{path}: not a usable PEM public key: {exc}") from None
    elif len(data) == 32:
        key = ed25519.Ed25519PublicKey.from_public_bytes(data)
    else:
        raise SignatureError(
            f"{path}: expected a PEM ed25519 public key or 32 raw bytes, got {len(data)} bytes"
        )
    if not isinstance(key, ed25519.Ed25519PublicKey):
        raise SignatureError(f"{path}: expected an ed25519 public key, got {type(key).__name__}")
    return key


def _key_id(public_key) -> str:
    """First 16 hex digits of the sha256 of the raw public key: names a key in messages."""
    _, _, serialization, _ = _crypto()
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def generate_keypair(
    private_path: str | os.PathLike, public_path: str | os.PathLike, *, overwrite: bool = False
) -> str:
    """Write a new ed25519 key pair as PEM (private key mode 0600); return the key id."""
    _, _, serialization, ed25519 = _crypto()
    private_path, public_path = Path(private_path), Path(public_path)
    for path in (private_path, public_path):
        if path.exists() and not overwrite:
            raise SignatureError(f"{path}: already exists; refusing to replace a key (pass overwrite=True)")
    key = ed25519.Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    private_path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{private_path.name}.", suffix=".tmp", dir=private_path.parent)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, private_pem)
        os.fsync(fd)
        os.close(fd)
        os.replace(tmp, private_path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(private_path.parent)
    write_text_atomic(public_path, public_pem.decode("ascii"))
    return _key_id(key.public_key())


def sign_manifest(bundle_dir: str | os.PathLike, private_key_path: str | os.PathLike) -> Path:
    """Sign the exact bytes of ``bundle_dir/manifest.json`` into ``manifest.sig``; return its path.

    The .tar.gz beside an existing bundle does not change: rewrite it with :func:`write_archive`.
    """
    bundle_dir = Path(bundle_dir)
    manifest_path = bundle_dir / MANIFEST_NAME
    if not manifest_path.is_file():
        raise BundleError(f"{bundle_dir}: not a bundle: {MANIFEST_NAME} is missing")
    key = _load_private_key(private_key_path)
    signature = key.sign(manifest_path.read_bytes())
    payload = {
        "algorithm": "ed25519",
        "key_id": _key_id(key.public_key()),
        "signature": base64.b64encode(signature).decode("ascii"),
    }
    return write_text_atomic(bundle_dir / SIGNATURE_NAME, json.dumps(payload, indent=2) + "\n")


def _verify_manifest_bytes(data: bytes, sig_path: Path, public_key_path: str | os.PathLike) -> str:
    invalid_signature, _, _, _ = _crypto()
    key = _load_public_key(public_key_path)
    key_id = _key_id(key)
    if not sig_path.is_file():
        raise SignatureError(
            f"{sig_path}: missing: the bundle is not signed, but a public key ({public_key_path}) was given"
        )
    try:
        sig = json.loads(sig_path.read_text(encoding="utf-8"))
        algorithm, signature = sig["algorithm"], base64.b64decode(sig["signature"], validate=True)
    except (ValueError, TypeError, KeyError, UnicodeDecodeError):
        raise SignatureError(
            f"{sig_path}: malformed: expected JSON with 'algorithm', 'key_id' and a base64 'signature'"
        ) from None
    if algorithm != "ed25519":
        raise SignatureError(f"{sig_path}: algorithm {algorithm!r} is not supported; expected 'ed25519'")
    try:
        key.verify(signature, data)
    except invalid_signature:
        signer = sig.get("key_id")
        if isinstance(signer, str) and signer != key_id:
            raise SignatureError(
                f"{sig_path}: signed with key {signer}, but {public_key_path} is key {key_id} (wrong key?)"
            ) from None
        raise SignatureError(
            f"{sig_path}: signature does not match {MANIFEST_NAME} with key {key_id}: "
            "the manifest was changed after signing"
        ) from None
    return key_id


def verify_signature(bundle_dir: str | os.PathLike, public_key_path: str | os.PathLike) -> str:
    """Check ``manifest.sig`` against ``manifest.json`` with a public key; return the key id."""
    bundle_dir = Path(bundle_dir)
    manifest_path = bundle_dir / MANIFEST_NAME
    if not manifest_path.is_file():
        raise BundleError(f"{bundle_dir}: not a bundle: {MANIFEST_NAME} is missing")
    return _verify_manifest_bytes(manifest_path.read_bytes(), bundle_dir / SIGNATURE_NAME, public_key_path)


# --------------------------------------------------------------------------------------------------
# Reading


@dataclass
class Bundle:
    """An opened bundle: its root folder and validated manifest."""

    root: Path
    manifest: Manifest
    signature_verified: bool = False
    _cleanup: Any = field(default=None, repr=False, compare=False)

    def model(self, role: str) -> ModelEntry:
        if role not in self.manifest.models:
            raise BundleError(
                f"{self.root / MANIFEST_NAME}: no model role {role!r}; roles: {sorted(self.manifest.models)}"
            )
        return self.manifest.models[role]

    def artifacts(
        self, role: str | None = None, format: str | None = None, precision: str | None = None
    ) -> list[ArtifactEntry]:
        """Artifact entries in manifest order, filtered by role, format and precision."""
        roles = [role] if role is not None else list(self.manifest.models)
        return [
            art
            for r in roles
            for art in self.model(r).artifacts
            if (format is None or art.format == format) and (precision is None or art.precision == precision)
        ]

    def artifact_path(self, entry: ArtifactEntry) -> Path:
        """The file of an artifact; refuses a path that leaves the bundle (through a link)."""
        path = self.root / _check_relpath(entry.path)
        if not path.resolve().is_relative_to(self.root.resolve()):
            raise IntegrityError(f"{path}: artifact {entry.path!r} leads outside the bundle")
        return path

    def verify(self, *, hashes: bool = True) -> None:
        """Check every artifact exists with the recorded size and (with ``hashes``) sha256."""
        for role, entry in self.manifest.models.items():
            for art in entry.artifacts:
                path = self.artifact_path(art)
                what = f"artifact {art.path!r} of model {role!r}"
                if not path.is_file():
                    raise IntegrityError(f"{path}: {what} listed in {MANIFEST_NAME} is missing")
                size = path.stat().st_size
                if size != art.size_bytes:
                    raise IntegrityError(
                        f"{path}: size mismatch for {what}: manifest says {art.size_bytes} bytes, file has {size}"
                    )
                if hashes:
                    actual = sha256_file(path)
                    if actual != art.sha256:
                        raise IntegrityError(
                            f"{path}: sha256 mismatch for {what}: manifest says {art.sha256}, file has {actual}"
                        )

    def close(self) -> None:
        """Remove the temporary extraction of an archive (no-op for a bundle folder)."""
        if self._cleanup is not None:
            self._cleanup()

    def __enter__(self) -> Bundle:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _read_manifest(root: Path) -> Manifest:
    path = root / MANIFEST_NAME
    if not path.is_file():
        raise BundleError(f"{root}: not a bundle: {MANIFEST_NAME} is missing")
    return parse_manifest(path.read_bytes(), str(path))


def _open_dir(root: Path, verify: bool, public_key: str | os.PathLike | None) -> Bundle:
    root = root.resolve()
    manifest_path = root / MANIFEST_NAME
    if not manifest_path.is_file():
        raise BundleError(f"{root}: not a bundle: {MANIFEST_NAME} is missing")
    data = manifest_path.read_bytes()  # read once: the bytes verified are the bytes parsed
    if public_key is not None:
        _verify_manifest_bytes(data, root / SIGNATURE_NAME, public_key)
    bundle = Bundle(root, parse_manifest(data, str(manifest_path)), signature_verified=public_key is not None)
    bundle.verify(hashes=verify)
    return bundle


def _archive_root(extracted: Path, tar_path: Path) -> Path:
    if (extracted / MANIFEST_NAME).is_file():
        return extracted
    entries = list(extracted.iterdir())
    if len(entries) == 1 and (entries[0] / MANIFEST_NAME).is_file():
        return entries[0]
    raise BundleError(
        f"{tar_path}: not a bundle archive: expected one top-level folder holding {MANIFEST_NAME}"
    )


def load_bundle(
    path: str | os.PathLike,
    *,
    verify: bool = True,
    public_key: str | os.PathLike | None = None,
    tmp_dir: str | os.PathLike | None = None,
) -> Bundle:
    """Open a bundle folder or archive, validate it, and return it.

    The manifest is validated; every artifact must exist with its recorded size, and with ``verify``
    (the default) its sha256 is checked too. With ``public_key``, ``manifest.sig`` must verify.
    An archive is extracted safely into a private folder under ``tmp_dir`` (default: the system
    temp dir), removed by :meth:`Bundle.close`, on garbage collection or at exit.
    """
    path = Path(path)
    if path.is_dir():
        return _open_dir(path, verify, public_key)
    if not path.exists():
        raise BundleError(f"{path}: bundle not found")
    if not tarfile.is_tarfile(path):
        raise BundleError(
            f"{path}: not a bundle: expected a folder holding {MANIFEST_NAME} or a .tar.gz archive"
        )
    if tmp_dir is not None:
        Path(tmp_dir).mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="edgewise-bundle-", dir=tmp_dir))
    try:
        root = _archive_root(safe_extract(path, tmp / "bundle"), path)
        bundle = _open_dir(root, verify, public_key)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    bundle._cleanup = weakref.finalize(bundle, shutil.rmtree, str(tmp), True)
    return bundle


# --------------------------------------------------------------------------------------------------
# Writing


def _validated(model_cls, data: dict[str, Any], source: str):
    try:
        return model_cls.model_validate(data)
    except ValidationError as exc:
        raise BundleError(format_validation_error(exc, source)) from None


class BundleWriter:
    """Build ``OUT_DIR/NAME-VERSION/`` (and ``NAME-VERSION.tar.gz``) atomically.

    ::

        with BundleWriter(out, name="ser-tiny", version="1.0.0", task="ser", labels=labels,
                          preprocessing={"log_mel": feat}) as w:
            w.add_model("classifier", inputs=[...], outputs=[...])
            w.add_artifact("classifier", "ser.onnx", "models/ser.onnx",
                           format="onnx", precision="fp32", runtime="onnxruntime", parity={...})
            w.finish(sign_key=key)

    Artifacts go into a temporary folder beside the destination; :meth:`finish` writes the manifest
    (and signature and archive) and renames the folder into place. An error, or leaving the block
    without :meth:`finish`, removes the temporary folder. An existing bundle or archive of the same
    name is replaced only with ``overwrite=True``. The returned ArtifactEntry objects are the ones the
    manifest records (fields such as ``parity`` may be assigned until ``finish``).
    """

    def __init__(
        self,
        out_dir: str | os.PathLike,
        *,
        name: str,
        version: str,
        task: str,
        labels: Iterable[str] | None = None,
        preprocessing: dict[str, Any] | None = None,
        provenance: dict[str, Any] | None = None,
        created: datetime | None = None,
        overwrite: bool = False,
    ) -> None:
        fields_ = {"name": name, "version": version, "task": task, "preprocessing": preprocessing or {}}
        fields_["labels"] = list(labels) if labels is not None else None
        if created is not None:
            fields_["created"] = created
        self._header = _validated(_ManifestHeader, fields_, f"bundle {name}-{version}")
        self._provenance = {"edgewise": __version__, **(provenance or {})}
        self.out_dir = Path(out_dir)
        self.path = self.out_dir / self._header.bundle_name
        self.archive_path = self.out_dir / f"{self._header.bundle_name}.tar.gz"
        self.overwrite = overwrite
        self.manifest: Manifest | None = None
        self._check_destination(archive=True)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self._tmp = Path(tempfile.mkdtemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.out_dir))
        self._models: dict[str, ModelEntry] = {}
        self._done = False

    def _check_destination(self, archive: bool) -> None:
        if self.overwrite:
            return
        for path in (self.path, self.archive_path) if archive else (self.path,):
            if path.exists() or path.is_symlink():
                raise BundleError(f"{path}: already exists; pass overwrite=True to replace it")

    def _check_open(self) -> None:
        if self._done:
            raise BundleError(f"bundle {self.path.name}: the writer is finished or aborted")

    def add_model(
        self,
        role: str,
        *,
        inputs: list[TensorSpec | dict[str, Any]],
        outputs: list[TensorSpec | dict[str, Any]],
        extra: dict[str, Any] | None = None,
    ) -> ModelEntry:
        """Declare a model role with its tensor interface; artifacts are added to it afterwards."""
        self._check_open()
        if not re.match(_SLUG_RE, role):
            raise BundleError(
                f"bundle {self.path.name}: model role {role!r} must be a slug like 'classifier'"
            )
        if role in self._models:
            raise BundleError(f"bundle {self.path.name}: model role {role!r} was already added")
        data = {"inputs": inputs, "outputs": outputs, "extra": extra or {}}
        self._models[role] = _validated(ModelEntry, data, f"bundle {self.path.name}: model '{role}'")
        return self._models[role]

    def add_artifact(
        self,
        role: str,
        src: str | os.PathLike | bytes,
        rel_path: str,
        *,
        format: str,
        precision: str,
        runtime: str,
        fixed_shape: dict[str, list[int]] | None = None,
        parity: dict[str, Any] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> ArtifactEntry:
        """Copy a file (or write bytes) to ``rel_path`` in the bundle and record it under ``role``."""
        self._check_open()
        source = f"bundle {self.path.name}: model '{role}' artifact '{rel_path}'"
        if role not in self._models:
            raise BundleError(
                f"{source}: no model role {role!r}; add_model() it first (roles: {sorted(self._models)})"
            )
        model = self._models[role]
        used = {a.path: r for r, m in self._models.items() for a in m.artifacts}
        if rel_path in used:
            raise BundleError(f"{source}: path already used by model {used[rel_path]!r}")
        fields_ = dict(path=rel_path, format=format, precision=precision, runtime=runtime)
        fields_.update(fixed_shape=fixed_shape, parity=parity or {}, extra=extra or {})
        # Validate everything before copying a possibly large file; size and hash are filled in after.
        entry = _validated(ArtifactEntry, {**fields_, "size_bytes": 0, "sha256": "0" * 64}, source)
        _validated(ModelEntry, {**model.model_dump(), "artifacts": [*model.artifacts, entry]}, source)
        if not isinstance(src, (bytes, bytearray, memoryview)) and not Path(src).is_file():
            raise BundleError(f"{source}: source file {src} not found")
        dest = self._tmp / rel_path
        dest.parent.mkdir(parents=True, exist_ok=True)
        size, digest = _copy_hashing(src, dest)
        entry = entry.model_copy(update={"size_bytes": size, "sha256": digest})
        model.artifacts.append(entry)  # validated above with a placeholder size and hash
        return entry

    def finish(self, sign_key: str | os.PathLike | None = None, archive: bool = True) -> Path:
        """Write manifest.json (and manifest.sig, the .tar.gz), move the bundle into place; return its folder."""
        self._check_open()
        try:
            data = {
                **self._header.model_dump(),
                "models": {role: m.model_dump() for role, m in self._models.items()},
                "provenance": self._provenance,
            }
            manifest = _validated(Manifest, data, f"bundle {self.path.name}: manifest")
            raw = manifest.to_json_bytes()
            parse_manifest(raw, f"bundle {self.path.name}: written manifest")  # round trip self-check
            _copy_hashing(raw, self._tmp / MANIFEST_NAME)
            if sign_key is not None:
                sign_manifest(self._tmp, sign_key)
            os.chmod(self._tmp, 0o777 & ~current_umask())
            _fsync_dirs(self._tmp)
            self._check_destination(archive)
            if archive:
                with atomic_path(self.archive_path) as tmp_archive:
                    _tar_into(self._tmp, tmp_archive, self.path.name, int(manifest.created.timestamp()))
                    self._move_into_place()
            else:
                self._move_into_place()
                if self.overwrite:
                    self.archive_path.unlink(missing_ok=True)  # a stale archive would contradict the folder
        except BaseException:
            self.abort()
            raise
        self._done = True
        self.manifest = manifest
        return self.path

    def _move_into_place(self) -> None:
        old = None
        if self.path.exists() or self.path.is_symlink():
            old = Path(tempfile.mkdtemp(prefix=f".{self.path.name}.", suffix=".old", dir=self.out_dir))
            os.rename(self.path, old / "bundle")
        try:
            os.rename(self._tmp, self.path)
        except BaseException:
            if old is not None:
                os.rename(old / "bundle", self.path)
                old.rmdir()
            raise
        fsync_dir(self.out_dir)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)

    def abort(self) -> None:
        """Discard everything written so far (idempotent)."""
        self._done = True
        shutil.rmtree(self._tmp, ignore_errors=True)

    def __enter__(self) -> BundleWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()
        elif not self._done:
            self.abort()
            raise BundleError(
                f"bundle {self.path.name}: the block ended without finish(); nothing was written"
            )
