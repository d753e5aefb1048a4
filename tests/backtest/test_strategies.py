"""Predictive strategy (no peeking, the service's decision), the headroom bisection, lead-time accounting."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from forecasting.series import DAY_S, PreparedSeries
from forecasting.serving import ServingModel
from scaler_service.backtest.hpa import TICK_S, HpaSettings, simulate
from scaler_service.backtest.metrics import evaluate, lead_gained
from scaler_service.backtest.strategies import (
    PredictiveSettings,
    headroom_search,
    predictive_metric,
    reactive_metric,
    service_fit_function,
)
from scaler_service.backtest.trace import DemandTrace, from_bundled
from tests.backtest.helpers import seasonal_naive_fit


@pytest.fixture(scope="module")
def nasa() -> DemandTrace:
    # 16 days of the clean August stretch: 15 of history, one to simulate.
    full = from_bundled("nasa-http-1995")
    return full.window(full.start, full.start + 16 * DAY_S)


def _perturbed_after(trace: DemandTrace, cut: float, factor: float) -> DemandTrace:
    values = trace.values.copy()
    i = int((cut - trace.start) // 60)
    values[i:] = values[i:] * factor + 7.0
    return replace(trace, values=values)


def _polls(trace: DemandTrace, start: float, hours: float) -> np.ndarray:
    return start + 30.0 * np.arange(int(hours * 120), dtype=np.float64)


def test_predictive_metric_never_uses_data_after_now(nasa: DemandTrace) -> None:
    sim_start = nasa.end - 1 * DAY_S
    polls = _polls(nasa, sim_start, 12)
    settings = PredictiveSettings(lead_s=900.0, refit_interval_s=3 * 3600.0, live_confidence=True)
    seen: list[tuple[float, float]] = []
    base_fit = seasonal_naive_fit()

    def recording_fit(history: PreparedSeries, now: float, previous: ServingModel | None) -> ServingModel:
        seen.append((now, history.end))
        return base_fit(history, now, previous)

    base = predictive_metric(nasa, polls, settings, recording_fit)
    # Every fit saw only minutes that had ended: the last point starts at least one step before ``now``.
    assert seen and all(end <= now - 60.0 for now, end in seen)
    cut = float(polls[500])  # 4 h 10 min in, between two refits
    changed = predictive_metric(_perturbed_after(nasa, cut, 3.0), polls, settings, seasonal_naive_fit())
    upto = polls <= cut
    np.testing.assert_array_equal(base.values[upto], changed.values[upto])
    # ... and the change does show after the cut, so the comparison above can fail.
    assert not np.array_equal(base.values[~upto], changed.values[~upto])


def test_predictive_metric_with_the_service_pipeline_never_peeks() -> None:
    taxi = from_bundled("nyc-taxi")
    taxi = taxi.window(taxi.end - 17 * DAY_S, taxi.end)
    polls = _polls(taxi, taxi.end - 2 * DAY_S, 30)
    settings = PredictiveSettings(lead_s=600.0, refit_interval_s=24 * 3600.0)
    fit = service_fit_function("test-taxi")
    base = predictive_metric(taxi, polls, settings, fit)
    assert [f.ok for f in base.fits] == [True, True], [f.error for f in base.fits]
    cut = float(polls[0]) + 20 * 3600.0  # after the first fit, before the second
    changed = predictive_metric(_perturbed_after(taxi, cut, 2.0), polls, settings, fit)
    upto = polls <= cut
    np.testing.assert_array_equal(base.values[upto], changed.values[upto])
    assert not np.array_equal(base.values[~upto], changed.values[~upto])
    # The service served its forecast (not just the observed value) for part of the run.
    assert base.reasons.get("forecast", 0) > 0


def test_predictive_metric_is_the_services_decision(nasa: DemandTrace) -> None:
    polls = _polls(nasa, nasa.end - 1 * DAY_S, 6)
    observed = reactive_metric(nasa, polls)
    # Never below the observed value (GetMetrics semantics).
    no_live = PredictiveSettings(lead_s=600.0, live_confidence=False)
    run = predictive_metric(nasa, polls, no_live, seasonal_naive_fit())
    assert np.all(run.values >= observed)
    assert run.reasons.get("forecast", 0) > 0
    assert np.any(run.values > observed)
    # Below the confidence gate it is exactly the observed value.
    low = predictive_metric(nasa, polls, no_live, seasonal_naive_fit(confidence=0.3))
    np.testing.assert_array_equal(low.values, observed)
    assert set(low.reasons) == {"low-confidence"}
    # The service's live gate judges over-forecasts. A one-day-back forecast without level anchoring, on a
    # day whose traffic fell to a third of the day before, runs high: gated for much of the day ...
    unanchored = seasonal_naive_fit(season_s=DAY_S, anchored=False)
    cut = float(polls[0]) - 3600.0
    fell = predictive_metric(_perturbed_after(nasa, cut, 0.3), polls, PredictiveSettings(lead_s=600.0), unanchored)
    assert fell.reasons.get("live-accuracy", 0) > 0.5 * len(polls)
    # ... while on a day whose traffic tripled it runs low and is not gated (never below the observed value).
    rose_trace = _perturbed_after(nasa, cut, 3.0)
    rose = predictive_metric(rose_trace, polls, PredictiveSettings(lead_s=600.0), unanchored)
    assert rose.reasons.get("live-accuracy", 0) == 0
    assert np.all(rose.values >= reactive_metric(rose_trace, polls))
    # A fit that fails leaves the observed value (no model), with the failure recorded.

    def failing(history: PreparedSeries, now: float, previous: ServingModel | None) -> ServingModel:
        raise ValueError("only 1.0 of 2.0 days of history")

    failed = predictive_metric(nasa, polls, PredictiveSettings(lead_s=600.0), failing)
    np.testing.assert_array_equal(failed.values, observed)
    assert failed.fits and not failed.fits[0].ok and "history" in (failed.fits[0].error or "")


def _sawtooth_trace(days: float = 1.0) -> DemandTrace:
    # Ramps from 20 to 200 over 90 minutes, then back to 20 at once; repeated.
    minutes = np.arange(int(days * 1440), dtype=np.float64)
    phase = minutes % 120
    values = np.where(phase < 90, 20.0 + 2.0 * phase, 20.0)
    return DemandTrace(name="sawtooth", start=0.0, values=values, source_step_s=60.0)


def test_headroom_bisection_converges_on_the_goal() -> None:
    trace = _sawtooth_trace()
    n_ticks = int((trace.end - 120.0) // TICK_S)
    start = 120.0
    ticks = start + TICK_S * np.arange(n_ticks, dtype=np.float64)
    polls = start + 30.0 * np.arange((n_ticks + 1) // 2, dtype=np.float64)
    demand = trace.demand_at(ticks)
    observed = reactive_metric(trace, polls)
    base = HpaSettings(target_value=10.0, max_replicas=100, pod_startup_s=180.0)
    reactive = evaluate("reactive", simulate(observed, base, start=start, n_ticks=n_ticks), demand)
    # A goal some lower target is known to reach.
    known = evaluate(
        "known",
        simulate(
            observed,
            replace(base, target_value=7.5, capacity_per_replica_value=10.0),
            start=start,
            n_ticks=n_ticks,
        ),
        demand,
    )
    assert known.underprovisioned_minutes < reactive.underprovisioned_minutes
    result = headroom_search(observed, demand, base, known.underprovisioned_minutes, start=start, eval_from=0)
    assert result.metrics.underprovisioned_minutes <= known.underprovisioned_minutes
    assert result.converged
    assert known.underprovisioned_minutes - result.metrics.underprovisioned_minutes <= result.tolerance_minutes
    assert 7.5 <= result.target_value < 10.0
    # The largest such target: 1 % more headroom-free target misses the goal.
    above = evaluate(
        "above",
        simulate(
            observed,
            replace(base, target_value=result.target_value * 1.01, capacity_per_replica_value=10.0),
            start=start,
            n_ticks=n_ticks,
        ),
        demand,
    )
    assert above.underprovisioned_minutes > known.underprovisioned_minutes
    # Capacity per pod stays the real one: more replicas, not more capacity per replica.
    assert float(result.simulation.capacity.max()) == 10.0 * int(result.simulation.ready.max())


def test_headroom_not_needed_when_reactive_already_meets_the_goal() -> None:
    trace = _sawtooth_trace(0.5)
    n_ticks = 1000
    ticks = 120.0 + TICK_S * np.arange(n_ticks, dtype=np.float64)
    polls = 120.0 + 30.0 * np.arange(n_ticks // 2, dtype=np.float64)
    base = HpaSettings(target_value=10.0, pod_startup_s=180.0)
    result = headroom_search(reactive_metric(trace, polls), trace.demand_at(ticks), base, 1e9, start=120.0, eval_from=0)
    assert result.target_value == 10.0 and result.iterations == 1


def test_lead_gained_counts_capacity_that_arrived_before_reactives() -> None:
    # Demand steps from 10 to 50 at tick 100. Reactive gets there at tick 120; the other had it from tick 90.
    n = 300
    demand = np.where(np.arange(n) >= 100, 50.0, 10.0)
    reactive = np.where(np.arange(n) >= 120, 50.0, 10.0)
    early = np.where(np.arange(n) >= 90, 50.0, 10.0)
    late = np.where(np.arange(n) >= 130, 50.0, 10.0)
    stats = lead_gained(demand, reactive, early, lead_s=600.0)
    assert stats.ramps == 1 and stats.ready_before_crossing == 1
    assert stats.median_min == pytest.approx((120 - 90) * TICK_S / 60)
    assert lead_gained(demand, reactive, late, lead_s=600.0).median_min == pytest.approx(-10 * TICK_S / 60)
    # Capacity that was always there counts at most ``lead`` before the crossing.
    always = np.full(n, 50.0)
    assert lead_gained(demand, reactive, always, lead_s=150.0).median_min == pytest.approx((120 - 90) * 0.25)
