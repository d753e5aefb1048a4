"""A small fake Prometheus HTTP API (``/api/v1/query_range`` and ``/api/v1/query``) over HTTPS with a self-signed
certificate, and optional bearer-token or basic authentication, for the TLS and authentication options of
Prometheus clients.

The real Prometheus (tests/support/prometheus.py) serves plain HTTP in the tests; this fake exists for what is
about the connection itself: certificate verification and credentials. Its answers are flat series: any query
whose text contains ``memory`` is ``memory_percent``, any other ``cpu_percent``, one point per step.
"""

from __future__ import annotations

import base64
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.fakes.tls import FakeApiHandler, LoopbackHttps


@dataclass
class FakeHttpsPrometheus:
    cpu_percent: float = 10.0
    memory_percent: float = 30.0
    bearer_token: str | None = None
    basic_auth: tuple[str, str] | None = None
    requests: list[str] = field(default_factory=list)
    refused: int = 0

    def __post_init__(self) -> None:
        self._https = LoopbackHttps("fake-prometheus")
        self.cert_path = self._https.cert_path
        self.url = ""
        self.lock = threading.Lock()

    def __enter__(self) -> FakeHttpsPrometheus:
        self.url = self._https.start(_handler(self), quiet_handshake_errors=True)
        return self

    def __exit__(self, *exc: object) -> None:
        self._https.stop()

    def authorized(self, header: str | None) -> bool:
        if self.bearer_token is not None:
            return header == f"Bearer {self.bearer_token}"
        if self.basic_auth is not None:
            user, password = self.basic_auth
            return header == "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        return True


def _handler(fake: FakeHttpsPrometheus) -> type[BaseHTTPRequestHandler]:
    class Handler(FakeApiHandler):
        def do_GET(self) -> None:
            split = urlsplit(self.path)
            query = {k: v[0] for k, v in parse_qs(split.query).items()}
            with fake.lock:
                fake.requests.append(self.path)
            if not fake.authorized(self.headers.get("Authorization")):
                with fake.lock:
                    fake.refused += 1
                self._send(401, {"status": "error", "errorType": "unauthorized", "error": "unauthorized"})
                return
            if split.path == "/api/v1/query":
                value = fake.memory_percent if "memory" in query["query"] else fake.cpu_percent
                sample = {"metric": {"instance": "x"}, "value": [float(query.get("time", 0)), repr(value)]}
                self._send(200, {"status": "success", "data": {"resultType": "vector", "result": [sample]}})
                return
            if split.path != "/api/v1/query_range":
                self._send(404, {"status": "error", "errorType": "not_found", "error": split.path})
                return
            start, end, step = float(query["start"]), float(query["end"]), float(query["step"].rstrip("s"))
            value = fake.memory_percent if "memory" in query["query"] else fake.cpu_percent
            points = []
            t = start
            while t <= end:
                points.append([t, repr(value)])
                t += step
            result = [{"metric": {"instance": "x"}, "values": points}] if points else []
            self._send(200, {"status": "success", "data": {"resultType": "matrix", "result": result}})

        def _send(self, status: int, body: dict[str, Any]) -> None:
            payload = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

    return Handler
