"""What the daemon reports about itself: inference statistics and process health.

Process and system figures come from psutil (a small compiled wheel for x86-64 and aarch64, part of
the ``edge`` extra); the temperature falls back to the kernel's thermal zones in /sys where psutil
lists no sensor (Jetson and Raspberry Pi boards expose several). Readers return None where the
platform does not expose a figure (no thermal zone in a container, psutil not installed), so
telemetry says "unknown" rather than a made-up number.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

THERMAL_ZONES = Path("/sys/class/thermal")


def _psutil() -> Any | None:
    try:
        import psutil
    except ImportError:
        log.debug("psutil is not installed: process figures are reported as unknown")
        return None
    return psutil


def rss_mb(pid: int | None = None) -> float | None:
    """Resident memory of a process (default: this one) in MB (10^6 bytes, as telemetry reports it)."""
    psutil = _psutil()
    if psutil is None:
        return None
    try:
        return psutil.Process(pid).memory_info().rss / 1e6
    except (psutil.Error, OSError):
        return None


def temperature_c(thermal_zones: Path = THERMAL_ZONES) -> float | None:
    """The hottest sensor psutil can read, else the hottest readable thermal zone, in Celsius."""
    psutil = _psutil()
    reader = getattr(psutil, "sensors_temperatures", None)  # not on every platform
    readings: list[float] = []
    if reader is not None:
        try:
            readings = [t.current for entries in reader().values() for t in entries if t.current is not None]
        except (OSError, RuntimeError):
            readings = []
    if not readings:
        for zone in thermal_zones.glob("thermal_zone*/temp"):
            try:
                readings.append(int(zone.read_text().strip()) / 1000)
            except (OSError, ValueError):
                continue
    return max(readings) if readings else None


class CpuMeter:
    """Process CPU use between calls, in percent of one core (200 = two cores busy)."""

    def __init__(self, pid: int | None = None) -> None:
        psutil = _psutil()
        self._process = None
        if psutil is not None:
            self._errors = (psutil.Error, OSError)
            try:
                self._process = psutil.Process(pid)
                self._process.cpu_percent(None)  # starts the interval
            except self._errors:
                self._process = None

    def percent(self) -> float | None:
        """CPU use since the previous call (or since the meter was made); None where unknown."""
        if self._process is None:
            return None
        try:
            return float(self._process.cpu_percent(None))
        except self._errors:  # the process is gone
            return None


@dataclass
class InferenceStats:
    """Counts and latencies since the last report; thread-safe."""

    count: int = 0
    errors: int = 0
    labels: Counter = field(default_factory=Counter)
    latencies_ms: list[float] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, latency_ms: float, label: str | None) -> None:
        with self._lock:
            self.count += 1
            self.latencies_ms.append(latency_ms)
            if label is not None:
                self.labels[label] += 1

    def add_error(self) -> None:
        with self._lock:
            self.errors += 1

    def take(self) -> dict:
        """The report for the interval since the last call, and a fresh interval."""
        with self._lock:
            now = time.monotonic()
            lat = np.asarray(self.latencies_ms, dtype=np.float64)
            report = {
                "interval_s": round(now - self.started, 3),
                "inferences": self.count,
                "inference_errors": self.errors,
                "label_counts": dict(self.labels),
                "latency_ms": (
                    {
                        k: round(float(np.percentile(lat, q)), 3)
                        for k, q in (("p50", 50), ("p90", 90), ("p99", 99))
                    }
                    if lat.size
                    else None
                ),
            }
            self.count, self.errors = 0, 0
            self.labels = Counter()
            self.latencies_ms = []
            self.started = now
            return report
