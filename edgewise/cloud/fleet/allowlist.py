"""The devices a fleet knows: payloads from any other device are rejected as ``unknown_device``.

Two sources, either or both:

* a list file, one ``FLEET/DEVICE`` a line (``#`` comments and blank lines skipped), or a YAML
  mapping ``{FLEET: [DEVICE, ...]}``;
* a fleet's broker folder (:mod:`edgewise.edge.deploy.broker_acl`): every ``FLEET.DEVICE`` user in
  its ``passwords`` file is a device (operators, users without a dot, are not).

The files are read again when they change (checked at most every ``recheck_s`` seconds), so a
device added with ``edge-deploy --bootstrap`` is accepted without restarting the ingest workers.
Where the broker enforces the fleet's ACL a device cannot publish under another's name anyway;
the allowlist is what stops devices the fleet does not know on a broker that lets them connect.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from pathlib import Path

from edgewise.edge.telemetry.topics import id_problem
from edgewise.errors import ConfigError


def read_device_list(path: Path) -> set[tuple[str, str]]:
    """``{(fleet, device)}`` from a list file (``FLEET/DEVICE`` lines or a YAML mapping)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the device list: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: the device list is not UTF-8 text") from None
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("#")]
    if lines and all("/" in ln and ":" not in ln for ln in lines):
        return {_pair(ln.split("/", 1), f"{path}:{n}") for n, ln in enumerate(lines, 1)}
    import yaml

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: neither FLEET/DEVICE lines nor valid YAML: {exc}") from None
    if data is None:
        return set()
    if not isinstance(data, dict) or not all(isinstance(v, list) for v in data.values()):
        raise ConfigError(
            f"{path}: expected FLEET/DEVICE lines or a YAML mapping FLEET: [DEVICE, ...], "
            f"got {type(data).__name__}"
        )
    return {
        _pair((fleet, device), f"{path}: fleet {fleet!r}") for fleet, devs in data.items() for device in devs
    }


def read_broker_devices(folder: Path) -> set[tuple[str, str]]:
    """``{(fleet, device)}`` for the ``FLEET.DEVICE`` users of a broker folder's password file."""
    from edgewise.edge.deploy import DeployError
    from edgewise.edge.deploy.broker_acl import PASSWORDS, read_password_file

    path = folder / PASSWORDS
    if not path.is_file():
        raise ConfigError(f"{folder}: no {PASSWORDS} file (a fleet's broker folder: edge-deploy broker-acl)")
    try:
        users = read_password_file(path)
    except DeployError as exc:
        raise ConfigError(str(exc)) from None
    return {tuple(u.split(".", 1)) for u in users if "." in u}  # type: ignore[misc]


def _pair(parts, where: str) -> tuple[str, str]:
    fleet, device = (str(p).strip() for p in parts)
    for value, what in ((fleet, "fleet"), (device, "device")):
        problem = id_problem(value)
        if problem:
            raise ConfigError(f"{where}: {what} id {problem}")
    return fleet, device


class Allowlist:
    """``knows(fleet, device)`` from a list file and/or a broker folder, reloaded when they change."""

    def __init__(
        self,
        devices_file: str | os.PathLike | None = None,
        broker_dir: str | os.PathLike | None = None,
        *,
        recheck_s: float = 2.0,
    ) -> None:
        if devices_file is None and broker_dir is None:
            raise ConfigError("an allowlist needs a device list file or a broker folder")
        self.devices_file = Path(devices_file).expanduser() if devices_file is not None else None
        self.broker_dir = Path(broker_dir).expanduser() if broker_dir is not None else None
        self.recheck_s = recheck_s
        self._lock = threading.Lock()
        self._stamp: tuple = ()
        self._checked = 0.0
        self._known: set[tuple[str, str]] = set()
        self._load(force=True)

    def _files(self) -> list[Path]:
        from edgewise.edge.deploy.broker_acl import PASSWORDS

        files = [self.devices_file] if self.devices_file is not None else []
        if self.broker_dir is not None:
            files.append(self.broker_dir / PASSWORDS)
        return files

    def _load(self, force: bool = False) -> None:
        stamp = tuple(
            (p, p.stat().st_mtime_ns, p.stat().st_size) if p.exists() else (p, None) for p in self._files()
        )
        if not force and stamp == self._stamp:
            return
        known: set[tuple[str, str]] = set()
        if self.devices_file is not None:
            known |= read_device_list(self.devices_file)
        if self.broker_dir is not None:
            known |= read_broker_devices(self.broker_dir)
        self._known, self._stamp = known, stamp

    def knows(self, fleet: str, device: str) -> bool:
        now = time.monotonic()
        if now - self._checked >= self.recheck_s:
            with self._lock:
                self._checked = now
                # a file being rewritten: keep the last good list until it reads again
                with contextlib.suppress(ConfigError, OSError):
                    self._load()
        return (fleet, device) in self._known

    @property
    def devices(self) -> frozenset[tuple[str, str]]:
        return frozenset(self._known)
