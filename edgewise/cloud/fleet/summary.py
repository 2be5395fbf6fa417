"""What the fleet page, its JSON, ``/metrics`` and ``edgewise cloud fleet`` show, computed once.

A device's ``state``:

* ``online``: its last status (the one received last) says online and it was heard from within
  ``stale_after_s`` (any payload counts);
* ``stale``: its status says online but nothing came for longer than that (a device that lost
  power without the broker noticing yet, or whose telemetry stopped);
* ``offline``: its last status says offline (``reason``: ``shutdown`` or ``connection lost``);
* ``unknown``: heard from, but no status yet.

Latency percentiles are the device's own, from its newest telemetry report (p50/p90/p99 of that
window); a device that sends events but no telemetry gets them from its last 1000 events instead
(``latency_source`` says which). Throughput is inferences per second over that report's window.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from typing import Any

from edgewise.cloud.fleet.store import FleetStore

DEFAULT_STALE_AFTER_S = 120.0
STATES = ("online", "stale", "offline", "unknown")


@dataclass
class DeviceRow:
    fleet: str
    device: str
    state: str
    reason: str | None
    last_seen: float
    first_seen: float
    model_name: str | None
    model_version: str | None
    edgewise_version: str | None
    uptime_s: float | None
    latency_ms: dict[str, float] | None
    latency_source: str | None
    throughput_per_s: float | None
    inferences: int | None
    inference_errors: int | None
    cpu_percent: float | None
    rss_mb: float | None
    temperature_c: float | None
    outbox_depth: int | None
    telemetry_ts: float | None

    @property
    def model(self) -> str | None:
        return f"{self.model_name} {self.model_version}" if self.model_name else None

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "model": self.model}


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def device_rows(
    store: FleetStore, *, now: float | None = None, stale_after_s: float = DEFAULT_STALE_AFTER_S
) -> list[DeviceRow]:
    now = time.time() if now is None else now
    latest = store.latest_telemetry()
    rows = []
    for d in store.devices():
        key = (d["fleet"], d["device"])
        t = latest.get(key)
        state = d["state"] or "unknown"
        if state == "online" and now - d["last_seen"] > stale_after_s:
            state = "stale"
        latency, source = None, None
        if t is not None and t["latency_p50_ms"] is not None:
            latency = {"p50": t["latency_p50_ms"], "p90": t["latency_p90_ms"], "p99": t["latency_p99_ms"]}
            source = "telemetry"
        elif t is None:
            values = store.event_latencies(*key)
            if values:
                latency = {q: percentile(values, n) for q, n in (("p50", 50), ("p90", 90), ("p99", 99))}
                source = "events"
        throughput = None
        if t is not None and t["interval_s"]:
            throughput = t["inferences"] / t["interval_s"]
        rows.append(
            DeviceRow(
                fleet=d["fleet"],
                device=d["device"],
                state=state,
                reason=d["state_reason"] if d["state"] == "offline" else None,
                last_seen=d["last_seen"],
                first_seen=d["first_seen"],
                model_name=d["model_name"],
                model_version=d["model_version"],
                edgewise_version=d["edgewise_version"],
                uptime_s=d["uptime_s"],
                latency_ms=latency,
                latency_source=source,
                throughput_per_s=throughput,
                inferences=t["inferences"] if t else None,
                inference_errors=t["inference_errors"] if t else None,
                cpu_percent=t["cpu_percent"] if t else None,
                rss_mb=t["rss_mb"] if t else None,
                temperature_c=t["temperature_c"] if t else None,
                outbox_depth=t["outbox_depth"] if t else None,
                telemetry_ts=t["ts"] if t else None,
            )
        )
    return rows


def series(
    store: FleetStore, fleet: str, device: str, *, since: float | None = None, limit: int = 500
) -> dict:
    """A device's charts as data: per telemetry report its time, latency p50/p90/p99 and
    throughput (inferences per second over the report's window)."""
    points = []
    for r in store.telemetry_series(fleet, device, since=since, limit=limit):
        points.append(
            {
                "ts": r["ts"],
                "p50": r["latency_p50_ms"],
                "p90": r["latency_p90_ms"],
                "p99": r["latency_p99_ms"],
                "throughput": r["inferences"] / r["interval_s"] if r["interval_s"] else None,
                "errors": r["inference_errors"],
                "cpu_percent": r["cpu_percent"],
                "rss_mb": r["rss_mb"],
            }
        )
    return {"fleet": fleet, "device": device, "points": points}


def ingest_summary(store: FleetStore) -> dict[str, Any]:
    """The ingest counters summed over the workers, and per worker."""
    totals = store.counter_totals()
    workers: dict[str, dict[str, int]] = {}
    for row in store.counters():
        per = workers.setdefault(row["worker"], {})
        per[row["counter"]] = per.get(row["counter"], 0) + int(row["value"])
    return {
        "totals": {name: sum(by_label.values()) for name, by_label in totals.items()},
        "by_label": totals,
        "workers": workers,
    }


def ago(seconds: float) -> str:
    """``3 s``, ``4 min``, ``2 h``, ``5 d`` ago."""
    seconds = max(0.0, seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f} {unit}"
    return f"{seconds:.0f} s"


def fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


TABLE_COLUMNS = ("fleet", "device", "state", "model", "p50 ms", "p90 ms", "p99 ms", "inf/s", "last seen")


def table_cells(row: DeviceRow, now: float) -> list[str]:
    """The cells of one row of the device table (the page and the terminal show the same)."""
    lat = row.latency_ms or {}
    state = row.state if row.reason is None else f"{row.state} ({row.reason})"
    return [
        row.fleet,
        row.device,
        state,
        row.model or "-",
        fmt(lat.get("p50")),
        fmt(lat.get("p90")),
        fmt(lat.get("p99")),
        fmt(row.throughput_per_s, 2),
        f"{ago(now - row.last_seen)} ago",
    ]


def text_table(rows: list[DeviceRow], *, now: float | None = None) -> str:
    """The device table for a terminal: aligned columns, one device a line."""
    now = time.time() if now is None else now
    cells = [list(TABLE_COLUMNS)] + [table_cells(r, now) for r in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(TABLE_COLUMNS))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in cells]
    if not rows:
        lines.append("(no devices yet)")
    return "\n".join(lines)
