"""The fast HPA loop computes exactly what the reference emulator computes."""

from __future__ import annotations

import numpy as np
import pytest

from scaler_service.backtest.fastsim import simulate_fast
from scaler_service.backtest.hpa import HpaSettings, PolicyKind, ScalingPolicy, simulate


def _metric(rng: np.random.Generator, n_polls: int) -> np.ndarray:
    # A daily-ish wave with bursts, steps down to zero and a few bad values the emulator must read as 0.
    t = np.arange(n_polls)
    base = 120 + 100 * np.sin(t / 90.0) + rng.normal(0, 15, n_polls)
    bursts = (rng.random(n_polls) < 0.02) * rng.uniform(50, 400, n_polls)
    values = np.maximum(base + bursts, 0.0)
    values[rng.random(n_polls) < 0.01] = 0.0
    values[rng.integers(0, n_polls, 3)] = np.nan
    return values


SETTINGS = [
    HpaSettings(target_value=10.0, min_replicas=2, max_replicas=60, pod_startup_s=180.0),
    HpaSettings(target_value=10.0, min_replicas=1, max_replicas=30, pod_startup_s=600.0, legacy_behavior=True),
    HpaSettings(target_value=7.5, min_replicas=3, max_replicas=100, pod_startup_s=0.0, scale_down_stabilization_s=0.0),
    HpaSettings(
        target_value=12.0,
        min_replicas=1,
        max_replicas=80,
        pod_startup_s=45.0,
        keda_poll_s=60.0,
        sync_period_s=30.0,
        scale_up_stabilization_s=60.0,
        scale_down_stabilization_s=90.0,
        scale_up_policies=(ScalingPolicy(PolicyKind.PODS, 2, 60.0), ScalingPolicy(PolicyKind.PERCENT, 50, 120.0)),
        scale_down_policies=(ScalingPolicy(PolicyKind.PODS, 1, 60.0), ScalingPolicy(PolicyKind.PERCENT, 10, 45.0)),
    ),
    HpaSettings(
        target_value=10.0, min_replicas=2, max_replicas=8, pod_startup_s=120.0, scale_down_stabilization_s=310.0
    ),
]


@pytest.mark.parametrize("index", range(len(SETTINGS)))
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_fast_loop_matches_the_reference_tick_by_tick(index: int, seed: int) -> None:
    settings = SETTINGS[index]
    rng = np.random.default_rng(seed)
    n_ticks = 3000 + seed
    metric = _metric(rng, n_ticks)
    start = 807_000_000.0 + 60 * seed
    initial = None if seed != 2 else 200  # above the maximum: the HPA brings it down first
    ref = simulate(metric, settings, start=start, n_ticks=n_ticks, initial_replicas=initial)
    fast = simulate_fast(metric, settings, start=start, n_ticks=n_ticks, initial_replicas=initial)
    np.testing.assert_array_equal(fast.replicas, ref.replicas)
    np.testing.assert_array_equal(fast.ready, ref.ready)
    np.testing.assert_array_equal(fast.scale_events, ref.scale_events)
    np.testing.assert_array_equal(fast.metric, ref.metric)
    np.testing.assert_array_equal(fast.capacity, ref.capacity)
    assert ref.scale_events.sum() > 20  # the case exercises scaling both ways


def test_fast_loop_refuses_a_metric_too_short_for_the_run() -> None:
    with pytest.raises(ValueError, match="polls"):
        simulate_fast(np.ones(3), SETTINGS[0], start=0.0, n_ticks=100)
