"""The series engine: one background fetch per distinct series, and a memory read per request.

Each series (``SeriesKey``: address, query, step) is fetched every step by the scheduler and a small thread pool;
its model is fitted and refitted by the model cache in the background. What a request needs is kept in an
immutable :class:`SeriesSnapshot` that the fetch replaces whole, so a request is a dictionary lookup, a snapshot
read and :func:`scaler_service.decision.decide_served_value`: no PromQL, no fit, no disk, no store.

With a shared store (several replicas) each fetch is first claimed in the store: the replica that wins fetches,
continuing from the state the previous fetcher handed on, and hands its own on; the others refresh their mirror
from the store. While the store is unreachable a replica fetches alone for the outage grace, then stops (its
data turns stale and is refused, never served as a silent zero).

Bounds: at most ``max_series`` series and ``max_subscriptions`` ScaledObject triggers are followed (a request
beyond either is refused with :class:`CapacityExceeded`); a subscription not polled for
``subscription_idle_s`` and a series nobody asked about for ``idle_drop_s`` are dropped; every fetch runs on
a daemon worker with a deadline (``fetch_deadline_s``): one that overruns it marks its series unavailable and
its worker is replaced, and :meth:`SeriesEngine.stop` never waits on a fetch beyond its timeout.
"""

from __future__ import annotations

import contextlib
import random
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

import structlog

from forecasting.store import NotDue, StoreUnavailable
from scaler_service.decision import LIVE_WINDOW_S, Mode, ServedValue, decide_served_value
from scaler_service.engine.fetch import SeriesFetcher, rescore_if_new
from scaler_service.engine.fitting import FitFactory
from scaler_service.engine.mirror import MirrorRefresh, apply_changes, await_shared_state, join_shared
from scaler_service.engine.records import append_record
from scaler_service.engine.scheduler import FetchScheduler
from scaler_service.engine.series import Series
from scaler_service.engine.types import (
    BreakerState,
    CapacityExceeded,
    ModelCacheView,
    NoData,
    SeriesSnapshot,
    Stale,
    Subscription,
    SubscriptionKey,
)
from scaler_service.sources.base import DataSource, SourceUnavailable
from scaler_service.store.base import FetchClaim, SharedStore, StoreMode
from scaler_service.store.memory import MemoryStore
from scaler_service.trigger import SeriesKey, TriggerSpec, format_duration

log = structlog.get_logger(__name__)

STALE_MIN_S = 900.0
"""Data older than max(3 steps, this) is stale."""
CLAIM_SPREAD_S = 0.1
"""Replicas that find a fetch due try to claim it up to this much apart, so the winner varies."""
SHARED_STATE_WAIT_S = 0.5
"""A replica new to a series whose first claim lost waits this long for the winner's state, then fetches once
itself: a fetch worker is not held longer when thousands of series arrive at once (a restart of the fleet)."""


class OptOutReader(Protocol):
    def is_opted_out(self, namespace: str, name: str) -> bool: ...


@dataclass(frozen=True, slots=True)
class EngineSettings:
    fetch_interval_s: float | None = None
    """None: each series is fetched every queryStep."""
    idle_drop_s: float = 1200.0
    subscription_idle_s: float = 600.0
    """A ScaledObject trigger not polled for this long is forgotten (its series stays while others poll it)."""
    max_series: int = 10_000
    max_subscriptions: int = 20_000
    fetch_deadline_s: float = 30.0
    """A fetch (a tick of one series) still running after this long is abandoned: its series is reported
    unavailable and its worker replaced, so one stuck source never starves the others."""
    fetch_workers: int = 4
    default_refit_interval_s: float = 3600.0
    first_fetch_max_wait_s: float = 2.0
    live_window_s: float = LIVE_WINDOW_S
    """Forecast-vs-actual compares means over windows this long (the serving window of the backtest)."""
    records_dir: Path | None = None
    mirror_interval_s: float = 0.25
    """How often a replica sharing a store polls it for series other replicas changed."""


class SeriesEngine:
    def __init__(
        self,
        *,
        source_for: Callable[[str], DataSource],
        cache: ModelCacheView,
        fit_factory: FitFactory,
        settings: EngineSettings = EngineSettings(),
        opt_out: OptOutReader | None = None,
        clock: Callable[[], float] = time.time,
        store: SharedStore | None = None,
    ) -> None:
        self._source_for = source_for
        self._cache = cache
        self._fit_factory = fit_factory
        self._settings = settings
        self._opt_out = opt_out
        self._clock = clock
        self._store: SharedStore = store if store is not None else MemoryStore()
        self._series: dict[SeriesKey, Series] = {}
        self._by_id: dict[str, Series] = {}
        self._subs: dict[SubscriptionKey, Subscription] = {}
        self._lock = threading.Lock()
        self._scheduler: FetchScheduler[SeriesKey] = FetchScheduler(
            workers=settings.fetch_workers,
            run=self._run_key,
            clock=clock,
            housekeeping=self._drop_idle,
            housekeeping_every_s=min(10.0, settings.idle_drop_s / 2, settings.subscription_idle_s / 2),
            deadline_s=settings.fetch_deadline_s,
            on_overdue=self._fetch_overdue,
        )
        self._mirror = (
            MirrorRefresh(self._store, self._apply_changes, settings.mirror_interval_s) if self._store.shared else None
        )
        self._fetcher = SeriesFetcher(cache, on_new_step=self._record)
        self._rng = random.Random()

    @property
    def fetches_total(self) -> int:
        """Latest-value queries this replica sent to its sources (the series' own query, not latency queries)."""
        return self._fetcher.fetches_total

    @property
    def breaker_events_total(self) -> int:
        return self._fetcher.breaker_events_total

    @property
    def store(self) -> SharedStore:
        return self._store

    # --- lifecycle --------------------------------------------------------------------------------

    def start(self) -> None:
        self._scheduler.start()
        if self._mirror is not None:
            self._mirror.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop fetching. Returns within ``timeout`` whatever a fetch is doing (workers are daemon threads)."""
        deadline = time.monotonic() + timeout
        if self._mirror is not None:
            self._mirror.stop(min(1.0, timeout / 2))
        self._scheduler.stop(max(0.0, deadline - time.monotonic()))
        if self._scheduler.pool.abandoned:
            log.warning("fetches still blocked at shutdown were left behind", blocked=self._scheduler.pool.abandoned)

    # --- request path -----------------------------------------------------------------------------

    def serve(self, spec: TriggerSpec, sub_key: SubscriptionKey, *, max_wait_s: float | None = None) -> ServedValue:
        """The value to serve for one trigger now. Raises Stale, NoData, SourceUnavailable or QueryError.

        A memory read, except for a brand-new series with nothing cached yet: then it waits up to
        ``max_wait_s`` (bounded by the call's deadline) for the first fetch (or the shared state another replica
        handed on), which runs on the fetch pool.
        """
        now = self._clock()
        series, sub = self._ensure(spec, sub_key, now)
        snap = series.snapshot
        if snap.latest is None and snap.error is None and series.first_tick is not None:
            wait = self._settings.first_fetch_max_wait_s if max_wait_s is None else max_wait_s
            if wait > 0:
                with contextlib.suppress(FutureTimeout, Exception):
                    series.first_tick.result(timeout=wait)
            snap = series.snapshot
        snap = self._refresh_model(series, snap)
        value = self._decide(spec, sub_key, snap, now)
        sub.last_served = value
        return value

    def _decide(self, spec: TriggerSpec, sub_key: SubscriptionKey, snap: SeriesSnapshot, now: float) -> ServedValue:
        if snap.error is not None:
            # A fresh instance per raise: the snapshot's exception is shared by concurrent requests.
            raise type(snap.error)(str(snap.error))
        if snap.latest is None:
            if snap.last_fetch_at is None:
                raise SourceUnavailable(
                    f"no observation of {spec.query!r} yet: the first fetch is still running, retry shortly"
                )
            raise NoData(f"query {spec.query!r} returned no data (an empty result): check the query and its labels")
        ts, observed = snap.latest
        stale_after = max(3 * spec.query_step_s, STALE_MIN_S)
        age = now - ts
        if age > stale_after:
            raise Stale(
                f"newest data point of {spec.query!r} is {format_duration(age)} old (at {_iso(ts)}), "
                "older than "
                f"max(3 x queryStep, 15m) = {format_duration(stale_after)}: not serving stale data"
            )
        emergency = None
        if spec.latency_query is not None and spec.latency_slo is not None:
            breaker = snap.breakers.get((spec.latency_query, spec.latency_slo))
            if breaker is not None and breaker.open:
                emergency = max(snap.recent_peak, observed)
        opted_out = self._opt_out is not None and self._opt_out.is_opted_out(sub_key.namespace, sub_key.name)
        return decide_served_value(
            mode=spec.mode,
            now=now,
            observed=observed,
            model=snap.model,
            factor=snap.factor,
            lead_s=spec.predict_horizon_s,
            min_confidence=spec.min_confidence,
            live_confidence=snap.live.gate_confidence,
            quantile=spec.predict_quantile,
            opted_out=opted_out,
            emergency_value=emergency,
        )

    def _ensure(self, spec: TriggerSpec, sub_key: SubscriptionKey, now: float) -> tuple[Series, Subscription]:
        key = spec.series_key
        series = self._series.get(key)
        sub = self._subs.get(sub_key)
        if series is not None and sub is not None and sub.spec is spec and not series.dropped:
            series.last_requested = now
            sub.last_requested = now
            return series, sub
        with self._lock:
            series = self._series.get(key)
            sub = self._subs.get(sub_key)
            if sub is None and len(self._subs) >= self._settings.max_subscriptions:
                raise CapacityExceeded("--max-subscriptions", self._settings.max_subscriptions, "ScaledObject triggers")
            if series is None:
                if len(self._series) >= self._settings.max_series:
                    raise CapacityExceeded("--max-series", self._settings.max_series, "distinct series")
                series = self._register(spec, now)
            if sub is None or sub.spec != spec:
                if sub is not None:
                    old = self._series.get(sub.spec.series_key)
                    if old is not None:
                        old.subscriptions.pop(sub_key, None)
                sub = Subscription(key=sub_key, spec=spec, last_requested=now)
                self._subs[sub_key] = sub
            series.subscriptions[sub_key] = sub
            if spec.latency_query is not None and spec.latency_slo is not None:
                series.latency_watches.setdefault((spec.latency_query, spec.latency_slo), BreakerState())
            series.last_requested = now
            sub.last_requested = now
        return series, sub

    def _register(self, spec: TriggerSpec, now: float) -> Series:
        """Called with the engine lock held."""
        key = spec.series_key
        series = Series(key, spec, self._source_for(key.address), now, self._settings.live_window_s)
        self._series[key] = series
        self._by_id[series.id] = series
        series.first_tick = self._scheduler.submit(self._first_tick, series, tag=key)
        log.info("series registered", series=series.id, query=key.query, address=key.address, step_s=key.step_s)
        return series

    def _first_tick(self, series: Series) -> None:
        # Registering may read a stored model (a file, or the shared store): done here, on the fetch pool.
        spec = series.spec
        refit = spec.refit_interval_s or self._settings.default_refit_interval_s
        try:
            self._cache.register(series.id, self._fit_factory(series.key, spec, series.source), refit_interval_s=refit)
        except Exception:
            log.exception("model cache registration failed: serving observed values", series=series.id)
        if self._store.shared:
            join_shared(series, self._store, self._cache, self._clock())
        self._tick_and_reschedule(series, first=True)

    def _refresh_model(self, series: Series, snap: SeriesSnapshot) -> SeriesSnapshot:
        """Pick up a model fitted (or mirrored) since the last fetch (a memory read and a small numpy sum)."""
        model = self._cache.get(series.id)
        if model is snap.model:
            return snap
        if not series.lock.acquire(blocking=False):
            return snap
        try:
            snap = series.snapshot
            model, generation = self._cache.current(series.id)
            if model is not snap.model:
                rescore_if_new(series, model, generation)
                factor = series.factor(model)
                snap = replace(snap, model=model, factor=factor, live=series.build_snapshot(model, self._clock()).live)
                series.snapshot = snap
            return snap
        finally:
            series.lock.release()

    # --- views (metrics, /forecast) ---------------------------------------------------------------

    def series_snapshots(self) -> Iterator[tuple[SeriesKey, str, SeriesSnapshot]]:
        for key, series in list(self._series.items()):
            yield key, series.id, series.snapshot

    def subscriptions(self) -> list[Subscription]:
        return list(self._subs.values())

    def snapshot_for(self, key: SeriesKey) -> SeriesSnapshot | None:
        series = self._series.get(key)
        return None if series is None else series.snapshot

    def series_id(self, key: SeriesKey) -> str | None:
        series = self._series.get(key)
        return None if series is None else series.id

    def model_generation(self, key: SeriesKey) -> int:
        return self._cache.generation(key.id)

    def preview(self, sub: Subscription) -> ServedValue | Exception:
        """What a request for ``sub`` would get now, without counting as a request (for /forecast)."""
        series = self._series.get(sub.spec.series_key)
        if series is None:
            return NoData("series not followed any more")
        try:
            return self._decide(sub.spec, sub.key, series.snapshot, self._clock())
        except Exception as exc:
            return exc

    def records(self, sub_key: SubscriptionKey) -> list[tuple[float, float, float, float]]:
        sub = self._subs.get(sub_key)
        return [] if sub is None else list(sub.records)

    def __len__(self) -> int:
        return len(self._series)

    # --- background work --------------------------------------------------------------------------

    def _interval(self, series: Series) -> float:
        return self._settings.fetch_interval_s or series.key.step_s

    def _run_key(self, key: SeriesKey) -> None:
        series = self._series.get(key)
        if series is not None and not series.dropped:
            self._tick_and_reschedule(series)

    def _tick_and_reschedule(self, series: Series, *, first: bool = False) -> None:
        delay = self._interval(series)
        try:
            delay = self._tick(series, first=first)
        except Exception:
            log.exception("series tick failed", series=series.id)
        if not series.dropped:
            self._scheduler.schedule(series.key, delay)

    def _tick(self, series: Series, *, first: bool = False) -> float:
        """One fetch of the series, when this replica is the one to do it; returns the delay to the next try."""
        now = self._clock()
        interval = self._interval(series)
        claim: FetchClaim | None = None
        if self._store.shared:
            try:
                result = self._store.claim_fetch(series.id, now)
            except StoreUnavailable:
                if self._store.mode(now) is StoreMode.EXPIRED:
                    return min(interval, 5.0)  # beyond the grace: no fetching alone; keep trying the store
                result = None  # within the grace: fetch alone
            if isinstance(result, NotDue):
                if first and series.last_fetch_at is None:
                    wait = min(SHARED_STATE_WAIT_S, self._settings.first_fetch_max_wait_s)
                    await_shared_state(series, self._store, self._cache, self._clock, wait)
                    if series.last_fetch_at is None:
                        self._fetcher.fetch(series, now)  # nobody handed anything on in time: one fetch of our own
                return max(0.01, result.due_at - self._clock()) + self._rng.uniform(0.0, CLAIM_SPREAD_S)
            if isinstance(result, FetchClaim):
                claim = result
                if result.state is not None and series.is_newer(result.state):
                    with series.lock:
                        series.adopt(result.state)
        self._fetcher.fetch(series, now)
        delay = interval if series.failures == 0 else min(interval, 0.5 * 2 ** min(series.failures, 7))
        if claim is not None:
            with contextlib.suppress(StoreUnavailable):
                self._store.publish_state(claim, series.export(), now + delay)
            # The last fetcher tries again no earlier than the others, so fetches spread over the replicas.
            return delay + self._rng.uniform(0.0, CLAIM_SPREAD_S)
        return delay

    def _record(self, series: Series, ts: float) -> None:
        """Observe mode: what was served and what predictive would have served, per ScaledObject per step."""
        for sub in list(series.subscriptions.values()):
            if sub.spec.mode is not Mode.OBSERVE:
                continue
            try:
                value = self._decide(sub.spec, sub.key, series.snapshot, ts)
            except Exception:
                continue
            row = (ts, value.observed, value.value, value.predictive_value)
            sub.records.append(row)
            if self._settings.records_dir is not None:
                append_record(self._settings.records_dir, sub.key, row)

    def _apply_changes(self, series_ids: list[str]) -> None:
        apply_changes(series_ids, self._by_id, self._store, self._cache, self._clock(), self._record)

    # --- housekeeping -------------------------------------------------------------------------------

    def _fetch_overdue(self, key: SeriesKey) -> None:
        series = self._series.get(key)
        if series is None:
            return
        deadline = self._settings.fetch_deadline_s
        error = SourceUnavailable(f"the fetch did not finish within {format_duration(deadline)}: source too slow")
        now = self._clock()
        with series.lock:
            if series.error is None:
                series.error_since = now
            series.error = error
            series.last_fetch_at = now
            series.snapshot = replace(series.snapshot, error=error, error_since=series.error_since, last_fetch_at=now)
        log.warning("series fetch overran its deadline: abandoned", series=series.id, deadline_s=deadline)

    def _drop_idle(self) -> None:
        now = self._clock()
        sub_idle = self._settings.subscription_idle_s
        with self._lock:
            idle_subs = [s for s in self._subs.values() if now - s.last_requested > sub_idle]
            for sub in idle_subs:
                del self._subs[sub.key]
                owner = self._series.get(sub.spec.series_key)
                if owner is not None and owner.subscriptions.get(sub.key) is sub:
                    del owner.subscriptions[sub.key]
        if idle_subs:
            log.info("subscriptions dropped: not polled recently", count=len(idle_subs), idle_s=sub_idle)
        with self._lock:
            idle = [s for s in self._series.values() if now - s.last_requested > self._settings.idle_drop_s]
            for s in idle:
                s.dropped = True
                del self._series[s.key]
                self._by_id.pop(s.id, None)
                for sk in s.subscriptions:
                    if self._subs.get(sk) is s.subscriptions[sk]:
                        del self._subs[sk]
        for s in idle:
            self._cache.unregister(s.id)
            log.info("series dropped: not requested recently", series=s.id, idle_s=round(now - s.last_requested))


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


__all__ = ["STALE_MIN_S", "EngineSettings", "ModelCacheView", "OptOutReader", "SeriesEngine"]
