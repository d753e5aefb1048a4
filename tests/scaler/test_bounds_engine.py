"""Bounds of the series engine over real gRPC: caps on series and subscriptions, idle subscriptions, fetch and
fit deadlines, and a shutdown that finishes within its grace period whatever a fetch is doing."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest

from forecasting.serving import ServingModel
from scaler_service._generated import externalscaler_pb2 as pb
from scaler_service.client import ScalerClient
from scaler_service.sources.base import DataSource, Samples
from scaler_service.trigger import SeriesKey, TriggerSpec
from tests.scaler.conftest import (
    ScriptedFits,
    ScriptedSource,
    StartScaler,
    client_for,
    rpc_code,
    serving_line,
    wait_for,
)

ROOT = Path(__file__).resolve().parents[2]


def meta(query: str) -> dict[str, str]:
    return {"query": query, "threshold": "10"}


def get_metrics(server: object, namespace: str, name: str, query: str, timeout: float = 5.0) -> float:
    client = client_for(server)  # type: ignore[arg-type]
    try:
        request = pb.GetMetricsRequest(scaledObjectRef=client.ref(namespace, name, meta(query)), metricName="m")
        return float(client.stub.GetMetrics(request, timeout=timeout).metricValues[0].metricValueFloat)
    finally:
        client.close()


class BlockingSource(ScriptedSource):
    """The source argument of the engine: queries named ``stuck...`` block until the test releases them
    (a read that never returns, as from a FIFO or a server that accepts and never answers)."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()
        self.blocked = threading.Semaphore(0)

    def _block(self, query: str) -> None:
        if query.startswith("stuck"):
            self.blocked.release()
            self.release.wait()

    def fetch_range(self, query: str, start: float, end: float, step_s: float) -> Samples:
        self._block(query)
        return super().fetch_range(query, start, end, step_s)

    def fetch_latest(self, query: str, now: float) -> tuple[float, float] | None:
        self._block(query)
        return super().fetch_latest(query, now)


@pytest.fixture
def blocking() -> Iterator[BlockingSource]:
    source = BlockingSource()
    yield source
    source.release.set()


def test_series_cap_refuses_one_more_with_resource_exhausted(start_scaler: StartScaler, source: ScriptedSource) -> None:
    for q in ("a", "b", "c", "d"):
        source.set_live(q, 5.0)
    server = start_scaler(source, max_series=3)
    for q in ("a", "b", "c"):
        assert get_metrics(server, "ns", f"so-{q}", q) == 5.0
    client = client_for(server)
    request = pb.GetMetricsRequest(scaledObjectRef=client.ref("ns", "so-d", meta("d")), metricName="m")
    code, details = rpc_code(lambda: client.stub.GetMetrics(request, timeout=5))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "--max-series=3" in details
    # Known series still answer, and another ScaledObject on a known series is no new series.
    assert get_metrics(server, "ns", "other", "a") == 5.0
    assert len(server.engine) == 3
    text = server.registry.get_sample_value("foresight_series_refused_total", {"reason": "max_series"})
    assert text == 1.0


def test_subscription_cap(start_scaler: StartScaler, source: ScriptedSource) -> None:
    source.set_live("a", 5.0)
    server = start_scaler(source, max_subscriptions=2)
    assert get_metrics(server, "ns", "one", "a") == 5.0
    assert get_metrics(server, "ns", "two", "a") == 5.0
    client = client_for(server)
    request = pb.GetMetricsRequest(scaledObjectRef=client.ref("ns", "three", meta("a")), metricName="m")
    code, details = rpc_code(lambda: client.stub.GetMetrics(request, timeout=5))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "--max-subscriptions=2" in details


def test_a_scaledobject_that_stops_polling_is_forgotten(start_scaler: StartScaler, source: ScriptedSource) -> None:
    source.set_live("a", 5.0)
    server = start_scaler(source, subscription_idle=0.6)
    get_metrics(server, "ns", "gone", "a")
    get_metrics(server, "ns", "stays", "a")

    def only_stays_left() -> bool:
        get_metrics(server, "ns", "stays", "a")
        return [s.key.name for s in server.engine.subscriptions()] == ["stays"]

    wait_for(only_stays_left, timeout=10)
    assert len(server.engine) == 1  # the series itself is still polled


def test_a_fetch_over_its_deadline_is_abandoned_and_other_series_go_on(
    start_scaler: StartScaler, blocking: BlockingSource
) -> None:
    blocking.set_live("fine", 3.0)
    server = start_scaler(blocking, fetch_workers=1, fetch_deadline=0.5)
    client = client_for(server)
    stuck = pb.GetMetricsRequest(scaledObjectRef=client.ref("ns", "s", meta("stuck")), metricName="m")

    def refused_with_deadline() -> bool:
        try:
            client.stub.GetMetrics(stuck, timeout=5)
        except grpc.RpcError as exc:
            return exc.code() == grpc.StatusCode.UNAVAILABLE and "did not finish within" in (exc.details() or "")
        return False

    wait_for(refused_with_deadline, timeout=10)
    # The only fetch worker is blocked for good, yet a new series gets its first fetch.
    wait_for(lambda: _value_or_none(server, "fine") == 3.0, timeout=10)


class StuckFits(ScriptedFits):
    """Fits of queries named ``stuck...`` block until the test releases them (a fit the library never ends)."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()

    def __call__(
        self, key: SeriesKey, spec: TriggerSpec, source: DataSource
    ) -> Callable[[str, ServingModel | None], ServingModel]:
        fit = super().__call__(key, spec, source)
        if not key.query.startswith("stuck"):
            return fit

        def stuck(cache_key: str, previous: ServingModel | None) -> ServingModel:
            self.release.wait(60.0)
            return fit(cache_key, previous)

        return stuck


def test_a_fit_over_its_deadline_is_abandoned_and_other_series_are_fitted(
    start_scaler: StartScaler, source: ScriptedSource
) -> None:
    fits = StuckFits()
    fits.levels.update({"stuck": 4.0, "fine": 7.0})
    source.set_live("stuck", 3.0)
    source.set_live("fine", 3.0)
    server = start_scaler(source, fits=fits, max_concurrent_fits=1, fit_deadline=0.5)
    try:
        wait_for(lambda: _value_or_none(server, "stuck") is not None, timeout=10)
        wait_for(lambda: _value_or_none(server, "fine") is not None and fits.fits.get("fine", 0) >= 1, timeout=10)
        assert server.registry.get_sample_value("foresight_fits_total", {"outcome": "abandoned"}) == 1.0
        registered = server.cache.keys()
        statuses = [server.cache.status(key) for key in registered]
        errors = sorted((s.has_model, s.fitting, s.last_error) for s in statuses if s is not None)
        assert errors == [(False, False, "fit exceeded 0.5 s; abandoned"), (True, False, None)]
    finally:
        fits.release.set()


def _value_or_none(server: object, query: str) -> float | None:
    try:
        return get_metrics(server, "ns", query, query)
    except grpc.RpcError:
        return None


def test_stop_returns_within_the_grace_period_with_a_fetch_blocked_forever(
    start_scaler: StartScaler, blocking: BlockingSource
) -> None:
    server = start_scaler(blocking, fetch_deadline=600.0)
    with pytest.raises(grpc.RpcError):
        get_metrics(server, "ns", "s", "stuck", timeout=1.0)
    assert blocking.blocked.acquire(timeout=10)
    stopper = threading.Thread(target=server.stop, kwargs={"grace_s": 1.0}, daemon=True)
    started = time.monotonic()
    stopper.start()
    stopper.join(6.0)
    assert not stopper.is_alive(), "stop() waited on the blocked fetch"
    assert time.monotonic() - started < 6.0


def test_sigterm_ends_the_process_within_the_grace_period_with_a_fetch_blocked(tmp_path: Path) -> None:
    # A "Prometheus" that accepts connections and never answers: every fetch blocks in a socket read.
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(64)
    url = f"http://127.0.0.1:{silent.getsockname()[1]}"
    env = {**os.environ, "FORESIGHT_HTTP_PORT": "0", "FORESIGHT_BIND_ADDRESS": "127.0.0.1"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "scaler_service",
            "serve",
            "--grpc-port",
            "0",
            "--prometheus-url",
            url,
            "--prometheus-timeout-s",
            "300",
            "--grace-period-s",
            "1",
            "--kube-annotations",
            "false",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = serving_line(proc)
        port = json.loads(line)["grpc_port"]
        client = ScalerClient(grpc.insecure_channel(f"127.0.0.1:{port}"))
        with pytest.raises(grpc.RpcError):
            client.keda_poll("ns", "so", meta("up"), deadline_s=3.0)
        client.close()
        conn, _ = silent.accept()  # the fetch is connected and waiting for an answer that never comes
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(8)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise AssertionError("serve did not exit within its grace period with a fetch blocked") from None
        assert code == 0
        assert time.monotonic() - started < 8
        conn.close()
    finally:
        silent.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
