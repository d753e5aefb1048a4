"""One fetch of one series: the source's latest value (and latency queries) into the series' state.

A fetch updates the recent observations, scores the forecast against the new observation (live accuracy),
rescores a model that changed, watches the latency breaker, asks the cache for a refit when the live accuracy
falls below what the series' ScaledObjects want, and replaces the series' snapshot whole.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from dataclasses import replace

import structlog

from forecasting.serving import ServingModel
from scaler_service.engine.breaker import watch_latency
from scaler_service.engine.series import RECENT_SPAN_S, Series
from scaler_service.engine.types import ModelCacheView
from scaler_service.sources.base import SourceError

log = structlog.get_logger(__name__)

REFIT_REQUEST_COOLDOWN_S = 900.0


def rescore_if_new(series: Series, model: ServingModel | None, generation: int) -> None:
    """Judge a model the series has not been scored with yet on its recent observations."""
    if generation != series.compared_generation or model is None:
        series.rescore(model, series.factor(model), generation)


class SeriesFetcher:
    def __init__(self, cache: ModelCacheView, on_new_step: Callable[[Series, float], None]) -> None:
        self._cache = cache
        self._on_new_step = on_new_step
        self._counter_lock = threading.Lock()
        self.fetches_total = 0
        """Latest-value queries sent to the sources (the series' own query, not latency queries)."""
        self.breaker_events_total = 0

    def fetch(self, series: Series, now: float) -> None:
        """Read the series' latest value and replace its snapshot (or record the failure)."""
        key = series.key
        with self._counter_lock:
            self.fetches_total += 1
        try:
            latest = series.source.fetch_latest(key.query, now)
        except SourceError as exc:
            with series.lock:
                series.failures += 1
                if series.error is None:
                    series.error_since = now
                series.error = exc
                series.last_fetch_at = now
                series.snapshot = replace(series.snapshot, error=exc, error_since=series.error_since, last_fetch_at=now)
            if series.failures in (1, 10) or series.failures % 100 == 0:
                log.warning("series fetch failed", series=series.id, error=str(exc), failures=series.failures)
            return
        if series.failures:
            log.info("series fetch recovered", series=series.id, after_failures=series.failures)
        series.failures = 0
        new_step = False
        with series.lock:
            snap = series.snapshot
            model, generation = self._cache.current(series.id)
            factor = snap.factor
            if generation != series.compared_generation:
                factor = series.factor(model)
                rescore_if_new(series, model, generation)
            # NaN (e.g. 0/0) is a missing value, not zero: it does not refresh the data's age.
            if latest is not None and (not math.isfinite(latest[0]) or math.isnan(latest[1])):
                latest = None
            if latest is not None:
                ts, value = latest
                if series.latest is None or ts > series.latest[0]:
                    bucket = int(ts // key.step_s)
                    # Forecast-vs-actual and observe records count once per step, however often we fetch.
                    if bucket not in series.obs:
                        new_step = True
                        series.compare(model, factor, bucket, value)
                    series.add_observation(bucket, value)
                    series.latest = latest
            if not series.seeded and latest is not None:
                self._seed(series, now)
            series.prune(now)
            series.error = None
            series.error_since = None
            series.last_fetch_at = now
            series.snapshot = series.build_snapshot(model, now)
        self._watch_latency(series, now)
        self._maybe_request_refit(series, now)
        if new_step and latest is not None:
            self._on_new_step(series, latest[0])

    def _seed(self, series: Series, now: float) -> None:
        """Fill recent observations with one range query so anchoring and the breaker peak work at once."""
        key = series.key
        try:
            samples = series.source.fetch_range(key.query, now - RECENT_SPAN_S, now, key.step_s)
        except SourceError as exc:
            log.info("recent history not available yet", series=series.id, error=str(exc))
            return
        series.seed(samples.timestamps, samples.values)

    def _watch_latency(self, series: Series, now: float) -> None:
        if not series.latency_watches:
            return
        changed, events = watch_latency(series.id, series.source, series.latency_watches, now)
        with self._counter_lock:
            self.breaker_events_total += events
        if changed:
            with series.lock:
                series.snapshot = replace(series.snapshot, breakers=dict(series.latency_watches))

    def _maybe_request_refit(self, series: Series, now: float) -> None:
        snap = series.snapshot
        live = snap.live.confidence
        if live is None or snap.model is None:
            return
        wanted = max((s.spec.min_confidence for s in list(series.subscriptions.values())), default=1.0)
        if live < wanted and now - series.last_refit_request > REFIT_REQUEST_COOLDOWN_S:
            series.last_refit_request = now
            started = self._cache.request_refit(series.id)
            gate = snap.live.gate_confidence
            log.warning(
                "live accuracy below minConfidence: refitting"
                + ("; serving reactively (the forecast runs high)" if gate is not None and gate < wanted else ""),
                series=series.id,
                live_confidence=round(live, 3),
                live_overshoot=None if snap.live.overshoot is None else round(snap.live.overshoot, 3),
                min_confidence=wanted,
                refit_started=started,
            )


__all__ = ["REFIT_REQUEST_COOLDOWN_S", "SeriesFetcher", "rescore_if_new"]
