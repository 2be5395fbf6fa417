"""What the daemon reports about itself: inference statistics and process health, from /proc and /sys.

Readers return None where the platform does not expose a figure (no thermal zone in a container),
so telemetry says "unknown" rather than a made-up number.
"""

from __future__ import annotations

import os
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


def rss_mb(pid: int | str = "self") -> float | None:
    """Resident memory of a process in MiB (``VmRSS`` of /proc/PID/status)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def temperature_c() -> float | None:
    """The hottest readable thermal zone (Jetson and Raspberry Pi expose several), in Celsius."""
    readings = []
    for zone in Path("/sys/class/thermal").glob("thermal_zone*/temp"):
        try:
            readings.append(int(zone.read_text().strip()) / 1000)
        except (OSError, ValueError):
            continue
    return max(readings) if readings else None


class CpuMeter:
    """Process CPU use between calls, in percent of one core (200 = two cores busy)."""

    def __init__(self) -> None:
        self._last = self._sample()

    @staticmethod
    def _sample() -> tuple[float, float]:
        t = os.times()
        return t.user + t.system, time.monotonic()

    def percent(self) -> float | None:
        cpu, wall = self._sample()
        last_cpu, last_wall = self._last
        self._last = (cpu, wall)
        if wall - last_wall <= 0:
            return None
        return max(0.0, 100.0 * (cpu - last_cpu) / (wall - last_wall))


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
