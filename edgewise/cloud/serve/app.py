"""``create_app(config)``: the FastAPI app of the serve config, the same under uvicorn (the embedded
default) and as a Ray Serve deployment (:mod:`.ray_serve`).

Endpoints (the contract of issue 15; errors in OpenAI's shape, see :mod:`.service`):

- ``GET /health`` (no token) ``{"status": "ok", "models": [...]}``
- ``GET /v1/models`` ``{"object": "list", "data": [{"id", "object": "model", "owned_by", "task"}]}``
- ``POST /v1/audio/classifications`` (ser), ``/v1/recommendations`` (rec), ``/v1/audio/speech``
  (tts, audio/wav), ``/v1/chat/completions`` (chat, forwarded to the model's upstream)
- ``GET /metrics`` the counters in Prometheus text format (token required where auth is on)

Every response has an ``x-edgewise-timings`` header (JSON, milliseconds); JSON replies of the
model endpoints carry the same ``timings`` in the body. The models load in the app's startup
(lifespan), once per process (per replica under Ray), and stay resident; the bearer token is
checked before a body is read, and a body is read only up to ``max_request_bytes`` (413 beyond).
"""

from __future__ import annotations

import contextlib
import json
import time
from typing import Any

from fastapi import FastAPI, Request

from edgewise.cloud.serve.config import ServeConfig
from edgewise.cloud.serve.service import ENDPOINT_TASK, ApiError, Reply, Service, too_large, unauthorized

TIMINGS_HEADER = "x-edgewise-timings"
DRAIN_LIMIT = (
    64 * 1024 * 1024
)  # an oversized body up to this is read (and dropped) so the client sees the 413


class TimingsHeader:
    """ASGI middleware: every HTTP response gets an ``x-edgewise-timings`` header (the endpoint's
    own when it set one, else the total time)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:  # noqa: ANN001
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()

        async def send_with_timings(message) -> None:  # noqa: ANN001
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                if not any(k.lower() == TIMINGS_HEADER.encode() for k, _ in headers):
                    total = {"total_ms": round((time.perf_counter() - t0) * 1000, 3)}
                    headers.append((TIMINGS_HEADER.encode(), json.dumps(total).encode()))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_timings)


async def read_body(request: Any, limit: int) -> bytes | int:
    """The body, or its size (an int) when it is over ``limit``: then the rest is read and dropped
    up to :data:`DRAIN_LIMIT` (so the client gets to read the 413) and nothing is kept."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max(limit, DRAIN_LIMIT):
        return int(declared)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            chunks.clear()
            if size > DRAIN_LIMIT:
                return size
        else:
            chunks.append(chunk)
    return size if size > limit else b"".join(chunks)


def _response(reply: Reply) -> Any:
    from fastapi.responses import JSONResponse, Response

    headers = {TIMINGS_HEADER: json.dumps(reply.timings)}
    if reply.status == 401:
        headers["www-authenticate"] = 'Bearer realm="edgewise"'
    if isinstance(reply.body, bytes):
        return Response(reply.body, status_code=reply.status, media_type=reply.media_type, headers=headers)
    return JSONResponse(reply.body, status_code=reply.status, headers=headers)


def create_app(config: ServeConfig, service: Service | None = None, commands: Any = None) -> Any:
    """The app; its models load at startup unless ``service`` is given already loaded (the command
    shares one service between the app and the MQTT bridge). With a ``fleet`` section the fleet
    page is at ``/fleet/``, with a ``registry`` section the registry at ``/registry/v1/`` (both
    behind the token); ``commands(fleet, device, payload)`` publishes a device command (the MQTT
    bridge's connection), which a registry promotion needs."""
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import PlainTextResponse
    from starlette.concurrency import run_in_threadpool
    from starlette.exceptions import HTTPException as StarletteHTTPException

    holder: dict[str, Service] = {}

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        svc = service if service is not None else Service(config)
        await run_in_threadpool(svc.load)  # idempotent: a shared service is loaded once
        holder["service"] = svc
        app.state.service = svc
        yield
        if service is None:
            svc.close()

    app = FastAPI(title="edgewise cloud serve", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.add_middleware(TimingsHeader)

    def svc() -> Service:
        return holder["service"]

    async def model_endpoint(request: Request) -> Any:
        service_, path, t0 = svc(), request.url.path, time.perf_counter()
        authorization = request.headers.get("authorization")
        if not service_.authorized(authorization):  # before reading a byte of the body
            return _response(service_.refuse(unauthorized(), path, "http", t0))
        limit = config.max_request_bytes
        body = await read_body(request, limit)
        if isinstance(body, int):
            return _response(service_.refuse(too_large(limit, body), path, "http", t0))
        reply = await run_in_threadpool(service_.handle, path, body, authorization)
        return _response(reply)

    for path in ENDPOINT_TASK:
        app.add_api_route(path, model_endpoint, methods=["POST"], include_in_schema=True)

    @app.get("/health")
    async def health() -> Any:
        return svc().health()

    @app.get("/v1/models")
    async def models(request: Request) -> Any:
        service_, t0 = svc(), time.perf_counter()
        if not service_.authorized(request.headers.get("authorization")):
            return _response(service_.refuse(unauthorized(), "/v1/models", "http", t0))
        return service_.models()

    @app.get("/metrics")
    async def metrics(request: Request) -> Any:
        service_, t0 = svc(), time.perf_counter()
        if not service_.authorized(request.headers.get("authorization")):
            return _response(service_.refuse(unauthorized(), "/metrics", "http", t0))
        return PlainTextResponse(service_.metrics.render(), media_type="text/plain; version=0.0.4")

    _mount_fleet_and_registry(app, config, svc, commands)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Any:
        code = {401: "unauthorized", 404: "not_found", 405: "method_not_allowed"}.get(
            exc.status_code, "bad_request"
        )
        message = f"{request.method} {request.url.path}: {exc.detail}"
        reply = ApiError(exc.status_code, code, message).reply()
        if "service" in holder:
            svc().metrics.observe(
                request.url.path if exc.status_code != 404 else "other", exc.status_code, 0.0, code, "http"
            )
        return _response(reply)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> Any:
        return _response(ApiError(400, "bad_request", str(exc)).reply())

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> Any:
        import logging

        logging.getLogger(__name__).exception("%s %s: internal error", request.method, request.url.path)
        return _response(ApiError(500, "internal_error", "internal error (logged on the server)").reply())

    return app


def _mount_fleet_and_registry(app: Any, config: ServeConfig, svc: Any, commands: Any) -> None:
    """The fleet page (``/fleet/``) and the registry (``/registry/v1/``) of the config's sections,
    behind the same bearer token as the models."""
    if config.fleet is None and config.registry is None:
        return
    from fastapi import Depends
    from starlette.exceptions import HTTPException as StarletteHTTPException

    def authorized(header: str | None) -> bool:
        return svc().authorized(header)

    def require_token(request: Request) -> None:
        if not authorized(request.headers.get("authorization")):
            raise StarletteHTTPException(401, "missing or wrong bearer token (Authorization: Bearer <token>)")

    store = None
    if config.fleet is not None:
        from edgewise.cloud.fleet.app import fleet_router
        from edgewise.cloud.fleet.store import open_store

        store = open_store(config.fleet.store)
        router = fleet_router(
            store, stale_after_s=config.fleet.stale_after_s, dependencies=[Depends(require_token)]
        )
        app.include_router(router, prefix="/fleet")
    if config.registry is not None:
        from edgewise.cloud.registry.app import registry_router
        from edgewise.cloud.registry.storage import Registry

        section = config.registry
        public_url = section.public_url or f"{config.scheme}://{config.host}:{config.port}"
        registry = Registry(section.root, public_key=section.public_key)
        app.include_router(
            registry_router(
                registry,
                store=store,
                public_url=public_url,
                send=commands,
                authorized=authorized,
                max_push_bytes=section.max_push_bytes,
                count=lambda reason: svc().metrics.reject(reason, "http"),
            )
        )
