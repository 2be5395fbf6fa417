"""Versioned installs on a device: unpack beside, switch one link, roll back to the last good.

Layout under the install root (``/opt/edgewise`` on a device, any folder for development)::

    ROOT/models/<name>/<version>/     one verified bundle per version (manifest.json, models/...)
    ROOT/current -> models/<name>/<version>     the model the daemon runs (a relative symlink)
    ROOT/state.json                    history: installed versions, current, previous, last good
    ROOT/daemon.pid, ROOT/health.json  written by the daemon (pid to signal, its health report)

Every step is crash-safe, so a power cut or ``kill -9`` at any point leaves a device that starts:

* a bundle is copied into ``models/<name>/.<version>.partial-<pid>``, fsynced, checked, and renamed
  to ``<version>`` in one step; half-copied folders keep their ``.partial`` name and are removed by
  :func:`recover`;
* ``current`` is switched by creating a new link beside it and renaming it over the old one (rename
  is atomic), then fsyncing the folder, so it always names a complete install;
* ``state.json`` is written with :func:`edgewise.fsutil.write_text_atomic`.

:func:`recover` runs at daemon start and before every deploy: it removes partial folders and,
should ``current`` be missing or broken, points it at the last good version.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edgewise.bundle import MANIFEST_NAME, load_bundle, sha256_file
from edgewise.errors import EdgewiseError
from edgewise.fsutil import fsync_dir, write_text_atomic

log = logging.getLogger(__name__)

CURRENT = "current"
STATE = "state.json"
PARTIAL = ".partial-"
LOCK_FILE = "deploy.lock"


class InstallError(EdgewiseError):
    """An install, switch or rollback cannot be done; the message says what and why."""


@dataclass
class InstallState:
    """What ``state.json`` holds: install history and which versions are known good."""

    current: str | None = None  # "<name>/<version>"
    previous: str | None = None
    last_good: str | None = None  # the newest install the daemon reported healthy
    installed: list[str] = field(default_factory=list)  # in install order
    failed: list[str] = field(default_factory=list)  # rolled back after a failed health check
    history: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def read(cls, root: Path) -> InstallState:
        path = root / STATE
        if not path.is_file():
            return cls()
        try:
            data = json.loads(path.read_text())
            return cls(**data)
        except (json.JSONDecodeError, TypeError) as exc:
            raise InstallError(
                f"{path}: not a valid install state ({exc}); move it away to start over"
            ) from None

    def write(self, root: Path) -> None:
        self.history = self.history[-50:]
        write_text_atomic(root / STATE, json.dumps(asdict(self), indent=2) + "\n")

    def note(self, action: str, **fields: Any) -> None:
        self.history.append({"ts": round(time.time(), 3), "action": action, **fields})


@contextlib.contextmanager
def deploy_lock(root: str | os.PathLike) -> Iterator[None]:
    """One deploy or rollback at a time per install root (``ROOT/deploy.lock``, released on exit).

    Taken by ``edge-deploy`` and by the daemon's ``deploy`` and ``rollback`` commands, so the two
    paths never switch ``current`` at the same time.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    with open(root / LOCK_FILE, "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "?"
            raise InstallError(
                f"another deploy (pid {holder}) is working on {root}; try again when it ends"
            ) from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"{os.getpid()}\n")
        fh.flush()
        try:
            yield
        finally:
            fh.seek(0)
            fh.truncate()
            fcntl.flock(fh, fcntl.LOCK_UN)


def models_dir(root: Path) -> Path:
    return root / "models"


def current_install(root: str | os.PathLike) -> Path | None:
    """The folder ``current`` points at, or None when there is no working link."""
    link = Path(root) / CURRENT
    if not link.is_symlink():
        return None
    target = (link.parent / os.readlink(link)).resolve()
    return target if (target / MANIFEST_NAME).is_file() else None


def _key(install_dir: Path) -> str:
    return f"{install_dir.parent.name}/{install_dir.name}"


def _switch_link(root: Path, target: Path) -> None:
    """Point ``root/current`` at ``target`` atomically (a new link renamed over the old one)."""
    tmp = root / f".{CURRENT}.tmp-{os.getpid()}"
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    os.symlink(os.path.relpath(target, root), tmp)
    os.replace(tmp, root / CURRENT)
    fsync_dir(root)


def _copy_tree_synced(src: Path, dest: Path) -> None:
    shutil.copytree(src, dest, symlinks=False)
    for path in sorted(dest.rglob("*")):
        if path.is_file():
            with open(path, "rb") as fh:
                os.fsync(fh.fileno())
    for folder in sorted(
        {p.parent for p in dest.rglob("*")} | {dest}, key=lambda p: len(p.parts), reverse=True
    ):
        fsync_dir(folder)


def install_bundle(
    root: str | os.PathLike, bundle: str | os.PathLike, *, public_key: str | os.PathLike | None = None
) -> Path:
    """Verify ``bundle`` (folder or archive) and install it under ``ROOT/models/<name>/<version>``.

    Installing a version that is already there with the same manifest is a no-op; the same
    version with a different manifest is refused (versions are immutable).
    """
    root = Path(root)
    recover(root)
    with load_bundle(bundle, public_key=public_key) as opened:
        name, version = opened.manifest.name, opened.manifest.version
        dest = models_dir(root) / name / version
        manifest_sha = sha256_file(opened.root / MANIFEST_NAME)
        if dest.exists():
            existing = dest / MANIFEST_NAME
            if existing.is_file() and sha256_file(existing) == manifest_sha:
                log.info("%s %s is already installed at %s", name, version, dest)
                return dest
            raise InstallError(
                f"{dest} already holds a different {name} {version}; versions are immutable: "
                "bump the bundle version (edgewise export --version)"
            )
        dest.parent.mkdir(parents=True, exist_ok=True)
        partial = dest.parent / f".{version}{PARTIAL}{os.getpid()}"
        try:
            _copy_tree_synced(opened.root, partial)
            load_bundle(partial)  # re-verify what landed on disk before it gets its real name
            os.replace(partial, dest)
            fsync_dir(dest.parent)
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
    state = InstallState.read(root)
    key = _key(dest)
    if key not in state.installed:
        state.installed.append(key)
    state.note("install", version=key)
    state.write(root)
    log.info("installed %s %s at %s", name, version, dest)
    return dest


def activate(root: str | os.PathLike, install_dir: str | os.PathLike) -> str | None:
    """Switch ``current`` to ``install_dir``; returns the key it pointed at before."""
    root, target = Path(root), Path(install_dir).resolve()
    if not (target / MANIFEST_NAME).is_file():
        raise InstallError(f"{target}: not an installed bundle (no {MANIFEST_NAME})")
    before = current_install(root)
    state = InstallState.read(root)
    previous = _key(before) if before else None
    _switch_link(root, target)
    if previous != _key(target):
        state.previous = previous
    state.current = _key(target)
    state.note("activate", version=state.current, previous=previous)
    state.write(root)
    return previous


def mark_good(root: str | os.PathLike, key: str) -> None:
    """Record that the daemon ran ``key`` healthily: it becomes the rollback target."""
    root = Path(root)
    state = InstallState.read(root)
    state.last_good = key
    if key in state.failed:
        state.failed.remove(key)
    state.note("healthy", version=key)
    state.write(root)


def rollback(root: str | os.PathLike, *, reason: str = "requested", failed: str | None = None) -> str:
    """Point ``current`` back at the previous good install; returns its key."""
    root = Path(root)
    state = InstallState.read(root)
    now = current_install(root)
    now_key = _key(now) if now else None
    candidates = [state.last_good, state.previous, *reversed(state.installed)]
    target = next(
        (
            k
            for k in candidates
            if k
            and k != now_key
            and k not in state.failed
            and (models_dir(root) / k / MANIFEST_NAME).is_file()
        ),
        None,
    )
    if target is None:
        raise InstallError(
            f"{root}: nothing to roll back to (installed: {', '.join(state.installed) or 'none'})"
        )
    _switch_link(root, models_dir(root) / target)
    if failed or (now_key and reason != "requested"):
        bad = failed or now_key
        if bad and bad not in state.failed:
            state.failed.append(bad)
    state.previous, state.current = now_key, target
    state.note("rollback", version=target, from_version=now_key, reason=reason)
    state.write(root)
    log.warning("rolled back %s -> %s (%s)", now_key, target, reason)
    return target


def recover(root: str | os.PathLike) -> list[str]:
    """Repair what an interrupted install or switch left: returns what was done."""
    root = Path(root)
    done: list[str] = []
    if not root.exists():
        return done
    for partial in models_dir(root).glob(f"*/.*{PARTIAL}*") if models_dir(root).is_dir() else []:
        shutil.rmtree(partial, ignore_errors=True)
        done.append(f"removed partial install {partial.name}")
    for tmp in root.glob(f".{CURRENT}.tmp-*"):
        tmp.unlink(missing_ok=True)
        done.append(f"removed unfinished link {tmp.name}")
    if (root / CURRENT).is_symlink() and current_install(root) is None:
        state = InstallState.read(root)
        for key in [state.last_good, state.previous, *reversed(state.installed)]:
            if key and (models_dir(root) / key / MANIFEST_NAME).is_file():
                _switch_link(root, models_dir(root) / key)
                done.append(f"current was broken; now {key}")
                break
    for line in done:
        log.warning("recover %s: %s", root, line)
    return done


def status(root: str | os.PathLike) -> dict[str, Any]:
    root = Path(root)
    cur = current_install(root)
    state = InstallState.read(root)
    health_path = root / "health.json"
    health = None
    if health_path.is_file():
        try:
            health = json.loads(health_path.read_text())
        except json.JSONDecodeError:
            health = {"error": f"{health_path} is not valid JSON"}
    return {
        "root": str(root),
        "current": _key(cur) if cur else None,
        "previous": state.previous,
        "last_good": state.last_good,
        "installed": state.installed,
        "failed": state.failed,
        "health": health,
    }
