"""Benchmark: thousands of open StreamIsActive streams on one replica while KEDA's unary calls run.

Steps (the server, the stream holder and the unary load generator each run in their own process):

1. Seed and clone warm models as ``scaler_bench`` does (one real fit, copied under every series' key).
2. Unary throughput, sync against aio: for ``--rounds`` rounds, a fresh ``--grpc-server sync`` server and a
   fresh ``--grpc-server aio`` server each get ``--objects`` warm ScaledObjects and the ``keda_load`` sequence
   (GetMetricSpec -> GetMetrics -> IsActive, concurrency 64) for ``--duration`` seconds. Rounds alternate the
   two so the others' load on a shared machine falls on both alike.
3. Streams: a fresh aio server; ``--streams`` series are made warm; then ``--stream-rounds`` times: the unary
   load with no stream open (the baseline), then a separate process opens ``--streams`` StreamIsActive streams
   (one per ScaledObject, over ``--channels`` connections) and holds them while the same unary load runs
   again, then closes them. Reported per run: unary RPCs/s and latency percentiles, the server's handler p99
   (its histogram), its CPU, errors and RESOURCE_EXHAUSTED answered; streams opened and failed, the server's
   resident memory without and with the streams, and its CPU while the streams are open and idle.

    python -m loadtests.streams_bench                           # 10,000 streams, 1,000 polled objects
    python -m loadtests.streams_bench --streams 2000 --rounds 1 --duration 10
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import grpc.aio

from loadtests.keda_load import LoadConfig
from loadtests.scaler_bench import (
    ServerProcess,
    bucket_delta,
    clone_models,
    counter_total,
    histogram_buckets,
    parse_metrics,
    quantile_from_buckets,
    run_generator,
    seed_model,
    warm_up,
)
from scaler_service._generated import externalscaler_pb2 as pb
from scaler_service._generated import externalscaler_pb2_grpc as pb_grpc

BAR_P99_MS = 25.0
STREAM_NAMESPACE = "bench-streams"


# --- the stream holder (its own process) -------------------------------------------------------------------


@dataclass
class HolderReport:
    requested: int = 0
    opened: int = 0
    open_s: float = 0.0
    messages: int = 0
    ended_ok: int = 0
    reopened: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    error_examples: dict[str, str] = field(default_factory=dict)


async def _hold(config: LoadConfig, count: int, channels: int, ready: Any, stop: Any) -> HolderReport:
    report = HolderReport(requested=count)
    errors: Counter[str] = Counter()
    opened: set[int] = set()
    # A local subchannel pool per channel: one TCP connection each (else channels share one).
    chans = [
        grpc.aio.insecure_channel(config.target, options=[("grpc.use_local_subchannel_pool", 1)])
        for _ in range(channels)
    ]
    stubs = [pb_grpc.ExternalScalerStub(c) for c in chans]  # type: ignore[no-untyped-call]
    opening = asyncio.Semaphore(500)
    started = time.perf_counter()
    all_open = asyncio.Event()
    stopping = False

    async def one(i: int) -> None:
        _, name, metadata = config.scaled_object(i)
        ref = pb.ScaledObjectRef(name=name, namespace=STREAM_NAMESPACE, scalerMetadata=metadata)
        while not stopping:
            first = True
            await opening.acquire()
            try:
                call = stubs[i % channels].StreamIsActive(ref)
                async for _ in call:
                    report.messages += 1
                    if first:
                        first = False
                        opening.release()
                        if i not in opened:
                            opened.add(i)
                            if len(opened) == count:
                                report.open_s = time.perf_counter() - started
                                all_open.set()
                report.ended_ok += 1  # ended by the server with OK (connection age, shutdown): reopen like KEDA
            except grpc.aio.AioRpcError as error:
                if stopping:
                    return
                key = error.code().name
                errors[key] += 1
                report.error_examples.setdefault(key, str(error.details())[:200])
            finally:
                if first:
                    opening.release()
            if stopping:
                return
            report.reopened += 1
            await asyncio.sleep(1.0)

    tasks = [asyncio.create_task(one(i)) for i in range(count)]
    try:
        await asyncio.wait_for(all_open.wait(), timeout=600.0)
    except TimeoutError:
        report.open_s = time.perf_counter() - started
    report.opened = len(opened)
    ready.put(("open", report.opened, report.open_s, dict(errors)))
    await asyncio.get_running_loop().run_in_executor(None, stop.wait)
    stopping = True
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for chan in chans:
        await chan.close()
    report.errors = dict(errors)
    return report


def _holder_entry(config: LoadConfig, count: int, channels: int, ready: Any, stop: Any) -> None:
    try:
        report = asyncio.run(_hold(config, count, channels, ready, stop))
        ready.put(("done", report.__dict__))
    except BaseException as error:
        ready.put(("error", f"{type(error).__name__}: {error}"))


class StreamHolder:
    """``count`` open streams from a separate process, until ``close``."""

    def __init__(self, config: LoadConfig, count: int, channels: int) -> None:
        context = multiprocessing.get_context("spawn")
        self._ready = context.Queue()
        self._stop = context.Event()
        self._process = context.Process(
            target=_holder_entry, args=(config, count, channels, self._ready, self._stop), daemon=True
        )
        self._process.start()

    def wait_open(self, timeout_s: float) -> tuple[int, float, dict[str, int]]:
        kind, *payload = self._ready.get(timeout=timeout_s)
        if kind != "open":
            raise RuntimeError(f"stream holder failed: {payload}")
        opened, open_s, errors = payload
        return int(opened), float(open_s), dict(errors)

    def close(self) -> HolderReport:
        self._stop.set()
        try:
            kind, payload = self._ready.get(timeout=120.0)
        finally:
            self._process.join(timeout=30.0)
            if self._process.is_alive():
                self._process.terminate()
        if kind != "done":
            raise RuntimeError(f"stream holder failed: {payload}")
        return HolderReport(**payload)


# --- measurements ------------------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8").rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text(encoding="utf-8").split()[:3])


def unary_figures(client: dict[str, Any]) -> dict[str, Any]:
    lat = client["latency"]
    return {
        "rpcs_per_s": client["rpcs_per_s"],
        "p50_ms": lat["p50_ms"],
        "p99_ms": lat["p99_ms"],
        "max_ms": lat["max_ms"],
        "errors": client["errors"],
    }


def load_config(target: str, args: argparse.Namespace) -> LoadConfig:
    return LoadConfig(
        target=target,
        objects=args.objects,
        concurrency=args.concurrency,
        duration_s=args.duration,
        warmup_s=args.warmup,
        processes=1,
        namespace="bench",
        query_template="nasa-http-1995?scale={scale}",
        metadata={"threshold": "50", "queryStep": "5m"},
    )


def unary_round(work: Path, models: Path, kind: str, args: argparse.Namespace) -> dict[str, Any]:
    server = ServerProcess(
        work, models, pin_cpu=None, cache_entries=args.objects + 100, extra_args=["--grpc-server", kind]
    )
    try:
        config = load_config(server.target, args)
        warm_up(server, config, 0, args.objects, args.warm_timeout)
        figures = unary_figures(run_generator(config, None))
        figures["load_average"] = load_average()
        return figures
    finally:
        server.stop()


def measured_run(server: ServerProcess, config: LoadConfig) -> dict[str, Any]:
    """One unary load run: client figures, the server's handler p99 (histogram difference) and its CPU."""
    # /metrics lists every series and subscription: slow at 10,000 of each on a busy machine.
    before = parse_metrics(server.metrics_text(timeout_s=300.0))
    cpu0, t0 = cpu_seconds(server.process.pid), time.monotonic()
    figures = unary_figures(run_generator(config, None))
    figures["server_cpu"] = (cpu_seconds(server.process.pid) - cpu0) / (time.monotonic() - t0)
    figures["load_average"] = load_average()
    after = parse_metrics(server.metrics_text(timeout_s=300.0))
    delta = bucket_delta(
        histogram_buckets(after, "foresight_rpc_duration_seconds"),
        histogram_buckets(before, "foresight_rpc_duration_seconds"),
    )
    merged: dict[float, float] = {}
    for buckets in delta.values():
        for le, count in buckets.items():
            merged[le] = merged.get(le, 0.0) + count
    figures["server_handler_p99_ms"] = 1000 * quantile_from_buckets(merged, 0.99)
    figures["server_resource_exhausted"] = sum(
        v - next((b for m, lb, b in before if m == metric and lb == labels), 0.0)
        for metric, labels, v in after
        if metric == "foresight_rpc_errors_total" and labels.get("code") == "RESOURCE_EXHAUSTED"
    )
    figures["open_streams"] = counter_total(after, "foresight_open_streams")
    print(f"  {json.dumps(figures)}", flush=True)
    return figures


def streams_phase(work: Path, models: Path, args: argparse.Namespace) -> dict[str, Any]:
    """On one aio server, alternately: the unary load with no stream open, then with every stream open."""
    total = max(args.objects, args.streams)
    # The polled and the streaming ScaledObjects are distinct subscriptions: room for both (later flags win).
    extra = ["--grpc-server", "aio", "--max-subscriptions", str(2 * total + 1000)]
    server = ServerProcess(work, models, pin_cpu=None, cache_entries=total + 100, extra_args=extra)
    out: dict[str, Any] = {"rounds": []}
    try:
        config = load_config(server.target, args)
        warm_up(server, config, 0, args.objects, args.warm_timeout)
        if total > args.objects:
            print(f"  warming {total - args.objects} more series for the streams ...", flush=True)
            warm_up(server, config, args.objects, total - args.objects, args.warm_timeout)
        out["rss_mib_no_streams"] = server.rss_mib()
        for i in range(args.stream_rounds):
            round_out: dict[str, Any] = {}
            print(f"  round {i + 1}: unary load, no stream open ...", flush=True)
            round_out["without_streams"] = measured_run(server, config)
            print(f"  round {i + 1}: opening {args.streams} streams over {args.channels} connections ...", flush=True)
            holder = StreamHolder(config, args.streams, args.channels)
            try:
                opened, open_s, open_errors = holder.wait_open(900.0)
                round_out.update(streams_opened=opened, streams_open_s=open_s, errors_while_opening=open_errors)
                print(f"  {opened} open in {open_s:.1f} s; errors while opening: {open_errors}", flush=True)
                time.sleep(2.0)
                out["rss_mib_streams"] = server.rss_mib()
                cpu0, t0 = cpu_seconds(server.process.pid), time.monotonic()
                time.sleep(args.idle)
                round_out["server_cpu_idle_streams"] = (cpu_seconds(server.process.pid) - cpu0) / (
                    time.monotonic() - t0
                )
                print(f"  round {i + 1}: unary load with {opened} streams open ...", flush=True)
                round_out["with_streams"] = measured_run(server, config)
            finally:
                round_out["holder"] = holder.close().__dict__
            out["rounds"].append(round_out)
            time.sleep(3.0)  # the closed streams' handlers finish
    finally:
        server.stop()
    return out


def report_text(result: dict[str, Any], args: argparse.Namespace) -> str:
    def line(name: str, f: dict[str, Any]) -> str:
        return (
            f"  {name:<24} {f['rpcs_per_s']:>7,.0f} RPCs/s  p50 {f['p50_ms']:6.2f} ms  p99 {f['p99_ms']:6.2f} ms  "
            f"max {f['max_ms']:7.2f} ms  errors {f['errors'] or 'none'}  (load avg {f['load_average']})"
        )

    lines = ["", f"unary, KEDA's sequence, {args.objects} warm ScaledObjects, concurrency {args.concurrency}:"]
    for i, r in enumerate(result["rounds"]):
        for kind in ("sync", "aio"):
            lines.append(line(f"round {i + 1} {kind}", r[kind]))
    for kind in ("sync", "aio"):
        rates = [r[kind]["rpcs_per_s"] for r in result["rounds"]]
        p99s = [r[kind]["p99_ms"] for r in result["rounds"]]
        if rates:
            lines.append(
                f"  {kind} mean: {sum(rates) / len(rates):,.0f} RPCs/s, p99 mean {sum(p99s) / len(p99s):.2f} ms"
            )
    s = result.get("streams")
    if s:
        lines.append(f"streams ({args.streams} StreamIsActive over {args.channels} connections, one aio server):")
        for i, r in enumerate(s["rounds"]):
            h = r["holder"]
            lines += [
                f"  round {i + 1}: opened {r['streams_opened']} of {args.streams} in {r['streams_open_s']:.1f} s; "
                f"stream errors: {h['errors'] or 'none'}; ended by the server {h['ended_ok']}; server CPU with "
                f"the streams open and idle {100 * r['server_cpu_idle_streams']:.1f} % of a core",
                line("no stream open", r["without_streams"]),
                line("streams open", r["with_streams"]),
            ]
            for name in ("without_streams", "with_streams"):
                f = r[name]
                lines.append(
                    f"    {name.replace('_', ' ')}: server handler p99 {f['server_handler_p99_ms']:.3f} ms, server CPU "
                    f"{100 * f['server_cpu']:.0f} %, RESOURCE_EXHAUSTED {f['server_resource_exhausted']:.0f}, "
                    f"foresight_open_streams {f['open_streams']:.0f}"
                )
        lines.append(
            f"  server resident memory: {s['rss_mib_no_streams']:.0f} MiB with {max(args.objects, args.streams)} "
            f"warm series and no stream, {s.get('rss_mib_streams', float('nan')):.0f} MiB with the streams open"
        )
        with_streams = [r["with_streams"] for r in s["rounds"]]
        ok_p99 = all(f["p99_ms"] <= BAR_P99_MS for f in with_streams)
        no_exhausted = all(
            f["server_resource_exhausted"] == 0 and "RESOURCE_EXHAUSTED" not in (r["holder"]["errors"] or {})
            for f, r in zip(with_streams, s["rounds"], strict=True)
        )
        all_open = all(r["streams_opened"] == args.streams for r in s["rounds"])
        lines.append(
            f"bar: unary p99 <= {BAR_P99_MS:.0f} ms with streams open: {'PASS' if ok_p99 else 'FAIL'}; "
            f"no RESOURCE_EXHAUSTED: {'PASS' if no_exhausted else 'FAIL'}; "
            f"all {args.streams} streams open: {'PASS' if all_open else 'FAIL'}"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtests.streams_bench", description=__doc__.split("\n")[0])
    parser.add_argument("--streams", type=int, default=10_000, help="open StreamIsActive streams [10000]")
    parser.add_argument("--channels", type=int, default=4, help="connections the streams are spread over [4]")
    parser.add_argument("--objects", type=int, default=1000, help="ScaledObjects polled by the unary load [1000]")
    parser.add_argument("--concurrency", type=int, default=64, help="unary callers [64]")
    parser.add_argument("--duration", type=float, default=20.0, help="measured seconds per unary run [20]")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds first [2]")
    parser.add_argument("--rounds", type=int, default=2, help="sync/aio unary rounds, alternating [2]; 0 skips")
    parser.add_argument(
        "--stream-rounds", type=int, default=2, help="unary runs without then with the streams, alternating [2]"
    )
    parser.add_argument("--idle", type=float, default=10.0, help="seconds of server CPU sampled with idle streams")
    parser.add_argument("--no-streams", action="store_true", help="only the sync/aio unary comparison")
    parser.add_argument("--seed-timeout", type=float, default=600.0)
    parser.add_argument("--warm-timeout", type=float, default=900.0)
    parser.add_argument("--json", action="store_true", help="also print the result as JSON")
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="streams-bench-"))
    models = work / "models"
    result: dict[str, Any] = {"rounds": [], "cores": os.cpu_count(), "load_average_at_start": load_average()}
    try:
        print("seeding one real model ...", flush=True)
        seed = seed_model(work, models, args.seed_timeout)
        clone_models(seed, models, load_config("unused", args), max(args.objects, args.streams))
        for i in range(args.rounds):
            kinds = ("sync", "aio") if i % 2 == 0 else ("aio", "sync")
            round_result = {}
            for kind in kinds:
                print(f"round {i + 1}: {kind} server, unary load ...", flush=True)
                round_result[kind] = unary_round(work, models, kind, args)
                print(f"  {json.dumps(round_result[kind])}", flush=True)
            result["rounds"].append(round_result)
        if not args.no_streams:
            print("streams phase ...", flush=True)
            result["streams"] = streams_phase(work, models, args)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(report_text(result, args))
    if args.json:
        print(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
