"""ModelCache: LRU bounds, refit scheduling, failures, one fit per key, persistence.

Time is driven by a fake clock and fits by a fit function whose progress the test controls with events, so
nothing here depends on how fast the machine is.
"""

from __future__ import annotations

import json
import random
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from structlog.testing import capture_logs

from forecasting.cache import CacheSettings, FitOutcome, ModelCache
from forecasting.curve import ForecastCurve
from forecasting.models.base import FittedModel
from forecasting.serving import ServingModel

T0 = 1_800_000_000.0
WAIT_S = 10.0  # upper bound for waits that should end almost at once; only a hang would reach it


class FakeClock:
    def __init__(self, t: float = T0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


def make_model(key: str, fitted_at: float, *, level: float = 1.0, points: int = 200) -> ServingModel:
    """A served model whose curve runs from an hour before ``fitted_at`` for ``points`` minutes."""
    start = fitted_at - 3600.0
    point = np.full(points, level)
    curve = ForecastCurve(start=start, step_s=60.0, point=point, lower=point * 0.5, upper=point * 2.0)
    fitted = FittedModel(name="constant", trained_until=fitted_at, curve=curve, params={"level": level})
    return ServingModel(key=key, model=fitted, confidence=0.75, fitted_at=fitted_at)


class ScriptedFit:
    """The fit function handed to the cache: records calls, can fail, can block until the test releases it."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.calls: list[tuple[str, ServingModel | None]] = []
        self.error: Exception | None = None
        self.gate: threading.Event | None = None
        self.entered = threading.Event()
        self.running = 0
        self.max_running = 0
        self.max_running_per_key: dict[str, int] = {}
        self._running_per_key: dict[str, int] = {}
        self._lock = threading.Lock()

    def __call__(self, key: str, previous: ServingModel | None) -> ServingModel:
        with self._lock:
            self.calls.append((key, previous))
            level = float(len(self.calls))
            self.running += 1
            self.max_running = max(self.max_running, self.running)
            n = self._running_per_key.get(key, 0) + 1
            self._running_per_key[key] = n
            self.max_running_per_key[key] = max(self.max_running_per_key.get(key, 0), n)
        self.entered.set()
        try:
            gate = self.gate
            if gate is not None and not gate.wait(WAIT_S):
                raise TimeoutError("test never released the fit")
            if self.error is not None:
                raise self.error
            return make_model(key, self.clock(), level=level)
        finally:
            with self._lock:
                self.running -= 1
                self._running_per_key[key] -= 1

    def calls_for(self, key: str) -> int:
        return sum(1 for k, _ in self.calls if k == key)


CacheFactory = Callable[..., ModelCache]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def new_cache(clock: FakeClock) -> Iterator[CacheFactory]:
    made: list[ModelCache] = []

    def factory(settings: CacheSettings | None = None, **kwargs: object) -> ModelCache:
        kwargs.setdefault("clock", clock)
        kwargs.setdefault("rng", random.Random(1234))
        cache = ModelCache(settings or CacheSettings(), **kwargs)  # type: ignore[arg-type]
        made.append(cache)
        return cache

    yield factory
    for cache in made:
        cache.stop(timeout=WAIT_S)


def fit_all(cache: ModelCache) -> None:
    assert cache.wait_idle(WAIT_S), "fits did not finish"


# --- scheduling --------------------------------------------------------------------------------------


def test_first_fit_is_due_at_once_and_next_is_jittered_within_bounds(new_cache: CacheFactory, clock: FakeClock) -> None:
    settings = CacheSettings(refit_interval_s=3600.0, jitter_fraction=0.1)
    cache = new_cache(settings)
    fit = ScriptedFit(clock)
    keys = [f"series-{i}" for i in range(40)]
    for key in keys:
        cache.register(key, fit)
        assert cache.get(key) is None
    assert cache.run_due() == 2  # two workers
    fit_all(cache)
    assert len(fit.calls) == len(keys)
    due_times = []
    for key in keys:
        status = cache.status(key)
        assert status is not None
        assert status.has_model and not status.fitting
        assert status.last_fit_finished == T0
        assert status.last_error is None
        assert T0 + 3600.0 * 0.9 <= status.next_refit_at <= T0 + 3600.0 * 1.1
        due_times.append(status.next_refit_at)
    # Jitter spreads the keys instead of refitting them all at the same moment.
    assert min(due_times) < T0 + 3600.0 * 0.97
    assert max(due_times) > T0 + 3600.0 * 1.03


def test_refit_runs_when_due_and_receives_the_previous_model(new_cache: CacheFactory, clock: FakeClock) -> None:
    cache = new_cache(CacheSettings(refit_interval_s=600.0, jitter_fraction=0.0))
    fit = ScriptedFit(clock)
    cache.register("a", fit)
    cache.run_due()
    fit_all(cache)
    first = cache.get("a")
    assert first is not None
    clock.advance(599.0)
    assert cache.run_due() == 0
    clock.advance(1.0)
    assert cache.run_due() == 1
    fit_all(cache)
    assert fit.calls[-1] == ("a", first)
    second = cache.get("a")
    assert second is not None and second is not first
    assert second.fitted_at == T0 + 600.0


def test_per_key_refit_interval(new_cache: CacheFactory, clock: FakeClock) -> None:
    cache = new_cache(CacheSettings(refit_interval_s=3600.0, jitter_fraction=0.0))
    fit = ScriptedFit(clock)
    cache.register("fast", fit, refit_interval_s=60.0)
    cache.register("slow", fit)
    fit_all(cache)
    fast, slow = cache.status("fast"), cache.status("slow")
    assert fast is not None and slow is not None
    assert fast.next_refit_at == T0 + 60.0
    assert slow.next_refit_at == T0 + 3600.0


def test_concurrency_limit_and_queueing(new_cache: CacheFactory, clock: FakeClock) -> None:
    cache = new_cache(CacheSettings(max_concurrent_fits=2))
    fit = ScriptedFit(clock)
    fit.gate = threading.Event()
    for i in range(5):
        cache.register(f"k{i}", fit)
    assert cache.run_due() == 2
    assert cache.run_due() == 0  # both workers busy
    assert cache.stats().fits_running == 2
    fit.gate.set()
    fit_all(cache)  # starts the three others as workers free up
    assert len(fit.calls) == 5
    assert fit.max_running <= 2
    assert cache.stats().fits_total == 5


# --- one fit per key, failures ------------------------------------------------------------------------


def _get_in_thread(cache: ModelCache, key: str) -> ServingModel | None:
    """Read from another thread, so a get() blocked by the fit fails the test instead of hanging it."""
    box: list[ServingModel | None] = []
    reader = threading.Thread(target=lambda: box.append(cache.get(key)))
    reader.start()
    reader.join(WAIT_S)
    assert not reader.is_alive(), "get() blocked while a fit was running"
    return box[0]


def test_only_one_fit_per_key_and_old_model_serves_meanwhile(new_cache: CacheFactory, clock: FakeClock) -> None:
    cache = new_cache(CacheSettings(max_concurrent_fits=4))
    fit = ScriptedFit(clock)
    cache.register("a", fit)
    cache.run_due()
    fit_all(cache)
    old = cache.get("a")
    assert old is not None

    fit.gate = threading.Event()
    fit.entered.clear()
    assert cache.request_refit("a") is True
    assert fit.entered.wait(WAIT_S)
    status = cache.status("a")
    assert status is not None and status.fitting
    for _ in range(5):
        assert cache.request_refit("a") is False
    clock.advance(10 * 3600.0)
    assert cache.run_due() == 0
    assert _get_in_thread(cache, "a") is old

    fit.gate.set()
    fit_all(cache)
    assert fit.calls_for("a") == 2
    assert fit.max_running_per_key["a"] == 1
    new = cache.get("a")
    assert new is not None and new is not old


def test_failing_refit_keeps_the_old_model_and_records_the_error(new_cache: CacheFactory, clock: FakeClock) -> None:
    outcomes: list[FitOutcome] = []
    cache = new_cache(CacheSettings(retry_after_failure_s=300.0, jitter_fraction=0.0), on_fit=outcomes.append)
    fit = ScriptedFit(clock)
    cache.register("a", fit)
    cache.run_due()
    fit_all(cache)
    good = cache.get("a")
    assert good is not None

    fit.error = RuntimeError("cmdstan exploded")
    clock.advance(100.0)
    assert cache.request_refit("a")
    fit_all(cache)
    assert cache.get("a") is good
    status = cache.status("a")
    assert status is not None
    assert status.last_error == "RuntimeError: cmdstan exploded"
    assert status.consecutive_failures == 1
    assert status.has_model
    assert status.next_refit_at == T0 + 100.0 + 300.0
    assert cache.stats().failures_total == 1
    assert outcomes[-1].ok is False and outcomes[-1].error == "RuntimeError: cmdstan exploded"

    clock.advance(299.0)
    assert cache.run_due() == 0  # retry waits retry_after_failure_s
    fit.error = None
    clock.advance(1.0)
    assert cache.run_due() == 1
    fit_all(cache)
    status = cache.status("a")
    assert status is not None
    assert status.last_error is None and status.consecutive_failures == 0
    assert cache.get("a") is not good
    assert [o.ok for o in outcomes] == [True, False, True]


def test_first_fit_failure_leaves_no_model(new_cache: CacheFactory, clock: FakeClock) -> None:
    cache = new_cache()
    fit = ScriptedFit(clock)
    fit.error = ValueError("only 1.0 of 2.0 days of history")
    cache.register("young", fit)
    fit_all(cache)
    assert cache.get("young") is None
    status = cache.status("young")
    assert status is not None and not status.has_model
    assert status.last_error is not None and "2.0 days" in status.last_error


def test_fit_returning_the_wrong_thing_is_a_failure(new_cache: CacheFactory, clock: FakeClock) -> None:
    cache = new_cache()
    cache.register("a", lambda key, prev: make_model("b", clock()))
    fit_all(cache)
    status = cache.status("a")
    assert status is not None and status.last_error is not None
    assert "model for key 'b'" in status.last_error
    assert cache.get("a") is None


def test_unregister_during_fit_discards_the_result(new_cache: CacheFactory, clock: FakeClock) -> None:
    outcomes: list[FitOutcome] = []
    cache = new_cache(on_fit=outcomes.append)
    fit = ScriptedFit(clock)
    fit.gate = threading.Event()
    cache.register("a", fit)
    assert cache.run_due() == 1
    assert fit.entered.wait(WAIT_S)
    cache.unregister("a")
    fit.gate.set()
    fit_all(cache)
    assert len(cache) == 0
    assert cache.get("a") is None
    assert outcomes[-1].discarded and outcomes[-1].ok
    assert cache.stats().bytes == 0


def test_refit_of_unknown_or_evicted_key_returns_false(new_cache: CacheFactory, clock: FakeClock) -> None:
    cache = new_cache(CacheSettings(max_entries=1))
    assert cache.request_refit("nope") is False
    fit = ScriptedFit(clock)
    cache.register("a", fit)
    cache.register("b", fit)  # evicts a
    assert cache.request_refit("a") is False
    assert cache.request_refit("b") is True
    fit_all(cache)
    assert fit.calls == [("b", None)]


# --- LRU bounds ---------------------------------------------------------------------------------------


def test_lru_eviction_by_count(new_cache: CacheFactory, clock: FakeClock) -> None:
    cache = new_cache(CacheSettings(max_entries=3))
    fit = ScriptedFit(clock)
    for key in ("a", "b", "c"):
        cache.register(key, fit)
    fit_all(cache)
    assert cache.get("a") is not None  # a is now the most recently used; b the least
    cache.register("d", fit)
    assert len(cache) == 3
    assert "b" not in cache
    assert cache.status("b") is None
    assert cache.get("b") is None
    assert set(cache.keys()) == {"a", "c", "d"}
    assert cache.stats().evictions_total == 1


def test_lru_eviction_by_bytes(new_cache: CacheFactory, clock: FakeClock) -> None:
    nbytes = make_model("x", T0).nbytes
    cache = new_cache(CacheSettings(max_bytes=2 * nbytes + nbytes // 2))
    fit = ScriptedFit(clock)
    cache.register("a", fit)
    cache.register("b", fit)
    fit_all(cache)
    assert cache.stats().bytes == 2 * nbytes
    assert cache.get("a") is not None  # LRU order now b, a
    cache.register("c", fit)
    fit_all(cache)
    assert "b" not in cache
    assert cache.get("a") is not None and cache.get("c") is not None
    stats = cache.stats()
    assert stats.bytes == 2 * nbytes
    assert stats.models == 2
    assert stats.evictions_total == 1


def test_a_single_model_above_the_byte_budget_is_kept_alone(new_cache: CacheFactory, clock: FakeClock) -> None:
    cache = new_cache(CacheSettings(max_bytes=100))
    fit = ScriptedFit(clock)
    cache.register("a", fit)
    cache.register("b", fit)
    fit_all(cache)
    assert len(cache) == 1
    assert cache.stats().bytes > 100


# --- persistence --------------------------------------------------------------------------------------


def test_persistence_round_trip_serves_at_once_without_fitting(
    new_cache: CacheFactory, clock: FakeClock, tmp_path: Path
) -> None:
    settings = CacheSettings(persist_dir=tmp_path / "models", jitter_fraction=0.0, refit_interval_s=3600.0)
    first = new_cache(settings)
    fit = ScriptedFit(clock)
    first.register("ns/app:rps", fit)
    fit_all(first)
    model = first.get("ns/app:rps")
    assert model is not None
    path = first.persist_path("ns/app:rps")
    assert path is not None and path.exists()
    assert len(path.stem) == 32
    doc = json.loads(path.read_text())
    assert doc["version"] == 1 and doc["key"] == "ns/app:rps"
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left behind
    first.stop()

    clock.advance(600.0)
    refit = ScriptedFit(clock)
    second = new_cache(settings)
    second.register("ns/app:rps", refit)
    served = second.get("ns/app:rps")
    assert served is not None
    assert served.to_json() == model.to_json()
    status = second.status("ns/app:rps")
    assert status is not None and status.next_refit_at == T0 + 3600.0
    assert second.run_due() == 0
    assert second.wait_idle(WAIT_S)
    assert refit.calls == []


def test_persisted_model_that_no_longer_covers_now_is_refitted_at_once(
    new_cache: CacheFactory, clock: FakeClock, tmp_path: Path
) -> None:
    settings = CacheSettings(persist_dir=tmp_path)
    first = new_cache(settings)
    first.register("a", ScriptedFit(clock))
    fit_all(first)
    first.stop()
    clock.advance(2 * 86_400.0)  # the 200-minute curve ended long ago
    second = new_cache(settings)
    refit = ScriptedFit(clock)
    second.register("a", refit)
    old = second.get("a")
    assert old is not None  # kept as the warm start for the refit
    assert second.run_due() == 1
    fit_all(second)
    assert refit.calls == [("a", old)]


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("{not json", "Expecting property name"),
        (json.dumps({**make_model("a", T0).to_json(), "version": 99}), "format version 99"),
        (json.dumps(make_model("other", T0).to_json()), "another key"),
        (json.dumps([1, 2]), "expected a JSON object"),
    ],
)
def test_corrupt_or_wrong_version_file_is_ignored_with_a_log_line(
    new_cache: CacheFactory, clock: FakeClock, tmp_path: Path, content: str, expected: str
) -> None:
    with capture_logs() as logs:
        cache = new_cache(CacheSettings(persist_dir=tmp_path))
        path = cache.persist_path("a")
        assert path is not None
        path.write_text(content)
        fit = ScriptedFit(clock)
        cache.register("a", fit)
        assert cache.get("a") is None
        fit_all(cache)
    assert fit.calls_for("a") == 1
    assert cache.get("a") is not None
    ignored = [e for e in logs if "ignoring" in e["event"] and e.get("key") == "a"]
    assert len(ignored) == 1
    assert ignored[0]["log_level"] == "warning"
    assert expected in ignored[0].get("error", "") + ignored[0]["event"]
    assert ignored[0]["path"] == str(path)
    # The successful fit replaced the bad file.
    assert json.loads(path.read_text())["key"] == "a"


# --- background scheduler -----------------------------------------------------------------------------


def test_background_scheduler_fits_registered_keys(new_cache: CacheFactory, clock: FakeClock) -> None:
    fitted = threading.Event()
    cache = new_cache(CacheSettings(jitter_fraction=0.0, refit_interval_s=60.0), on_fit=lambda outcome: fitted.set())
    fit = ScriptedFit(clock)
    cache.start()
    cache.register("a", fit)
    assert fitted.wait(WAIT_S), "the scheduler did not start the first fit"
    assert cache.get("a") is not None
    fitted.clear()
    clock.advance(60.0)  # the scheduler looks at the clock at least once a second
    assert fitted.wait(WAIT_S), "the scheduler did not start the due refit"
    assert fit.calls_for("a") == 2
    cache.stop()
    clock.advance(60.0)
    assert cache.run_due() == 0  # stopped: nothing starts


def test_settings_are_validated() -> None:
    with pytest.raises(ValueError, match="max_entries"):
        CacheSettings(max_entries=0)
    with pytest.raises(ValueError, match="jitter_fraction"):
        CacheSettings(jitter_fraction=1.0)
    with pytest.raises(ValueError, match="retry_after_failure_s"):
        CacheSettings(retry_after_failure_s=0.0)


def test_repeated_fit_failures_back_off_exponentially_up_to_a_cap(new_cache: CacheFactory, clock: FakeClock) -> None:
    cache = new_cache(CacheSettings(retry_after_failure_s=300.0, max_retry_after_failure_s=2000.0, jitter_fraction=0.0))
    fit = ScriptedFit(clock)
    fit.error = RuntimeError("x" * 100_000)
    cache.register("bad", fit)
    delays = []
    for _ in range(5):
        assert cache.run_due() == 1
        fit_all(cache)
        status = cache.status("bad")
        assert status is not None
        delays.append(status.next_refit_at - clock())
        clock.advance(status.next_refit_at - clock())
    assert delays == [300.0, 600.0, 1200.0, 2000.0, 2000.0]
    # The error kept per key is bounded, however long the exception's text.
    assert status is not None and status.last_error is not None and len(status.last_error) <= 600
    # A success resets the backoff.
    fit.error = None
    assert cache.run_due() == 1
    fit_all(cache)
    status = cache.status("bad")
    assert status is not None and status.consecutive_failures == 0
