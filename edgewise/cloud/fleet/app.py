"""The fleet page, its JSON endpoints and ``/metrics``, as a FastAPI router or a whole app.

::

    app = create_fleet_app("fleet.sqlite")                         # alone: uvicorn.run(app)
    serve_app.include_router(fleet_router(store), prefix="/fleet")  # inside the serving app

Routes (relative to where the router is mounted)::

    GET /                                  the page: devices, per-device charts, events, ingest
    GET /devices/{fleet}/{device}          one device: its charts, events, acks and models
    GET /api/devices                       the device table as JSON
    GET /api/devices/{fleet}/{device}      one device (404 if the store has never heard of it)
    GET /api/devices/{fleet}/{device}/series?since=&limit=   latency and throughput over time
    GET /api/events?limit=&fleet=&device=&type=              newest events and errors first
    GET /api/models                        device_models: which device runs which model version
    GET /api/ingest                        ingest counters (total, by label, per worker), rejections
    GET /metrics                           Prometheus text format (:mod:`.metrics`)

FastAPI is imported with this module (the rest of the package does not need it). The page is plain HTML with inline SVG charts drawn on the server (:mod:`.charts`): no script,
nothing fetched from anywhere, so it works offline and behind any proxy. It reloads itself every
``refresh_s`` seconds. Everything a device sent is escaped before it reaches the page.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import time
import urllib.parse
from html import escape
from typing import Any

from fastapi import APIRouter, FastAPI, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, Response

from edgewise.cloud.fleet import charts
from edgewise.cloud.fleet.metrics import CONTENT_TYPE, render
from edgewise.cloud.fleet.store import FleetStore, open_store
from edgewise.cloud.fleet.summary import (
    DEFAULT_STALE_AFTER_S,
    TABLE_COLUMNS,
    DeviceRow,
    device_rows,
    fmt,
    ingest_summary,
    series,
    table_cells,
)

CHART_POINTS = 120  # telemetry reports per chart on the page
PAGE_CHART_DEVICES = 50  # devices with charts on the main page (each has its own page too)

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:1.5rem;color:#222}
h1{font-size:1.4rem;margin:0 0 .3rem}h2{font-size:1.1rem;margin:1.6rem 0 .5rem}
table{border-collapse:collapse;font-size:.9rem}th,td{padding:.25rem .6rem;border-bottom:1px solid #e4e4e4;text-align:left}
th{background:#f6f6f6}td.num{text-align:right;font-variant-numeric:tabular-nums}
.state{display:inline-block;padding:0 .45rem;border-radius:.6rem;font-size:.8rem;color:#fff}
.state-online{background:#2e7d32}.state-offline{background:#757575}.state-stale{background:#ef6c00}
.state-unknown{background:#9e9e9e}.muted{color:#777}.charts{display:flex;flex-wrap:wrap;gap:1rem}
.device-charts{border:1px solid #e4e4e4;border-radius:.4rem;padding:.5rem}.chart-title{font-size:12px}
"""


def _utc(ts: float | None) -> str:
    if ts is None:
        return "-"
    return datetime.datetime.fromtimestamp(ts, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _page(title: str, body: str, refresh_s: int | None) -> str:
    refresh = f'<meta http-equiv="refresh" content="{refresh_s}">' if refresh_s else ""
    return (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8">{refresh}'
        f"<title>{escape(title)}</title><style>{_CSS}</style></head><body>{body}</body></html>"
    )


def _device_path(base: str, fleet: str, device: str) -> str:
    return f"{base}devices/{urllib.parse.quote(fleet, safe='')}/{urllib.parse.quote(device, safe='')}"


def _device_table(rows: list[DeviceRow], base: str, now: float) -> str:
    head = "".join(f"<th>{escape(c)}</th>" for c in TABLE_COLUMNS)
    lines = []
    for row in rows:
        cells = table_cells(row, now)
        tds = []
        for i, (name, cell) in enumerate(zip(TABLE_COLUMNS, cells)):
            if name == "device":
                tds.append(
                    f'<td><a href="{escape(_device_path(base, row.fleet, row.device))}">{escape(cell)}</a></td>'
                )
            elif name == "state":
                tds.append(f'<td><span class="state state-{row.state}">{escape(cell)}</span></td>')
            elif name == "last seen":
                tds.append(f'<td title="{_utc(row.last_seen)}">{escape(cell)}</td>')
            else:
                tds.append(f'<td class="{"num" if i >= 4 else ""}">{escape(cell)}</td>')
        attrs = (
            f'data-fleet="{escape(row.fleet)}" data-device="{escape(row.device)}" data-state="{row.state}"'
        )
        lines.append(f'<tr class="device" {attrs}>{"".join(tds)}</tr>')
    if not rows:
        lines.append(f'<tr><td colspan="{len(TABLE_COLUMNS)}" class="muted">no devices yet</td></tr>')
    return f'<table id="devices"><thead><tr>{head}</tr></thead><tbody>{"".join(lines)}</tbody></table>'


def _charts(data: dict[str, Any], *, width: int = 460) -> str:
    pts = data["points"]
    latency = charts.line_chart(
        [
            ("p50", [(p["ts"], p["p50"]) for p in pts], charts.PALETTE[0]),
            ("p90", [(p["ts"], p["p90"]) for p in pts], charts.PALETTE[4]),
            ("p99", [(p["ts"], p["p99"]) for p in pts], charts.PALETTE[1]),
        ],
        title="latency",
        unit="ms",
        chart="latency",
        width=width,
    )
    throughput = charts.line_chart(
        [("inferences/s", [(p["ts"], p["throughput"]) for p in pts], charts.PALETTE[2])],
        title="throughput",
        unit="inferences/s",
        chart="throughput",
        width=width,
    )
    return latency + throughput


def _events_table(events: list[dict[str, Any]], base: str, *, with_device: bool = True) -> str:
    head = (["device"] if with_device else []) + [
        "time",
        "type",
        "task / code",
        "label / message",
        "latency ms",
        "model",
    ]
    lines = []
    for e in events:
        what = e["label"] if e["type"] == "event" else e["message"]
        model = f"{e['model_name']} {e['model_version']}" if e["model_name"] else "-"
        cells = []
        if with_device:
            link = escape(_device_path(base, e["fleet"], e["device"]))
            cells.append(f'<td><a href="{link}">{escape(e["fleet"])}/{escape(e["device"])}</a></td>')
        cells += [
            f"<td>{_utc(e['ts'])}</td>",
            f"<td>{escape(e['type'])}</td>",
            f"<td>{escape(str(e['task'] or e['code'] or '-'))}</td>",
            f"<td>{escape(str(what if what is not None else '-'))}</td>",
            f'<td class="num">{fmt(e["latency_ms"])}</td>',
            f"<td>{escape(model)}</td>",
        ]
        lines.append(f'<tr class="event event-{escape(e["type"])}">{"".join(cells)}</tr>')
    if not events:
        lines.append(f'<tr><td colspan="{len(head)}" class="muted">no events yet</td></tr>')
    ths = "".join(f"<th>{escape(h)}</th>" for h in head)
    return f'<table class="events"><thead><tr>{ths}</tr></thead><tbody>{"".join(lines)}</tbody></table>'


def _ingest_section(summary: dict[str, Any], rejected: list[dict[str, Any]]) -> str:
    totals = summary["totals"]
    parts = [
        '<p id="ingest">'
        + ", ".join(
            f"{escape(k)}: <b>{totals.get(k, 0)}</b>"
            for k in ("received", "stored", "duplicates", "rejected")
        )
        + "</p>"
    ]
    by_reason = summary["by_label"].get("rejected", {})
    if by_reason:
        items = "".join(f"<li>{escape(r)}: {n}</li>" for r, n in sorted(by_reason.items()))
        parts.append(f'<ul id="rejections">{items}</ul>')
    if rejected:
        rows = "".join(
            f"<tr><td>{_utc(r['received_at'])}</td><td>{escape(r['topic'])}</td><td>{escape(r['reason'])}</td>"
            f"<td>{escape((r['detail'] or '')[:200])}</td></tr>"
            for r in rejected
        )
        parts.append(
            "<table><thead><tr><th>time</th><th>topic</th><th>reason</th><th>detail</th></tr></thead>"
            f"<tbody>{rows}</tbody></table>"
        )
    return "".join(parts)


def fleet_page_html(store: FleetStore, base: str, *, stale_after_s: float, refresh_s: int | None) -> str:
    now = time.time()
    rows = device_rows(store, now=now, stale_after_s=stale_after_s)
    counts = {s: sum(r.state == s for r in rows) for s in ("online", "stale", "offline", "unknown")}
    summary_line = ", ".join(f"{n} {s}" for s, n in counts.items() if n) or "no devices"
    chart_blocks = []
    for row in rows[:PAGE_CHART_DEVICES]:
        data = series(store, row.fleet, row.device, limit=CHART_POINTS)
        link = escape(_device_path(base, row.fleet, row.device))
        chart_blocks.append(
            f'<div class="device-charts" data-fleet="{escape(row.fleet)}" data-device="{escape(row.device)}">'
            f'<div><a href="{link}">{escape(row.fleet)}/{escape(row.device)}</a></div>{_charts(data)}</div>'
        )
    body = (
        f'<h1>Fleet</h1><p class="muted">{escape(summary_line)} &middot; {_utc(now)}</p>'
        f"<h2>Devices</h2>{_device_table(rows, base, now)}"
        f'<h2>Latency and throughput</h2><div class="charts">{"".join(chart_blocks) or "<p class=muted>no telemetry yet</p>"}</div>'
        f"<h2>Events</h2>{_events_table(store.events(limit=30), base)}"
        f"<h2>Ingest</h2>{_ingest_section(ingest_summary(store), store.rejected(limit=10))}"
        f'<p class="muted"><a href="{base}metrics">metrics</a> &middot; <a href="{base}api/devices">JSON</a></p>'
    )
    return _page("Fleet", body, refresh_s)


def device_page_html(
    store: FleetStore, base: str, row: DeviceRow, *, stale_after_s: float, refresh_s: int | None
) -> str:
    now = time.time()
    data = series(store, row.fleet, row.device, limit=500)
    models = [m for m in store.device_models() if m["fleet"] == row.fleet and m["device"] == row.device]
    model_rows = "".join(
        f"<tr><td>{escape(m['task'] or '?')}</td><td>{escape(m['model_name'])}</td>"
        f"<td>{escape(m['model_version'])}</td><td>{_utc(m['since'])}</td></tr>"
        for m in models
    )
    acks = store.command_acks(limit=20, fleet=row.fleet, device=row.device)
    ack_rows = "".join(
        f"<tr><td>{_utc(a['ts'])}</td><td>{escape(str(a['command_id']))}</td><td>{escape(str(a['action']))}</td>"
        f"<td>{'ok' if a['ok'] else 'failed'}</td><td>{escape(a['error'] or '')}</td></tr>"
        for a in acks
    )
    title = f"{row.fleet}/{row.device}"
    body = (
        f'<p><a href="{base}">&larr; fleet</a></p><h1>{escape(title)}</h1>'
        f"{_device_table([row], base, now)}"
        f'<h2>Latency and throughput</h2><div class="charts">{_charts(data, width=620)}</div>'
        "<h2>Models</h2><table><thead><tr><th>task</th><th>model</th><th>version</th><th>since</th></tr></thead>"
        f"<tbody>{model_rows}</tbody></table>"
        f"<h2>Events</h2>{_events_table(store.events(limit=50, fleet=row.fleet, device=row.device), base, with_device=False)}"
        "<h2>Command acks</h2><table><thead><tr><th>time</th><th>command</th><th>action</th><th>result</th>"
        f"<th>error</th></tr></thead><tbody>{ack_rows}</tbody></table>"
    )
    return _page(title, body, refresh_s)


def fleet_router(
    store: FleetStore,
    *,
    stale_after_s: float = DEFAULT_STALE_AFTER_S,
    refresh_s: int | None = 10,
    dependencies: list[Any] | None = None,
):
    """An ``APIRouter`` with the page, the JSON endpoints and ``/metrics``; ``dependencies`` (e.g.
    the serving app's auth) apply to every route."""
    router = APIRouter(dependencies=dependencies or [])

    def base_of(request: Request) -> str:
        return request.url_for("fleet_page").path

    def find(fleet: str, device: str) -> DeviceRow:
        for row in device_rows(store, stale_after_s=stale_after_s):
            if row.fleet == fleet and row.device == device:
                return row
        raise HTTPException(404, detail=f"no device {fleet}/{device} in the store")

    @router.get("/", response_class=HTMLResponse, name="fleet_page")
    def page(request: Request) -> HTMLResponse:
        return HTMLResponse(
            fleet_page_html(store, base_of(request), stale_after_s=stale_after_s, refresh_s=refresh_s)
        )

    @router.get("/devices/{fleet}/{device}", response_class=HTMLResponse, name="fleet_device_page")
    def device_page(request: Request, fleet: str, device: str) -> HTMLResponse:
        row = find(fleet, device)
        return HTMLResponse(
            device_page_html(store, base_of(request), row, stale_after_s=stale_after_s, refresh_s=refresh_s)
        )

    @router.get("/api/devices", name="fleet_api_devices")
    def api_devices() -> dict[str, Any]:
        now = time.time()
        return {
            "now": now,
            "devices": [r.as_dict() for r in device_rows(store, now=now, stale_after_s=stale_after_s)],
        }

    @router.get("/api/devices/{fleet}/{device}", name="fleet_api_device")
    def api_device(fleet: str, device: str) -> dict[str, Any]:
        row = find(fleet, device)
        return {
            **row.as_dict(),
            "models": [m for m in store.device_models() if m["fleet"] == fleet and m["device"] == device],
            "events": store.events(limit=50, fleet=fleet, device=device),
            "command_acks": store.command_acks(limit=50, fleet=fleet, device=device),
        }

    @router.get("/api/devices/{fleet}/{device}/series", name="fleet_api_series")
    def api_series(
        fleet: str, device: str, since: float | None = None, limit: int = Query(500, ge=1, le=10_000)
    ) -> dict[str, Any]:
        find(fleet, device)
        return series(store, fleet, device, since=since, limit=limit)

    @router.get("/api/events", name="fleet_api_events")
    def api_events(
        limit: int = Query(50, ge=1, le=1000),
        fleet: str | None = None,
        device: str | None = None,
        type: str | None = Query(None, pattern="^(event|error)$"),
    ) -> dict[str, Any]:
        return {"events": store.events(limit=limit, fleet=fleet, device=device, type=type)}

    @router.get("/api/models", name="fleet_api_models")
    def api_models() -> dict[str, Any]:
        return {"device_models": store.device_models()}

    @router.get("/api/ingest", name="fleet_api_ingest")
    def api_ingest(limit: int = Query(20, ge=0, le=1000)) -> dict[str, Any]:
        rejected = []
        for r in store.rejected(limit=limit):
            head = r.pop("head")
            rejected.append({**r, "head": head[:200].decode("utf-8", "replace")})
        return {**ingest_summary(store), "rejected": rejected}

    @router.get("/metrics", name="fleet_metrics")
    def metrics() -> Response:
        text = render(store.counters(), device_rows(store, stale_after_s=stale_after_s))
        return Response(text, media_type=CONTENT_TYPE)

    return router


def create_fleet_app(
    store: FleetStore | str | os.PathLike,
    *,
    stale_after_s: float = DEFAULT_STALE_AFTER_S,
    refresh_s: int | None = 10,
    title: str = "edgewise fleet",
):
    """A FastAPI app with :func:`fleet_router` at its root; a store given as a URL is opened here
    (it must exist already for SQLite) and closed when the app shuts down."""
    own = not isinstance(store, FleetStore)
    opened = open_store(store, create=False) if own else store

    @contextlib.asynccontextmanager
    async def lifespan(app):  # noqa: ANN001
        yield
        if own:
            opened.close()

    app = FastAPI(title=title, lifespan=lifespan, docs_url=None, redoc_url=None)
    app.include_router(fleet_router(opened, stale_after_s=stale_after_s, refresh_s=refresh_s))
    app.state.fleet_store = opened
    return app
