"""Benchmark: the rightsizer's Azure Monitor source on 10,000 VMs x 14 days at 5 minutes, through the fake
metrics API (tests/fakes/azure_monitor.py) and the real ``azure-monitor-querymetrics`` client over HTTPS.

    .venv/bin/python -m loadtests.rightsizer_azmon_bench [--vms 10000] [--days 14] [--concurrency 4]

The fake runs in a child process (its JSON generation does not share the measured process's GIL or memory) and
answers for any VM id with deterministic generated data. The VMs are spread over 2 subscriptions x 2 regions, so
they make 4 groups of 2,500 and 200 batch calls of 50. Measured in this process: wall time of
``AzureMonitorSource.usage`` (calls, JSON parsing, gridding every VM's CPU and memory onto the 5-minute grid),
calls made, resident memory before, after and at peak (``ru_maxrss``), and the bytes of the usage series kept
for the deciding step.

Baseline, in the same run: the same 50-VM call read through the client's own result objects
(``MetricsQueryResult``, one ``MetricValue`` with a parsed datetime per point) instead of the streamed JSON the
source reads; measured on ``--baseline-vms`` VMs and scaled to the fleet per VM.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing as mp
import resource
import time
from datetime import UTC, datetime, timedelta
from multiprocessing.synchronize import Event
from typing import Any

from rightsizer.domain import VmInfo
from rightsizer.metrics import VmUsage
from rightsizer.settings import AzureMonitorSettings, MetricsSettings
from rightsizer.sources.azure_monitor import GIB, AzureMonitorSource, metrics_client_factory
from rightsizer.sources.azure_monitor_answer import AGGREGATION, CPU_METRIC, MEMORY_METRIC
from rightsizer.sources.azure_monitor_batches import NAMESPACE

SUBSCRIPTIONS = ("00000000-0000-0000-0000-0000000000b1", "00000000-0000-0000-0000-0000000000b2")
REGIONS = ("westeurope", "northeurope")
NOW = 1_796_000_000.0
VM_TYPE = "Microsoft.Compute/virtualMachines"


def _serve(ready: Any, stop: Event) -> None:
    from tests.fakes.azure_monitor import FakeAzureMonitor

    with FakeAzureMonitor(accept_any=True) as fake:
        ready.put((fake.url, str(fake.cert_path)))
        stop.wait()
        ready.put(len(fake.calls))


def rss_mb() -> float:
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def fleet(n: int) -> list[VmInfo]:
    vms = []
    for i in range(n):
        sub = SUBSCRIPTIONS[i % 2]
        region = REGIONS[(i // 2) % 2]
        vms.append(
            VmInfo(
                id=f"/subscriptions/{sub}/resourceGroups/rg-{i % 40}/providers/{VM_TYPE}/vm{i:05d}",
                name=f"vm{i:05d}",
                resource_group=f"rg-{i % 40}",
                size="Standard_D4s_v5",
                region=region,
                subscription_id=sub,
            )
        )
    return vms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vms", type=int, default=10_000)
    parser.add_argument("--days", type=float, default=14.0)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--baseline-vms", type=int, default=100)
    args = parser.parse_args()

    from tests.fakes.arm import FakeCredential

    ctx = mp.get_context("spawn")
    ready = ctx.Queue()
    stop = ctx.Event()
    server = ctx.Process(target=_serve, args=(ready, stop), daemon=True)
    server.start()
    url, cert = ready.get(timeout=60)
    try:
        settings = AzureMonitorSettings(endpoint=url + "/{region}", concurrency=args.concurrency)
        metrics = MetricsSettings(lookback_days=args.days)
        factory = metrics_client_factory(FakeCredential(), settings, connection_verify=cert)
        vms = fleet(args.vms)
        source = AzureMonitorSource(settings, metrics, factory)
        rss_before = rss_mb()
        t0 = time.perf_counter()
        usage = source.usage(vms, lambda vm: 16 * GIB, NOW)
        wall = time.perf_counter() - t0
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        rss_after = rss_mb()
        source.close()
        measured = [u for u in usage.values() if isinstance(u, VmUsage)]
        kept = sum(
            u.cpu.values.nbytes
            + (u.cpu.observed.nbytes if u.cpu.observed is not None else 0)
            + (
                0
                if u.memory is None
                else u.memory.values.nbytes + (u.memory.observed.nbytes if u.memory.observed is not None else 0)
            )
            for u in measured
        )
        points = sum(len(u.cpu) + (0 if u.memory is None else len(u.memory)) for u in measured)
        print(
            f"fleet: {args.vms} VMs, {args.days:g} days at 5 min, 2 subscriptions x 2 regions, "
            f"concurrency {args.concurrency}"
        )
        print(f"wall: {wall:.1f} s ({wall / args.vms * 1000:.2f} ms per VM)")
        print(
            f"calls: {source.stats.calls} ({source.stats.batches} batches, {source.stats.failed_batches} failed); "
            f"VMs measured: {len(measured)} of {args.vms}"
        )
        print(f"points on the grid: {points:,} ({points / wall / 1e6:.2f} M/s)")
        print(
            f"RSS: before {rss_before:.0f} MB, after {rss_after:.0f} MB, peak {peak:.0f} MB; "
            f"usage series kept for the deciding step: {kept / 1e6:.0f} MB"
        )
        del usage, measured

        # Baseline: the client's own result objects for the same calls.
        client = factory(url + "/" + REGIONS[0])
        base_vms = [vm for vm in vms if vm.region == REGIONS[0] and vm.subscription_id == SUBSCRIPTIONS[0]]
        base_vms = base_vms[: args.baseline_vms]
        end = datetime.fromtimestamp((NOW // 300) * 300 + 300, UTC)
        t0 = time.perf_counter()
        for i in range(0, len(base_vms), 50):
            results = client.query_resources(
                resource_ids=[vm.id for vm in base_vms[i : i + 50]],
                metric_namespace=NAMESPACE,
                metric_names=[CPU_METRIC, MEMORY_METRIC],
                timespan=(end - timedelta(days=args.days), end),
                granularity=timedelta(minutes=5),
                aggregations=[AGGREGATION],
            )
            assert len(results) == len(base_vms[i : i + 50])
        base_wall = time.perf_counter() - t0
        per_vm = base_wall / max(1, len(base_vms))
        print(
            f"baseline (client's MetricsQueryResult objects): {len(base_vms)} VMs in {base_wall:.1f} s "
            f"({per_vm * 1000:.1f} ms per VM, {per_vm * args.vms:.0f} s for {args.vms} VMs) vs "
            f"{wall / args.vms * 1000:.2f} ms per VM here: x{per_vm / (wall / args.vms):.0f}"
        )
    finally:
        stop.set()
        with contextlib.suppress(Exception):
            print(f"calls seen by the fake: {ready.get(timeout=10)}")
        server.join(timeout=10)


if __name__ == "__main__":
    main()
