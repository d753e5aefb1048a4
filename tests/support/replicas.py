"""Several scaler processes on loopback ports over one store, and a KEDA-like caller that round-robins over them.

:func:`start_replicas` runs ``python -m scaler_service serve`` once per replica (each on free gRPC and HTTP ports,
logging JSON to a file) and waits until every one answers ``/healthz``. :class:`Replica` reads its ``/metrics`` and
``/forecast`` and can be stopped (SIGTERM) or killed (SIGKILL) like a pod. :func:`round_robin_channel` opens one
gRPC channel over all replica addresses with the ``round_robin`` policy: what KEDA's operator does behind a
headless Service, so consecutive calls (even the three calls of one poll) land on different replicas.
Used by tests/replicas and by loadtests/replicas_bench.py.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from prometheus_client.parser import text_string_to_metric_families

from tests.support.redis import free_port

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Replica:
    name: str
    grpc_port: int
    http_port: int
    log_path: Path
    proc: subprocess.Popen[bytes]
    args: list[str] = field(default_factory=list)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def _get(self, path: str, timeout: float = 5.0) -> bytes:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}{path}", timeout=timeout) as resp:
            body: bytes = resp.read()
            return body

    def healthz(self) -> str:
        try:
            return self._get("/healthz", timeout=2.0).decode()
        except urllib.error.HTTPError as exc:
            return exc.read().decode()

    def samples(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        text = self._get("/metrics", timeout=120.0).decode()  # large at 10,000 series on a loaded machine
        out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                out[(s.name, tuple(sorted(s.labels.items())))] = float(s.value)
        return out

    def metric(self, name: str, **labels: str) -> float:
        """Sum of the samples of ``name`` whose labels include ``labels`` (0 when there is none)."""
        want = set(labels.items())
        return sum(v for (n, lab), v in self.samples().items() if n == name and want <= set(lab))

    def forecast(self, namespace: str | None = None, name: str | None = None) -> list[dict[str, Any]]:
        query = "&".join(f"{k}={v}" for k, v in (("namespace", namespace), ("name", name)) if v is not None)
        doc = json.loads(self._get("/forecast" + (f"?{query}" if query else "")))
        objects: list[dict[str, Any]] = doc["scaledObjects"]
        return objects

    def kill(self) -> None:
        """SIGKILL, like a node failure: no shutdown, no lease released."""
        if self.alive:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.alive:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def rss_bytes(self) -> int:
        """Resident memory of the process (Linux /proc)."""
        with open(f"/proc/{self.proc.pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        return 0

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


def launch_replica(
    name: str,
    directory: Path,
    args: Sequence[str],
    env: dict[str, str] | None = None,
    *,
    module: str = "scaler_service",
) -> Replica:
    """``python -m MODULE serve ...``: ``scaler_service`` (the product) or a benchmark's runner with the same CLI."""
    grpc_port, http_port = free_port(), free_port()
    log_path = directory / f"{name}.log"
    cmd = [
        sys.executable,
        "-m",
        module,
        "serve",
        "--bind-address",
        "127.0.0.1",
        "--grpc-port",
        str(grpc_port),
        "--http-port",
        str(http_port),
        "--kube-annotations",
        "false",
        "--log-format",
        "json",
        *args,
    ]
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    with log_path.open("ab") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=full_env, cwd=str(directory))
    return Replica(name, grpc_port, http_port, log_path, proc, list(args))


def wait_ready(replicas: Sequence[Replica], timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    pending = list(replicas)
    while pending and time.monotonic() < deadline:
        for r in list(pending):
            if not r.alive:
                raise RuntimeError(f"replica {r.name} exited with {r.proc.returncode}:\n{r.log_tail()}")
            try:
                r._get("/healthz", timeout=1.0)
                pending.remove(r)
            except (OSError, urllib.error.URLError):
                pass
        time.sleep(0.1)
    if pending:
        raise RuntimeError(
            f"replicas not ready within {timeout}s: {[r.name for r in pending]}\n{pending[0].log_tail()}"
        )


def start_replicas(
    count: int,
    directory: Path,
    args: Sequence[str],
    *,
    first_index: int = 0,
    env: dict[str, str] | None = None,
    module: str = "scaler_service",
) -> list[Replica]:
    replicas = [launch_replica(f"replica-{first_index + i}", directory, args, env, module=module) for i in range(count)]
    try:
        wait_ready(replicas)
    except BaseException:
        for r in replicas:
            r.stop()
        raise
    return replicas


def round_robin_channel(replicas: Sequence[Replica]) -> grpc.Channel:
    """One channel over every replica, calls spread with ``round_robin`` (KEDA behind a headless Service)."""
    target = "ipv4:" + ",".join(r.address for r in replicas)
    return grpc.insecure_channel(target, options=[("grpc.lb_policy_name", "round_robin")])


__all__ = ["Replica", "launch_replica", "round_robin_channel", "start_replicas", "wait_ready"]
