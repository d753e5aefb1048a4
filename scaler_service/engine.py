"""The inside of the scaler: one background loop per distinct series, and a memory read per request.

Each series (``SeriesKey``: address, query, step) is fetched every step by a shared scheduler and a small
thread pool; its model is fitted and refitted by the model cache in the background. What a request needs is
kept in an immutable :class:`SeriesSnapshot` that the loop replaces whole, so a request is a dictionary
lookup, a snapshot read and :func:`scaler_service.decision.decide_served_value`: no PromQL, no fit, no disk.

Bounds: at most ``max_series`` series and ``max_subscriptions`` ScaledObject triggers are followed (a request
beyond either is refused with :class:`CapacityExceeded`); a subscription not polled for
``subscription_idle_s`` and a series nobody asked about for ``idle_drop_s`` are dropped; every fetch runs on
a daemon worker with a deadline (``fetch_deadline_s``): one that overruns it marks its series unavailable and
its worker is replaced, and :meth:`SeriesEngine.stop` never waits on a fetch beyond its timeout.
"""

from __future__ import annotations

import contextlib
import csv
import heapq
import itertools
import math
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Protocol

import numpy as np
import structlog

from forecasting.serving import ServingModel
from forecasting.workers import WorkerPool
from scaler_service.decision import (
    LIVE_WINDOW_S,
    LIVE_WINDOWS,
    LiveAccuracy,
    Mode,
    ServedValue,
    decide_served_value,
    live_accuracy,
    window_steps,
)
from scaler_service.fit_resolution import DEFAULT_MAX_POINTS_PER_FIT, FitTooCoarse, fit_resolution
from scaler_service.sources.base import DataSource, FloatArray, QueryError, SourceError, SourceUnavailable
from scaler_service.trigger import SeriesKey, TriggerSpec, format_duration

log = structlog.get_logger(__name__)

STALE_MIN_S = 900.0
"""Data older than max(3 steps, this) is stale."""
RECENT_PEAK_WINDOW_S = 1800.0
"""The circuit breaker's emergency value is at least the peak observed over this window."""
RECENT_SPAN_S = 7200.0
"""Recent observations kept per series (anchoring needs 1 h; /forecast shows 2 h)."""
MAX_RECENT_POINTS = 720
MAX_COMPARED_PER_WINDOW = 20
"""Forecast-vs-actual pairs kept per live window (a sample of the window on querySteps finer than 30 s)."""
BREAKER_OPEN_RATIO = 1.2
"""The breaker opens when latency exceeds the SLO by 20 % and closes when it is back under the SLO."""
REFIT_REQUEST_COOLDOWN_S = 900.0
RECORDS_KEPT = 2880
RECORDS_HEADER = ("timestamp", "observed", "served", "predictive")


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


class ModelStore(Protocol):
    """What the engine needs of :class:`forecasting.cache.ModelCache`."""

    def get(self, key: str) -> ServingModel | None: ...

    def register(
        self,
        key: str,
        fit_fn: Callable[[str, ServingModel | None], ServingModel],
        *,
        refit_interval_s: float | None = None,
    ) -> None: ...

    def unregister(self, key: str) -> None: ...

    def request_refit(self, key: str) -> bool: ...


class OptOutReader(Protocol):
    def is_opted_out(self, namespace: str, name: str) -> bool: ...


FitFactory = Callable[[SeriesKey, TriggerSpec, DataSource], Callable[[str, ServingModel | None], ServingModel]]


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


_EMPTY = np.zeros(0, dtype=np.float64)


@dataclass(frozen=True, slots=True)
class SeriesSnapshot:
    latest: tuple[float, float] | None = None
    model: ServingModel | None = None
    factor: float = 1.0
    recent_start: float | None = None
    recent: FloatArray = field(default_factory=lambda: _EMPTY)
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


class _Series:
    """Mutable state of one series, changed only by its tick (one at a time) or under ``lock``."""

    def __init__(self, key: SeriesKey, spec: TriggerSpec, source: DataSource, now: float) -> None:
        self.key = key
        self.id = key.id
        self.spec = spec
        """The first spec that registered the series: its fit settings (history, holidays) apply."""
        self.source = source
        self.lock = threading.Lock()
        self.snapshot = SeriesSnapshot()
        self.last_requested = now
        self.obs: dict[int, float] = {}
        """Recent observations by grid index (timestamp // step)."""
        self.seeded = False
        self.compared: dict[int, tuple[float, float]] = {}
        """(forecast, actual) by grid index, for the live accuracy."""
        self.failures = 0
        self.first_tick: Future[None] | None = None
        self.last_refit_request = -math.inf
        self.latency_watches: dict[tuple[str, float], BreakerState] = {}
        self.subscriptions: dict[SubscriptionKey, Subscription] = {}
        self.dropped = False


class SeriesEngine:
    def __init__(
        self,
        *,
        source_for: Callable[[str], DataSource],
        cache: ModelStore,
        fit_factory: FitFactory,
        settings: EngineSettings = EngineSettings(),
        opt_out: OptOutReader | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._source_for = source_for
        self._cache = cache
        self._fit_factory = fit_factory
        self._settings = settings
        self._opt_out = opt_out
        self._clock = clock
        self._series: dict[SeriesKey, _Series] = {}
        self._subs: dict[SubscriptionKey, Subscription] = {}
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._heap: list[tuple[float, int, SeriesKey]] = []
        self._seq = itertools.count()
        self._pool = WorkerPool(settings.fetch_workers, name="series-fetch")
        self._stopping = False
        self._thread: threading.Thread | None = None
        self.breaker_events_total = 0

    # --- lifecycle --------------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="series-scheduler", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop fetching. Returns within ``timeout`` whatever a fetch is doing (workers are daemon threads)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self._pool.shutdown(cancel_futures=True)
        if self._thread is not None:
            self._thread.join(max(0.0, deadline - time.monotonic()))
        if self._pool.abandoned:
            log.warning("fetches still blocked at shutdown were left behind", blocked=self._pool.abandoned)

    # --- request path -----------------------------------------------------------------------------

    def serve(self, spec: TriggerSpec, sub_key: SubscriptionKey, *, max_wait_s: float | None = None) -> ServedValue:
        """The value to serve for one trigger now. Raises Stale, NoData, SourceUnavailable or QueryError.

        A memory read, except for a brand-new series with nothing cached yet: then it waits up to
        ``max_wait_s`` (bounded by the call's deadline) for the first fetch, which runs on the fetch pool.
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
        value = self._decide(spec, sub_key, series, snap, now)
        sub.last_served = value
        return value

    def _decide(
        self, spec: TriggerSpec, sub_key: SubscriptionKey, series: _Series, snap: SeriesSnapshot, now: float
    ) -> ServedValue:
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

    def _ensure(self, spec: TriggerSpec, sub_key: SubscriptionKey, now: float) -> tuple[_Series, Subscription]:
        key = spec.series_key
        series = self._series.get(key)
        sub = self._subs.get(sub_key)
        if series is not None and sub is not None and sub.spec is spec and not series.dropped:
            series.last_requested = now
            sub.last_requested = now
            return series, sub
        with self._cond:
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

    def _register(self, spec: TriggerSpec, now: float) -> _Series:
        """Called with the engine lock held."""
        key = spec.series_key
        source = self._source_for(key.address)
        series = _Series(key, spec, source, now)
        self._series[key] = series
        series.first_tick = self._pool.submit(
            self._first_tick, series, tag=key, deadline_s=self._settings.fetch_deadline_s
        )
        log.info("series registered", series=series.id, query=key.query, address=key.address, step_s=key.step_s)
        return series

    def _first_tick(self, series: _Series) -> None:
        # Registering may read a persisted model from disk: done here, on the fetch pool, not in a handler.
        spec = series.spec
        refit = spec.refit_interval_s or self._settings.default_refit_interval_s
        try:
            self._cache.register(series.id, self._fit_factory(series.key, spec, series.source), refit_interval_s=refit)
        except Exception:
            log.exception("model cache registration failed: serving observed values", series=series.id)
        self._tick_and_reschedule(series)

    def _refresh_model(self, series: _Series, snap: SeriesSnapshot) -> SeriesSnapshot:
        """Pick up a model the cache fitted since the last tick (a memory read and a small numpy sum)."""
        model = self._cache.get(series.id)
        if model is snap.model:
            return snap
        if not series.lock.acquire(blocking=False):
            return snap
        try:
            snap = series.snapshot
            if model is not snap.model:
                factor = self._factor(series, model)
                self._rescore(series, model, factor)
                snap = replace(snap, model=model, factor=factor, live=self._live(series))
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

    def preview(self, sub: Subscription) -> ServedValue | Exception:
        """What a request for ``sub`` would get now, without counting as a request (for /forecast)."""
        series = self._series.get(sub.spec.series_key)
        if series is None:
            return NoData("series not followed any more")
        try:
            return self._decide(sub.spec, sub.key, series, series.snapshot, self._clock())
        except Exception as exc:
            return exc

    def records(self, sub_key: SubscriptionKey) -> list[tuple[float, float, float, float]]:
        sub = self._subs.get(sub_key)
        return [] if sub is None else list(sub.records)

    def __len__(self) -> int:
        return len(self._series)

    # --- background loop --------------------------------------------------------------------------

    def _run(self) -> None:
        idle_check_every = min(10.0, self._settings.idle_drop_s / 2, self._settings.subscription_idle_s / 2)
        next_idle_check = self._clock() + idle_check_every
        while True:
            due: list[SeriesKey] = []
            with self._cond:
                if self._stopping:
                    return
                now = self._clock()
                while self._heap and self._heap[0][0] <= now:
                    due.append(heapq.heappop(self._heap)[2])
                if not due:
                    timeout = min(1.0, self._heap[0][0] - now) if self._heap else 1.0
                    self._cond.wait(max(0.01, timeout))
            for key in due:
                series = self._series.get(key)
                if series is not None and not series.dropped:
                    try:
                        self._pool.submit(
                            self._tick_and_reschedule, series, tag=key, deadline_s=self._settings.fetch_deadline_s
                        )
                    except RuntimeError:
                        return  # pool shut down
            for overdue in self._pool.reap():
                self._fetch_overdue(overdue)
            if self._clock() >= next_idle_check:
                self._drop_idle()
                next_idle_check = self._clock() + idle_check_every

    def _schedule(self, series: _Series, delay_s: float) -> None:
        with self._cond:
            if self._stopping or series.dropped:
                return
            heapq.heappush(self._heap, (self._clock() + delay_s, next(self._seq), series.key))
            self._cond.notify()

    def _interval(self, series: _Series) -> float:
        return self._settings.fetch_interval_s or series.key.step_s

    def _tick_and_reschedule(self, series: _Series) -> None:
        try:
            self._tick(series)
        except Exception:
            log.exception("series tick failed", series=series.id)
        interval = self._interval(series)
        delay = interval if series.failures == 0 else min(interval, 0.5 * 2 ** min(series.failures, 7))
        self._schedule(series, delay)

    def _fetch_overdue(self, key: object) -> None:
        series = self._series.get(key) if isinstance(key, SeriesKey) else None
        if series is None:
            return
        deadline = self._settings.fetch_deadline_s
        error = SourceUnavailable(f"the fetch did not finish within {format_duration(deadline)}: source too slow")
        now = self._clock()
        with series.lock:
            prev = series.snapshot
            since = prev.error_since if prev.error is not None else now
            series.snapshot = replace(prev, error=error, error_since=since, last_fetch_at=now)
        log.warning("series fetch overran its deadline: abandoned", series=series.id, deadline_s=deadline)

    def _drop_idle(self) -> None:
        now = self._clock()
        sub_idle = self._settings.subscription_idle_s
        with self._cond:
            idle_subs = [s for s in self._subs.values() if now - s.last_requested > sub_idle]
            for sub in idle_subs:
                del self._subs[sub.key]
                owner = self._series.get(sub.spec.series_key)
                if owner is not None and owner.subscriptions.get(sub.key) is sub:
                    del owner.subscriptions[sub.key]
        if idle_subs:
            log.info("subscriptions dropped: not polled recently", count=len(idle_subs), idle_s=sub_idle)
        with self._cond:
            idle = [s for s in self._series.values() if now - s.last_requested > self._settings.idle_drop_s]
            for s in idle:
                s.dropped = True
                del self._series[s.key]
                for sk in s.subscriptions:
                    if self._subs.get(sk) is s.subscriptions[sk]:
                        del self._subs[sk]
        for s in idle:
            self._cache.unregister(s.id)
            log.info("series dropped: not requested recently", series=s.id, idle_s=round(now - s.last_requested))

    def _tick(self, series: _Series) -> None:
        key = series.key
        now = self._clock()
        try:
            latest = series.source.fetch_latest(key.query, now)
        except SourceError as exc:
            with series.lock:
                prev = series.snapshot
                series.failures += 1
                since = prev.error_since if prev.error is not None else now
                series.snapshot = replace(prev, error=exc, error_since=since, last_fetch_at=now)
            if series.failures in (1, 10) or series.failures % 100 == 0:
                log.warning("series fetch failed", series=series.id, error=str(exc), failures=series.failures)
            return
        if series.failures:
            log.info("series fetch recovered", series=series.id, after_failures=series.failures)
        series.failures = 0
        new_point = new_step = False
        with series.lock:
            snap = series.snapshot
            model = self._cache.get(series.id)
            factor = snap.factor
            if model is not snap.model:
                factor = self._factor(series, model)
                self._rescore(series, model, factor)
            # NaN (e.g. 0/0) is a missing value, not zero: it does not refresh the data's age.
            if latest is not None and (not math.isfinite(latest[0]) or math.isnan(latest[1])):
                latest = None
            if latest is not None:
                ts, value = latest
                if snap.latest is None or ts > snap.latest[0]:
                    new_point = True
                    bucket = int(ts // key.step_s)
                    # Forecast-vs-actual and observe records count once per step, however often we fetch.
                    if bucket not in series.obs:
                        new_step = True
                        self._compare(series, model, factor, bucket, value)
                    series.obs[bucket] = value
            if not series.seeded and latest is not None:
                self._seed(series, now)
            self._prune(series, now)
            if new_point or model is not snap.model:
                factor = self._factor(series, model)
            recent_start, recent = self._recent(series)
            peak = self._recent_peak(series, now)
            new_latest = latest if new_point else snap.latest
            snap = SeriesSnapshot(
                latest=new_latest,
                model=model,
                factor=factor,
                recent_start=recent_start,
                recent=recent,
                recent_peak=peak,
                live=self._live(series),
                error=None,
                error_since=None,
                last_fetch_at=now,
                breakers=snap.breakers,
            )
            series.snapshot = snap
        self._watch_latency(series, now)
        self._maybe_request_refit(series, now)
        if new_step and latest is not None:
            self._record(series, latest[0])

    def _seed(self, series: _Series, now: float) -> None:
        """Fill recent observations with one range query so anchoring and the breaker peak work at once."""
        key = series.key
        try:
            samples = series.source.fetch_range(key.query, now - RECENT_SPAN_S, now, key.step_s)
        except SourceError as exc:
            log.info("recent history not available yet", series=series.id, error=str(exc))
            return
        for ts, v in zip(samples.timestamps, samples.values, strict=True):
            if math.isfinite(ts) and not math.isnan(v):
                series.obs.setdefault(int(ts // key.step_s), float(v))
        series.seeded = True

    def _prune(self, series: _Series, now: float) -> None:
        step = series.key.step_s
        keep_from = int((now - RECENT_SPAN_S) // step)
        if len(series.obs) > MAX_RECENT_POINTS or (series.obs and min(series.obs) < keep_from):
            newest = sorted(i for i in series.obs if i >= keep_from)[-MAX_RECENT_POINTS:]
            series.obs = {i: series.obs[i] for i in newest}

    def _recent(self, series: _Series) -> tuple[float | None, FloatArray]:
        if not series.obs:
            return None, _EMPTY
        step = series.key.step_s
        lo, hi = min(series.obs), max(series.obs)
        grid = np.full(hi - lo + 1, np.nan, dtype=np.float64)
        for i, v in series.obs.items():
            grid[i - lo] = v
        return lo * step, grid

    def _recent_peak(self, series: _Series, now: float) -> float:
        step = series.key.step_s
        since = int((now - RECENT_PEAK_WINDOW_S) // step)
        values = [v for i, v in series.obs.items() if i >= since and math.isfinite(v)]
        return max(values, default=0.0)

    def _factor(self, series: _Series, model: ServingModel | None) -> float:
        if model is None or not series.obs:
            return 1.0
        start, grid = self._recent(series)
        if start is None or len(grid) == 0:
            return 1.0
        filled = _ffill(grid)
        try:
            factor = model.anchor_factor(start, filled)
        except Exception:
            log.exception("anchor factor failed", series=series.id)
            return 1.0
        return factor if math.isfinite(factor) and factor > 0 else 1.0

    def _compare_stride(self, series: _Series) -> int:
        """Grid points per comparison cell: 1, except on fine steps, where a live window would otherwise hold
        hundreds of pairs per series (600 at queryStep 1s) and the comparisons thousands."""
        raw = window_steps(self._settings.live_window_s, series.key.step_s)
        return max(1, math.ceil(raw / MAX_COMPARED_PER_WINDOW))

    def _window_steps(self, series: _Series) -> int:
        """Comparison cells per live window."""
        raw = window_steps(self._settings.live_window_s, series.key.step_s)
        return max(1, raw // self._compare_stride(series))

    def _compare(self, series: _Series, model: ServingModel | None, factor: float, bucket: int, actual: float) -> None:
        if model is None or not math.isfinite(actual):
            return
        curve = model.curve
        i = curve.index_at(bucket * series.key.step_s)
        if i < 0 or i >= len(curve.point):
            return
        predicted = float(curve.point[i]) * factor
        if not math.isfinite(predicted):
            return
        cell = bucket // self._compare_stride(series)
        series.compared[cell] = (predicted, actual)  # on fine steps: the newest pair of each cell
        keep_from = cell - (LIVE_WINDOWS + 1) * self._window_steps(series)
        if min(series.compared) < keep_from:
            series.compared = {b: v for b, v in series.compared.items() if b >= keep_from}

    def _rescore(self, series: _Series, model: ServingModel | None, factor: float) -> None:
        """A new model is judged at once on the recent observations (for the part of its curve before the end
        of training, its in-sample fit), so a refit that is no better gets no fresh grace period."""
        series.compared = {}
        if model is None:
            return
        for i in sorted(series.obs)[-(LIVE_WINDOWS + 1) * self._window_steps(series) * self._compare_stride(series) :]:
            self._compare(series, model, factor, i, series.obs[i])

    def _live(self, series: _Series) -> LiveAccuracy:
        return live_accuracy(series.compared, self._window_steps(series))

    def _maybe_request_refit(self, series: _Series, now: float) -> None:
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

    def _watch_latency(self, series: _Series, now: float) -> None:
        if not series.latency_watches:
            return
        changed = False
        for (query, slo), state in list(series.latency_watches.items()):
            try:
                latest = series.source.fetch_latest(query, now)
            except SourceError as exc:
                new = replace(state, error=str(exc))
            else:
                if latest is None or not math.isfinite(latest[1]):
                    new = replace(state, error="latency query returned no value")
                else:
                    ts, latency = latest
                    new = replace(state, latency=latency, latency_ts=ts, error=None)
                    if not state.open and latency > BREAKER_OPEN_RATIO * slo:
                        event = BreakerEvent(at=now, opened=True, latency=latency, slo=slo)
                        new = replace(new, open=True, since=now, events=(*state.events[-19:], event))
                        self.breaker_events_total += 1
                        log.warning(
                            "circuit breaker opened: latency above 1.2 x SLO, serving the recent peak",
                            series=series.id,
                            latency_query=query,
                            latency=latency,
                            slo=slo,
                        )
                    elif state.open and latency < slo:
                        event = BreakerEvent(at=now, opened=False, latency=latency, slo=slo)
                        new = replace(new, open=False, since=now, events=(*state.events[-19:], event))
                        self.breaker_events_total += 1
                        log.info(
                            "circuit breaker closed: latency back under the SLO",
                            series=series.id,
                            latency_query=query,
                            latency=latency,
                            slo=slo,
                        )
            if new != state:
                series.latency_watches[(query, slo)] = new
                changed = True
        if changed:
            with series.lock:
                series.snapshot = replace(series.snapshot, breakers=dict(series.latency_watches))

    def _record(self, series: _Series, ts: float) -> None:
        """Observe mode: what was served and what predictive would have served, per ScaledObject per step."""
        for sub in list(series.subscriptions.values()):
            if sub.spec.mode is not Mode.OBSERVE:
                continue
            try:
                value = self._decide(sub.spec, sub.key, series, series.snapshot, ts)
            except Exception:
                continue
            row = (ts, value.observed, value.value, value.predictive_value)
            sub.records.append(row)
            if self._settings.records_dir is not None:
                _append_record(self._settings.records_dir, sub.key, row)


def default_fit_factory(
    clock: Callable[[], float] = time.time,
    *,
    max_points_per_fit: int = DEFAULT_MAX_POINTS_PER_FIT,
) -> FitFactory:
    """Fit functions that read the history through the source and fit with forecasting's pipeline.

    The history is read at :func:`scaler_service.fit_resolution.fit_resolution`'s step: at most
    ``max_points_per_fit`` points per fit, whatever queryStep and historyTimeWindow say.
    """

    def factory(
        key: SeriesKey, spec: TriggerSpec, source: DataSource
    ) -> Callable[[str, ServingModel | None], ServingModel]:
        too_coarse: str | None = None
        resolution = None
        try:
            resolution = fit_resolution(spec.history_window_s, key.step_s, max_points_per_fit)
        except FitTooCoarse as exc:
            too_coarse = str(exc)
        else:
            if resolution.coarsened:
                log.info(
                    "history read on a coarser step than queryStep: within --max-points-per-fit",
                    series=key.id,
                    query_step_s=key.step_s,
                    fit_step_s=resolution.step_s,
                    points=resolution.points,
                    max_points_per_fit=max_points_per_fit,
                )

        def fit(cache_key: str, previous: ServingModel | None) -> ServingModel:
            from forecasting.pipeline import FitConfig, fit_serving_model
            from forecasting.series import prepare_recent

            if resolution is None:
                raise QueryError(too_coarse or "no fit resolution")
            step = resolution.step_s
            end = clock()
            samples = source.fetch_range(key.query, end - spec.history_window_s, end, step)
            if len(samples) == 0:
                raise NoData(
                    f"query {key.query!r} returned no history over the last {format_duration(spec.history_window_s)}"
                )
            history = prepare_recent(samples.timestamps, samples.values, step, end=end)
            config = FitConfig(holidays_country=spec.holidays_country, training_window_s=spec.history_window_s)
            return fit_serving_model(cache_key, history, config, previous=previous, clock=clock)

        return fit

    return factory


def _ffill(grid: FloatArray) -> FloatArray:
    out = grid.copy()
    last = math.nan
    for i, v in enumerate(out):
        if math.isfinite(v):
            last = v
        else:
            out[i] = last
    if not math.isfinite(out[0]):
        first = next((v for v in out if math.isfinite(v)), 0.0)
        out[~np.isfinite(out)] = first
    return out


def record_path(records_dir: Path, sub: SubscriptionKey) -> Path:
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{sub.namespace}.{sub.name}.{sub.metric}")
    return records_dir / f"{safe}.csv"


_records_lock = threading.Lock()


def _append_record(records_dir: Path, sub: SubscriptionKey, row: tuple[float, float, float, float]) -> None:
    path = record_path(records_dir, sub)
    try:
        with _records_lock:
            records_dir.mkdir(parents=True, exist_ok=True)
            new = not path.exists() or path.stat().st_size == 0
            with path.open("a", newline="") as fh:
                writer = csv.writer(fh)
                if new:
                    writer.writerow(RECORDS_HEADER)
                writer.writerow([f"{row[0]:.0f}", f"{row[1]:.6g}", f"{row[2]:.6g}", f"{row[3]:.6g}"])
    except OSError as exc:
        log.warning("observe record not written", path=str(path), error=str(exc))


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


__all__ = [
    "RECORDS_HEADER",
    "BreakerEvent",
    "BreakerState",
    "CapacityExceeded",
    "EngineSettings",
    "LiveAccuracy",
    "ModelStore",
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
