"""Bundle files on disk: streamed hashing and copying, reproducible archives, and extraction
that refuses anything that could escape its folder or outgrow its caps."""

from __future__ import annotations

import gzip
import hashlib
import os
import posixpath
import re
import shutil
import tarfile
import tempfile
import zlib
from pathlib import Path

from edgewise.bundle.schema import _CHUNK, MANIFEST_NAME, BundleError, _read_manifest
from edgewise.fsutil import atomic_path, current_umask, fsync_dir

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
# Caps on what an archive may unpack to. 2 GiB is four times the daemon's default download cap
# (download.max_mb 500); model bundles are tens of MB. Callers with their own limits pass them.
MAX_UNPACKED_BYTES = 2 * 1024**3
MAX_MEMBERS = 10_000


def _open_tar(tar_path: Path) -> tarfile.TarFile:
    try:
        return tarfile.open(tar_path, "r:*")
    except (tarfile.TarError, OSError) as exc:
        raise BundleError(f"{tar_path}: not a readable tar archive: {exc}") from None


def _extraction_plan(
    tar: tarfile.TarFile, tar_path: Path, max_bytes: int, max_members: int
) -> list[tuple[tarfile.TarInfo, str]]:
    """Every member checked before anything is written: (member, normalized name) pairs.

    Headers are read one at a time, so an archive over ``max_members`` members or ``max_bytes``
    unpacked (the sum of the sizes its headers declare, which is what extraction writes) is
    refused as soon as its listing crosses the cap, without reading the rest.
    """
    plan: list[tuple[tarfile.TarInfo, str]] = []
    seen: dict[str, bool] = {}  # name -> is a folder (a folder may be listed twice, a file may not)
    total = 0
    try:
        for count, m in enumerate(tar, 1):
            if count > max_members:
                raise BundleError(
                    f"{tar_path}: more than {max_members} members; refusing to unpack it "
                    "(a bundle holds a manifest and a few model files)"
                )
            name = _safe_member_name(tar_path, m)
            if name is None:
                continue
            if name in seen and not (seen[name] and m.isdir()):
                raise BundleError(f"{tar_path}: member {m.name!r} appears twice")
            seen[name] = m.isdir()
            total += m.size if m.isfile() else 0
            if total > max_bytes:
                raise BundleError(
                    f"{tar_path}: unpacks to more than {max_bytes} bytes (the cap; member {m.name!r} "
                    f"declares {m.size}); refusing to unpack it"
                )
            plan.append((m, name))
    except _TAR_ERRORS as exc:
        raise BundleError(f"{tar_path}: corrupt archive: {exc}") from None
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


def safe_extract(
    tar_path: str | os.PathLike,
    dest: str | os.PathLike,
    *,
    max_bytes: int = MAX_UNPACKED_BYTES,
    max_members: int = MAX_MEMBERS,
) -> Path:
    """Extract a tar archive into the new directory ``dest``, refusing anything unsafe.

    Every member is checked before anything is written: absolute paths, ``..``, links of any kind,
    devices and fifos, and duplicates are refused with the member named, and so is an archive of
    more than ``max_members`` members or ``max_bytes`` unpacked (a small download that unpacks to
    gigabytes). Files are extracted into a temporary folder beside ``dest`` (fresh permissions, no
    owners or modes from the archive) that is renamed to ``dest`` at the end; on any error it is
    removed and ``dest`` does not appear.
    """
    tar_path, dest = Path(tar_path), Path(dest)
    if dest.exists() or dest.is_symlink():
        raise BundleError(f"{dest}: already exists; safe_extract writes a new directory")
    with _open_tar(tar_path) as tar:
        plan = _extraction_plan(tar, tar_path, max_bytes, max_members)
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
