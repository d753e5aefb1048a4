"""Runs the model cache's fits: the scheduler thread, the worker pool, claiming a fit, applying its result.

Fits run on daemon threads (:class:`forecasting.workers.WorkerPool`): a fit blocked in I/O never holds the
process at exit, and :meth:`FitRunner.stop` returns within its timeout.

Each fit has a deadline (``fit_deadline_s``). The scheduler loop (and :meth:`FitRunner.wait_idle`) reaps the
pool: a fit past its deadline is abandoned, its worker replaced (at most ``max_concurrent_fits`` threads are
left blocked at once, so threads stay bounded), and its key marked failed ("fit exceeded N s; abandoned") and
retried with the failure backoff while the last good model keeps serving. Every fit is an *attempt* with its own
token; a result is applied only while its attempt is current, so an abandoned fit that returns late changes
nothing, in memory or in the store.
"""

from __future__ import annotations

import contextlib
import itertools
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from forecasting.cache.book import ModelBook
from forecasting.cache.persistence import ModelPersistence
from forecasting.cache.records import CacheEntry, CacheSettings, FitOutcome, short_error
from forecasting.cache.schedule import settle
from forecasting.serving import ServingModel
from forecasting.store import FitClaim, StoreUnavailable
from forecasting.workers import WorkerPool

_RECENT_DURATIONS = 64
_IDLE_POLL_S = 1.0
"""Longest the scheduler sleeps between looks at the clock (an injected clock may jump without notice)."""
_REAPS_PER_DEADLINE = 4
"""While fits run, the pool is reaped at least this often per ``fit_deadline_s`` (and at least every second)."""


@dataclass(slots=True)
class _Attempt:
    """One fit of one key, from its start on the pool until its result is applied or it is abandoned."""

    entry: CacheEntry
    submitted: float
    """``time.perf_counter()`` when it was handed to the pool."""
    claim: FitClaim | None = None
    """The shared store's claim, once taken (released by whoever ends the attempt)."""
    finishing: bool = False
    """The fit function returned: its result is being applied and the attempt can no longer be abandoned."""


@dataclass(frozen=True, slots=True)
class _Abandoned:
    attempt: _Attempt
    outcome: FitOutcome
    next_due: float | None


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
        self.abandoned_total = 0
        self.durations: deque[float] = deque(maxlen=_RECENT_DURATIONS)
        self._pool: WorkerPool | None = None
        self._scheduler: threading.Thread | None = None
        self._attempts: dict[int, _Attempt] = {}
        """The current attempts by token (a token no longer here is abandoned or done)."""
        self._tokens = itertools.count(1)

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
        while True:
            with self._book.changed:
                now = self._clock()
                abandoned = self._abandon_overdue(now)
                if not self.stopping:
                    self.start_due(now)
                if self.running == 0 and not self._book.schedule.has_due(now) and not abandoned:
                    return True
                remaining = deadline - time.monotonic()
                if remaining <= 0 and not abandoned:
                    return False
                if not abandoned:
                    self._book.changed.wait(min(remaining, self._poll_s()))
            self._report_abandoned(abandoned)

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
        while True:
            abandoned: list[_Abandoned] = []
            with self._book.changed:
                if self.stopping:
                    return
                now = self._clock()
                try:
                    abandoned = self._abandon_overdue(now)
                    self.start_due(now)
                except Exception:  # keep scheduling whatever one start did
                    self._log.exception("model cache scheduler error")
                if not abandoned:
                    wait = self._poll_s()
                    if self.running < self._settings.max_concurrent_fits:  # else a finishing fit notifies
                        next_due = self._book.schedule.next_due_at()
                        if next_due is not None:
                            wait = min(max(next_due - now, 0.001), wait)
                    self._book.changed.wait(wait)
            self._report_abandoned(abandoned)

    def _poll_s(self) -> float:
        """How long the scheduler may sleep: while fits run, short enough to reap them soon after their deadline."""
        if self.running == 0:
            return _IDLE_POLL_S
        return min(_IDLE_POLL_S, max(0.01, self._settings.fit_deadline_s / _REAPS_PER_DEADLINE))

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
            token = next(self._tokens)
            self._attempts[token] = _Attempt(entry, time.perf_counter())
            self._ensure_pool().submit(
                self._fit, token, entry, entry.model, now, tag=token, deadline_s=self._settings.fit_deadline_s
            )
            started += 1
        return started

    def _fit(self, token: int, entry: CacheEntry, previous: ServingModel | None, started_at: float) -> None:
        try:
            claim = self._claim(token, entry, started_at)
            if claim is None:
                return
            self._fit_claimed(token, entry, previous, started_at, claim)
        finally:
            # The worker counts as busy until its report is delivered, so wait_idle() covers on_fit too. An
            # abandoned attempt stopped counting when it was abandoned.
            with self._book.changed:
                if self._attempts.pop(token, None) is not None:
                    self.running -= 1
                    if not self.stopping:
                        self.start_due(self._clock())
                    self._book.changed.notify_all()

    def _abandon_overdue(self, now: float) -> list[_Abandoned]:
        """Abandon the attempts the pool found past their deadline. The book's lock is held; the caller reports
        the result with :meth:`_report_abandoned` once it is released."""
        pool = self._pool
        if pool is None or self.running == 0:
            return []
        abandoned: list[_Abandoned] = []
        deadline = self._settings.fit_deadline_s
        for token in pool.reap():
            if not isinstance(token, int) or (attempt := self._attempts.get(token)) is None or attempt.finishing:
                continue  # done, or its result is being applied: the pool's replacement worker costs nothing
            del self._attempts[token]
            self.running -= 1
            self.fits_total += 1
            self.failures_total += 1
            self.abandoned_total += 1
            entry = attempt.entry
            duration = time.perf_counter() - attempt.submitted
            error = f"fit exceeded {deadline:g} s; abandoned"
            current = self._book.entries.get(entry.key) is entry
            next_due: float | None = None
            if current:
                next_due = self._reschedule(entry, error=error, finished=now, duration_s=duration)
            outcome = FitOutcome(
                key=entry.key,
                ok=False,
                started_at=entry.last_fit_started if entry.last_fit_started is not None else now,
                finished_at=now,
                duration_s=duration,
                error=error,
                model=None,
                discarded=not current,
                abandoned=True,
            )
            abandoned.append(_Abandoned(attempt, outcome, next_due))
        if abandoned:
            self._book.changed.notify_all()
        return abandoned

    def _report_abandoned(self, abandoned: list[_Abandoned]) -> None:
        """Release the shared store's claims of abandoned attempts and report them. Called without the lock."""
        shared = self._persistence.shared_store
        for item in abandoned:
            outcome = item.outcome
            claim = item.attempt.claim
            if shared is not None and claim is not None:
                with contextlib.suppress(StoreUnavailable):
                    shared.finish_fit(claim, item.next_due if item.next_due is not None else outcome.finished_at)
            if self._on_fit is None:  # else the owner's callback reports it, once
                self._log.warning("model fit abandoned", key=outcome.key, error=outcome.error)
            else:
                self._report(outcome)

    def _claim(self, token: int, entry: CacheEntry, now: float) -> FitClaim | None:
        """With a shared store: the claim, or None after rescheduling ``entry`` to when it is due there (or when
        the attempt was abandoned while claiming)."""
        store = self._persistence.shared_store
        if store is None:
            return FitClaim(key=entry.key, token="")
        try:
            result = store.claim_fit(entry.key, now)
        except StoreUnavailable as exc:
            due = now + self._settings.store_retry_s
            self._log.info("fit postponed: the shared store is unreachable", key=entry.key, error=str(exc))
        else:
            if isinstance(result, FitClaim):
                with self._book.changed:
                    attempt = self._attempts.get(token)
                    if attempt is not None:
                        attempt.claim = result
                        return result
                # Abandoned while claiming: the abandonment rescheduled the key; hand the claim back.
                with contextlib.suppress(StoreUnavailable):
                    store.finish_fit(result, entry.next_refit_at)
                return None
            due = max(result.due_at, now + 0.001) + self._rng.uniform(0.0, self._settings.claim_spread_s)
        with self._book.changed:
            if token in self._attempts and self._book.entries.get(entry.key) is entry:
                entry.fitting = False
                entry.next_refit_at = due
                self._book.schedule.push(entry)
        return None

    def _fit_claimed(
        self, token: int, entry: CacheEntry, previous: ServingModel | None, started_at: float, claim: FitClaim
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
        with self._book.changed:
            attempt = self._attempts.get(token)
            if attempt is not None:
                attempt.finishing = True  # from here on its result is applied, however long that takes
        if attempt is None:
            self._log.info(
                "late result of an abandoned fit dropped", key=key, ok=model is not None, duration_s=round(duration, 3)
            )
            return
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
                if model is not None and not superseded and generation > entry.generation:
                    self._book.set_model(entry, model, generation)
                next_due = self._reschedule(entry, error=error, finished=finished, duration_s=duration)
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
            self._report(outcome)

    def _reschedule(self, entry: CacheEntry, *, error: str | None, finished: float, duration_s: float) -> float:
        """After an attempt ends (the book's lock held): ``entry``'s next fit time, on the schedule again."""
        next_due = settle(
            self._settings,
            self._rng,
            entry,
            error=error,
            finished=finished,
            duration_s=duration_s,
            shared=self._persistence.shared,
        )
        self._book.schedule.push(entry)
        return next_due

    def _report(self, outcome: FitOutcome) -> None:
        """The owner's callback, which must not take the fit runner down with it."""
        assert self._on_fit is not None
        try:
            self._on_fit(outcome)
        except Exception:
            self._log.exception("on_fit callback failed", key=outcome.key)


__all__ = ["FitRunner"]
