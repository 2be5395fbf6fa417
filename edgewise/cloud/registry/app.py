"""The registry over HTTP: a FastAPI router the serving app mounts (``edgewise cloud serve``; this
module imports FastAPI, the storage and the client do not).

::

    GET  /registry/v1/bundles[?name=N]                    stored versions (records)
    GET  /registry/v1/bundles/{name}/{version}            one record
    GET  /registry/v1/bundles/{name}/{version}/archive    the archive (bearer token, or the
                                                          ?token= of a promotion of that version)
    POST /registry/v1/bundles                             push: the body is a bundle .tar.gz
    GET  /registry/v1/fleets                              fleets with a promotion
    GET  /registry/v1/fleets/{fleet}                      target and each device's state (rollout.py)
    POST /registry/v1/fleets/{fleet}/promote              {"name", "version", "devices"?}: promote,
                                                          and send each device its deploy command

Every route but the archive needs the server's bearer token (the serving app's check; none only
where the serve config allows no auth: on loopback). Devices fetch archives with the download token in the URL
their deploy command carries (a per-promotion secret; the server keeps its sha256), because the
daemon's download sends no bearer token; what they install is still checked against the fleet
signature on the device. Refusals are JSON ``{"error": {"message", "type", "code"}}`` with 400
(a bundle the registry refuses: unsigned, wrongly signed, tampered, an existing version with other
bytes, not a bundle), 401, 404, 413 (over ``max_push_bytes``) and 503 (no broker to send commands).
"""

from __future__ import annotations

import hmac
import os
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, JSONResponse

from edgewise.cloud.registry.rollout import (
    archive_url,
    deploy_command,
    fleet_devices,
    fleet_state,
    new_download_token,
    public_entry,
    token_digest,
)
from edgewise.cloud.registry.storage import Registry, RegistryError, check_fleet
from edgewise.errors import EdgewiseError

DEFAULT_MAX_PUSH_BYTES = 2 * 1024**3
PREFIX = "/registry/v1"

# send(fleet, device, payload bytes) -> None: publishes a command (QoS 1) or raises EdgewiseError
Sender = Callable[[str, str, bytes], None]


def registry_router(
    registry: Registry,
    *,
    store: Any | None = None,
    public_url: str,
    send: Sender | None = None,
    authorized: Callable[[str | None], bool] | None = None,
    max_push_bytes: int = DEFAULT_MAX_PUSH_BYTES,
    count: Callable[[str], None] | None = None,
):
    """The routes above. ``store``: the fleet store (devices, acks, what runs where); ``public_url``:
    the base URL devices reach this server at (https); ``send``: publishes a device command;
    ``authorized``: whether an ``Authorization`` header is accepted (the serving app's token
    check; None: no auth); ``count(code)``: called for every refusal (the app's metrics count them
    by reason, ``registry_<code>``)."""
    router = APIRouter(prefix=PREFIX)

    def _error(status: int, message: str, code: str) -> Any:
        if count is not None:
            count(f"registry_{code}")
        kind = "invalid_request_error" if status < 500 else "server_error"
        return JSONResponse({"error": {"message": message, "type": kind, "code": code}}, status_code=status)

    def bearer_ok(request: Request) -> bool:
        return authorized is None or authorized(request.headers.get("authorization"))

    def promoted_with(token: str, name: str, version: str) -> bool:
        """Whether ``token`` is the download token of a promotion of ``name`` ``version``."""
        digest = token_digest(token)
        return any(
            entry["name"] == name
            and entry["version"] == version
            and hmac.compare_digest(entry.get("token_sha256", ""), digest)
            for fleet in registry.fleets()
            for entry in registry.promotions(fleet)
        )

    def unauthorized() -> Any:
        return _error(401, "missing or wrong bearer token (Authorization: Bearer <token>)", "unauthorized")

    def refused(exc: Exception) -> Any:
        status = 404 if "not in the registry" in str(exc) else 400
        return _error(status, str(exc), "not_found" if status == 404 else "bundle_refused")

    @router.get("/bundles")
    def list_bundles(request: Request, name: str | None = None) -> Any:
        if not bearer_ok(request):
            return unauthorized()
        try:
            return {"bundles": [r.to_dict() for r in registry.versions(name)]}
        except RegistryError as exc:
            return refused(exc)

    @router.get("/bundles/{name}/{version}")
    def get_record(request: Request, name: str, version: str) -> Any:
        if not bearer_ok(request):
            return unauthorized()
        try:
            return registry.record(name, version).to_dict()
        except RegistryError as exc:
            return refused(exc)

    @router.get("/bundles/{name}/{version}/archive")
    def get_archive(request: Request, name: str, version: str, token: str | None = None) -> Any:
        if not bearer_ok(request) and not (token and promoted_with(token, name, version)):
            return unauthorized()
        try:
            record = registry.record(name, version)
            path = registry.archive(name, version)
        except RegistryError as exc:
            return refused(exc)
        headers = {"x-edgewise-sha256": record.sha256}
        return FileResponse(
            path, media_type="application/gzip", filename=record.archive_name, headers=headers
        )

    @router.post("/bundles")
    async def push(request: Request) -> Any:
        if not bearer_ok(request):
            return unauthorized()
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > max_push_bytes:
            return _error(
                413, f"the bundle is {int(declared)} bytes, over the limit of {max_push_bytes}", "too_large"
            )
        registry.root.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".upload-", suffix=".tar.gz", dir=registry.root)
        try:
            size = 0
            with os.fdopen(fd, "wb") as fh:
                async for chunk in request.stream():
                    size += len(chunk)
                    if size > max_push_bytes:
                        return _error(
                            413, f"the bundle is over the limit of {max_push_bytes} bytes", "too_large"
                        )
                    fh.write(chunk)
            if size == 0:
                return _error(400, "empty body: send the bundle's .tar.gz", "bundle_refused")
            try:
                record, new = registry.push(Path(tmp), by=request.headers.get("x-edgewise-user"))
            except EdgewiseError as exc:
                return refused(exc)
        finally:
            Path(tmp).unlink(missing_ok=True)
        return JSONResponse({**record.to_dict(), "new": new}, status_code=201 if new else 200)

    @router.get("/fleets")
    def fleets(request: Request) -> Any:
        if not bearer_ok(request):
            return unauthorized()
        return {"fleets": registry.fleets()}

    @router.get("/fleets/{fleet}")
    def fleet(request: Request, fleet: str) -> Any:
        if not bearer_ok(request):
            return unauthorized()
        try:
            check_fleet(fleet)
        except EdgewiseError as exc:
            return _error(400, str(exc), "bad_fleet")
        target = registry.promoted(fleet)
        if store is None:
            return {"fleet": fleet, "target": public_entry(target), "devices": None}
        return fleet_state(store, fleet, target)

    @router.post("/fleets/{fleet}/promote")
    async def promote(request: Request, fleet: str) -> Any:
        if not bearer_ok(request):
            return unauthorized()
        try:
            body = await request.json()
        except ValueError:
            return _error(400, 'the body must be JSON: {"name", "version", "devices"?}', "bad_request")
        if (
            not isinstance(body, dict)
            or not isinstance(body.get("name"), str)
            or not isinstance(body.get("version"), str)
        ):
            return _error(
                400, 'the body must be {"name": str, "version": str, "devices"?: [str]}', "bad_request"
            )
        unknown = sorted(set(body) - {"name", "version", "devices"})
        if unknown:
            return _error(400, f"unknown field(s) {unknown}: expected name, version, devices", "bad_request")
        try:
            check_fleet(fleet)
            record = registry.record(body["name"], body["version"])
        except EdgewiseError as exc:
            return refused(exc) if isinstance(exc, RegistryError) else _error(400, str(exc), "bad_fleet")
        devices = body.get("devices")
        if devices is None:
            devices = fleet_devices(store, fleet) if store is not None else []
        if not isinstance(devices, list) or not all(isinstance(d, str) and d for d in devices):
            return _error(400, "devices must be a list of device ids", "bad_request")
        if devices and send is None:
            return _error(
                503, "no broker configured (serve config mqtt:): cannot send deploy commands", "no_broker"
            )
        token = new_download_token()
        command_id = f"promote-{uuid.uuid4().hex[:16]}"
        url = archive_url(public_url, record, token)
        command = deploy_command(command_id, url, record)
        entry = registry.promote(
            fleet,
            record.name,
            record.version,
            by=request.headers.get("x-edgewise-user"),
            extra={"command_id": command_id, "devices": devices, "token_sha256": token_digest(token)},
        )
        sent, failed = [], {}
        for device in devices:
            try:
                send(fleet, device, command["payload"])  # type: ignore[misc]
                sent.append(device)
            except EdgewiseError as exc:
                failed[device] = str(exc)
        return {"promotion": public_entry(entry), "sent": sent, "failed": failed, "at": time.time()}

    return router
