"""ModelCache fit deadlines: a fit that blocks is abandoned, its worker replaced, its late result dropped.

Real threads and a real worker pool of one: the stuck fit blocks on an event the test sets at the end. The
deadline is measured on the real monotonic clock (0.5 s here); scheduling uses the test's fake clock.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from forecasting.cache import CacheSettings, FitOutcome, ModelCache
from forecasting.serving import ServingModel
from forecasting.store import FileModelStore
from tests.forecasting.test_cache import T0, WAIT_S, FakeClock, make_model

DEADLINE_S = 0.5
RETRY_S = 60.0


class StuckFit:
    """Fits at once, except while ``stuck`` is set for a key: then the call blocks until ``release`` is set."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.stuck: set[str] = set()
        self.release = threading.Event()
        self.entered = threading.Event()
        self.calls: list[str] = []
        self._lock = threading.Lock()

    def __call__(self, key: str, previous: ServingModel | None) -> ServingModel:
        with self._lock:
            self.calls.append(key)
            level = float(len(self.calls))
            blocks = key in self.stuck
        if blocks:
            self.entered.set()
            self.release.wait(60.0)  # a fit stuck in I/O; the test sets it when it is done
        return make_model(key, self.clock(), level=level)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def fit(clock: FakeClock) -> Iterator[StuckFit]:
    f = StuckFit(clock)
    yield f
    f.release.set()  # never leave a thread blocked behind the test


@pytest.fixture
def new_cache(clock: FakeClock) -> Iterator[Callable[..., ModelCache]]:
    made: list[ModelCache] = []

    def factory(**settings: object) -> tuple[ModelCache, list[FitOutcome]]:
        outcomes: list[FitOutcome] = []
        values: dict[str, object] = {
            "max_concurrent_fits": 1,
            "fit_deadline_s": DEADLINE_S,
            "retry_after_failure_s": RETRY_S,
            "jitter_fraction": 0.0,
            **settings,
        }
        cache = ModelCache(
            CacheSettings(**values),  # type: ignore[arg-type]
            clock=clock,
            rng=random.Random(7),
            on_fit=outcomes.append,
        )
        made.append(cache)
        return cache, outcomes

    yield factory  # type: ignore[misc]
    for cache in made:
        cache.stop(timeout=1.0)


def wait_for(condition: Callable[[], bool], what: str) -> None:
    end = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.01)


def test_a_stuck_fit_is_abandoned_the_last_model_serves_and_its_late_result_is_dropped(
    new_cache: Callable[..., tuple[ModelCache, list[FitOutcome]]], fit: StuckFit, clock: FakeClock, tmp_path: Path
) -> None:
    cache, outcomes = new_cache(persist_dir=tmp_path)
    cache.register("stuck", fit)
    assert cache.wait_idle(WAIT_S)
    good = cache.get("stuck")
    assert good is not None and cache.generation("stuck") == 1

    fit.stuck.add("stuck")
    clock.advance(10.0)
    assert cache.request_refit("stuck")
    assert fit.entered.wait(WAIT_S)
    cache.register("other", fit)  # due now; the only worker is held by the stuck fit

    # The stuck fit is abandoned after its deadline and "other" is fitted on the replacement worker.
    assert cache.wait_idle(WAIT_S), "the stuck fit held the only worker"
    assert cache.get("other") is not None
    assert cache.get("stuck") is good
    status = cache.status("stuck")
    assert status is not None
    assert status.last_error == f"fit exceeded {DEADLINE_S:g} s; abandoned"
    assert status.consecutive_failures == 1 and not status.fitting and status.has_model
    assert status.next_refit_at == T0 + 10.0 + RETRY_S
    stats = cache.stats()
    assert (stats.abandoned_total, stats.failures_total, stats.fits_running) == (1, 1, 0)
    abandoned = [o for o in outcomes if o.abandoned]
    assert [(o.key, o.ok, o.error) for o in abandoned] == [("stuck", False, status.last_error)]
    assert abandoned[0].duration_s >= DEADLINE_S

    # The stuck fit returns at last: its model is dropped, in memory and in the store.
    reports = len(outcomes)
    with capture_logs() as logs:
        fit.release.set()
        wait_for(
            lambda: (
                any(e["event"] == "late result of an abandoned fit dropped" for e in logs) or len(outcomes) > reports
            ),  # (had it been taken)
            "the late result",
        )
    assert cache.get("stuck") is good and cache.generation("stuck") == 1
    assert cache.status("stuck") == status
    assert len(outcomes) == reports
    stored = FileModelStore(tmp_path).load("stuck")
    assert stored is not None and stored.generation == 1 and stored.model.fitted_at == good.fitted_at

    # The retry, due after the failure backoff, fits normally.
    fit.stuck.clear()
    clock.advance(RETRY_S)
    assert cache.wait_idle(WAIT_S)
    refitted = cache.get("stuck")
    assert refitted is not None and refitted is not good and cache.generation("stuck") == 2
    status = cache.status("stuck")
    assert status is not None and status.last_error is None and status.consecutive_failures == 0
    assert outcomes[-1].key == "stuck" and outcomes[-1].ok


def test_the_scheduler_thread_reaps_stuck_fits_so_other_keys_are_fitted(
    new_cache: Callable[..., tuple[ModelCache, list[FitOutcome]]], fit: StuckFit
) -> None:
    cache, _ = new_cache()
    fit.stuck.add("stuck")
    cache.start()
    cache.register("stuck", fit)
    assert fit.entered.wait(WAIT_S)
    cache.register("other", fit)
    wait_for(lambda: cache.get("other") is not None, "the other key's fit")
    status = cache.status("stuck")
    assert status is not None and not status.has_model
    assert status.last_error == f"fit exceeded {DEADLINE_S:g} s; abandoned"
    assert cache.stats().abandoned_total == 1


def test_fit_deadline_must_be_positive() -> None:
    with pytest.raises(ValueError, match="fit_deadline_s"):
        CacheSettings(fit_deadline_s=0.0)
    with pytest.raises(ValueError, match="fit_deadline_s"):
        CacheSettings(fit_deadline_s=float("inf"))
