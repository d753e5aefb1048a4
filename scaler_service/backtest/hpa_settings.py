"""What an HPA is configured with: the ``spec.behavior`` policies, stabilisation windows and tolerances, the
bounds and the pods' start-up, as :mod:`scaler_service.backtest.hpa` emulates them (defaults: Kubernetes' and
KEDA's)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum

TICK_S = 15.0
"""Simulation resolution: the HPA's default sync period."""


class PolicyKind(StrEnum):
    PODS = "Pods"
    PERCENT = "Percent"


@dataclass(frozen=True, slots=True)
class ScalingPolicy:
    kind: PolicyKind
    value: int
    period_s: float

    def __post_init__(self) -> None:
        if self.value <= 0:
            raise ValueError(f"scaling policy value must be > 0, got {self.value}")
        if self.period_s <= 0:
            raise ValueError(f"scaling policy period must be > 0 s, got {self.period_s}")


DEFAULT_SCALE_UP = (
    ScalingPolicy(PolicyKind.PODS, 4, 15.0),
    ScalingPolicy(PolicyKind.PERCENT, 100, 15.0),
)
DEFAULT_SCALE_DOWN = (ScalingPolicy(PolicyKind.PERCENT, 100, 15.0),)
DEFAULT_TOLERANCE = 0.1
"""The cluster-wide tolerance (``--horizontal-pod-autoscaler-tolerance``), either way."""


@dataclass(frozen=True, slots=True)
class HpaSettings:
    target_value: float
    """The HPA's ``AverageValue`` target (the trigger's ``threshold``)."""
    min_replicas: int = 1
    max_replicas: int = 100
    capacity_per_replica_value: float | None = None
    """Demand one ready replica serves; None = ``target_value``."""
    pod_startup_s: float = 0.0
    scale_up_tolerance: float = DEFAULT_TOLERANCE
    scale_down_tolerance: float = DEFAULT_TOLERANCE
    sync_period_s: float = TICK_S
    keda_poll_s: float = 30.0
    scale_up_stabilization_s: float = 0.0
    scale_down_stabilization_s: float = 300.0
    scale_up_policies: tuple[ScalingPolicy, ...] = DEFAULT_SCALE_UP
    scale_down_policies: tuple[ScalingPolicy, ...] = DEFAULT_SCALE_DOWN
    legacy_behavior: bool = False
    """Emulate an HPA without ``spec.behavior`` (Kubernetes' older normalisation; see the module docs)."""

    def __post_init__(self) -> None:
        if not (math.isfinite(self.target_value) and self.target_value > 0):
            raise ValueError(f"target value must be a finite number > 0, got {self.target_value}")
        if self.capacity_per_replica_value is not None and not (
            math.isfinite(self.capacity_per_replica_value) and self.capacity_per_replica_value > 0
        ):
            raise ValueError(f"capacity per replica must be > 0, got {self.capacity_per_replica_value}")
        if self.min_replicas < 1:
            raise ValueError(f"min replicas must be >= 1 (scale to zero is not emulated), got {self.min_replicas}")
        if self.max_replicas < self.min_replicas:
            raise ValueError(f"max replicas {self.max_replicas} < min replicas {self.min_replicas}")
        for name in ("scale_up_tolerance", "scale_down_tolerance"):
            value = getattr(self, name)
            if not 0 <= value < 1:
                raise ValueError(f"{name} must be in [0, 1), got {value}")
        if self.pod_startup_s < 0:
            raise ValueError(f"pod start-up must be >= 0 s, got {self.pod_startup_s}")
        for name in ("sync_period_s", "keda_poll_s"):
            value = getattr(self, name)
            ratio = value / TICK_S
            if value <= 0 or abs(ratio - round(ratio)) > 1e-9:
                raise ValueError(f"{name} must be a positive multiple of {TICK_S:.0f} s, got {value}")
        if not self.scale_up_policies or not self.scale_down_policies:
            raise ValueError("at least one scale-up and one scale-down policy are needed")

    @property
    def capacity_per_replica(self) -> float:
        return self.target_value if self.capacity_per_replica_value is None else self.capacity_per_replica_value

    @property
    def ticks_per_poll(self) -> int:
        return round(self.keda_poll_s / TICK_S)

    @property
    def ticks_per_sync(self) -> int:
        return round(self.sync_period_s / TICK_S)

    def clamp(self, replicas: int) -> int:
        return min(max(replicas, self.min_replicas), self.max_replicas)


__all__ = [
    "DEFAULT_SCALE_DOWN",
    "DEFAULT_SCALE_UP",
    "DEFAULT_TOLERANCE",
    "TICK_S",
    "HpaSettings",
    "PolicyKind",
    "ScalingPolicy",
]
