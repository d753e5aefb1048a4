"""The local mirror's refresh: polls the shared store's change counter and hands the changed series to the engine.

Serving never calls the store: requests read the snapshots this refresh keeps current. A poll is one round trip
(the counter and the ids changed since the last poll); the engine then reads only the series it follows.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import structlog

from forecasting.store import StoreUnavailable
from scaler_service.store.base import SeriesStore

log = structlog.get_logger(__name__)


class MirrorRefresh:
    def __init__(self, store: SeriesStore, apply: Callable[[list[str]], None], interval_s: float = 0.25) -> None:
        self._store = store
        self._apply = apply
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.cursor = 0

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="store-mirror", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def poll_once(self) -> int:
        """One refresh; returns how many changed series were seen (0 when the store is unreachable)."""
        try:
            cursor, changed = self._store.changed_since(self.cursor)
            if changed:
                self._apply(changed)
        except StoreUnavailable:
            return 0  # the same changes are read again on the next poll
        self.cursor = cursor
        return len(changed)

    def _loop(self) -> None:
        while not self._stop.wait(self._interval_s):
            try:
                self.poll_once()
            except Exception:
                log.exception("mirror refresh failed")


__all__ = ["MirrorRefresh"]
