"""A real Prometheus Pushgateway (Debian's ``prometheus-pushgateway``) on a free loopback port, for tests.

``pushgateway`` (fixture) starts one per test, waits for ``/-/ready`` and stops it at teardown; it skips the test
with the reason when the binary is missing (``scripts/setup.sh --with-test-tools`` installs it).
``metric_families(url)`` reads back what the gateway serves on ``/metrics``, parsed by ``prometheus_client``.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

BINARY = "prometheus-pushgateway"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Pushgateway:
    def __init__(self, workdir: Path) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._log = open(workdir / "pushgateway.log", "wb")  # noqa: SIM115  (closed in stop())
        self._process = subprocess.Popen(
            # Debian's build persists to /var/lib/prometheus by default: keep each test's gateway in memory only.
            [BINARY, f"--web.listen-address=127.0.0.1:{self.port}", "--persistence.file=", "--log.level=warn"],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=workdir,
        )
        deadline = time.monotonic() + 15
        while True:
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as answer:
                    if answer.status == 200:
                        return
            except OSError:
                pass
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"pushgateway did not become ready (see {workdir / 'pushgateway.log'})")
            time.sleep(0.05)

    def stop(self) -> None:
        if self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(5)
        self._log.close()


def metric_families(url: str) -> dict[str, Metric]:
    with urllib.request.urlopen(f"{url}/metrics", timeout=5) as answer:
        text = answer.read().decode("utf-8")
    return {family.name: family for family in text_string_to_metric_families(text)}


@pytest.fixture
def pushgateway(tmp_path: Path) -> Iterator[Pushgateway]:
    if shutil.which(BINARY) is None:
        pytest.skip(f"{BINARY} not installed (scripts/setup.sh --with-test-tools installs it)")
    gateway = Pushgateway(tmp_path)
    try:
        yield gateway
    finally:
        gateway.stop()
