"""The ExternalScaler contract over real gRPC on loopback, called exactly as KEDA calls it."""

from __future__ import annotations

import json
import math
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from scaler_service._generated import externalscaler_pb2 as pb
from scaler_service.engine import RECORDS_HEADER
from scaler_service.sources.base import QueryError
from scaler_service.trigger import metric_name
from tests.scaler.conftest import ScriptedFits, ScriptedSource, StartScaler, client_for, rpc_code, wait_for

NS, NAME = "shop", "checkout"


def meta(**kw: str) -> dict[str, str]:
    base = {"scalerAddress": "foresight:9090", "query": "q", "threshold": "10"}
    base.update(kw)
    return base


def http_json(port: int, path: str) -> Any:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
        return json.loads(r.read())


def http_text(port: int, path: str) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
        return str(r.read().decode())


def test_keda_sequence_serves_observed_then_the_forecast_peak(
    start_scaler: StartScaler, source: ScriptedSource, fits: ScriptedFits
) -> None:
    source.set_live("q", 42.0)
    server = start_scaler(source, fits=fits)
    client = client_for(server)

    # Brand-new series, no model yet: answered within KEDA's 3 s deadline with the observed value.
    first = client.keda_poll(NS, NAME, meta())
    assert first.metric_name == metric_name(NS, NAME, "q")
    assert (first.target_size_float, first.target_size) == (10.0, 10)
    assert first.value_float == 42.0 and first.value == 42
    assert first.active is True

    # The scripted fit (a constant 100 forecast) lands in the background: the peak is served.
    fits.levels["q"] = 100.0
    server.cache.request_refit(server.engine.series_id(server.parser.parse(meta()).series_key) or "")
    wait_for(lambda: client.keda_poll(NS, NAME, meta()).value_float == 100.0)
    answer = client.keda_poll(NS, NAME, meta())
    assert answer.value == 100

    # Never below what a reactive scaler asks for.
    source.set_live("q", 180.5)
    wait_for(lambda: client.keda_poll(NS, NAME, meta()).value_float == 180.5)
    assert client.keda_poll(NS, NAME, meta()).value == 180  # round() of 180.5 is 180 (half to even)


def test_metric_spec_is_from_metadata_only(start_scaler: StartScaler, source: ScriptedSource) -> None:
    source.down = True
    server = start_scaler(source)
    client = client_for(server)
    ref = client.ref(NS, NAME, meta(threshold="0.4"))
    spec = client.stub.GetMetricSpec(ref, timeout=3)
    assert len(spec.metricSpecs) == 1
    (ms,) = spec.metricSpecs
    assert ms.metricName == metric_name(NS, NAME, "q")
    assert ms.targetSizeFloat == 0.4
    assert ms.targetSize == 1  # never 0: Kubernetes rejects an HPA target <= 0
    # The source is down: GetMetrics and IsActive report it, GetMetricSpec keeps answering (KEDA #8056).
    code, details = rpc_code(
        lambda: client.stub.GetMetrics(pb.GetMetricsRequest(scaledObjectRef=ref, metricName=ms.metricName), timeout=3)
    )
    assert code is grpc.StatusCode.UNAVAILABLE
    assert "connection refused" in details
    code, _ = rpc_code(lambda: client.stub.IsActive(ref, timeout=3))
    assert code is grpc.StatusCode.UNAVAILABLE
    assert client.stub.GetMetricSpec(ref, timeout=3).metricSpecs[0].metricName == ms.metricName


BAD = [
    ({"threshold": "abc"}, "threshold"),
    ({"threshold": "0"}, "threshold"),
    ({"query": ""}, "query"),
    ({"predictHorizon": "10"}, "predictHorizon"),
    ({"mode": "yolo"}, "mode"),
    ({"minConfidence": "2"}, "minConfidence"),
    ({"holidays": "Atlantis"}, "holidays"),
    ({"latencyQuery": "lat"}, "latencySLO"),
    ({"prometheusAddress": "http://169.254.169.254"}, "prometheusAddress"),
    ({"historyTimeWindow": "1h"}, "historyTimeWindow"),
    ({"queryStep": "fast"}, "queryStep"),
    ({"refitInterval": "1s"}, "refitInterval"),
    ({"activationThreshold": "-2"}, "activationThreshold"),
]


@pytest.mark.parametrize(("change", "key"), BAD)
def test_bad_metadata_is_invalid_argument_naming_the_key(
    start_scaler: StartScaler, source: ScriptedSource, change: dict[str, str], key: str
) -> None:
    server = start_scaler(source)
    client = client_for(server)
    ref = client.ref(NS, NAME, meta(**change))
    calls = {
        "GetMetricSpec": lambda: client.stub.GetMetricSpec(ref, timeout=3),
        "GetMetrics": lambda: client.stub.GetMetrics(
            pb.GetMetricsRequest(scaledObjectRef=ref, metricName="m"), timeout=3
        ),
        "IsActive": lambda: client.stub.IsActive(ref, timeout=3),
        "StreamIsActive": lambda: list(client.stub.StreamIsActive(ref, timeout=3)),
    }
    for method, call in calls.items():
        code, details = rpc_code(call)
        assert code is grpc.StatusCode.INVALID_ARGUMENT, method
        assert f"{key}: " in details, (method, details)
    assert source.calls == 0  # refused at the edge, before any query


def test_negative_and_nan_values_are_never_served(start_scaler: StartScaler, source: ScriptedSource) -> None:
    server = start_scaler(source)
    client = client_for(server)
    source.set_live("neg", -5.0)
    answer = client.keda_poll(NS, "neg", meta(query="neg"))
    assert (answer.value_float, answer.value, answer.active) == (0.0, 0, False)

    # NaN is a missing value: a series that never had a number has "no data"...
    source.set_live("nan", math.nan)
    code, details = rpc_code(lambda: client.keda_poll(NS, "nan", meta(query="nan")))
    assert code is grpc.StatusCode.FAILED_PRECONDITION
    assert "no data" in details
    # ...and a NaN after a number keeps serving the last number (until it is stale).
    source.set_live("later-nan", 7.0)
    assert client.keda_poll(NS, "later-nan", meta(query="later-nan")).value_float == 7.0
    source.set_live("later-nan", math.nan)
    time.sleep(0.5)
    answer = client.keda_poll(NS, "later-nan", meta(query="later-nan"))
    assert math.isfinite(answer.value_float) and answer.value_float == 7.0


def test_stale_data_is_unavailable_then_recovers(start_scaler: StartScaler, source: ScriptedSource) -> None:
    now = time.time()
    source.set_points("q", [(now - 3600 + 60 * i, 5.0) for i in range(40)])  # newest point 21 min old
    server = start_scaler(source)
    client = client_for(server)
    code, details = rpc_code(lambda: client.keda_poll(NS, NAME, meta()))
    assert code is grpc.StatusCode.UNAVAILABLE
    assert "stale data" in details and "15m" in details
    code, _ = rpc_code(lambda: client.stub.IsActive(client.ref(NS, NAME, meta()), timeout=3))
    assert code is grpc.StatusCode.UNAVAILABLE
    assert client.stub.GetMetricSpec(client.ref(NS, NAME, meta()), timeout=3).metricSpecs

    # A 10 min step makes 30 min (3 steps) the limit: 21 min old data are fresh enough there.
    assert client.keda_poll(NS, NAME, meta(queryStep="10m")).value_float == 5.0

    source.set_live("q", 9.0)  # data flow again
    wait_for(lambda: _value_or_none(client, meta()) == 9.0)


def _value_or_none(client: Any, metadata: dict[str, str]) -> float | None:
    try:
        return float(client.keda_poll(NS, NAME, metadata).value_float)
    except grpc.RpcError:
        return None


def test_source_outage_then_recovery(start_scaler: StartScaler, source: ScriptedSource) -> None:
    source.set_live("q", 3.0)
    server = start_scaler(source)
    client = client_for(server)
    assert client.keda_poll(NS, NAME, meta()).value_float == 3.0
    source.down = True
    wait_for(lambda: _value_or_none(client, meta()) is None)
    code, details = rpc_code(lambda: client.keda_poll(NS, NAME, meta()))
    assert code is grpc.StatusCode.UNAVAILABLE and "data source unavailable" in details
    source.down = False
    wait_for(lambda: _value_or_none(client, meta()) == 3.0)


def test_query_errors_are_failed_precondition(start_scaler: StartScaler, source: ScriptedSource) -> None:
    source.fail("several", QueryError("query returned 3 series; wrap it in sum(...)"))
    server = start_scaler(source)
    client = client_for(server)
    code, details = rpc_code(lambda: client.keda_poll(NS, NAME, meta(query="several")))
    assert code is grpc.StatusCode.FAILED_PRECONDITION
    assert "3 series" in details
    code, details = rpc_code(lambda: client.keda_poll(NS, NAME, meta(query="nothing")))
    assert code is grpc.StatusCode.FAILED_PRECONDITION
    assert "returned no data" in details


def test_is_active_wakes_from_zero_on_the_forecast(
    start_scaler: StartScaler, source: ScriptedSource, fits: ScriptedFits
) -> None:
    source.set_live("q", 0.0)
    fits.levels["q"] = 30.0
    server = start_scaler(source, fits=fits)
    client = client_for(server)
    wait_for(lambda: client.keda_poll(NS, NAME, meta(activationThreshold="5")).active)
    # Reactive and observe modes wake on what is observed only.
    assert client.keda_poll(NS, "reactive", meta(activationThreshold="5", mode="reactive")).active is False
    assert client.keda_poll(NS, "observe", meta(activationThreshold="5", mode="observe")).active is False
    # Same address, query and step: one series shared by the three ScaledObjects.
    assert len(server.engine) == 1


def test_low_confidence_serves_observed_and_says_why(
    start_scaler: StartScaler, source: ScriptedSource, fits: ScriptedFits
) -> None:
    source.set_live("q", 4.0)
    fits.levels["q"] = 50.0
    fits.confidence["q"] = 0.5
    server = start_scaler(source, fits=fits)
    client = client_for(server)
    client.keda_poll(NS, NAME, meta())
    wait_for(
        lambda: (
            server.engine.snapshot_for(server.parser.parse(meta()).series_key) is not None
            and _model_of(server) is not None
        )
    )
    assert client.keda_poll(NS, NAME, meta()).value_float == 4.0
    assert client.keda_poll(NS, "trusting", meta(minConfidence="0.4")).value_float == 50.0
    view = http_json(server.http_port, f"/forecast?namespace={NS}&name={NAME}")["scaledObjects"]
    assert len(view) == 1
    assert view[0]["served"]["reason"] == "low-confidence"
    assert "confidence 0.50 < minConfidence 0.80" in view[0]["served"]["why"]
    assert view[0]["model"]["name"] == "constant"


def _model_of(server: Any) -> Any:
    snap = server.engine.snapshot_for(server.parser.parse(meta()).series_key)
    return None if snap is None else server.cache.get(server.parser.parse(meta()).series_key.id)


def test_observe_mode_records_what_predictive_would_serve(
    start_scaler: StartScaler, source: ScriptedSource, fits: ScriptedFits, tmp_path: Path
) -> None:
    source.set_live("q", 4.0)
    fits.levels["q"] = 50.0
    server = start_scaler(source, fits=fits, records_dir=tmp_path)
    client = client_for(server)
    md = meta(mode="observe", queryStep="1s")
    wait_for(lambda: client.keda_poll(NS, NAME, md) is not None and _model_of_spec(server, md) is not None)
    assert client.keda_poll(NS, NAME, md).value_float == 4.0  # observe serves what a reactive scaler would
    files = list(tmp_path.glob("*.csv"))
    wait_for(lambda: len(list(tmp_path.glob("*.csv"))) == 1 and _rows(tmp_path)[-1][3] == "50")
    files = list(tmp_path.glob("*.csv"))
    assert files[0].name.startswith(f"{NS}.{NAME}.")
    rows = _rows(tmp_path)
    assert tuple(rows[0]) == RECORDS_HEADER
    assert rows[-1][1:] == ["4", "4", "50"]  # observed, served, predictive


def _model_of_spec(server: Any, md: dict[str, str]) -> Any:
    return server.cache.get(server.parser.parse(md).series_key.id)


def _rows(path: Path) -> list[list[str]]:
    (f,) = list(path.glob("*.csv"))
    return [line.split(",") for line in f.read_text().splitlines()]


def test_stream_is_active_sends_state_then_transitions(start_scaler: StartScaler, source: ScriptedSource) -> None:
    source.set_live("q", 0.0)
    server = start_scaler(source)
    client = client_for(server)
    received: list[bool] = []
    done = threading.Event()

    def read() -> None:
        for active in client.stream_is_active(NS, NAME, meta(activationThreshold="1"), timeout=30):
            received.append(active)
        done.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    wait_for(lambda: received == [False])
    source.set_live("q", 5.0)
    wait_for(lambda: received == [False, True])
    source.set_live("q", 0.0)
    time.sleep(1.5)
    source.set_live("q", 6.0)
    wait_for(lambda: received == [False, True, True])  # only inactive -> active transitions are sent
    server.stop(grace_s=2.0)
    assert done.wait(10), "the stream did not end on shutdown"


def test_circuit_breaker_serves_the_recent_peak(start_scaler: StartScaler, source: ScriptedSource) -> None:
    now = time.time()
    source.set_points("q", [(now - 1200 + 60 * i, 80.0 if i == 5 else 10.0) for i in range(20)])
    source.set_live("lat", 0.1)
    server = start_scaler(source)
    client = client_for(server)
    md = meta(latencyQuery="lat", latencySLO="0.2")
    assert client.keda_poll(NS, NAME, md).value_float == 10.0
    wait_for(lambda: _recent_peak(server, md) == 80.0)  # the recent history was read once, in the background
    source.set_live("q", 10.0)
    source.set_live("lat", 0.25)  # 1.25 x SLO: open
    wait_for(lambda: client.keda_poll(NS, NAME, md).value_float == 80.0)
    source.set_live("lat", 0.21)  # above the SLO, below 1.2 x: stays open (hysteresis)
    time.sleep(0.5)
    assert client.keda_poll(NS, NAME, md).value_float == 80.0
    source.set_live("lat", 0.15)  # under the SLO: closed
    wait_for(lambda: client.keda_poll(NS, NAME, md).value_float == 10.0)
    view = http_json(server.http_port, "/forecast")["scaledObjects"][0]
    (breaker,) = view["breakers"]
    assert [e["opened"] for e in breaker["events"]] == [True, False]
    assert "foresight_circuit_breaker_events_total 2.0" in http_text(server.http_port, "/metrics")


def _recent_peak(server: Any, md: dict[str, str]) -> float | None:
    snap = server.engine.snapshot_for(server.parser.parse(md).series_key)
    return None if snap is None else float(snap.recent_peak)


def test_http_endpoints(start_scaler: StartScaler, source: ScriptedSource, fits: ScriptedFits) -> None:
    source.set_live("q", 12.0)
    fits.levels["q"] = 20.0
    server = start_scaler(source, fits=fits)
    client = client_for(server)
    wait_for(lambda: client.keda_poll(NS, NAME, meta()).value_float == 20.0)
    assert http_text(server.http_port, "/healthz") == "ok\n"
    metrics = http_text(server.http_port, "/metrics")
    sid = server.parser.parse(meta()).series_key.id
    assert f'foresight_series_observed{{series="{sid}"}} 12.0' in metrics
    assert f'foresight_series_forecast{{series="{sid}"}} ' in metrics
    assert f'foresight_series_model_confidence{{series="{sid}"}} 0.95' in metrics
    assert 'foresight_rpc_duration_seconds_count{method="GetMetrics"}' in metrics
    assert "foresight_model_cache_entries 1.0" in metrics
    assert 'reason="forecast"' in metrics
    assert "foresight_fit_duration_seconds_count" in metrics
    view = http_json(server.http_port, "/forecast")["scaledObjects"][0]
    assert view["served"]["value"] == 20.0 and view["served"]["reason"] == "forecast"
    assert view["served"]["replicas_wanted"] == 2
    assert view["history"] and view["curve"]
    assert view["latest"]["value"] == 12.0


def test_idle_series_are_dropped(start_scaler: StartScaler, source: ScriptedSource) -> None:
    source.set_live("q", 1.0)
    server = start_scaler(source, idle_drop_s=0.5)
    client = client_for(server)
    client.keda_poll(NS, NAME, meta())
    assert len(server.engine) == 1
    wait_for(lambda: len(server.engine) == 0)
    assert len(server.cache) == 0
    assert client.keda_poll(NS, NAME, meta()).value_float == 1.0  # and it comes back on demand


class OptedOut:
    """The opt-out reader argument (the real one is scaler_service.kube.AnnotationWatcher)."""

    def __init__(self, *names: tuple[str, str]) -> None:
        self.names = set(names)

    def is_opted_out(self, namespace: str, name: str) -> bool:
        return (namespace, name) in self.names


def test_opted_out_scaled_objects_are_served_reactively(source: ScriptedSource, fits: ScriptedFits) -> None:
    from scaler_service.server import ScalerServer
    from tests.scaler.conftest import scaler_settings

    source.set_live("q", 3.0)
    fits.levels["q"] = 40.0
    server = ScalerServer(
        scaler_settings(), source_for=lambda a: source, fit_factory=fits, opt_out=OptedOut((NS, "legacy"))
    )
    server.start()
    try:
        client = client_for(server)
        wait_for(lambda: client.keda_poll(NS, NAME, meta()).value_float == 40.0)
        assert client.keda_poll(NS, "legacy", meta()).value_float == 3.0
        view = http_json(server.http_port, "/forecast?name=legacy")["scaledObjects"][0]
        assert view["served"]["reason"] == "opted-out"
    finally:
        server.stop(grace_s=1.0)


def test_live_accuracy_drop_serves_reactively_and_refits(
    start_scaler: StartScaler, source: ScriptedSource, fits: ScriptedFits
) -> None:
    source.set_live("q", 10.0)
    fits.levels["q"] = 100.0  # fits the past, then forecasts ten times what comes: backtest confidence 0.95
    server = start_scaler(source, fits=fits, live_window_s=1.0)
    client = client_for(server)
    md = meta(queryStep="1s")
    wait_for(lambda: client.keda_poll(NS, NAME, md).value_float == 100.0)
    # Three 1 s windows later the live error is all over-forecast (gate confidence 0): observed is served and a
    # refit is asked for.
    wait_for(lambda: fits.fits.get("q", 0) >= 2, timeout=30)
    wait_for(lambda: client.keda_poll(NS, NAME, md).value_float == 10.0, timeout=30)
    # The refit's model forecasts ten times too much again, so the served reason cycles (forecast, then gated
    # after three windows): read the view until it shows the gated state, then check what it says about it.
    views: list[dict[str, Any]] = []

    def gated() -> bool:
        views.append(http_json(server.http_port, "/forecast")["scaledObjects"][0])
        return bool(views[-1]["served"]["reason"] == "low-confidence")

    wait_for(gated, timeout=30)
    view = views[-1]
    assert view["served"]["value"] == 10.0
    assert view["live"]["misses_over_20pct"] >= 1
    assert view["live"]["confidence"] < 0.8


def test_a_forecast_that_runs_low_is_refitted_but_not_gated(
    start_scaler: StartScaler, source: ScriptedSource, fits: ScriptedFits
) -> None:
    source.set_live("q", 50.0)
    fits.levels["q"] = 5.0  # forecasts a tenth of what comes: the served max(forecast, observed) is the observed
    server = start_scaler(source, fits=fits, live_window_s=1.0)
    client = client_for(server)
    md = meta(queryStep="1s")
    wait_for(lambda: client.keda_poll(NS, NAME, md).value_float == 50.0)
    # Live accuracy falls (a refit is asked for), but nothing was over-forecast, so the gate stays open: the
    # forecast path keeps serving, which here is the observed value, exactly what reactive would serve.
    wait_for(lambda: fits.fits.get("q", 0) >= 2, timeout=30)
    view = http_json(server.http_port, "/forecast")["scaledObjects"][0]
    assert view["live"]["confidence"] < 0.8
    assert view["live"]["overshoot"] == 0.0
    assert view["live"]["gate_confidence"] == 1.0
    assert view["served"]["reason"] == "forecast"
    assert client.keda_poll(NS, NAME, md).value_float == 50.0


def test_long_gap_in_history_refuses_the_fit_and_says_why(start_scaler: StartScaler, source: ScriptedSource) -> None:
    from scaler_service.engine import default_fit_factory

    now = time.time()
    step = 300.0
    points = [(t, 20.0) for t in np.arange(now - 3 * 86400, now, step) if not now - 2 * 86400 < t < now - 86400]
    source.set_points("gappy", [(float(t), v) for t, v in points])
    server = start_scaler(source, fits=default_fit_factory())
    client = client_for(server)
    md = meta(query="gappy", queryStep="5m", historyTimeWindow="3d")
    assert client.keda_poll(NS, NAME, md).value_float == 20.0
    key = server.parser.parse(md).series_key.id
    wait_for(lambda: (s := server.cache.status(key)) is not None and s.last_error is not None, timeout=60)
    view = http_json(server.http_port, "/forecast")["scaledObjects"][0]
    assert view["served"]["reason"] == "no-model"
    assert "gap" in view["fitting"]["last_error"]
    assert client.keda_poll(NS, NAME, md).value_float == 20.0


def test_persisted_models_serve_at_once_after_a_restart(
    start_scaler: StartScaler, source: ScriptedSource, fits: ScriptedFits, tmp_path: Path
) -> None:
    source.set_live("q", 5.0)
    fits.levels["q"] = 60.0
    first = start_scaler(source, fits=fits, persist_dir=tmp_path)
    wait_for(lambda: client_for(first).keda_poll(NS, NAME, meta()).value_float == 60.0)
    first.stop(grace_s=1.0)
    # The second server cannot fit at all (no scripted level): the forecast it serves comes from disk.
    second = start_scaler(source, persist_dir=tmp_path)
    assert client_for(second).keda_poll(NS, NAME, meta()).value_float == 60.0


def test_log_lines_of_a_call_name_the_scaled_object(start_scaler: StartScaler, source: ScriptedSource) -> None:
    import structlog

    server = start_scaler(source)
    client = client_for(server)
    with structlog.testing.capture_logs(processors=[structlog.contextvars.merge_contextvars]) as logs:
        rpc_code(lambda: client.keda_poll(NS, "typo", meta(threshold="x")))
    refused = [e for e in logs if e["event"] == "request refused"]
    assert refused and refused[0]["namespace"] == NS and refused[0]["name"] == "typo"
    assert "threshold" in refused[0]["reason"]


def test_first_fetch_is_bounded_by_the_call_deadline(start_scaler: StartScaler, source: ScriptedSource) -> None:
    source.set_live("q", 4.0)
    source.delay_s = 3.0  # the first fetch of a brand-new series outlasts KEDA's 3 s deadline
    server = start_scaler(source)
    client = client_for(server)
    code, details = rpc_code(lambda: client.keda_poll(NS, NAME, meta()))
    assert code is grpc.StatusCode.UNAVAILABLE  # answered before the deadline, not DEADLINE_EXCEEDED
    assert "first fetch is still running" in details
    source.delay_s = 0.0
    wait_for(lambda: _value_or_none(client, meta()) == 4.0)


@pytest.mark.parametrize(
    ("overrides", "refusal"),
    [
        ({"max_streams": 1}, "at most 1 StreamIsActive streams are served at once (--max-streams)"),
        ({"grpc_server": "sync", "grpc_workers": 2}, "at most 1 StreamIsActive streams are served at once by the sync"),
    ],
    ids=["aio", "sync"],
)
def test_streams_beyond_the_cap_are_refused_not_starving_unary_calls(
    start_scaler: StartScaler, source: ScriptedSource, overrides: dict[str, Any], refusal: str
) -> None:
    source.set_live("q", 2.0)
    server = start_scaler(source, **overrides)
    client = client_for(server)
    first = client.stream_is_active(NS, "a", meta(), timeout=20)
    assert next(first) is True
    code, details = rpc_code(lambda: next(client.stream_is_active(NS, "b", meta(), timeout=5)))
    assert code is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert refusal in details
    assert client.keda_poll(NS, "c", meta()).value_float == 2.0  # unary calls still answer
    assert 'foresight_rpc_errors_total{code="RESOURCE_EXHAUSTED",method="StreamIsActive"} 1.0' in http_text(
        server.http_port, "/metrics"
    )
