"""Three scaler processes over one real redis-server, called the way KEDA calls them (round robin).

Steps are short (a fetch every second, refits every 8 s, 2 s leases) so the whole file runs in under a minute.
The series are replayed traces (the replay source), so every replica could fetch and fit on its own: what the
tests check is that they do not, and that they answer alike.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from scaler_service.client import ScalerClient
from tests.support.redis import RedisServer, binary_missing
from tests.support.replicas import Replica, launch_replica, round_robin_channel, start_replicas, wait_ready

FETCH_EVERY_S = 1.0
REFIT_EVERY_S = 8.0
LEASE_S = 2.0
SERIES = 3
ARGS = [
    "--source",
    "replay",
    "--fetch-interval-s",
    str(FETCH_EVERY_S),
    "--refit-interval-s",
    str(REFIT_EVERY_S),
    "--lease",
    f"{LEASE_S:g}s",
    "--redis-outage-grace",
    "60s",
    "--max-concurrent-fits",
    "1",
    "--fetch-workers",
    "2",
    "--grpc-workers",
    "4",
]


def metadata(i: int) -> dict[str, str]:
    return {
        "query": f"nasa-http-1995?scale={1 + i / 10:g}",
        "threshold": "10",
        "queryStep": "5m",
        "historyTimeWindow": "4d",
        "minConfidence": "0",
        "predictHorizon": "15m",
    }


def name(i: int) -> str:
    return f"web-{i}"


@dataclass
class Deployment:
    redis: RedisServer
    replicas: list[Replica]
    directory: Path

    def live(self) -> list[Replica]:
        return [r for r in self.replicas if r.alive]

    def total(self, metric: str, **labels: str) -> float:
        return sum(r.metric(metric, **labels) for r in self.live())


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    reason = binary_missing()
    if reason is not None:
        pytest.skip(reason)
    directory = tmp_path_factory.mktemp("replicas")
    redis = RedisServer(directory)
    redis.start()
    replicas: list[Replica] = []
    try:
        replicas = start_replicas(2, directory, [*ARGS, "--store", redis.url])
        yield Deployment(redis, replicas, directory)
    finally:
        for r in replicas:
            r.stop()
        redis.stop()


def poll(client: ScalerClient, i: int) -> float:
    return client.keda_poll("shop", name(i), metadata(i)).value_float


def wait_for(condition: Callable[[], bool], timeout: float, what: str, replicas: list[Replica]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{replicas[0].log_tail(2000)}")


def served(replica: Replica, i: int) -> dict[str, object]:
    docs = replica.forecast("shop", name(i))
    return docs[0] if docs else {}


def generation(replica: Replica, i: int) -> int:
    model = served(replica, i).get("model")
    return int(model["generation"]) if isinstance(model, dict) else 0  # type: ignore[call-overload]


def forecasting_everywhere(deployment: Deployment) -> bool:
    for r in deployment.live():
        for i in range(SERIES):
            doc = served(r, i)
            if not isinstance(doc.get("served"), dict) or doc["served"].get("reason") != "forecast":  # type: ignore[union-attr,attr-defined]
                return False
    return True


def test_replicas_answer_alike(deployment: Deployment) -> None:
    with round_robin_channel(deployment.replicas) as channel:
        keda = ScalerClient(channel)
        for i in range(SERIES):
            for _ in range(2):  # every replica hears of every ScaledObject, as KEDA's round robin does
                poll(keda, i)
    wait_for(lambda: forecasting_everywhere(deployment), 60, "forecasts on every replica", deployment.replicas)
    a, b = (ScalerClient(grpc.insecure_channel(r.address)) for r in deployment.replicas[:2])
    try:
        for i in range(SERIES):
            va, vb = poll(a, i), poll(b, i)
            observed = [float(served(r, i)["served"]["observed"]) for r in deployment.replicas[:2]]  # type: ignore[index]
            step_change = abs(observed[0] - observed[1])
            assert abs(va - vb) <= max(0.01 * max(va, vb), step_change + 1e-9), (i, va, vb, observed)
            assert generation(deployment.replicas[0], i) == generation(deployment.replicas[1], i) >= 1
    finally:
        a.close()
        b.close()


def test_a_replica_started_later_serves_the_shared_forecast_at_once(deployment: Deployment) -> None:
    late = launch_replica("replica-late", deployment.directory, [*ARGS, "--store", deployment.redis.url])
    deployment.replicas.append(late)
    wait_ready([late])
    first = deployment.replicas[0]
    with grpc.insecure_channel(late.address) as ch1, grpc.insecure_channel(first.address) as ch2:
        late_client, first_client = ScalerClient(ch1), ScalerClient(ch2)
        value = poll(late_client, 0)  # its very first poll of the series
        reference = poll(first_client, 0)
    doc = served(late, 0)
    assert doc["served"]["reason"] == "forecast", doc["served"]  # type: ignore[index]
    observed = float(doc["served"]["observed"])  # type: ignore[index]
    assert abs(value - reference) <= max(0.01 * reference, 1e-9) or abs(value - reference) <= abs(
        observed - float(served(first, 0)["served"]["observed"])  # type: ignore[index]
    )
    assert generation(late, 0) == generation(first, 0) >= 1
    assert late.metric("foresight_fits_total") == 0  # it fitted nothing: the model came from Redis


def test_each_series_fetched_once_per_step_and_fitted_once_per_interval(deployment: Deployment) -> None:
    with round_robin_channel(deployment.live()) as channel:
        keda = ScalerClient(channel)
        for _ in range(3):
            for i in range(SERIES):
                poll(keda, i)
    fetches0 = deployment.total("foresight_fetches_total")
    fits0 = deployment.total("foresight_fits_total", outcome="ok")
    window = 2 * REFIT_EVERY_S
    time.sleep(window)
    fetches = deployment.total("foresight_fetches_total") - fetches0
    fits = deployment.total("foresight_fits_total", outcome="ok") - fits0
    expected_fetches = SERIES * window / FETCH_EVERY_S
    replicas = len(deployment.live())
    assert 0.7 * expected_fetches <= fetches <= 1.25 * expected_fetches + SERIES, (fetches, expected_fetches, replicas)
    # With +-10 % jitter a series is refitted 1 to 3 times in two intervals; each replica on its own would be 3x that.
    assert SERIES <= fits <= SERIES * (window / (0.9 * REFIT_EVERY_S) + 1), fits
    per_replica = [r.metric("foresight_fits_total", outcome="ok") for r in deployment.live()]
    assert sum(1 for n in per_replica if n > 0) >= 2, per_replica  # fits are spread, not all on one replica


def test_redis_outage_within_the_grace_fails_no_answer(deployment: Deployment) -> None:
    replicas = deployment.live()
    generations_before = {(r.name, i): generation(r, i) for r in replicas for i in range(SERIES)}
    failures: list[str] = []
    answers = 0
    deployment.redis.stop(kill=True)
    try:
        with round_robin_channel(replicas) as channel:
            keda = ScalerClient(channel)
            until = time.monotonic() + 4.0
            while time.monotonic() < until:
                for i in range(SERIES):
                    try:
                        poll(keda, i)
                        answers += 1
                    except grpc.RpcError as exc:
                        failures.append(f"{exc.code().name}: {exc.details()}")
        assert failures == [] and answers > 0
        for r in replicas:
            assert r.metric("foresight_shared_store_up") == 0
            assert "unreachable" in r.healthz()
    finally:
        deployment.redis.start()
    wait_for(
        lambda: all(r.metric("foresight_shared_store_up") == 1 for r in replicas), 10, "back to shared work", replicas
    )
    for r in replicas:  # exported by every shared replica (how many were lost to the restart depends on timing)
        assert ("foresight_shared_store_leases_lost_total", ()) in r.samples()
    fetches0 = deployment.total("foresight_fetches_total")
    time.sleep(4.0)
    fetches = deployment.total("foresight_fetches_total") - fetches0
    assert fetches <= 1.25 * SERIES * 4.0 / FETCH_EVERY_S + SERIES, fetches  # shared again, not x replicas
    for r in replicas:
        for i in range(SERIES):
            assert generation(r, i) >= generations_before[(r.name, i)]


def test_kill_9_of_a_replica(deployment: Deployment) -> None:
    victim, *survivors = deployment.live()
    failures: list[str] = []
    ages: list[float] = []
    stop = threading.Event()

    def keep_polling(replica: Replica) -> None:
        with grpc.insecure_channel(replica.address) as channel:
            client = ScalerClient(channel)
            while not stop.is_set():
                for i in range(SERIES):
                    try:
                        poll(client, i)
                    except grpc.RpcError as exc:
                        failures.append(f"{replica.name}: {exc.code().name}: {exc.details()}")
                time.sleep(0.05)

    pollers = [threading.Thread(target=keep_polling, args=(r,)) for r in survivors]
    for t in pollers:
        t.start()
    try:
        time.sleep(0.5)
        victim.kill()
        killed_at = time.time()
        generations = {i: generation(survivors[0], i) for i in range(SERIES)}
        while time.time() < killed_at + LEASE_S + 4 * FETCH_EVERY_S:
            for i in range(SERIES):
                latest = served(survivors[0], i).get("latest")
                assert isinstance(latest, dict)
                ages.append(time.time() - float(latest["timestamp"]))
            time.sleep(0.2)
        # Refits go on without the victim (its claims expired after one lease at most).
        wait_for(
            lambda: all(generation(survivors[0], i) > generations[i] for i in range(SERIES)),
            REFIT_EVERY_S * 1.1 + LEASE_S + 6,
            "refits after the kill",
            survivors,
        )
    finally:
        stop.set()
        for t in pollers:
            t.join()
    assert failures == []
    # Data never got older than one lease plus a fetch interval (and scheduling slack): fetches moved on at once.
    assert max(ages) <= LEASE_S + 2 * FETCH_EVERY_S + 1.0, max(ages)
