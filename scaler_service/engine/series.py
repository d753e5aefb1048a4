"""One series' mutable state and the computations on its recent observations.

A :class:`Series` is changed only by its fetch (one at a time) or under its ``lock``; what requests read is the
immutable :class:`~scaler_service.engine.types.SeriesSnapshot` that :meth:`Series.build_snapshot` makes. With a
shared store the state travels between replicas as a :class:`~scaler_service.store.state.SeriesState`
(:meth:`Series.export` / :meth:`Series.adopt`), and every replica builds the same snapshot from it.
"""

from __future__ import annotations

import math
import threading
from concurrent.futures import Future

import numpy as np
import structlog

from forecasting.serving import ServingModel
from scaler_service.decision import LIVE_WINDOWS, compare_forecast, live_accuracy, window_steps
from scaler_service.engine.types import (
    EMPTY,
    BreakerEvent,
    BreakerState,
    SeriesSnapshot,
    Subscription,
    SubscriptionKey,
)
from scaler_service.sources.base import DataSource, FloatArray, QueryError, SourceError, SourceUnavailable
from scaler_service.store.state import SeriesState, SharedBreaker
from scaler_service.trigger import SeriesKey, TriggerSpec

log = structlog.get_logger(__name__)

RECENT_PEAK_WINDOW_S = 1800.0
"""The circuit breaker's emergency value is at least the peak observed over this window."""
RECENT_SPAN_S = 7200.0
"""Recent observations kept per series (anchoring needs 1 h; /forecast shows 2 h)."""
MAX_RECENT_POINTS = 720
MAX_COMPARED_PER_WINDOW = 20
"""Forecast-vs-actual pairs kept per live window (a sample of the window on querySteps finer than 30 s)."""


class Series:
    def __init__(self, key: SeriesKey, spec: TriggerSpec, source: DataSource, now: float, live_window_s: float) -> None:
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
        self.compared_generation = 0
        """The model generation ``compared`` was judged with."""
        self.failures = 0
        self.error: SourceError | None = None
        self.error_since: float | None = None
        self.latest: tuple[float, float] | None = None
        self.last_fetch_at: float | None = None
        self.first_tick: Future[None] | None = None
        self.last_refit_request = -math.inf
        self.latency_watches: dict[tuple[str, float], BreakerState] = {}
        self.subscriptions: dict[SubscriptionKey, Subscription] = {}
        self.dropped = False
        raw = window_steps(live_window_s, key.step_s)
        self.compare_stride = max(1, math.ceil(raw / MAX_COMPARED_PER_WINDOW))
        """Grid points per comparison cell: 1, except on fine steps, where a live window would otherwise hold
        hundreds of pairs per series (600 at queryStep 1s) and the comparisons thousands."""
        self.steps_per_window = max(1, raw // self.compare_stride)
        """Comparison cells per live window."""

    # --- observations ----------------------------------------------------------------------------------

    def add_observation(self, bucket: int, value: float) -> None:
        self.obs[bucket] = value

    def seed(self, timestamps: FloatArray, values: FloatArray) -> None:
        step = self.key.step_s
        for ts, v in zip(timestamps, values, strict=True):
            if math.isfinite(ts) and not math.isnan(v):
                self.obs.setdefault(int(ts // step), float(v))
        self.seeded = True

    def prune(self, now: float) -> None:
        step = self.key.step_s
        keep_from = int((now - RECENT_SPAN_S) // step)
        if len(self.obs) > MAX_RECENT_POINTS or (self.obs and min(self.obs) < keep_from):
            newest = sorted(i for i in self.obs if i >= keep_from)[-MAX_RECENT_POINTS:]
            self.obs = {i: self.obs[i] for i in newest}

    def recent(self) -> tuple[float | None, FloatArray]:
        if not self.obs:
            return None, EMPTY
        step = self.key.step_s
        lo, hi = min(self.obs), max(self.obs)
        grid = np.full(hi - lo + 1, np.nan, dtype=np.float64)
        for i, v in self.obs.items():
            grid[i - lo] = v
        return lo * step, grid

    def recent_peak(self, now: float) -> float:
        since = int((now - RECENT_PEAK_WINDOW_S) // self.key.step_s)
        values = [v for i, v in self.obs.items() if i >= since and math.isfinite(v)]
        return max(values, default=0.0)

    def factor(self, model: ServingModel | None) -> float:
        """The anchor factor of ``model`` on the recent observations (1 without either)."""
        if model is None or not self.obs:
            return 1.0
        start, grid = self.recent()
        if start is None or len(grid) == 0:
            return 1.0
        try:
            factor = model.anchor_factor(start, ffill(grid))
        except Exception:
            log.exception("anchor factor failed", series=self.id)
            return 1.0
        return factor if math.isfinite(factor) and factor > 0 else 1.0

    # --- live scoring ----------------------------------------------------------------------------------

    def compare(self, model: ServingModel | None, factor: float, bucket: int, actual: float) -> None:
        if model is not None:
            compare_forecast(
                self.compared,
                model,
                factor,
                [(bucket // self.compare_stride, bucket * self.key.step_s, actual)],  # fine steps: newest per cell
                steps_per_window=self.steps_per_window,
            )

    def rescore(self, model: ServingModel | None, factor: float, generation: int) -> None:
        """A new model is judged at once on the recent observations (for the part of its curve before the end
        of training, its in-sample fit), so a refit that is no better gets no fresh grace period."""
        self.compared = {}
        self.compared_generation = generation
        if model is None:
            return
        step = self.key.step_s
        recent = sorted(self.obs)[-(LIVE_WINDOWS + 1) * self.steps_per_window * self.compare_stride :]
        compare_forecast(
            self.compared,
            model,
            factor,
            [(i // self.compare_stride, i * step, self.obs[i]) for i in recent],
            steps_per_window=self.steps_per_window,
        )

    # --- snapshots ------------------------------------------------------------------------------------

    def build_snapshot(self, model: ServingModel | None, now: float) -> SeriesSnapshot:
        """Called with ``lock`` held (or by the only writer)."""
        recent_start, recent = self.recent()
        return SeriesSnapshot(
            latest=self.latest,
            model=model,
            factor=self.factor(model),
            recent_start=recent_start,
            recent=recent,
            recent_peak=self.recent_peak(now),
            live=live_accuracy(self.compared, self.steps_per_window),
            error=self.error,
            error_since=self.error_since,
            last_fetch_at=self.last_fetch_at,
            breakers=dict(self.latency_watches),
        )

    # --- hand-over between replicas ----------------------------------------------------------------------

    def export(self) -> SeriesState:
        error_kind = None
        if self.error is not None:
            error_kind = "query" if isinstance(self.error, QueryError) else "unavailable"
        return SeriesState(
            last_fetch_at=self.last_fetch_at,
            latest=self.latest,
            obs=dict(self.obs),
            seeded=self.seeded,
            compared=dict(self.compared),
            model_generation=self.compared_generation,
            failures=self.failures,
            error_kind=error_kind,
            error=None if self.error is None else str(self.error),
            error_since=self.error_since,
            last_refit_request=self.last_refit_request if math.isfinite(self.last_refit_request) else None,
            breakers=tuple(
                SharedBreaker(
                    query=q,
                    slo=slo,
                    open=b.open,
                    latency=b.latency,
                    latency_ts=b.latency_ts,
                    since=b.since,
                    error=b.error,
                    events=tuple((e.at, e.opened, e.latency) for e in b.events),
                )
                for (q, slo), b in self.latency_watches.items()
            ),
        )

    def is_newer(self, state: SeriesState) -> bool:
        """True when ``state`` comes from a later fetch than the one this replica holds."""
        if state.last_fetch_at is None:
            return False
        return self.last_fetch_at is None or state.last_fetch_at > self.last_fetch_at

    def adopt(self, state: SeriesState) -> None:
        """Continue from another replica's fetch. Called with ``lock`` held (or by the only writer)."""
        self.last_fetch_at = state.last_fetch_at
        self.latest = state.latest
        self.obs = {int(i): float(v) for i, v in state.obs.items()}
        self.seeded = state.seeded or self.seeded
        self.compared = dict(state.compared)
        self.compared_generation = state.model_generation
        self.failures = state.failures
        if state.error is None:
            self.error = None
        else:
            kind = QueryError if state.error_kind == "query" else SourceUnavailable
            self.error = kind(state.error)
        self.error_since = state.error_since
        self.last_refit_request = -math.inf if state.last_refit_request is None else state.last_refit_request
        for b in state.breakers:
            self.latency_watches[(b.query, b.slo)] = BreakerState(
                open=b.open,
                latency=b.latency,
                latency_ts=b.latency_ts,
                since=b.since,
                error=b.error,
                events=tuple(
                    BreakerEvent(at=at, opened=opened, latency=lat, slo=b.slo) for at, opened, lat in b.events
                ),
            )


def ffill(grid: FloatArray) -> FloatArray:
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


__all__ = ["MAX_RECENT_POINTS", "RECENT_PEAK_WINDOW_S", "RECENT_SPAN_S", "Series", "ffill"]
