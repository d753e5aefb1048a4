"""Model cache: one fitted :class:`ServingModel` per series, refitted in the background.

Serving reads a model with :meth:`ModelCache.get`: a dictionary read and an LRU touch under a lock that is
only ever held for a few dictionary operations, never during a fit or any I/O. Fits run on a small worker
pool; while a key is being refitted, and after a refit fails, the last good model keeps serving.

Scheduling (:mod:`forecasting.cache.schedule`): a registered key's first fit is due at once (unless a persisted
model that still covers the present was loaded); then after the jittered refit interval, or the retry backoff
after a failure. :meth:`ModelCache.request_refit` makes a key due now.

Fits run on daemon threads (:class:`forecasting.workers.WorkerPool`): a fit blocked in I/O never holds the
process at exit, and :meth:`ModelCache.stop` returns within its timeout.

Storage beyond memory (:mod:`forecasting.cache.persistence`) goes through a :class:`forecasting.store.ModelStore`.
:meth:`ModelCache.register` loads a stored model when there is a readable one in the current format. Each model
has a *generation* (1, 2, ...): a fit stores generation + 1, and :meth:`ModelCache.adopt` takes a model another
process stored only when its generation is higher, so a key's generation never goes back.

With a shared store a due fit is first *claimed* there: when another process fits the key or fitted it
recently the claim is refused with the shared due time, which becomes this process's due time; nothing is
fitted twice. While the store is unreachable fits wait (the last good model keeps serving) and are retried
every ``store_retry_s``.
"""

from __future__ import annotations

import contextlib
import math
import random
import time
from collections.abc import Callable
from pathlib import Path

import structlog

from forecasting.cache.book import ModelBook
from forecasting.cache.persistence import ModelPersistence
from forecasting.cache.records import (
    CacheEntry,
    CacheSettings,
    CacheStats,
    EntryStatus,
    FitFunction,
    FitOutcome,
)
from forecasting.cache.runner import FitRunner
from forecasting.cache.schedule import jittered_interval
from forecasting.serving import ServingModel
from forecasting.store import FileModelStore, ModelStore, StoredModel, StoreUnavailable


class ModelCache:
    """Fitted models keyed by series identity, bounded by count and bytes, refitted in the background.

    ``clock`` gives the time used for scheduling and status (epoch seconds); tests inject their own and
    drive fits with :meth:`run_due` and :meth:`wait_idle` without starting the scheduler thread.
    """

    def __init__(
        self,
        settings: CacheSettings | None = None,
        *,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        on_fit: Callable[[FitOutcome], None] | None = None,
        store: ModelStore | None = None,
    ) -> None:
        settings = settings if settings is not None else CacheSettings()
        self._settings = settings
        self._clock = clock
        self._rng = rng if rng is not None else random.Random()
        self._log = structlog.get_logger("forecasting.cache")
        self._book = ModelBook(settings, self._log)
        self._lock = self._book.lock
        self._changed = self._book.changed
        self._entries = self._book.entries
        self._schedule = self._book.schedule
        self._hits = 0
        self._misses = 0
        if store is None and settings.persist_dir is not None:
            store = FileModelStore(settings.persist_dir)
        self._persistence = ModelPersistence(store, self._log)
        self._runner = FitRunner(
            self._book, self._persistence, clock=clock, rng=self._rng, on_fit=on_fit, log=self._log
        )

    @property
    def settings(self) -> CacheSettings:
        return self._settings

    # --- hot path ----------------------------------------------------------------------------------

    def get(self, key: str) -> ServingModel | None:
        """The current model for ``key`` (None if unknown or not fitted yet). O(1), never waits for a fit."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None or entry.model is None:
                self._misses += 1
                if entry is not None:
                    self._entries.move_to_end(key)
                return None
            self._entries.move_to_end(key)
            self._hits += 1
            return entry.model

    def generation(self, key: str) -> int:
        """Generation of the model held for ``key`` (0: none)."""
        entry = self._entries.get(key)
        return 0 if entry is None or entry.model is None else entry.generation

    def current(self, key: str) -> tuple[ServingModel | None, int]:
        """The model for ``key`` and its generation, read together ((None, 0) when there is none)."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None or entry.model is None:
                return None, 0
            return entry.model, entry.generation

    def adopt(self, key: str, stored: StoredModel) -> bool:
        """Take a model another process stored, when ``key`` is registered and ``stored`` is a newer generation."""
        return self._book.adopt(key, stored)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def keys(self) -> list[str]:
        """Registered keys, least recently used first."""
        with self._lock:
            return list(self._entries)

    # --- registration ------------------------------------------------------------------------------

    def register(self, key: str, fit_fn: FitFunction, *, refit_interval_s: float | None = None) -> None:
        """Start keeping a model for ``key``. Registering a known key again only updates ``fit_fn`` and the
        interval (when given) and counts as a use; its model and schedule stay."""
        if not isinstance(key, str) or not key:
            raise ValueError(f"key must be a non-empty string, got {key!r}")
        if refit_interval_s is not None and not (math.isfinite(refit_interval_s) and refit_interval_s > 0):
            raise ValueError(f"refit_interval_s must be > 0 seconds, got {refit_interval_s}")
        with self._lock:
            existing = self._entries.get(key)
            if existing is not None:
                existing.fit_fn = fit_fn
                if refit_interval_s is not None:
                    existing.refit_interval_s = refit_interval_s
                self._entries.move_to_end(key)
                return
        loaded = self._persistence.load(key)  # I/O outside the lock
        with self._changed:
            existing = self._entries.get(key)
            if existing is not None:  # registered concurrently while we read the file
                existing.fit_fn = fit_fn
                self._entries.move_to_end(key)
                return
            entry = CacheEntry(key, fit_fn, refit_interval_s)
            now = self._clock()
            entry.next_refit_at = now
            if loaded is not None:
                self._book.set_model(entry, loaded.model, loaded.generation)
                if loaded.model.covers(now, 0.0):
                    entry.next_refit_at = loaded.model.fitted_at + jittered_interval(self._settings, self._rng, entry)
            self._entries[key] = entry
            self._schedule.push(entry)
            self._book.evict(keep=key)
            self._changed.notify_all()

    def unregister(self, key: str) -> None:
        """Forget ``key`` (a running fit's result is dropped). Its stored model is kept."""
        with self._changed:
            entry = self._entries.pop(key, None)
            if entry is not None:
                self._book.bytes -= entry.nbytes
                self._changed.notify_all()
        if entry is not None and self._persistence.store is not None:
            self._persistence.store.forget(key)

    def request_refit(self, key: str) -> bool:
        """Make ``key`` due now and start its fit when a worker is free.

        False when a fit for ``key`` is already running (nothing is queued then) or when ``key`` is not
        registered (it may have been evicted: register it again). With a shared store the key is made due there
        too, so whichever process claims it first fits it.
        """
        shared = self._persistence.shared_store
        if shared is not None and key in self._entries:
            with contextlib.suppress(StoreUnavailable):
                shared.request_fit(key, self._clock())
        with self._changed:
            entry = self._entries.get(key)
            if entry is None:
                self._log.info("refit requested for a key that is not registered", key=key)
                return False
            if entry.fitting:
                return False
            now = self._clock()
            entry.next_refit_at = now
            self._schedule.push(entry)
            if not self._runner.stopping:
                self._runner.start_due(now)
            self._changed.notify_all()
            return True

    def status(self, key: str) -> EntryStatus | None:
        with self._lock:
            e = self._entries.get(key)
            if e is None:
                return None
            return EntryStatus(
                key=e.key,
                has_model=e.model is not None,
                fitting=e.fitting,
                last_fit_started=e.last_fit_started,
                last_fit_finished=e.last_fit_finished,
                last_fit_duration_s=e.last_fit_duration_s,
                last_error=e.last_error,
                consecutive_failures=e.consecutive_failures,
                next_refit_at=e.next_refit_at,
            )

    def stats(self) -> CacheStats:
        with self._lock:
            return CacheStats(
                entries=len(self._entries),
                models=sum(1 for e in self._entries.values() if e.model is not None),
                bytes=self._book.bytes,
                fits_running=self._runner.running,
                fits_total=self._runner.fits_total,
                failures_total=self._runner.failures_total,
                abandoned_total=self._runner.abandoned_total,
                evictions_total=self._book.evictions_total,
                persist_failures_total=self._persistence.failures_total,
                hits=self._hits,
                misses=self._misses,
                last_fit_durations_s=tuple(self._runner.durations),
            )

    # --- scheduling --------------------------------------------------------------------------------

    def run_due(self, now: float | None = None) -> int:
        """Start the fits that are due at ``now`` (default: the clock), as many as free workers allow.

        Returns how many started. Fits run on the worker pool; :meth:`wait_idle` waits for them.
        """
        return self._runner.run_due(now)

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no fit runs and none is due (starting due ones as workers free up). False on timeout."""
        return self._runner.wait_idle(timeout)

    def start(self) -> None:
        """Start the scheduler thread (and the worker pool). Idempotent."""
        self._runner.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop scheduling, wait up to ``timeout`` for running fits, and shut the worker pool down."""
        self._runner.stop(timeout)

    def persist_path(self, key: str) -> Path | None:
        """Where the model for ``key`` is persisted (None unless the store is a directory of files)."""
        return self._persistence.path(key)


__all__ = ["ModelCache"]
