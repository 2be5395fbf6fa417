"""What a machine needs to run arm64 boards, and the mounts a running board holds.

The board's programs are aarch64 binaries run by qemu-user through the kernel's binfmt_misc, with
the interpreter registered with the ``F`` flag (opened once at registration, so it need not exist
inside the board's root). A machine that is aarch64 itself runs them natively.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from pathlib import Path

from edgewise.errors import ConfigError, EdgewiseError, MissingDependencyError

BINFMT = Path("/proc/sys/fs/binfmt_misc")
# Debian's qemu-user-static ships one binfmt.d entry per architecture
BINFMT_CONF = Path("/usr/lib/binfmt.d/qemu-aarch64.conf")
QEMU = "qemu-aarch64-static"
INSTALL_HINT = "apt-get install qemu-user-static debootstrap"


class BoardError(EdgewiseError):
    """A board cannot be created, started or stopped; the message says why and what to do."""


def native_arch() -> str:
    return platform.machine()


def needs_emulation(arch: str = "aarch64") -> bool:
    return native_arch() != arch


def _run(argv: list[str], what: str) -> None:
    result = subprocess.run(argv, capture_output=True, text=True)
    if result.returncode != 0:
        raise BoardError(f"{what} failed: {(result.stderr or result.stdout).strip() or result.returncode}")


def check_host(arch: str = "aarch64") -> None:
    """Raise a clear error unless this machine can build and run an ``arch`` board: root (chroot,
    mounts, debootstrap), debootstrap, and (when the machine is not ``arch``) qemu-user-static with
    binfmt_misc, which is mounted and registered here when missing."""
    if os.geteuid() != 0:
        raise ConfigError(
            "emulated boards need root (debootstrap, chroot and mounts); run edgewise board as root "
            "(for example with sudo)"
        )
    if shutil.which("debootstrap") is None:
        raise MissingDependencyError(f"debootstrap is not installed; {INSTALL_HINT}")
    if needs_emulation(arch):
        ensure_binfmt()


def ensure_binfmt() -> None:
    """binfmt_misc mounted and qemu-aarch64 registered with the fix-binary flag."""
    if shutil.which(QEMU) is None or not BINFMT_CONF.is_file():
        raise MissingDependencyError(
            f"qemu-user-static is not installed (no {QEMU} or {BINFMT_CONF}); {INSTALL_HINT}"
        )
    if not (BINFMT / "register").exists():
        try:
            _run(["mount", "-t", "binfmt_misc", "binfmt_misc", str(BINFMT)], "mounting binfmt_misc")
        except BoardError as exc:
            raise BoardError(
                f"{exc}; this machine cannot run foreign binaries (a container without binfmt_misc?)"
            ) from None
    entry = BINFMT / "qemu-aarch64"
    if entry.is_file():
        text = entry.read_text()
        if "enabled" in text and "F" in next((ln for ln in text.splitlines() if ln.startswith("flags:")), ""):
            return
        (entry).write_text("-1")  # an entry without the fix-binary flag: replace it
    try:
        (BINFMT / "register").write_text(BINFMT_CONF.read_text().strip())
    except OSError as exc:
        raise BoardError(f"could not register qemu-aarch64 with binfmt_misc: {exc.strerror}") from None


# --------------------------------------------------------------------------------------------------
# mounts


def mounts_under(path: Path) -> list[Path]:
    """Mount points at or under ``path``, deepest first (from /proc/self/mountinfo)."""
    base = str(Path(path).resolve())
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].encode().decode("unicode_escape")
        if point == base or point.startswith(base + "/"):
            found.append(Path(point))
    return sorted(set(found), key=lambda p: len(p.parts), reverse=True)


def unmount_all(path: Path) -> None:
    """Unmount everything at or under ``path`` (lazily when busy); raise if anything stays."""
    for point in mounts_under(path):
        if subprocess.run(["umount", str(point)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(point)], capture_output=True)
    left = mounts_under(path)
    if left:
        raise BoardError(f"could not unmount {', '.join(map(str, left))}; unmount them by hand")


def mount_runtime(rootfs: Path) -> None:
    """What programs in the board need: /proc, /dev (bind), a private /dev/pts and /dev/shm.
    Never /sys: under emulation onnxruntime reads the host's CPU topology there and crashes."""
    done: list[Path] = []
    plan = [
        (["mount", "-t", "proc", "proc"], rootfs / "proc"),
        (["mount", "--bind", "/dev"], rootfs / "dev"),
        (["mount", "-t", "devpts", "-o", "newinstance,ptmxmode=0666", "devpts"], rootfs / "dev" / "pts"),
        (["mount", "-t", "tmpfs", "-o", "mode=1777", "tmpfs"], rootfs / "dev" / "shm"),
    ]
    try:
        for argv, point in plan:
            point.mkdir(parents=True, exist_ok=True)
            _run([*argv, str(point)], f"mounting {point}")
            done.append(point)
    except BaseException:
        unmount_all(rootfs)
        raise


def remove_tree(path: Path) -> None:
    """``rm -rf`` that first unmounts everything under ``path`` and never crosses a mount (a board
    root with the host's /dev bound into it must not take the host's devices with it)."""
    if not path.exists():
        return
    unmount_all(path)
    subprocess.run(["rm", "-rf", "--one-file-system", str(path)], check=False)
    if path.exists():
        raise BoardError(f"could not remove {path}")


def processes_in(rootfs: Path) -> list[int]:
    """Pids of the processes whose root directory is ``rootfs`` (the board's programs)."""
    target = str(Path(rootfs).resolve())
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.readlink(entry / "root") == target:
                pids.append(int(entry.name))
        except OSError:
            continue
    return pids
