"""Atomic file writes: a reader sees the old file or the new one, never half of either.

Everything edgewise writes (wavs, manifests, checkpoints, caches, run files, bundles) goes through
:func:`atomic_path`: write to a temporary file in the same folder, flush it to disk, then
``os.replace`` it over the target (atomic on POSIX file systems) and sync the folder, so a power
cut on a device's SD card leaves either version intact. The file gets the usual permissions
(0666 minus the umask), not ``mkstemp``'s private 0600. On any error the temporary file is removed.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def fsync_dir(path: str | os.PathLike) -> None:
    """Persist a rename or a new entry in ``path`` (no-op where directories cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; when the block succeeds it replaces ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~current_umask())
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_private(path: str | os.PathLike, data: bytes | str) -> Path:
    """Write ``data`` to ``path`` atomically with mode 0600 from the first byte (a key, a token, a
    password file): never readable by others, not even while it is written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, data.encode("utf-8") if isinstance(data, str) else data)
        os.fsync(fd)
        os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return path


def _numpy_scalar(value):
    """numpy scalars (an int64 count, a float32 mean) as the Python numbers they hold; anything
    else is still an error, so a report never stores a repr by accident."""
    if hasattr(value, "item") and getattr(value, "shape", None) == ():
        return value.item()
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def write_report_files(out: str | os.PathLike, name: str, report: dict, markdown: str) -> list[Path]:
    """OUT/NAME.json and OUT/NAME.md, each atomically; the JSON is serialized before anything is
    written, so a report that cannot be stored leaves the old files."""
    import json

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    text = json.dumps(report, indent=2, default=_numpy_scalar) + "\n"
    return [write_text_atomic(out / f"{name}.json", text), write_text_atomic(out / f"{name}.md", markdown)]


def save_figure(fig, path: str | os.PathLike) -> Path:
    """A matplotlib figure as PNG at ``path``, atomically, then closed."""
    import matplotlib.pyplot as plt

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return Path(path)
