"""A tiny Prometheus HTTP API of our own (instant and range queries of one constant series), for tests that
need a server behaving in ways a real Prometheus does not: redirecting, counting what it is asked for,
answering an instant query with a huge body (streamed without a length, or a small gzip that inflates)."""

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
    ) -> None:
        self.value = value
        self.redirect_to = redirect_to
        self.huge_answer_bytes = huge_answer_bytes
        """> 0: an instant query is answered with a vector of that many bytes of distinct series."""
        self.gzip_answer = gzip_answer
        """With ``huge_answer_bytes``: sent gzip-compressed with its (small) length, instead of streamed."""
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
                    self._huge_answer()
                    return
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

            def _huge_answer(self) -> None:
                head = b'{"status":"success","data":{"resultType":"vector","result":['
                series = b'{"metric":{"pod":"pod-%09d"},"value":[1,"1"]},'
                count = max(1, (fake.huge_answer_bytes - len(head)) // len(series % 0))
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                if fake.gzip_answer:
                    body = head + b"".join(series % i for i in range(count)) + b'{"metric":{},"value":[1,"1"]}]}}'
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
                    self.wfile.write(b'{"metric":{},"value":[1,"1"]}]}}')
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client stopped reading

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
