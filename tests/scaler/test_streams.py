"""Streams and connections of the aio server over real gRPC on loopback: many open streams, the stream cap,
the connection max age (GOAWAY, reconnection, streams ended cleanly), and the settings that drive them."""

from __future__ import annotations

import threading
import time
import urllib.request

import grpc
import pytest

from scaler_service._generated import externalscaler_pb2 as pb
from scaler_service._generated import externalscaler_pb2_grpc as pb_grpc
from scaler_service.settings import SettingsError, settings_from_sources
from scaler_service.streams import ConnectionAges
from tests.scaler.conftest import ScriptedSource, StartScaler, client_for, rpc_code, wait_for

NS = "shop"
META = {"scalerAddress": "foresight:9090", "query": "q", "threshold": "10", "activationThreshold": "1"}


def metrics_text(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        return str(r.read().decode())


def test_thousands_of_streams_with_unary_calls_answering(start_scaler: StartScaler, source: ScriptedSource) -> None:
    source.set_live("q", 0.0)
    server = start_scaler(source)
    client = client_for(server)
    count = 2000
    # All streams are in flight at once on one connection; reading them in turn needs no thread per stream.
    calls = [client.stub.StreamIsActive(client.ref(NS, f"so-{i}", META), timeout=60) for i in range(count)]
    assert {next(call).result for call in calls} == {False}
    assert "foresight_open_streams 2000.0" in metrics_text(server.http_port)

    # Unary calls answer within KEDA's 3 s deadline (keda_poll's) while every stream is open.
    assert [client.keda_poll(NS, "poller", META).value_float for _ in range(30)] == [0.0] * 30

    # One shared ticker sees the change for every stream and pushes the inactive -> active transition.
    source.set_live("q", 5.0)
    assert {next(call).result for call in calls} == {True}
    for call in calls:
        call.cancel()
    wait_for(lambda: "foresight_open_streams 0.0" in metrics_text(server.http_port))


def test_stream_cap_refuses_then_admits_when_a_stream_closes(start_scaler: StartScaler, source: ScriptedSource) -> None:
    source.set_live("q", 2.0)
    server = start_scaler(source, max_streams=2)
    client = client_for(server)
    a = client.stub.StreamIsActive(client.ref(NS, "a", META), timeout=30)
    b = client.stub.StreamIsActive(client.ref(NS, "b", META), timeout=30)
    assert next(a).result is True and next(b).result is True
    code, details = rpc_code(lambda: next(client.stub.StreamIsActive(client.ref(NS, "c", META), timeout=5)))
    assert code is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "at most 2 StreamIsActive streams" in details and "--max-streams" in details
    a.cancel()
    wait_for(lambda: "foresight_open_streams 1.0" in metrics_text(server.http_port))
    c = client.stub.StreamIsActive(client.ref(NS, "c", META), timeout=30)
    assert next(c).result is True
    b.cancel()
    c.cancel()


def test_connections_are_recycled_after_their_max_age(start_scaler: StartScaler, source: ScriptedSource) -> None:
    source.set_live("q", 3.0)
    server = start_scaler(source, max_connection_age=1.0, max_connection_age_grace=4.0)
    channel = grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}")
    stub = pb_grpc.ExternalScalerStub(channel)  # type: ignore[no-untyped-call]
    ref = pb.ScaledObjectRef(namespace=NS, name="so", scalerMetadata=META)

    # A stream opened on a fresh connection ends cleanly (status OK) before the connection's close.
    opened = time.monotonic()
    stream = stub.StreamIsActive(ref, timeout=30)
    assert next(stream).result is True
    assert list(stream) == []  # ended by the server without an error status
    assert stream.code() is grpc.StatusCode.OK
    assert time.monotonic() - opened < 1.0 + 4.0

    # Unary calls keep answering, over new connections (GOAWAY after ~1 s): the client reconnects by itself.
    metric = stub.GetMetricSpec(ref, timeout=3).metricSpecs[0].metricName
    end = time.monotonic() + 3.5
    while time.monotonic() < end:
        assert stub.GetMetrics(pb.GetMetricsRequest(scaledObjectRef=ref, metricName=metric), timeout=3)
        time.sleep(0.05)
    seen = [
        line for line in metrics_text(server.http_port).splitlines() if line.startswith("foresight_grpc_connections")
    ]
    assert seen and float(seen[0].split()[-1]) >= 3  # the first connection and at least two after GOAWAYs
    channel.close()


def test_a_call_in_flight_at_the_goaway_completes(start_scaler: StartScaler, source: ScriptedSource) -> None:
    source.set_live("slow", 6.0)
    server = start_scaler(source, max_connection_age=1.0, max_connection_age_grace=4.0)
    channel = grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}")
    stub = pb_grpc.ExternalScalerStub(channel)  # type: ignore[no-untyped-call]
    connected = time.monotonic()
    stub.GetMetricSpec(pb.ScaledObjectRef(namespace=NS, name="so", scalerMetadata=META), timeout=3)
    time.sleep(0.6)
    source.delay_s = 0.5  # the brand-new series' first fetch (a few source calls) outlasts the GOAWAY, not the grace
    slow = pb.ScaledObjectRef(namespace=NS, name="slow", scalerMetadata={**META, "query": "slow"})
    started = time.monotonic()
    answer = stub.GetMetrics(pb.GetMetricsRequest(scaledObjectRef=slow, metricName="m"), timeout=3)
    finished = time.monotonic()
    assert answer.metricValues[0].metricValueFloat == 6.0
    # It really was in flight when the GOAWAY came (0.9 to 1.1 s after the connection opened).
    assert started - connected < 0.9 and finished - connected > 1.1
    source.delay_s = 0.0
    channel.close()


def test_shutdown_ends_streams_cleanly_and_stops_within_its_grace(
    start_scaler: StartScaler, source: ScriptedSource
) -> None:
    source.set_live("q", 0.0)
    server = start_scaler(source)
    client = client_for(server)
    streams = [client.stub.StreamIsActive(client.ref(NS, f"so-{i}", META), timeout=30) for i in range(20)]
    assert [next(s).result for s in streams] == [False] * 20
    ended: list[grpc.StatusCode] = []

    def drain() -> None:
        for s in streams:
            list(s)
            ended.append(s.code())

    reader = threading.Thread(target=drain)
    reader.start()
    started = time.monotonic()
    server.stop(grace_s=2.0)
    assert time.monotonic() - started < 2.0 + 5.0
    reader.join(10)
    assert ended == [grpc.StatusCode.OK] * 20


def test_stream_end_falls_before_the_connection_can_close() -> None:
    now = [1000.0]
    ages = ConnectionAges(max_age_s=300.0, grace_s=30.0, clock=lambda: now[0])
    assert ages.stream_end("ipv4:10.0.0.1:5000") == 1000.0 + 270.0  # before the earliest GOAWAY
    now[0] += 280.0  # the GOAWAY may have come: end within the earliest grace
    assert ages.stream_end("ipv4:10.0.0.1:5000") == pytest.approx(1000.0 + 270.0 + 24.0)
    now[0] += 20.0  # past the earliest close: before the latest one
    assert ages.stream_end("ipv4:10.0.0.1:5000") == pytest.approx(1000.0 + 330.0 + 24.0)
    now[0] += 400.0  # longer than any connection lives: the address was reused by a new connection
    assert ages.stream_end("ipv4:10.0.0.1:5000") == now[0] + 270.0
    assert ages.connections_seen == 2
    assert ConnectionAges(max_age_s=0.0, grace_s=30.0).stream_end("ipv4:10.0.0.1:5000") is None


def test_connection_settings_are_durations() -> None:
    s = settings_from_sources(
        {"max_connection_age": "1h30m", "max_streams": "500"}, {"FORESIGHT_MAX_CONNECTION_AGE_GRACE": "45s"}
    )
    assert (s.max_connection_age, s.max_connection_age_grace, s.max_streams) == (5400.0, 45.0, 500)
    assert settings_from_sources({}, {}).max_connection_age == 300.0
    with pytest.raises(SettingsError, match=r"max_connection_age: cannot use '5 minutes'.*a duration"):
        settings_from_sources({"max_connection_age": "5 minutes"}, {})
    with pytest.raises(SettingsError, match="grpc_server: must be 'aio' or 'sync'"):
        settings_from_sources({"grpc_server": "twisted"}, {})
