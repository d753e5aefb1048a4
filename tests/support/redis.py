"""A real Redis (Debian's ``redis-server``) on a free loopback port, for tests.

``RedisServer`` starts ``redis-server --port PORT --bind 127.0.0.1 --save "" --appendonly no --dir TMP`` and waits
until it answers PING; ``stop()`` (SIGTERM, or ``kill=True`` for SIGKILL) and ``start()`` keep the same port, so a
test can take Redis away mid-run and bring it back (empty: nothing is saved). ``flush()`` empties it between
tests that share the session server.

Fixtures: ``redis_server`` (session scope, flushed by ``redis_url`` before each test that asks for the URL) and
``redis_factory`` (function scope, a private server a test may stop and restart). Both skip the test when the
binary is missing (``./test.sh`` installs Debian's ``redis-server``). Import them in a conftest.py.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

REDIS_BINARY = os.environ.get("FORESIGHT_REDIS_SERVER", "/usr/bin/redis-server")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ping(port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    def __init__(self, directory: Path, port: int | None = None) -> None:
        self.directory = directory
        self.port = port if port is not None else free_port()
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = 10.0) -> None:
        if self.running:
            return
        log = (self.directory / "redis.log").open("ab")
        self._proc = subprocess.Popen(
            [
                REDIS_BINARY,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.directory),
                "--protected-mode",
                "yes",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self._proc.returncode}; see {self.directory}/redis.log")
            if _ping(self.port):
                return
            time.sleep(0.02)
        self.stop(kill=True)
        raise RuntimeError(f"redis-server did not answer on port {self.port} within {timeout}s")

    def stop(self, *, kill: bool = False) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        if kill:
            proc.kill()
        else:
            proc.terminate()
        try:
            proc.wait(5.0)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5.0)

    def flush(self) -> None:
        with socket.create_connection(("127.0.0.1", self.port), timeout=2.0) as s:
            s.sendall(b"FLUSHALL\r\n")
            if not s.recv(64).startswith(b"+OK"):
                raise RuntimeError("FLUSHALL failed")


def binary_missing() -> str | None:
    if shutil.which(REDIS_BINARY) is None:
        return f"{REDIS_BINARY} not installed (Debian package 'redis-server'; ./test.sh installs it)"
    return None


@contextlib.contextmanager
def redis_servers(make_dir: Callable[[], Path]) -> Iterator[Callable[[], RedisServer]]:
    reason = binary_missing()
    if reason is not None:
        pytest.skip(reason)
    started: list[RedisServer] = []

    def start() -> RedisServer:
        server = RedisServer(make_dir())
        server.start()
        started.append(server)
        return server

    try:
        yield start
    finally:
        for server in started:
            server.stop()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    with tempfile.TemporaryDirectory(prefix="foresight-redis-") as tmp, redis_servers(lambda: Path(tmp)) as start:
        yield start()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The session server's URL, emptied for this test."""
    redis_server.start()  # a previous test may have stopped it
    redis_server.flush()
    return redis_server.url


@pytest.fixture
def redis_factory(tmp_path: Path) -> Iterator[Callable[[], RedisServer]]:
    counter = iter(range(1000))
    with redis_servers(lambda: _mkdir(tmp_path / f"redis-{next(counter)}")) as start:
        yield start


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


__all__ = ["RedisServer", "binary_missing", "free_port", "redis_factory", "redis_server", "redis_servers", "redis_url"]
