"""``BundleWriter``: builds a bundle in a temporary folder and renames it into place."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from edgewise import __version__
from edgewise.bundle.archive import _copy_hashing, _fsync_dirs, _tar_into
from edgewise.bundle.schema import (
    _RESERVED,
    _SLUG_RE,
    MANIFEST_NAME,
    ArtifactEntry,
    BundleError,
    Manifest,
    ModelEntry,
    TensorSpec,
    _check_relpath,
    _ManifestHeader,
    parse_manifest,
)
from edgewise.bundle.signing import sign_manifest
from edgewise.config import format_validation_error
from edgewise.fsutil import atomic_path, current_umask, fsync_dir

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
        self._files: set[str] = set()
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

    def add_file(self, src: str | os.PathLike | bytes, rel_path: str) -> tuple[int, str]:
        """Copy a supporting file that is not an artifact (e.g. a reference set an artifact's
        ``extra`` names with its sha256) into the bundle; returns its size and sha256, which the
        caller records in the manifest so the signature covers it."""
        self._check_open()
        source = f"bundle {self.path.name}: file '{rel_path}'"
        try:
            _check_relpath(rel_path)
        except ValueError as exc:
            raise BundleError(f"{source}: {exc}") from None
        used = {a.path for m in self._models.values() for a in m.artifacts} | self._files | _RESERVED
        if rel_path in used:
            raise BundleError(f"{source}: path already used in the bundle")
        if not isinstance(src, (bytes, bytearray, memoryview)) and not Path(src).is_file():
            raise BundleError(f"{source}: source file {src} not found")
        dest = self._tmp / rel_path
        dest.parent.mkdir(parents=True, exist_ok=True)
        self._files.add(rel_path)
        return _copy_hashing(src, dest)

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
