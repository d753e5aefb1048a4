"""A tiny Prometheus HTTP API of our own (instant and range queries of one constant series), for tests that
need a server behaving in ways a real Prometheus does not: redirecting, counting what it is asked for."""

from __future__ import annotations

import http.server
import json
import math
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import parse_qs, urlsplit


class FakePrometheus:
    def __init__(self, *, value: float = 1.0, redirect_to: str | None = None) -> None:
        self.value = value
        self.redirect_to = redirect_to
        self.requests = 0
        self.points_requested = 0
        self.range_queries = 0
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                fake.requests += 1
                url = urlsplit(self.path)
                if fake.redirect_to is not None:
                    self.send_response(302)
                    self.send_header("Location", fake.redirect_to + self.path)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                q = {k: v[0] for k, v in parse_qs(url.query).items()}
                if url.path == "/api/v1/query":
                    now = float(q.get("time", time.time()))
                    result = [{"metric": {}, "value": [now, str(fake.value)]}]
                    body = {"status": "success", "data": {"resultType": "vector", "result": result}}
                elif url.path == "/api/v1/query_range":
                    start, end, step = float(q["start"]), float(q["end"]), float(q["step"])
                    n = math.floor((end - start) / step) + 1
                    fake.range_queries += 1
                    fake.points_requested += n
                    # Counted, answered with no data: the figures are about what a fit asks for.
                    body = {"status": "success", "data": {"resultType": "matrix", "result": []}}
                else:
                    self.send_error(404)
                    return
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> FakePrometheus:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@contextmanager
def fake_prometheus(**kwargs: object) -> Iterator[FakePrometheus]:
    fake = FakePrometheus(**kwargs).start()  # type: ignore[arg-type]
    try:
        yield fake
    finally:
        fake.stop()
