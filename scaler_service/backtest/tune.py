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
with the others fixed, until a full pass changes nothing (at most ``MAX_ROUNDS``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np

from forecasting.series import DAY_S, format_duration, format_instant
from scaler_service.backtest.fastsim import simulate_fast
from scaler_service.backtest.forecast_table import MetricTable
from scaler_service.backtest.hpa import TICK_S, HpaSettings
from scaler_service.backtest.metrics import StrategyMetrics, evaluate
from scaler_service.backtest.strategies import PredictiveSettings
from scaler_service.backtest.trace import MINUTE_S, DemandTrace, FloatArray, TraceError

DEFAULT_SCALE_DOWN_S = 300.0
"""The HPA's default scale-down stabilisation window."""
EVENT_CAP_RATIO = 1.5
RECOMMENDED_HOLDOUT_DAYS = 7.0
MIN_TUNE_S = DAY_S
MAX_ROUNDS = 3

LEADS_S = (300.0, 600.0, 900.0, 1200.0, 1800.0)
QUANTILES = (0.5, 0.75, 0.9, 0.95, 0.99)
MIN_CONFIDENCES = (0.0, 0.5, 0.7, 0.8, 0.9)
WINDOWS_S = (0.0, 60.0, 120.0, 180.0, 300.0, 600.0, 900.0, 1200.0, 1800.0, 2700.0, 3600.0)
"""Scale-down stabilisation windows searched, up to the HPA's limit of one hour."""
MIN_THRESHOLD_FRACTION = 0.3
"""The threshold bisection lowers the threshold to at most 70 % headroom."""
THRESHOLD_WIDTH_FRACTION = 0.005


@dataclass(frozen=True, slots=True)
class ServiceLevel:
    """What the user accepts: a share of under-provisioned minutes, or of unserved demand (or both)."""

    max_underprovisioned: float | None = 0.01
    max_unserved: float | None = None

    def __post_init__(self) -> None:
        if self.max_underprovisioned is None and self.max_unserved is None:
            raise ValueError("state a service level: a maximum under-provisioned share or unserved share")
        for name in ("max_underprovisioned", "max_unserved"):
            value = getattr(self, name)
            if value is not None and not 0 <= value < 1:
                raise ValueError(f"{name} must be a share in [0, 1), got {value}")

    def excess(self, m: StrategyMetrics, demand_total: float) -> float:
        """How far ``m`` is above the service level, as a share (0 when it is met)."""
        over = 0.0
        if self.max_underprovisioned is not None:
            share = m.underprovisioned_minutes / m.eval_minutes if m.eval_minutes else 0.0
            over = max(over, share - self.max_underprovisioned)
        if self.max_unserved is not None:
            share = m.unserved_demand / demand_total if demand_total > 0 else 0.0
            over = max(over, share - self.max_unserved)
        return max(0.0, over)

    def describe(self) -> str:
        parts = []
        if self.max_underprovisioned is not None:
            parts.append(f"at most {self.max_underprovisioned:.2%} of minutes under-provisioned")
        if self.max_unserved is not None:
            parts.append(f"at most {self.max_unserved:.2%} of demand unserved")
        return " and ".join(parts)


@dataclass(frozen=True, slots=True)
class TuneSplit:
    sim_start: float
    tune_start: float
    holdout_start: float
    end: float

    @property
    def tune_from_tick(self) -> int:
        return round((self.tune_start - self.sim_start) / TICK_S)

    @property
    def holdout_from_tick(self) -> int:
        return round((self.holdout_start - self.sim_start) / TICK_S)

    @property
    def n_ticks(self) -> int:
        return round((self.end - self.sim_start) / TICK_S)

    def describe(self) -> str:
        text = (
            f"tuned on {format_instant(self.tune_start)} to {format_instant(self.holdout_start)} "
            f"({format_duration(self.holdout_start - self.tune_start)}); held back and evaluated: "
            f"{format_instant(self.holdout_start)} to {format_instant(self.end)} "
            f"({format_duration(self.end - self.holdout_start)}), never seen by the search"
        )
        if self.end - self.holdout_start < RECOMMENDED_HOLDOUT_DAYS * DAY_S:
            text += f" (less than the recommended {RECOMMENDED_HOLDOUT_DAYS:.0f} days: a weekly pattern is not judged)"
        return text


def split_trace(
    trace: DemandTrace,
    *,
    holdout_days: float = RECOMMENDED_HOLDOUT_DAYS,
    tune_days: float = 14.0,
    settle_s: float = 3600.0,
    min_history_s: float = 2 * DAY_S,
) -> TuneSplit:
    """Held-back stretch at the end, tuning stretch before it (see the module docs)."""
    if not holdout_days > 0 or not tune_days > 0:
        raise ValueError(f"held-back and tuning days must be > 0, got {holdout_days} and {tune_days}")
    end = math.floor(trace.end / MINUTE_S) * MINUTE_S
    holdout_start = math.floor((end - holdout_days * DAY_S) / MINUTE_S) * MINUTE_S
    earliest = math.ceil((trace.start + min_history_s + settle_s) / MINUTE_S) * MINUTE_S
    tune_start = max(holdout_start - math.floor(tune_days * DAY_S / MINUTE_S) * MINUTE_S, earliest)
    if holdout_start - tune_start < MIN_TUNE_S:
        raise TraceError(
            f"trace [{format_instant(trace.start)}, {format_instant(trace.end)}] is too short to tune: "
            f"{format_duration(min_history_s)} of history, {format_duration(MIN_TUNE_S)} to tune on and "
            f"{format_duration(holdout_days * DAY_S)} held back are needed "
            f"({format_duration(min_history_s + settle_s + MIN_TUNE_S + holdout_days * DAY_S)})"
        )
    return TuneSplit(tune_start - settle_s, tune_start, holdout_start, end)


@dataclass(frozen=True, slots=True)
class Candidate:
    strategy: str
    """``predictive`` or ``reactive``."""
    target_value: float
    scale_down_s: float
    lead_s: float = 0.0
    quantile: float = 0.0
    min_confidence: float = 0.0

    def hpa(self, base: HpaSettings) -> HpaSettings:
        # A ScaledObject with a behavior block gets the HPA's policy path (not the legacy normalisation).
        return replace(
            base,
            target_value=self.target_value,
            capacity_per_replica_value=base.capacity_per_replica,
            scale_down_stabilization_s=self.scale_down_s,
            legacy_behavior=False,
        )

    def describe(self, threshold: float) -> str:
        head = f"threshold {self.target_value:.4g} ({1 - self.target_value / threshold:.0%} headroom)"
        window = f"scale-down window {self.scale_down_s:.0f} s"
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
) -> TuneSearch:
    """The best reactive and predictive candidates on the tuning stretch (``table`` must cover its polls)."""
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

    default_reactive = Candidate("reactive", threshold, DEFAULT_SCALE_DOWN_S)
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

    # Reactive: per window, the largest threshold that meets the service level.
    best_reactive = reactive_default
    for window in windows_s:
        found = best_threshold(Candidate("reactive", threshold, window))
        if found.key() < best_reactive.key():
            best_reactive = found
    tried_reactive = len(tried)

    # Predictive: a coordinate search from the defaults over the forecast's settings and the window, each
    # candidate judged at its own largest threshold that meets the service level, as reactive is.
    start = Candidate(
        "predictive", threshold, DEFAULT_SCALE_DOWN_S, predictive.lead_s, predictive.quantile, predictive.min_confidence
    )
    predictive_default = at(start)
    best = best_threshold(start)
    dims: tuple[tuple[str, tuple[float, ...]], ...] = (
        ("lead_s", tuple(sorted({*leads_s, predictive.lead_s}))),
        ("quantile", tuple(sorted({*quantiles, predictive.quantile}))),
        ("min_confidence", tuple(sorted({*min_confidences, predictive.min_confidence}))),
        ("scale_down_s", tuple(windows_s)),
    )
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
    return replace(c, scale_down_s=value)


__all__ = [
    "EVENT_CAP_RATIO",
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
