"""The HTTP side port under hostile clients, over real sockets: a bind address of its own, a bounded pool that
half-open connections cannot exhaust, quiet disconnects, paginated /forecast, a small /metrics."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from scaler_service.http_server import BoundedHttpServer, Response, route_for, text
from tests.scaler.conftest import ScriptedSource, StartScaler, client_for, serving_line

ROOT = Path(__file__).resolve().parents[2]


def get(url: str, timeout: float = 10.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def poll(server: Any, namespace: str, name: str, query: str = "q") -> None:
    client = client_for(server)
    client.keda_poll(namespace, name, {"query": query, "threshold": "10"})
    client.close()


def test_routes_are_a_table_with_exact_and_prefix_entries() -> None:
    def page(name: str) -> Any:
        return lambda request: text(200, name)

    routes = {"/": page("index"), "/metrics": page("metrics"), "/so/*": page("so"), "/so/special": page("special")}
    assert route_for(routes, "/") is routes["/"]
    assert route_for(routes, "/so/ns/name") is routes["/so/*"]
    assert route_for(routes, "/so/special") is routes["/so/special"]
    assert route_for(routes, "/nope") is None and route_for(routes, "/metricsx") is None


def test_the_http_port_has_its_own_bind_address(start_scaler: StartScaler, source: ScriptedSource) -> None:
    server = start_scaler(source, bind_address="127.0.0.1", http_bind_address="127.0.0.2")
    assert get(f"http://127.0.0.2:{server.http_port}/healthz")[0] == 200
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", server.http_port), timeout=2).close()


def test_slow_clients_hold_a_worker_for_the_request_deadline_only() -> None:
    server = BoundedHttpServer(
        "127.0.0.1",
        0,
        {"/healthz": lambda request: Response(200, b"ok\n")},
        workers=2,
        max_queued=4,
        read_timeout_s=0.5,
        request_deadline_s=1.0,
    )
    server.start()
    try:
        # A slow-loris client: sends a header byte every 0.3 s (each read is within the read timeout).
        slow = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(2)]
        for s in slow:
            s.sendall(b"GET /healthz HTTP/1.0\r\n")
        started = time.monotonic()
        status = None
        while time.monotonic() - started < 10:
            for s in slow:
                with contextlib.suppress(OSError):
                    s.sendall(b"X")
            try:
                status = get(f"http://127.0.0.1:{server.port}/healthz", timeout=1.0)[0]
                break
            except OSError:
                time.sleep(0.3)
        assert status == 200
        assert time.monotonic() - started < 5.0
    finally:
        server.stop()


def _threads(pid: int) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("Threads:"))


def _rst(sock: socket.socket) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def test_half_open_connections_and_disconnects_against_the_serve_command() -> None:
    env = {**os.environ, "FORESIGHT_BIND_ADDRESS": "127.0.0.1"}
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "scaler_service", "serve", "--grpc-port", "0", "--http-port", "0"),
            *("--source", "replay", "--grace-period-s", "1", "--kube-annotations", "false", "--log-level", "debug"),
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    half_open: list[socket.socket] = []
    try:
        port = json.loads(serving_line(proc))["http_port"]
        threads_before = _threads(proc.pid)
        for _ in range(1000):
            s = socket.create_connection(("127.0.0.1", port))
            s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")  # never finished
            half_open.append(s)
        time.sleep(1.0)
        assert _threads(proc.pid) - threads_before < 20
        for s in half_open:
            _rst(s)
        half_open.clear()
        # Clients that send a request and disconnect at once, while the answer is being written.
        for _ in range(200):
            s = socket.create_connection(("127.0.0.1", port))
            s.sendall(b"GET /metrics HTTP/1.0\r\n\r\n")
            _rst(s)
        status = None
        end = time.monotonic() + 30
        while time.monotonic() < end:
            try:
                status = get(f"http://127.0.0.1:{port}/healthz", timeout=2.0)[0]
                break
            except OSError:
                time.sleep(0.5)
        assert status == 200
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
        lines = [x for x in err.splitlines() if x.strip()]
        assert "Traceback" not in err
        events = [json.loads(x)["event"] for x in lines]  # every line on stderr is one JSON log line
        assert "http client went away" in events
    finally:
        for s in half_open:
            s.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_forecast_is_paginated_and_filtered(start_scaler: StartScaler, source: ScriptedSource) -> None:
    source.set_live("q", 4.0)
    server = start_scaler(source)
    for i in range(120):
        poll(server, "shop" if i % 2 else "blog", f"so-{i:03d}")
    base = f"http://127.0.0.1:{server.http_port}/forecast"
    seen: list[tuple[str, str]] = []
    url = base
    pages = 0
    while True:
        status, body = get(url)
        assert status == 200
        doc = json.loads(body)
        assert len(doc["scaledObjects"]) <= 50 and doc["total"] == 120
        seen += [(o["namespace"], o["name"]) for o in doc["scaledObjects"]]
        pages += 1
        if doc["next"] is None:
            break
        url = f"{base}?cursor={doc['next']}"
    assert pages == 3 and len(seen) == 120 and seen == sorted(seen) and len(set(seen)) == 120
    doc = json.loads(get(f"{base}?namespace=shop&limit=500")[1])
    assert doc["total"] == 60 and doc["next"] is None
    assert {o["namespace"] for o in doc["scaledObjects"]} == {"shop"}
    doc = json.loads(get(f"{base}?namespace=shop&name=so-001")[1])
    assert [o["name"] for o in doc["scaledObjects"]] == ["so-001"]
    assert doc["scaledObjects"][0]["fit"] == {"step": "1m", "points": 20160, "coarsened": False}
    for bad in ("limit=0", "limit=501", "limit=%D9%A1", "cursor=%%%", "cursor=bm9wZQ"):
        status, body = get(f"{base}?{bad}")
        assert status == 400, bad
        assert len(body) < 200


def test_metrics_stay_small_with_many_scaledobjects(start_scaler: StartScaler, source: ScriptedSource) -> None:
    for i in range(20):
        source.set_live(f"q{i}", 4.0)
    server = start_scaler(source, metrics_max_subscriptions=5)
    for i in range(20):
        poll(server, "ns", f"so-{i:02d}", f"q{i}")
    body = get(f"http://127.0.0.1:{server.http_port}/metrics")[1].decode()
    served = [x for x in body.splitlines() if x.startswith("foresight_served_value{")]
    observed = [x for x in body.splitlines() if x.startswith("foresight_series_observed{")]
    assert len(served) == 5 and len(observed) == 5
    counts = [x for x in body.splitlines() if x.startswith("foresight_subscriptions{")]
    assert sum(float(x.rsplit(" ", 1)[1]) for x in counts) == 20
    assert 'mode="predictive"' in counts[0]
    assert "foresight_subscriptions_not_exported 15.0" in body
