"""PrometheusSource against a real Prometheus (Debian's binary) over a TSDB backfilled from the NASA trace."""

from __future__ import annotations

import http.server
import math
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from scaler_service.sources.base import QueryError, SourceUnavailable
from scaler_service.sources.prometheus import PrometheusSource
from tests.fakes.prometheus_http import fake_prometheus
from tests.support.prometheus import (
    NASA_METRIC,
    PrometheusServer,
    Series,
    StartPrometheus,
    free_port,
    nasa_series,
    prometheus_servers,
    series,
)

pytestmark = pytest.mark.prometheus

# Whole seconds, so that backfilled samples sit exactly on the grid of the range queries below.
NOW = float(int(time.time()))
STEP_S = 60.0


def _extra_series() -> list[Series]:
    grid = np.arange(NOW - 3600, NOW - 30, STEP_S)
    with_nan = np.ones(len(grid))
    with_nan[10] = math.nan
    return [
        series("demo_requests", grid, np.full(len(grid), 1.0), pod="a"),
        series("demo_requests", grid, np.full(len(grid), 2.0), pod="b"),
        series("demo_with_nan", grid, with_nan),
    ]


@pytest.fixture(scope="module")
def nasa() -> Series:
    return nasa_series(now=NOW, days=14)


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory, nasa: Series) -> Iterator[PrometheusServer]:
    with prometheus_servers(lambda: tmp_path_factory.mktemp("prometheus")) as start:
        yield start(nasa, *_extra_series())


@pytest.fixture
def start_prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StartPrometheus]:
    with prometheus_servers(lambda: tmp_path_factory.mktemp("prometheus")) as start:
        yield start


@pytest.fixture
def source(prometheus: PrometheusServer) -> Iterator[PrometheusSource]:
    src = PrometheusSource(prometheus.url, timeout_s=10.0)
    yield src
    src.close()


def test_fetch_range_reads_more_than_11000_points_in_chunks_without_loss_or_duplicates(
    prometheus: PrometheusServer, nasa: Series
) -> None:
    start, end = float(nasa.timestamps[0]), float(nasa.timestamps[-1])
    assert len(nasa.timestamps) > 11_000  # a single query_range would be refused by Prometheus
    for max_points in (10_000, 11_000, 997):
        src = PrometheusSource(prometheus.url, max_points_per_query=max_points)
        got = src.fetch_range(NASA_METRIC, start, end, STEP_S)
        src.close()
        np.testing.assert_array_equal(got.timestamps, nasa.timestamps)
        np.testing.assert_array_equal(got.values, nasa.values)


def test_fetch_range_accepts_an_aggregation_over_several_series(source: PrometheusSource) -> None:
    got = source.fetch_range("sum(demo_requests)", NOW - 1800, NOW - 60, STEP_S)
    assert len(got) > 0
    assert set(got.values.tolist()) == {3.0}


def test_several_series_are_refused_naming_how_many_and_suggesting_sum(source: PrometheusSource) -> None:
    with pytest.raises(QueryError, match=r"returned 2 series.*sum\(") as info:
        source.fetch_range("demo_requests", NOW - 1800, NOW - 60, STEP_S)
    assert 'pod="a"' in str(info.value)
    with pytest.raises(QueryError, match=r"returned 2 series"):
        source.fetch_latest("demo_requests", NOW)


def test_no_series_is_an_empty_answer(source: PrometheusSource) -> None:
    assert len(source.fetch_range("no_such_metric", NOW - 3600, NOW, STEP_S)) == 0
    assert source.fetch_latest("no_such_metric", NOW) is None


def test_nan_values_are_kept(source: PrometheusSource) -> None:
    got = source.fetch_range("demo_with_nan", NOW - 3600, NOW - 30, STEP_S)
    assert np.isnan(got.values).sum() == 1
    assert np.nansum(got.values) == len(got) - 1
    latest = source.fetch_latest("0 * demo_with_nan / 0", NOW)
    assert latest is not None and math.isnan(latest[1])


def test_fetch_latest_returns_the_newest_value_at_now(source: PrometheusSource, nasa: Series) -> None:
    latest = source.fetch_latest(NASA_METRIC, NOW)
    assert latest == (NOW, float(nasa.values[-1]))
    # An earlier "now" sees the value current then: no peeking into the future.
    earlier = source.fetch_latest(NASA_METRIC, float(nasa.timestamps[100]))
    assert earlier == (float(nasa.timestamps[100]), float(nasa.values[100]))


def test_scalar_and_range_selector_answers_give_a_latest_value(source: PrometheusSource) -> None:
    assert source.fetch_latest("scalar(sum(demo_requests))", NOW) == (NOW, 3.0)
    latest = source.fetch_latest("demo_with_nan[5m]", NOW)
    assert latest is not None and latest[1] == 1.0 and latest[0] < NOW


def test_promql_syntax_error_is_a_query_error_with_prometheus_message(source: PrometheusSource) -> None:
    with pytest.raises(QueryError, match=r"HTTP 400.*bad_data.*parse error"):
        source.fetch_range("sum(rate(x[5m]", NOW - 3600, NOW, STEP_S)
    with pytest.raises(QueryError, match=r"parse error"):
        source.fetch_latest("sum(", NOW)


def test_range_vector_in_a_range_query_is_a_query_error(source: PrometheusSource) -> None:
    with pytest.raises(QueryError, match=r"range vector"):
        source.fetch_range("demo_with_nan[5m]", NOW - 3600, NOW, STEP_S)


def test_concurrent_callers_from_many_threads_get_the_same_answers(source: PrometheusSource, nasa: Series) -> None:
    def read(i: int) -> tuple[float, float] | None:
        return source.fetch_latest(NASA_METRIC, float(nasa.timestamps[-1 - i % 5]))

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(read, range(80)))
    for i, answer in enumerate(answers):
        assert answer is not None and answer[1] == float(nasa.values[-1 - i % 5])


def test_connection_refused_is_source_unavailable() -> None:
    src = PrometheusSource(f"http://127.0.0.1:{free_port()}", timeout_s=2.0, retries=0)
    with pytest.raises(SourceUnavailable, match=r"unreachable"):
        src.fetch_latest("up", NOW)
    with pytest.raises(SourceUnavailable):
        src.fetch_range("up", NOW - 600, NOW, STEP_S)


def test_a_server_that_never_answers_is_source_unavailable_after_the_timeout() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # accepts connections in the backlog, never answers
        src = PrometheusSource(f"http://127.0.0.1:{silent.getsockname()[1]}", timeout_s=0.3, retries=0)
        with pytest.raises(SourceUnavailable, match=r"did not answer within 0.3 s"):
            src.fetch_latest("up", NOW)


class _FixedAnswer(http.server.BaseHTTPRequestHandler):
    status = 503
    body = b'{"status":"error","errorType":"unavailable","error":"TSDB not ready"}'

    def do_GET(self) -> None:
        self.send_response(self.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.mark.parametrize(
    ("status", "body", "error", "pattern"),
    [
        (503, b'{"status":"error","errorType":"unavailable","error":"TSDB not ready"}', SourceUnavailable,
         r"HTTP 503: unavailable: TSDB not ready"),
        (500, b"internal", SourceUnavailable, r"HTTP 500: internal"),
        (422, b'{"status":"error","errorType":"execution","error":"boom"}', QueryError, r"HTTP 422.*boom"),
        (200, b"<html>not prometheus</html>", SourceUnavailable, r"did not answer with Prometheus API JSON"),
    ],
)  # fmt: skip
def test_http_errors_map_to_transient_or_permanent_failures(
    status: int, body: bytes, error: type[Exception], pattern: str
) -> None:
    handler = type("Handler", (_FixedAnswer,), {"status": status, "body": body})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        src = PrometheusSource(f"http://127.0.0.1:{server.server_address[1]}", timeout_s=5.0, retries=0)
        with pytest.raises(error, match=pattern):
            src.fetch_latest("up", NOW)
        src.close()
    finally:
        server.shutdown()
        server.server_close()


def test_prometheus_stopped_then_restarted(start_prometheus: StartPrometheus) -> None:
    grid = np.arange(NOW - 3600, NOW - 30, STEP_S)
    server = start_prometheus(series("restart_demo", grid, np.arange(len(grid), dtype=np.float64)))
    src = PrometheusSource(server.url, timeout_s=2.0, retries=0)
    assert src.fetch_latest("restart_demo", NOW) == (NOW, float(len(grid) - 1))
    server.stop()
    with pytest.raises(SourceUnavailable):
        src.fetch_latest("restart_demo", NOW)
    with pytest.raises(SourceUnavailable):
        src.fetch_range("restart_demo", NOW - 3600, NOW, STEP_S)
    server.start()
    assert src.fetch_latest("restart_demo", NOW) == (NOW, float(len(grid) - 1))
    assert len(src.fetch_range("restart_demo", grid[0], grid[-1], STEP_S)) == len(grid)
    src.close()


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="http:// or https://"):
        PrometheusSource("prometheus:9090")
    with pytest.raises(ValueError, match="between 1 and 11000"):
        PrometheusSource("http://127.0.0.1:1", max_points_per_query=20_000)


def test_an_answer_over_the_size_cap_is_refused_while_it_is_read() -> None:
    # 40 MB of distinct series streamed without a length: refused at the 1 MiB cap, long before the end.
    with fake_prometheus(huge_answer_bytes=40_000_000) as prom:
        source = PrometheusSource(prom.url, timeout_s=30.0, max_response_bytes=2**20)
        with pytest.raises(QueryError, match=r"with more than 1 MiB, which is refused: narrow the query"):
            source.fetch_latest("up", 1_700_000_000.0)
        source.close()
        prom.wait_until_sent(2**20)
    assert 2**20 <= prom.bytes_sent < 20_000_000


def test_a_small_gzip_that_inflates_past_the_cap_is_refused() -> None:
    with fake_prometheus(huge_answer_bytes=30_000_000, gzip_answer=True) as prom:
        source = PrometheusSource(prom.url, timeout_s=30.0, max_response_bytes=2**20)
        with pytest.raises(QueryError, match="more than 1 MiB"):
            source.fetch_latest("up", 1_700_000_000.0)
        source.close()
    assert prom.bytes_sent < 2_000_000  # what crossed the wire was small: the cap is on the inflated body


def test_answers_under_the_cap_are_read_whole() -> None:
    # The same kind of answer under the cap is parsed, and refused for what it is (several series).
    with fake_prometheus(huge_answer_bytes=200_000) as prom:
        source = PrometheusSource(prom.url, timeout_s=30.0, max_response_bytes=2**20)
        with pytest.raises(QueryError, match=r"returned \d+ series"):
            source.fetch_latest("up", 1_700_000_000.0)
        source.close()
    with fake_prometheus(value=7.0) as prom:
        source = PrometheusSource(prom.url, timeout_s=30.0, max_response_bytes=1024)
        latest = source.fetch_latest("up", 1_700_000_000.0)
        source.close()
    assert latest is not None and latest[1] == 7.0
    with pytest.raises(ValueError, match="max_response_bytes"):
        PrometheusSource("http://127.0.0.1:9", max_response_bytes=10)
