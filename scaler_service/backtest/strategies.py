"""What each strategy feeds the HPA, poll by poll, and the headroom search.

- reactive: the observed value (the last complete minute).
- predictive: exactly what the scaler serves in predictive mode, from
  :func:`scaler_service.decision.predictive_value` with a :class:`~forecasting.serving.ServingModel` refitted
  every ``refit_interval_s`` on the history available at that moment (``PreparedSeries.until``), the level
  factor from the observations before ``now`` (``ServingModel.anchor_factor``) and the service's live gate
  (the forecast against each new observation over the last 12 ten-minute windows, judged on over-forecasts as
  ``scaler_service.engine`` does: ``decision.LiveAccuracy.gate_confidence``).
- recorded: the ``predictive`` column of observe-mode records.
- reactive with headroom: the reactive metric with the HPA target lowered by bisection until its
  under-provisioned minutes equal a goal (the predictive strategy's).
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np

from forecasting.series import PreparedSeries, format_instant
from forecasting.serving import ServingModel
from scaler_service.backtest.hpa import HpaSettings, Simulation, simulate
from scaler_service.backtest.metrics import StrategyMetrics, evaluate
from scaler_service.backtest.trace import MINUTE_S, DemandTrace, FloatArray
from scaler_service.decision import (
    DEFAULT_PREDICT_QUANTILE,
    LIVE_WINDOW_S,
    LIVE_WINDOWS,
    LiveAccuracy,
    compare_forecast,
    live_accuracy,
    predictive_value,
    window_steps,
)
from scaler_service.engine import REFIT_REQUEST_COOLDOWN_S

if TYPE_CHECKING:
    from forecasting.pipeline import FitConfig

FitFunction = Callable[[PreparedSeries, float, ServingModel | None], ServingModel]
"""(history available at ``now``, ``now``, previous model) -> new model; raises when none can be fitted."""

ANCHOR_OBSERVATIONS_S = 7200.0
"""Recent observations handed to ``ServingModel.anchor_factor`` (the engine keeps 2 h; the model uses its
own anchor window of them)."""


def reactive_metric(trace: DemandTrace, poll_times: FloatArray) -> FloatArray:
    return trace.observed_at(poll_times)


def service_fit_function(key: str = "backtest", config: FitConfig | None = None) -> FitFunction:
    """Fits through ``forecasting.pipeline.fit_serving_model``, the service's own path, with the sim clock."""
    from forecasting.pipeline import FitConfig, fit_serving_model

    fit_config = config if config is not None else FitConfig()

    def fit(history: PreparedSeries, now: float, previous: ServingModel | None) -> ServingModel:
        return fit_serving_model(key, history, fit_config, previous=previous, clock=lambda: now)

    return fit


@dataclass(frozen=True, slots=True)
class PredictiveSettings:
    lead_s: float = 600.0
    """The trigger's ``predictHorizon``: the window whose forecast peak is served."""
    min_confidence: float = 0.8
    quantile: float = DEFAULT_PREDICT_QUANTILE
    """The trigger's ``predictQuantile``: which forecast's peak is served (0.5 the point, 0.9 the upper band)."""
    refit_interval_s: float = 6 * 3600.0
    fit_step_s: float | None = None
    """Step of the history the model is fitted on; None = the trace's own step (60 s for 1-minute data)."""
    live_confidence: bool = True
    """Gate on the live forecast error too, as the service does."""
    refit_on_low_live_confidence: bool = False
    """Refit early when the live accuracy drops below ``min_confidence`` (the service does, at most every
    15 min). Off by default: each fit costs seconds of CPU."""

    def __post_init__(self) -> None:
        if not (self.lead_s >= 0 and math.isfinite(self.lead_s)):
            raise ValueError(f"lead time must be >= 0 s, got {self.lead_s}")
        if not 0 <= self.min_confidence <= 1:
            raise ValueError(f"min confidence must be in [0, 1], got {self.min_confidence}")
        if not self.refit_interval_s > 0:
            raise ValueError(f"refit interval must be > 0 s, got {self.refit_interval_s}")
        if self.fit_step_s is not None:
            ratio = self.fit_step_s / MINUTE_S
            if self.fit_step_s <= 0 or abs(ratio - round(ratio)) > 1e-9:
                raise ValueError(f"fit step must be a whole number of minutes, got {self.fit_step_s} s")

    def resolved_fit_step(self, trace: DemandTrace) -> float:
        if self.fit_step_s is not None:
            return self.fit_step_s
        return max(MINUTE_S, round(trace.source_step_s / MINUTE_S) * MINUTE_S)


@dataclass(frozen=True, slots=True)
class FitRecord:
    at: float
    ok: bool
    model: str
    confidence: float | None
    duration_s: float
    error: str | None = None


@dataclass(frozen=True, slots=True)
class PredictiveRun:
    values: FloatArray
    """The metric at each poll."""
    reasons: dict[str, int]
    """How many polls were served for each :class:`~scaler_service.decision.Reason` (plus ``live-accuracy``
    for polls where the live over-forecast error, not the model's own confidence, forced the observed value)."""
    fits: tuple[FitRecord, ...] = ()
    fit_seconds: float = 0.0
    confidence: FloatArray | None = None
    """The confidence the gate judged at each poll (the backtest's, or the live one when lower); NaN where
    there was no model. With it, the metric under another ``minConfidence`` is ``observed`` where the
    confidence is below it and this run's value elsewhere, when this run was gated at 0 (the tuning search)."""
    models: tuple[ServingModel | None, ...] = ()
    """The model in use at each poll."""
    factors: FloatArray | None = None
    """The level factor at each poll: with ``models``, the peak under any other lead or quantile."""

    @property
    def forecast_share(self) -> float:
        total = sum(self.reasons.values())
        return self.reasons.get("forecast", 0) / total if total else 0.0


def predictive_metric(
    trace: DemandTrace,
    poll_times: FloatArray,
    settings: PredictiveSettings,
    fit: FitFunction,
) -> PredictiveRun:
    """The value the service would serve at each poll time (times increasing).

    Nothing after ``now`` is used at ``now``: a fit at ``now`` sees the buckets that ended by ``now``; the
    anchor factor and the live error use the same complete buckets; the observed value is the last complete
    minute.
    """
    step = settings.resolved_fit_step(trace)
    history_all = trace.series().resample(step)
    values_all = history_all.values
    observed = trace.observed_at(poll_times)
    out = np.empty(len(poll_times), dtype=np.float64)
    judged = np.full(len(poll_times), np.nan)
    factors = np.ones(len(poll_times), dtype=np.float64)
    models: list[ServingModel | None] = []
    reasons: Counter[str] = Counter()
    fits: list[FitRecord] = []
    fit_seconds = 0.0
    model: ServingModel | None = None
    factor = 1.0
    # Forecast-vs-actual pairs by bucket, judged exactly as the engine judges them (decision.live_accuracy).
    compared: dict[int, tuple[float, float]] = {}
    live_steps = window_steps(LIVE_WINDOW_S, step)
    keep = (LIVE_WINDOWS + 1) * live_steps
    last_bucket = -1
    next_refit = float(poll_times[0]) if len(poll_times) else math.inf
    last_refit_request = -math.inf
    n_anchor = max(1, math.ceil(ANCHOR_OBSERVATIONS_S / step))
    live: LiveAccuracy | None = None

    def complete_bucket(now: float) -> int:
        # Bucket b covers [start + b step, start + (b + 1) step): complete once its end is <= now.
        return math.floor((now - history_all.start) / step + 1e-9) - 1

    def do_fit(now: float) -> None:
        nonlocal model, fit_seconds
        cut = now - step
        began = time.perf_counter()
        try:
            history = history_all.until(cut)
            new = fit(history, now, model)
        except NotImplementedError:
            raise
        except Exception as exc:
            took = time.perf_counter() - began
            fits.append(FitRecord(now, False, "", None, took, f"{type(exc).__name__}: {exc}"))
        else:
            took = time.perf_counter() - began
            fits.append(FitRecord(now, True, new.name, new.confidence, took))
            if new is not model:
                model = new
                compared.clear()
        fit_seconds += took

    def anchor(now_bucket: int) -> float:
        if model is None or now_bucket < 0:
            return 1.0
        lo = max(0, now_bucket - n_anchor + 1)
        obs = values_all[lo : now_bucket + 1]
        f = model.anchor_factor(history_all.start + lo * step, obs)
        return f if math.isfinite(f) and f > 0 else 1.0

    for i, now in enumerate(poll_times.tolist()):
        model_before = model
        if now >= next_refit:
            do_fit(now)
            while next_refit <= now:
                next_refit += settings.refit_interval_s
        bucket = complete_bucket(now)
        if model is not model_before:
            factor = anchor(last_bucket)
        if bucket != last_bucket or model is not model_before:
            if model is not None and settings.live_confidence:
                # A new model is scored at once on the recent observations, as the engine does.
                first = last_bucket + 1 if model is model_before else bucket - keep + 1
                compare_forecast(
                    compared,
                    model,
                    factor,
                    (
                        (b, history_all.start + b * step, float(values_all[b]))
                        for b in range(max(first, bucket - keep + 1, 0), bucket + 1)
                    ),
                    steps_per_window=live_steps,
                    now_bucket=bucket,
                )
            factor = anchor(bucket)
            last_bucket = bucket
            # The pairs change only here: the live score is recomputed once per bucket, not once per poll.
            live = live_accuracy(compared, live_steps) if settings.live_confidence else None
        live_conf = live.gate_confidence if live is not None else None
        value, reason, _detail, conf = predictive_value(
            now=now,
            observed=float(observed[i]),
            model=model,
            factor=factor,
            lead_s=settings.lead_s,
            min_confidence=settings.min_confidence,
            live_confidence=live_conf,
            quantile=settings.quantile,
        )
        key = str(reason.value)
        if (
            key == "low-confidence"
            and model is not None
            and live_conf is not None
            and model.confidence >= settings.min_confidence
        ):
            key = "live-accuracy"
        if (
            settings.refit_on_low_live_confidence
            and live is not None
            and live.confidence is not None
            and live.confidence < settings.min_confidence
            and now - last_refit_request > REFIT_REQUEST_COOLDOWN_S
        ):
            last_refit_request = now
            next_refit = now + 1e-6
        reasons[key] += 1
        out[i] = value
        if conf is not None:
            judged[i] = conf
        factors[i] = factor
        models.append(model)
    return PredictiveRun(
        values=out,
        reasons=dict(reasons),
        fits=tuple(fits),
        fit_seconds=fit_seconds,
        confidence=judged,
        models=tuple(models),
        factors=factors,
    )


@dataclass(frozen=True, slots=True)
class HeadroomResult:
    target_value: float
    simulation: Simulation
    metrics: StrategyMetrics
    goal_minutes: float
    tolerance_minutes: float
    iterations: int
    converged: bool
    note: str


def headroom_search(
    observed_at_polls: FloatArray,
    demand_at_ticks: FloatArray,
    base: HpaSettings,
    goal_minutes: float,
    *,
    start: float,
    eval_from: int,
    min_fraction: float = 0.02,
    width_fraction: float = 0.002,
    max_iterations: int = 40,
) -> HeadroomResult:
    """The largest HPA target (<= ``base.target_value``) whose under-provisioned minutes are <= the goal.

    Capacity per replica stays the real one (``base.capacity_per_replica``). Bisection keeps a target that
    meets the goal (``lo``) and one that does not (``hi``) and stops when they are within ``width_fraction``
    of the base target. Converged = the result's minutes are within ``max(1, 2 %)`` of the goal.
    """
    n_ticks = len(demand_at_ticks)
    real = replace(base, capacity_per_replica_value=base.capacity_per_replica)
    tolerance = max(1.0, 0.02 * goal_minutes)

    def run(target: float) -> tuple[Simulation, StrategyMetrics]:
        sim = simulate(observed_at_polls, replace(real, target_value=target), start=start, n_ticks=n_ticks)
        return sim, evaluate("reactive_headroom", sim, demand_at_ticks, eval_from=eval_from)

    iterations = 1
    hi_target = base.target_value
    sim, metrics = run(hi_target)
    if metrics.underprovisioned_minutes <= goal_minutes:
        return HeadroomResult(
            hi_target,
            sim,
            metrics,
            goal_minutes,
            tolerance,
            iterations,
            True,
            "reactive already meets the goal at the real target: no headroom needed",
        )
    lo_target = base.target_value * min_fraction
    lo_sim, lo_metrics = run(lo_target)
    iterations += 1
    if lo_metrics.underprovisioned_minutes > goal_minutes:
        return HeadroomResult(
            lo_target,
            lo_sim,
            lo_metrics,
            goal_minutes,
            tolerance,
            iterations,
            False,
            f"even a target of {lo_target:.3g} ({min_fraction:.0%} of the real one) leaves "
            f"{lo_metrics.underprovisioned_minutes:.1f} under-provisioned minutes (max replicas too low?)",
        )
    while hi_target - lo_target > width_fraction * base.target_value and iterations < max_iterations:
        mid = 0.5 * (lo_target + hi_target)
        mid_sim, mid_metrics = run(mid)
        iterations += 1
        if mid_metrics.underprovisioned_minutes <= goal_minutes:
            lo_target, lo_sim, lo_metrics = mid, mid_sim, mid_metrics
        else:
            hi_target = mid
    converged = goal_minutes - lo_metrics.underprovisioned_minutes <= tolerance
    note = (
        f"target lowered to {lo_target:.4g} ({lo_target / base.target_value:.1%} of {base.target_value:g}) "
        f"in {iterations} runs"
    )
    if not converged:
        note += (
            f"; under-provisioning jumps past the goal ({lo_metrics.underprovisioned_minutes:.1f} min at "
            f"{lo_target:.4g}, more above it): the closest level not above the goal is used"
        )
    return HeadroomResult(lo_target, lo_sim, lo_metrics, goal_minutes, tolerance, iterations, converged, note)


def static_replicas(demand_at_ticks: FloatArray, settings: HpaSettings) -> int:
    """Replicas sized for the peak demand: ceil(peak / capacity per replica), within bounds."""
    peak = float(np.max(demand_at_ticks)) if len(demand_at_ticks) else 0.0
    return settings.clamp(math.ceil(peak / settings.capacity_per_replica - 1e-9))


def describe_fits(fits: tuple[FitRecord, ...]) -> str:
    failed = [f for f in fits if not f.ok]
    text = f"{len(fits)} fits ({len(failed)} failed)"
    if failed:
        text += f"; first failure at {format_instant(failed[0].at)}: {failed[0].error}"
    return text


__all__ = [
    "FitFunction",
    "FitRecord",
    "HeadroomResult",
    "PredictiveRun",
    "PredictiveSettings",
    "describe_fits",
    "headroom_search",
    "predictive_metric",
    "reactive_metric",
    "service_fit_function",
    "static_replicas",
]
