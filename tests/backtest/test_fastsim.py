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


def _random_tolerance_settings(rng: np.random.Generator) -> HpaSettings:
    def tolerance() -> float:
        # The search's grid, the default, and arbitrary values.
        return float(rng.choice([0.0, 0.02, 0.05, 0.1, round(float(rng.uniform(0, 0.3)), 3)]))

    up = tolerance()
    return HpaSettings(
        target_value=float(rng.choice([5.0, 10.0, 12.5])),
        min_replicas=int(rng.integers(1, 4)),
        max_replicas=int(rng.integers(30, 100)),
        pod_startup_s=float(rng.choice([0.0, 45.0, 180.0, 600.0])),
        scale_down_stabilization_s=float(rng.choice([0.0, 60.0, 300.0, 900.0])),
        scale_up_tolerance=up,
        scale_down_tolerance=up if rng.random() < 0.25 else tolerance(),
        legacy_behavior=bool(rng.random() < 0.2),
    )


@pytest.mark.parametrize("seed", range(12))
def test_fast_loop_matches_the_reference_with_random_tolerances(seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    settings = _random_tolerance_settings(rng)
    n_ticks = 2000
    metric = _metric(rng, n_ticks)
    # Whole numbers half of the time: ratios such as 110 / (10 x 10) land exactly on a band's edge.
    if seed % 2:
        metric = np.round(metric)
    ref = simulate(metric, settings, start=0.0, n_ticks=n_ticks)
    fast = simulate_fast(metric, settings, start=0.0, n_ticks=n_ticks)
    np.testing.assert_array_equal(fast.replicas, ref.replicas, err_msg=str(settings))
    np.testing.assert_array_equal(fast.ready, ref.ready)
    np.testing.assert_array_equal(fast.scale_events, ref.scale_events)
    assert ref.scale_events.sum() > 20
