"""The tuned configurations on the held-back stretch: the comparison, the verdict, the ScaledObject.

Four configurations are replayed over the whole simulated span with the reference emulator
(:func:`scaler_service.backtest.hpa.simulate`) and judged on the held-back stretch only: reactive and
predictive at the defaults (the stated threshold, the HPA's 5-minute window, the trigger defaults) for
reference, and the two tuned ones. Predictive wins when, on the held-back stretch, it uses fewer replica-hours
than the tuned reactive configuration, is no further from the service level than it, and stays within the
event cap (``EVENT_CAP_RATIO`` x the default reactive's scaling events there). Otherwise reactive wins and the
ScaledObject is the reactive one (``mode: reactive``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from forecasting.series import format_duration, format_instant
from scaler_service.backtest.forecast_table import ForecastTable, MetricTable
from scaler_service.backtest.hpa import DEFAULT_TOLERANCE, TICK_S, HpaSettings, Simulation, simulate
from scaler_service.backtest.metrics import StrategyMetrics, evaluate
from scaler_service.backtest.scaledobject import TOLERANCE_NOTE, ObjectSettings, scaled_object, to_yaml
from scaler_service.backtest.strategies import describe_fits
from scaler_service.backtest.trace import MINUTE_S, DemandTrace
from scaler_service.backtest.tune import EVENT_CAP_RATIO, Candidate, TuneSearch

LABELS = ("reactive_default", "predictive_default", "reactive_tuned", "predictive_tuned")


@dataclass(frozen=True, slots=True)
class HoldoutOutcome:
    label: str
    candidate: Candidate
    simulation: Simulation
    metrics: StrategyMetrics
    excess: float
    """Over the service level on the held-back stretch (share; 0 = met)."""


@dataclass(frozen=True, slots=True)
class TuneReport:
    trace: DemandTrace
    hpa: HpaSettings
    search: TuneSearch
    outcomes: Mapping[str, HoldoutOutcome]
    demand_at_ticks: np.ndarray
    event_cap: float
    winner: str
    """``predictive`` or ``reactive``."""
    verdict: str
    yaml: str
    scaled_object: dict[str, Any]
    fit_note: str
    run_seconds: float

    @property
    def saving(self) -> float | None:
        """1 - tuned predictive / tuned reactive replica-hours on the held-back stretch."""
        r = self.outcomes["reactive_tuned"].metrics.replica_hours
        return 1 - self.outcomes["predictive_tuned"].metrics.replica_hours / r if r > 0 else None


def evaluate_holdout(
    trace: DemandTrace, hpa: HpaSettings, search: TuneSearch, table: MetricTable
) -> tuple[dict[str, HoldoutOutcome], np.ndarray]:
    split = search.split
    n_ticks = split.n_ticks
    ticks = split.sim_start + TICK_S * np.arange(n_ticks, dtype=np.float64)
    demand = trace.demand_at(ticks)
    start = split.holdout_from_tick
    demand_total = float(demand[start:].sum()) * TICK_S / MINUTE_S
    chosen = {
        "reactive_default": search.reactive_default.candidate,
        "predictive_default": search.predictive_default.candidate,
        "reactive_tuned": search.reactive.candidate,
        "predictive_tuned": search.predictive.candidate,
    }
    out: dict[str, HoldoutOutcome] = {}
    for label, c in chosen.items():
        metric = table.observed if c.strategy == "reactive" else table.metric(c.lead_s, c.quantile, c.min_confidence)
        sim = simulate(metric, c.hpa(hpa), start=split.sim_start, n_ticks=n_ticks)
        m = evaluate(label, sim, demand, eval_from=start)
        out[label] = HoldoutOutcome(label, c, sim, m, search.service.excess(m, demand_total))
    return out, demand


def decide(outcomes: Mapping[str, HoldoutOutcome], event_cap: float) -> tuple[str, list[str]]:
    """The winner on the held-back stretch and why predictive lost, when it did."""
    p, r = outcomes["predictive_tuned"], outcomes["reactive_tuned"]
    why: list[str] = []
    if p.metrics.replica_hours >= r.metrics.replica_hours:
        why.append(f"it used no fewer replica-hours ({p.metrics.replica_hours:.1f} vs {r.metrics.replica_hours:.1f})")
    if p.excess > r.excess:
        why.append(
            f"it was further from the service level ({p.metrics.underprovisioned_minutes:.0f} vs "
            f"{r.metrics.underprovisioned_minutes:.0f} under-provisioned minutes)"
        )
    if p.metrics.scaling_events > event_cap:
        why.append(f"it made {p.metrics.scaling_events} scaling events, above the cap of {event_cap:.0f}")
    return ("reactive" if why else "predictive"), why


def _pct(x: float) -> str:
    return f"{x:.1%}"


def make_verdict(
    outcomes: Mapping[str, HoldoutOutcome], search: TuneSearch, winner: str, why: list[str], event_cap: float
) -> str:
    p, r = outcomes["predictive_tuned"], outcomes["reactive_tuned"]
    rd = outcomes["reactive_default"]
    threshold = rd.candidate.target_value
    held = format_duration(p.metrics.eval_minutes * 60)
    parts: list[str] = []
    if winner == "predictive":
        saving = 1 - p.metrics.replica_hours / r.metrics.replica_hours
        parts.append(
            f"Use predictive scaling, tuned: on the held-back {held} it used {saving:.0%} fewer replica-hours than "
            f"the best reactive configuration ({p.metrics.replica_hours:.1f} vs {r.metrics.replica_hours:.1f}), "
            f"with {p.metrics.underprovisioned_minutes:.0f} vs {r.metrics.underprovisioned_minutes:.0f} "
            f"under-provisioned minutes and {p.metrics.scaling_events} vs {r.metrics.scaling_events} scaling "
            f"events. Settings: {p.candidate.describe(threshold)}."
        )
    else:
        parts.append(
            f"Use reactive scaling, tuned: predictive does not pay off here. On the held-back {held} the tuned "
            f"predictive configuration did not beat the tuned reactive one: {'; '.join(why)}. The ScaledObject "
            f"below is the reactive configuration ({r.candidate.describe(threshold)})."
        )
    w = outcomes[f"{winner}_tuned"]
    if w.excess > 0:
        parts.append(
            f"It missed the service level ({search.service.describe()}) on the held-back stretch: "
            f"{w.metrics.underprovisioned_minutes:.0f} under-provisioned minutes "
            f"({w.metrics.underprovisioned_minutes / w.metrics.eval_minutes:.2%}). The recent stretch was harder "
            "than the one tuned on; consider more headroom."
        )
    else:
        parts.append(f"It met the service level ({search.service.describe()}) on the held-back stretch.")
    base = rd.metrics.replica_hours
    if base > 0:
        parts.append(
            f"Against reactive at the defaults (threshold {threshold:g}, 5-minute window): "
            f"{w.metrics.replica_hours / base - 1:+.0%} replica-hours, "
            f"{w.metrics.underprovisioned_minutes:.0f} vs {rd.metrics.underprovisioned_minutes:.0f} "
            f"under-provisioned minutes."
        )
    return " ".join(parts)


def build_report(
    trace: DemandTrace,
    hpa: HpaSettings,
    search: TuneSearch,
    table: ForecastTable,
    objects: ObjectSettings,
    *,
    fit_note: str,
    began: float,
) -> TuneReport:
    outcomes, demand = evaluate_holdout(trace, hpa, search, table)
    cap = EVENT_CAP_RATIO * outcomes["reactive_default"].metrics.scaling_events
    winner, why = decide(outcomes, cap)
    verdict = make_verdict(outcomes, search, winner, why, cap)
    w = outcomes[f"{winner}_tuned"]
    r = outcomes["reactive_tuned"]
    split = search.split
    comments = [
        f"Tuned by `python -m scaler_service backtest --tune` on {trace.name}: {split.describe()}.",
        f"Service level asked: {search.service.describe()}; scaling events capped at {EVENT_CAP_RATIO:g} x reactive's.",
        f"Held-back result: {w.metrics.replica_hours:.1f} replica-hours, {w.metrics.underprovisioned_minutes:.0f} "
        f"under-provisioned minutes of {w.metrics.eval_minutes:.0f}, {w.metrics.scaling_events} scaling events "
        f"(tuned reactive: {r.metrics.replica_hours:.1f}, {r.metrics.underprovisioned_minutes:.0f}, "
        f"{r.metrics.scaling_events}; reactive at the defaults: "
        f"{outcomes['reactive_default'].metrics.replica_hours:.1f}, "
        f"{outcomes['reactive_default'].metrics.underprovisioned_minutes:.0f}, "
        f"{outcomes['reactive_default'].metrics.scaling_events}).",
        f"Simulated with pod start-up {format_duration(hpa.pod_startup_s)}, capacity per replica "
        f"{hpa.capacity_per_replica:g}.",
    ]
    if winner == "reactive":
        comments.append("Predictive did not pay off on this workload: this is the reactive configuration.")
    if w.candidate.scale_up_tolerance != DEFAULT_TOLERANCE:
        comments.append(TOLERANCE_NOTE)
    if objects.query is None:
        comments.append("Replace the query and the scaleTargetRef with your workload's.")
    doc = scaled_object(w.candidate, hpa, objects, comments)
    return TuneReport(
        trace=trace,
        hpa=hpa,
        search=search,
        outcomes=outcomes,
        demand_at_ticks=demand,
        event_cap=cap,
        winner=winner,
        verdict=verdict,
        yaml=to_yaml(doc, comments),
        scaled_object=doc,
        fit_note=fit_note,
        run_seconds=time.perf_counter() - began,
    )


def _settings(c: Candidate) -> dict[str, Any]:
    d: dict[str, Any] = {
        "mode": c.strategy,
        "threshold": round(c.target_value, 6),
        "scale_down_stabilization_s": c.scale_down_s,
        "scale_up_tolerance": c.scale_up_tolerance,
    }
    if c.strategy == "predictive":
        d.update(predict_horizon_s=c.lead_s, predict_quantile=c.quantile, min_confidence=c.min_confidence)
    return d


def _r(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else round(x, 4)


def to_json(report: TuneReport) -> dict[str, Any]:
    s = report.search
    split = s.split
    return {
        "trace": {
            "name": report.trace.name,
            "start": format_instant(report.trace.start),
            "end": format_instant(report.trace.end),
        },
        "split": {
            "simulation_start": format_instant(split.sim_start),
            "tune_start": format_instant(split.tune_start),
            "holdout_start": format_instant(split.holdout_start),
            "holdout_end": format_instant(split.end),
            "tune_days": round((split.holdout_start - split.tune_start) / 86400.0, 3),
            "holdout_days": round((split.end - split.holdout_start) / 86400.0, 3),
            "description": split.describe(),
        },
        "service_level": {
            "max_underprovisioned": s.service.max_underprovisioned,
            "max_unserved": s.service.max_unserved,
            "event_cap_ratio": EVENT_CAP_RATIO,
            "event_cap_tuning": s.event_cap,
            "event_cap_holdout": report.event_cap,
        },
        "holdout": {
            label: {**o.metrics.as_dict(), "settings": _settings(o.candidate), "service_level_excess": _r(o.excess)}
            for label, o in report.outcomes.items()
        },
        "tuning": {
            label: {**sc.metrics.as_dict(), "settings": _settings(sc.candidate), "feasible": sc.feasible}
            for label, sc in (
                ("reactive_default", s.reactive_default),
                ("predictive_default", s.predictive_default),
                ("reactive_tuned", s.reactive),
                ("predictive_tuned", s.predictive),
            )
        },
        "winner": report.winner,
        "saving_vs_reactive_tuned": _r(report.saving),
        "verdict": report.verdict,
        "scaled_object": report.scaled_object,
        "scaled_object_yaml": report.yaml,
        "search": {
            "reactive_candidates": s.tried_reactive,
            "predictive_candidates": s.tried_predictive,
            "forecast_passes": s.forecast_passes,
            "forecast_seconds": round(s.forecast_seconds, 2),
            "simulation_seconds": round(s.simulation_seconds, 2),
            "search_seconds": round(s.search_seconds, 2),
            "fits": report.fit_note,
        },
        "notes": list(s.notes),
        "run_seconds": round(report.run_seconds, 2),
    }


def format_table(report: TuneReport) -> str:
    s = report.search
    lines = [
        f"Tuning: {report.trace.name}. {s.split.describe()}.",
        f"service level: {s.service.describe()}; scaling events at most {EVENT_CAP_RATIO:g} x reactive's "
        f"({s.event_cap:.0f} on the tuning stretch, {report.event_cap:.0f} held back)",
        "",
        "held-back stretch:",
    ]
    head = ("configuration", "replica-h", "vs reactive tuned", "under-prov min", "unserved", "events", "settings")
    base = report.outcomes["reactive_tuned"].metrics.replica_hours
    threshold = report.outcomes["reactive_default"].candidate.target_value
    rows = []
    for label, o in report.outcomes.items():
        m = o.metrics
        rows.append(
            (
                label,
                f"{m.replica_hours:.1f}",
                f"{m.replica_hours / base - 1:+.1%}" if base > 0 else "-",
                f"{m.underprovisioned_minutes:.1f}",
                f"{m.unserved_demand:.4g}",
                str(m.scaling_events),
                o.candidate.describe(threshold).split(": ", 1)[1],
            )
        )
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]
    fmt = "  ".join(f"{{:<{w}}}" if i in (0, len(widths) - 1) else f"{{:>{w}}}" for i, w in enumerate(widths))
    lines.append(fmt.format(*head))
    lines.append(fmt.format(*("-" * w for w in widths)))
    lines.extend(fmt.format(*r).rstrip() for r in rows)
    lines.append("")
    lines.append(
        f"search: {s.tried_reactive} reactive and {s.tried_predictive} predictive candidates on the tuning "
        f"stretch, {s.forecast_passes} (lead, quantile) curves, forecasts {s.forecast_seconds:.1f} s in all, "
        f"simulations {s.simulation_seconds:.1f} s; {report.fit_note}"
    )
    for n in s.notes:
        lines.append(f"note: {n}")
    lines.append("")
    lines.append(f"verdict: {report.verdict}")
    lines.append("")
    lines.append(report.yaml.rstrip())
    lines.append(f"(run took {report.run_seconds:.1f} s)")
    return "\n".join(lines)


def fit_summary(table: ForecastTable, fitted: int, from_disk: int) -> str:
    run = table.run
    return (
        f"{describe_fits(run.fits)}: {fitted} fitted, {from_disk} read from the model cache, "
        f"{run.fit_seconds:.1f} s fitting"
    )


__all__ = [
    "LABELS",
    "HoldoutOutcome",
    "TuneReport",
    "build_report",
    "evaluate_holdout",
    "fit_summary",
    "format_table",
    "to_json",
]
