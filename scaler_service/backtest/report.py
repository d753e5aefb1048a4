"""The comparison in words, as a table and as JSON (the picture: :mod:`scaler_service.backtest.report_plot`)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from forecasting.series import format_duration, format_instant
from scaler_service.backtest.metrics import BURST_WINDOW_S, shortfall_causes
from scaler_service.backtest.report_plot import plot, typical_day, worst_shortfall_tick
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
    tolerance = report.config.hpa.scale_up_tolerance
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
            "scale_up_tolerance": hpa.scale_up_tolerance,
            "scale_down_tolerance": hpa.scale_down_tolerance,
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
