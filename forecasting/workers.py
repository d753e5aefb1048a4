"""A small pool of daemon worker threads whose tasks may carry a deadline.

Why not :class:`concurrent.futures.ThreadPoolExecutor`: its threads are joined at interpreter exit, so one
task blocked in I/O (a read that never returns) keeps the process alive after shutdown; and a blocked task
holds its worker for good, so a few such tasks starve every other one. Here:

- workers are daemon threads and :meth:`WorkerPool.shutdown` never waits: shutdown takes as long as the
  caller decides, whatever a task is doing;
- a task given ``deadline_s`` that overruns it is *abandoned* by :meth:`WorkerPool.reap`: its thread stops
  counting as a worker (it exits when the task returns) and a replacement starts, so other tasks go on. At
  most ``max_abandoned`` threads are abandoned at once; beyond that no replacement starts (memory and
  threads stay bounded) until an abandoned one returns.
"""

from __future__ import annotations

import itertools
import queue
import threading
import time
from collections.abc import Callable, Hashable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")

_POLL_S = 0.5


@dataclass(slots=True)
class _Task:
    future: Future[Any]
    fn: Callable[..., Any]
    args: tuple[Any, ...]
    tag: Hashable | None
    deadline_s: float | None
    started: float = 0.0
    abandoned: bool = False


class WorkerPool:
    def __init__(self, max_workers: int, *, name: str, max_abandoned: int | None = None) -> None:
        if max_workers < 1:
            raise ValueError(f"max_workers must be >= 1, got {max_workers}")
        self._max_workers = max_workers
        self._max_abandoned = max_workers if max_abandoned is None else max_abandoned
        self._name = name
        self._queue: queue.SimpleQueue[_Task | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._running: dict[int, _Task] = {}
        self._workers = 0
        self._abandoned = 0
        self._ids = itertools.count(1)
        self._stopping = False
        self.abandoned_total = 0

    @property
    def abandoned(self) -> int:
        """Threads abandoned and still blocked in their task."""
        return self._abandoned

    def submit(
        self, fn: Callable[..., T], *args: Any, tag: Hashable | None = None, deadline_s: float | None = None
    ) -> Future[T]:
        future: Future[T] = Future()
        with self._lock:
            if self._stopping:
                raise RuntimeError("cannot submit to a pool that was shut down")
            self._queue.put(_Task(future, fn, args, tag, deadline_s))
            if self._workers < self._max_workers:
                self._start_worker()
        return future

    def reap(self, now: float | None = None) -> list[Hashable | None]:
        """Abandon the running tasks past their deadline; the tags of those newly abandoned."""
        now = time.monotonic() if now is None else now
        overdue: list[Hashable | None] = []
        with self._lock:
            for task in self._running.values():
                if task.abandoned or task.deadline_s is None or now - task.started <= task.deadline_s:
                    continue
                if self._abandoned >= self._max_abandoned:
                    break
                task.abandoned = True
                self._abandoned += 1
                self.abandoned_total += 1
                self._workers -= 1
                overdue.append(task.tag)
                if not self._stopping:
                    self._start_worker()
        return overdue

    def shutdown(self, *, cancel_futures: bool = True) -> None:
        """Stop taking tasks; idle workers exit. Never waits for a running task."""
        with self._lock:
            self._stopping = True
            workers = self._workers
        if cancel_futures:
            while True:
                try:
                    task = self._queue.get_nowait()
                except queue.Empty:
                    break
                if task is not None:
                    task.future.cancel()
        for _ in range(workers):
            self._queue.put(None)

    def _start_worker(self) -> None:
        """Called with the lock held."""
        self._workers += 1
        thread = threading.Thread(target=self._work, name=f"{self._name}-{next(self._ids)}", daemon=True)
        thread.start()

    def _work(self) -> None:
        ident = threading.get_ident()
        while True:
            try:
                task = self._queue.get(timeout=_POLL_S)
            except queue.Empty:
                if self._stopping:
                    with self._lock:
                        self._workers -= 1
                    return
                continue
            if task is None:
                with self._lock:
                    self._workers -= 1
                return
            if not task.future.set_running_or_notify_cancel():
                continue
            with self._lock:
                task.started = time.monotonic()
                self._running[ident] = task
            try:
                result = task.fn(*task.args)
            except BaseException as exc:
                task.future.set_exception(exc)
            else:
                task.future.set_result(result)
            with self._lock:
                self._running.pop(ident, None)
                if task.abandoned:
                    # Replaced while it was blocked: this thread is surplus now.
                    self._abandoned -= 1
                    return
                if self._stopping and self._queue.empty():
                    self._workers -= 1
                    return


__all__ = ["WorkerPool"]
