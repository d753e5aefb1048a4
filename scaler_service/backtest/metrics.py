"""Cost and service level of one simulated strategy over the evaluation window.

All figures are over the evaluation ticks only (15 s each):

- ``replica_hours``: pods that exist (ready or starting) x time, in hours. What is paid for.
- ``underprovisioned_minutes``: time with demand above ready capacity.
- ``unserved_demand``: the area between demand and ready capacity where demand is above it, in
  value x minutes (for a rate per minute: the requests that found no capacity).
- ``worst_shortfall``: the largest demand - ready capacity (0 when never short).
- ``scaling_events``: HPA syncs that changed the replica count.

Lead time gained on ramps (for strategies compared with reactive): a ramp starts at each upward crossing of
demand over reactive's ready capacity, at time ``s`` (stretches of reactive under-provisioning closer than
5 minutes apart count as one). Reactive answers by scaling up: its ready capacity first rises above its level
at ``s`` at time ``t_R``, to level ``C``. The other strategy had ``C`` from ``t_X``: the start of its
uninterrupted stretch at or above ``C`` that contains ``t_R`` (not earlier than ``s - lead``, so capacity
that was simply never released does not count as foresight), or, when it was below ``C`` at ``t_R``, the
first time after it reaches ``C``. Gained lead = ``t_R - t_X`` (positive = the capacity was ready earlier
than reactive's). Crossings after which reactive adds no capacity within 60 minutes (a blip that passed)
are not ramps; a strategy that does not reach ``C`` within 60 minutes of ``t_R`` counts with that bound.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from scaler_service.backtest.hpa import TICK_S, Simulation
from scaler_service.backtest.trace import FloatArray

RAMP_MERGE_S = 300.0
RAMP_SEARCH_S = 3600.0


@dataclass(frozen=True, slots=True)
class LeadStats:
    ramps: int
    median_min: float
    mean_min: float
    ready_before_crossing: int
    """Ramps where the strategy already had reactive's answer capacity when reactive fell short."""

    def as_dict(self) -> dict[str, float | int]:
        return {
            "ramps": self.ramps,
            "median_min": round(self.median_min, 2),
            "mean_min": round(self.mean_min, 2),
            "ready_before_crossing": self.ready_before_crossing,
        }


@dataclass(frozen=True, slots=True)
class StrategyMetrics:
    name: str
    replica_hours: float
    underprovisioned_minutes: float
    unserved_demand: float
    worst_shortfall: float
    scaling_events: int
    mean_replicas: float
    max_replicas: int
    eval_minutes: float

    def as_dict(self) -> dict[str, float | int | str]:
        return {
            "name": self.name,
            "replica_hours": round(self.replica_hours, 3),
            "underprovisioned_minutes": round(self.underprovisioned_minutes, 2),
            "unserved_demand": round(self.unserved_demand, 3),
            "worst_shortfall": round(self.worst_shortfall, 3),
            "scaling_events": self.scaling_events,
            "mean_replicas": round(self.mean_replicas, 3),
            "max_replicas": self.max_replicas,
        }


def evaluate(name: str, sim: Simulation, demand_at_ticks: FloatArray, *, eval_from: int = 0) -> StrategyMetrics:
    """The figures of ``sim`` over ticks ``[eval_from, end)``."""
    if len(demand_at_ticks) != len(sim.replicas):
        raise ValueError(f"demand has {len(demand_at_ticks)} ticks, the simulation {len(sim.replicas)}")
    demand = demand_at_ticks[eval_from:]
    capacity = sim.capacity[eval_from:]
    replicas = sim.replicas[eval_from:]
    short = np.maximum(demand - capacity, 0.0)
    tick_min = TICK_S / 60.0
    n = len(demand)
    return StrategyMetrics(
        name=name,
        replica_hours=float(replicas.sum()) * TICK_S / 3600.0,
        underprovisioned_minutes=float(np.count_nonzero(short > 0)) * tick_min,
        unserved_demand=float(short.sum()) * tick_min,
        worst_shortfall=float(short.max()) if n else 0.0,
        scaling_events=int(sim.scale_events[eval_from:].sum()),
        mean_replicas=float(replicas.mean()) if n else 0.0,
        max_replicas=int(replicas.max()) if n else 0,
        eval_minutes=n * tick_min,
    )


def _ramp_starts(under: np.ndarray, merge_ticks: int) -> list[int]:
    edges = np.diff(np.concatenate(([0], under.astype(np.int8), [0])))
    starts = np.flatnonzero(edges == 1)
    ends = np.flatnonzero(edges == -1)
    out: list[int] = []
    last_end = -(10**12)
    for s, e in zip(starts.tolist(), ends.tolist(), strict=True):
        if s - last_end >= merge_ticks:
            out.append(s)
        last_end = e
    return out


def lead_gained(
    demand_at_ticks: FloatArray,
    reactive_capacity: FloatArray,
    other_capacity: FloatArray,
    *,
    lead_s: float,
    eval_from: int = 0,
) -> LeadStats:
    """Minutes by which ``other`` had the capacity before reactive on reactive's ramps (see module docs)."""
    demand = demand_at_ticks[eval_from:]
    react = reactive_capacity[eval_from:]
    other = other_capacity[eval_from:]
    n = len(demand)
    merge = int(RAMP_MERGE_S / TICK_S)
    search = int(RAMP_SEARCH_S / TICK_S)
    back = math.floor(lead_s / TICK_S)
    gains: list[float] = []
    before = 0
    for s in _ramp_starts(demand > react, merge):
        stop = min(n, s + search + 1)
        rises = np.flatnonzero(react[s:stop] > react[s])
        if len(rises) == 0:
            continue
        t_r = s + int(rises[0])
        level = react[t_r]
        if other[t_r] >= level:
            t_x = t_r
            floor = max(0, s - back)
            while t_x > floor and other[t_x - 1] >= level:
                t_x -= 1
            if t_x <= s:
                before += 1
        else:
            stop_x = min(n, t_r + search + 1)
            hit = np.flatnonzero(other[t_r:stop_x] >= level)
            t_x = t_r + (int(hit[0]) if len(hit) else search)
        gains.append((t_r - t_x) * TICK_S / 60.0)
    if not gains:
        return LeadStats(0, 0.0, 0.0, 0)
    arr = np.asarray(gains)
    return LeadStats(len(gains), float(np.median(arr)), float(arr.mean()), before)


BURST_WINDOW_S = 600.0
BURST_RATIO = 1.5
"""Demand at least this many times the mean of the ``BURST_WINDOW_S`` before it counts as a burst."""


@dataclass(frozen=True, slots=True)
class ShortfallCauses:
    """Where a strategy's under-provisioning came from (for the verdict)."""

    tolerance_share: float
    """Share of the under-provisioned time with every pod ready and the HPA's metric within its tolerance of
    the current replicas: demand a little above capacity that the HPA, by design, does not scale for."""
    worst_at: float
    worst_demand: float
    worst_capacity: float
    mean_before_worst: float
    """Mean demand over the ``BURST_WINDOW_S`` before the worst shortfall."""
    worst_in_band: bool

    @property
    def worst_is_burst(self) -> bool:
        return self.mean_before_worst > 0 and self.worst_demand >= BURST_RATIO * self.mean_before_worst


def shortfall_causes(
    sim: Simulation, demand_at_ticks: FloatArray, *, tolerance: float, eval_from: int = 0
) -> ShortfallCauses | None:
    """None when the strategy was never short over ticks ``[eval_from, end)``."""
    demand = demand_at_ticks[eval_from:]
    capacity = sim.capacity[eval_from:]
    short = demand > capacity
    if not short.any():
        return None
    replicas = sim.replicas[eval_from:]
    asked = sim.metric[eval_from:] / sim.target_value
    in_band = (sim.ready[eval_from:] == replicas) & (asked <= (1 + tolerance) * replicas)
    worst = int(np.argmax(demand - capacity))
    at = eval_from + worst
    before = demand_at_ticks[max(0, at - int(BURST_WINDOW_S / TICK_S)) : at]
    return ShortfallCauses(
        tolerance_share=float(np.count_nonzero(short & in_band) / np.count_nonzero(short)),
        worst_at=sim.start + at * TICK_S,
        worst_demand=float(demand[worst]),
        worst_capacity=float(capacity[worst]),
        mean_before_worst=float(before.mean()) if len(before) else math.nan,
        worst_in_band=bool(in_band[worst]),
    )


__all__ = ["LeadStats", "ShortfallCauses", "StrategyMetrics", "evaluate", "lead_gained", "shortfall_causes"]
