"""A tiny Prometheus HTTP API of our own (instant and range queries of one constant series), for tests that
need a server behaving in ways a real Prometheus does not: redirecting, counting what it is asked for,
answering a query with a huge body (streamed without a length, or a small gzip that inflates)."""

from __future__ import annotations

import gzip
import http.server
import json
import math
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import parse_qs, urlsplit


class FakePrometheus:
    def __init__(
        self,
        *,
        value: float = 1.0,
        redirect_to: str | None = None,
        huge_answer_bytes: int = 0,
        gzip_answer: bool = False,
        range_value: float | None = None,
        huge_range_query: str | None = None,
        bad_range_query: str | None = None,
    ) -> None:
        self.value = value
        self.redirect_to = redirect_to
        self.huge_answer_bytes = huge_answer_bytes
        """> 0: an instant query (and a range query naming ``huge_range_query``) is answered with that many bytes
        of distinct series."""
        self.gzip_answer = gzip_answer
        """With ``huge_answer_bytes``: sent gzip-compressed with its (small) length, instead of streamed."""
        self.range_value = range_value
        """Set: a range query is answered with one series of this value, one point per step (unset: no data)."""
        self.huge_range_query = huge_range_query
        """With ``huge_answer_bytes``: a range query whose text contains this is answered with the huge body."""
        self.bad_range_query = bad_range_query
        """A range query whose text contains this is answered 400 with a 100 kB error body, as a misbehaving
        proxy in front of Prometheus might."""
        self.bytes_sent = 0
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
                if url.path == "/api/v1/query" and fake.huge_answer_bytes > 0:
                    self._huge_answer(matrix=False)
                    return
                huge_range = fake.huge_range_query if fake.huge_answer_bytes > 0 else None
                if url.path == "/api/v1/query_range" and huge_range is not None and huge_range in q["query"]:
                    self._huge_answer(matrix=True)
                    return
                if url.path == "/api/v1/query_range" and fake.bad_range_query and fake.bad_range_query in q["query"]:
                    error = b"bad_data: " + b"x" * 100_000
                    self.send_response(400)
                    self.send_header("Content-Type", "text/plain")
                    self.send_header("Content-Length", str(len(error)))
                    self.end_headers()
                    self.wfile.write(error)
                    return
                if url.path == "/api/v1/query":
                    now = float(q.get("time", time.time()))
                    result = [{"metric": {}, "value": [now, str(fake.value)]}]
                    body = {"status": "success", "data": {"resultType": "vector", "result": result}}
                elif url.path == "/api/v1/query_range":
                    start, end, step = float(q["start"]), float(q["end"]), float(q["step"].rstrip("s"))
                    n = math.floor((end - start) / step) + 1
                    fake.range_queries += 1
                    fake.points_requested += n
                    # Counted, answered with no data unless asked: the figures are about what a fit asks for.
                    series = []
                    if fake.range_value is not None:
                        values = [[start + i * step, str(fake.range_value)] for i in range(n)]
                        series = [{"metric": {}, "values": values}]
                    body = {"status": "success", "data": {"resultType": "matrix", "result": series}}
                else:
                    self.send_error(404)
                    return
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _huge_answer(self, *, matrix: bool) -> None:
                kind, point = (b"matrix", b'"values":[[1,"1"]]') if matrix else (b"vector", b'"value":[1,"1"]')
                head = b'{"status":"success","data":{"resultType":"%s","result":[' % kind
                series = b'{"metric":{"pod":"pod-%%09d"},%s},' % point
                last = b'{"metric":{},%s}]}}' % point
                count = max(1, (fake.huge_answer_bytes - len(head)) // len(series % 0))
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                if fake.gzip_answer:
                    body = head + b"".join(series % i for i in range(count)) + last
                    packed = gzip.compress(body, compresslevel=9)
                    self.send_header("Content-Encoding", "gzip")
                    self.send_header("Content-Length", str(len(packed)))
                    self.end_headers()
                    self.wfile.write(packed)
                    fake.bytes_sent += len(packed)
                    return
                self.end_headers()  # no length: the body ends when the connection closes (HTTP/1.0)
                try:
                    self.wfile.write(head)
                    batch = 1000
                    for first in range(0, count, batch):
                        chunk = b"".join(series % i for i in range(first, min(count, first + batch)))
                        self.wfile.write(chunk)
                        fake.bytes_sent += len(chunk)
                    self.wfile.write(last)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client stopped reading

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def wait_until_sent(self, at_least: int, timeout_s: float = 10.0) -> None:
        """The fake writes on its own thread: let it run into the closed connection before its bytes are counted."""
        deadline = time.monotonic() + timeout_s
        while self.bytes_sent < at_least and time.monotonic() < deadline:
            time.sleep(0.05)

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
