"""WorkerPool: daemon workers, a shutdown that never waits, overdue tasks abandoned and replaced (bounded)."""

from __future__ import annotations

import threading
import time

from forecasting.workers import WorkerPool

WAIT_S = 10.0


def test_results_and_exceptions_arrive_through_futures() -> None:
    pool = WorkerPool(2, name="t")
    assert pool.submit(lambda a, b: a + b, 2, 3).result(WAIT_S) == 5
    failing = pool.submit(lambda: 1 / 0)
    assert isinstance(failing.exception(WAIT_S), ZeroDivisionError)
    pool.shutdown()


def test_an_overdue_task_is_abandoned_and_replaced_within_a_bound() -> None:
    release = threading.Event()
    pool = WorkerPool(1, name="t", max_abandoned=1)
    stuck = [pool.submit(release.wait, tag=f"stuck-{i}", deadline_s=0.05) for i in range(2)]
    time.sleep(0.2)
    assert pool.reap() == ["stuck-0"]  # its worker is replaced: the next task runs
    time.sleep(0.2)
    assert pool.reap() == []  # the second stuck task is overdue too, but the bound of abandoned threads is met
    assert pool.abandoned == 1
    queued = pool.submit(lambda: "ran")
    release.set()
    assert queued.result(WAIT_S) == "ran"
    assert all(f.result(WAIT_S) is True for f in stuck)
    pool.shutdown()


def test_shutdown_never_waits_and_cancels_queued_tasks() -> None:
    release = threading.Event()
    pool = WorkerPool(1, name="t")
    running = pool.submit(release.wait)
    queued = pool.submit(lambda: None)
    started = time.monotonic()
    pool.shutdown()
    assert time.monotonic() - started < 1.0
    assert queued.cancelled()
    release.set()
    assert running.result(WAIT_S) is True
    assert all(t.daemon for t in threading.enumerate() if t.name.startswith("t-"))
