"""KEDA + HorizontalPodAutoscaler, emulated tick by tick (15 s) as the Kubernetes controller computes it.

What is emulated, and where it comes from (Kubernetes ``pkg/controller/podautoscaler``):

- **Metric**: KEDA polls the external scaler every ``keda_poll_s`` (30 s) and the HPA sees the value of the
  latest poll. (With KEDA's default ``useCachedMetrics: false`` the HPA path asks the scaler at every sync;
  set ``keda_poll_s = 15`` to model that.)
- **Replica calculator** (``GetExternalPerPodMetricReplicas``, target type ``AverageValue``): with ``current``
  replicas and metric ``value``, ``desired = ceil(value / target)`` unless the usage ratio
  ``value / (current * target)`` is within the tolerance band (0.1 either way by default), in which case
  ``desired = current``. Kubernetes 1.33 added separate scale-up and scale-down tolerances
  (``behavior.scaleUp.tolerance`` / ``scaleDown.tolerance``, feature gate HPAConfigurableTolerance): the band
  is ``1 - scale_down_tolerance <= ratio <= 1 + scale_up_tolerance`` (see :func:`within_tolerance`).
- **Stabilisation** (``stabilizeRecommendationWithBehaviors``): every sync records the raw desired count;
  the recommendation is ``current`` raised to the minimum over the scale-up window (0 s by default: the raw
  desired count) and lowered to the maximum over the scale-down window (300 s). Samples strictly newer than
  ``now - window`` count, as in the controller.
- **Rate limits** (``convertDesiredReplicasWithBehaviorRate``): scale-up policies ``Pods 4 / 15 s`` and
  ``Percent 100 / 15 s`` with ``selectPolicy: Max``, measured from the replica count at the start of each
  policy's period (scale events of the period are remembered); scale-down ``Percent 100 / 15 s``. Then
  ``[min_replicas, max_replicas]``.
- **Pods**: a scale-up creates pods at once; each becomes ready ``pod_startup_s`` later. A scale-down deletes
  not-ready pods first, newest first (the ReplicaSet controller's order), and capacity drops at once.
  Ready capacity = ready pods x ``capacity_per_replica`` (defaults to the target value). Cost counts every
  pod that exists, ready or not.

**Legacy path** (``legacy_behavior=True``): an HPA whose ``spec.behavior`` is unset (what KEDA creates when
the ScaledObject has no ``advanced.horizontalPodAutoscalerConfig.behavior``) is normalised by the older code
(``normalizeDesiredReplicas``): the maximum recommendation of the last 300 s including the sample exactly
300 s old, and a scale-up ceiling of ``max(2 x current, 4)`` per sync. It differs from the policies above
only below 4 replicas (from 1 replica: 4 instead of 5) and at the window's edge.

Order within a tick at time ``t``: KEDA poll (when due), HPA sync, pods whose start-up has elapsed become
ready, then the state is recorded for ``[t, t + 15 s)``. Nothing here reads a clock: time is the tick index.
"""

from __future__ import annotations

import bisect
import math
from collections import deque
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from scaler_service.backtest.hpa_settings import (
    DEFAULT_SCALE_DOWN,
    DEFAULT_SCALE_UP,
    DEFAULT_TOLERANCE,
    TICK_S,
    HpaSettings,
    PolicyKind,
    ScalingPolicy,
)

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


def within_tolerance(usage_ratio: float, up: float, down: float) -> bool:
    """Whether the replica calculator keeps the current count at ``usage_ratio``.

    Kubernetes 1.33 (``Tolerances.isWithin``): ``1 - down <= ratio <= 1 + up``. Before 1.33, with one
    tolerance: ``|1 - ratio| <= tolerance``. The two differ in float64 at the upper edge: with 0.1,
    ``1 + 0.1`` rounds to the double nearest 1.1 (inside the 1.33 band) while ``|1 - 1.1| =
    0.10000000000000009 > 0.1`` (outside the old one), so a ratio of exactly 110 / 100 keeps the count on 1.33
    and scales on earlier versions (with 0.1 they agree below 1). A symmetric tolerance is emulated with the older
    expression (every Kubernetes version has that band, and the results stay those of every earlier run of
    this emulator); an asymmetric one exists only from 1.33 on and is emulated with 1.33's. :mod:`fastsim`
    inlines the same two expressions.
    """
    if up == down:
        return abs(1.0 - usage_ratio) <= up
    return (1.0 - down) <= usage_ratio <= (1.0 + up)


def replicas_for_metric(value: float, current: int, target: float, up: float, down: float | None = None) -> int:
    """The replica calculator for an external metric with an ``AverageValue`` target (``down`` defaults to
    ``up``: one symmetric tolerance)."""
    if current <= 0:
        return math.ceil(value / target)
    if within_tolerance(value / (target * current), up, up if down is None else down):
        return current
    return math.ceil(value / target)


@dataclass(slots=True)
class HorizontalPodAutoscaler:
    """The HPA controller's state for one target: recommendations and scale events, as in Kubernetes."""

    settings: HpaSettings
    _recommendations: deque[tuple[float, int]] = field(default_factory=deque)
    _up_events: deque[tuple[float, int]] = field(default_factory=deque)
    _down_events: deque[tuple[float, int]] = field(default_factory=deque)

    def _stabilize(self, now: float, desired: int, current: int) -> int:
        s = self.settings
        up_cutoff = now - s.scale_up_stabilization_s
        down_cutoff = now - s.scale_down_stabilization_s
        keep_after = min(up_cutoff, down_cutoff)
        while self._recommendations and self._recommendations[0][0] <= keep_after:
            self._recommendations.popleft()
        up_rec = desired
        down_rec = desired
        for ts, rec in self._recommendations:
            if ts > up_cutoff:
                up_rec = min(up_rec, rec)
            if ts > down_cutoff:
                down_rec = max(down_rec, rec)
        self._recommendations.append((now, desired))
        recommendation = current
        if recommendation < up_rec:
            recommendation = up_rec
        if recommendation > down_rec:
            recommendation = down_rec
        return recommendation

    @staticmethod
    def _change_in_period(events: deque[tuple[float, int]], now: float, period_s: float) -> int:
        cutoff = now - period_s
        return sum(change for ts, change in events if ts > cutoff)

    def _scale_up_limit(self, now: float, current: int) -> int:
        result = -(2**31)
        for policy in self.settings.scale_up_policies:
            added = self._change_in_period(self._up_events, now, policy.period_s)
            deleted = self._change_in_period(self._down_events, now, policy.period_s)
            period_start = current - added + deleted
            if policy.kind is PolicyKind.PODS:
                proposed = period_start + policy.value
            else:
                proposed = math.ceil(period_start * (1 + policy.value / 100))
            result = max(result, proposed)
        return result

    def _scale_down_limit(self, now: float, current: int) -> int:
        result = 2**31
        for policy in self.settings.scale_down_policies:
            added = self._change_in_period(self._up_events, now, policy.period_s)
            deleted = self._change_in_period(self._down_events, now, policy.period_s)
            period_start = current - added + deleted
            if policy.kind is PolicyKind.PODS:
                proposed = period_start - policy.value
            else:
                proposed = math.ceil(period_start * (1 - policy.value / 100))
            result = min(result, proposed)
        return result

    def _prune_events(self, now: float) -> None:
        longest = max(p.period_s for p in (*self.settings.scale_up_policies, *self.settings.scale_down_policies))
        for events in (self._up_events, self._down_events):
            while events and events[0][0] <= now - longest:
                events.popleft()

    def _legacy(self, now: float, desired: int, current: int) -> int:
        s = self.settings
        cutoff = now - s.scale_down_stabilization_s
        while self._recommendations and self._recommendations[0][0] < cutoff:
            self._recommendations.popleft()
        recommendation = max([desired, *(rec for _, rec in self._recommendations)])
        self._recommendations.append((now, desired))
        ceiling = min(s.max_replicas, max(2 * current, 4))
        return min(max(recommendation, s.min_replicas), ceiling)

    def reconcile(self, now: float, metric_value: float, current: int) -> int:
        """One sync: the replica count the HPA sets given the metric it sees and the current count."""
        s = self.settings
        self._prune_events(now)
        if current > s.max_replicas:
            new = s.max_replicas
        elif current < s.min_replicas:
            new = s.min_replicas
        else:
            desired = replicas_for_metric(
                metric_value, current, s.target_value, s.scale_up_tolerance, s.scale_down_tolerance
            )
            new = self._legacy(now, desired, current) if s.legacy_behavior else self._behave(now, desired, current)
        if new > current:
            self._up_events.append((now, new - current))
        elif new < current:
            self._down_events.append((now, current - new))
        return new

    def _behave(self, now: float, desired: int, current: int) -> int:
        """Stabilisation, then the rate limits and bounds (the ``spec.behavior`` path)."""
        s = self.settings
        stabilized = self._stabilize(now, desired, current)
        if stabilized > current:
            limit = max(self._scale_up_limit(now, current), current)
            return min(stabilized, s.max_replicas, limit)
        if stabilized < current:
            limit = min(self._scale_down_limit(now, current), current)
            return max(stabilized, s.min_replicas, limit)
        return stabilized


@dataclass(slots=True)
class Deployment:
    """Pods and when each becomes ready. With one start-up delay, creation order is readiness order."""

    pod_startup_s: float
    _ready_at: list[float] = field(default_factory=list)

    @classmethod
    def ready_now(cls, replicas: int, pod_startup_s: float, now: float) -> Deployment:
        return cls(pod_startup_s, [now - pod_startup_s] * replicas)

    @property
    def replicas(self) -> int:
        return len(self._ready_at)

    def scale_to(self, replicas: int, now: float) -> None:
        if replicas > len(self._ready_at):
            self._ready_at.extend([now + self.pod_startup_s] * (replicas - len(self._ready_at)))
        else:
            # Newest pods are the not-ready ones: the ReplicaSet deletes those first.
            del self._ready_at[replicas:]

    def ready(self, now: float) -> int:
        return bisect.bisect_right(self._ready_at, now)


@dataclass(frozen=True, slots=True)
class Simulation:
    """Per-tick state over ``[start, start + n * TICK_S)``."""

    start: float
    replicas: IntArray
    """Pods that exist (ready or starting) during each tick: what is paid for."""
    ready: IntArray
    capacity: FloatArray
    """Ready pods x capacity per replica."""
    metric: FloatArray
    """The metric value the HPA saw at each tick."""
    scale_events: IntArray
    """1 where the HPA changed the replica count at that tick."""
    target_value: float

    def times(self) -> FloatArray:
        return self.start + TICK_S * np.arange(len(self.replicas), dtype=np.float64)


def simulate(
    metric_at_polls: FloatArray,
    settings: HpaSettings,
    *,
    start: float,
    n_ticks: int,
    initial_replicas: int | None = None,
) -> Simulation:
    """Run KEDA + HPA for ``n_ticks`` ticks from ``start``.

    ``metric_at_polls[k]`` is what the scaler returns at KEDA's ``k``-th poll (at
    ``start + k * keda_poll_s``); it must cover every poll in the run. The deployment starts with
    ``initial_replicas`` ready pods (default: what the HPA would ask for on the first poll's value, within
    bounds).
    """
    tpp = settings.ticks_per_poll
    tps = settings.ticks_per_sync
    polls_needed = (n_ticks - 1) // tpp + 1 if n_ticks > 0 else 0
    if len(metric_at_polls) < polls_needed:
        raise ValueError(f"metric covers {len(metric_at_polls)} polls; the run needs {polls_needed}")
    metric_list = [float(v) if math.isfinite(v) and v > 0 else 0.0 for v in metric_at_polls[:polls_needed]]
    if initial_replicas is None:
        first = metric_list[0] if metric_list else 0.0
        initial_replicas = settings.clamp(math.ceil(first / settings.target_value))
    hpa = HorizontalPodAutoscaler(settings)
    pods = Deployment.ready_now(settings.clamp(initial_replicas), settings.pod_startup_s, start)
    replicas = np.empty(n_ticks, dtype=np.int64)
    ready = np.empty(n_ticks, dtype=np.int64)
    seen = np.empty(n_ticks, dtype=np.float64)
    events = np.zeros(n_ticks, dtype=np.int64)
    metric = 0.0
    for k in range(n_ticks):
        now = start + k * TICK_S
        if k % tpp == 0:
            metric = metric_list[k // tpp]
        if k % tps == 0:
            current = pods.replicas
            new = hpa.reconcile(now, metric, current)
            if new != current:
                pods.scale_to(new, now)
                events[k] = 1
        replicas[k] = pods.replicas
        ready[k] = pods.ready(now)
        seen[k] = metric
    capacity = ready.astype(np.float64) * settings.capacity_per_replica
    return Simulation(
        start=start,
        replicas=replicas,
        ready=ready,
        capacity=capacity,
        metric=seen,
        scale_events=events,
        target_value=settings.target_value,
    )


def static_simulation(replicas: int, *, start: float, n_ticks: int, capacity_per_replica: float) -> Simulation:
    """A fixed replica count, all ready, never scaled."""
    counts = np.full(n_ticks, replicas, dtype=np.int64)
    return Simulation(
        start=start,
        replicas=counts,
        ready=counts.copy(),
        capacity=counts.astype(np.float64) * capacity_per_replica,
        metric=np.full(n_ticks, np.nan),
        scale_events=np.zeros(n_ticks, dtype=np.int64),
        target_value=math.nan,
    )


__all__ = [
    "DEFAULT_SCALE_DOWN",
    "DEFAULT_SCALE_UP",
    "DEFAULT_TOLERANCE",
    "TICK_S",
    "Deployment",
    "HorizontalPodAutoscaler",
    "HpaSettings",
    "PolicyKind",
    "ScalingPolicy",
    "Simulation",
    "replicas_for_metric",
    "simulate",
    "static_simulation",
    "within_tolerance",
]
