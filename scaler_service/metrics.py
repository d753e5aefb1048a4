"""Prometheus metrics of the scaler, on a registry passed in (never the global one).

Per-series and per-ScaledObject gauges are computed at scrape time from the engine's snapshots, so the
request path only pays for one histogram observation.

A scrape stays small however many ScaledObjects there are: per-ScaledObject gauges are exported for the
first ``max_subscriptions`` triggers in (namespace, name, metric) order, and per-series gauges for their
series only; the others are in /forecast. ``foresight_subscriptions{mode,reason}`` counts every trigger, and
``foresight_subscriptions_not_exported`` says how many were left out.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterable
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from scaler_service.decision import Mode
from scaler_service.engine import SeriesEngine
from scaler_service.store.base import StoreMode
from scaler_service.version import package_version

DEFAULT_METRICS_MAX_SUBSCRIPTIONS = 250
RPC_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
FIT_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)


class CacheView(Protocol):
    def __len__(self) -> int: ...


class ScalerMetrics:
    """The metrics the handlers and the fit callback update directly."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.rpc_seconds = Histogram(
            "foresight_rpc_duration_seconds",
            "Handler time of successful ExternalScaler calls",
            ["method"],
            buckets=RPC_BUCKETS,
            registry=registry,
        )
        self.rpc_errors = Counter(
            "foresight_rpc_errors",
            "ExternalScaler calls answered with an error status",
            ["method", "code"],
            registry=registry,
        )
        self.open_streams = Gauge("foresight_open_streams", "Open StreamIsActive streams", registry=registry)
        self.fit_seconds = Histogram(
            "foresight_fit_duration_seconds", "Duration of model fits", buckets=FIT_BUCKETS, registry=registry
        )
        self.fits = Counter("foresight_fits", "Model fits by outcome", ["outcome"], registry=registry)
        # The version as a label, so a dashboard shows which versions run during a rolling upgrade.
        self.build_info = Gauge(
            "foresight_build_info", "1, labelled with the running version", ["version"], registry=registry
        )
        self.build_info.labels(version=package_version()).set(1)
        self.series_refused = Counter(
            "foresight_series_refused",
            "Requests refused because a cap on series or subscriptions was reached, by the cap's setting",
            ["reason"],
            registry=registry,
        )


class EngineCollector(Collector):
    """Per-series and per-ScaledObject gauges read from the engine at scrape time."""

    def __init__(
        self,
        engine: SeriesEngine,
        cache: CacheView,
        cache_bytes: Callable[[], int] | None = None,
        clock: Callable[[], float] = time.time,
        max_subscriptions: int = DEFAULT_METRICS_MAX_SUBSCRIPTIONS,
    ) -> None:
        self._max_subscriptions = max_subscriptions
        self._engine = engine
        self._cache = cache
        self._cache_bytes = cache_bytes
        self._clock = clock

    def collect(self) -> Iterable[Metric]:
        now = self._clock()
        all_subs = self._engine.subscriptions()
        counts: dict[tuple[str, str], int] = {}
        for sub in all_subs:
            why = "none" if sub.last_served is None else sub.last_served.reason.value
            counts[(sub.spec.mode.value, why)] = counts.get((sub.spec.mode.value, why), 0) + 1
        subscriptions = GaugeMetricFamily(
            "foresight_subscriptions",
            "ScaledObject triggers followed, by mode and the reason of the last value served (none: not yet)",
            labels=["mode", "reason"],
        )
        for (mode_name, why), n in sorted(counts.items()):
            subscriptions.add_metric([mode_name, why], float(n))
        shown = sorted(all_subs, key=lambda x: (x.key.namespace, x.key.name, x.key.metric))[: self._max_subscriptions]
        shown_series = {sub.spec.series_key.id for sub in shown}
        not_exported = GaugeMetricFamily(
            "foresight_subscriptions_not_exported",
            "ScaledObject triggers beyond --metrics-max-subscriptions: no per-ScaledObject gauges (see /forecast)",
        )
        not_exported.add_metric([], float(len(all_subs) - len(shown)))
        yield subscriptions
        yield not_exported
        s = ["series"]
        observed = GaugeMetricFamily("foresight_series_observed", "Latest observed value", labels=s)
        age = GaugeMetricFamily("foresight_series_data_age_seconds", "Age of the newest data point", labels=s)
        forecast = GaugeMetricFamily("foresight_series_forecast", "Anchored point forecast for now", labels=s)
        model_age = GaugeMetricFamily(
            "foresight_series_model_age_seconds", "Seconds since the model was fitted", labels=[*s, "model"]
        )
        confidence = GaugeMetricFamily(
            "foresight_series_model_confidence", "Backtest confidence of the model (1 - WAPE of window means)", labels=s
        )
        over_conf = GaugeMetricFamily(
            "foresight_series_model_over_forecast_confidence",
            "1 - the backtest's over-forecast error (what the serving gate judges)",
            labels=s,
        )
        live_conf = GaugeMetricFamily(
            "foresight_series_live_confidence", "1 - live forecast error (WAPE of window means)", labels=s
        )
        error = GaugeMetricFamily(
            "foresight_series_forecast_error",
            "Live forecast error: WAPE of 10-min window means, last 12 windows",
            labels=s,
        )
        overshoot = GaugeMetricFamily(
            "foresight_series_forecast_overshoot",
            "Over-forecast part of the live error (what the serving gate judges): sum max(0, f - a) / sum a",
            labels=s,
        )
        misses = GaugeMetricFamily(
            "foresight_series_misses_over_20pct",
            "Windows (of the last 12) whose mean forecast was more than 20% off",
            labels=s,
        )
        recent_misses = GaugeMetricFamily(
            "foresight_series_misses_over_20pct_last_hour",
            "Windows of the last hour (6 of 10 minutes) whose mean forecast was more than 20% off",
            labels=s,
        )
        fetch_ok = GaugeMetricFamily("foresight_series_fetch_ok", "1 when the last fetch succeeded", labels=s)
        breaker = GaugeMetricFamily(
            "foresight_circuit_breaker_open",
            "1 while the latency breaker is open",
            labels=[*s, "latency_query"],
        )
        for _key, sid, snap in self._engine.series_snapshots():
            if sid not in shown_series:
                continue
            fetch_ok.add_metric([sid], 0.0 if snap.error is not None else 1.0)
            if snap.latest is not None:
                observed.add_metric([sid], _f(snap.latest[1]))
                age.add_metric([sid], now - snap.latest[0])
            if snap.model is not None:
                model_age.add_metric([sid, snap.model.name], now - snap.model.fitted_at)
                confidence.add_metric([sid], snap.model.confidence)
                over_conf.add_metric([sid], snap.model.over_forecast_confidence)
                with contextlib.suppress(LookupError):
                    forecast.add_metric([sid], _f(snap.model.curve.value_at(now) * snap.factor))
            if snap.live.confidence is not None:
                live_conf.add_metric([sid], snap.live.confidence)
            if snap.live.wmape is not None:
                error.add_metric([sid], snap.live.wmape)
            if snap.live.overshoot is not None:
                overshoot.add_metric([sid], snap.live.overshoot)
            misses.add_metric([sid], float(snap.live.misses_over_20))
            recent_misses.add_metric([sid], float(snap.live.recent_misses_over_20))
            for (query, _slo), state in snap.breakers.items():
                breaker.add_metric([sid, query], 1.0 if state.open else 0.0)
        o = ["namespace", "name", "metric", "series"]
        served = GaugeMetricFamily("foresight_served_value", "Value last served to KEDA", labels=o)
        predictive = GaugeMetricFamily("foresight_predictive_value", "What predictive mode serves", labels=o)
        mode = GaugeMetricFamily("foresight_mode", "1 for the trigger's mode", labels=[*o, "mode"])
        reason = GaugeMetricFamily(
            "foresight_served_reason", "1 for why the last value was served", labels=[*o, "reason"]
        )
        for sub in shown:
            sid = sub.spec.series_key.id
            labels = [sub.key.namespace, sub.key.name, sub.key.metric, sid]
            for m in Mode:
                mode.add_metric([*labels, m.value], 1.0 if sub.spec.mode is m else 0.0)
            if sub.last_served is not None:
                served.add_metric(labels, sub.last_served.value)
                predictive.add_metric(labels, sub.last_served.predictive_value)
                reason.add_metric([*labels, sub.last_served.reason.value], 1.0)
        cache_entries = GaugeMetricFamily("foresight_model_cache_entries", "Models in the cache")
        cache_entries.add_metric([], float(len(self._cache)))
        breaker_events = CounterMetricFamily(
            "foresight_circuit_breaker_events", "Latency circuit breaker openings and closings"
        )
        breaker_events.add_metric([], float(self._engine.breaker_events_total))
        yield breaker_events
        fetches = CounterMetricFamily(
            "foresight_fetches", "Latest-value queries this replica sent to its data sources (one per series per step)"
        )
        fetches.add_metric([], float(self._engine.fetches_total))
        yield fetches
        store = self._engine.store
        if store.shared:
            up = GaugeMetricFamily(
                "foresight_shared_store_up",
                "1 while this replica reaches the shared store and shares work; 0 while it works alone",
            )
            up.add_metric([], 1.0 if store.mode(now) is StoreMode.SHARED else 0.0)
            yield up
            lost = CounterMetricFamily(
                "foresight_shared_store_leases_lost",
                "Claims on a fetch or fit this replica lost before the work finished (the work may be done twice)",
            )
            lost.add_metric([], float(store.leases_lost_total))
            yield lost
        series_count = GaugeMetricFamily("foresight_series", "Distinct series followed")
        series_count.add_metric([], float(len(self._engine)))
        yield from (
            observed,
            age,
            forecast,
            model_age,
            confidence,
            over_conf,
            live_conf,
            overshoot,
            error,
            misses,
            recent_misses,
            fetch_ok,
            breaker,
            served,
            predictive,
            mode,
            reason,
            cache_entries,
            series_count,
        )
        if self._cache_bytes is not None:
            cache_b = GaugeMetricFamily("foresight_model_cache_bytes", "Bytes of models in the cache")
            cache_b.add_metric([], float(self._cache_bytes()))
            yield cache_b


def _f(x: float) -> float:
    return x if math.isfinite(x) else math.nan


class GrpcConnectionsCollector(Collector):
    """Client connections the aio gRPC server has seen (new peer addresses): with ``max_connection_age`` they
    are recycled, so this keeps growing while KEDA's client reconnects (and re-resolves the Service)."""

    def __init__(self, connections_seen: Callable[[], int]) -> None:
        self._connections_seen = connections_seen

    def collect(self) -> Iterable[Metric]:
        yield CounterMetricFamily(
            "foresight_grpc_connections",
            "Client connections seen by the gRPC server (recycled after --max-connection-age)",
            value=self._connections_seen(),
        )


__all__ = [
    "DEFAULT_METRICS_MAX_SUBSCRIPTIONS",
    "CacheView",
    "EngineCollector",
    "GrpcConnectionsCollector",
    "ScalerMetrics",
]
