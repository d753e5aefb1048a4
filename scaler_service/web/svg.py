"""Server-rendered SVG line charts: pure functions from numbers to markup, no JavaScript, no library.

Every piece of text that reaches the markup goes through :func:`html.escape`; numbers are formatted by us.
Gaps (``None`` or non-finite values) break a line instead of being drawn as zero.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from html import escape

Point = tuple[float, float | None]

HISTORY_COLOUR = "#1f2933"
FORECAST_COLOUR = "#2563eb"
BAND_COLOUR = "#93c5fd"
SERVED_COLOUR = "#ea580c"
THRESHOLD_COLOUR = "#6b7280"
ERROR_OVER_COLOUR = "#f59e0b"
ERROR_UNDER_COLOUR = "#dc2626"


@dataclass(frozen=True, slots=True)
class Series:
    label: str
    points: Sequence[Point]
    colour: str
    dashed: bool = False
    width: float = 1.6


@dataclass(frozen=True, slots=True)
class Band:
    label: str
    points: Sequence[tuple[float, float | None, float | None]]
    """(t, low, high)."""
    colour: str = BAND_COLOUR


@dataclass(frozen=True, slots=True)
class Chart:
    width: int = 640
    height: int = 220
    lines: Sequence[Series] = ()
    bands: Sequence[Band] = ()
    served: tuple[float, float, float] | None = None
    """(from t, to t, value): the value served now, drawn over the horizon it covers."""
    now: float | None = None
    reference: tuple[str, float] | None = None
    """A labelled horizontal line (e.g. one replica's worth of demand)."""
    y_label: str = ""
    title: str = ""
    bars: Sequence[Point] = field(default_factory=tuple)
    """Signed bars around zero (the live error chart) instead of lines."""


def _finite(v: float | None) -> bool:
    return v is not None and math.isfinite(v)


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """Round tick values covering [lo, hi] (1, 2, 2.5, 5 x 10^k steps)."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        hi = lo + 1.0
    raw = (hi - lo) / max(1, count)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    start = math.floor(lo / step) * step
    ticks: list[float] = []
    v = start
    while v <= hi + step * 0.5 and len(ticks) < 20:
        ticks.append(round(v, 10))
        v += step
    return ticks


def format_number(v: float) -> str:
    """Compact: 1.2k, 35, 0.42."""
    a = abs(v)
    if a >= 1e6:
        return f"{v / 1e6:.3g}M"
    if a >= 1e4:
        return f"{v / 1e3:.3g}k"
    if a >= 100 or v == int(v):
        return f"{v:.0f}"
    return f"{v:.3g}"


def _time_ticks(t0: float, t1: float, target: int = 6) -> list[float]:
    span = max(1.0, t1 - t0)
    for step in (300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400, 172800, 604800):
        if span / step <= target:
            break
    first = math.ceil(t0 / step) * step
    return [first + i * step for i in range(int((t1 - first) // step) + 1)]


def _time_label(t: float, span: float) -> str:
    fmt = "%H:%M" if span <= 2 * 86400 else "%a %H:%M"
    return time.strftime(fmt, time.gmtime(t))


class _Scale:
    def __init__(self, chart: Chart, x0: float, x1: float, y0: float, y1: float) -> None:
        self.left, self.right = 56.0, chart.width - 12.0
        self.top, self.bottom = 34.0, chart.height - 26.0
        self.x0, self.x1 = x0, x1 if x1 > x0 else x0 + 1.0
        self.y0, self.y1 = y0, y1 if y1 > y0 else y0 + 1.0

    def x(self, t: float) -> float:
        return self.left + (t - self.x0) / (self.x1 - self.x0) * (self.right - self.left)

    def y(self, v: float) -> float:
        return self.bottom - (v - self.y0) / (self.y1 - self.y0) * (self.bottom - self.top)


def _path(scale: _Scale, points: Sequence[Point]) -> str:
    """An SVG path ``d``: a new sub-path after each gap."""
    parts: list[str] = []
    pen_down = False
    for t, v in points:
        if v is None or not math.isfinite(v):
            pen_down = False
            continue
        parts.append(f"{'L' if pen_down else 'M'}{scale.x(t):.1f},{scale.y(v):.1f}")
        pen_down = True
    return "".join(parts)


def _band_paths(scale: _Scale, points: Sequence[tuple[float, float | None, float | None]]) -> list[str]:
    """One closed polygon per run of finite (low, high) pairs."""
    runs: list[list[tuple[float, float, float]]] = [[]]
    for t, lo, hi in points:
        if lo is not None and hi is not None and math.isfinite(lo) and math.isfinite(hi):
            runs[-1].append((t, lo, hi))
        elif runs[-1]:
            runs.append([])
    out = []
    for run in runs:
        if len(run) < 2:
            continue
        upper = [f"{scale.x(t):.1f},{scale.y(hi):.1f}" for t, _, hi in run]
        lower = [f"{scale.x(t):.1f},{scale.y(lo):.1f}" for t, lo, _ in reversed(run)]
        out.append("M" + "L".join(upper + lower) + "Z")
    return out


def _extent(chart: Chart) -> tuple[float, float, float, float]:
    ts: list[float] = []
    vs: list[float] = []
    for line in chart.lines:
        for t, v in line.points:
            ts.append(t)
            if _finite(v):
                vs.append(float(v))  # type: ignore[arg-type]
    for band in chart.bands:
        for t, lo, hi in band.points:
            ts.append(t)
            vs.extend(float(x) for x in (lo, hi) if _finite(x))  # type: ignore[arg-type]
    for t, v in chart.bars:
        ts.append(t)
        if _finite(v):
            vs.append(float(v))  # type: ignore[arg-type]
    if chart.served is not None:
        ts.extend(chart.served[:2])
        vs.append(chart.served[2])
    if chart.reference is not None and vs:
        ref = chart.reference[1]
        if ref <= 2.0 * max(vs):  # a threshold far above the data would flatten it
            vs.append(ref)
    if not ts:
        now = chart.now if chart.now is not None else 0.0
        ts = [now - 3600, now]
    finite_vs = [v for v in vs if math.isfinite(v)]
    lo_v = min([0.0, *finite_vs])
    hi_v = max([1.0 if not finite_vs else 0.0, *finite_vs])
    return min(ts), max(ts), lo_v, hi_v * 1.05 if hi_v > 0 else hi_v


def render(chart: Chart) -> str:
    """The chart as an inline ``<svg>`` element (text escaped; numbers formatted here)."""
    t0, t1, v0, v1 = _extent(chart)
    ticks = nice_ticks(v0, v1)
    scale = _Scale(chart, t0, t1, min(v0, ticks[0]), max(v1, ticks[-1]))
    w, h = chart.width, chart.height
    out: list[str] = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" viewBox="0 0 {w} {h}" '
        f'width="{w}" height="{h}" role="img" aria-label="{escape(chart.title or chart.y_label)}">'
    ]
    # Grid and y axis.
    for v in ticks:
        y = scale.y(v)
        out.append(
            f'<line x1="{scale.left:.1f}" y1="{y:.1f}" x2="{scale.right:.1f}" y2="{y:.1f}" stroke="#e5e7eb"/>'
            f'<text x="{scale.left - 6:.1f}" y="{y + 4:.1f}" text-anchor="end" class="tick">'
            f"{escape(format_number(v))}</text>"
        )
    span = scale.x1 - scale.x0
    for t in _time_ticks(scale.x0, scale.x1):
        x = scale.x(t)
        if x > scale.right - 14:  # its label would be cut at the edge
            continue
        out.append(
            f'<line x1="{x:.1f}" y1="{scale.bottom:.1f}" x2="{x:.1f}" y2="{scale.bottom + 4:.1f}" stroke="#9ca3af"/>'
            f'<text x="{x:.1f}" y="{scale.bottom + 17:.1f}" text-anchor="middle" class="tick">'
            f"{escape(_time_label(t, span))}</text>"
        )
    if chart.y_label:
        out.append(f'<text x="{scale.left:.1f}" y="14" class="axis">{escape(chart.y_label)}</text>')
    for band in chart.bands:
        for d in _band_paths(scale, band.points):
            out.append(f'<path class="band" d="{d}" fill="{band.colour}" fill-opacity="0.45" stroke="none"/>')
    if chart.reference is not None and v0 <= chart.reference[1] <= scale.y1:
        label, ref = chart.reference
        y = scale.y(ref)
        out.append(
            f'<line x1="{scale.left:.1f}" y1="{y:.1f}" x2="{scale.right:.1f}" y2="{y:.1f}" '
            f'stroke="{THRESHOLD_COLOUR}" stroke-dasharray="2 3"/>'
            f'<text x="{scale.right - 2:.1f}" y="{y - 3:.1f}" text-anchor="end" class="ref">{escape(label)}</text>'
        )
    if chart.bars:
        zero = scale.y(0.0)
        n = max(1, len(chart.bars))
        bar_w = max(1.0, (scale.right - scale.left) / n * 0.8)
        for t, bar in chart.bars:
            if bar is None or not math.isfinite(bar):
                continue
            y = scale.y(bar)
            colour = ERROR_OVER_COLOUR if bar > 0 else ERROR_UNDER_COLOUR
            out.append(
                f'<rect x="{scale.x(t) - bar_w / 2:.1f}" y="{min(y, zero):.1f}" width="{bar_w:.1f}" '
                f'height="{max(0.5, abs(zero - y)):.1f}" fill="{colour}"/>'
            )
        out.append(
            f'<line x1="{scale.left:.1f}" y1="{zero:.1f}" x2="{scale.right:.1f}" y2="{zero:.1f}" stroke="#374151"/>'
        )
    for line in chart.lines:
        d = _path(scale, line.points)
        if d:
            dash = ' stroke-dasharray="6 4"' if line.dashed else ""
            out.append(
                f'<path class="line" d="{d}" fill="none" stroke="{line.colour}" stroke-width="{line.width}"'
                f' stroke-linejoin="round"{dash}/>'
            )
    if chart.now is not None and scale.x0 <= chart.now <= scale.x1:
        x = scale.x(chart.now)
        out.append(
            f'<line x1="{x:.1f}" y1="{scale.top:.1f}" x2="{x:.1f}" y2="{scale.bottom:.1f}" stroke="#111827" '
            f'stroke-dasharray="3 3"/><text x="{x + 3:.1f}" y="{scale.top + 10:.1f}" class="tick">now</text>'
        )
    if chart.served is not None:
        a, b, v = chart.served
        y = scale.y(v)
        out.append(
            f'<line x1="{scale.x(a):.1f}" y1="{y:.1f}" x2="{scale.x(b):.1f}" y2="{y:.1f}" '
            f'stroke="{SERVED_COLOUR}" stroke-width="3"/>'
            f'<circle cx="{scale.x(a):.1f}" cy="{y:.1f}" r="4" fill="{SERVED_COLOUR}"/>'
        )
    out.append(_legend(chart, scale))
    out.append(
        f'<rect x="{scale.left:.1f}" y="{scale.top:.1f}" width="{scale.right - scale.left:.1f}" '
        f'height="{scale.bottom - scale.top:.1f}" fill="none" stroke="#d1d5db"/></svg>'
    )
    return "".join(out)


def _legend(chart: Chart, scale: _Scale) -> str:
    """Above the plot area, right-aligned: never over the data."""
    items: list[tuple[str, str, str]] = [
        (s.label, s.colour, "line-dashed" if s.dashed else "line") for s in chart.lines
    ]
    items += [(b.label, b.colour, "box") for b in chart.bands]
    if chart.served is not None:
        items.append(("served now", SERVED_COLOUR, "thick"))
    if chart.bars:
        items += [("over-forecast", ERROR_OVER_COLOUR, "box"), ("under-forecast", ERROR_UNDER_COLOUR, "box")]
    x = scale.right
    out: list[str] = []
    for label, colour, kind in reversed(items):
        text_w = 6.2 * len(label)
        x -= text_w
        out.append(f'<text x="{x:.1f}" y="{scale.top - 9:.1f}" class="legend">{escape(label)}</text>')
        x -= 22
        y = scale.top - 13
        if kind == "box":
            out.append(f'<rect x="{x:.1f}" y="{y - 5:.1f}" width="16" height="9" fill="{colour}" fill-opacity="0.6"/>')
        else:
            dash = ' stroke-dasharray="4 3"' if kind == "line-dashed" else ""
            width = 3 if kind == "thick" else 2
            out.append(
                f'<line x1="{x:.1f}" y1="{y:.1f}" x2="{x + 16:.1f}" y2="{y:.1f}" stroke="{colour}" '
                f'stroke-width="{width}"{dash}/>'
            )
        x -= 12
    return "".join(out)


__all__ = ["Band", "Chart", "Series", "format_number", "nice_ticks", "render"]
