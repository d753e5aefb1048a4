"""Benchmark of the real scaler server under KEDA's call pattern, with warm models, from a separate process.

Steps (each server and the load generator run in their own processes):

1. Seed: start ``python -m scaler_service serve --source replay`` with a persist directory, poll one
   ScaledObject (``nasa-http-1995``, ``queryStep`` 5m) until its first model is fitted and persisted.
2. Clone: write that model under the cache key of every benchmark series (``nasa-http-1995?scale=1.xxx``: one
   distinct series per ScaledObject) into the persist directory, as the model cache persists them. A server
   that registers those series loads them at once: warm, with no fit (fitting 1,000 Prophet models would take
   hours on 2 cores; the request path only ever reads the cache, so the content of each model is irrelevant
   to its cost).
3. Serve: start a fresh server on the same persist directory; one unmeasured poll per ScaledObject registers
   them all; wait until every series has a model (``foresight_series_model_age_seconds`` in /metrics).
4. Load: ``python -m loadtests.keda_load`` in another process (concurrency 64, KEDA's sequence per poll).
5. Report: client figures (RPCs/s, latency percentiles, errors), server-side handler latency from the
   ``foresight_rpc_duration_seconds`` histogram (difference over the measured run), fits during the run, and
   the server's resident memory with 0, 1,000 and (``--memory-series``) 10,000 warm series.

    python -m loadtests.scaler_bench                    # the issue's bar: 1,000 objects, concurrency 64
    python -m loadtests.scaler_bench --memory-series 10000 --duration 30 --pin

``--pin`` pins the server to CPU 0 and the load generator to CPU 1 (the figures in the facts file were
measured that way); without it both float over the machine's cores.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from loadtests.keda_load import LoadConfig
from scaler_service._generated import externalscaler_pb2 as pb
from scaler_service._generated import externalscaler_pb2_grpc as pb_grpc
from scaler_service.trigger import SeriesKey

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
REPLAY_ADDRESS = "replay"
QUERY_STEP = "5m"
QUERY_STEP_S = 300.0
SEED_QUERY = "nasa-http-1995"
BAR_RPCS_PER_S = 3000.0
BAR_CLIENT_P99_MS = 25.0
BAR_SERVER_P99_MS = 1.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def bench_metadata(target: str) -> dict[str, str]:
    return {"scalerAddress": target, "threshold": "50", "queryStep": QUERY_STEP}


def series_cache_key(query: str) -> str:
    """The model-cache key the server uses for a replay query at the bench's step."""
    return SeriesKey(address=REPLAY_ADDRESS, query=query, step_s=QUERY_STEP_S).id


def persist_file(persist_dir: Path, cache_key: str) -> Path:
    return persist_dir / f"{hashlib.sha256(cache_key.encode('utf-8')).hexdigest()[:32]}.json"


class ServerProcess:
    """``python -m scaler_service serve --source replay`` on loopback ports, in its own process."""

    def __init__(
        self,
        work_dir: Path,
        persist_dir: Path,
        *,
        pin_cpu: int | None,
        cache_entries: int,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.grpc_port = free_port()
        self.http_port = free_port()
        self.log_path = work_dir / f"server-{self.grpc_port}.log"
        command = [
            PYTHON, "-m", "scaler_service", "serve",
            "--source", "replay",
            "--bind-address", "127.0.0.1",
            "--grpc-port", str(self.grpc_port),
            "--http-port", str(self.http_port),
            "--persist-dir", str(persist_dir),
            "--kube-annotations", "false",
            "--cache-max-entries", str(cache_entries),
            "--cache-max-bytes", str(64 * 2**30),
            # Every series on /metrics (warm-up counts them there) and no cap in the way of the series count.
            "--metrics-max-subscriptions", str(cache_entries),
            "--max-series", str(cache_entries),
            "--max-subscriptions", str(cache_entries),
            "--log-level", "warning",
            *extra_args,
        ]  # fmt: skip
        if pin_cpu is not None and shutil.which("taskset"):
            command = ["taskset", "-c", str(pin_cpu), *command]
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(command, cwd=REPO, stdout=self._log, stderr=subprocess.STDOUT)
        self._wait_ready()

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def _wait_ready(self, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}; see {self.log_path}")
            try:
                self.metrics_text()
                return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(f"server not ready after {timeout_s} s; see {self.log_path}")

    def metrics_text(self, timeout_s: float = 10.0) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/metrics", timeout=timeout_s) as answer:
            text: str = answer.read().decode("utf-8")
            return text

    def forecast_view(self, namespace: str) -> list[dict[str, Any]]:
        """Every ScaledObject of ``namespace`` in /forecast, page after page."""
        objects: list[dict[str, Any]] = []
        cursor = ""
        while True:
            url = f"http://127.0.0.1:{self.http_port}/forecast?namespace={namespace}&limit=500&cursor={cursor}"
            with urllib.request.urlopen(url, timeout=60) as answer:
                doc: dict[str, Any] = json.loads(answer.read())
            objects += doc.get("scaledObjects", [])
            if not doc.get("next"):
                return objects
            cursor = doc["next"]

    def rss_mib(self) -> float:
        status = Path(f"/proc/{self.process.pid}/status").read_text(encoding="utf-8")
        match = re.search(r"VmRSS:\s+(\d+) kB", status)
        return float(match.group(1)) / 1024.0 if match else math.nan

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()


# --- /metrics parsing --------------------------------------------------------------------------------------

_SAMPLE_RE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)$")
_LABEL_RE = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def parse_metrics(text: str) -> list[tuple[str, dict[str, str], float]]:
    samples = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = _SAMPLE_RE.match(line)
        if match is None:
            continue
        labels = dict(_LABEL_RE.findall(match.group(2) or ""))
        samples.append((match.group(1), labels, float(match.group(3))))
    return samples


def histogram_buckets(
    samples: Sequence[tuple[str, Mapping[str, str], float]], name: str
) -> dict[str, dict[float, float]]:
    """Cumulative bucket counts per method: {method: {le: count}}."""
    out: dict[str, dict[float, float]] = {}
    for metric, labels, value in samples:
        if metric == f"{name}_bucket":
            le = math.inf if labels["le"] == "+Inf" else float(labels["le"])
            out.setdefault(labels.get("method", ""), {})[le] = value
    return out


def quantile_from_buckets(buckets: Mapping[float, float], q: float) -> float:
    """Prometheus's histogram_quantile: linear interpolation inside the bucket holding the quantile."""
    bounds = sorted(buckets)
    total = buckets[bounds[-1]] if bounds else 0.0
    if total <= 0:
        return math.nan
    rank = q * total
    previous_bound, previous_count = 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if math.isinf(bound):
                return previous_bound
            inside = count - previous_count
            fraction = (rank - previous_count) / inside if inside > 0 else 1.0
            return previous_bound + (bound - previous_bound) * fraction
        previous_bound, previous_count = bound, count
    return previous_bound


def bucket_delta(
    after: Mapping[str, Mapping[float, float]], before: Mapping[str, Mapping[float, float]]
) -> dict[str, dict[float, float]]:
    return {
        method: {le: count - before.get(method, {}).get(le, 0.0) for le, count in buckets.items()}
        for method, buckets in after.items()
    }


def counter_total(samples: Sequence[tuple[str, Mapping[str, str], float]], name: str) -> float:
    return sum(v for metric, _, v in samples if metric == name)


def warm_series(samples: Sequence[tuple[str, Mapping[str, str], float]]) -> int:
    return sum(1 for metric, _, _ in samples if metric == "foresight_series_model_age_seconds")


# --- steps -------------------------------------------------------------------------------------------------


def poll_once(stub: Any, namespace: str, name: str, metadata: Mapping[str, str]) -> tuple[str, float]:
    ref = pb.ScaledObjectRef(name=name, namespace=namespace, scalerMetadata=dict(metadata))
    spec = stub.GetMetricSpec(ref, timeout=30)
    metric = spec.metricSpecs[0].metricName
    value = stub.GetMetrics(pb.GetMetricsRequest(scaledObjectRef=ref, metricName=metric), timeout=30)
    stub.IsActive(ref, timeout=30)
    return metric, float(value.metricValues[0].metricValueFloat)


def seed_model(work_dir: Path, persist_dir: Path, timeout_s: float) -> dict[str, Any]:
    """Fit one real model through the server and return its persisted JSON."""
    server = ServerProcess(work_dir, persist_dir, pin_cpu=None, cache_entries=100)
    try:
        path = persist_file(persist_dir, series_cache_key(SEED_QUERY))
        metadata = {**bench_metadata(server.target), "query": SEED_QUERY}
        with grpc.insecure_channel(server.target) as channel:
            stub = pb_grpc.ExternalScalerStub(channel)  # type: ignore[no-untyped-call]
            deadline = time.monotonic() + timeout_s
            while not path.exists():
                if time.monotonic() > deadline:
                    raise RuntimeError(f"no model fitted within {timeout_s} s; see {server.log_path}")
                poll_once(stub, "bench-seed", "seed", metadata)
                time.sleep(1.0)
        doc: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        return doc
    finally:
        server.stop()


def clone_models(seed: Mapping[str, Any], persist_dir: Path, config: LoadConfig, count: int) -> None:
    for i in range(count):
        _, _, metadata = config.scaled_object(i)
        key = series_cache_key(metadata["query"])
        doc = {**seed, "key": key}
        persist_file(persist_dir, key).write_text(json.dumps(doc), encoding="utf-8")


def warm_up(server: ServerProcess, config: LoadConfig, first: int, count: int, timeout_s: float) -> float:
    """One poll per ScaledObject in [first, first + count); wait until all their series have a model."""
    started = time.monotonic()
    with grpc.insecure_channel(server.target) as channel:
        stub = pb_grpc.ExternalScalerStub(channel)  # type: ignore[no-untyped-call]
        for i in range(first, first + count):
            namespace, name, metadata = config.scaled_object(i)
            for attempt in range(20):
                try:
                    poll_once(stub, namespace, name, metadata)
                    break
                except grpc.RpcError as error:
                    # A busy machine: the brand-new series' first fetch outlasted the server's wait. Poll again.
                    if error.code() is not grpc.StatusCode.UNAVAILABLE or attempt == 19:
                        raise
                    time.sleep(0.5)
    deadline = time.monotonic() + timeout_s
    while warm_series(parse_metrics(server.metrics_text())) < first + count:
        if time.monotonic() > deadline:
            warm = warm_series(parse_metrics(server.metrics_text()))
            raise RuntimeError(f"only {warm} of {first + count} series warm after {timeout_s} s")
        time.sleep(0.5)
    return time.monotonic() - started


def run_generator(config: LoadConfig, pin_cpu: int | None) -> dict[str, Any]:
    command = [
        PYTHON, "-m", "loadtests.keda_load", "--json",
        "--target", config.target,
        "--objects", str(config.objects),
        "--concurrency", str(config.concurrency),
        "--duration", str(config.duration_s),
        "--warmup", str(config.warmup_s),
        "--processes", str(config.processes),
        "--namespace", config.namespace,
        "--query-template", config.query_template,
    ]  # fmt: skip
    for key, value in config.metadata.items():
        command += ["--metadata", f"{key}={value}"]
    if pin_cpu is not None and shutil.which("taskset"):
        command = ["taskset", "-c", str(pin_cpu), *command]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=False)
    if done.returncode not in (0, 1):
        raise RuntimeError(f"load generator failed ({done.returncode}): {done.stderr[-2000:]}")
    report: dict[str, Any] = json.loads(done.stdout)
    return report


def refit_spread(objects: Sequence[Mapping[str, Any]], now: float) -> dict[str, float]:
    """How the next refits of the warm series are spread over time (from /forecast's next_refit_at)."""
    due = sorted(
        {
            (str(o.get("series")), float(o["fitting"]["next_refit_at"]))
            for o in objects
            if isinstance(o.get("fitting"), Mapping) and o["fitting"].get("next_refit_at") is not None
        }
    )
    times = sorted(t for _, t in due)
    if not times:
        return {"series": 0.0}
    busiest = 0
    j = 0
    for i, t in enumerate(times):
        while times[j] < t - 60.0:
            j += 1
        busiest = max(busiest, i - j + 1)
    return {
        "series": float(len(times)),
        "first_in_s": times[0] - now,
        "last_in_s": times[-1] - now,
        "spread_s": times[-1] - times[0],
        "max_refits_per_minute": float(busiest),
    }


@dataclass(frozen=True)
class BenchResult:
    client: dict[str, Any]
    server_p50_ms: dict[str, float]
    server_p99_ms: dict[str, float]
    server_p99_all_ms: float
    fits_during_run: float
    refits: dict[str, float]
    seed_fit_s: float
    rss_mib: dict[str, float]
    warm_up_s: dict[str, float]


def run_bench(args: argparse.Namespace) -> BenchResult:
    work_dir = Path(tempfile.mkdtemp(prefix="scaler-bench-"))
    persist_dir = work_dir / "models"
    total_series = max(args.objects, args.memory_series)
    try:
        print(f"seeding one real model (replay {SEED_QUERY}, queryStep {QUERY_STEP}) ...", flush=True)
        seed = seed_model(work_dir, persist_dir, args.seed_timeout)
        print(f"  fitted: {seed['model']['name']}, confidence {seed['confidence']:.3f}", flush=True)
        pin_server, pin_client = (0, 1) if args.pin else (None, None)
        server = ServerProcess(
            work_dir, persist_dir, pin_cpu=pin_server, cache_entries=total_series + 100, extra_args=args.server_arg
        )
        try:
            config = LoadConfig(
                target=server.target,
                objects=args.objects,
                concurrency=args.concurrency,
                duration_s=args.duration,
                warmup_s=args.warmup,
                processes=args.processes,
                namespace="bench",
                query_template="nasa-http-1995?scale={scale}",
                metadata={"threshold": "50", "queryStep": QUERY_STEP},
            )
            clone_models(seed, persist_dir, config, total_series)
            rss = {"0 series": server.rss_mib()}
            warm_s = {f"{args.objects} series": warm_up(server, config, 0, args.objects, args.warm_timeout)}
            rss[f"{args.objects} warm series"] = server.rss_mib()
            print(f"  {args.objects} series warm in {warm_s[f'{args.objects} series']:.1f} s", flush=True)

            before = parse_metrics(server.metrics_text())
            print(
                f"load: {args.objects} ScaledObjects, concurrency {args.concurrency}, {args.duration} s ...",
                flush=True,
            )
            client = run_generator(config, pin_client)
            after = parse_metrics(server.metrics_text())
            delta = bucket_delta(
                histogram_buckets(after, "foresight_rpc_duration_seconds"),
                histogram_buckets(before, "foresight_rpc_duration_seconds"),
            )
            all_methods: dict[float, float] = {}
            for buckets in delta.values():
                for le, count in buckets.items():
                    all_methods[le] = all_methods.get(le, 0.0) + count
            fits = counter_total(after, "foresight_fits_total") - counter_total(before, "foresight_fits_total")
            refits = refit_spread(server.forecast_view(config.namespace), time.time())

            if args.memory_series > args.objects:
                extra = args.memory_series - args.objects
                warm_s[f"{args.memory_series} series"] = warm_up(server, config, args.objects, extra, args.warm_timeout)
                rss[f"{args.memory_series} warm series"] = server.rss_mib()
            return BenchResult(
                client=client,
                server_p50_ms={m: 1000 * quantile_from_buckets(b, 0.50) for m, b in delta.items()},
                server_p99_ms={m: 1000 * quantile_from_buckets(b, 0.99) for m, b in delta.items()},
                server_p99_all_ms=1000 * quantile_from_buckets(all_methods, 0.99),
                fits_during_run=fits,
                refits=refits,
                seed_fit_s=float(seed.get("fit_duration_s", math.nan)),
                rss_mib=rss,
                warm_up_s=warm_s,
            )
        finally:
            server.stop()
    finally:
        if not args.keep:
            shutil.rmtree(work_dir, ignore_errors=True)
        else:
            print(f"kept {work_dir}")


def report_text(result: BenchResult) -> str:
    c = result.client
    lat = c["latency"]
    lines = [
        "",
        "client (separate process, KEDA's sequence GetMetricSpec -> GetMetrics -> IsActive):",
        f"  {c['rpcs']} RPCs in {c['duration_s']:.1f} s = {c['rpcs_per_s']:,.0f} RPCs/s "
        f"(concurrency {c['concurrency']}, {c['objects']} ScaledObjects, {c['processes']} process(es))",
        f"  latency p50 {lat['p50_ms']:.2f} ms, p90 {lat['p90_ms']:.2f} ms, p99 {lat['p99_ms']:.2f} ms, "
        f"max {lat['max_ms']:.2f} ms",
        f"  errors: {c['errors'] or 'none'}",
        "server-side handler time (foresight_rpc_duration_seconds, interpolated in buckets):",
    ]
    for method, p99 in sorted(result.server_p99_ms.items()):
        lines.append(f"  {method:<14} p50 {result.server_p50_ms[method]:.3f} ms, p99 {p99:.3f} ms")
    lines.append(f"  all methods    p99 {result.server_p99_all_ms:.3f} ms")
    lines.append(f"fits during the measured run: {result.fits_during_run:.0f}")
    r = result.refits
    if r.get("series"):
        lines.append(
            f"next refits of {r['series']:.0f} series: from {r['first_in_s'] / 60:.0f} "
            f"to {r['last_in_s'] / 60:.0f} min from now (spread {r['spread_s'] / 60:.1f} min, "
            f"at most {r['max_refits_per_minute']:.0f} in any minute; "
            f"one fit took {result.seed_fit_s:.1f} s, at most max_concurrent_fits run at once)"
        )
    lines.append("server resident memory: " + ", ".join(f"{k}: {v:.0f} MiB" for k, v in result.rss_mib.items()))
    lines.append("warm-up (first poll of each object + model load): "
                 + ", ".join(f"{k}: {v:.1f} s" for k, v in result.warm_up_s.items()))  # fmt: skip
    checks = [
        (f"RPCs/s >= {BAR_RPCS_PER_S:.0f}", c["rpcs_per_s"] >= BAR_RPCS_PER_S),
        (f"client p99 <= {BAR_CLIENT_P99_MS:.0f} ms", lat["p99_ms"] <= BAR_CLIENT_P99_MS),
        (f"server handler p99 <= {BAR_SERVER_P99_MS:.0f} ms", result.server_p99_all_ms <= BAR_SERVER_P99_MS),
        ("no errors", not c["errors"]),
    ]
    lines.append("bar: " + "; ".join(f"{name}: {'PASS' if ok else 'FAIL'}" for name, ok in checks))
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtests.scaler_bench", description=__doc__.split("\n")[0])
    parser.add_argument("--objects", type=int, default=1000, help="distinct warm ScaledObjects [1000]")
    parser.add_argument("--concurrency", type=int, default=64, help="concurrent callers [64]")
    parser.add_argument("--duration", type=float, default=20.0, help="measured seconds [20]")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured load seconds first [2]")
    parser.add_argument("--processes", type=int, default=1, help="load generator processes [1]")
    parser.add_argument(
        "--memory-series", type=int, default=0, help="also measure memory with this many warm series [off]"
    )
    parser.add_argument("--pin", action="store_true", help="pin server to CPU 0, generator to CPU 1")
    parser.add_argument("--seed-timeout", type=float, default=600.0, help="seconds to wait for the seed fit")
    parser.add_argument("--warm-timeout", type=float, default=600.0, help="seconds to wait for warm series")
    parser.add_argument(
        "--server-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="extra argument of the served command (repeatable), e.g. --server-arg=--grpc-server=sync",
    )
    parser.add_argument("--json", action="store_true", help="also print the result as JSON")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs, models)")
    args = parser.parse_args(argv)
    result = run_bench(args)
    print(report_text(result))
    if args.json:
        print(json.dumps(result.__dict__, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
