"""End to end against a real Prometheus (Debian's binary, TSDB backfilled by promtool from the NASA trace):
the scaler reads through PrometheusSource, fits with the real pipeline, and answers KEDA's calls over gRPC."""

from __future__ import annotations

import contextlib
import json
import time
import urllib.request
from typing import Any

import grpc
import numpy as np
import pytest

from scaler_service.engine import default_fit_factory
from scaler_service.sources.base import Samples
from scaler_service.sources.prometheus import PrometheusSource
from scaler_service.trigger import TriggerParser
from tests.scaler.conftest import StartScaler, client_for, rpc_code, wait_for
from tests.support.prometheus import (  # noqa: F401  (fixtures, used by name)
    NASA_METRIC,
    PrometheusServer,
    StartPrometheus,
    nasa_series,
    prometheus_factory,
    series,
    session_prometheus_factory,
)

pytestmark = pytest.mark.prometheus

NS = "web"


@pytest.fixture(scope="module")
def nasa_prometheus(session_prometheus_factory: StartPrometheus) -> PrometheusServer:  # noqa: F811
    now = time.time()
    minutes = np.arange(now - 6 * 3600, now - 60, 60.0)
    return session_prometheus_factory(
        nasa_series(now=now, days=3),
        series("worker_queue_depth", minutes, np.full(len(minutes), 5.0), pod="a"),
        series("worker_queue_depth", minutes, np.full(len(minutes), 7.0), pod="b"),
    )


def _meta(query: str, **kw: str) -> dict[str, str]:
    return {
        "scalerAddress": "foresight:9090",
        "query": query,
        "threshold": "20",
        "queryStep": "5m",
        "historyTimeWindow": "2d",
        **kw,
    }


def test_real_prometheus_real_fit(start_scaler: StartScaler, nasa_prometheus: PrometheusServer) -> None:
    server = start_scaler(None, fits=default_fit_factory(), prometheus_url=nasa_prometheus.url)
    client = client_for(server)
    md = _meta(NASA_METRIC)
    first = client.keda_poll(NS, "frontend", md)
    assert first.value_float > 0  # the observed request rate, at once
    key = server.parser.parse(md).series_key.id
    wait_for(
        lambda: (s := server.cache.status(key)) is not None and (s.has_model or s.last_error is not None),
        timeout=120,
    )
    status = server.cache.status(key)
    assert status is not None and status.has_model, status
    answer = client.keda_poll(NS, "frontend", md)
    with urllib.request.urlopen(f"http://127.0.0.1:{server.http_port}/forecast", timeout=5) as r:
        (view,) = json.loads(r.read())["scaledObjects"]
    assert view["model"] is not None and view["curve"]
    assert view["served"]["value"] == pytest.approx(answer.value_float)
    # Two days of history are too short to backtest: the model has confidence 0 and the observed value is
    # served, with the reason spelled out.
    assert view["served"]["reason"] == "low-confidence"
    assert answer.value_float == pytest.approx(view["served"]["observed"])


def test_several_series_or_none(start_scaler: StartScaler, nasa_prometheus: PrometheusServer) -> None:
    server = start_scaler(None, prometheus_url=nasa_prometheus.url)
    client = client_for(server)
    code, details = rpc_code(lambda: client.keda_poll(NS, "workers", _meta("worker_queue_depth")))
    assert code is grpc.StatusCode.FAILED_PRECONDITION
    assert "2 series" in details and "sum(" in details
    assert client.keda_poll(NS, "workers", _meta("sum(worker_queue_depth)")).value_float == 12.0
    code, details = rpc_code(lambda: client.keda_poll(NS, "typo", _meta('worker_queue_depth{pod="zz"}')))
    assert code is grpc.StatusCode.FAILED_PRECONDITION
    assert "no data" in details
    code, details = rpc_code(lambda: client.keda_poll(NS, "syntax", _meta("sum(")))
    assert code is grpc.StatusCode.FAILED_PRECONDITION
    # GetMetricSpec never asks Prometheus: a broken query still has a metric spec.
    assert client.stub.GetMetricSpec(client.ref(NS, "syntax", _meta("sum(")), timeout=3).metricSpecs


def _value(client: Any, md: dict[str, str]) -> float | grpc.StatusCode:
    try:
        return float(client.keda_poll(NS, "api", md).value_float)
    except grpc.RpcError as exc:
        return exc.code()


def test_prometheus_stopped_mid_run_then_restarted(
    start_scaler: StartScaler,
    prometheus_factory: StartPrometheus,  # noqa: F811
) -> None:
    now = time.time()
    minutes = np.arange(now - 3 * 3600, now - 30, 60.0)
    prom = prometheus_factory(series("api_requests_rate", minutes, np.full(len(minutes), 33.0)))
    server = start_scaler(None, prometheus_url=prom.url, prometheus_timeout_s=2.0)
    client = client_for(server)
    md = _meta("api_requests_rate")
    assert client.keda_poll(NS, "api", md).value_float == 33.0
    prom.stop()
    wait_for(lambda: _value(client, md) is grpc.StatusCode.UNAVAILABLE)
    code, details = rpc_code(lambda: client.keda_poll(NS, "api", md))
    assert code is grpc.StatusCode.UNAVAILABLE and "data source unavailable" in details
    spec = client.stub.GetMetricSpec(client.ref(NS, "api", md), timeout=3)  # still answers (KEDA #8056)
    assert spec.metricSpecs[0].targetSizeFloat == 20.0
    prom.start()
    wait_for(lambda: _value(client, md) == 33.0, timeout=60)


class _RecordingSource:
    """The source argument: records each range read and passes it to the real PrometheusSource (a read of
    over a million points is recorded and answered empty instead of run, so the old behaviour fails fast)."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.ranges: list[tuple[float, float, float]] = []

    def fetch_range(self, query: str, start: float, end: float, step_s: float) -> Any:
        self.ranges.append((start, end, step_s))
        if (end - start) / step_s > 1e6:
            return Samples(np.empty(0), np.empty(0))
        return self.real.fetch_range(query, start, end, step_s)

    def fetch_latest(self, query: str, now: float) -> tuple[float, float] | None:
        return self.real.fetch_latest(query, now)  # type: ignore[no-any-return]


def _range_queries(prometheus: PrometheusServer) -> float:
    with urllib.request.urlopen(f"{prometheus.url}/metrics", timeout=5) as r:
        text = r.read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("prometheus_http_requests_total{") and 'handler="/api/v1/query_range"' in line
    )


def test_a_long_history_on_a_fine_step_is_read_on_a_coarser_step(nasa_prometheus: PrometheusServer) -> None:
    parser = TriggerParser(default_address=nasa_prometheus.url, allowed_addresses=frozenset({nasa_prometheus.url}))
    spec = parser.parse({"query": NASA_METRIC, "threshold": "20", "queryStep": "1s", "historyTimeWindow": "400d"})
    source = _RecordingSource(PrometheusSource(nasa_prometheus.url))
    queries_before = _range_queries(nasa_prometheus)
    fit = default_fit_factory(max_points_per_fit=20_160)(spec.series_key, spec, source)
    with contextlib.suppress(Exception):  # three days of data in a 400-day window may not fit: reads are judged
        fit(spec.series_key.id, None)
    (start, end, step) = source.ranges[0]
    points = (end - start) / step
    assert points <= 20_160, f"a fit read {points:,.0f} points"
    assert step == 1800.0  # the round step that keeps 400 days within 20,160 points
    assert _range_queries(nasa_prometheus) - queries_before <= 3
