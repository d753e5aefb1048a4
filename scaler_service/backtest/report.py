"""The comparison in words, as a table, as JSON and as a picture."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from forecasting.series import DAY_S, format_duration, format_instant
from scaler_service.backtest.hpa import TICK_S
from scaler_service.backtest.metrics import BURST_WINDOW_S, shortfall_causes
from scaler_service.backtest.runner import BacktestReport, StrategyOutcome
from scaler_service.backtest.strategies import describe_fits

PAYS_OFF_SAVING = 0.05
"""Predictive must save at least this share of replica-hours at equal service to be worth running."""
BREAK_EVEN_SAVING = -0.02
MIN_FORECAST_SHARE = 0.5
TOLERANCE_DOMINATES = 0.5
"""When at least this share of predictive's under-provisioned time sat in the HPA's tolerance band, the
verdict says that this, not foresight, is what limits the trace."""


@dataclass(frozen=True, slots=True)
class Verdict:
    pays_off: bool
    saving_vs_headroom: float | None
    """1 - predictive / reactive_headroom replica-hours (at equal under-provisioned minutes)."""
    saving_vs_static: float | None
    worst_shortfall_vs_reactive: float | None
    """predictive / reactive worst shortfall."""
    forecast_share: float | None
    text: str


def _ratio_saving(a: float, b: float) -> float | None:
    return 1.0 - a / b if b > 0 else None


def peak_to_median(report: BacktestReport) -> float:
    demand = report.demand_at_ticks[report.window.eval_from_tick :]
    median = float(np.median(demand)) if len(demand) else 0.0
    return float(np.max(demand)) / median if median > 0 else math.inf


def make_verdict(report: BacktestReport) -> Verdict:
    o = report.outcomes
    pred, head, react, static = (
        o["predictive"].metrics,
        o["reactive_headroom"].metrics,
        o["reactive"].metrics,
        o["static"].metrics,
    )
    save_h = _ratio_saving(pred.replica_hours, head.replica_hours)
    save_s = _ratio_saving(pred.replica_hours, static.replica_hours)
    ws = pred.worst_shortfall / react.worst_shortfall if react.worst_shortfall > 0 else None
    share = report.predictive_run.forecast_share if report.predictive_source == "model" else None
    target_h = o["reactive_headroom"].target_value or math.nan
    target = report.config.hpa.target_value
    headroom_text = (
        f"reactive scaling with the threshold lowered from {_num(target)} to {_num(target_h)} "
        f"({1 - target_h / target:.0%} headroom)"
    )
    ptm = peak_to_median(report)
    span = format_duration(pred.eval_minutes * 60)
    equal = f"at equal under-provisioning ({pred.underprovisioned_minutes:.0f} min over {span})"
    parts: list[str] = []
    pays_off = False
    if share is not None and share < MIN_FORECAST_SHARE:
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(report.predictive_run.reasons.items(), key=lambda kv: -kv[1]))
        parts.append(
            "Predictive scaling does not pay off for this workload as it stands: the forecast was served "
            f"only {share:.0%} of the time; the rest of the time the service fell back to the observed value "
            f"(polls by reason: {reasons}). The models could not forecast this demand well enough to pass "
            "the confidence gate."
        )
        parts.append(_instead(headroom_text, head.replica_hours, static.replica_hours, ptm))
    elif save_h is None:
        parts.append("No replica-hours were used by reactive with headroom: nothing to compare.")
    elif save_h >= PAYS_OFF_SAVING:
        pays_off = True
        parts.append(
            f"Predictive scaling pays off for this workload: {equal} it uses {save_h:.0%} fewer "
            f"replica-hours than {headroom_text} ({pred.replica_hours:.1f} vs {head.replica_hours:.1f})."
        )
    elif save_h >= BREAK_EVEN_SAVING:
        parts.append(
            f"Predictive scaling about breaks even here: {equal} it uses {_more_or_fewer(save_h)} "
            f"replica-hours than {headroom_text}. The forecast adds little that a lower threshold does not; "
            "either is fine."
        )
    else:
        spiky = (
            f" This is typical of spiky demand (peak {ptm:.1f}x the median) whose jumps history does not predict."
            if ptm >= 3
            else ""
        )
        parts.append(
            f"Predictive scaling does not pay off for this workload: {headroom_text} reaches the same "
            f"under-provisioning with {-save_h:.0%} fewer replica-hours ({head.replica_hours:.1f} vs "
            f"{pred.replica_hours:.1f}).{spiky} Use reactive scaling with that threshold instead."
        )
    tolerance = report.config.hpa.tolerance
    causes = shortfall_causes(
        o["predictive"].simulation, report.demand_at_ticks, tolerance=tolerance, eval_from=report.window.eval_from_tick
    )
    if causes is not None and causes.tolerance_share >= TOLERANCE_DOMINATES and not pays_off:
        parts.append(
            f"Why: {causes.tolerance_share:.0%} of predictive's under-provisioned time had every pod ready and "
            f"the HPA's metric within its {tolerance:.0%} tolerance of the current replicas, i.e. demand a "
            "little above capacity that the HPA does not scale for whatever the metric foresees. A lower "
            "threshold removes that as cheaply as a forecast does, so this trace leaves a forecast little to "
            "save."
        )
    if ws is not None:
        parts.append(
            f"Worst shortfall: {ws:.0%} of reactive's ({_num(pred.worst_shortfall)} vs {_num(react.worst_shortfall)})."
        )
        if causes is not None and causes.worst_is_burst:
            parts.append(
                f"It was a burst: demand {_num(causes.worst_demand)} at {format_instant(causes.worst_at)}, "
                f"{causes.worst_demand / causes.mean_before_worst:.1f}x the mean of the "
                f"{BURST_WINDOW_S / 60:.0f} minutes before. No forecast of the level sees that coming; only spare "
                "capacity (a lower threshold or a higher predictQuantile) covers it."
            )
        elif causes is not None and causes.worst_in_band:
            parts.append(
                f"It came inside the HPA's {tolerance:.0%} tolerance band (demand {_num(causes.worst_demand)} "
                f"against capacity {_num(causes.worst_capacity)} at {format_instant(causes.worst_at)}, every pod "
                "ready, no scale-up asked for): a forecast near the demand cannot lower it; headroom can."
            )
    elif pred.worst_shortfall == 0:
        parts.append("Neither reactive nor predictive was ever short by more than zero.")
    if save_s is not None:
        parts.append(
            f"Against a static fleet sized for the peak ({o['static'].simulation.replicas[0]} replicas): "
            f"{save_s:.0%} fewer replica-hours, with {pred.underprovisioned_minutes:.0f} vs "
            f"{static.underprovisioned_minutes:.0f} under-provisioned minutes."
        )
    lead = o["predictive"].lead
    if lead is not None and lead.ramps:
        parts.append(
            f"On {lead.ramps} ramps where reactive fell short, predictive had the capacity a median "
            f"{lead.median_min:.1f} min earlier (already in place at {lead.ready_before_crossing} of them)."
        )
    if not report.headroom.converged:
        parts.append(f"Note: {report.headroom.note}.")
    return Verdict(pays_off, save_h, save_s, ws, share, " ".join(parts))


def _num(x: float) -> str:
    return f"{x:,.0f}" if abs(x) >= 1000 else f"{x:.3g}"


def _more_or_fewer(saving: float) -> str:
    return f"{saving:.1%} fewer" if saving >= 0 else f"{-saving:.1%} more"


def _instead(headroom_text: str, headroom_rh: float, static_rh: float, ptm: float) -> str:
    if ptm < 2:
        return (
            f"Demand varies little (peak {ptm:.1f}x the median): a static fleet ({static_rh:.1f} "
            f"replica-hours) or {headroom_text} ({headroom_rh:.1f}) is simpler."
        )
    return f"Use {headroom_text} instead ({headroom_rh:.1f} replica-hours for the same under-provisioning)."


def _strategy_dict(outcome: StrategyOutcome) -> dict[str, Any]:
    d: dict[str, Any] = dict(outcome.metrics.as_dict())
    d["target_value"] = None if outcome.target_value is None else round(outcome.target_value, 6)
    if outcome.lead is not None:
        d["lead_time_gained"] = outcome.lead.as_dict()
    if outcome.notes:
        d["notes"] = list(outcome.notes)
    return d


def to_json(report: BacktestReport, verdict: Verdict) -> dict[str, Any]:
    cfg = report.config
    hpa = cfg.hpa
    run = report.predictive_run
    w = report.window
    doc: dict[str, Any] = {
        "trace": {
            "name": report.trace.name,
            "start": format_instant(report.trace.start),
            "end": format_instant(report.trace.end),
            "source_step_s": report.trace.source_step_s,
            "peak_to_median": _r(peak_to_median(report)),
        },
        "repairs": list(report.trace.repairs),
        "window": {
            "simulation_start": format_instant(w.sim_start),
            "evaluation_start": format_instant(w.eval_start),
            "evaluation_end": format_instant(w.eval_end),
            "evaluation_days": round((w.eval_end - w.eval_start) / 86400.0, 3),
        },
        "settings": {
            "target_value": hpa.target_value,
            "capacity_per_replica": hpa.capacity_per_replica,
            "min_replicas": hpa.min_replicas,
            "max_replicas": hpa.max_replicas,
            "pod_startup_s": hpa.pod_startup_s,
            "lead_time_s": cfg.predictive.lead_s,
            "min_confidence": cfg.predictive.min_confidence,
            "refit_interval_s": cfg.predictive.refit_interval_s,
            "keda_poll_s": hpa.keda_poll_s,
            "tolerance": hpa.tolerance,
            "scale_down_stabilization_s": hpa.scale_down_stabilization_s,
        },
        "strategies": {name: _strategy_dict(o) for name, o in report.outcomes.items()},
        "predictive": {
            "source": report.predictive_source,
            "polls_by_reason": dict(run.reasons),
            "forecast_share": None if verdict.forecast_share is None else round(verdict.forecast_share, 4),
            "fits": len(run.fits),
            "fit_failures": sum(1 for f in run.fits if not f.ok),
            "fit_seconds": round(run.fit_seconds, 2),
            "models": sorted({f.model for f in run.fits if f.ok}),
        },
        "headroom_search": {
            "goal_underprovisioned_minutes": round(report.headroom.goal_minutes, 2),
            "tolerance_minutes": round(report.headroom.tolerance_minutes, 2),
            "iterations": report.headroom.iterations,
            "converged": report.headroom.converged,
        },
        "verdict": verdict.text,
        "pays_off": verdict.pays_off,
        "saving_vs_reactive_headroom": _r(verdict.saving_vs_headroom),
        "saving_vs_static": _r(verdict.saving_vs_static),
        "worst_shortfall_vs_reactive": _r(verdict.worst_shortfall_vs_reactive),
        "notes": list(report.notes),
        "run_seconds": round(report.run_seconds, 2),
    }
    return doc


def _r(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else round(x, 4)


def format_table(report: BacktestReport, verdict: Verdict) -> str:
    w = report.window
    hpa = report.config.hpa
    lines = [
        f"Capacity backtest: {report.trace.name}, evaluated {format_instant(w.eval_start)} to "
        f"{format_instant(w.eval_end)} ({format_duration(w.eval_end - w.eval_start)})",
        f"capacity per replica {hpa.capacity_per_replica:g}, replicas {hpa.min_replicas}-{hpa.max_replicas}, "
        f"pod start-up {format_duration(hpa.pod_startup_s)}, "
        f"lead {format_duration(report.config.predictive.lead_s)}, "
        f"refit every {format_duration(report.config.predictive.refit_interval_s)}",
    ]
    for r in report.trace.repairs:
        lines.append(f"repair: {r}")
    for n in report.notes:
        lines.append(f"note: {n}")
    head = (
        "strategy",
        "target",
        "replica-h",
        "vs headroom",
        "under-prov min",
        "unserved",
        "worst short",
        "events",
        "lead gained",
    )
    rows: list[tuple[str, ...]] = []
    base = report.outcomes["reactive_headroom"].metrics.replica_hours
    for name, o in report.outcomes.items():
        m = o.metrics
        vs = f"{m.replica_hours / base - 1:+.1%}" if base > 0 else "-"
        lead = f"{o.lead.median_min:.1f} min ({o.lead.ramps})" if o.lead is not None and o.lead.ramps else "-"
        rows.append(
            (
                name,
                "-" if o.target_value is None else f"{o.target_value:.4g}",
                f"{m.replica_hours:.1f}",
                vs,
                f"{m.underprovisioned_minutes:.1f}",
                f"{m.unserved_demand:.4g}",
                f"{m.worst_shortfall:.4g}",
                str(m.scaling_events),
                lead,
            )
        )
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]
    fmt = "  ".join(f"{{:<{widths[0]}}}" if i == 0 else f"{{:>{wd}}}" for i, wd in enumerate(widths))
    lines.append("")
    lines.append(fmt.format(*head))
    lines.append(fmt.format(*("-" * wd for wd in widths)))
    lines.extend(fmt.format(*r) for r in rows)
    lines.append("")
    run = report.predictive_run
    if report.predictive_source == "model":
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(run.reasons.items(), key=lambda kv: -kv[1]))
        lines.append(
            f"predictive: {describe_fits(run.fits)}, {run.fit_seconds:.1f} s fitting; polls by reason: {reasons}"
        )
    else:
        lines.append(f"predictive: {report.predictive_source}")
    lines.append(f"headroom: {report.headroom.note}")
    lines.append("")
    lines.append(f"verdict: {verdict.text}")
    lines.append(f"(run took {report.run_seconds:.1f} s)")
    return "\n".join(lines)


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


__all__ = [
    "Verdict",
    "format_table",
    "make_verdict",
    "peak_to_median",
    "plot",
    "to_json",
    "typical_day",
    "worst_shortfall_tick",
]
