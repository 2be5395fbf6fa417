"""One emulated board: create, start, stop, destroy, list.

A board lives in ``$XDG_DATA_HOME/edgewise/boards/NAME/`` (``EDGEWISE_BOARDS`` overrides)::

    board.json     name, profile, CPU model, rootfs spec, port, pid of its sshd, state
    rootfs/        its own copy of the cached arm64 userland (what it installs stays there), with
                   /etc/edgewise-emulated: one line saying what the board is (programs on it,
                   such as the benchmark, label their timings emulated from it)
    ssh/           id_ed25519 (the key edge-deploy logs in with), known_hosts (the board's host key)
    sshd.log       the board's sshd output

``start`` runs the board's own ``/usr/sbin/sshd`` (aarch64, under qemu-user) chrooted into the
rootfs, listening on ``127.0.0.1:PORT``, and records the board in the device inventory with the SSH
options to reach it, so ``edge-deploy --host NAME`` needs nothing else. The board shares the
host's network: a daemon on it reaches a broker on the host at 127.0.0.1. Its programs run on the
profile's CPU model (``qemu_cpu``: a Cortex-A76 for the rpi5, set through ``QEMU_CPU`` for sshd and
every session it starts), so onnxruntime and LiteRT take the kernels the device's CPU features
select, not those of qemu's default ``max`` CPU (SVE2, i8mm). ``stop`` ends every
process whose root is the board's rootfs (the sshd and whatever a session left running, e.g. a
daemon) and unmounts everything; start, stop and destroy are idempotent, and a start that fails
or is interrupted leaves nothing running or mounted.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgewise.board.host import (
    BoardError,
    check_host,
    mount_runtime,
    mounts_under,
    processes_in,
    remove_tree,
    unmount_all,
)
from edgewise.board.rootfs import RootfsSpec, build_rootfs
from edgewise.devices import load_profile
from edgewise.devtools.mosquitto import accepts_connections, free_port
from edgewise.errors import ConfigError
from edgewise.fsutil import write_text_atomic

log = logging.getLogger(__name__)

BOARDS_ENV = "EDGEWISE_BOARDS"
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,31}$")
SSHD_CONFIG = "/etc/ssh/edgewise-board.conf"
HOST_KEY = "/etc/ssh/edgewise_host_ed25519_key"
QEMU_CPU_ENV = "QEMU_CPU"  # qemu-user's CPU model, read when each program starts
EMULATED_MARKER = "/etc/edgewise-emulated"  # on the board: what it is (a real device has none)
START_TIMEOUT_S = 90.0  # sshd and a first login under qemu take a few seconds; a loaded machine more


def boards_dir() -> Path:
    if os.environ.get(BOARDS_ENV):
        return Path(os.environ[BOARDS_ENV]).expanduser()
    base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return base / "edgewise" / "boards"


def board_cpu(profile_name: str) -> str:
    """The CPU the board's programs see: the profile's core (``qemu_cpu``), else qemu's ``max``."""
    return load_profile(profile_name).qemu_cpu or "max"


def board_note(profile_name: str) -> str:
    """What an emulated board of this profile is, and is not."""
    cpu = board_cpu(profile_name)
    if profile_name.startswith("jetson"):
        return (
            f"emulated Jetson ({cpu} under qemu-user): aarch64 userland without CUDA or TensorRT, so it "
            "exercises the TensorRT-unavailable fallback to ONNX; timings are emulated"
        )
    return (
        f"emulated {cpu} under qemu-user: the device's architecture, CPU features and software, not its speed"
    )


@dataclass
class Board:
    name: str
    path: Path
    info: dict[str, Any]

    # ----------------------------------------------------------------------------------------------
    # paths and state

    @property
    def rootfs(self) -> Path:
        return self.path / "rootfs"

    @property
    def identity(self) -> Path:
        return self.path / "ssh" / "id_ed25519"

    @property
    def known_hosts(self) -> Path:
        return self.path / "ssh" / "known_hosts"

    @property
    def port(self) -> int | None:
        return self.info.get("port")

    @property
    def cpu(self) -> str:
        return self.info.get("cpu") or board_cpu(self.info["profile"])

    def save(self) -> None:
        write_text_atomic(self.path / "board.json", json.dumps(self.info, indent=2) + "\n")

    def sshd_pid(self) -> int | None:
        """The board's sshd, if it runs (its pid recorded and its root the board's rootfs)."""
        pid = self.info.get("pid")
        return pid if pid and pid in processes_in(self.rootfs) else None

    def state(self) -> str:
        if self.sshd_pid():
            return "running"
        if processes_in(self.rootfs) or mounts_under(self.rootfs):
            return "stale"  # a crash left processes or mounts: stop cleans them
        return "stopped"

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "profile": self.info["profile"],
            "cpu": self.cpu,
            "state": self.state(),
            "host": "root@127.0.0.1",
            "port": self.port,
            "identity": str(self.identity),
            "note": board_note(self.info["profile"]),
        }

    # ----------------------------------------------------------------------------------------------
    # start and stop

    def start(self, port: int | None = None, *, say=print) -> dict[str, Any]:
        """Start the board's sshd on 127.0.0.1 (``port`` or a free one); idempotent."""
        if self.sshd_pid():
            say(f"board {self.name} is already running on 127.0.0.1:{self.port}")
            return self.describe()
        self.stop(say=lambda *_: None)  # a stale board (crash, kill -9) is cleaned first
        check_host(self.info["machine"])
        port = port or free_port()
        if not _port_free(port):
            raise ConfigError(f"port {port} on 127.0.0.1 is in use; pass another --port or leave it out")
        _write_sshd_config(self.rootfs, port, self.cpu)
        _write_marker(self.rootfs, self.info["profile"])  # also on boards created before it existed
        try:
            mount_runtime(self.rootfs)
            with open(self.path / "sshd.log", "ab") as out:
                proc = subprocess.Popen(
                    ["chroot", str(self.rootfs), "/usr/sbin/sshd", "-D", "-e", "-f", SSHD_CONFIG],
                    stdout=out,
                    stderr=out,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,
                    env={**os.environ, QEMU_CPU_ENV: self.cpu},
                )
            self.info.update(port=port, pid=proc.pid, started=time.time())
            self.save()
            _write_known_hosts(self)
            self._wait_ready(proc, port)
        except BaseException:
            self.stop(say=lambda *_: None)
            raise
        self._register()
        say(
            f"board {self.name} ({self.info['profile']}, {board_note(self.info['profile'])}) on 127.0.0.1:{port}"
        )
        return self.describe()

    def _wait_ready(self, proc: subprocess.Popen, port: int) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not accepts_connections("127.0.0.1", port):
            if proc.poll() is not None:
                raise BoardError(f"the board's sshd exited ({proc.returncode}): {self._log_tail()}")
            if time.monotonic() > deadline:
                raise BoardError(
                    f"the board's sshd did not listen within {START_TIMEOUT_S:.0f} s: {self._log_tail()}"
                )
            time.sleep(0.1)
        arch = self.ssh("uname -m", timeout=max(5.0, deadline - time.monotonic())).stdout.strip()
        if arch != self.info["machine"]:
            raise BoardError(f"the board answered as {arch!r}, expected {self.info['machine']}")

    def _log_tail(self) -> str:
        try:
            return " | ".join((self.path / "sshd.log").read_text().strip().splitlines()[-3:])
        except OSError:
            return "(no log)"

    def target(self) -> Any:
        """How to reach the board: the same SSHTarget edge-deploy uses (its key, port, known host)."""
        from edgewise.edge.deploy.ssh import SSHTarget

        return SSHTarget(
            "root@127.0.0.1",
            self.port,
            identity=self.identity,
            host_key_checking="yes",
            known_hosts=self.known_hosts,
        )

    def ssh(self, command: str, *, timeout: float = 60.0, check: bool = True) -> subprocess.CompletedProcess:
        """Run ``command`` on the board over SSH (as root)."""
        argv = self.target().ssh_argv(command)
        result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise BoardError(
                f"on board {self.name}: {command!r} failed ({result.returncode}): {result.stderr.strip()}"
            )
        return result

    def _register(self) -> None:
        from edgewise.edge.deploy import inventory

        inventory.update(
            self.name,
            "root@127.0.0.1",
            self.port,
            profile=self.info["profile"],
            root=load_profile(self.info["profile"]).install_root,
            emulated=board_note(self.info["profile"]),
            ssh={
                "identity": str(self.identity),
                "known_hosts": str(self.known_hosts),
                "strict_host_key_checking": "yes",
            },
        )

    def stop(self, *, say=print) -> None:
        """End every process of the board and unmount everything; idempotent."""
        pids = processes_in(self.rootfs)
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            deadline = time.monotonic() + (5.0 if sig == signal.SIGTERM else 2.0)
            while (pids := processes_in(self.rootfs)) and time.monotonic() < deadline:
                time.sleep(0.05)
            if not pids:
                break
        if pids:
            raise BoardError(f"board {self.name}: processes {pids} did not end")
        unmount_all(self.rootfs)
        was = self.info.pop("pid", None)
        self.info.pop("started", None)
        self.save()
        if was:
            say(f"board {self.name} stopped")

    def destroy(self, *, say=print) -> None:
        from edgewise.edge.deploy import inventory

        self.stop(say=say)
        remove_tree(self.path)
        inventory.remove(self.name)
        say(f"board {self.name} destroyed")


# --------------------------------------------------------------------------------------------------
# create, open, list


def check_name(name: str) -> str:
    if not NAME_RE.match(name):
        raise ConfigError(
            f"board name {name!r}: use lowercase letters, digits and '-' (at most 32, starting with a letter or digit)"
        )
    return name


def open_board(name: str) -> Board:
    path = boards_dir() / check_name(name)
    try:
        info = json.loads((path / "board.json").read_text())
    except FileNotFoundError:
        raise ConfigError(
            f"no board named {name!r} (edgewise board list; edgewise board create {name})"
        ) from None
    return Board(name, path, info)


def list_boards() -> list[Board]:
    root = boards_dir()
    if not root.is_dir():
        return []
    return [open_board(p.name) for p in sorted(root.iterdir()) if (p / "board.json").is_file()]


def create_board(name: str, profile_name: str, *, spec: RootfsSpec | None = None, say=print) -> Board:
    """A new board from the cached rootfs (built first if missing); a name in use is an error."""
    check_name(name)
    profile = load_profile(profile_name)
    if profile.arch != "aarch64":
        raise ConfigError(
            f"device {profile.name} is {profile.arch}: boards emulate aarch64 devices (rpi5, rpi4, jetson-*)"
        )
    path = boards_dir() / name
    if (path / "board.json").is_file():
        raise ConfigError(f"a board named {name!r} exists ({path}); start it, or destroy it first")
    spec = spec or RootfsSpec()
    source = build_rootfs(spec, say=say)
    partial = path.with_name(f".{name}.partial-{os.getpid()}")
    for stale in path.parent.glob(f".{name}.partial-*"):  # an interrupted create
        remove_tree(stale)
    if path.exists():  # a create interrupted after the rename but before board.json
        remove_tree(path)
    try:
        (partial / "ssh").mkdir(parents=True)
        t0 = time.monotonic()
        subprocess.run(["cp", "-a", "--reflink=auto", str(source), str(partial / "rootfs")], check=True)
        _prepare_rootfs(partial, profile.name)
        info = {
            "name": name,
            "profile": profile.name,
            "machine": spec.machine,
            "cpu": board_cpu(profile.name),
            "rootfs_spec": spec.key,
            "created": time.time(),
            "note": board_note(profile.name),
        }
        write_text_atomic(partial / "board.json", json.dumps(info, indent=2) + "\n")
        os.replace(partial, path)
    except BaseException:
        remove_tree(partial)
        raise
    say(f"board {name} created ({profile.name}; copied the rootfs in {time.monotonic() - t0:.1f} s): {path}")
    return Board(name, path, info)


# --------------------------------------------------------------------------------------------------
# helpers


def _prepare_rootfs(board_path: Path, profile_name: str) -> None:
    """Keys, sshd settings and what pip needs on the board (DNS, the host's trusted CAs)."""
    rootfs = board_path / "rootfs"
    keygen = ["ssh-keygen", "-q", "-t", "ed25519", "-N", ""]
    subprocess.run(
        [*keygen, "-f", str(board_path / "ssh" / "id_ed25519"), "-C", "edgewise-board"], check=True
    )
    host_key = rootfs / HOST_KEY.lstrip("/")
    subprocess.run([*keygen, "-f", str(host_key), "-C", f"board-{board_path.name}"], check=True)
    ssh_dir = rootfs / "root" / ".ssh"
    ssh_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    shutil.copy(board_path / "ssh" / "id_ed25519.pub", ssh_dir / "authorized_keys")
    (rootfs / "run" / "sshd").mkdir(parents=True, exist_ok=True)
    # what the board is, told by the board itself: programs on it (the benchmark) label their
    # timings emulated whichever way they were reached; a real device has no such file
    _write_marker(rootfs, profile_name)
    _write_cpu_list(rootfs)
    for host_file in ("/etc/resolv.conf", "/etc/hosts"):
        if Path(host_file).is_file():
            shutil.copy(host_file, rootfs / host_file.lstrip("/"), follow_symlinks=True)
    # the host's trusted CAs (a proxy's included) so pip on the board reaches the package index
    bundle = Path("/etc/ssl/certs/ca-certificates.crt")
    if bundle.is_file():
        (rootfs / "etc/ssl/certs").mkdir(parents=True, exist_ok=True)
        shutil.copy(bundle, rootfs / "etc/ssl/certs/ca-certificates.crt")
        (rootfs / "etc" / "pip.conf").write_text("[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n")


def _write_marker(rootfs: Path, profile_name: str) -> None:
    (rootfs / EMULATED_MARKER.lstrip("/")).write_text(board_note(profile_name) + "\n")


def _write_cpu_list(rootfs: Path) -> None:
    """The one part of /sys the runtimes read: which CPUs exist (plain files, never the host's /sys,
    whose x86 topology crashes onnxruntime under emulation). The board's programs run on the host's
    cores, so it lists those."""
    cpu = rootfs / "sys" / "devices" / "system" / "cpu"
    cpu.mkdir(parents=True, exist_ok=True)
    span = f"0-{max(1, os.cpu_count() or 1) - 1}\n"
    for name in ("possible", "present", "online"):
        (cpu / name).write_text(span)


def _write_sshd_config(rootfs: Path, port: int, cpu: str) -> None:
    lines = [
        f"Port {port}",
        "ListenAddress 127.0.0.1",
        f"HostKey {HOST_KEY}",
        "PidFile /run/sshd-edgewise.pid",
        "AuthorizedKeysFile /root/.ssh/authorized_keys",
        "PermitRootLogin prohibit-password",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "UsePAM no",
        "StrictModes no",
        "Subsystem sftp /usr/lib/openssh/sftp-server",
        "AcceptEnv LANG LC_*",
        # every program a session starts runs on the profile's CPU model, not qemu's default ``max``
        # (whose SVE2 and i8mm no Pi has, and whose SVE int8 kernels gave other logits here)
        f"SetEnv {QEMU_CPU_ENV}={cpu}",
    ]
    (rootfs / SSHD_CONFIG.lstrip("/")).write_text("\n".join(lines) + "\n")


def _write_known_hosts(board: Board) -> None:
    key = (board.rootfs / (HOST_KEY.lstrip("/") + ".pub")).read_text().split()
    board.known_hosts.write_text(f"[127.0.0.1]:{board.port} {key[0]} {key[1]}\n")


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True
