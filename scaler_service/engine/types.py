"""The engine's values: what a request reads (snapshots), who asks (subscriptions), and why it cannot be served."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from forecasting.serving import ServingModel
from forecasting.store import StoredModel
from scaler_service.decision import LiveAccuracy, ServedValue
from scaler_service.sources.base import FloatArray, SourceError
from scaler_service.trigger import TriggerSpec

RECORDS_KEPT = 2880


class Stale(Exception):
    """The newest data point of a series is too old to serve."""


class NoData(Exception):
    """The query has never returned any data."""


class CapacityExceeded(Exception):
    """Following one more series or subscription would pass a configured cap (``setting`` names it)."""

    def __init__(self, setting: str, cap: int, what: str) -> None:
        super().__init__(
            f"this scaler follows at most {cap} {what} ({setting}={cap}) and is at the cap: "
            f"reuse an existing query, remove unused ScaledObjects, or raise {setting}"
        )
        self.setting = setting
        self.cap = cap


@dataclass(frozen=True, slots=True)
class BreakerEvent:
    at: float
    opened: bool
    latency: float
    slo: float


@dataclass(frozen=True, slots=True)
class BreakerState:
    open: bool = False
    latency: float | None = None
    latency_ts: float | None = None
    since: float | None = None
    error: str | None = None
    events: tuple[BreakerEvent, ...] = ()


EMPTY = np.zeros(0, dtype=np.float64)


@dataclass(frozen=True, slots=True)
class SeriesSnapshot:
    latest: tuple[float, float] | None = None
    model: ServingModel | None = None
    factor: float = 1.0
    recent_start: float | None = None
    recent: FloatArray = field(default_factory=lambda: EMPTY)
    """Observations on the step grid from ``recent_start`` (NaN where missing)."""
    recent_peak: float = 0.0
    live: LiveAccuracy = field(default_factory=LiveAccuracy)
    error: SourceError | None = None
    """The failure of the most recent fetch, cleared by the next success."""
    error_since: float | None = None
    last_fetch_at: float | None = None
    breakers: Mapping[tuple[str, float], BreakerState] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class SubscriptionKey:
    namespace: str
    name: str
    metric: str


@dataclass(slots=True)
class Subscription:
    key: SubscriptionKey
    spec: TriggerSpec
    last_requested: float
    records: deque[tuple[float, float, float, float]] = field(default_factory=lambda: deque(maxlen=RECORDS_KEPT))
    last_served: ServedValue | None = None


class ModelCacheView(Protocol):
    """What the engine needs of :class:`forecasting.cache.ModelCache`."""

    def get(self, key: str) -> ServingModel | None: ...

    def generation(self, key: str) -> int: ...

    def current(self, key: str) -> tuple[ServingModel | None, int]: ...

    def adopt(self, key: str, stored: StoredModel) -> bool: ...

    def register(
        self,
        key: str,
        fit_fn: Callable[[str, ServingModel | None], ServingModel],
        *,
        refit_interval_s: float | None = None,
    ) -> None: ...

    def unregister(self, key: str) -> None: ...

    def request_refit(self, key: str) -> bool: ...


__all__ = [
    "BreakerEvent",
    "BreakerState",
    "CapacityExceeded",
    "ModelCacheView",
    "NoData",
    "SeriesSnapshot",
    "Stale",
    "Subscription",
    "SubscriptionKey",
]
