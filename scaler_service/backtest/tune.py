"""Tune per workload: the cheapest predictive and the cheapest reactive configuration at a stated service level,
chosen on the earlier part of a trace and judged on the held-back most recent stretch.

The split (:func:`split_trace`): the last ``holdout_days`` (default 7) whole minutes of the trace are held
back; the ``tune_days`` (default 14) before them are the tuning stretch, shortened when the trace is too short
for the first fit's history; one hour before the tuning stretch is simulated but not counted (every candidate
starts from its own steady state). Everything before the simulation start is history only.

No peeking. The search reads only the tuning stretch: its simulations stop where the held-back stretch
begins, and the predictive metric at each poll comes from fits that saw only the data before that poll
(``predictive_metric``). Changing the held-back stretch therefore changes nothing chosen (tested).

Fits are reused. A model fitted at time ``t`` does not depend on the lead, the quantile, the confidence gate
or the HPA, so the trace is run through ``predictive_metric`` once, with the gate open and the caller's
(caching) fit function: each refit time is fitted once for the whole search. That pass records, at each poll,
the model in use, its level factor and the confidence the gate judges; the served value under any
(predictHorizon, predictQuantile, minConfidence) is then computed with arrays
(:class:`~scaler_service.backtest.forecast_table.ForecastTable`).
Every candidate costs one fast HPA simulation (:mod:`scaler_service.backtest.fastsim`).

Objective: the fewest replica-hours on the tuning stretch among candidates that meet the service level
(under-provisioned share of minutes, or unserved share of demand) and make at most ``EVENT_CAP_RATIO`` times
the scaling events of reactive at the stated threshold and the HPA's default 5-minute window. When no
candidate meets both, the one closest to them wins (smallest excess over the service level, then over the
event cap, then replica-hours), and the output says so.

Search. Both strategies' candidates are judged alike: each at the largest threshold that meets the service
level (a bisection between ``MIN_THRESHOLD_FRACTION`` and 100 % of the stated threshold; predictive may need
headroom too: the HPA does not scale for demand within its 10 % tolerance, whatever the metric foresees).
Reactive: that, for each scale-down stabilisation window. Predictive: a coordinate search from the defaults
over predictHorizon, predictQuantile, minConfidence and the window; each pass tries every value of one setting
with the others fixed, until a full pass changes nothing (at most ``MAX_ROUNDS``). Opt-in
(``scale_up_tolerances``, ``--tune-tolerance``): the HPA's scale-up tolerance too (Kubernetes >= 1.33 with the
HPAConfigurableTolerance feature gate), for reactive per window x tolerance, for predictive as one more
setting of the coordinate search. A lower scale-up tolerance lets the HPA scale for demand a little above
capacity, where the default 10 % band would otherwise call for headroom. The scale-down tolerance stays at the
cluster's default: it decides when a scale-down starts, which the scale-down window searched already governs.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np

from forecasting.series import format_duration
from scaler_service.backtest.fastsim import simulate_fast
from scaler_service.backtest.forecast_table import MetricTable
from scaler_service.backtest.hpa import DEFAULT_TOLERANCE, TICK_S, HpaSettings
from scaler_service.backtest.metrics import StrategyMetrics, evaluate
from scaler_service.backtest.strategies import PredictiveSettings
from scaler_service.backtest.trace import MINUTE_S, DemandTrace, FloatArray
from scaler_service.backtest.tune_setup import ServiceLevel, TuneSplit, split_trace

DEFAULT_SCALE_DOWN_S = 300.0
"""The HPA's default scale-down stabilisation window."""
EVENT_CAP_RATIO = 1.5
MAX_ROUNDS = 3

LEADS_S = (300.0, 600.0, 900.0, 1200.0, 1800.0)
QUANTILES = (0.5, 0.75, 0.9, 0.95, 0.99)
MIN_CONFIDENCES = (0.0, 0.5, 0.7, 0.8, 0.9)
WINDOWS_S = (0.0, 60.0, 120.0, 180.0, 300.0, 600.0, 900.0, 1200.0, 1800.0, 2700.0, 3600.0)
"""Scale-down stabilisation windows searched, up to the HPA's limit of one hour."""
MIN_THRESHOLD_FRACTION = 0.3
"""The threshold bisection lowers the threshold to at most 70 % headroom."""
THRESHOLD_WIDTH_FRACTION = 0.005
SCALE_UP_TOLERANCES = (0.0, 0.02, 0.05, 0.1)
"""Scale-up tolerances searched with ``--tune-tolerance`` (``behavior.scaleUp.tolerance``; Kubernetes with the
HPAConfigurableTolerance feature gate)."""


@dataclass(frozen=True, slots=True)
class Candidate:
    strategy: str
    """``predictive`` or ``reactive``."""
    target_value: float
    scale_down_s: float
    lead_s: float = 0.0
    quantile: float = 0.0
    min_confidence: float = 0.0
    scale_up_tolerance: float = DEFAULT_TOLERANCE

    def hpa(self, base: HpaSettings) -> HpaSettings:
        # A ScaledObject with a behavior block gets the HPA's policy path (not the legacy normalisation).
        return replace(
            base,
            target_value=self.target_value,
            capacity_per_replica_value=base.capacity_per_replica,
            scale_down_stabilization_s=self.scale_down_s,
            scale_up_tolerance=self.scale_up_tolerance,
            legacy_behavior=False,
        )

    def describe(self, threshold: float) -> str:
        head = f"threshold {self.target_value:.4g} ({1 - self.target_value / threshold:.0%} headroom)"
        window = f"scale-down window {self.scale_down_s:.0f} s"
        if self.scale_up_tolerance != DEFAULT_TOLERANCE:
            window += f", scale-up tolerance {self.scale_up_tolerance:g}"
        if self.strategy == "reactive":
            return f"reactive: {head}, {window}"
        return (
            f"predictive: predictHorizon {format_duration(self.lead_s)}, predictQuantile {self.quantile:g}, "
            f"minConfidence {self.min_confidence:g}, {head}, {window}"
        )


@dataclass(frozen=True, slots=True)
class Scored:
    candidate: Candidate
    metrics: StrategyMetrics
    excess: float
    """Over the service level (share; 0 = met)."""
    events_over: float
    """Scaling events over the cap (count; 0 = within)."""

    @property
    def feasible(self) -> bool:
        return self.excess == 0 and self.events_over == 0

    def key(self) -> tuple[int, float, float, float]:
        if self.feasible:
            return (0, 0.0, 0.0, self.metrics.replica_hours)
        return (1, self.excess, self.events_over, self.metrics.replica_hours)


@dataclass(frozen=True, slots=True)
class TuneSearch:
    split: TuneSplit
    service: ServiceLevel
    event_cap: float
    """Scaling events allowed on the tuning stretch: ``EVENT_CAP_RATIO`` x the default reactive's."""
    reactive_default: Scored
    predictive_default: Scored
    reactive: Scored
    predictive: Scored
    tried_reactive: int
    tried_predictive: int
    forecast_passes: int
    forecast_seconds: float
    simulation_seconds: float
    search_seconds: float
    notes: tuple[str, ...] = field(default_factory=tuple)
    tried: tuple[Scored, ...] = ()
    """Every candidate the search simulated, reactive then predictive."""


def tune(
    trace: DemandTrace,
    hpa: HpaSettings,
    predictive: PredictiveSettings,
    table: MetricTable,
    split: TuneSplit,
    service: ServiceLevel,
    *,
    leads_s: tuple[float, ...] = LEADS_S,
    quantiles: tuple[float, ...] = QUANTILES,
    min_confidences: tuple[float, ...] = MIN_CONFIDENCES,
    windows_s: tuple[float, ...] = WINDOWS_S,
    scale_up_tolerances: tuple[float, ...] = (),
) -> TuneSearch:
    """The best reactive and predictive candidates on the tuning stretch (``table`` must cover its polls).

    ``scale_up_tolerances`` (e.g. ``SCALE_UP_TOLERANCES``) are searched besides ``hpa``'s own; empty (the
    default), the tolerance is left as it is."""
    began = time.perf_counter()
    n_ticks = split.holdout_from_tick
    tune_from = split.tune_from_tick
    polls_needed = (n_ticks - 1) // hpa.ticks_per_poll + 1
    ticks = split.sim_start + TICK_S * np.arange(n_ticks, dtype=np.float64)
    demand = trace.demand_at(ticks)
    demand_total = float(demand[tune_from:].sum()) * TICK_S / MINUTE_S
    threshold = hpa.target_value
    sim_seconds = 0.0

    def simulate_metrics(metric: FloatArray, candidate: Candidate) -> StrategyMetrics:
        nonlocal sim_seconds
        t0 = time.perf_counter()
        sim = simulate_fast(metric[:polls_needed], candidate.hpa(hpa), start=split.sim_start, n_ticks=n_ticks)
        sim_seconds += time.perf_counter() - t0
        return evaluate(candidate.strategy, sim, demand, eval_from=tune_from)

    tolerance = hpa.scale_up_tolerance
    tolerances = tuple(sorted({*scale_up_tolerances, tolerance}))
    default_reactive = Candidate("reactive", threshold, DEFAULT_SCALE_DOWN_S, scale_up_tolerance=tolerance)
    base_metrics = simulate_metrics(table.observed, default_reactive)
    cap = EVENT_CAP_RATIO * base_metrics.scaling_events

    def score(candidate: Candidate, metrics: StrategyMetrics) -> Scored:
        return Scored(
            candidate,
            metrics,
            service.excess(metrics, demand_total),
            max(0.0, metrics.scaling_events - cap),
        )

    reactive_default = score(default_reactive, base_metrics)
    tried: dict[Candidate, Scored] = {default_reactive: reactive_default}

    def at(c: Candidate) -> Scored:
        if c not in tried:
            metric = (
                table.observed if c.strategy == "reactive" else table.metric(c.lead_s, c.quantile, c.min_confidence)
            )
            tried[c] = score(c, simulate_metrics(metric, c))
        return tried[c]

    def best_threshold(c: Candidate) -> Scored:
        """``c`` with the largest threshold that meets the service level (bisection), the same for both."""
        return _largest_threshold(lambda target: at(replace(c, target_value=target)), threshold)

    # Reactive: per window (and scale-up tolerance), the largest threshold that meets the service level.
    best_reactive = reactive_default
    for window in windows_s:
        for up in tolerances:
            found = best_threshold(Candidate("reactive", threshold, window, scale_up_tolerance=up))
            if found.key() < best_reactive.key():
                best_reactive = found
    tried_reactive = len(tried)

    # Predictive: a coordinate search from the defaults over the forecast's settings and the window, each
    # candidate judged at its own largest threshold that meets the service level, as reactive is.
    start = Candidate(
        "predictive",
        threshold,
        DEFAULT_SCALE_DOWN_S,
        predictive.lead_s,
        predictive.quantile,
        predictive.min_confidence,
        tolerance,
    )
    predictive_default = at(start)
    best = best_threshold(start)
    dims: tuple[tuple[str, tuple[float, ...]], ...] = (
        ("lead_s", tuple(sorted({*leads_s, predictive.lead_s}))),
        ("quantile", tuple(sorted({*quantiles, predictive.quantile}))),
        ("min_confidence", tuple(sorted({*min_confidences, predictive.min_confidence}))),
        ("scale_down_s", tuple(windows_s)),
    )
    if len(tolerances) > 1:
        dims += (("scale_up_tolerance", tolerances),)
    for _ in range(MAX_ROUNDS):
        before = best.candidate
        for name, values in dims:
            for value in values:
                scored = best_threshold(_with(replace(best.candidate, target_value=threshold), name, value))
                if scored.key() < best.key():
                    best = scored
        if best.candidate == before:
            break

    notes: list[str] = []
    for label, s in (("reactive", best_reactive), ("predictive", best)):
        if not s.feasible:
            notes.append(
                f"no {label} configuration met the service level and the event cap on the tuning stretch: the "
                "closest one is used"
            )
    return TuneSearch(
        split=split,
        service=service,
        event_cap=cap,
        reactive_default=reactive_default,
        predictive_default=predictive_default,
        reactive=best_reactive,
        predictive=best,
        tried_reactive=tried_reactive,
        tried_predictive=len(tried) - tried_reactive,
        forecast_passes=table.passes,
        forecast_seconds=table.seconds,
        simulation_seconds=sim_seconds,
        search_seconds=time.perf_counter() - began,
        notes=tuple(notes),
        tried=tuple(tried.values()),
    )


def _largest_threshold(at: Callable[[float], Scored], threshold: float) -> Scored:
    """The largest threshold between ``MIN_THRESHOLD_FRACTION`` and 100 % of ``threshold`` that meets the service
    level, to within ``THRESHOLD_WIDTH_FRACTION`` of it; the lowest tried when none does."""
    hi = at(threshold)
    if hi.excess == 0:
        return hi
    lo = at(threshold * MIN_THRESHOLD_FRACTION)
    if lo.excess > 0:
        return lo
    found = lo
    lo_t, hi_t = lo.candidate.target_value, threshold
    while hi_t - lo_t > THRESHOLD_WIDTH_FRACTION * threshold:
        mid = at(0.5 * (lo_t + hi_t))
        if mid.excess == 0:
            lo_t, found = mid.candidate.target_value, mid
        else:
            hi_t = mid.candidate.target_value
    return found


def _with(c: Candidate, name: str, value: float) -> Candidate:
    if name == "lead_s":
        return replace(c, lead_s=value)
    if name == "quantile":
        return replace(c, quantile=value)
    if name == "min_confidence":
        return replace(c, min_confidence=value)
    if name == "scale_up_tolerance":
        return replace(c, scale_up_tolerance=value)
    return replace(c, scale_down_s=value)


__all__ = [
    "EVENT_CAP_RATIO",
    "SCALE_UP_TOLERANCES",
    "THRESHOLD_WIDTH_FRACTION",
    "WINDOWS_S",
    "Candidate",
    "Scored",
    "ServiceLevel",
    "TuneSearch",
    "TuneSplit",
    "split_trace",
    "tune",
]
