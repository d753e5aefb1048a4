"""Several replicas over one Redis against one replica with the in-memory store, in the same run.

Part 1, scale (``--series``, default 10,000): three replicas (``--replicas``) over one redis-server, every replica
asked about every series (as KEDA's round robin does), then measured over ``--window`` seconds:

- fits per replica (from ``foresight_fits_total``) and how far apart they are (the bar: within 20 %);
- latest-value queries per fetch interval across the deployment (``foresight_fetches_total``) against the number of
  series (the bar: equal, not times the replicas);
- resident memory per replica at that many series (the bar: <= 1 GB).

Part 2, throughput (``--objects``, default 1,000 ScaledObjects, KEDA's call sequence from ``keda_load``): one
replica of a Redis deployment, then one replica with ``--store memory``, same load, same machine, one after the
other while both are up (the bar: the Redis replica within 10 % of the memory one).

The replicas run ``loadtests.replica_runner``: the product with a cheap fit (seasonal naive, ~1 ms) because
10,000 Prophet fits per refit round would take hours on 2 cores; what is measured is coordination and serving.

    python -m loadtests.replicas_bench                       # 10,000 series, 3 replicas, ~8 minutes
    python -m loadtests.replicas_bench --series 2000 --window 120 --duration 10
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loadtests.keda_load import LoadConfig, LoadReport, run_load
from tests.support.redis import RedisServer
from tests.support.replicas import Replica, start_replicas

RUNNER = "loadtests.replica_runner"
METADATA = {"threshold": "50", "queryStep": "5m", "historyTimeWindow": "4d", "minConfidence": "0"}
"""minConfidence 0: the cheap model's live accuracy would otherwise ask for early refits, and the fit counts are
meant to show the refit schedule shared, not the refit policy."""


@dataclass(frozen=True)
class BenchConfig:
    series: int = 10_000
    replicas: int = 3
    fetch_interval_s: float = 60.0
    refit_interval_s: float = 120.0
    window_s: float = 240.0
    objects: int = 1000
    duration_s: float = 20.0
    concurrency: int = 64
    rounds: int = 2
    """Throughput runs per store, alternating."""
    warm_timeout_s: float = 900.0


def replica_args(store: str, config: BenchConfig) -> list[str]:
    return [
        "--source",
        "replay",
        "--store",
        store,
        "--fetch-interval-s",
        str(config.fetch_interval_s),
        "--refit-interval-s",
        str(config.refit_interval_s),
        "--cache-max-entries",
        str(2 * config.series + 10),
        "--idle-drop-s",
        "3600",
        "--log-level",
        "warning",
    ]


def register(replicas: Sequence[Replica], objects: int, namespace: str) -> list[LoadReport]:
    """Every replica polls every ScaledObject once (in parallel threads, one per replica)."""
    reports: list[LoadReport] = []

    def one(r: Replica) -> None:
        cfg = LoadConfig(
            target=r.address,
            objects=objects,
            concurrency=32,
            duration_s=3600.0,
            warmup_s=0.0,
            max_polls=objects,
            namespace=namespace,
            metadata=METADATA,
        )
        reports.append(run_load(cfg))

    threads = [threading.Thread(target=one, args=(r,)) for r in replicas]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return reports


def total(replicas: Sequence[Replica], metric: str, **labels: str) -> float:
    return sum(r.metric(metric, **labels) for r in replicas)


def wait_warm(replicas: Sequence[Replica], series: int, timeout: float) -> float:
    """Until every series has been fitted once across the deployment; returns the seconds it took."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if total(replicas, "foresight_fits_total", outcome="ok") >= series:
            time.sleep(3.0)  # mirrors catch up
            return time.monotonic() - t0
        time.sleep(2.0)
    raise RuntimeError(f"not warm after {timeout}s: {total(replicas, 'foresight_fits_total', outcome='ok')} fits")


def timed_counters(replica: Replica) -> tuple[float, float, float]:
    """(time of the read, fits ok, fetches) from one /metrics scrape; the time is the scrape's midpoint."""
    t0 = time.monotonic()
    samples = replica.samples()
    t1 = time.monotonic()
    fits = sum(v for (n, lab), v in samples.items() if n == "foresight_fits_total" and ("outcome", "ok") in lab)
    fetches = sum(v for (n, _lab), v in samples.items() if n == "foresight_fetches_total")
    return (t0 + t1) / 2, fits, fetches


def scale_part(config: BenchConfig, directory: Path, redis: RedisServer) -> dict[str, Any]:
    replicas = start_replicas(config.replicas, directory, replica_args(redis.url, config), module=RUNNER)
    try:
        t0 = time.monotonic()
        register(replicas, config.series, "scale")
        registered_s = time.monotonic() - t0
        warm_s = wait_warm(replicas, config.series, config.warm_timeout_s)
        # Each replica's counters are read with the time of the read: a /metrics scrape at 10,000 series takes a
        # while, so one replica's window is not another's.
        before = [timed_counters(r) for r in replicas]
        time.sleep(config.window_s)
        after = [timed_counters(r) for r in replicas]
        rates = [
            ((a[1] - b[1]) / (a[0] - b[0]), (a[2] - b[2]) / (a[0] - b[0])) for b, a in zip(before, after, strict=True)
        ]
        elapsed = sum(a[0] - b[0] for b, a in zip(before, after, strict=True)) / len(replicas)
        fits = [round(f * elapsed) for f, _ in rates]
        fetches = [round(x * elapsed) for _, x in rates]
        rss = [r.rss_bytes() for r in replicas]
        intervals = elapsed / config.fetch_interval_s
        mean_fits = sum(fits) / len(fits)
        return {
            "series": config.series,
            "replicas": config.replicas,
            "register_s": round(registered_s, 1),
            "warm_s": round(warm_s, 1),
            "window_s": round(elapsed, 1),
            "fits_per_replica": fits,
            "fits_per_replica_per_s": [round(f, 2) for f, _ in rates],
            "fits_spread_vs_mean": round((max(fits) - min(fits)) / mean_fits, 3) if mean_fits else None,
            "fits_per_series_per_refit_interval": round(
                sum(fits) / config.series / (elapsed / config.refit_interval_s), 3
            ),
            "fetches_per_replica": fetches,
            "fetches_per_fetch_interval": round(sum(fetches) / intervals, 1),
            "fetches_per_interval_per_series": round(sum(fetches) / intervals / config.series, 3),
            "rss_mb_per_replica": [round(b / 2**20) for b in rss],
        }
    finally:
        for r in replicas:
            r.stop()


def load(replica: Replica, config: BenchConfig, namespace: str) -> LoadReport:
    return run_load(
        LoadConfig(
            target=replica.address,
            objects=config.objects,
            concurrency=config.concurrency,
            duration_s=config.duration_s,
            warmup_s=2.0,
            namespace=namespace,
            metadata=METADATA,
        )
    )


def throughput_part(config: BenchConfig, directory: Path, redis: RedisServer) -> dict[str, Any]:
    redis.flush()
    shared = start_replicas(config.replicas, directory, replica_args(redis.url, config), module=RUNNER, first_index=10)
    memory = start_replicas(1, directory, replica_args("memory", config), module=RUNNER, first_index=20)
    try:
        register(shared, config.objects, "tput")
        register(memory, config.objects, "tput")
        wait_warm(shared, config.objects, config.warm_timeout_s)
        wait_warm(memory, config.objects, config.warm_timeout_s)
        runs: dict[str, list[LoadReport]] = {"redis": [], "memory": []}
        for _ in range(config.rounds):  # alternate, so drift in the machine's load hits both alike
            runs["redis"].append(load(shared[0], config, "tput"))
            runs["memory"].append(load(memory[0], config, "tput"))

        def summary(reports: list[LoadReport]) -> dict[str, Any]:
            return {
                "rpcs_per_s": [round(r.rpcs_per_s) for r in reports],
                "p99_ms": [round(r.latency.p99_ms, 2) for r in reports],
                "errors": [r.errors for r in reports],
            }

        best = {k: max(r.rpcs_per_s for r in v) for k, v in runs.items()}
        median = {k: sorted(r.rpcs_per_s for r in v)[len(v) // 2] for k, v in runs.items()}
        return {
            "objects": config.objects,
            "concurrency": config.concurrency,
            "duration_s": config.duration_s,
            "redis_replica": summary(runs["redis"]),
            "memory_replica": summary(runs["memory"]),
            "redis_vs_memory_best": round(best["redis"] / best["memory"], 3),
            "redis_vs_memory_median": round(median["redis"] / median["memory"], 3),
        }
    finally:
        for r in [*shared, *memory]:
            r.stop()


def main(argv: Sequence[str] | None = None) -> int:
    d = BenchConfig()
    parser = argparse.ArgumentParser(prog="python -m loadtests.replicas_bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--series", type=int, default=d.series)
    parser.add_argument("--replicas", type=int, default=d.replicas)
    parser.add_argument("--fetch-interval", type=float, default=d.fetch_interval_s)
    parser.add_argument("--refit-interval", type=float, default=d.refit_interval_s)
    parser.add_argument("--window", type=float, default=d.window_s, help="seconds the work is counted over")
    parser.add_argument("--objects", type=int, default=d.objects, help="ScaledObjects of the throughput part")
    parser.add_argument("--duration", type=float, default=d.duration_s, help="seconds of each throughput run")
    parser.add_argument("--concurrency", type=int, default=d.concurrency)
    parser.add_argument("--rounds", type=int, default=d.rounds, help="throughput runs per store, alternating")
    parser.add_argument("--skip-scale", action="store_true")
    parser.add_argument("--skip-throughput", action="store_true")
    args = parser.parse_args(argv)
    config = BenchConfig(
        series=args.series,
        replicas=args.replicas,
        fetch_interval_s=args.fetch_interval,
        refit_interval_s=args.refit_interval,
        window_s=args.window,
        objects=args.objects,
        duration_s=args.duration,
        concurrency=args.concurrency,
        rounds=args.rounds,
    )
    result: dict[str, Any] = {"config": config.__dict__}
    with tempfile.TemporaryDirectory(prefix="foresight-replicas-") as tmp:
        directory = Path(tmp)
        redis = RedisServer(directory)
        redis.start()
        try:
            if not args.skip_scale:
                result["scale"] = scale_part(config, directory, redis)
                print(json.dumps(result["scale"], indent=1), flush=True)
            if not args.skip_throughput:
                result["throughput"] = throughput_part(config, directory, redis)
                print(json.dumps(result["throughput"], indent=1), flush=True)
        finally:
            redis.stop()
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
