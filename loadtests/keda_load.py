"""A load generator that calls an ExternalScaler server the way KEDA does, from its own process(es).

Each poll of a ScaledObject is KEDA's sequence: ``GetMetricSpec``, ``GetMetrics`` with the metric name the
spec returned, then ``IsActive``. ``--objects`` distinct ScaledObjects (``bench/so-00000`` ...) are polled in
turn by ``--concurrency`` concurrent callers sharing one channel per process (KEDA keeps one shared channel
per scaler address), for ``--duration`` seconds or ``--max-polls`` polls, whichever comes first. With
``--processes P`` the callers are split over P processes (one Python client process saturates about a core).

Reported: RPCs/s (completed RPCs / measured time), latency p50/p90/p99/max of every RPC and per method, errors
by gRPC status. ``--json`` prints the same as one JSON object. Works against any server speaking KEDA's
``externalscaler.ExternalScaler`` (the proto is wire-compatible with KEDA).

    python -m loadtests.keda_load --target 127.0.0.1:9090 --objects 1000 --concurrency 64 --duration 20 \\
        --metadata threshold=50 --query-template 'nasa-http-1995?scale={scale}'

``--query-template`` may use ``{i}`` (object index) and ``{scale}`` (1 + i/1000, a distinct series per object
with the replay source).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import multiprocessing
import sys
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import numpy as np

from scaler_service._generated import externalscaler_pb2 as pb
from scaler_service._generated import externalscaler_pb2_grpc as pb_grpc

METHODS = ("GetMetricSpec", "GetMetrics", "IsActive")
KEDA_DEADLINE_S = 3.0


@dataclass(frozen=True)
class LoadConfig:
    target: str = "127.0.0.1:9090"
    objects: int = 1000
    concurrency: int = 64
    duration_s: float = 20.0
    warmup_s: float = 2.0
    max_polls: int = 0
    """0: no limit besides the duration."""
    processes: int = 1
    namespace: str = "bench"
    query_template: str = "nasa-http-1995?scale={scale}"
    metadata: Mapping[str, str] = field(default_factory=lambda: {"threshold": "50", "queryStep": "5m"})
    deadline_s: float = KEDA_DEADLINE_S

    def __post_init__(self) -> None:
        if self.objects < 1 or self.concurrency < 1 or self.processes < 1:
            raise ValueError("objects, concurrency and processes must be >= 1")
        if self.processes > self.concurrency:
            raise ValueError(f"processes={self.processes} > concurrency={self.concurrency}")
        if not self.duration_s > 0:
            raise ValueError("duration must be > 0")
        if self.max_polls < 0:
            raise ValueError("max_polls must be >= 0")

    def scaled_object(self, i: int) -> tuple[str, str, dict[str, str]]:
        """(namespace, name, scalerMetadata) of ScaledObject ``i``."""
        metadata = {"scalerAddress": self.target, **self.metadata}
        metadata["query"] = self.query_template.format(i=i, scale=f"{1 + i / 1000:.3f}")
        return self.namespace, f"so-{i:05d}", metadata


@dataclass
class WorkerResult:
    """Raw measurements of one process (latencies in seconds per method, measured window only)."""

    elapsed_s: float = 0.0
    polls: int = 0
    latencies: dict[str, list[float]] = field(default_factory=lambda: {m: [] for m in METHODS})
    errors: Counter[str] = field(default_factory=Counter)
    error_examples: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class LatencySummary:
    count: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float


@dataclass(frozen=True)
class LoadReport:
    target: str
    objects: int
    concurrency: int
    processes: int
    duration_s: float
    polls: int
    rpcs: int
    rpcs_per_s: float
    polls_per_s: float
    latency: LatencySummary
    per_method: dict[str, LatencySummary]
    errors: dict[str, int]
    error_examples: dict[str, str]

    def text(self) -> str:
        lines = [
            f"target {self.target}: {self.objects} ScaledObjects, concurrency {self.concurrency} "
            f"over {self.processes} process(es), {self.duration_s:.1f} s measured",
            f"  {self.rpcs} RPCs ({self.polls} polls): {self.rpcs_per_s:,.0f} RPCs/s, {self.polls_per_s:,.0f} polls/s",
            f"  latency all RPCs: {_latency_text(self.latency)}",
        ]
        lines += [f"    {m:<14} {_latency_text(s)}" for m, s in self.per_method.items()]
        if self.errors:
            lines.append("  errors: " + ", ".join(f"{k}={v}" for k, v in sorted(self.errors.items())))
            lines += [f"    {k}: {v}" for k, v in self.error_examples.items()]
        else:
            lines.append("  errors: none")
        return "\n".join(lines)


def _latency_text(s: LatencySummary) -> str:
    return f"p50 {s.p50_ms:.2f} ms, p90 {s.p90_ms:.2f} ms, p99 {s.p99_ms:.2f} ms, max {s.max_ms:.2f} ms (n={s.count})"


def summarise(latencies_s: Sequence[float]) -> LatencySummary:
    if not latencies_s:
        return LatencySummary(0, math.nan, math.nan, math.nan, math.nan)
    ms = np.asarray(latencies_s, dtype=np.float64) * 1000.0
    p50, p90, p99 = np.percentile(ms, [50, 90, 99])
    return LatencySummary(len(ms), float(p50), float(p90), float(p99), float(ms.max()))


# --- one process ------------------------------------------------------------------------------------------


async def _run_process(config: LoadConfig, concurrency: int, first_object: int) -> WorkerResult:
    result = WorkerResult()
    refs = []
    for i in range(config.objects):
        namespace, name, metadata = config.scaled_object(i)
        refs.append(pb.ScaledObjectRef(name=name, namespace=namespace, scalerMetadata=metadata))
    async with grpc.aio.insecure_channel(config.target) as channel:
        await asyncio.wait_for(channel.channel_ready(), timeout=10.0)
        stub = pb_grpc.ExternalScalerStub(channel)  # type: ignore[no-untyped-call]
        start = time.perf_counter()
        measure_from = start + config.warmup_s
        stop_at = measure_from + config.duration_s
        next_object = first_object
        polls_left = [config.max_polls if config.max_polls else -1]

        async def timed(method: str, call: Any, request: Any, timeout: float, measured: bool) -> Any:
            t0 = time.perf_counter()
            try:
                response = await call(request, timeout=timeout)
            except grpc.aio.AioRpcError as error:
                if measured:
                    status = error.code().name
                    result.errors[f"{method}:{status}"] += 1
                    result.error_examples.setdefault(f"{method}:{status}", str(error.details())[:200])
                return None
            if measured:
                result.latencies[method].append(time.perf_counter() - t0)
            return response

        async def caller() -> None:
            nonlocal next_object
            while True:
                now = time.perf_counter()
                if now >= stop_at or polls_left[0] == 0:
                    return
                if polls_left[0] > 0:
                    polls_left[0] -= 1
                measured = now >= measure_from
                ref = refs[next_object % len(refs)]
                next_object += 1
                end = now + config.deadline_s
                spec = await timed("GetMetricSpec", stub.GetMetricSpec, ref, config.deadline_s, measured)
                if spec is None or not spec.metricSpecs:
                    if spec is not None and measured:
                        result.errors["GetMetricSpec:EMPTY"] += 1
                    continue
                request = pb.GetMetricsRequest(scaledObjectRef=ref, metricName=spec.metricSpecs[0].metricName)
                remaining = max(0.001, end - time.perf_counter())
                await timed("GetMetrics", stub.GetMetrics, request, remaining, measured)
                remaining = max(0.001, end - time.perf_counter())
                await timed("IsActive", stub.IsActive, ref, remaining, measured)
                if measured:
                    result.polls += 1

        await asyncio.gather(*(caller() for _ in range(concurrency)))
        result.elapsed_s = max(1e-9, min(time.perf_counter(), stop_at) - measure_from)
    return result


def _process_entry(config: LoadConfig, concurrency: int, first_object: int, queue: Any) -> None:
    try:
        outcome = asyncio.run(_run_process(config, concurrency, first_object))
        queue.put(("ok", asdict(outcome)))
    except BaseException as error:
        queue.put(("error", f"{type(error).__name__}: {error}"))


def run_load(config: LoadConfig) -> LoadReport:
    """Run the load (in ``config.processes`` child processes when > 1) and summarise it."""
    shares = [config.concurrency // config.processes] * config.processes
    for k in range(config.concurrency % config.processes):
        shares[k] += 1
    results: list[WorkerResult] = []
    if config.processes == 1:
        results.append(asyncio.run(_run_process(config, config.concurrency, 0)))
    else:
        context = multiprocessing.get_context("spawn")
        queue = context.Queue()
        children = [
            context.Process(
                target=_process_entry,
                args=(config, share, k * config.objects // config.processes, queue),
                daemon=True,
            )
            for k, share in enumerate(shares)
        ]
        for child in children:
            child.start()
        try:
            for _ in children:
                kind, payload = queue.get(timeout=config.warmup_s + config.duration_s + 60.0)
                if kind != "ok":
                    raise RuntimeError(f"load process failed: {payload}")
                result = WorkerResult(
                    elapsed_s=payload["elapsed_s"],
                    polls=payload["polls"],
                    latencies=payload["latencies"],
                    errors=Counter(payload["errors"]),
                    error_examples=payload["error_examples"],
                )
                results.append(result)
        finally:
            for child in children:
                child.join(timeout=10.0)
                if child.is_alive():
                    child.terminate()
    return merge(config, results)


def merge(config: LoadConfig, results: Sequence[WorkerResult]) -> LoadReport:
    elapsed = max(r.elapsed_s for r in results)
    per_method = {m: [x for r in results for x in r.latencies[m]] for m in METHODS}
    everything = [x for values in per_method.values() for x in values]
    errors: Counter[str] = Counter()
    examples: dict[str, str] = {}
    for r in results:
        errors.update(r.errors)
        for k, v in r.error_examples.items():
            examples.setdefault(k, v)
    rpcs = len(everything)
    polls = sum(r.polls for r in results)
    return LoadReport(
        target=config.target,
        objects=config.objects,
        concurrency=config.concurrency,
        processes=config.processes,
        duration_s=elapsed,
        polls=polls,
        rpcs=rpcs,
        rpcs_per_s=rpcs / elapsed,
        polls_per_s=polls / elapsed,
        latency=summarise(everything),
        per_method={m: summarise(v) for m, v in per_method.items()},
        errors=dict(errors),
        error_examples=examples,
    )


# --- ghz configuration files -------------------------------------------------------------------------------

GHZ_SHARES = {"GetMetricSpec": 22, "GetMetrics": 21, "IsActive": 21}
"""ghz runs one method per run: three runs side by side, 64 callers in all, approximate KEDA's mix."""


def ghz_configs(config: LoadConfig, metric_names: Sequence[str], proto: str) -> dict[str, dict[str, Any]]:
    """One ghz config per method; ``data`` lists every ScaledObject (ghz sends them round-robin)."""
    refs = []
    for i in range(config.objects):
        namespace, name, metadata = config.scaled_object(i)
        refs.append({"name": name, "namespace": namespace, "scalerMetadata": metadata})
    common = {
        "proto": proto,
        "host": config.target,
        "insecure": True,
        "connections": 1,
        "duration": f"{config.duration_s:g}s",
        "timeout": f"{config.deadline_s:g}s",
    }
    total = sum(GHZ_SHARES.values())
    out: dict[str, dict[str, Any]] = {}
    for method, share in GHZ_SHARES.items():
        data: list[dict[str, Any]] = refs
        if method == "GetMetrics":
            data = [{"scaledObjectRef": ref, "metricName": m} for ref, m in zip(refs, metric_names, strict=True)]
        out[method] = {
            **common,
            "name": f"KEDA {method}: {config.objects} ScaledObjects",
            "call": f"externalscaler.ExternalScaler.{method}",
            "concurrency": max(1, round(config.concurrency * share / total)),
            "data": data,
        }
    return out


def fetch_metric_names(config: LoadConfig) -> list[str]:
    """Ask the server for each ScaledObject's metric name (what KEDA does before GetMetrics)."""
    names = []
    with grpc.insecure_channel(config.target) as channel:
        stub = pb_grpc.ExternalScalerStub(channel)  # type: ignore[no-untyped-call]
        for i in range(config.objects):
            namespace, name, metadata = config.scaled_object(i)
            ref = pb.ScaledObjectRef(name=name, namespace=namespace, scalerMetadata=metadata)
            names.append(stub.GetMetricSpec(ref, timeout=config.deadline_s).metricSpecs[0].metricName)
    return names


def write_ghz_configs(config: LoadConfig, directory: str, proto: str, host: str | None = None) -> list[str]:
    """Write the configs; ``host`` (default: the target asked) is where the ghz runs will call."""
    target_dir = Path(directory)
    target_dir.mkdir(parents=True, exist_ok=True)
    names = fetch_metric_names(config)
    shown = config if host is None else replace(config, target=host)
    written = []
    for method, doc in ghz_configs(shown, names, proto).items():
        path = target_dir / f"{method.lower()}.json"
        path.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
        written.append(str(path))
    return written


# --- command line -----------------------------------------------------------------------------------------


def _metadata(pairs: Sequence[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"--metadata must be key=value, got {pair!r}")
        out[key] = value
    return out


def build_parser() -> argparse.ArgumentParser:
    d = LoadConfig()
    parser = argparse.ArgumentParser(
        prog="python -m loadtests.keda_load",
        description="Replay KEDA's calls (GetMetricSpec, GetMetrics, IsActive) against an ExternalScaler.",
    )
    parser.add_argument("--target", default=d.target, help=f"host:port of the scaler [{d.target}]")
    parser.add_argument("--objects", type=int, default=d.objects, help=f"distinct ScaledObjects [{d.objects}]")
    parser.add_argument("--concurrency", type=int, default=d.concurrency, help=f"concurrent callers [{d.concurrency}]")
    parser.add_argument("--duration", type=float, default=d.duration_s, help=f"measured seconds [{d.duration_s}]")
    parser.add_argument("--warmup", type=float, default=d.warmup_s, help=f"unmeasured seconds first [{d.warmup_s}]")
    parser.add_argument("--max-polls", type=int, default=0, help="stop after this many polls per process [no limit]")
    parser.add_argument("--processes", type=int, default=d.processes, help=f"client processes [{d.processes}]")
    parser.add_argument("--namespace", default=d.namespace, help=f"ScaledObject namespace [{d.namespace}]")
    parser.add_argument(
        "--query-template",
        default=d.query_template,
        help="trigger query; {i} = object index, {scale} = 1 + i/1000 [%(default)s]",
    )
    parser.add_argument(
        "--metadata",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="trigger metadata (repeatable) [threshold=50 queryStep=5m]",
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument(
        "--write-ghz",
        metavar="DIR",
        help="instead of running the load, write ghz configs for the same load into DIR "
        "(asks the server for each object's metric name)",
    )
    parser.add_argument(
        "--ghz-proto",
        default="proto/externalscaler.proto",
        help="proto path written into ghz configs [%(default)s]",
    )
    parser.add_argument("--ghz-host", help="host:port written into ghz configs [the --target]")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    metadata = _metadata(args.metadata) if args.metadata else dict(LoadConfig().metadata)
    config = LoadConfig(
        target=args.target,
        objects=args.objects,
        concurrency=args.concurrency,
        duration_s=args.duration,
        warmup_s=args.warmup,
        max_polls=args.max_polls,
        processes=args.processes,
        namespace=args.namespace,
        query_template=args.query_template,
        metadata=metadata,
    )
    if args.write_ghz:
        for path in write_ghz_configs(config, args.write_ghz, args.ghz_proto, args.ghz_host):
            print(path)
        return 0
    report = run_load(config)
    print(json.dumps(asdict(report), indent=2) if args.json else report.text())
    return 0 if not report.errors else 1


if __name__ == "__main__":
    sys.exit(main())
