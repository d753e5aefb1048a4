"""Hostile input over real gRPC and HTTP: replay queries naming server files, oversized or lax metadata."""

from __future__ import annotations

import functools
import json
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest

from scaler_service._generated import externalscaler_pb2 as pb
from scaler_service.server import ScalerServer
from tests.fakes.prometheus_http import fake_prometheus
from tests.scaler.conftest import (
    ScriptedFits,
    ScriptedSource,
    StartScaler,
    client_for,
    rpc_code,
    scaler_settings,
)


def http_text(port: int, path: str) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
        return str(r.read().decode())


def get_metrics(server: Any, name: str, metadata: dict[str, str]) -> tuple[grpc.StatusCode, str]:
    client = client_for(server)
    request = pb.GetMetricsRequest(scaledObjectRef=client.ref("ns", name, metadata), metricName="m")
    return rpc_code(lambda: client.stub.GetMetrics(request, timeout=5))


@pytest.fixture
def replay_server() -> Iterator[Callable[..., ScalerServer]]:
    servers: list[ScalerServer] = []

    def start(**overrides: Any) -> ScalerServer:
        server = ScalerServer(scaler_settings(source="replay", **overrides), fit_factory=ScriptedFits())
        server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop(grace_s=1.0)


def test_a_replay_query_cannot_read_server_files(replay_server: Callable[..., ScalerServer]) -> None:
    server = replay_server()
    for i, query in enumerate(("/proc/self/environ", "/etc/passwd", "../../../../proc/self/environ", "/dev/zero")):
        code, details = get_metrics(server, f"so-{i}", {"query": query, "threshold": "10"})
        assert code == grpc.StatusCode.FAILED_PRECONDITION
        assert "not a bundled trace name nor a file in the replay directory" in details
        assert "PATH=" not in details and "root:" not in details
    view = http_text(server.http_port, "/forecast")
    assert "PATH=" not in view and "root:" not in view
    json.loads(view)


def _rss_mib() -> float:
    with open("/proc/self/status", encoding="ascii") as fh:
        kb = next(int(line.split()[1]) for line in fh if line.startswith("VmRSS:"))
    return kb / 1024


def test_oversized_metadata_is_refused_cheaply(start_scaler: StartScaler, source: ScriptedSource) -> None:
    server = start_scaler(source)
    client = client_for(server)
    before = _rss_mib()
    for i in range(300):
        ref = client.ref("ns", f"so-{i}", {"query": f"q{i}", "threshold": str(i) + "1" * 2**20})
        code, details = rpc_code(functools.partial(client.stub.GetMetricSpec, ref, timeout=10))
        assert code == grpc.StatusCode.INVALID_ARGUMENT
        assert details.startswith("invalid trigger metadata: threshold: value is longer than 4096 bytes")
        assert len(details) < 300
    grown = _rss_mib() - before
    assert grown < 100, f"RSS grew by {grown:.0f} MiB over 300 oversized requests"
    assert server.parser.cached_bytes < 1 * 2**20


def test_an_amplifying_trigger_beyond_the_hard_limit_is_refused(
    start_scaler: StartScaler, source: ScriptedSource
) -> None:
    server = start_scaler(source, max_points_per_fit=1000)
    client = client_for(server)
    ref = client.ref("ns", "so", {"query": "q", "threshold": "1", "queryStep": "1s", "historyTimeWindow": "400d"})
    code, details = rpc_code(lambda: client.stub.GetMetricSpec(ref, timeout=5))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "historyTimeWindow" in details and "--max-points-per-fit" in details


def test_a_redirect_from_the_allowlisted_prometheus_is_not_followed(start_scaler: StartScaler) -> None:
    with fake_prometheus(value=999.0) as elsewhere, fake_prometheus(redirect_to=elsewhere.url) as allowlisted:
        server = start_scaler(None, prometheus_url=allowlisted.url)
        code, details = get_metrics(server, "so", {"query": "up", "threshold": "10"})
        assert code == grpc.StatusCode.FAILED_PRECONDITION
        assert "redirect (HTTP 302), which is not followed" in details
        assert allowlisted.requests > 0
        assert elsewhere.requests == 0


def test_a_huge_answer_from_the_allowlisted_prometheus_is_refused_not_held(start_scaler: StartScaler) -> None:
    with fake_prometheus(huge_answer_bytes=30_000_000) as prom:
        server = start_scaler(None, prometheus_url=prom.url, prometheus_max_response_mb=1.0)
        code, details = get_metrics(server, "so", {"query": "up", "threshold": "10"})
        assert code == grpc.StatusCode.FAILED_PRECONDITION
        assert "with more than 1 MiB, which is refused" in details
        assert prom.bytes_sent < 20_000_000
