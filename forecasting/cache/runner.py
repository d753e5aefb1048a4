"""Runs the model cache's fits: the scheduler thread, the worker pool, claiming a fit, applying its result.

Fits run on daemon threads (:class:`forecasting.workers.WorkerPool`): a fit blocked in I/O never holds the
process at exit, and :meth:`FitRunner.stop` returns within its timeout.
"""

from __future__ import annotations

import contextlib
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from forecasting.cache.book import ModelBook
from forecasting.cache.persistence import ModelPersistence
from forecasting.cache.records import CacheEntry, CacheSettings, FitOutcome, short_error
from forecasting.cache.schedule import jittered_interval, retry_delay
from forecasting.serving import ServingModel
from forecasting.store import FitClaim, StoreUnavailable
from forecasting.workers import WorkerPool

_RECENT_DURATIONS = 64
_IDLE_POLL_S = 1.0
"""Longest the scheduler sleeps between looks at the clock (an injected clock may jump without notice)."""


class FitRunner:
    """Starts due fits on the worker pool and applies their results to the book. Its counters are read under
    the book's lock."""

    def __init__(
        self,
        book: ModelBook,
        persistence: ModelPersistence,
        *,
        clock: Callable[[], float],
        rng: random.Random,
        on_fit: Callable[[FitOutcome], None] | None,
        log: Any,
    ) -> None:
        self._book = book
        self._settings: CacheSettings = book.settings
        self._persistence = persistence
        self._clock = clock
        self._rng = rng
        self._on_fit = on_fit
        self._log = log
        self.running = 0
        """Fits submitted and not yet reported."""
        self.stopping = False
        self.fits_total = 0
        self.failures_total = 0
        self.durations: deque[float] = deque(maxlen=_RECENT_DURATIONS)
        self._pool: WorkerPool | None = None
        self._scheduler: threading.Thread | None = None

    def run_due(self, now: float | None = None) -> int:
        """Start the fits that are due at ``now`` (default: the clock), as many as free workers allow.

        Returns how many started. Fits run on the worker pool; :meth:`wait_idle` waits for them.
        """
        with self._book.changed:
            if self.stopping:
                return 0
            return self.start_due(self._clock() if now is None else now)

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no fit runs and none is due (starting due ones as workers free up). False on timeout."""
        deadline = time.monotonic() + timeout
        with self._book.changed:
            while True:
                now = self._clock()
                if not self.stopping:
                    self.start_due(now)
                if self.running == 0 and not self._book.schedule.has_due(now):
                    return True
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._book.changed.wait(min(remaining, _IDLE_POLL_S))

    def start(self) -> None:
        """Start the scheduler thread (and the worker pool). Idempotent."""
        with self._book.lock:
            if self._scheduler is not None and self._scheduler.is_alive():
                return
            self.stopping = False
            self._ensure_pool()
            self._scheduler = threading.Thread(target=self._schedule_loop, name="model-cache-scheduler", daemon=True)
            self._scheduler.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop scheduling, wait up to ``timeout`` for running fits, and shut the worker pool down."""
        deadline = time.monotonic() + timeout
        with self._book.changed:
            self.stopping = True
            self._book.changed.notify_all()
            scheduler, self._scheduler = self._scheduler, None
        if scheduler is not None:
            scheduler.join(max(0.0, deadline - time.monotonic()))
        with self._book.changed:
            while self.running > 0:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    self._log.warning("model cache stopped with fits still running", fits_running=self.running)
                    break
                self._book.changed.wait(remaining)
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(cancel_futures=True)

    # --- internals -----------------------------------------------------------------------------------

    def _schedule_loop(self) -> None:
        with self._book.changed:
            while not self.stopping:
                now = self._clock()
                try:
                    self.start_due(now)
                except Exception:  # keep scheduling whatever one start did
                    self._log.exception("model cache scheduler error")
                if self.running >= self._settings.max_concurrent_fits:
                    wait = _IDLE_POLL_S  # a finishing fit notifies
                else:
                    next_due = self._book.schedule.next_due_at()
                    wait = _IDLE_POLL_S if next_due is None else min(max(next_due - now, 0.001), _IDLE_POLL_S)
                self._book.changed.wait(wait)

    def _ensure_pool(self) -> WorkerPool:
        if self._pool is None:
            self._pool = WorkerPool(self._settings.max_concurrent_fits, name="model-fit")
        return self._pool

    def start_due(self, now: float) -> int:
        """Start the fits due at ``now`` while workers are free; how many started. The book's lock is held."""
        started = 0
        while self.running < self._settings.max_concurrent_fits:
            head = self._book.schedule.head()
            if head is None or head[0] > now:
                break
            self._book.schedule.pop()
            entry = head[1]
            entry.fitting = True
            entry.last_fit_started = now
            self.running += 1
            self._ensure_pool().submit(self._fit, entry, entry.model, now)
            started += 1
        return started

    def _fit(self, entry: CacheEntry, previous: ServingModel | None, started_at: float) -> None:
        try:
            claim = self._claim(entry, started_at)
            if claim is None:
                return
            self._fit_claimed(entry, previous, started_at, claim)
        finally:
            # The worker counts as busy until its report is delivered, so wait_idle() covers on_fit too.
            with self._book.changed:
                self.running -= 1
                if not self.stopping:
                    self.start_due(self._clock())
                self._book.changed.notify_all()

    def _claim(self, entry: CacheEntry, now: float) -> FitClaim | None:
        """With a shared store: the claim, or None after rescheduling ``entry`` to when it is due there."""
        store = self._persistence.store
        if store is None or not store.shared:
            return FitClaim(key=entry.key, token="")
        try:
            result = store.claim_fit(entry.key, now)
        except StoreUnavailable as exc:
            due = now + self._settings.store_retry_s
            self._log.info("fit postponed: the shared store is unreachable", key=entry.key, error=str(exc))
        else:
            if isinstance(result, FitClaim):
                return result
            due = max(result.due_at, now + 0.001) + self._rng.uniform(0.0, self._settings.claim_spread_s)
        with self._book.changed:
            if self._book.entries.get(entry.key) is entry:
                entry.fitting = False
                entry.next_refit_at = due
                self._book.schedule.push(entry)
        return None

    def _fit_claimed(
        self, entry: CacheEntry, previous: ServingModel | None, started_at: float, claim: FitClaim
    ) -> None:
        key = entry.key
        base_generation = entry.generation
        t0 = time.perf_counter()
        model: ServingModel | None = None
        error: str | None = None
        try:
            result = entry.fit_fn(key, previous)
            if not isinstance(result, ServingModel):
                raise TypeError(f"fit function returned {type(result).__name__}, expected ServingModel")
            if result.key != key:
                raise ValueError(f"fit function returned a model for key {result.key!r}")
            model = result
        except Exception as exc:
            error = short_error(f"{type(exc).__name__}: {exc}")
            if self._on_fit is None:  # else the owner's callback reports it: one line per fit, not two
                self._log.warning("model fit failed", key=key, error=error, has_previous=previous is not None)
        duration = time.perf_counter() - t0
        generation = base_generation + 1
        stored_generation = generation
        if model is not None:
            stored_generation = self._persistence.save(key, model, generation)
        # Another process stored a newer model while this one was fitted: that one is taken instead.
        superseded = stored_generation > generation
        finished = started_at
        current = False
        next_due: float | None = None
        with self._book.changed:
            finished = self._clock()
            self.fits_total += 1
            self.durations.append(duration)
            current = self._book.entries.get(key) is entry
            if model is None:
                self.failures_total += 1
            if current:
                entry.fitting = False
                entry.last_fit_finished = finished
                entry.last_fit_duration_s = duration
                if model is not None:
                    if not superseded and generation > entry.generation:
                        self._book.set_model(entry, model, generation)
                    entry.last_error = None
                    entry.consecutive_failures = 0
                    entry.next_refit_at = finished + jittered_interval(self._settings, self._rng, entry)
                else:
                    entry.last_error = error
                    entry.consecutive_failures += 1
                    entry.next_refit_at = finished + retry_delay(self._settings, entry.consecutive_failures)
                next_due = entry.next_refit_at
                if self._persistence.shared:
                    entry.next_refit_at += self._rng.uniform(0.0, self._settings.claim_spread_s)
                self._book.schedule.push(entry)
                if model is not None:
                    self._book.evict(keep=key)
        shared = self._persistence.shared_store
        if shared is not None:
            if superseded:
                with contextlib.suppress(StoreUnavailable):
                    newer = shared.load(key)
                    if newer is not None:
                        self._book.adopt(key, newer)
            with contextlib.suppress(StoreUnavailable):
                shared.finish_fit(claim, next_due if next_due is not None else finished)
        if model is not None and self._on_fit is None:  # else the owner's callback reports it, once
            self._log.info("model fitted", key=key, model=model.name, duration_s=round(duration, 3))
        if self._on_fit is not None:
            outcome = FitOutcome(
                key=key,
                ok=model is not None,
                started_at=started_at,
                finished_at=finished,
                duration_s=duration,
                error=error,
                model=model,
                discarded=not current,
            )
            try:
                self._on_fit(outcome)
            except Exception:
                self._log.exception("on_fit callback failed", key=key)


__all__ = ["FitRunner"]
