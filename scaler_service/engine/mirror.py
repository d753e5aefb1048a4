"""The local mirror of a shared store: what other replicas fetched and fitted, brought into this one.

Serving never calls the store: requests read the snapshots this mirror keeps current. :class:`MirrorRefresh`
polls the store's change counter (one round trip for the ids changed since the last poll);
:func:`apply_changes` reads the models and states of the changed series this replica follows. A replica new to a
series starts from its shared state (:func:`join_shared`, :func:`await_shared_state`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping

import structlog

from forecasting.store import StoreUnavailable
from scaler_service.engine.fetch import rescore_if_new
from scaler_service.engine.series import Series
from scaler_service.engine.types import ModelCacheView
from scaler_service.store.base import SeriesStore, SharedStore

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


def join_shared(series: Series, store: SharedStore, cache: ModelCacheView, now: float) -> None:
    """Start from what the other replicas know of the series (its shared state) when there is any."""
    try:
        store.register_series(series.id, now)
        state = store.load_states([series.id]).get(series.id)
    except StoreUnavailable:
        return
    if state is not None and series.is_newer(state):
        with series.lock:
            series.adopt(state)
            series.snapshot = series.build_snapshot(cache.get(series.id), now)


def await_shared_state(
    series: Series, store: SharedStore, cache: ModelCacheView, clock: Callable[[], float], wait_s: float
) -> None:
    """A new replica whose first claim lost: the winner hands its state on within a moment."""
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        try:
            state = store.load_states([series.id]).get(series.id)
        except StoreUnavailable:
            return
        if state is not None and series.is_newer(state):
            with series.lock:
                series.adopt(state)
                series.snapshot = series.build_snapshot(cache.get(series.id), clock())
            return
        time.sleep(0.05)


def apply_changes(
    series_ids: list[str],
    followed: Mapping[str, Series],
    store: SharedStore,
    cache: ModelCacheView,
    now: float,
    on_new_step: Callable[[Series, float], None],
) -> None:
    """Bring the followed series among ``series_ids`` up to date with the store: models first, then state."""
    local = [followed[i] for i in series_ids if i in followed]
    if not local:
        return
    ids = [s.id for s in local]
    for sid, generation in store.model_generations(ids).items():
        if generation > cache.generation(sid):
            stored = store.load(sid)
            if stored is not None:
                cache.adopt(sid, stored)
    states = store.load_states(ids)
    for series in local:
        state = states.get(series.id)
        new_step_ts: float | None = None
        with series.lock:
            model, generation = cache.current(series.id)
            if state is not None and series.is_newer(state):
                before = series.latest
                series.adopt(state)
                latest = series.latest
                step = series.key.step_s
                if latest is not None and (before is None or int(latest[0] // step) != int(before[0] // step)):
                    new_step_ts = latest[0]
            elif model is series.snapshot.model:
                continue
            rescore_if_new(series, model, generation)
            series.snapshot = series.build_snapshot(model, now)
        if new_step_ts is not None:
            on_new_step(series, new_step_ts)


__all__ = ["MirrorRefresh", "apply_changes", "await_shared_state", "join_shared"]
