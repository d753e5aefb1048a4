"""The Redis store against a real redis-server: claims, leases, hand-over, generations, change polling, outages."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import numpy as np
import pytest

from forecasting.curve import ForecastCurve
from forecasting.models.base import FittedModel
from forecasting.serving import ServingModel
from forecasting.store import FitClaim, NotDue, StoreUnavailable
from scaler_service.store.address import RedisConfigError, parse_store_url, read_password
from scaler_service.store.base import FetchClaim, StoreMode
from scaler_service.store.redis_store import RedisStore
from scaler_service.store.state import SeriesState, SharedBreaker, decode_state, encode_state
from tests.support.redis import RedisServer


def model(key: str, level: float) -> ServingModel:
    curve = ForecastCurve(
        start=time.time() - 3600,
        step_s=60.0,
        point=np.full(300, level),
        lower=np.full(300, level),
        upper=np.full(300, level),
    )
    return ServingModel(
        key=key,
        model=FittedModel(name="flat", trained_until=time.time(), curve=curve),
        confidence=0.9,
        fitted_at=time.time(),
    )


@pytest.fixture
def stores(redis_url: str) -> Iterator[Callable[..., RedisStore]]:
    made: list[RedisStore] = []

    def make(url: str = redis_url, **kw: float) -> RedisStore:
        store = RedisStore(parse_store_url(url), lease_s=kw.pop("lease_s", 1.0), **kw)  # type: ignore[arg-type]
        made.append(store)
        return store

    yield make
    for s in made:
        s.close()


def test_store_url_forms() -> None:
    assert parse_store_url("redis://cache:6380/2").url == "redis://cache:6380/2"
    assert parse_store_url("rediss://cache").tls
    assert parse_store_url("redis://cache").port == 6379
    for bad, why in [
        ("http://cache:6379", "scheme"),
        ("redis://:secret@cache:6379/0", "credentials"),
        ("redis://cache:6379/x", "not a number"),
        ("redis:///0", "no host"),
        ("redis://cache:6379/0?ssl=1", "query"),
    ]:
        with pytest.raises(RedisConfigError, match=why):
            parse_store_url(bad)


def test_password_from_file_first_line(tmp_path) -> None:  # type: ignore[no-untyped-def]
    f = tmp_path / "pw"
    f.write_text("s3cret\n")
    assert read_password(f, "from-env") == "s3cret"
    assert read_password(None, "from-env") == "from-env"
    f.write_bytes(b"x" * 2000)
    with pytest.raises(RedisConfigError, match="1 KiB"):
        read_password(f, None)


def test_fetch_claimed_once_and_handed_on(stores: Callable[..., RedisStore]) -> None:
    a, b = stores(), stores()
    now = time.time()
    a.register_series("s-1", now)
    first = a.claim_fetch("s-1", now)
    assert isinstance(first, FetchClaim) and first.state is None
    other = b.claim_fetch("s-1", now)
    assert isinstance(other, NotDue) and now < other.due_at <= now + 1.01
    state = SeriesState(last_fetch_at=now, latest=(now, 5.0), obs={10: 5.0}, seeded=True)
    assert a.publish_state(first, state, next_due_at=now + 0.3)
    later = b.claim_fetch("s-1", now + 0.1)
    assert isinstance(later, NotDue) and later.due_at == pytest.approx(now + 0.3)
    taken = b.claim_fetch("s-1", now + 0.31)
    assert isinstance(taken, FetchClaim) and taken.state is not None
    assert taken.state.latest == (now, 5.0) and dict(taken.state.obs) == {10: 5.0}


def test_dead_holder_loses_its_claim_within_one_lease(stores: Callable[..., RedisStore]) -> None:
    a, b = stores(lease_s=0.5), stores(lease_s=0.5)
    now = time.time()
    assert isinstance(a.claim_fetch("s-2", now), FetchClaim)
    a.close()  # no renewal any more: like a replica killed mid-fetch
    assert isinstance(b.claim_fetch("s-2", time.time()), NotDue)
    time.sleep(0.6)
    assert isinstance(b.claim_fetch("s-2", time.time()), FetchClaim)


def test_a_held_lease_is_renewed_while_the_work_runs(stores: Callable[..., RedisStore]) -> None:
    a, b = stores(lease_s=1.0), stores(lease_s=1.0)
    claim = a.claim_fit("k", time.time())
    assert isinstance(claim, FitClaim)
    time.sleep(3.0)  # three leases long: renewed every third of a lease
    assert isinstance(b.claim_fit("k", time.time()), NotDue)
    a.finish_fit(claim, next_due_at=time.time() + 60)
    due = b.claim_fit("k", time.time())
    assert isinstance(due, NotDue) and due.due_at > time.time() + 50


def test_a_lost_claim_does_not_overwrite_the_new_holder(stores: Callable[..., RedisStore]) -> None:
    a, b = stores(lease_s=0.3), stores(lease_s=0.3)
    now = time.time()
    claim = a.claim_fetch("s-3", now)
    assert isinstance(claim, FetchClaim)
    a._release("foresight:lease:fetch:s-3")  # stop renewing, as if the replica stalled
    time.sleep(0.4)
    newer = b.claim_fetch("s-3", time.time())
    assert isinstance(newer, FetchClaim)
    assert not a.publish_state(claim, SeriesState(last_fetch_at=now), next_due_at=now + 100)
    assert b.publish_state(newer, SeriesState(last_fetch_at=now + 1), next_due_at=now + 5)
    assert b.load_states(["s-3"])["s-3"].last_fetch_at == now + 1
    assert (a.leases_lost_total, b.leases_lost_total) == (1, 0)  # exported as foresight_shared_store_leases_lost


def test_model_generation_never_goes_back(stores: Callable[..., RedisStore]) -> None:
    a, b = stores(), stores()
    assert a.save("k", model("k", 1.0), 2) == 2
    assert b.save("k", model("k", 9.0), 1) == 2  # older: refused, the stored generation is returned
    assert b.save("k", model("k", 9.0), 2) == 2  # equal: refused too
    stored = b.load("k")
    assert stored is not None and stored.generation == 2 and stored.model.curve.point[0] == 1.0
    assert b.save("k", model("k", 3.0), 3) == 3
    assert a.model_generations(["k", "unknown"]) == {"k": 3}


def test_changes_are_polled_by_cursor(stores: Callable[..., RedisStore]) -> None:
    a = stores()
    cursor, ids = a.changed_since(0)
    assert ids == []
    a.save("m1", model("m1", 1.0), 1)
    claim = a.claim_fetch("s-4", time.time())
    assert isinstance(claim, FetchClaim)
    a.publish_state(claim, SeriesState(last_fetch_at=1.0), time.time() + 10)
    cursor2, ids = a.changed_since(cursor)
    assert ids == ["m1", "s-4"] and cursor2 > cursor
    assert a.changed_since(cursor2) == (cursor2, [])


def test_outage_refuses_fast_then_recovers(redis_factory: Callable[[], RedisServer]) -> None:
    server = redis_factory()
    changes: list[bool] = []
    store = RedisStore(parse_store_url(server.url), lease_s=1.0, outage_grace_s=0.5, on_health_change=changes.append)
    try:
        assert store.mode(time.time()) is StoreMode.SHARED
        server.stop(kill=True)
        with pytest.raises(StoreUnavailable):
            store.claim_fetch("s", time.time())
        assert store.mode(time.time()) is StoreMode.ALONE
        assert "unreachable" in store.describe(time.time())
        t0 = time.monotonic()
        for _ in range(100):
            with pytest.raises(StoreUnavailable):
                store.claim_fetch("s", time.time())
        assert time.monotonic() - t0 < 0.5  # refused at once, not a connect timeout per call
        time.sleep(0.6)
        assert store.mode(time.time()) is StoreMode.EXPIRED
        server.start()
        time.sleep(1.05)  # the next probe
        assert isinstance(store.claim_fetch("s", time.time()), FetchClaim)
        assert store.mode(time.time()) is StoreMode.SHARED
        assert changes == [False, True]
    finally:
        store.close()


def test_state_round_trip_and_damage() -> None:
    state = SeriesState(
        last_fetch_at=5.0,
        latest=(5.0, float("nan")),
        obs={1: 2.0, 2: float("nan")},
        compared={1: (2.5, 2.0)},
        model_generation=4,
        error_kind="unavailable",
        error="down",
        breakers=(SharedBreaker(query="lat", slo=0.2, open=True, events=((1.0, True, 0.3),)),),
    )
    back = decode_state(encode_state(state))
    assert back.model_generation == 4 and back.compared == {1: (2.5, 2.0)} and back.breakers == state.breakers
    assert np.isnan(back.obs[2]) and back.obs[1] == 2.0
    from scaler_service.store.state import StateFormatError

    for damaged in ["[1]", '{"format": "other"}', '{"format":"foresight.series-state","version":1,"obs_i":["x"]}']:
        with pytest.raises(StateFormatError):
            decode_state(damaged)
