"""The KEDA + HPA emulation against cases computed by hand from the Kubernetes controller's rules."""

from __future__ import annotations

import numpy as np
import pytest

from scaler_service.backtest.hpa import (
    TICK_S,
    Deployment,
    HorizontalPodAutoscaler,
    HpaSettings,
    replicas_for_metric,
    simulate,
    static_simulation,
    within_tolerance,
)


def polls(*segments: tuple[float, int]) -> np.ndarray:
    """Metric per KEDA poll (30 s): ``(value, count)`` segments."""
    return np.concatenate([np.full(n, v, dtype=np.float64) for v, n in segments])


def replicas_at(sim_replicas: np.ndarray, t: float) -> int:
    return int(sim_replicas[round(t / TICK_S)])


def test_replica_calculator_tolerance_band() -> None:
    # |value / (current * target) - 1| <= 0.1 keeps the current count.
    assert replicas_for_metric(105.0, 10, 10.0, 0.1) == 10
    # Exactly 10 % off is outside the band in float64 (|1 - 1.1| = 0.10000000000000009), as in the Go code.
    assert replicas_for_metric(110.0, 10, 10.0, 0.1) == 11
    assert replicas_for_metric(91.0, 10, 10.0, 0.1) == 10
    assert replicas_for_metric(112.0, 10, 10.0, 0.1) == 12
    assert replicas_for_metric(85.0, 10, 10.0, 0.1) == 9
    assert replicas_for_metric(0.0, 3, 10.0, 0.1) == 0


def test_step_up_is_rate_limited_and_pods_start_after_the_delay() -> None:
    # 1 replica on 10; at t=60 s (poll 2) the metric jumps to 100 (10 replicas wanted).
    settings = HpaSettings(target_value=10.0, max_replicas=100, pod_startup_s=45.0)
    sim = simulate(polls((10.0, 2), (100.0, 10)), settings, start=0.0, n_ticks=24)
    r = sim.replicas
    # Sync at 60 s: limit max(1 + 4 pods, 1 x 200 %) = 5. Sync at 75 s: the 60 s event is not inside
    # (60, 75], so the period starts at 5: limit max(9, 10) = 10 = desired.
    assert [replicas_at(r, t) for t in (0, 15, 30, 45, 60, 75, 90, 300)] == [1, 1, 1, 1, 5, 10, 10, 10]
    # Ready 45 s after creation: 4 pods at 105 s, 5 more at 120 s.
    ready = [int(sim.ready[round(t / TICK_S)]) for t in (60, 75, 90, 105, 120, 135)]
    assert ready == [1, 1, 1, 5, 10, 10]
    assert list(sim.capacity[: round(135 / TICK_S) + 1][-3:]) == [50.0, 100.0, 100.0]
    assert int(sim.scale_events.sum()) == 2


def test_big_jump_doubles_every_sync() -> None:
    settings = HpaSettings(target_value=10.0, max_replicas=100)
    sim = simulate(polls((10.0, 1), (1000.0, 20)), settings, start=0.0, n_ticks=16)
    # From 1 at t=30: 5, 10, 20, 40, 80, then capped by max_replicas 100 (= desired).
    got = [replicas_at(sim.replicas, t) for t in (15, 30, 45, 60, 75, 90, 105, 120)]
    assert got == [1, 5, 10, 20, 40, 80, 100, 100]


def test_ramp_moves_in_steps_outside_the_tolerance_band() -> None:
    # Metric 10, 20, 30, ... per poll (target 10): replicas follow ceil(value / 10) until the relative step
    # gets inside the 10 % band: 120 on 11 replicas (1.09) stays 11, 130 -> 13, 140 on 13 (1.08) stays.
    values = 10.0 * np.arange(1, 16, dtype=np.float64)
    sim = simulate(values, HpaSettings(target_value=10.0), start=0.0, n_ticks=2 * len(values))
    after_poll = [int(sim.replicas[2 * k + 1]) for k in range(len(values))]
    assert after_poll == [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 11, 13, 13, 15]


def test_drop_waits_for_the_stabilisation_window() -> None:
    # 10 replicas on 100 until t = 600 s, then 20: desired 2, but the maximum recommendation of the last
    # 300 s holds. The last "10" was recorded at the 585 s sync; it leaves the window (t - 300, t] at
    # t = 885 s, so the count drops from 10 to 2 at the 885 s sync.
    settings = HpaSettings(target_value=10.0)
    sim = simulate(polls((100.0, 20), (20.0, 60)), settings, start=0.0, n_ticks=120)
    r = sim.replicas
    assert replicas_at(r, 585) == 10
    assert replicas_at(r, 870) == 10
    assert replicas_at(r, 885) == 2
    assert replicas_at(r, 1500) == 2
    assert int(sim.scale_events.sum()) == 1


def test_partial_recovery_inside_the_window_sets_where_the_drop_lands() -> None:
    # 100 until 600 s, 20 for two minutes, then 60: the recommendations of the last 300 s are 2s and 6s once
    # the last 10 (585 s) has left the window, so the drop at 885 s lands on 6, not 2.
    settings = HpaSettings(target_value=10.0)
    metric = polls((100.0, 20), (20.0, 4), (60.0, 20))
    sim = simulate(metric, settings, start=0.0, n_ticks=80)
    assert replicas_at(sim.replicas, 870) == 10
    assert replicas_at(sim.replicas, 885) == 6
    assert replicas_at(sim.replicas, 1185) == 6


def test_bounds() -> None:
    settings = HpaSettings(target_value=10.0, min_replicas=3, max_replicas=7)
    sim = simulate(polls((0.0, 4), (1000.0, 10)), settings, start=0.0, n_ticks=28)
    assert replicas_at(sim.replicas, 0) == 3
    assert replicas_at(sim.replicas, 105) == 3
    assert replicas_at(sim.replicas, 120) == 7
    assert int(sim.replicas.max()) == 7


def test_scale_down_removes_not_ready_pods_first() -> None:
    pods = Deployment.ready_now(2, 60.0, now=0.0)
    pods.scale_to(6, now=0.0)
    assert pods.ready(30.0) == 2
    pods.scale_to(3, now=30.0)
    assert pods.replicas == 3
    assert pods.ready(30.0) == 2
    assert pods.ready(60.0) == 3


def test_metric_updates_only_on_keda_polls() -> None:
    # A value that changes every 15 s: with 30 s polls the HPA sees every other one.
    values = np.array([10.0, 50.0, 10.0, 50.0], dtype=np.float64)
    sim = simulate(values, HpaSettings(target_value=10.0), start=0.0, n_ticks=8)
    assert sim.metric.tolist() == [10.0, 10.0, 50.0, 50.0, 10.0, 10.0, 50.0, 50.0]


def test_capacity_per_replica_is_separate_from_the_target() -> None:
    settings = HpaSettings(target_value=5.0, capacity_per_replica_value=10.0)
    sim = simulate(polls((50.0, 4)), settings, start=0.0, n_ticks=8)
    assert int(sim.replicas[0]) == 10
    assert float(sim.capacity[0]) == 100.0


def test_static_simulation() -> None:
    sim = static_simulation(4, start=0.0, n_ticks=10, capacity_per_replica=25.0)
    assert set(sim.capacity.tolist()) == {100.0}
    assert int(sim.scale_events.sum()) == 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"target_value": 0.0}, "target value"),
        ({"target_value": 10.0, "min_replicas": 0}, "min replicas"),
        ({"target_value": 10.0, "min_replicas": 5, "max_replicas": 2}, "max replicas"),
        ({"target_value": 10.0, "keda_poll_s": 20.0}, "multiple of 15"),
        ({"target_value": 10.0, "pod_startup_s": -1.0}, "start-up"),
    ],
)
def test_bad_settings_are_refused(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        HpaSettings(**kwargs)  # type: ignore[arg-type]


def test_controller_records_recommendations_like_kubernetes() -> None:
    hpa = HorizontalPodAutoscaler(HpaSettings(target_value=1.0))
    assert hpa.reconcile(0.0, 8.0, 8) == 8
    assert hpa.reconcile(15.0, 2.0, 8) == 8  # held by the 8 recorded at t = 0
    assert hpa.reconcile(300.0, 2.0, 8) == 2  # the t = 0 sample is no longer newer than 300 - 300


def test_legacy_behavior_path() -> None:
    # An HPA without spec.behavior: ceiling max(2 x current, 4) per sync, so from 1 replica: 4, 8, 16.
    settings = HpaSettings(target_value=10.0, max_replicas=100, legacy_behavior=True)
    sim = simulate(polls((10.0, 1), (1000.0, 20)), settings, start=0.0, n_ticks=12)
    got = [replicas_at(sim.replicas, t) for t in (15, 30, 45, 60, 75, 90)]
    assert got == [1, 4, 8, 16, 32, 64]
    # Its stabilisation counts the sample exactly 300 s old: a drop after a "10" recorded at 585 s lands at
    # 900 s, one sync later than with spec.behavior (885 s).
    sim = simulate(polls((100.0, 20), (20.0, 60)), settings, start=0.0, n_ticks=120)
    assert replicas_at(sim.replicas, 885) == 10
    assert replicas_at(sim.replicas, 900) == 2


def test_separate_scale_up_and_scale_down_tolerances() -> None:
    # Kubernetes >= 1.33: keep the count while 1 - down <= ratio <= 1 + up.
    assert replicas_for_metric(103.0, 10, 10.0, 0.02, 0.1) == 11  # 3 % above: outside a 2 % scale-up band
    assert replicas_for_metric(102.0, 10, 10.0, 0.05, 0.1) == 10
    assert replicas_for_metric(101.0, 10, 10.0, 0.0, 0.1) == 11  # no scale-up tolerance at all
    assert replicas_for_metric(100.0, 10, 10.0, 0.0, 0.1) == 10
    assert replicas_for_metric(85.0, 10, 10.0, 0.02, 0.2) == 10  # 15 % below: inside a 20 % scale-down band
    assert replicas_for_metric(85.0, 10, 10.0, 0.2, 0.1) == 9
    # At the upper edge the two expressions differ in float64: 1.33's band includes 110 / 100 (1 + 0.1 rounds to
    # the same double), the symmetric |1 - r| <= 0.1 does not (see the first test).
    assert within_tolerance(110.0 / 100.0, 0.1, 0.2)
    assert not within_tolerance(110.0 / 100.0, 0.1, 0.1)
    assert replicas_for_metric(110.0, 10, 10.0, 0.1, 0.2) == 10


def test_scale_up_tolerance_changes_the_simulation() -> None:
    # 10 replicas on a metric 5 % above their target: the default band holds them, a 2 % one scales up.
    values = polls((100.0, 4), (105.0, 10))
    held = simulate(values, HpaSettings(target_value=10.0), start=0.0, n_ticks=28)
    tight = simulate(values, HpaSettings(target_value=10.0, scale_up_tolerance=0.02), start=0.0, n_ticks=28)
    assert int(held.replicas[-1]) == 10 and int(tight.replicas[-1]) == 11
    with pytest.raises(ValueError, match="scale_down_tolerance"):
        HpaSettings(target_value=10.0, scale_down_tolerance=1.0)
