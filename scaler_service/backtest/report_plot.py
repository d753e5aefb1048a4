"""The comparison as a picture: demand and each strategy's ready capacity over the evaluated stretch, the
worst shortfall and a typical day (``backtest --plot``; the tuning run draws its held-back stretch with it)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from forecasting.series import DAY_S, format_duration, format_instant
from scaler_service.backtest.hpa import TICK_S
from scaler_service.backtest.runner import BacktestReport

STRATEGY_COLOURS = {
    "reactive": "#d97706",
    "reactive_headroom": "#7c3aed",
    "predictive": "#2563eb",
    "static": "#6b7280",
    # The tuning run's configurations: the defaults pale, the tuned ones in the strategies' colours.
    "reactive_default": "#fbbf24",
    "predictive_default": "#93c5fd",
    "reactive_tuned": "#d97706",
    "predictive_tuned": "#2563eb",
}
ZOOM_S = 6 * 3600.0
"""The worst-shortfall panel shows this much time around the worst moment."""


def _colour(name: str) -> str:
    return STRATEGY_COLOURS.get(name, "#059669")


def worst_shortfall_tick(report: BacktestReport) -> int:
    """Tick (from the start of the evaluation) where demand exceeds a scaling strategy's ready capacity most."""
    i0 = report.window.eval_from_tick
    demand = report.demand_at_ticks[i0:]
    worst, at = -np.inf, len(demand) // 2
    for name, outcome in report.outcomes.items():
        if name == "static":
            continue
        gap = demand - outcome.simulation.capacity[i0:]
        k = int(np.nanargmax(gap))
        if gap[k] > worst:
            worst, at = float(gap[k]), k
    return at


def typical_day(report: BacktestReport) -> tuple[int, int] | None:
    """Ticks (from the start of the evaluation) of the whole UTC day whose demand is the median of the days."""
    i0 = report.window.eval_from_tick
    times = report.ticks()[i0:]
    demand = report.demand_at_ticks[i0:]
    days: list[tuple[float, int, int]] = []
    first_day = math.ceil(times[0] / DAY_S) * DAY_S
    for day in np.arange(first_day, times[-1] - DAY_S + 1, DAY_S):
        a, b = int(np.searchsorted(times, day)), int(np.searchsorted(times, day + DAY_S))
        if b - a > 0:
            days.append((float(np.nansum(demand[a:b])), a, b))
    if not days:
        return None
    days.sort()
    _, a, b = days[len(days) // 2]
    return a, b


def plot(report: BacktestReport, path: str | Path, *, span: tuple[float, float, str] | None = None) -> Path:
    """The answer first, then the evidence: cost against service per strategy (top), then demand against each
    strategy's ready capacity and the predictive metric on the worst shortfall and on a typical day, on one
    y-scale with the trace's unit; the legend sits outside the data.

    ``span`` = (start, end, label) shades that stretch wherever a zoom shows it and names it in the zoom's
    title (the tuning run marks the held-back stretch).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    i0 = report.window.eval_from_tick
    times = report.ticks()[i0:]
    demand = report.demand_at_ticks[i0:]
    names = list(report.outcomes)
    unit = report.trace.unit or "demand (the trace's unit)"
    hpa = report.config.hpa
    polls = report.window.sim_start + hpa.keda_poll_s * np.arange(len(report.predictive_run.values))
    forecast = report.predictive_run.values

    fig = plt.figure(figsize=(14, 12))
    grid = fig.add_gridspec(
        3, 2, height_ratios=[0.7, 1, 1], hspace=0.45, wspace=0.25, left=0.12, right=0.96, top=0.93, bottom=0.12
    )
    fig.suptitle(
        f"Capacity backtest: {report.trace.name} - {format_duration(times[-1] - times[0] + TICK_S)} evaluated, "
        f"one replica serves {hpa.capacity_per_replica:g} {report.trace.unit}".rstrip(),
        fontsize=12,
        x=0.02,
        ha="left",
    )

    # 1. Cost and service side by side, one bar per strategy: the answer at a glance.
    order = list(reversed(names))
    for col, (field_name, label, fmt) in enumerate(
        [
            ("replica_hours", "cost: replica-hours (pods starting or ready)", "{:,.0f} replica-h"),
            ("underprovisioned_minutes", "service: minutes under-provisioned (less is better)", "{:,.0f} min"),
        ]
    ):
        ax = fig.add_subplot(grid[0, col])
        values = [float(getattr(report.outcomes[n].metrics, field_name)) for n in order]
        ax.barh(order, values, color=[_colour(n) for n in order])
        for y, v in enumerate(values):
            ax.annotate(fmt.format(v), (v, y), xytext=(4, 0), textcoords="offset points", va="center", fontsize=9)
        ax.set_xlim(0, max(values) * 1.3 if max(values) > 0 else 1)
        ax.set_title(label, loc="left", fontsize=10)
        ax.grid(axis="x", alpha=0.3)
        if col == 1:
            ax.set_yticklabels([])

    # 2 and 3. Zooms on one y-scale; below zero, one strip per strategy marks its under-provisioned ticks.
    k = worst_shortfall_tick(report)
    half = int(ZOOM_S / 2 / TICK_S)
    zooms = [(max(0, k - half), min(len(times), k + half), "Worst shortfall", "%a %m-%d %H:%M")]
    day = typical_day(report)
    if day is not None:
        label = f"A typical day, {format_instant(times[day[0]])[:10]} (median total demand)"
        zooms.append((day[0], day[1], label, "%H:%M"))
    scaling = [n for n in names if n != "static"]
    top = 0.0
    for a, b, _, _ in zooms:
        top = max(top, float(np.nanmax(demand[a:b])))
        for n in scaling:
            top = max(top, float(np.nanmax(report.outcomes[n].simulation.capacity[i0 + a : i0 + b])))
    top *= 1.08
    strip = top * 0.045
    zoom_axes: list[Any] = []
    for row, (a, b, title, time_format) in enumerate(zooms, start=1):
        ax = fig.add_subplot(grid[row, :], sharey=zoom_axes[0] if zoom_axes else None)
        zoom_axes.append(ax)
        when = np.array(times[a:b] * 1000.0, dtype="datetime64[ms]")
        d = demand[a:b]
        for n in names:
            cap = report.outcomes[n].simulation.capacity[i0 + a : i0 + b]
            ax.step(when, cap, where="post", color=_colour(n), linewidth=1.3, label=f"{n}: ready capacity")
        sel = (polls >= times[a]) & (polls <= times[b - 1])
        ax.plot(
            np.array(polls[sel] * 1000.0, dtype="datetime64[ms]"),
            forecast[sel],
            color="#0891b2",
            linestyle=(0, (2, 1.5)),
            linewidth=1.1,
            label="predictive: value served to the HPA (forecast peak)",
        )
        ax.plot(when, d, color="black", linewidth=0.9, label="demand", zorder=4)
        shorts = []
        for j, n in enumerate(scaling):
            cap = report.outcomes[n].simulation.capacity[i0 + a : i0 + b]
            short = d > cap
            ax.fill_between(when, cap, d, where=short, step="post", color="#dc2626", alpha=0.35, linewidth=0)
            y0 = -(j + 1) * strip * 1.25
            ax.fill_between(when, y0, y0 + strip, where=short, step="post", color=_colour(n), linewidth=0)
            ax.text(when[0], y0 + strip / 2, f"{n} short ", ha="right", va="center", fontsize=8, color=_colour(n))
            shorts.append(f"{n} {float(np.sum(short)) * TICK_S / 60:.0f} min")
        ax.set_title(f"{title}: under-provisioned {', '.join(shorts)}", loc="left", fontsize=10)
        ax.set_ylabel(unit)
        ax.set_ylim(-(len(scaling) + 0.4) * strip * 1.25, top)
        ax.set_yticks([t for t in ax.get_yticks() if 0 <= t <= top])
        ax.axhline(0, color="0.6", linewidth=0.6)
        ax.grid(alpha=0.3)
        ax.set_xlim(when[0], when[-1])
        if span is not None and max(span[0], times[a]) < min(span[1], times[b - 1]):
            lo, hi = (
                np.datetime64(int(max(span[0], times[a]) * 1000.0), "ms"),
                np.datetime64(int(min(span[1], times[b - 1]) * 1000.0), "ms"),
            )
            ax.axvspan(lo, hi, color="#16a34a", alpha=0.08, zorder=0, label=span[2])  # type: ignore[arg-type]
            ax.set_title(f"{ax.get_title(loc='left')} - shaded: {span[2]}", loc="left", fontsize=10)
        ax.xaxis.set_major_formatter(mdates.DateFormatter(time_format))  # type: ignore[no-untyped-call]
    handles, labels = zoom_axes[0].get_legend_handles_labels()
    handles.append(Rectangle((0, 0), 1, 1, color="#dc2626", alpha=0.35))
    labels.append("shortfall: demand above a strategy's ready capacity")
    fig.legend(handles, labels, loc="lower center", ncol=3, fontsize=9, frameon=False, bbox_to_anchor=(0.5, 0.0))
    out = Path(path)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


__all__ = ["STRATEGY_COLOURS", "plot", "typical_day", "worst_shortfall_tick"]
