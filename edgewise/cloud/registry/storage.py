"""The model registry's storage: signed bundle archives by name and version, on a file system.

::

    registry = Registry("/srv/edgewise/registry", public_key="fleet.pub")
    record = registry.push("export/ser-tiny-1.0.0")     # a bundle folder or its .tar.gz
    registry.versions("ser-tiny")                       # [BundleRecord, ...], oldest first
    registry.archive("ser-tiny", "1.0.0")               # the archive path, to serve or copy
    registry.promote("lab", "ser-tiny", "1.0.0", by="ops") # the fleet's target version (history kept)

Layout (every file written aside and renamed into place, so a reader never sees half of one; a
version once stored never changes)::

    ROOT/bundles/NAME/VERSION/NAME-VERSION.tar.gz   the archive exactly as pushed (or as packed)
    ROOT/bundles/NAME/VERSION/record.json           name, version, task, sha256, size, key_id,
                                                    pushed_at, pushed_by
    ROOT/promotions/FLEET.json                      {"history": [{name, version, at, by}, ...]}:
                                                    the last entry is what the fleet should run

A push opens the bundle the way a device does before it is stored: every artifact's hash, and with
a key configured the signature (:func:`edgewise.edge.install.open_signed`). An unsigned, wrongly
signed or tampered bundle is refused with the reason, and nothing is written. Pushing the same
bytes again is a no-op; other bytes under a stored name and version are refused (versions are
immutable: publish a new version instead).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from edgewise.bundle import MANIFEST_NAME, archive_for, sha256_file
from edgewise.errors import ConfigError, DataError
from edgewise.fsutil import atomic_path, fsync_dir, write_text_atomic
from edgewise.safejson import load_json

ARCHIVE_SUFFIX = ".tar.gz"
_FLEET_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$")  # as broker_acl's ids: one topic level


class RegistryError(DataError):
    """A push, pull or promotion the registry refuses (the message says why)."""


@dataclass(frozen=True)
class BundleRecord:
    name: str
    version: str
    task: str
    sha256: str
    size: int
    key_id: str | None  # the signing key's id, None when the bundle is unsigned (no key configured)
    pushed_at: float
    pushed_by: str | None = None

    @property
    def archive_name(self) -> str:
        return f"{self.name}-{self.version}{ARCHIVE_SUFFIX}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_fleet(fleet: str) -> str:
    if not isinstance(fleet, str) or not _FLEET_RE.match(fleet):
        raise ConfigError(f"fleet {fleet!r}: expected letters, digits, '-' and '_' (1-128 characters)")
    return fleet


class Registry:
    """Bundles by name and version under ``root``; ``public_key``: the fleet key pushes must be
    signed with (None: unsigned bundles are accepted, their hashes still checked)."""

    def __init__(self, root: str | os.PathLike, *, public_key: str | os.PathLike | None = None) -> None:
        self.root = Path(root)
        self.public_key = Path(public_key) if public_key is not None else None
        if self.public_key is not None and not self.public_key.is_file():
            raise ConfigError(f"registry public key {self.public_key}: no such file")

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """One writer at a time (pushes and promotions; every server process or replica that shares
        ``root``): the check that a version is new and its write happen under one lock."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    # ---------------------------------------------------------------------------------------------
    # bundles

    def _dir(self, name: str, version: str) -> Path:
        from edgewise.bundle.schema import _ManifestHeader

        # the manifest's own rules for a name and a version keep both to one safe path segment
        try:
            _ManifestHeader.model_validate({"name": name, "version": version, "task": "x"})
        except Exception:
            raise RegistryError(f"{name!r} {version!r}: not a bundle name and semantic version") from None
        return self.root / "bundles" / name / version

    def push(self, bundle: str | os.PathLike, *, by: str | None = None) -> tuple[BundleRecord, bool]:
        """Store ``bundle`` (a folder or a .tar.gz); (its record, whether it was new)."""
        from edgewise.bundle import load_bundle
        from edgewise.edge.install import open_signed

        bundle = Path(bundle)
        if not bundle.exists():
            raise RegistryError(f"{bundle}: no such bundle")
        self.root.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=".push-", dir=self.root) as work:
            archive, _ = archive_for(bundle, work)
            opener = (
                open_signed(archive, self.public_key, str(bundle), tmp_dir=work)
                if self.public_key is not None
                else load_bundle(archive, tmp_dir=work)
            )
            with opener as opened:
                manifest = opened.manifest
                sig = opened.root / "manifest.sig"
                key_id = load_json(sig.read_bytes()).get("key_id") if sig.is_file() else None
            record = BundleRecord(
                name=manifest.name,
                version=manifest.version,
                task=manifest.task,
                sha256=sha256_file(archive),
                size=archive.stat().st_size,
                key_id=key_id,
                pushed_at=round(time.time(), 3),
                pushed_by=by,
            )
            folder = self._dir(record.name, record.version)
            with self._locked():
                stored = self._read_record(folder)
                if stored is not None:
                    if stored.sha256 == record.sha256:
                        return stored, False
                    raise RegistryError(
                        f"{record.name} {record.version} is already stored with other contents "
                        f"(sha256 {stored.sha256[:12]}..., this one {record.sha256[:12]}...): versions "
                        "are immutable, push a new version"
                    )
                # the archive first, the record last: a version without its record does not exist
                folder.mkdir(parents=True, exist_ok=True)
                with atomic_path(folder / record.archive_name) as tmp:
                    shutil.copyfile(archive, tmp)
                if sha256_file(folder / record.archive_name) != record.sha256:  # a disk that lies
                    raise RegistryError(
                        f"{folder / record.archive_name}: the stored copy differs from the push"
                    )
                write_text_atomic(folder / "record.json", json.dumps(record.to_dict(), indent=1) + "\n")
                fsync_dir(folder.parent)
        return record, True

    @staticmethod
    def _read_record(folder: Path) -> BundleRecord | None:
        path = folder / "record.json"
        if not path.is_file():
            return None
        try:
            return BundleRecord(**load_json(path.read_bytes()))
        except (TypeError, ValueError) as exc:
            raise RegistryError(f"{path}: unreadable record ({exc})") from None

    def record(self, name: str, version: str) -> BundleRecord:
        found = self._read_record(self._dir(name, version))
        if found is None:
            known = [r.version for r in self.versions(name)]
            raise RegistryError(
                f"{name} {version}: not in the registry"
                + (f" (it has {', '.join(known)})" if known else f" (no versions of {name})")
            )
        return found

    def archive(self, name: str, version: str) -> Path:
        record = self.record(name, version)
        return self._dir(name, version) / record.archive_name

    def versions(self, name: str | None = None) -> list[BundleRecord]:
        """Every stored version (of ``name``), by name then semantic version."""
        from edgewise.edge.install import version_key

        base = self.root / "bundles"
        if name is not None:
            self._dir(name, "0.0.0")  # a bundle name: one safe path segment, or RegistryError
        names = (
            [name] if name is not None else sorted(p.name for p in base.iterdir()) if base.is_dir() else []
        )
        out: list[BundleRecord] = []
        for n in names:
            folder = base / n
            if not folder.is_dir():
                continue
            for version_dir in folder.iterdir():
                record = self._read_record(version_dir) if version_dir.is_dir() else None
                if record is not None:
                    out.append(record)
        return sorted(out, key=lambda r: (r.name, version_key(r.version)))

    # ---------------------------------------------------------------------------------------------
    # promotions

    def _promotions_path(self, fleet: str) -> Path:
        return self.root / "promotions" / f"{check_fleet(fleet)}.json"

    def promotions(self, fleet: str) -> list[dict[str, Any]]:
        path = self._promotions_path(fleet)
        if not path.is_file():
            return []
        return list(load_json(path.read_bytes()).get("history", []))

    def promoted(self, fleet: str) -> dict[str, Any] | None:
        history = self.promotions(fleet)
        return history[-1] if history else None

    def promote(
        self,
        fleet: str,
        name: str,
        version: str,
        *,
        by: str | None = None,
        extra: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Make ``name`` ``version`` the fleet's target (it must be stored); the entry added
        (``extra``: more fields to keep with it, such as the rollout's command id)."""
        record = self.record(name, version)
        entry = {"name": record.name, "version": record.version, "sha256": record.sha256}
        entry |= {"at": round(time.time(), 3), "by": by, **(extra or {})}
        with self._locked():
            history = [*self.promotions(fleet), entry]
            path = self._promotions_path(fleet)
            write_text_atomic(path, json.dumps({"history": history}, indent=1) + "\n")
        return entry

    def fleets(self) -> list[str]:
        folder = self.root / "promotions"
        return sorted(p.stem for p in folder.glob("*.json")) if folder.is_dir() else []


__all__ = ["ARCHIVE_SUFFIX", "MANIFEST_NAME", "BundleRecord", "Registry", "RegistryError", "check_fleet"]
