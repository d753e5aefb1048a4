"""The verdict follows the figures: foresight on ramps pays off; a metric that only adds noise does not."""

from __future__ import annotations

import numpy as np

from scaler_service.backtest.hpa import HpaSettings
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
