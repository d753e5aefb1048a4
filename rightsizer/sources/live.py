"""Which live source measures the VMs (``metrics.source``), and its wiring to credentials and the catalogue.

Kept apart from the sources so that each of them stays a client with its dependencies passed in.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

from rightsizer.catalogue import VmSize, bundled_sizes
from rightsizer.domain import VmInfo
from rightsizer.metrics import NoUsage, Usage
from rightsizer.settings import Settings
from rightsizer.sources.azure_monitor import GIB, AzureMonitorSource, metrics_client_factory

PrometheusFactory = Callable[[Settings], Any]
MonitorFactory = Callable[[Settings], AzureMonitorSource]


class SourceUnavailable(RuntimeError):
    """The live metrics source answered for none of the VMs (unreachable, no permission, throttled throughout)."""


def live_source_name(settings: Settings) -> str:
    """``metrics.source`` when set; otherwise Prometheus for settings that name only a Prometheus URL (written
    before Azure Monitor was a source), else Azure Monitor."""
    m = settings.metrics
    if m.source:
        return m.source
    return "prometheus" if m.prometheus_url else "azure-monitor"


def memory_bytes_of(sizes: dict[str, VmSize]) -> Callable[[VmInfo], float | None]:
    def lookup(vm: VmInfo) -> float | None:
        size = sizes.get(vm.size)
        return None if size is None else size.memory_gib * GIB

    return lookup


def _default_prometheus(settings: Settings) -> Any:
    from rightsizer.sources.prometheus import prometheus_client

    return prometheus_client(settings.metrics)


def _default_monitor(settings: Settings) -> AzureMonitorSource:
    from rightsizer.azure import default_credential

    factory = metrics_client_factory(default_credential(), settings.azure_monitor)
    return AzureMonitorSource(settings.azure_monitor, settings.metrics, factory)


def _counted(vms: Sequence[VmInfo], done: Callable[[int], None]) -> Iterator[VmInfo]:
    for vm in vms:
        yield vm
        done(1)


def live_usage(
    vms: Sequence[VmInfo],
    settings: Settings,
    now: float,
    *,
    prometheus_factory: PrometheusFactory | None = None,
    monitor_factory: MonitorFactory | None = None,
    on_done: Callable[[int], None] | None = None,
) -> tuple[dict[str, Usage], str]:
    """Usage per VM id from the configured live source, and a note naming it for the output header.

    ``on_done(n)`` is told each time ``n`` more VMs have been measured (a progress bar)."""
    done = on_done or (lambda n: None)
    source = live_source_name(settings)
    if source == "prometheus":
        from rightsizer.sources.prometheus import PrometheusUnreachable, usage_from_prometheus

        client = (prometheus_factory or _default_prometheus)(settings)
        try:
            usage = usage_from_prometheus(client, _counted(vms, done), settings.metrics, now)
        except PrometheusUnreachable as exc:
            raise SourceUnavailable(str(exc)) from None
        return usage, f"Prometheus {settings.metrics.prometheus_url}"
    monitor = (monitor_factory or _default_monitor)(settings)
    try:
        usage = monitor.usage(
            vms, memory_bytes_of(dict(bundled_sizes())), now, on_batch=lambda batch: done(len(batch.vms))
        )
    finally:
        monitor.close()
    stats = monitor.stats
    if stats.batches and stats.failed_batches == stats.batches:
        first = next((u.reason for u in usage.values() if isinstance(u, NoUsage)), "")
        raise SourceUnavailable(f"Azure Monitor answered none of {stats.batches} batches: {first}")
    note = f"Azure Monitor ({stats.batches} batches, {stats.calls} calls, {stats.failed_batches} failed)"
    return usage, note
