"""When each series is fetched next: one heap, one thread, and a pool that runs the due fetches.

The scheduler only orders work; the work (a series' tick) decides its own next delay and calls
:meth:`FetchScheduler.schedule` again. Every piece of work runs on a daemon worker with a deadline
(:class:`forecasting.workers.WorkerPool`): one that overruns it is abandoned, its worker replaced and
``on_overdue`` told, so one stuck source never starves the others and :meth:`stop` never waits on a fetch.
A periodic housekeeping callback (dropping idle series and subscriptions) runs on the scheduler thread.
"""

from __future__ import annotations

import heapq
import itertools
import threading
from collections.abc import Callable, Hashable
from concurrent.futures import Future
from typing import Any, Generic, TypeVar

from forecasting.workers import WorkerPool

K = TypeVar("K", bound=Hashable)


class FetchScheduler(Generic[K]):
    def __init__(
        self,
        *,
        workers: int,
        run: Callable[[K], None],
        clock: Callable[[], float],
        housekeeping: Callable[[], None] | None = None,
        housekeeping_every_s: float = 10.0,
        deadline_s: float | None = None,
        on_overdue: Callable[[K], None] | None = None,
    ) -> None:
        self._run_item = run
        self._clock = clock
        self._housekeeping = housekeeping
        self._housekeeping_every_s = housekeeping_every_s
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, K]] = []
        self._seq = itertools.count()
        self._deadline_s = deadline_s
        self._on_overdue = on_overdue
        self.pool = WorkerPool(workers, name="series-fetch")
        self._stopping = False
        self._thread: threading.Thread | None = None

    @property
    def stopping(self) -> bool:
        return self._stopping

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="series-scheduler", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Returns within ``timeout`` whatever a fetch is doing (workers are daemon threads)."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self.pool.shutdown(cancel_futures=True)
        if self._thread is not None:
            self._thread.join(timeout)

    def submit(self, fn: Callable[..., None], *args: Any, tag: K | None = None) -> Future[None]:
        return self.pool.submit(fn, *args, tag=tag, deadline_s=self._deadline_s)

    def schedule(self, key: K, delay_s: float) -> None:
        with self._cond:
            if self._stopping:
                return
            heapq.heappush(self._heap, (self._clock() + delay_s, next(self._seq), key))
            self._cond.notify()

    def _loop(self) -> None:
        next_housekeeping = self._clock() + self._housekeeping_every_s
        while True:
            due: list[K] = []
            with self._cond:
                if self._stopping:
                    return
                now = self._clock()
                while self._heap and self._heap[0][0] <= now:
                    due.append(heapq.heappop(self._heap)[2])
                if not due:
                    timeout = min(1.0, self._heap[0][0] - now) if self._heap else 1.0
                    self._cond.wait(max(0.01, timeout))
            for key in due:
                try:
                    self.pool.submit(self._run_item, key, tag=key, deadline_s=self._deadline_s)
                except RuntimeError:
                    return  # pool shut down
            for overdue in self.pool.reap():
                if self._on_overdue is not None and overdue is not None:
                    self._on_overdue(overdue)  # type: ignore[arg-type]
            if self._housekeeping is not None and self._clock() >= next_housekeeping:
                self._housekeeping()
                next_housekeeping = self._clock() + self._housekeeping_every_s


__all__ = ["FetchScheduler"]
