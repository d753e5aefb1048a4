"""The verdict follows the figures: foresight on ramps pays off; a metric that only adds noise does not."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from scaler_service.backtest.hpa import TICK_S, HpaSettings, Simulation
from scaler_service.backtest.metrics import shortfall_causes
from scaler_service.backtest.report import format_table, make_verdict, to_json
from scaler_service.backtest.runner import BacktestConfig, recorded_provider, run_backtest
from scaler_service.backtest.trace import DemandTrace, RecordedPredictive


def _ramps(days: float = 3.0) -> DemandTrace:
    # A slow climb from 20 to 200 over 3 h, a plateau, then back down: eight times a day.
    minutes = np.arange(int(days * 1440), dtype=np.float64)
    phase = minutes % 180
    values = np.where(phase < 90, 20.0 + 2.0 * phase, np.maximum(20.0, 200.0 - 4.0 * (phase - 90)))
    return DemandTrace(name="ramps", start=0.0, values=values, source_step_s=60.0)


def _config() -> BacktestConfig:
    hpa = HpaSettings(target_value=10.0, min_replicas=2, max_replicas=100, pod_startup_s=600.0)
    return BacktestConfig(hpa=hpa, eval_days=1.0, min_history_s=3600.0)


def _recorded(trace: DemandTrace, values: np.ndarray) -> RecordedPredictive:
    return RecordedPredictive(timestamps=trace.start + 60.0 * np.arange(len(values), dtype=np.float64), values=values)


def test_foresight_on_ramps_pays_off() -> None:
    trace = _ramps()
    # What a perfect forecaster would serve at minute i: the peak of the next 15 minutes.
    ahead = np.array([trace.values[i : i + 16].max() for i in range(len(trace.values))])
    report = run_backtest(trace, _config(), recorded_provider(_recorded(trace, ahead)), predictive_source="oracle")
    verdict = make_verdict(report)
    assert verdict.pays_off
    assert verdict.saving_vs_headroom is not None and verdict.saving_vs_headroom >= 0.05
    assert verdict.text.startswith("Predictive scaling pays off")
    doc = to_json(report, verdict)
    assert doc["pays_off"] is True and doc["strategies"]["predictive"]["lead_time_gained"]["ramps"] > 0
    assert doc["strategies"]["predictive"]["lead_time_gained"]["median_min"] > 0
    assert "verdict: Predictive scaling pays off" in format_table(report, verdict)


def test_a_metric_that_only_adds_noise_does_not_pay_off() -> None:
    trace = _ramps()
    rng = np.random.default_rng(7)
    observed_late = np.concatenate(([trace.values[0]], trace.values[:-1]))
    noisy = observed_late * rng.uniform(1.0, 1.6, len(observed_late))
    report = run_backtest(trace, _config(), recorded_provider(_recorded(trace, noisy)), predictive_source="noise")
    verdict = make_verdict(report)
    assert not verdict.pays_off
    assert verdict.saving_vs_headroom is not None and verdict.saving_vs_headroom < 0.05


def _sim(demand: np.ndarray, ready: np.ndarray, metric: np.ndarray) -> Simulation:
    n = len(demand)
    return Simulation(
        start=0.0,
        replicas=ready.copy(),
        ready=ready,
        capacity=ready * 10.0,
        metric=metric,
        scale_events=np.zeros(n, dtype=np.int64),
        target_value=10.0,
    )


def test_shortfall_causes_tell_the_tolerance_band_from_a_burst() -> None:
    ticks = 120
    ready = np.full(ticks, 10, dtype=np.int64)
    demand = np.full(ticks, 90.0)
    demand[60:80] = 105.0  # 5 % above capacity 100: the HPA sees 105 against 10 pods, inside its 10 % band
    demand[100] = 190.0  # one burst, 1.9x the level before
    metric = demand.copy()
    causes = shortfall_causes(_sim(demand, ready, metric), demand, tolerance=0.1, eval_from=40)
    assert causes is not None
    assert causes.tolerance_share == 20 / 21  # the burst tick asked for 19 pods: outside the band
    assert causes.worst_is_burst and not causes.worst_in_band
    assert causes.worst_at == 100 * TICK_S and causes.worst_demand == 190.0
    assert causes.mean_before_worst == (20 * 105.0 + 20 * 90.0) / 40  # the 10 minutes (40 ticks) before
    # Pods still starting are not the band's doing.
    starting = ready.copy()
    starting[:] = 9
    sim = _sim(demand, starting, metric)
    sim = replace(sim, replicas=np.full(ticks, 10, dtype=np.int64))
    slow = shortfall_causes(sim, demand, tolerance=0.1, eval_from=40)
    assert slow is not None and slow.tolerance_share == 0.0
    assert shortfall_causes(_sim(demand * 0.5, ready, metric), demand * 0.5, tolerance=0.1) is None
