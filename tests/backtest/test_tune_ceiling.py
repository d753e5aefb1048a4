"""The ceiling benchmark's hindsight metrics read the future they claim to, and no more (loadtests.tune_ceiling)."""

from __future__ import annotations

import numpy as np

from forecasting.backtest import NoiseModel
from loadtests.tune_ceiling import HindsightTable, centred_mean, hindsight_outcome
from scaler_service.backtest.hpa import HpaSettings
from scaler_service.backtest.strategies import PredictiveSettings
from scaler_service.backtest.trace import DemandTrace
from scaler_service.backtest.tune import split_trace

START = 1_700_000_040.0  # a whole minute


def bursty_trace(days: int = 4, seed: int = 3) -> DemandTrace:
    rng = np.random.default_rng(seed)
    minutes = np.arange(days * 1440)
    level = 40 + 30 * np.sin(2 * np.pi * minutes / 1440)
    values = rng.poisson(level).astype(np.float64)
    bursts = rng.random(len(values)) < 0.01
    values[bursts] *= 2.5
    return DemandTrace("synthetic", START, values, 60.0)


def test_every_minute_metric_is_the_peak_of_the_coming_minutes_and_never_below_observed() -> None:
    trace = bursty_trace(days=1)
    polls = START + 120 + 30.0 * np.arange(200, dtype=np.float64)
    table = HindsightTable(trace, polls, trace.values, None)
    got = table.metric(300.0, 0.9, 0.8)
    for i, t in enumerate(polls):
        first = int((t - START) // 60)
        coming = trace.values[first : first + 6].max()
        observed = trace.values[first - 1]
        assert got[i] == max(coming, observed)


def test_level_metric_adds_the_noise_quantile_and_the_median_is_the_level() -> None:
    trace = bursty_trace(days=1)
    polls = START + 120 + 30.0 * np.arange(50, dtype=np.float64)
    level = centred_mean(trace.values, 15)
    noise = NoiseModel(c=1.0, p=0.5)
    table = HindsightTable(trace, polls, level, noise)
    first = ((polls - START) // 60).astype(int)
    observed = trace.values[first - 1]
    assert np.array_equal(table.metric(0.0, 0.5, 0.0), np.maximum(level[first], observed))
    high = table.metric(0.0, 0.975, 0.0)
    assert np.allclose(high, np.maximum(level[first] + 1.959964 * np.sqrt(level[first]), observed), rtol=1e-6)


def test_centred_mean_is_centred() -> None:
    values = np.arange(10, dtype=np.float64)
    assert np.allclose(centred_mean(values, 3)[1:-1], values[1:-1])
    assert centred_mean(values, 1).tolist() == values.tolist()


def test_hindsight_of_every_minute_beats_tuned_reactive_on_bursts() -> None:
    """The benchmark's premise: a metric that knows each coming minute meets the service level on bursty demand
    with clearly fewer replica-hours than tuned reactive, which must hold capacity for bursts it cannot see."""
    trace = bursty_trace(days=5)
    hpa = HpaSettings(target_value=10.0, min_replicas=1, max_replicas=100, pod_startup_s=180.0)
    split = split_trace(trace, holdout_days=1, tune_days=1)
    polls = split.sim_start + hpa.keda_poll_s * np.arange(
        (split.n_ticks - 1) // hpa.ticks_per_poll + 1, dtype=np.float64
    )
    out = hindsight_outcome(trace, hpa, PredictiveSettings(), HindsightTable(trace, polls, trace.values, None), split)
    p, r = out["predictive_tuned"].metrics, out["reactive_tuned"].metrics
    assert p.replica_hours < 0.95 * r.replica_hours
