"""The arm64 userland a board copies: built once per distribution with debootstrap, then cached.

``$XDG_CACHE_HOME/edgewise/boards/rootfs/<distribution>-<suite>-<arch>/`` (``~/.cache`` by default;
``EDGEWISE_BOARD_CACHE`` overrides). A build goes to a ``.partial-PID`` folder that is renamed when
complete, so an interrupted build is never taken for a finished one; the next build removes what
it left (unmounting first: debootstrap mounts /proc inside the target).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from edgewise.board.host import BoardError, check_host, remove_tree, unmount_all

log = logging.getLogger(__name__)

CACHE_ENV = "EDGEWISE_BOARD_CACHE"
STAMP = "edgewise-rootfs.json"


@dataclass(frozen=True)
class RootfsSpec:
    """What debootstrap installs: Raspberry Pi OS is Debian bookworm arm64."""

    distribution: str = "debian"
    suite: str = "bookworm"
    arch: str = "arm64"  # Debian's name for aarch64
    mirror: str = "http://deb.debian.org/debian"
    packages: tuple[str, ...] = ("python3", "python3-venv", "openssh-server", "ca-certificates", "procps")

    @property
    def key(self) -> str:
        digest = hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:8]
        return f"{self.distribution}-{self.suite}-{self.arch}-{digest}"

    @property
    def machine(self) -> str:
        return {"arm64": "aarch64", "amd64": "x86_64"}.get(self.arch, self.arch)


def cache_dir() -> Path:
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "edgewise" / "boards"


def cached_rootfs(spec: RootfsSpec) -> Path | None:
    path = cache_dir() / "rootfs" / spec.key
    return path if (path / STAMP).is_file() else None


def build_rootfs(spec: RootfsSpec, *, say=print) -> Path:
    """The cached rootfs for ``spec``, built now if missing (about 5 minutes on 2 cores). One build
    at a time per spec: a second caller waits for the first and takes its result."""
    found = cached_rootfs(spec)
    if found is not None:
        return found
    check_host(spec.machine)
    parent = cache_dir() / "rootfs"
    parent.mkdir(parents=True, exist_ok=True)
    with open(parent / f"{spec.key}.lock", "a") as lock:
        if not _try_lock(lock):
            say("another process is building this rootfs: waiting for it")
            fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            return cached_rootfs(spec) or _build(spec, parent, say)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _try_lock(lock) -> bool:
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _build(spec: RootfsSpec, parent: Path, say) -> Path:
    for stale in parent.glob(f"{spec.key}.partial-*"):  # an interrupted build: never reused
        say(f"removing an interrupted rootfs build: {stale}")
        remove_tree(stale)
    final = parent / spec.key
    partial = parent / f"{spec.key}.partial-{os.getpid()}"
    argv = [
        "debootstrap",
        f"--arch={spec.arch}",
        "--variant=minbase",
        f"--include={','.join(spec.packages)}",
        spec.suite,
        str(partial),
        spec.mirror,
    ]
    say(f"building the {spec.distribution} {spec.suite} {spec.arch} rootfs once (debootstrap, a few minutes)")
    t0 = time.monotonic()
    try:
        with open(parent / f"{spec.key}.log", "w") as out:
            rc = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT).returncode
        if rc != 0:
            tail = (parent / f"{spec.key}.log").read_text().strip().splitlines()[-5:]
            raise BoardError(f"debootstrap failed (exit {rc}): " + " | ".join(tail))
        unmount_all(partial)
        (partial / STAMP).write_text(
            json.dumps({**asdict(spec), "built": time.time(), "seconds": time.monotonic() - t0}) + "\n"
        )
        os.replace(partial, final)
    except BaseException:
        remove_tree(partial)
        raise
    say(f"rootfs ready in {time.monotonic() - t0:.0f} s: {final}")
    return final


def build_in_background(log_path: str | os.PathLike, nice: int = 15) -> subprocess.Popen | None:
    """Start building the default rootfs in a child process (``python -m edgewise.board.rootfs``,
    niced (``nice``, 15 by default): whatever runs beside it, training or tests, goes first; its own session, so stopping it
    stops debootstrap too), its output in ``log_path``; None when the rootfs is cached."""
    import sys

    if cached_rootfs(RootfsSpec()) is not None:
        return None
    with open(log_path, "w") as log:
        return subprocess.Popen(
            ["nice", "-n", str(nice), sys.executable, "-m", "edgewise.board.rootfs"],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def stop_background_build(proc: subprocess.Popen | None) -> None:
    """Stop a :func:`build_in_background` that has not finished (the next build cleans up after it)."""
    import signal

    if proc is not None and proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


def main() -> int:
    """``python -m edgewise.board.rootfs``: build the default rootfs into the cache (used to start
    the build early, e.g. in the background of a test run)."""
    logging.basicConfig(level=logging.INFO)
    print(build_rootfs(RootfsSpec()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
