"""The inside of the scaler, one job per module:

- :mod:`~scaler_service.engine.core`: :class:`SeriesEngine`, the request path, registration and claiming each
  fetch (with a shared store);
- :mod:`~scaler_service.engine.fetch`: one fetch of one series, its live scoring and refit requests;
- :mod:`~scaler_service.engine.scheduler`: when each series is fetched next (a heap, a thread, a pool);
- :mod:`~scaler_service.engine.series`: one series' state and the computations on its recent observations;
- :mod:`~scaler_service.engine.breaker`: the latency circuit breaker;
- :mod:`~scaler_service.engine.records`: observe mode's records;
- :mod:`~scaler_service.engine.fitting`: the fit functions the model cache runs;
- :mod:`~scaler_service.engine.mirror`: the local mirror's refresh from a shared store;
- :mod:`~scaler_service.engine.types`: snapshots, subscriptions and the errors a request can get.

Live scoring is :func:`scaler_service.decision.compare_forecast` and :func:`~scaler_service.decision.live_accuracy`,
shared with the capacity backtest.
"""

from scaler_service.decision import LiveAccuracy
from scaler_service.engine.breaker import BREAKER_OPEN_RATIO
from scaler_service.engine.core import STALE_MIN_S, EngineSettings, OptOutReader, SeriesEngine
from scaler_service.engine.fetch import REFIT_REQUEST_COOLDOWN_S
from scaler_service.engine.fitting import FitFactory, FitFunction, default_fit_factory
from scaler_service.engine.records import RECORDS_HEADER, record_path
from scaler_service.engine.series import (
    MAX_COMPARED_PER_WINDOW,
    MAX_RECENT_POINTS,
    RECENT_PEAK_WINDOW_S,
    RECENT_SPAN_S,
)
from scaler_service.engine.types import (
    BreakerEvent,
    BreakerState,
    CapacityExceeded,
    ModelCacheView,
    NoData,
    SeriesSnapshot,
    Stale,
    Subscription,
    SubscriptionKey,
)
from scaler_service.sources.base import QueryError

__all__ = [
    "BREAKER_OPEN_RATIO",
    "MAX_COMPARED_PER_WINDOW",
    "MAX_RECENT_POINTS",
    "RECENT_PEAK_WINDOW_S",
    "RECENT_SPAN_S",
    "RECORDS_HEADER",
    "REFIT_REQUEST_COOLDOWN_S",
    "STALE_MIN_S",
    "BreakerEvent",
    "BreakerState",
    "CapacityExceeded",
    "EngineSettings",
    "FitFactory",
    "FitFunction",
    "LiveAccuracy",
    "ModelCacheView",
    "NoData",
    "OptOutReader",
    "QueryError",
    "SeriesEngine",
    "SeriesSnapshot",
    "Stale",
    "Subscription",
    "SubscriptionKey",
    "default_fit_factory",
    "record_path",
]
