"""Line charts as inline SVG, drawn on the server: the page needs no script and nothing from a CDN.

::

    svg = line_chart([("p50", points50, "#1f77b4"), ("p99", points99, "#d62728")],
                     title="latency", unit="ms", chart="latency")

``points`` are ``(unix time, value or None)``; a None breaks the line. Times are labelled in UTC.
Each chart is an ``<svg class="chart" data-chart=NAME data-points=N>`` with a ``<title>``, so
tests (and screen readers) can tell what it shows.
"""

from __future__ import annotations

import datetime
import math
from html import escape

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e")


def nice_max(value: float) -> float:
    """The smallest 1, 2, 2.5 or 5 times a power of ten at or above ``value`` (> 0)."""
    if value <= 0 or not math.isfinite(value):
        return 1.0
    exp = math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        top = step * 10**exp
        if top >= value * (1 - 1e-12):
            return top
    return 10 ** (exp + 1)  # pragma: no cover


def _time_label(ts: float, span: float) -> str:
    t = datetime.datetime.fromtimestamp(ts, datetime.timezone.utc)
    return t.strftime("%H:%M:%S" if span < 6 * 3600 else "%m-%d %H:%M")


def _number(value: float) -> str:
    return f"{value:.0f}" if value >= 100 or value == int(value) else f"{value:.3g}"


def line_chart(
    series: list[tuple[str, list[tuple[float, float | None]], str]],
    *,
    title: str,
    unit: str,
    chart: str,
    width: int = 560,
    height: int = 180,
) -> str:
    left, right, top, bottom = 48, 12, 22, 26
    plot_w, plot_h = width - left - right, height - top - bottom
    points = [(x, y) for _, pts, _ in series for x, y in pts if y is not None and math.isfinite(y)]
    parts = [
        f'<svg class="chart" data-chart="{escape(chart)}" data-points="{len(points)}" '
        f'xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img">',
        f"<title>{escape(title)} ({escape(unit)})</title>",
        f'<text x="{left}" y="14" class="chart-title">{escape(title)} ({escape(unit)})</text>',
        f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#ccc"/>',
    ]
    if not points:
        parts.append(
            f'<text x="{left + plot_w / 2}" y="{top + plot_h / 2}" text-anchor="middle" fill="#888">'
            "no data yet</text></svg>"
        )
        return "".join(parts)
    x0, x1 = min(x for x, _ in points), max(x for x, _ in points)
    span = x1 - x0
    if span <= 0:
        x0, x1, span = x0 - 1, x1 + 1, 2.0
    y_top = nice_max(max(y for _, y in points))

    def sx(x: float) -> float:
        return left + (x - x0) / span * plot_w

    def sy(y: float) -> float:
        return top + plot_h - (y / y_top) * plot_h

    for i in range(5):  # horizontal grid and y labels
        value = y_top * i / 4
        y = sy(value)
        parts.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{y:.1f}" y2="{y:.1f}" stroke="#eee"/>')
        parts.append(
            f'<text x="{left - 4}" y="{y + 4:.1f}" text-anchor="end" font-size="10">{_number(value)}</text>'
        )
    for i in range(4):  # x labels
        x = x0 + span * i / 3
        anchor = "start" if i == 0 else "end" if i == 3 else "middle"
        parts.append(
            f'<text x="{sx(x):.1f}" y="{height - 8}" text-anchor="{anchor}" font-size="10">'
            f"{_time_label(x, span)}</text>"
        )
    legend_x = left + plot_w
    for n, (name, pts, color) in enumerate(series):
        for run in _runs(pts):
            if len(run) == 1:
                x, y = run[0]
                parts.append(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="2.5" fill="{color}"/>')
            else:
                coords = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in run)
                parts.append(
                    f'<polyline class="series" data-series="{escape(name)}" points="{coords}" '
                    f'fill="none" stroke="{color}" stroke-width="1.5"/>'
                )
        parts.append(
            f'<text x="{legend_x - 60 * (len(series) - n - 1)}" y="14" text-anchor="end" font-size="11" '
            f'fill="{color}">{escape(name)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _runs(points: list[tuple[float, float | None]]) -> list[list[tuple[float, float]]]:
    runs: list[list[tuple[float, float]]] = [[]]
    for x, y in points:
        if y is None or not math.isfinite(y):
            if runs[-1]:
                runs.append([])
        else:
            runs[-1].append((x, y))
    return [r for r in runs if r]
