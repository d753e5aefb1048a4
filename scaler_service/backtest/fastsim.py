"""The KEDA + HPA emulation of :mod:`scaler_service.backtest.hpa`, as one tight loop.

:func:`scaler_service.backtest.hpa.simulate` is the reference: it mirrors the Kubernetes controller's code
structure (recommendation lists, scale events, pods) and is easy to check against it. The tuning search runs
the emulation hundreds of times, so this module computes exactly the same thing with the state kept in local
variables: the scale-down stabilisation maximum in a monotonic queue instead of a scan of the window, the
pods as batches that become ready together, and the scale events looked at only when the HPA wants to scale.
The tests run both on random metrics and settings and require identical output, tick by tick.
"""

from __future__ import annotations

import math
from collections import deque

import numpy as np

from scaler_service.backtest.hpa import TICK_S, HpaSettings, PolicyKind, Simulation
from scaler_service.backtest.trace import FloatArray


def simulate_fast(
    metric_at_polls: FloatArray,
    settings: HpaSettings,
    *,
    start: float,
    n_ticks: int,
    initial_replicas: int | None = None,
) -> Simulation:
    """Same contract and result as :func:`scaler_service.backtest.hpa.simulate`."""
    s = settings
    tpp = s.ticks_per_poll
    tps = s.ticks_per_sync
    polls_needed = (n_ticks - 1) // tpp + 1 if n_ticks > 0 else 0
    if len(metric_at_polls) < polls_needed:
        raise ValueError(f"metric covers {len(metric_at_polls)} polls; the run needs {polls_needed}")
    raw = np.asarray(metric_at_polls[:polls_needed], dtype=np.float64)
    with np.errstate(invalid="ignore"):
        metric_list: list[float] = np.where(np.isfinite(raw) & (raw > 0), raw, 0.0).tolist()
    target = s.target_value
    if initial_replicas is None:
        first = metric_list[0] if metric_list else 0.0
        initial_replicas = s.clamp(math.ceil(first / target))
    lo_bound, hi_bound = s.min_replicas, s.max_replicas
    # The band of :func:`scaler_service.backtest.hpa.within_tolerance`: the pre-1.33 expression when symmetric,
    # 1.33's when not (they differ only when the ratio is exactly the band's edge).
    up_tolerance, down_tolerance = s.scale_up_tolerance, s.scale_down_tolerance
    symmetric = up_tolerance == down_tolerance
    startup = s.pod_startup_s
    legacy = s.legacy_behavior
    up_window = s.scale_up_stabilization_s
    down_window = s.scale_down_stabilization_s
    up_policies = [(p.kind is PolicyKind.PODS, p.value, p.period_s) for p in s.scale_up_policies]
    down_policies = [(p.kind is PolicyKind.PODS, p.value, p.period_s) for p in s.scale_down_policies]
    longest = max(p[2] for p in (*up_policies, *down_policies))
    ceil = math.ceil

    # Scale-down stabilisation: the largest recommendation newer than now - window (monotonic: values decrease
    # from the front). Scale-up stabilisation: the smallest (values increase from the front).
    maxq: deque[tuple[float, int]] = deque()
    minq: deque[tuple[float, int]] = deque()
    up_events: deque[tuple[float, int]] = deque()
    down_events: deque[tuple[float, int]] = deque()

    # Pods: ``ready_pods`` ready ones, then batches [ready_at, count] in creation (= readiness) order.
    ready_pods = s.clamp(initial_replicas)
    pending: deque[list[float]] = deque()
    total = ready_pods

    replicas_out = [0] * n_ticks
    ready_out = [0] * n_ticks
    seen_out = [0.0] * n_ticks
    event_ticks: list[int] = []
    metric = 0.0
    for k in range(n_ticks):
        now = start + k * TICK_S
        if k % tpp == 0:
            metric = metric_list[k // tpp]
        if k % tps == 0:
            current = total
            if current > hi_bound:
                new = hi_bound
            elif current < lo_bound:
                new = lo_bound
            else:
                usage_ratio = metric / (target * current)
                if symmetric:
                    within = abs(1.0 - usage_ratio) <= up_tolerance
                else:
                    within = (1.0 - down_tolerance) <= usage_ratio <= (1.0 + up_tolerance)
                desired = current if within else ceil(metric / target)
                if legacy:
                    cutoff = now - down_window
                    while maxq and maxq[0][0] < cutoff:
                        maxq.popleft()
                    recommendation = max(desired, maxq[0][1]) if maxq else desired
                    while maxq and maxq[-1][1] <= desired:
                        maxq.pop()
                    maxq.append((now, desired))
                    ceiling = min(hi_bound, max(2 * current, 4))
                    new = min(max(recommendation, lo_bound), ceiling)
                else:
                    down_cutoff = now - down_window
                    while maxq and maxq[0][0] <= down_cutoff:
                        maxq.popleft()
                    down_rec = max(desired, maxq[0][1]) if maxq else desired
                    while maxq and maxq[-1][1] <= desired:
                        maxq.pop()
                    maxq.append((now, desired))
                    up_cutoff = now - up_window
                    while minq and minq[0][0] <= up_cutoff:
                        minq.popleft()
                    up_rec = min(desired, minq[0][1]) if minq else desired
                    while minq and minq[-1][1] >= desired:
                        minq.pop()
                    minq.append((now, desired))
                    stabilized = current
                    if stabilized < up_rec:
                        stabilized = up_rec
                    if stabilized > down_rec:
                        stabilized = down_rec
                    new = stabilized
                    if stabilized != current:
                        prune = now - longest
                        while up_events and up_events[0][0] <= prune:
                            up_events.popleft()
                        while down_events and down_events[0][0] <= prune:
                            down_events.popleft()
                        policies = up_policies if stabilized > current else down_policies
                        limit = -(2**31) if stabilized > current else 2**31
                        for is_pods, value, period in policies:
                            cutoff = now - period
                            added = sum(c for ts, c in up_events if ts > cutoff) if up_events else 0
                            deleted = sum(c for ts, c in down_events if ts > cutoff) if down_events else 0
                            period_start = current - added + deleted
                            if stabilized > current:
                                proposed = period_start + value if is_pods else ceil(period_start * (1 + value / 100))
                                limit = max(limit, proposed)
                            else:
                                proposed = period_start - value if is_pods else ceil(period_start * (1 - value / 100))
                                limit = min(limit, proposed)
                        if stabilized > current:
                            new = min(stabilized, hi_bound, max(limit, current))
                        else:
                            new = max(stabilized, lo_bound, min(limit, current))
            if new != current:
                if new > current:
                    up_events.append((now, new - current))
                    pending.append([now + startup, new - current])
                else:
                    down_events.append((now, current - new))
                    drop = current - new
                    while drop and pending:
                        batch = pending[-1]
                        if batch[1] > drop:
                            batch[1] -= drop
                            drop = 0
                        else:
                            drop -= int(batch[1])
                            pending.pop()
                    ready_pods -= drop
                total = new
                event_ticks.append(k)
        while pending and pending[0][0] <= now:
            ready_pods += int(pending.popleft()[1])
        replicas_out[k] = total
        ready_out[k] = ready_pods
        seen_out[k] = metric
    ready = np.asarray(ready_out, dtype=np.int64)
    events = np.zeros(n_ticks, dtype=np.int64)
    events[event_ticks] = 1
    return Simulation(
        start=start,
        replicas=np.asarray(replicas_out, dtype=np.int64),
        ready=ready,
        capacity=ready.astype(np.float64) * s.capacity_per_replica,
        metric=np.asarray(seen_out, dtype=np.float64),
        scale_events=events,
        target_value=target,
    )


__all__ = ["simulate_fast"]
