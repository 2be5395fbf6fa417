"""Opening a bundle: a folder or an archive, every artifact's size and sha256, the signature."""

from __future__ import annotations

import os
import shutil
import tarfile
import tempfile
import weakref
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from edgewise.bundle.archive import MAX_UNPACKED_BYTES, safe_extract, sha256_file
from edgewise.bundle.schema import (
    MANIFEST_NAME,
    SIGNATURE_NAME,
    ArtifactEntry,
    BundleError,
    IntegrityError,
    Manifest,
    ModelEntry,
    _check_relpath,
    parse_manifest,
)
from edgewise.bundle.signing import _verify_manifest_bytes

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
        """Check every artifact exists with the recorded size and (with ``hashes``) sha256.

        Raises one IntegrityError listing every artifact that does not match, one line each.
        """
        problems = self.problems(hashes=hashes)
        if problems:
            raise IntegrityError("\n".join(problems))

    def problems(self, *, hashes: bool = True) -> list[str]:
        """Every artifact that is missing or differs from the manifest (size, sha256), one line each
        naming the file, the artifact and what the manifest says against what the file has."""
        found = []
        for role, entry in self.manifest.models.items():
            for art in entry.artifacts:
                try:
                    path = self.artifact_path(art)
                except IntegrityError as exc:
                    found.append(str(exc))
                    continue
                what = f"artifact {art.path!r} of model {role!r}"
                if not path.is_file():
                    found.append(f"{path}: {what} listed in {MANIFEST_NAME} is missing")
                    continue
                size = path.stat().st_size
                if size != art.size_bytes:
                    found.append(
                        f"{path}: size mismatch for {what}: manifest says {art.size_bytes} bytes, file has {size}"
                    )
                    continue
                if hashes:
                    actual = sha256_file(path)
                    if actual != art.sha256:
                        found.append(
                            f"{path}: sha256 mismatch for {what}: manifest says {art.sha256}, file has {actual}"
                        )
        return found

    def close(self) -> None:
        """Remove the temporary extraction of an archive (no-op for a bundle folder)."""
        if self._cleanup is not None:
            self._cleanup()

    def __enter__(self) -> Bundle:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _open_dir(
    root: Path, verify: bool, public_key: str | os.PathLike | None, check_artifacts: bool = True
) -> Bundle:
    root = root.resolve()
    manifest_path = root / MANIFEST_NAME
    if not manifest_path.is_file():
        raise BundleError(f"{root}: not a bundle: {MANIFEST_NAME} is missing")
    data = manifest_path.read_bytes()  # read once: the bytes verified are the bytes parsed
    if public_key is not None:
        _verify_manifest_bytes(data, root / SIGNATURE_NAME, public_key)
    bundle = Bundle(root, parse_manifest(data, str(manifest_path)), signature_verified=public_key is not None)
    if check_artifacts:
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
    max_unpacked_bytes: int = MAX_UNPACKED_BYTES,
    check_artifacts: bool = True,
) -> Bundle:
    """Open a bundle folder or archive, validate it, and return it.

    The manifest is validated; every artifact must exist with its recorded size, and with ``verify``
    (the default) its sha256 is checked too. With ``public_key``, ``manifest.sig`` must verify.
    An archive is extracted safely (at most ``max_unpacked_bytes``, see :func:`safe_extract`) into a
    private folder under ``tmp_dir`` (default: the system temp dir), removed by :meth:`Bundle.close`,
    on garbage collection or at exit. ``check_artifacts=False`` skips every artifact check, for tools
    that report them all themselves (:meth:`Bundle.problems`), such as ``edgewise bundle inspect``.
    """
    path = Path(path)
    if path.is_dir():
        return _open_dir(path, verify, public_key, check_artifacts)
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
        root = _archive_root(safe_extract(path, tmp / "bundle", max_bytes=max_unpacked_bytes), path)
        bundle = _open_dir(root, verify, public_key, check_artifacts)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    bundle._cleanup = weakref.finalize(bundle, shutil.rmtree, str(tmp), True)
    return bundle


def bundle_file(bundle: Bundle, record: dict[str, Any], where: str) -> Path:
    """A supporting file the manifest names with its sha256 (and size), checked; IntegrityError
    naming the file when it is missing or differs (the signature covers the manifest, the hash
    binds the file to it)."""
    rel = PurePosixPath(str(record.get("path", "")))
    path = bundle.root / rel
    if (
        not rel.parts
        or rel.is_absolute()
        or ".." in rel.parts
        or not path.resolve().is_relative_to(bundle.root.resolve())
    ):
        raise IntegrityError(f"{where}: path {record.get('path')!r} leaves the bundle")
    if not path.is_file():
        raise IntegrityError(f"{path}: missing (named by {where})")
    if "size_bytes" in record and path.stat().st_size != record["size_bytes"]:
        raise IntegrityError(
            f"{path}: size mismatch: {where} says {record['size_bytes']} bytes, the file has {path.stat().st_size}"
        )
    actual = sha256_file(path)
    if actual != record.get("sha256"):
        raise IntegrityError(
            f"{path}: sha256 mismatch: {where} says {record.get('sha256')}, the file has {actual}"
        )
    return path
