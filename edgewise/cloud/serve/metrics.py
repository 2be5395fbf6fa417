"""The server's counters, in the Prometheus text exposition format (served at ``/metrics``).

::

    edgewise_serve_requests_total{endpoint="/v1/recommendations",status="200"} 12
    edgewise_serve_rejected_total{reason="unauthorized"} 3
    edgewise_serve_request_seconds_sum{endpoint="/v1/recommendations"} 0.41
    edgewise_serve_request_seconds_count{endpoint="/v1/recommendations"} 12

``reason`` is the error code of the reply (``unauthorized``, ``too_large``, ``bad_request``,
``model_not_found``, ``wrong_task``, ``not_ready``, ``upstream_error``, ``internal_error``...);
``transport`` says whether the request came over HTTP or the MQTT bridge. Counters live in the
process: under Ray Serve each replica counts its own requests (a scrape sees the replica that
answered it). The standard library only.
"""

from __future__ import annotations

import threading
from collections import defaultdict

PREFIX = "edgewise_serve"


def _labels(pairs: tuple[tuple[str, str], ...]) -> str:
    def esc(v: str) -> str:
        return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")

    return "{" + ",".join(f'{k}="{esc(v)}"' for k, v in pairs) + "}"


class Metrics:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: dict[tuple, int] = defaultdict(int)
        self.rejected: dict[tuple, int] = defaultdict(int)
        self.seconds_sum: dict[tuple, float] = defaultdict(float)
        self.seconds_count: dict[tuple, int] = defaultdict(int)

    def observe(self, endpoint: str, status: int, seconds: float, reason: str | None, transport: str) -> None:
        with self._lock:
            key = (("endpoint", endpoint), ("status", str(status)), ("transport", transport))
            self.requests[key] += 1
            timing = (("endpoint", endpoint),)
            self.seconds_sum[timing] += seconds
            self.seconds_count[timing] += 1
            if reason is not None:
                self.rejected[(("reason", reason), ("transport", transport))] += 1

    def reject(self, reason: str, transport: str) -> None:
        """A rejection that never reached an endpoint (a malformed MQTT envelope)."""
        with self._lock:
            self.rejected[(("reason", reason), ("transport", transport))] += 1

    def rejected_count(self, reason: str) -> int:
        with self._lock:
            return sum(n for key, n in self.rejected.items() if dict(key)["reason"] == reason)

    def render(self) -> str:
        with self._lock:
            lines = [
                f"# HELP {PREFIX}_requests_total Requests answered, by endpoint, status and transport.",
                f"# TYPE {PREFIX}_requests_total counter",
                *(f"{PREFIX}_requests_total{_labels(k)} {v}" for k, v in sorted(self.requests.items())),
                f"# HELP {PREFIX}_rejected_total Requests refused, by reason.",
                f"# TYPE {PREFIX}_rejected_total counter",
                *(f"{PREFIX}_rejected_total{_labels(k)} {v}" for k, v in sorted(self.rejected.items())),
                f"# HELP {PREFIX}_request_seconds Time to answer, by endpoint.",
                f"# TYPE {PREFIX}_request_seconds summary",
            ]
            for key in sorted(self.seconds_count):
                lines.append(f"{PREFIX}_request_seconds_sum{_labels(key)} {self.seconds_sum[key]:.6f}")
                lines.append(f"{PREFIX}_request_seconds_count{_labels(key)} {self.seconds_count[key]}")
        return "\n".join(lines) + "\n"
