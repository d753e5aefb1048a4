"""When each key of the model cache is fitted next: the due queue, the jittered refit interval, retry backoff.

After a successful fit the next one is due ``refit_interval_s`` later, moved by a random ``+-jitter_fraction`` so
that keys registered together do not refit together; after a failure the fit is retried ``retry_after_failure_s``
later, doubling with each further consecutive failure up to ``max_retry_after_failure_s`` (a series whose fit
always fails costs a fit every few hours, not every few minutes).
"""

from __future__ import annotations

import heapq
import itertools
import random
from collections.abc import Mapping

from forecasting.cache.records import CacheEntry, CacheSettings


def retry_delay(settings: CacheSettings, failures: int) -> float:
    """Delay before the next try of a fit that failed ``failures`` times in a row (>= 1)."""
    s = settings
    return min(s.retry_after_failure_s * 2.0 ** min(failures - 1, 62), s.max_retry_after_failure_s)


def jittered_interval(settings: CacheSettings, rng: random.Random, entry: CacheEntry) -> float:
    """Time from a successful fit of ``entry`` to its next one."""
    base = entry.refit_interval_s if entry.refit_interval_s is not None else settings.refit_interval_s
    j = settings.jitter_fraction
    return base * (1.0 + rng.uniform(-j, j)) if j > 0 else base


def settle(
    settings: CacheSettings,
    rng: random.Random,
    entry: CacheEntry,
    *,
    error: str | None,
    finished: float,
    duration_s: float,
    shared: bool,
) -> float:
    """Record that ``entry``'s fit ended (failed when ``error`` is given) and set when it is due next.

    Returns that due time; with a shared store ``entry`` is due a little (at random) later here, so processes do
    not all try to claim it at once. The caller pushes ``entry`` onto the queue again.
    """
    entry.fitting = False
    entry.last_fit_finished = finished
    entry.last_fit_duration_s = duration_s
    entry.last_error = error
    if error is None:
        entry.consecutive_failures = 0
        due = finished + jittered_interval(settings, rng, entry)
    else:
        entry.consecutive_failures += 1
        due = finished + retry_delay(settings, entry.consecutive_failures)
    entry.next_refit_at = due + (rng.uniform(0.0, settings.claim_spread_s) if shared else 0.0)
    return due


class DueQueue:
    """Registered keys by due time: a heap of ``(next_refit_at, seq, key)``.

    An entry is pushed again whenever its due time changes; the items this leaves behind are stale and skipped
    when they surface (key gone, fitting, or rescheduled), and the heap is rebuilt when they pile up. Not
    thread-safe: the cache calls it under its lock.
    """

    def __init__(self, entries: Mapping[str, CacheEntry]) -> None:
        self._entries = entries
        self._due: list[tuple[float, int, str]] = []
        self._seq = itertools.count()

    def push(self, entry: CacheEntry) -> None:
        heapq.heappush(self._due, (entry.next_refit_at, next(self._seq), entry.key))
        if len(self._due) > 4 * len(self._entries) + 64:
            self._due = [(e.next_refit_at, next(self._seq), k) for k, e in self._entries.items() if not e.fitting]
            heapq.heapify(self._due)

    def head(self) -> tuple[float, CacheEntry] | None:
        """The earliest valid due item, dropping stale ones (key gone, fitting, or rescheduled)."""
        while self._due:
            due_at, _, key = self._due[0]
            entry = self._entries.get(key)
            if entry is None or entry.fitting or entry.next_refit_at != due_at:
                heapq.heappop(self._due)
                continue
            return due_at, entry
        return None

    def pop(self) -> None:
        """Drop the head (after :meth:`head` returned it)."""
        heapq.heappop(self._due)

    def next_due_at(self) -> float | None:
        head = self.head()
        return None if head is None else head[0]

    def has_due(self, now: float) -> bool:
        head = self.head()
        return head is not None and head[0] <= now


__all__ = ["DueQueue", "jittered_interval", "retry_delay", "settle"]
