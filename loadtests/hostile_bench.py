"""Figures of the scaler under a hostile or careless caller, for this code and a baseline in the same run.

Each scenario starts ``python -m scaler_service serve`` in its own process (loopback ports, JSON logs to a
file) from a source tree: this repository, and with ``--baseline DIR`` also an older tree (e.g. extracted with
``git archive <commit> | tar -x -C DIR``), so both are measured on the same machine under the same load.

Scenarios (``--only`` picks some):

- ``oversized``: 300 GetMetricSpec calls, each with a distinct 1 MB ``threshold``: server RSS before and
  after, the status codes, the longest status text.
- ``series``: 10,000 ScaledObjects with distinct replay queries (one poll each): size and time of
  ``/forecast`` (default page) and ``/metrics``; then 10,000 more (20,000 queries): RSS after and how many
  were refused.
- ``series-1s``: 2,000 ScaledObjects with ``queryStep=1s``: RSS per series (each keeps 2 h of recent points).
- ``amplification``: one trigger with ``queryStep=1s`` and ``historyTimeWindow=400d`` against a fake
  Prometheus of ours that counts the points and range queries asked for (and answers with no data).
- ``shutdown``: a "Prometheus" that accepts connections and never answers; one poll, then SIGTERM with
  ``--grace-period-s 2``: seconds until the process exits (killed after 60 s).
- ``huge-answer``: an allowlisted fake Prometheus answers an instant query with 200 MB of distinct series
  (streamed, no length); one poll: its status, seconds, bytes the fake got to send and the server's peak RSS.

    python -m loadtests.hostile_bench                                  # this tree only
    git archive 950c372 | tar -x -C /tmp/base && python -m loadtests.hostile_bench --baseline /tmp/base
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import grpc

from scaler_service._generated import externalscaler_pb2 as pb
from scaler_service._generated import externalscaler_pb2_grpc as pb_grpc
from tests.fakes.prometheus_http import fake_prometheus

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
SCENARIOS = ("oversized", "series", "series-1s", "amplification", "shutdown", "huge-answer")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """The serve command from ``tree`` on free loopback ports, ready once /healthz answers."""

    def __init__(self, tree: Path, work: Path, *args: str) -> None:
        self.log_path = work / f"server-{time.monotonic_ns()}.log"
        self._log = self.log_path.open("wb")
        self.grpc_port, self.http_port = free_port(), free_port()
        env = {**os.environ, "PYTHONPATH": str(tree)}
        command = [PYTHON, "-m", "scaler_service", "serve", "--grpc-port", str(self.grpc_port)]
        command += ["--http-port", str(self.http_port), "--bind-address", "127.0.0.1"]
        command += ["--kube-annotations", "false", *args]
        self.process = subprocess.Popen(command, cwd=tree, env=env, stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 90
        while True:
            try:
                self.get("/healthz")
                return
            except OSError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"server did not start; see {self.log_path}")
            time.sleep(0.2)

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def rss_mib(self, field: str = "VmRSS") -> float:
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        return int(next(x for x in status.splitlines() if x.startswith(f"{field}:")).split()[1]) / 1024

    def get(self, path: str) -> tuple[int, float]:
        """(bytes, seconds) of one GET."""
        started = time.perf_counter()
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}{path}", timeout=600) as answer:
            size = len(answer.read())
        return size, time.perf_counter() - started

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()


def _code(call: Callable[[], Any]) -> tuple[str, int]:
    try:
        call()
    except grpc.RpcError as exc:
        return exc.code().name, len(exc.details() or "")
    return "OK", 0


def oversized(tree: Path, work: Path) -> dict[str, Any]:
    server = Server(tree, work, "--source", "replay")
    try:
        before = server.rss_mib()
        codes: Counter[str] = Counter()
        longest = 0
        with grpc.insecure_channel(server.target, options=[("grpc.max_receive_message_length", 64 * 2**20)]) as ch:
            stub = pb_grpc.ExternalScalerStub(ch)  # type: ignore[no-untyped-call]
            for i in range(300):
                ref = pb.ScaledObjectRef(
                    namespace="ns", name=f"so-{i}", scalerMetadata={"query": f"q{i}", "threshold": f"{i}" + "1" * 2**20}
                )
                code, length = _code(lambda ref=ref: stub.GetMetricSpec(ref, timeout=30))  # type: ignore[misc]
                codes[code] += 1
                longest = max(longest, length)
        time.sleep(1.0)
        return {
            "rss_before_mib": round(before),
            "rss_after_mib": round(server.rss_mib()),
            "codes": dict(codes),
            "longest_status_text": longest,
        }
    finally:
        server.stop()


def _poll_many(target: str, first: int, count: int, step: str = "5m") -> Counter[str]:
    def one(i: int) -> str:
        ref = pb.ScaledObjectRef(
            namespace="bench",
            name=f"so-{i:05d}",
            scalerMetadata={
                "query": f"nasa-http-1995?scale={1 + i / 100_000:.5f}",
                "threshold": "50",
                "queryStep": step,
            },
        )
        return _code(lambda: stub.IsActive(ref, timeout=1.0))[0]

    with grpc.insecure_channel(target) as ch:
        stub = pb_grpc.ExternalScalerStub(ch)  # type: ignore[no-untyped-call]
        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            return Counter(pool.map(one, range(first, first + count)))


def series(tree: Path, work: Path) -> dict[str, Any]:
    server = Server(tree, work, "--source", "replay", "--max-concurrent-fits", "1", "--log-level", "warning")
    try:
        rss0 = server.rss_mib()
        first = _poll_many(server.target, 0, 10_000)
        forecast_bytes, forecast_s = server.get("/forecast")
        metrics_bytes, metrics_s = server.get("/metrics")
        second = _poll_many(server.target, 10_000, 10_000)
        time.sleep(2.0)
        return {
            "rss_start_mib": round(rss0),
            "first_10000": dict(first),
            "forecast_default_page_bytes": forecast_bytes,
            "forecast_s": round(forecast_s, 3),
            "metrics_bytes": metrics_bytes,
            "metrics_s": round(metrics_s, 3),
            "next_10000": dict(second),
            "rss_after_20000_mib": round(server.rss_mib()),
        }
    finally:
        server.stop()


def series_1s(tree: Path, work: Path) -> dict[str, Any]:
    """Memory per series at the finest queryStep: each keeps 2 h of recent points (720 at most)."""
    server = Server(tree, work, "--source", "replay", "--max-concurrent-fits", "1", "--log-level", "warning")
    try:
        rss0 = server.rss_mib()
        codes = _poll_many(server.target, 0, 2_000, step="1s")
        time.sleep(30.0)  # first fetches (each seeds 2 h of history) finish on the fetch workers
        rss1 = server.rss_mib()
        return {
            "series": 2_000,
            "codes": dict(codes),
            "rss_before_mib": round(rss0),
            "rss_after_mib": round(rss1),
            "kib_per_series": round((rss1 - rss0) * 1024 / 2_000, 1),
        }
    finally:
        server.stop()


def amplification(tree: Path, work: Path) -> dict[str, Any]:
    with fake_prometheus(value=5.0) as prom:
        server = Server(tree, work, "--prometheus-url", prom.url)
        try:
            metadata = {"query": "up", "threshold": "10", "queryStep": "1s", "historyTimeWindow": "400d"}
            with grpc.insecure_channel(server.target) as ch:
                stub = pb_grpc.ExternalScalerStub(ch)  # type: ignore[no-untyped-call]
                ref = pb.ScaledObjectRef(namespace="ns", name="amp", scalerMetadata=metadata)
                code = _code(lambda: stub.GetMetrics(pb.GetMetricsRequest(scaledObjectRef=ref), timeout=5))[0]
            # Wait until the range reads settle (the first fit and the recent-history seed).
            last, stable_since = -1, time.monotonic()
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline:
                if prom.range_queries != last:
                    last, stable_since = prom.range_queries, time.monotonic()
                elif time.monotonic() - stable_since > 5:
                    break
                time.sleep(0.5)
            return {
                "first_call": code,
                "range_queries": prom.range_queries,
                "points_requested": prom.points_requested,
            }
        finally:
            server.stop()


def shutdown(tree: Path, work: Path) -> dict[str, Any]:
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(64)
    url = f"http://127.0.0.1:{silent.getsockname()[1]}"
    server = Server(tree, work, "--prometheus-url", url, "--prometheus-timeout-s", "300", "--grace-period-s", "2")
    try:
        with grpc.insecure_channel(server.target) as ch:
            stub = pb_grpc.ExternalScalerStub(ch)  # type: ignore[no-untyped-call]
            ref = pb.ScaledObjectRef(namespace="ns", name="so", scalerMetadata={"query": "up", "threshold": "10"})
            _code(lambda: stub.IsActive(ref, timeout=3))
        started = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        try:
            server.process.wait(60)
            took: float | str = round(time.monotonic() - started, 2)
        except subprocess.TimeoutExpired:
            took = "did not exit within 60 s (killed)"
            server.process.kill()
            server.process.wait()
        return {"grace_period_s": 2, "exit_after_sigterm_s": took}
    finally:
        server.stop()
        silent.close()


def huge_answer(tree: Path, work: Path) -> dict[str, Any]:
    with fake_prometheus(huge_answer_bytes=200_000_000) as prom:
        server = Server(tree, work, "--prometheus-url", prom.url, "--prometheus-timeout-s", "120")
        try:
            before = server.rss_mib()
            with grpc.insecure_channel(server.target) as ch:
                stub = pb_grpc.ExternalScalerStub(ch)  # type: ignore[no-untyped-call]
                ref = pb.ScaledObjectRef(namespace="ns", name="huge", scalerMetadata={"query": "up", "threshold": "10"})
                started = time.perf_counter()
                code, length = _code(lambda: stub.GetMetrics(pb.GetMetricsRequest(scaledObjectRef=ref), timeout=180))
                took = time.perf_counter() - started
            return {
                "status": code,
                "status_text_length": length,
                "seconds": round(took, 1),
                "bytes_sent_by_prometheus": prom.bytes_sent,
                "rss_before_mib": round(before),
                "peak_rss_mib": round(server.rss_mib("VmHWM")),
            }
        finally:
            server.stop()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtests.hostile_bench", description=__doc__.split("\n")[0])
    parser.add_argument("--baseline", type=Path, help="an older source tree measured the same way")
    parser.add_argument("--only", action="append", choices=SCENARIOS, help="run only these scenarios")
    args = parser.parse_args(argv)
    trees = {"this tree": REPO}
    if args.baseline is not None:
        trees = {"baseline": args.baseline.resolve(), **trees}
    functions = {
        "oversized": oversized,
        "series": series,
        "series-1s": series_1s,
        "amplification": amplification,
        "shutdown": shutdown,
        "huge-answer": huge_answer,
    }
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="hostile-bench-") as tmp:
        for scenario in args.only or SCENARIOS:
            for label, tree in trees.items():
                print(f"{scenario} ({label}) ...", flush=True)
                result = functions[scenario](tree, Path(tmp))
                results.setdefault(scenario, {})[label] = result
                print(f"  {json.dumps(result)}", flush=True)
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
