"""The devices this machine deploys to: ``~/.config/edgewise/devices.json`` (``$EDGEWISE_INVENTORY``).

::

    {"schema_version": 1,
     "devices": {"kitchen-pi": {"host": "pi@10.0.0.7", "port": 22, "profile": "rpi5",
                                "root": "/opt/edgewise", "installed": "ser-tiny/1.1.0",
                                "last_good": "ser-tiny/1.1.0",
                                "health": {"ok": true, "model": "ser-tiny/1.1.0", "ts": ..., "error": null},
                                "last_run": {"action": "deploy", "ok": true, "ts": ..., "detail": "..."},
                                "ssh": {"identity": "~/.ssh/id_ed25519", "known_hosts": ...,
                                        "strict_host_key_checking": "accept-new"},
                                "bootstrapped": ..., "updated": ...}}}

Bootstrap adds a device; deploy, rollback and status over ``--host`` update it (and add it when it
is new). Writes are atomic and serialized with a lock file, so two deploys at once lose nothing.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgewise.edge.deploy import DeployError
from edgewise.fsutil import write_text_atomic

ENV = "EDGEWISE_INVENTORY"
SCHEMA_VERSION = 1


def inventory_path() -> Path:
    if os.environ.get(ENV):
        return Path(os.environ[ENV]).expanduser()
    config = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return config / "edgewise" / "devices.json"


def load(path: Path | None = None) -> dict[str, dict[str, Any]]:
    """name -> record; an empty inventory when the file does not exist."""
    path = path or inventory_path()
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except json.JSONDecodeError as exc:
        raise DeployError(f"{path}: not valid JSON ({exc}); fix or move it away") from None
    if not isinstance(data, dict) or not isinstance(data.get("devices"), dict):
        raise DeployError(f"{path}: expected {{'schema_version': 1, 'devices': {{...}}}}")
    return data["devices"]


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def find(devices: dict[str, dict[str, Any]], host: str, port: int) -> str | None:
    """The name of the device at ``host:port`` (user@addr or just addr), if recorded."""
    addr = host.rsplit("@", 1)[-1]
    for name, rec in devices.items():
        if rec.get("port", 22) == port and (
            rec.get("host") == host or str(rec.get("host", "")).rsplit("@", 1)[-1] == addr
        ):
            return name
    return None


def update(name: str | None, host: str, port: int, path: Path | None = None, **fields: Any) -> str:
    """Create or update the record for the device at ``host:port``; returns its name."""
    path = path or inventory_path()
    with _locked(path):
        devices = load(path)
        name = name or find(devices, host, port) or host.rsplit("@", 1)[-1]
        record = devices.get(name, {})
        record.update({"host": host, "port": port})
        record.update({k: v for k, v in fields.items() if v is not None})
        record["updated"] = round(time.time(), 3)
        devices[name] = record
        body = {"schema_version": SCHEMA_VERSION, "devices": dict(sorted(devices.items()))}
        write_text_atomic(path, json.dumps(body, indent=2) + "\n")
    return name


def remove(name: str, path: Path | None = None) -> bool:
    """Drop the record ``name``; True if there was one."""
    path = path or inventory_path()
    with _locked(path):
        devices = load(path)
        if devices.pop(name, None) is None:
            return False
        body = {"schema_version": SCHEMA_VERSION, "devices": dict(sorted(devices.items()))}
        write_text_atomic(path, json.dumps(body, indent=2) + "\n")
    return True


def ssh_options(record: dict[str, Any]) -> dict[str, Any]:
    """The SSH options a device was added with (identity, known_hosts, strict_host_key_checking):
    a deploy or status naming the device uses them unless its own flags say otherwise."""
    opts = record.get("ssh") or {}
    return {k: opts[k] for k in ("identity", "known_hosts", "strict_host_key_checking") if opts.get(k)}


@dataclass(frozen=True)
class Resolved:
    """Where ``--host`` points, with what the inventory remembers about it.

    ``host``/``port``: the address to connect to; ``profile``, ``root``, ``device_id``: the given
    values, else the record's (``device_id`` is the inventory name when ``--host`` was one);
    ``ssh``: the recorded SSH options (:func:`ssh_options`); ``name``: the inventory name of the
    device, when it is recorded; ``record``: the whole record (empty when there is none).
    """

    host: str | None
    port: int | None
    profile: str | None = None
    root: str | None = None
    device_id: str | None = None
    ssh: dict[str, Any] = field(default_factory=dict)
    name: str | None = None
    record: dict[str, Any] = field(default_factory=dict)


def resolve(
    host: str | None,
    port: int | None,
    *,
    profile: str | None = None,
    root: str | None = None,
    device_id: str | None = None,
    path: Path | None = None,
) -> Resolved:
    """``--host NAME`` (an inventory name) or ``--host USER@ADDR``, filled in from the inventory.

    A name becomes its recorded ``user@addr`` and port; a ``user@addr[:port]`` (or a bare address)
    that is recorded finds its record. Either way the record's profile, root and SSH options fill
    what the caller did not give: explicit values always win. A host that is not recorded is
    returned as given, with no options.
    """
    if not host:
        return Resolved(None, port, profile, root, device_id)
    devices = load(path)
    if "@" not in host and host in devices:
        name = host
        rec = devices[name]
        host, port, device_id = rec["host"], port or rec.get("port", 22), device_id or name
    else:
        name = find(devices, host, port or 22)
        rec = devices.get(name, {}) if name else {}
    return Resolved(
        host,
        port,
        profile or rec.get("profile"),
        root or rec.get("root"),
        device_id,
        ssh_options(rec),
        name,
        rec,
    )


def format_table(devices: dict[str, dict[str, Any]], now: float | None = None) -> str:
    from edgewise.edge.deploy.local import describe_health

    now = time.time() if now is None else now
    header = ("NAME", "HOST", "PROFILE", "INSTALLED", "LAST HEALTH")
    rows = [header]
    for name, rec in sorted(devices.items()):
        host = rec.get("host", "?") + ("" if rec.get("port", 22) == 22 else f":{rec['port']}")
        health = describe_health(rec.get("health"), now) if rec.get("health") else None
        if health is None and rec.get("last_run"):
            run = rec["last_run"]
            health = f"{run.get('action')} {'ok' if run.get('ok') else 'failed'} (no daemon report)"
        rows.append((name, host, rec.get("profile") or "?", rec.get("installed") or "-", health or "-"))
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(header) - 1)]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(r, widths)) + "  " + str(r[-1]) for r in rows)
