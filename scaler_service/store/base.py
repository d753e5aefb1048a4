"""What the engine needs of the store that coordinates replicas, and the store's health.

:class:`SeriesStore` is the engine's side: claiming a series' fetch, handing its state on, and learning what
other replicas changed. The model cache's side is :class:`forecasting.store.ModelStore`. The in-memory store
(one replica) and the Redis store (any number) implement both.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

import structlog

from forecasting.store import ModelStore, NotDue, StoreUnavailable
from scaler_service.store.state import SeriesState

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class FetchClaim:
    """The right to fetch ``series_id`` now. ``state`` is the shared state at the claim (None: none stored, or a
    store that is not shared: the replica continues from its own)."""

    series_id: str
    token: str
    state: SeriesState | None = None


class StoreMode(StrEnum):
    SHARED = "shared"
    """The store answers: work is claimed and shared."""
    ALONE = "alone"
    """The store is unreachable, within the outage grace: this replica fetches for itself."""
    EXPIRED = "expired"
    """Unreachable for longer than the grace: no fetching alone any more; data goes stale and is refused."""
    LOCAL = "local"
    """The in-memory store of a single replica."""


class SeriesStore(Protocol):
    @property
    def shared(self) -> bool: ...

    @property
    def leases_lost_total(self) -> int:
        """Claims this replica held that expired before their work finished (another replica may redo the work:
        a stalled replica, a clock step, a Redis restart); always 0 for a store that is not shared."""
        ...

    def register_series(self, series_id: str, now: float) -> None:
        """Make the series' fetch known to the store (due now unless it is scheduled already)."""
        ...

    def claim_fetch(self, series_id: str, now: float) -> FetchClaim | NotDue:
        """May raise StoreUnavailable."""
        ...

    def publish_state(self, claim: FetchClaim, state: SeriesState, next_due_at: float) -> bool:
        """Hand the state on and set the next fetch; False when the claim was lost (expired and taken)."""
        ...

    def load_states(self, series_ids: Iterable[str]) -> dict[str, SeriesState]:
        """The stored states of these series (missing ones left out). May raise StoreUnavailable."""
        ...

    def changed_since(self, cursor: int) -> tuple[int, list[str]]:
        """Series whose state or model changed after ``cursor`` and the new cursor. May raise StoreUnavailable."""
        ...

    def model_generations(self, series_ids: Iterable[str]) -> dict[str, int]:
        """The stored model generation of each series that has one. May raise StoreUnavailable."""
        ...

    def mode(self, now: float) -> StoreMode: ...

    def describe(self, now: float) -> str:
        """One line for /healthz."""
        ...

    def close(self) -> None: ...


class SharedStore(SeriesStore, ModelStore, Protocol):
    """Both sides in one object: what the server builds from ``--store`` and gives the engine and the cache."""


class StoreHealth:
    """Up or down, since when, and whether a call should be tried now.

    While the store is down, calls are refused at once (StoreUnavailable) except one probe per
    ``probe_every_s``, so a dead store costs no connect timeout per series.
    """

    def __init__(
        self,
        *,
        grace_s: float,
        probe_every_s: float = 1.0,
        clock: Callable[[], float] = time.time,
        on_change: Callable[[bool], None] | None = None,
    ) -> None:
        self.grace_s = grace_s
        self._probe_every_s = probe_every_s
        self._clock = clock
        self._on_change = on_change
        self._lock = threading.Lock()
        self.up = True
        self.down_since: float | None = None
        self.last_error: str | None = None
        self._last_probe = -1e18
        self.outages_total = 0

    def before_call(self) -> None:
        """Raises StoreUnavailable when the store is down and it is not time for a probe."""
        if self.up:
            return
        now = self._clock()
        with self._lock:
            if now - self._last_probe < self._probe_every_s:
                raise StoreUnavailable(f"shared store unreachable since {_iso(self.down_since)}: {self.last_error}")
            self._last_probe = now

    def succeeded(self) -> None:
        if self.up:
            return
        with self._lock:
            if self.up:
                return
            down_for = self._clock() - (self.down_since or self._clock())
            self.up = True
            self.down_since = None
        log.warning("shared store reachable again: back to shared work", down_s=round(down_for, 1))
        if self._on_change is not None:
            self._on_change(True)

    def failed(self, error: BaseException) -> StoreUnavailable:
        now = self._clock()
        newly_down = False
        with self._lock:
            self.last_error = f"{type(error).__name__}: {error}"[:300]
            self._last_probe = now
            if self.up:
                self.up = False
                self.down_since = now
                self.outages_total += 1
                newly_down = True
        if newly_down:
            log.error(
                "shared store unreachable: serving from the local mirror and fetching alone within the grace",
                error=self.last_error,
                grace_s=self.grace_s,
            )
            if self._on_change is not None:
                self._on_change(False)
        return StoreUnavailable(f"shared store unreachable: {self.last_error}")

    def mode(self, now: float) -> StoreMode:
        if self.up:
            return StoreMode.SHARED
        since = self.down_since if self.down_since is not None else now
        return StoreMode.ALONE if now - since <= self.grace_s else StoreMode.EXPIRED


def _iso(ts: float | None) -> str:
    return "?" if ts is None else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


__all__ = ["FetchClaim", "SeriesStore", "SharedStore", "StoreHealth", "StoreMode", "StoreUnavailable"]
