"""Model cache: one fitted :class:`ServingModel` per series, refitted in the background.

Serving reads a model with :meth:`ModelCache.get`: a dictionary read and an LRU touch under a lock that is
only ever held for a few dictionary operations, never during a fit or any I/O. Fits run on a small worker
pool; while a key is being refitted, and after a refit fails, the last good model keeps serving.

Scheduling: a registered key's first fit is due at once (unless a persisted model that still covers the
present was loaded); after a successful fit the next one is due ``refit_interval_s`` later, moved by a random
``+-jitter_fraction`` so that keys registered together do not refit together; after a failure the fit is
retried ``retry_after_failure_s`` later, doubling with each further consecutive failure up to
``max_retry_after_failure_s`` (a series whose fit always fails costs a fit every few hours, not every few
minutes). :meth:`ModelCache.request_refit` makes a key due now.

Fits run on daemon threads (:class:`forecasting.workers.WorkerPool`): a fit blocked in I/O never holds the
process at exit, and :meth:`ModelCache.stop` returns within its timeout.

Storage beyond memory goes through a :class:`forecasting.store.ModelStore`: with ``persist_dir`` alone a
:class:`~forecasting.store.FileModelStore` (``<persist_dir>/<sha256(key)[:32]>.json``, the versioned JSON of
``ServingModel.to_json()``, written atomically); or a store given by the caller, which other processes may share.
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
import heapq
import itertools
import math
import random
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import structlog

from forecasting.serving import ServingModel
from forecasting.store import FileModelStore, FitClaim, ModelStore, StoredModel, StoreUnavailable
from forecasting.workers import WorkerPool

FitFunction = Callable[[str, ServingModel | None], ServingModel]
"""``(key, previous model or None) -> new model``; raises on failure."""

_RECENT_DURATIONS = 64
_ERROR_KEPT_CHARS = 500
"""The text of a failed fit's error kept per key (and logged): an exception's message can be huge."""
_IDLE_POLL_S = 1.0
"""Longest the scheduler sleeps between looks at the clock (an injected clock may jump without notice)."""


@dataclass(frozen=True, slots=True)
class CacheSettings:
    max_entries: int = 10_000
    """Registered keys kept; the least recently used is evicted beyond this."""
    max_bytes: int = 512 * 2**20
    """Total ``ServingModel.nbytes`` kept; least recently used models are evicted beyond this."""
    refit_interval_s: float = 3600.0
    jitter_fraction: float = 0.1
    """Each refit interval is multiplied by a uniform random factor in [1 - j, 1 + j]."""
    max_concurrent_fits: int = 2
    retry_after_failure_s: float = 300.0
    """Delay before retrying after a failed fit; doubled after each further consecutive failure."""
    max_retry_after_failure_s: float = 6 * 3600.0
    """The longest delay between retries of a fit that keeps failing."""
    persist_dir: Path | None = None
    store_retry_s: float = 5.0
    """With a shared store that cannot be reached, a due fit is retried this much later."""
    claim_spread_s: float = 1.0
    """With a shared store, each process tries to claim a due fit up to this much (at random) after it is due,
    the last fitter too, so fits spread evenly over the processes instead of staying with the first one."""

    def __post_init__(self) -> None:
        if self.max_entries < 1:
            raise ValueError(f"max_entries must be >= 1, got {self.max_entries}")
        if self.max_bytes < 1:
            raise ValueError(f"max_bytes must be >= 1, got {self.max_bytes}")
        if not (math.isfinite(self.refit_interval_s) and self.refit_interval_s > 0):
            raise ValueError(f"refit_interval_s must be > 0 seconds, got {self.refit_interval_s}")
        if not 0.0 <= self.jitter_fraction < 1.0:
            raise ValueError(f"jitter_fraction must be in [0, 1), got {self.jitter_fraction}")
        if self.max_concurrent_fits < 1:
            raise ValueError(f"max_concurrent_fits must be >= 1, got {self.max_concurrent_fits}")
        if not (math.isfinite(self.retry_after_failure_s) and self.retry_after_failure_s > 0):
            raise ValueError(f"retry_after_failure_s must be > 0 seconds, got {self.retry_after_failure_s}")
        if not (
            math.isfinite(self.max_retry_after_failure_s)
            and self.max_retry_after_failure_s >= self.retry_after_failure_s
        ):
            raise ValueError(
                f"max_retry_after_failure_s must be >= retry_after_failure_s ({self.retry_after_failure_s}), "
                f"got {self.max_retry_after_failure_s}"
            )


@dataclass(frozen=True, slots=True)
class EntryStatus:
    key: str
    has_model: bool
    fitting: bool
    last_fit_started: float | None
    last_fit_finished: float | None
    last_fit_duration_s: float | None
    last_error: str | None
    """``"ExceptionType: message"`` of the last fit when it failed; None after a success."""
    consecutive_failures: int
    next_refit_at: float
    """Clock time when the next fit is due (while a fit runs: when the running one became due)."""


@dataclass(frozen=True, slots=True)
class FitOutcome:
    """What :class:`ModelCache` reports to ``on_fit`` after every fit."""

    key: str
    ok: bool
    started_at: float
    finished_at: float
    duration_s: float
    error: str | None
    model: ServingModel | None
    discarded: bool
    """True when the key was unregistered or evicted while the fit ran (the result was dropped)."""


@dataclass(frozen=True, slots=True)
class CacheStats:
    entries: int
    models: int
    bytes: int
    fits_running: int
    fits_total: int
    failures_total: int
    evictions_total: int
    persist_failures_total: int
    hits: int
    misses: int
    last_fit_durations_s: tuple[float, ...]
    """Durations of the most recent fits (oldest first, at most 64)."""


class _Entry:
    __slots__ = (
        "consecutive_failures",
        "fit_fn",
        "fitting",
        "generation",
        "key",
        "last_error",
        "last_fit_duration_s",
        "last_fit_finished",
        "last_fit_started",
        "model",
        "nbytes",
        "next_refit_at",
        "refit_interval_s",
    )

    def __init__(self, key: str, fit_fn: FitFunction, refit_interval_s: float | None) -> None:
        self.key = key
        self.fit_fn = fit_fn
        self.refit_interval_s = refit_interval_s
        self.model: ServingModel | None = None
        self.generation = 0
        self.nbytes = 0
        self.fitting = False
        self.next_refit_at = 0.0
        self.last_fit_started: float | None = None
        self.last_fit_finished: float | None = None
        self.last_fit_duration_s: float | None = None
        self.last_error: str | None = None
        self.consecutive_failures = 0


class ModelCache:
    """Fitted models keyed by series identity, bounded by count and bytes, refitted in the background.

    ``clock`` gives the time used for scheduling and status (epoch seconds); tests inject their own and
    drive fits with :meth:`run_due` and :meth:`wait_idle` without starting the scheduler thread.
    """

    def __init__(
        self,
        settings: CacheSettings = CacheSettings(),
        *,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        on_fit: Callable[[FitOutcome], None] | None = None,
        store: ModelStore | None = None,
    ) -> None:
        self._settings = settings
        self._clock = clock
        self._rng = rng if rng is not None else random.Random()
        self._on_fit = on_fit
        self._log = structlog.get_logger("forecasting.cache")
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._entries: OrderedDict[str, _Entry] = OrderedDict()  # least recently used first
        self._due: list[tuple[float, int, str]] = []  # heap; stale items are skipped when they surface
        self._seq = itertools.count()
        self._bytes = 0
        self._running = 0
        self._fits_total = 0
        self._failures_total = 0
        self._evictions_total = 0
        self._persist_failures_total = 0
        self._hits = 0
        self._misses = 0
        self._durations: deque[float] = deque(maxlen=_RECENT_DURATIONS)
        self._pool: WorkerPool | None = None
        self._scheduler: threading.Thread | None = None
        self._stopping = False
        if store is None and settings.persist_dir is not None:
            store = FileModelStore(settings.persist_dir)
        self._store = store

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
        if stored.model.key != key:
            return False
        with self._changed:
            entry = self._entries.get(key)
            if entry is None or stored.generation <= entry.generation:
                return False
            self._bytes += stored.model.nbytes - entry.nbytes
            entry.model = stored.model
            entry.generation = stored.generation
            entry.nbytes = stored.model.nbytes
            self._evict(keep=key)
        return True

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
        loaded = self._load_stored(key)  # I/O outside the lock
        with self._changed:
            existing = self._entries.get(key)
            if existing is not None:  # registered concurrently while we read the file
                existing.fit_fn = fit_fn
                self._entries.move_to_end(key)
                return
            entry = _Entry(key, fit_fn, refit_interval_s)
            now = self._clock()
            entry.next_refit_at = now
            if loaded is not None:
                entry.model = loaded.model
                entry.generation = loaded.generation
                entry.nbytes = loaded.model.nbytes
                self._bytes += entry.nbytes
                if loaded.model.covers(now, 0.0):
                    entry.next_refit_at = loaded.model.fitted_at + self._jittered_interval(entry)
            self._entries[key] = entry
            self._push_due(entry)
            self._evict(keep=key)
            self._changed.notify_all()

    def unregister(self, key: str) -> None:
        """Forget ``key`` (a running fit's result is dropped). Its stored model is kept."""
        with self._changed:
            entry = self._entries.pop(key, None)
            if entry is not None:
                self._bytes -= entry.nbytes
                self._changed.notify_all()
        if entry is not None and self._store is not None:
            self._store.forget(key)

    def request_refit(self, key: str) -> bool:
        """Make ``key`` due now and start its fit when a worker is free.

        False when a fit for ``key`` is already running (nothing is queued then) or when ``key`` is not
        registered (it may have been evicted: register it again). With a shared store the key is made due there
        too, so whichever process claims it first fits it.
        """
        if self._store is not None and self._store.shared and key in self._entries:
            with contextlib.suppress(StoreUnavailable):
                self._store.request_fit(key, self._clock())
        with self._changed:
            entry = self._entries.get(key)
            if entry is None:
                self._log.info("refit requested for a key that is not registered", key=key)
                return False
            if entry.fitting:
                return False
            now = self._clock()
            entry.next_refit_at = now
            self._push_due(entry)
            if not self._stopping:
                self._start_due(now)
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
                bytes=self._bytes,
                fits_running=self._running,
                fits_total=self._fits_total,
                failures_total=self._failures_total,
                evictions_total=self._evictions_total,
                persist_failures_total=self._persist_failures_total,
                hits=self._hits,
                misses=self._misses,
                last_fit_durations_s=tuple(self._durations),
            )

    # --- scheduling --------------------------------------------------------------------------------

    def run_due(self, now: float | None = None) -> int:
        """Start the fits that are due at ``now`` (default: the clock), as many as free workers allow.

        Returns how many started. Fits run on the worker pool; :meth:`wait_idle` waits for them.
        """
        with self._changed:
            if self._stopping:
                return 0
            return self._start_due(self._clock() if now is None else now)

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no fit runs and none is due (starting due ones as workers free up). False on timeout."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                now = self._clock()
                if not self._stopping:
                    self._start_due(now)
                if self._running == 0 and not self._has_due(now):
                    return True
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._changed.wait(min(remaining, _IDLE_POLL_S))

    def start(self) -> None:
        """Start the scheduler thread (and the worker pool). Idempotent."""
        with self._lock:
            if self._scheduler is not None and self._scheduler.is_alive():
                return
            self._stopping = False
            self._ensure_pool()
            self._scheduler = threading.Thread(target=self._schedule_loop, name="model-cache-scheduler", daemon=True)
            self._scheduler.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop scheduling, wait up to ``timeout`` for running fits, and shut the worker pool down."""
        deadline = time.monotonic() + timeout
        with self._changed:
            self._stopping = True
            self._changed.notify_all()
            scheduler, self._scheduler = self._scheduler, None
        if scheduler is not None:
            scheduler.join(max(0.0, deadline - time.monotonic()))
        with self._changed:
            while self._running > 0:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    self._log.warning("model cache stopped with fits still running", fits_running=self._running)
                    break
                self._changed.wait(remaining)
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(cancel_futures=True)

    # --- internals (the *_locked helpers below expect self._lock to be held) -------------------------

    def _schedule_loop(self) -> None:
        with self._changed:
            while not self._stopping:
                now = self._clock()
                try:
                    self._start_due(now)
                except Exception:  # keep scheduling whatever one start did
                    self._log.exception("model cache scheduler error")
                if self._running >= self._settings.max_concurrent_fits:
                    wait = _IDLE_POLL_S  # a finishing fit notifies
                else:
                    next_due = self._next_due_at()
                    wait = _IDLE_POLL_S if next_due is None else min(max(next_due - now, 0.001), _IDLE_POLL_S)
                self._changed.wait(wait)

    def _ensure_pool(self) -> WorkerPool:
        if self._pool is None:
            self._pool = WorkerPool(self._settings.max_concurrent_fits, name="model-fit")
        return self._pool

    def _retry_delay(self, failures: int) -> float:
        s = self._settings
        return min(s.retry_after_failure_s * 2.0 ** min(failures - 1, 62), s.max_retry_after_failure_s)

    def _jittered_interval(self, entry: _Entry) -> float:
        base = entry.refit_interval_s if entry.refit_interval_s is not None else self._settings.refit_interval_s
        j = self._settings.jitter_fraction
        return base * (1.0 + self._rng.uniform(-j, j)) if j > 0 else base

    def _push_due(self, entry: _Entry) -> None:
        heapq.heappush(self._due, (entry.next_refit_at, next(self._seq), entry.key))
        if len(self._due) > 4 * len(self._entries) + 64:
            self._due = [(e.next_refit_at, next(self._seq), k) for k, e in self._entries.items() if not e.fitting]
            heapq.heapify(self._due)

    def _head(self) -> tuple[float, _Entry] | None:
        """The earliest valid due item, dropping stale ones (key gone, fitting, or rescheduled)."""
        while self._due:
            due_at, _, key = self._due[0]
            entry = self._entries.get(key)
            if entry is None or entry.fitting or entry.next_refit_at != due_at:
                heapq.heappop(self._due)
                continue
            return due_at, entry
        return None

    def _next_due_at(self) -> float | None:
        head = self._head()
        return None if head is None else head[0]

    def _has_due(self, now: float) -> bool:
        head = self._head()
        return head is not None and head[0] <= now

    def _start_due(self, now: float) -> int:
        started = 0
        while self._running < self._settings.max_concurrent_fits:
            head = self._head()
            if head is None or head[0] > now:
                break
            heapq.heappop(self._due)
            entry = head[1]
            entry.fitting = True
            entry.last_fit_started = now
            self._running += 1
            self._ensure_pool().submit(self._fit, entry, entry.model, now)
            started += 1
        return started

    def _fit(self, entry: _Entry, previous: ServingModel | None, started_at: float) -> None:
        try:
            claim = self._claim(entry, started_at)
            if claim is None:
                return
            self._fit_claimed(entry, previous, started_at, claim)
        finally:
            # The worker counts as busy until its report is delivered, so wait_idle() covers on_fit too.
            with self._changed:
                self._running -= 1
                if not self._stopping:
                    self._start_due(self._clock())
                self._changed.notify_all()

    def _claim(self, entry: _Entry, now: float) -> FitClaim | None:
        """With a shared store: the claim, or None after rescheduling ``entry`` to when it is due there."""
        store = self._store
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
        with self._changed:
            if self._entries.get(entry.key) is entry:
                entry.fitting = False
                entry.next_refit_at = due
                self._push_due(entry)
        return None

    def _fit_claimed(self, entry: _Entry, previous: ServingModel | None, started_at: float, claim: FitClaim) -> None:
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
            error = _short(f"{type(exc).__name__}: {exc}")
            if self._on_fit is None:  # else the owner's callback reports it: one line per fit, not two
                self._log.warning("model fit failed", key=key, error=error, has_previous=previous is not None)
        duration = time.perf_counter() - t0
        generation = base_generation + 1
        stored_generation = generation
        if model is not None:
            stored_generation = self._save(key, model, generation)
        # Another process stored a newer model while this one was fitted: that one is taken instead.
        superseded = stored_generation > generation
        finished = started_at
        current = False
        next_due: float | None = None
        with self._changed:
            finished = self._clock()
            self._fits_total += 1
            self._durations.append(duration)
            current = self._entries.get(key) is entry
            if model is None:
                self._failures_total += 1
            if current:
                entry.fitting = False
                entry.last_fit_finished = finished
                entry.last_fit_duration_s = duration
                if model is not None:
                    if not superseded and generation > entry.generation:
                        self._bytes += model.nbytes - entry.nbytes
                        entry.model = model
                        entry.generation = generation
                        entry.nbytes = model.nbytes
                    entry.last_error = None
                    entry.consecutive_failures = 0
                    entry.next_refit_at = finished + self._jittered_interval(entry)
                else:
                    entry.last_error = error
                    entry.consecutive_failures += 1
                    entry.next_refit_at = finished + self._retry_delay(entry.consecutive_failures)
                next_due = entry.next_refit_at
                if self._store is not None and self._store.shared:
                    entry.next_refit_at += self._rng.uniform(0.0, self._settings.claim_spread_s)
                self._push_due(entry)
                if model is not None:
                    self._evict(keep=key)
        if self._store is not None and self._store.shared:
            if superseded:
                with contextlib.suppress(StoreUnavailable):
                    newer = self._store.load(key)
                    if newer is not None:
                        self.adopt(key, newer)
            with contextlib.suppress(StoreUnavailable):
                self._store.finish_fit(claim, next_due if next_due is not None else finished)
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

    def _evict(self, keep: str | None) -> None:
        s = self._settings
        while len(self._entries) > s.max_entries or self._bytes > s.max_bytes:
            victim: str | None = None
            for k in self._entries:  # least recently used first; stops at the first or second key
                if k != keep:
                    victim = k
                    break
            if victim is None:
                self._log.warning(
                    "model larger than the cache's byte budget kept alone",
                    key=keep,
                    bytes=self._bytes,
                    max_bytes=s.max_bytes,
                )
                return
            reason = "count" if len(self._entries) > s.max_entries else "bytes"
            entry = self._entries.pop(victim)
            self._bytes -= entry.nbytes
            self._evictions_total += 1
            self._log.info("model cache evicted", key=victim, reason=reason, bytes=entry.nbytes)

    # --- the store ---------------------------------------------------------------------------------

    def persist_path(self, key: str) -> Path | None:
        """Where the model for ``key`` is persisted (None unless the store is a directory of files)."""
        return self._store.path(key) if isinstance(self._store, FileModelStore) else None

    def _save(self, key: str, model: ServingModel, generation: int) -> int:
        """Store ``model``; returns the generation stored afterwards (``generation`` also when storing failed)."""
        if self._store is None:
            return generation
        try:
            return self._store.save(key, model, generation)
        except (OSError, TypeError, ValueError, StoreUnavailable) as exc:
            with self._lock:
                self._persist_failures_total += 1
            self._log.warning("could not store model", key=key, store=repr(self._store), error=str(exc))
            return generation

    def _load_stored(self, key: str) -> StoredModel | None:
        if self._store is None:
            return None
        try:
            return self._store.load(key)
        except StoreUnavailable as exc:
            self._log.info("stored model not read: the store is unreachable", key=key, error=str(exc))
            return None


def _short(text: str) -> str:
    return text if len(text) <= _ERROR_KEPT_CHARS else text[: _ERROR_KEPT_CHARS - 3] + "..."


__all__ = [
    "CacheSettings",
    "CacheStats",
    "EntryStatus",
    "FitFunction",
    "FitOutcome",
    "ModelCache",
]
