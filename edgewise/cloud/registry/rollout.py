"""Promotion to a fleet: the deploy command each device gets, and where each device stands.

A promotion (:meth:`Registry.promote`) makes a version the fleet's target. :func:`deploy_commands`
turns it into one ``deploy`` command per device (``edgewise/<fleet>/<device>/cmd``, QoS 1), whose
``url`` is the registry's archive of that version with the promotion's download token and whose
``sha256`` is the stored archive's: the daemon downloads it over https, checks the hash and the
fleet signature, switches, health-checks, rolls back on failure and acks (edgewise.edge.daemon).

:func:`fleet_state` reads what came back from the fleet store (edgewise.cloud.fleet.store: the
ingest stores the acks and learns what each device runs from its status and events)::

    {"fleet": "lab", "target": {name, version, sha256, at, by, command_id},
     "devices": [{"device": "pi-1", "running": {"name", "version"} | None,
                  "state": "current" | "pending" | "failed" | "unknown",
                  "ack": {"ok", "error", "ts"} | None}, ...]}

``current``: the device runs the target; ``pending``: commanded, no ack yet; ``failed``: the device
acked an error (a download, signature or health check failure: the daemon rolled back, and
``running`` shows what it went back to); ``unknown``: the device was not commanded (it joined the
fleet after the promotion, or nothing was sent).
"""

from __future__ import annotations

import hashlib
import secrets
import urllib.parse
from typing import Any

from edgewise.cloud.registry.storage import BundleRecord


def new_download_token() -> str:
    return secrets.token_urlsafe(24)


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def archive_url(public_url: str, record: BundleRecord, token: str) -> str:
    """The archive of ``record`` under the registry's public base URL, with a download token."""
    base = public_url.rstrip("/")
    name, version = urllib.parse.quote(record.name), urllib.parse.quote(record.version)
    return f"{base}/registry/v1/bundles/{name}/{version}/archive?token={urllib.parse.quote(token)}"


def deploy_command(command_id: str, url: str, record: BundleRecord) -> dict[str, Any]:
    """The ``command`` payload (edgewise.edge.telemetry.schema.Command) a device gets."""
    from edgewise.edge.telemetry.schema import Command, encode

    command = Command(id=command_id, action="deploy", args={"url": url, "sha256": record.sha256})
    return {"payload": encode(command), "id": command_id}


def public_entry(entry: dict[str, Any] | None) -> dict[str, Any] | None:
    """A promotion entry without the download token's digest."""
    return None if entry is None else {k: v for k, v in entry.items() if k != "token_sha256"}


def fleet_devices(store: Any, fleet: str) -> list[str]:
    """The devices the fleet store has heard from in ``fleet``."""
    return [
        r["device"]
        for r in store.query("SELECT device FROM devices WHERE fleet = ? ORDER BY device", (fleet,))
    ]


def fleet_state(store: Any, fleet: str, target: dict[str, Any] | None) -> dict[str, Any]:
    running: dict[str, dict[str, str]] = {}
    for row in store.device_models():
        if row["fleet"] == fleet:
            running.setdefault(row["device"], {"name": row["model_name"], "version": row["model_version"]})
    acks: dict[str, dict[str, Any]] = {}
    command_id = (target or {}).get("command_id")
    if command_id:
        for row in store.query(
            "SELECT device, ok, error, ts FROM command_acks WHERE fleet = ? AND command_id = ?",
            (fleet, command_id),
        ):
            acks[row["device"]] = {"ok": bool(row["ok"]), "error": row["error"], "ts": row["ts"]}
    commanded = set((target or {}).get("devices") or ())
    devices = []
    for device in sorted(set(fleet_devices(store, fleet)) | commanded):
        now = running.get(device)
        ack = acks.get(device)
        if target is not None and now == {"name": target["name"], "version": target["version"]}:
            state = "current"
        elif ack is not None and not ack["ok"]:
            state = "failed"
        elif device in commanded and ack is None or ack is not None:
            state = "pending"
        else:
            state = "unknown"
        devices.append({"device": device, "running": now, "state": state, "ack": ack})
    return {"fleet": fleet, "target": public_entry(target), "devices": devices}
