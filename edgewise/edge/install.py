"""Versioned installs on a device: unpack beside, switch one link, roll back to the last good.

Layout under the install root (``/opt/edgewise`` on a device, any folder for development)::

    ROOT/models/<name>/<version>/     one verified bundle per version (manifest.json, models/...)
    ROOT/models/<name>/<version>/parity.json    this device's check of its artifacts (install)
    ROOT/current -> models/<name>/<version>     the model the daemon runs (a relative symlink)
    ROOT/state.json                    history: installed versions, current, previous, last good
    ROOT/daemon.pid, ROOT/health.json  written by the daemon (pid to signal, its health report)
    ROOT/engines/<key>.plan|.json      TensorRT engines the device built (the .json names the ONNX)

Every step is crash-safe, so a power cut or ``kill -9`` at any point leaves a device that starts:

* a bundle is copied into ``models/<name>/.<version>.partial-<pid>``, fsynced, checked, and renamed
  to ``<version>`` in one step; half-copied folders keep their ``.partial`` name and are removed by
  :func:`recover`;
* ``current`` is switched by creating a new link beside it and renaming it over the old one (rename
  is atomic), then fsyncing the folder, so it always names a complete install;
* ``state.json`` is written with :func:`edgewise.fsutil.write_text_atomic`.

:func:`recover` runs at daemon start and before every deploy: it removes partial folders and,
should ``current`` be missing or broken, points it at the last good version.

Versions only go up through a deploy: :func:`check_version` refuses a bundle older than any
version of that name installed before (semantic-version order, :func:`compare_versions`; the
per-name high-water mark ``highest`` in ``state.json``, raised by every install and lowered by
nothing, not by prune nor by rollback); going back is what :func:`rollback` is for.
:func:`prune` keeps the newest N installs (never ``current``, ``previous`` or ``last_good``) and
removes the others with the TensorRT engines built from them.
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
ENGINES = "engines"  # ROOT/engines: TensorRT engines built on the device (edgewise.edge.tensorrt)
DEFAULT_KEEP = 3  # installs kept by prune (daemon.yaml keep_versions, edge-deploy --keep)


class InstallError(EdgewiseError):
    """An install, switch or rollback cannot be done; the message says what and why."""


class VersionError(InstallError):
    """A deploy's version is refused (older than one installed before, or the same precedence)."""


class DeviceParityError(InstallError):
    """Every artifact the device profile could run computes other logits here than the bundle's
    reference sets allow: the bundle is refused, nothing is installed or switched."""


class DowngradeError(VersionError):
    """A deploy would install a version older than one of that name installed before (go back with
    rollback)."""


@dataclass
class InstallState:
    """What ``state.json`` holds: install history and which versions are known good."""

    current: str | None = None  # "<name>/<version>"
    previous: str | None = None
    last_good: str | None = None  # the newest install the daemon reported healthy
    installed: list[str] = field(default_factory=list)  # in install order
    failed: list[str] = field(default_factory=list)  # rolled back after a failed health check
    history: list[dict[str, Any]] = field(default_factory=list)
    # per name, the highest version ever installed: a deploy never goes below it (prune and
    # rollback leave it as it is); a state.json from before it existed derives it from ``installed``
    highest: dict[str, str] = field(default_factory=dict)

    @classmethod
    def read(cls, root: Path) -> InstallState:
        path = root / STATE
        if not path.is_file():
            return cls()
        try:
            data = json.loads(path.read_text())
            state = cls(**data)
        except (json.JSONDecodeError, TypeError) as exc:
            raise InstallError(
                f"{path}: not a valid install state ({exc}); move it away to start over"
            ) from None
        if not isinstance(state.highest, dict):
            raise InstallError(f"{path}: 'highest' must map names to versions, got {state.highest!r}")
        for key in [*state.installed, state.current]:
            if key and "/" in key:
                state.raise_highest(*key.split("/", 1))
        return state

    def raise_highest(self, name: str, version: str) -> None:
        """Record ``version`` as the highest of ``name`` if it is above what is recorded."""
        try:
            known = self.highest.get(name)
            if known is None or compare_versions(version, known) > 0:
                self.highest[name] = version
        except InstallError:
            log.warning("install state: %s/%s is not a semantic version; not counted", name, version)

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


def bundle_files(opened: Any) -> list[str]:
    """The files an install copies: the manifest, its signature, every artifact the manifest lists,
    every file an artifact's ``extra.reference`` names (the TensorRT reference set) and the
    supporting files of ``preprocessing``: ``preprocessing.<section>.files.<name>.path`` (the
    recommender's item table, semantic IDs and trie) and ``preprocessing.<section>.file.path`` (the
    SER speaker adapter); their pipelines check the sha256 when they load them."""
    from edgewise.bundle import SIGNATURE_NAME
    from edgewise.bundle.schema import _check_relpath

    files = [MANIFEST_NAME]
    if (opened.root / SIGNATURE_NAME).is_file():
        files.append(SIGNATURE_NAME)
    for art in opened.artifacts():
        files.append(art.path)
        ref = art.extra.get("reference")
        if isinstance(ref, dict) and isinstance(ref.get("path"), str):
            try:
                files.append(_check_relpath(ref["path"]))
            except ValueError as exc:
                raise InstallError(
                    f"{opened.root / MANIFEST_NAME}: {art.path} extra.reference: {exc}"
                ) from None
    for task, section in opened.manifest.preprocessing.items():
        if not isinstance(section, dict):
            continue
        listed = section.get("files")
        records = (
            {f"files.{name}": record for name, record in listed.items()} if isinstance(listed, dict) else {}
        )
        if "file" in section:
            records["file"] = section["file"]
        for name, record in records.items():
            try:
                files.append(_check_relpath(record["path"]))
            except (TypeError, KeyError, ValueError) as exc:
                raise InstallError(
                    f"{opened.root / MANIFEST_NAME}: preprocessing.{task}.{name}: expected "
                    f"{{path, sha256, size_bytes}} inside the bundle ({exc!r})"
                ) from None
    return list(dict.fromkeys(files))


def _check_bundle_folder(src: Path, files: list[str]) -> None:
    """Refuse a symlink anywhere in the bundle folder and any file the manifest does not list.

    A top-level ``parity.json`` (an installed bundle's device check, when an install folder is
    deployed again) is passed over: it is never copied, the device writes its own."""
    from edgewise.edge.reference import DEVICE_PARITY

    listed = {*files, DEVICE_PARITY}
    unlisted: list[Path] = []
    for folder, dirs, names in os.walk(src):
        for entry in sorted([*dirs, *names]):
            path = Path(folder) / entry
            if path.is_symlink():
                raise InstallError(
                    f"{path}: the bundle holds a symbolic link ({path.relative_to(src).as_posix()} -> "
                    f"{os.readlink(path)}); a bundle carries plain files only"
                )
            if entry in names and path.relative_to(src).as_posix() not in listed:
                unlisted.append(path)
    if unlisted:
        path = unlisted[0]
        more = f" (and {len(unlisted) - 1} more)" if len(unlisted) > 1 else ""
        raise InstallError(
            f"{path}: {path.relative_to(src).as_posix()} is not listed in the bundle's {MANIFEST_NAME}"
            f"{more} (neither an artifact nor an extra.reference); a bundle carries only what its "
            "signed manifest lists"
        )


def _copy_listed(src: Path, dest: Path, files: list[str]) -> None:
    """Copy ``files`` (relative paths) from ``src`` to ``dest``, each fsynced, then their folders."""
    dest.mkdir(parents=True)
    folders = {dest}
    for rel in files:
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        folders.update(p for p in target.parents if p.is_relative_to(dest))
        shutil.copy2(src / rel, target, follow_symlinks=False)
        with open(target, "rb") as fh:
            os.fsync(fh.fileno())
    for folder in sorted(folders, key=lambda p: len(p.parts), reverse=True):
        fsync_dir(folder)


def check_on_device(
    root: Path,
    install_dir: Path,
    *,
    public_key: str | os.PathLike | None,
    profile: Any | None,
    threads: int | None,
    installed: bool = False,
) -> dict[str, Any]:
    """Run every artifact this device can load on its reference set and write ``parity.json``
    into ``install_dir`` (:func:`edgewise.edge.reference.device_parity`); refuse with a
    :class:`DeviceParityError`, writing nothing, when every artifact the profile could run fails."""
    from edgewise.edge.reference import device_parity, write_device_parity

    with load_bundle(install_dir, public_key=public_key) as copied:
        record = device_parity(copied, profile, threads, engine_dir=root / ENGINES)
    for path, result in record["artifacts"].items():
        log.info("device parity %s on %s: %s", path, record["machine"], result["status"])
    if record["refused"] and installed:  # already there: keep the record, so nothing runs the failures
        write_device_parity(install_dir, record)
        raise DeviceParityError(
            f"{record['bundle']} (installed here before) is refused: {record['refused']}; it was not "
            "switched to"
        )
    if record["refused"]:
        raise DeviceParityError(
            f"{record['bundle']} is refused: {record['refused']}; nothing was installed or switched "
            "(the running version stays)"
        )
    write_device_parity(install_dir, record)
    return record


def install_bundle(
    root: str | os.PathLike,
    bundle: str | os.PathLike,
    *,
    public_key: str | os.PathLike | None = None,
    profile: Any | None = None,
    threads: int | None = None,
) -> Path:
    """Verify ``bundle`` (folder or archive) and install it under ``ROOT/models/<name>/<version>``.

    Only the manifest, its signature and the files the manifest lists are copied; a bundle folder
    holding a symbolic link or any other file is refused. The copy is verified again (with
    ``public_key``, its signature too) and every artifact this device can load is run on its
    reference set (:func:`check_on_device`, with ``profile``'s runtimes; ``INSTALL/parity.json``
    keeps the result) before it gets its real name: a bundle whose every artifact the profile could
    run fails that check is refused (:class:`DeviceParityError`), and nothing is installed.
    Installing a version that is already there with the same manifest is a no-op (it is checked
    then only if it never was); the same version with a different manifest is refused (versions
    are immutable).
    """
    from edgewise.edge.reference import DEVICE_PARITY, current_record

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
                if current_record(dest) is None:  # installed before the check, or checked elsewhere
                    check_on_device(
                        root, dest, public_key=public_key, profile=profile, threads=threads, installed=True
                    )
                return dest
            raise InstallError(
                f"{dest} already holds a different {name} {version}; versions are immutable: "
                "bump the bundle version (edgewise export --version)"
            )
        files = bundle_files(opened)
        if DEVICE_PARITY in files:
            raise InstallError(
                f"{opened.root / MANIFEST_NAME}: lists {DEVICE_PARITY}, the name of the device's own "
                "parity record beside an install; rename that file in the bundle"
            )
        _check_bundle_folder(opened.root, files)
        dest.parent.mkdir(parents=True, exist_ok=True)
        partial = dest.parent / f".{version}{PARTIAL}{os.getpid()}"
        try:
            _copy_listed(opened.root, partial, files)
            # re-verify what landed on disk before it gets its real name: the signature must cover
            # exactly these bytes, whatever happened to the source since it was checked; then run
            # the artifacts on their reference sets, on this device's kernels
            check_on_device(root, partial, public_key=public_key, profile=profile, threads=threads)
            os.replace(partial, dest)
            fsync_dir(dest.parent)
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
    state = InstallState.read(root)
    key = _key(dest)
    if key not in state.installed:
        state.installed.append(key)
    state.raise_highest(name, version)
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
    from edgewise.edge.reference import read_device_parity

    return {
        "root": str(root),
        "current": _key(cur) if cur else None,
        "previous": state.previous,
        "last_good": state.last_good,
        "installed": state.installed,
        "failed": state.failed,
        "highest": state.highest,
        "health": health,
        # the current install's device parity check (INSTALL/parity.json); None: installed before it
        "parity": read_device_parity(cur) if cur else None,
    }


# --------------------------------------------------------------------------------------------------
# versions: a deploy only goes up


def version_key(version: str) -> tuple[Any, ...]:
    """A sort key with semantic-version precedence: ``1.2.0-rc.1 < 1.2.0 < 1.10.0`` (build ignored)."""
    core, _, pre = version.split("+", 1)[0].partition("-")
    try:
        numbers = tuple(int(p) for p in core.split("."))
    except ValueError:
        raise InstallError(f"version {version!r} is not a semantic version (like 1.2.0)") from None
    if len(numbers) != 3:
        raise InstallError(f"version {version!r} is not a semantic version (like 1.2.0)")
    if not pre:
        return (numbers, 1, ())
    # identifiers: numeric ones compare as numbers and sort before alphanumeric ones
    ids = tuple((0, int(x), "") if x.isdigit() else (1, 0, x) for x in pre.split("."))
    return (numbers, 0, ids)


def compare_versions(a: str, b: str) -> int:
    """-1, 0 or 1 as version ``a`` is older than, the same as, or newer than ``b``."""
    ka, kb = version_key(a), version_key(b)
    return (ka > kb) - (ka < kb)


def check_version(
    root: str | os.PathLike, name: str, version: str, *, allow_downgrade: bool = False, back: str = ""
) -> str:
    """How ``name`` ``version`` relates to the versions of that name installed before.

    ``same``: ``current`` runs exactly this version (the identical string); ``new``: no version of
    that name was ever installed; ``upgrade``: above the highest one installed before (the
    high-water mark in ``state.json``, which prune and rollback never lower); ``installed``: it is
    the highest one, installed but not running (switched to again); with ``allow_downgrade``,
    ``downgrade``: below it. Without ``allow_downgrade`` a lower version raises
    :class:`DowngradeError`, ``back`` saying how to go back instead. A version with the same
    precedence but other build metadata (``2.0.0+rebuild`` against ``2.0.0``) raises
    :class:`VersionError` always: build metadata does not order versions.
    """
    root = Path(root)
    version_key(version)  # not a semantic version: say so first
    cur = current_install(root)
    if cur is not None and cur.parent.name == name and cur.name == version:
        return "same"
    highest = InstallState.read(root).highest.get(name)
    if highest is None:
        return "new"
    order = compare_versions(version, highest)
    if order > 0:
        return "upgrade"
    if order == 0 and version == highest:
        return "installed"
    if order == 0:
        raise VersionError(
            f"{name} {version} has the same precedence as {name} {highest}, installed here before: "
            "build metadata (after '+') does not order versions, so neither is newer; "
            "bump the version (edgewise export --version)"
        )
    if allow_downgrade:
        return "downgrade"
    raise DowngradeError(
        f"{name} {version} is older than {name} {highest}, installed here before: a deploy never goes "
        f"back to an older version{'; ' + back if back else ''}"
    )


# --------------------------------------------------------------------------------------------------
# pruning: keep the newest N installs


def _artifact_sha256s(install_dir: Path) -> set[str]:
    """The sha256 of every artifact an install's manifest lists (engines record their ONNX's)."""
    try:
        manifest = json.loads((install_dir / MANIFEST_NAME).read_text())
        return {
            art["sha256"]
            for entry in manifest.get("models", {}).values()
            for art in entry.get("artifacts", [])
            if isinstance(art, dict) and isinstance(art.get("sha256"), str)
        }
    except (OSError, ValueError, AttributeError, TypeError):
        return set()


def prune_engines(engine_dir: str | os.PathLike, onnx_sha256s: set[str]) -> list[str]:
    """Remove the cached TensorRT engines built from these ONNX files (``<key>.json`` names the
    ONNX's sha256 as ``onnx_sha256``; the ``<key>.*`` files go together). Returns the names removed."""
    engine_dir = Path(engine_dir)
    removed: list[str] = []
    if not onnx_sha256s or not engine_dir.is_dir():
        return removed
    for info in sorted(engine_dir.glob("*.json")):
        try:
            built_from = json.loads(info.read_text()).get("onnx_sha256")
        except (OSError, ValueError, AttributeError):
            continue  # not ours to judge: leave it
        if built_from in onnx_sha256s:
            for path in sorted(engine_dir.glob(f"{info.stem}.*"), key=lambda p: p.suffix == ".json"):
                path.unlink(missing_ok=True)  # the .json last: a crash leaves it to find again
                removed.append(path.name)
    return removed


def prune(root: str | os.PathLike, keep: int = DEFAULT_KEEP) -> list[str]:
    """Keep the newest ``keep`` installs (install order) and ``current``, ``previous`` and
    ``last_good`` whatever their age; remove the others and the TensorRT engines only they used.

    Returns what was removed (``name/version`` keys and engine file names). Each folder is first
    renamed to a ``.partial-`` name, so an interrupted prune is finished by :func:`recover`.
    """
    if keep < 1:
        raise InstallError(f"keep must be at least 1, got {keep}")
    root = Path(root)
    state = InstallState.read(root)
    now = current_install(root)
    protected = {state.current, state.previous, state.last_good, _key(now) if now else None}
    present = [k for k in state.installed if (models_dir(root) / k).is_dir()]
    kept = set(present[-keep:]) | (protected & set(present))
    doomed = [k for k in present if k not in kept]
    if not doomed:
        return []
    still_used = set().union(*(_artifact_sha256s(models_dir(root) / k) for k in kept))
    only_doomed = set().union(*(_artifact_sha256s(models_dir(root) / k) for k in doomed)) - still_used
    aside = []
    for key in doomed:
        folder = models_dir(root) / key
        moved = folder.parent / f".{folder.name}{PARTIAL}prune-{os.getpid()}"
        os.replace(folder, moved)
        fsync_dir(folder.parent)
        aside.append(moved)
    state.installed = [k for k in state.installed if k not in doomed]
    state.failed = [k for k in state.failed if k not in doomed]
    state.note("prune", versions=doomed, keep=keep)
    state.write(root)
    for moved in aside:
        shutil.rmtree(moved, ignore_errors=True)
        with contextlib.suppress(OSError):  # the name's folder, once its last version is gone
            moved.parent.rmdir()
    engines = prune_engines(root / ENGINES, only_doomed)
    log.info("pruned %s (keeping %d)%s", ", ".join(doomed), keep, f"; engines {engines}" if engines else "")
    return [*doomed, *engines]


# --------------------------------------------------------------------------------------------------
# the fleet's signing key


@contextlib.contextmanager
def open_signed(
    bundle: str | os.PathLike,
    public_key: str | os.PathLike,
    where: str,
    *,
    max_unpacked_bytes: int | None = None,
    tmp_dir: str | os.PathLike | None = None,
) -> Iterator[Any]:
    """Open ``bundle`` (folder or archive) only if ``public_key`` verifies its signature.

    The error says which of these it is, naming ``where`` (a URL or path) and the trusted key id:
    not signed (no ``manifest.sig``), signed by another key, or a signature that does not match.
    Artifact hashes are checked too (:func:`edgewise.bundle.load_bundle`); an archive whose
    members declare more than ``max_unpacked_bytes`` in all is refused before it is unpacked. An
    archive is unpacked under ``tmp_dir`` (default: the system temp dir, often a small tmpfs).
    """
    from edgewise.bundle import SIGNATURE_NAME, SignatureError, public_key_id, verify_signature

    key_id = public_key_id(public_key)
    caps = {} if max_unpacked_bytes is None else {"max_unpacked_bytes": max_unpacked_bytes}
    with load_bundle(bundle, tmp_dir=tmp_dir, **caps) as opened:
        sig = opened.root / SIGNATURE_NAME
        if not sig.is_file():
            raise SignatureError(
                f"{where}: the bundle is not signed (no {SIGNATURE_NAME}); this device installs only "
                f"bundles signed with the fleet key {key_id} (edgewise export --sign-key, edgewise bundle sign)"
            )
        try:
            verify_signature(opened.root, public_key)
        except SignatureError as exc:
            reason = str(exc).replace(f"{sig}: ", "").replace(str(sig), SIGNATURE_NAME)
            raise SignatureError(
                f"{where}: the signature does not verify with the fleet key {key_id} ({reason})"
            ) from None
        yield opened
