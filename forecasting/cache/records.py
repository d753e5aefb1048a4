"""The model cache's records: its settings, what it reports (status, outcomes, stats) and its per-key entry."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from forecasting.serving import ServingModel

FitFunction = Callable[[str, ServingModel | None], ServingModel]
"""``(key, previous model or None) -> new model``; raises on failure."""

_ERROR_KEPT_CHARS = 500
"""The text of a failed fit's error kept per key (and logged): an exception's message can be huge."""


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
    fit_deadline_s: float = 900.0
    """A fit still running after this long is abandoned: its worker is replaced, the key's fit counts as failed
    (the last good model keeps serving) and is retried with the failure backoff; a result it returns later is
    dropped. Fits take seconds to a few minutes (a large Prophet fit), so only a stuck fit reaches it."""
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
        if not (math.isfinite(self.fit_deadline_s) and self.fit_deadline_s > 0):
            raise ValueError(f"fit_deadline_s must be > 0 seconds, got {self.fit_deadline_s}")
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
    abandoned: bool = False
    """True when the fit overran ``fit_deadline_s`` and was abandoned (``ok`` is False, ``error`` says so)."""


@dataclass(frozen=True, slots=True)
class CacheStats:
    entries: int
    models: int
    bytes: int
    fits_running: int
    fits_total: int
    failures_total: int
    """Fits that failed, the abandoned ones included."""
    abandoned_total: int
    """Fits abandoned because they overran ``fit_deadline_s``."""
    evictions_total: int
    persist_failures_total: int
    hits: int
    misses: int
    last_fit_durations_s: tuple[float, ...]
    """Durations of the most recent fits (oldest first, at most 64)."""


class CacheEntry:
    """What the cache keeps of one key (read and written under the cache's lock)."""

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


def short_error(text: str) -> str:
    """``text`` cut to what is kept of a fit's error."""
    return text if len(text) <= _ERROR_KEPT_CHARS else text[: _ERROR_KEPT_CHARS - 3] + "..."


__all__ = ["CacheEntry", "CacheSettings", "CacheStats", "EntryStatus", "FitFunction", "FitOutcome", "short_error"]
