"""A small bounded HTTP/1.0 server for the side port: a fixed pool of handler threads, a bounded queue of
accepted connections, a deadline on reading each request, and quiet logging.

Why not :class:`http.server.ThreadingHTTPServer`: it starts one thread per connection with no read timeout,
so 1,000 half-open connections hold 1,000 threads; and a client that goes away mid-answer prints a
traceback on stderr. Here:

- ``workers`` threads serve connections; at most ``max_queued`` accepted connections wait for one, further
  ones are closed at once (the client retries; a scrape is never worth unbounded memory);
- each socket read waits at most ``read_timeout_s``, and the whole request (line and headers) must arrive
  within ``request_deadline_s`` of being accepted, or the connection is closed: a slow client holds a
  worker for seconds, not forever;
- a client that disconnects is one JSON log line at debug level, never a traceback.

Routing is a table: ``{"/metrics": handler, "/so/*": handler, ...}``. A key ending in ``/*`` matches every
path under that prefix; other keys match exactly. Adding a page is one line in that table.
"""

from __future__ import annotations

import contextlib
import queue
import socket
import socketserver
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import structlog

log = structlog.get_logger(__name__)

MAX_QUERY_CHARS = 2048


@dataclass(frozen=True, slots=True)
class Request:
    path: str
    query: Mapping[str, str]
    """Query parameters (the first value of each; the query string is at most 2,048 characters)."""
    headers: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    body: bytes
    content_type: str = "text/plain; charset=utf-8"
    headers: Mapping[str, str] = field(default_factory=dict)


Handler = Callable[[Request], Response]
Routes = Mapping[str, Handler]


def text(status: int, message: str) -> Response:
    return Response(status, message.encode("utf-8"))


def route_for(routes: Routes, path: str) -> Handler | None:
    handler = routes.get(path)
    if handler is not None:
        return handler
    best: tuple[int, Handler] | None = None
    for key, candidate in routes.items():
        if key.endswith("/*") and path.startswith(key[:-1]) and (best is None or len(key) > best[0]):
            best = (len(key), candidate)
    return None if best is None else best[1]


_CLIENT_GONE = (ConnectionError, TimeoutError, socket.timeout)


class _RequestHandler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.0"

    def setup(self) -> None:
        super().setup()
        self.request.settimeout(self.server.read_timeout_s)

    def parse_request(self) -> bool:
        ok = super().parse_request()
        self.server.request_read(self.request)  # the request is in: its answer may take longer
        return ok

    def log_message(self, format: str, *args: Any) -> None:
        # The stdlib writes these to stderr (bad request lines, timeouts): one quiet structured line instead.
        log.debug("http request not served", client=self.client_address[0], detail=(format % args)[:200])

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        handler = route_for(self.server.routes, url.path)
        if handler is None:
            paths = ", ".join(sorted(k for k in self.server.routes if not k.endswith("/*")))
            self._send(text(404, f"not found: try {paths}\n"))
            return
        if len(url.query) > MAX_QUERY_CHARS:
            self._send(text(414, f"query string longer than {MAX_QUERY_CHARS} characters\n"))
            return
        query: dict[str, str] = {}
        for key, value in parse_qsl(url.query, keep_blank_values=True):
            query.setdefault(key, value)
        request = Request(path=url.path, query=query, headers={k.lower(): v for k, v in self.headers.items()})
        try:
            response = handler(request)
        except Exception as exc:
            log.error("http handler failed", path=url.path, error=f"{type(exc).__name__}: {str(exc)[:200]}")
            response = text(500, "internal error (see the server log)\n")
        self._send(response)

    def _send(self, response: Response) -> None:
        try:
            self.send_response(response.status)
            self.send_header("Content-Type", response.content_type)
            self.send_header("Content-Length", str(len(response.body)))
            for name, value in response.headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(response.body)
        except _CLIENT_GONE as exc:
            log.debug("http client went away", client=self.client_address[0], error=type(exc).__name__)


class _Server(socketserver.TCPServer):
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(
        self,
        address: tuple[str, int],
        routes: Routes,
        *,
        workers: int,
        max_queued: int,
        read_timeout_s: float,
        request_deadline_s: float,
    ) -> None:
        self.routes = routes
        self.read_timeout_s = read_timeout_s
        self.request_deadline_s = request_deadline_s
        self._queue: queue.Queue[tuple[socket.socket, Any, float] | None] = queue.Queue(maxsize=max_queued)
        self._reading: dict[int, tuple[socket.socket, float]] = {}
        self._lock = threading.Lock()
        self._workers = [threading.Thread(target=self._work, name=f"http-{i}", daemon=True) for i in range(workers)]
        self.refused_busy = 0
        self.closed_slow = 0
        super().__init__(address, _RequestHandler)
        for worker in self._workers:
            worker.start()

    # --- accept side (the serve_forever thread) -----------------------------------------------------

    def process_request(self, request: Any, client_address: Any) -> None:
        try:
            self._queue.put_nowait((request, client_address, time.monotonic()))
        except queue.Full:
            self.refused_busy += 1
            if self.refused_busy in (1, 10) or self.refused_busy % 1000 == 0:
                log.warning("http connections refused: all workers busy", refused=self.refused_busy)
            self.shutdown_request(request)

    def service_actions(self) -> None:
        """Between accepts (every 0.5 s at most): close connections still sending their request too late."""
        now = time.monotonic()
        with self._lock:
            late = [(k, s) for k, (s, deadline) in self._reading.items() if now > deadline]
            for k, _ in late:
                del self._reading[k]
        for _, sock in late:
            self.closed_slow += 1
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        if late:
            log.debug("http connections closed: request not read in time", count=len(late))

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, _CLIENT_GONE):
            log.debug("http client went away", client=client_address[0], error=type(exc).__name__)
        else:
            log.warning(
                "http connection failed",
                client=client_address[0],
                error=f"{type(exc).__name__}: {str(exc)[:200]}",
            )

    # --- worker side ------------------------------------------------------------------------------

    def request_read(self, sock: socket.socket) -> None:
        with self._lock:
            self._reading.pop(id(sock), None)

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            sock, client_address, accepted = item
            deadline = accepted + self.request_deadline_s
            if time.monotonic() > deadline:
                self.closed_slow += 1
                self.shutdown_request(sock)
                continue
            with self._lock:
                self._reading[id(sock)] = (sock, deadline)
            try:
                self.finish_request(sock, client_address)
            except Exception:
                self.handle_error(sock, client_address)
            finally:
                self.request_read(sock)
                self.shutdown_request(sock)

    def stop_workers(self) -> None:
        for _ in self._workers:
            with contextlib.suppress(queue.Full):
                self._queue.put(None, timeout=0.1)


class BoundedHttpServer:
    """Serves ``routes`` on ``host:port`` (0: any free port) from a background thread."""

    def __init__(
        self,
        host: str,
        port: int,
        routes: Routes,
        *,
        workers: int = 8,
        max_queued: int = 64,
        read_timeout_s: float = 5.0,
        request_deadline_s: float = 10.0,
    ) -> None:
        self._server = _Server(
            (host, port),
            routes,
            workers=workers,
            max_queued=max_queued,
            read_timeout_s=read_timeout_s,
            request_deadline_s=request_deadline_s,
        )
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.2}, name="http", daemon=True
        )

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def refused_busy(self) -> int:
        return self._server.refused_busy

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.stop_workers()
        self._server.server_close()
        self._thread.join(5.0)


__all__ = ["BoundedHttpServer", "Handler", "Request", "Response", "Routes", "route_for", "text"]
