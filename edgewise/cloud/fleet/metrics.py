"""``/metrics``: the ingest counters and per-device gauges in Prometheus' text format (0.0.4).

The counters come from the store (``ingest_counters``), committed with the rows they count, so
they survive restarts and add up across workers: ``received = stored + duplicates + ignored +
rejected`` for every worker. Units are Prometheus' base units (seconds, bytes)::

    edgewise_ingest_received_total{worker, kind}       messages taken from the broker (committed)
    edgewise_ingest_stored_total{worker, kind}         stored as new rows
    edgewise_ingest_duplicates_total{worker, kind}     replays of a stored payload (same key)
    edgewise_ingest_ignored_total{worker, kind}        not telemetry (cmd, offload topics)
    edgewise_ingest_rejected_total{worker, reason}     refused (bad_topic, unknown_device, ...)
    edgewise_fleet_devices{state}                      devices per state
    edgewise_device_info{fleet, device, model, version, edgewise_version}   1
    edgewise_device_online{fleet, device}              1 online, 0 otherwise
    edgewise_device_last_seen_timestamp_seconds{fleet, device}
    edgewise_device_latency_seconds{fleet, device, quantile}   newest telemetry window
    edgewise_device_throughput_per_second{fleet, device}       inferences/s, newest window
    edgewise_device_cpu_percent / _memory_rss_bytes / _temperature_celsius / _outbox_depth
"""

from __future__ import annotations

import math

from edgewise.cloud.fleet.classify import REASONS
from edgewise.cloud.fleet.summary import STATES, DeviceRow

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_COUNTERS = {
    "received": "Messages the ingest workers took from the broker (counted when their batch committed).",
    "stored": "Payloads stored as new rows.",
    "duplicates": "Replays of a payload already stored (same device and key), not stored again.",
    "ignored": "Messages on topics that are not telemetry (cmd, offload), acknowledged and dropped.",
    "rejected": "Messages refused, by reason; see the rejected_payloads table for the latest.",
}


def escape_label(value: object) -> str:
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _value(value: float) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


class _Writer:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(self, name: str, kind: str, help_text: str) -> None:
        self.lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]

    def sample(self, name: str, labels: dict[str, object], value: float) -> None:
        inside = ",".join(f'{k}="{escape_label(v)}"' for k, v in labels.items())
        self.lines.append(f"{name}{{{inside}}} {_value(value)}" if inside else f"{name} {_value(value)}")


def render(counters: list[dict], devices: list[DeviceRow]) -> str:
    """The exposition text: ``counters`` as :meth:`FleetStore.counters` returns them."""
    out = _Writer()
    for counter, help_text in _COUNTERS.items():
        name = f"edgewise_ingest_{counter}_total"
        out.family(name, "counter", help_text)
        label = "reason" if counter == "rejected" else "kind"
        rows = [r for r in counters if r["counter"] == counter]
        for row in rows:
            out.sample(name, {"worker": row["worker"], label: row["label"]}, int(row["value"]))
        if counter == "rejected":  # every reason present from the start, so rate() sees the first one
            seen = {(r["worker"], r["label"]) for r in rows}
            for worker in sorted({r["worker"] for r in counters}):
                for reason in REASONS:
                    if (worker, reason) not in seen:
                        out.sample(name, {"worker": worker, "reason": reason}, 0)

    out.family("edgewise_fleet_devices", "gauge", "Devices by state (online, stale, offline, unknown).")
    for state in STATES:
        out.sample("edgewise_fleet_devices", {"state": state}, sum(d.state == state for d in devices))

    def per_device(name: str, kind: str, help_text: str, get) -> None:  # noqa: ANN001
        values = [(d, get(d)) for d in devices]
        values = [(d, v) for d, v in values if v is not None]
        if not values:
            return
        out.family(name, kind, help_text)
        for d, v in values:
            if isinstance(v, list):  # several samples: (extra labels, value)
                for extra, inner in v:
                    out.sample(name, {"fleet": d.fleet, "device": d.device, **extra}, inner)
            else:
                out.sample(name, {"fleet": d.fleet, "device": d.device}, v)

    if devices:
        out.family(
            "edgewise_device_info", "gauge", "The model and edgewise version each device reports (always 1)."
        )
        for d in devices:
            out.sample(
                "edgewise_device_info",
                {
                    "fleet": d.fleet,
                    "device": d.device,
                    "model": d.model_name or "",
                    "version": d.model_version or "",
                    "edgewise_version": d.edgewise_version or "",
                },
                1,
            )
    per_device(
        "edgewise_device_online",
        "gauge",
        "1 if the device is online, else 0.",
        lambda d: int(d.state == "online"),
    )
    per_device(
        "edgewise_device_last_seen_timestamp_seconds",
        "gauge",
        "When the device was last heard from (Unix time, ingest clock).",
        lambda d: d.last_seen,
    )
    per_device(
        "edgewise_device_latency_seconds",
        "gauge",
        "Inference latency percentiles of the device's newest telemetry window.",
        lambda d: (
            None
            if d.latency_ms is None
            else [
                ({"quantile": q}, d.latency_ms[k] / 1000.0)
                for q, k in (("0.5", "p50"), ("0.9", "p90"), ("0.99", "p99"))
            ]
        ),
    )
    per_device(
        "edgewise_device_throughput_per_second",
        "gauge",
        "Inferences per second over the device's newest telemetry window.",
        lambda d: d.throughput_per_s,
    )
    per_device(
        "edgewise_device_cpu_percent", "gauge", "Process CPU use (100 = one core).", lambda d: d.cpu_percent
    )
    per_device(
        "edgewise_device_memory_rss_bytes",
        "gauge",
        "Resident memory of the device's process.",
        lambda d: None if d.rss_mb is None else d.rss_mb * 1e6,
    )
    per_device(
        "edgewise_device_temperature_celsius",
        "gauge",
        "SoC temperature where readable.",
        lambda d: d.temperature_c,
    )
    per_device(
        "edgewise_device_outbox_depth",
        "gauge",
        "Messages waiting in the device's outbox.",
        lambda d: d.outbox_depth,
    )
    return "\n".join(out.lines) + "\n"
