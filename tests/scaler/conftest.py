"""Fixtures for the scaler tests: the real server on loopback ports, a KEDA-like client, a scripted source.

``ScriptedSource`` is a test double of the *source argument* (the DataSource protocol), not of our code: it
lets a test decide what "Prometheus" answers (values, NaN, several series, an outage) without a Prometheus.
Tests against the real Prometheus live in test_scaler_prometheus.py.
"""

from __future__ import annotations

import math
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import grpc
import numpy as np
import pytest

from forecasting.curve import ForecastCurve
from forecasting.models.base import FittedModel
from forecasting.serving import ServingModel
from scaler_service.client import ScalerClient
from scaler_service.engine import FitFactory
from scaler_service.server import ScalerServer
from scaler_service.settings import Settings
from scaler_service.sources.base import DataSource, Samples, SourceUnavailable
from scaler_service.trigger import SeriesKey, TriggerSpec

PROM = "http://scripted-prometheus:9090"


class ScriptedSource:
    """Thread-safe in-memory series per query; ``down`` fails every call like an unreachable Prometheus."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._lock = threading.Lock()
        self._series: dict[str, list[tuple[float, float]]] = {}
        self._live: dict[str, float] = {}
        self._errors: dict[str, Exception] = {}
        self.down = False
        self.delay_s = 0.0
        self.clock = clock
        self.calls = 0

    def set_live(self, query: str, value: float) -> None:
        """fetch_latest answers ``(now, value)`` like an instant query, and history holds ``value`` too."""
        with self._lock:
            self._live[query] = value

    def stop_live(self, query: str) -> None:
        with self._lock:
            self._live.pop(query, None)

    def set_points(self, query: str, points: list[tuple[float, float]]) -> None:
        with self._lock:
            self._series[query] = sorted(points)

    def fail(self, query: str, error: Exception | None) -> None:
        with self._lock:
            if error is None:
                self._errors.pop(query, None)
            else:
                self._errors[query] = error

    def _check(self, query: str) -> None:
        self.calls += 1
        if self.delay_s:
            time.sleep(self.delay_s)
        if self.down:
            raise SourceUnavailable("connection refused: scripted outage")
        err = self._errors.get(query)
        if err is not None:
            raise type(err)(str(err))

    def fetch_range(self, query: str, start: float, end: float, step_s: float) -> Samples:
        with self._lock:
            self._check(query)
            if query in self._live:
                ts = np.arange(math.ceil(start / step_s) * step_s, end, step_s, dtype=np.float64)
                return Samples(ts, np.full(len(ts), self._live[query], dtype=np.float64))
            pts = [(t, v) for t, v in self._series.get(query, []) if start <= t <= end]
        return Samples(np.array([t for t, _ in pts], dtype=np.float64), np.array([v for _, v in pts], dtype=np.float64))

    def fetch_latest(self, query: str, now: float) -> tuple[float, float] | None:
        with self._lock:
            self._check(query)
            if query in self._live:
                return now, self._live[query]
            pts = [(t, v) for t, v in self._series.get(query, []) if t <= now]
        return pts[-1] if pts else None


def scripted_model(
    key: str,
    level: float,
    *,
    trained_until: float,
    step_s: float,
    past: float | None = None,
    confidence: float = 0.95,
    name: str = "constant",
) -> ServingModel:
    """A model whose curve is ``past`` (its in-sample fit) up to ``trained_until`` and ``level`` for 30 h after.

    Its band is empty (a noiseless forecast), so every ``predictQuantile`` serves ``level``."""
    start = math.floor((trained_until - 7200) / step_s) * step_s
    ts = start + step_s * np.arange(int((7200 + 30 * 3600) / step_s), dtype=np.float64)
    point = np.where(ts <= trained_until, level if past is None else past, level).astype(np.float64)
    curve = ForecastCurve(start=start, step_s=step_s, point=point, lower=point.copy(), upper=point.copy())
    return ServingModel(
        key=key,
        model=FittedModel(name=name, trained_until=trained_until, curve=curve),
        confidence=confidence,
        fitted_at=time.time(),
    )


class ScriptedFits:
    """A fit factory whose models the test chooses per query (a ServingModel built directly, no Prophet).

    The model fits the recent history exactly (its in-sample part is the mean of the last 2 h the source
    returns) and forecasts ``levels[query]`` from the end of training on.
    """

    def __init__(self) -> None:
        self.levels: dict[str, float] = {}
        self.confidence: dict[str, float] = {}
        self.fits: dict[str, int] = {}
        self.lock = threading.Lock()

    def __call__(
        self, key: SeriesKey, spec: TriggerSpec, source: DataSource
    ) -> Callable[[str, ServingModel | None], ServingModel]:
        def fit(cache_key: str, previous: ServingModel | None) -> ServingModel:
            level = self.levels.get(key.query)
            if level is None:
                raise RuntimeError(f"no scripted model for {key.query!r}")
            with self.lock:
                self.fits[key.query] = self.fits.get(key.query, 0) + 1
            now = time.time()
            recent = source.fetch_range(key.query, now - 7200, now, key.step_s).values
            recent = recent[np.isfinite(recent)]
            return scripted_model(
                cache_key,
                level,
                trained_until=now,
                step_s=key.step_s,
                past=float(recent.mean()) if len(recent) else None,
                confidence=self.confidence.get(key.query, 0.95),
            )

        return fit


def scaler_settings(**overrides: Any) -> Settings:
    base = Settings(
        grpc_port=0,
        http_port=0,
        bind_address="127.0.0.1",
        source="prometheus",
        prometheus_url=PROM,
        fetch_interval_s=0.1,
        grace_period_s=2.0,
        grpc_workers=8,
        kube_annotations=False,
    )
    return replace(base, **overrides)


StartScaler = Callable[..., ScalerServer]


@pytest.fixture
def start_scaler() -> Iterator[StartScaler]:
    servers: list[ScalerServer] = []

    def start(source: DataSource | None, *, fits: FitFactory | None = None, **overrides: Any) -> ScalerServer:
        """``source=None``: the server's own sources (a real PrometheusSource for ``prometheus_url``)."""
        # Without scripted fits every fit fails at once (no model): the real pipeline only where a test asks.
        server = ScalerServer(
            scaler_settings(**overrides),
            source_for=None if source is None else (lambda address: source),
            fit_factory=fits if fits is not None else ScriptedFits(),
        )
        server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop(grace_s=1.0)


@pytest.fixture
def source() -> ScriptedSource:
    return ScriptedSource()


@pytest.fixture
def fits() -> ScriptedFits:
    return ScriptedFits()


def client_for(server: ScalerServer) -> ScalerClient:
    return ScalerClient(grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}"))


def wait_for(predicate: Callable[[], bool], timeout: float = 20.0, interval: float = 0.05) -> None:
    """Polls until the predicate holds; fails the test (not a timing assert) when it never does.

    A poll answered UNAVAILABLE because a new series' first fetch is still running counts as "not yet": the
    scaler says so when the first fetch outlasts what is left of the call's deadline (KEDA retries), which a
    busy machine makes happen on any first poll. Every other error still fails the test at once."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            if predicate():
                return
        except grpc.RpcError as exc:
            if exc.code() is not grpc.StatusCode.UNAVAILABLE or "first fetch is still running" not in (
                exc.details() or ""
            ):
                raise
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s")


def rpc_code(call: Callable[[], Any]) -> tuple[grpc.StatusCode, str]:
    try:
        call()
    except grpc.RpcError as exc:
        return exc.code(), exc.details() or ""
    raise AssertionError("the call succeeded; an error status was expected")


__all__ = ["PROM", "ScriptedFits", "ScriptedSource", "client_for", "rpc_code", "scripted_model", "wait_for"]


def serving_line(proc: subprocess.Popen[str]) -> str:
    """The JSON log line a ``serve`` process prints once it listens (read from its stderr, within 60 s)."""
    assert proc.stderr is not None
    line = ""
    deadline = time.monotonic() + 60
    while "scaler serving" not in line and time.monotonic() < deadline:
        line = proc.stderr.readline()
        assert line, "serve exited early"
    return line
