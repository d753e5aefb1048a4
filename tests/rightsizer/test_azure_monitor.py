"""The Azure Monitor source through the real azure-monitor-querymetrics client against our fake metrics API
(tests/fakes/azure_monitor.py: HTTPS on loopback, the getBatch JSON)."""

from __future__ import annotations

import email.utils
import io
import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from rightsizer.cli import build_parser, run_recommend
from rightsizer.domain import PowerState, VmInfo
from rightsizer.metrics import NoUsage, Usage, VmUsage
from rightsizer.settings import AzureMonitorSettings, MetricsSettings, Settings
from rightsizer.sources.azure_monitor import GIB, AzureMonitorSource, metrics_client_factory
from rightsizer.sources.azure_monitor_batches import plan_batches
from rightsizer.sources.live import SourceUnavailable, live_usage
from tests.fakes.arm import FakeCredential
from tests.fakes.azure_monitor import FakeAzureMonitor, MonitorFault

NOW = 1_796_000_000.0  # 2026-11-30T...Z
SUB_A = "00000000-0000-0000-0000-00000000000a"
SUB_B = "00000000-0000-0000-0000-00000000000b"
SIZES_GIB = {"Standard_D4s_v5": 16.0, "Standard_D2s_v5": 8.0}


@pytest.fixture
def monitor() -> Iterator[FakeAzureMonitor]:
    with FakeAzureMonitor() as fake:
        yield fake


def vm(name: str, *, sub: str = SUB_A, region: str = "westeurope", size: str = "Standard_D4s_v5") -> VmInfo:
    return VmInfo(
        id=f"/subscriptions/{sub}/resourceGroups/rg1/providers/Microsoft.Compute/virtualMachines/{name}",
        name=name,
        resource_group="rg1",
        size=size,
        region=region,
        subscription_id=sub,
    )


def fleet(monitor: FakeAzureMonitor, vms: list[VmInfo], **kw: object) -> list[VmInfo]:
    for v in vms:
        monitor.add_vm(v.id, v.region, memory_gib=SIZES_GIB.get(v.size, 16.0), **kw)  # type: ignore[arg-type]
    return vms


def source(
    monitor: FakeAzureMonitor,
    sleeps: list[float] | None = None,
    *,
    metrics: MetricsSettings | None = None,
    clock: float = NOW,
    **settings: object,
) -> AzureMonitorSource:
    am = AzureMonitorSettings(endpoint=monitor.endpoint_template, **settings)  # type: ignore[arg-type]
    factory = metrics_client_factory(FakeCredential(), am, connection_verify=str(monitor.cert_path))
    return AzureMonitorSource(
        am,
        metrics or MetricsSettings(),
        factory,
        sleep=(sleeps if sleeps is not None else []).append,
        clock=lambda: clock,
    )


def memory_of(v: VmInfo) -> float | None:
    gib = SIZES_GIB.get(v.size)
    return None if gib is None else gib * GIB


def fetch(src: AzureMonitorSource, vms: list[VmInfo], now: float = NOW) -> dict[str, Usage]:
    try:
        return src.usage(vms, memory_of, now)
    finally:
        src.close()


def test_uniform_scale_set_instances_are_read_per_instance_in_their_own_batch(monitor: FakeAzureMonitor) -> None:
    plain = fleet(monitor, [vm("plain")])
    base = f"/subscriptions/{SUB_A}/resourceGroups/rg1/providers/Microsoft.Compute/virtualMachineScaleSets/web"
    instances = [replace(vm(f"web_{i}"), id=f"{base}/virtualMachines/{i}", scale_set="web") for i in range(3)]
    fleet(monitor, instances, cpu_percent=30.0)
    usage = fetch(source(monitor), [*plain, *instances])
    assert all(isinstance(u, VmUsage) and u.memory is not None for u in usage.values())
    namespaces = sorted((c.query["metricnamespace"][0], len(c.resource_ids)) for c in monitor.calls)
    # The fake refuses a resource whose type is not the call's namespace.
    assert namespaces == [
        ("Microsoft.Compute/virtualMachineScaleSets/virtualMachines", 3),
        ("Microsoft.Compute/virtualMachines", 1),
    ]
    busy = usage[instances[0].id]
    assert isinstance(busy, VmUsage) and float(np.nanmean(busy.cpu.values)) == pytest.approx(30.0, rel=0.05)


def test_120_vms_of_one_region_take_3_calls_and_are_all_measured(monitor: FakeAzureMonitor) -> None:
    vms = fleet(monitor, [vm(f"vm{i:03d}") for i in range(120)], cpu_percent=12.0, memory_used_fraction=0.4)
    src = source(monitor)
    usage = fetch(src, vms)

    calls = monitor.successful_calls()
    assert len(calls) == 3 and len(monitor.calls) == 3 and src.stats.calls == 3
    assert sorted(len(c.resource_ids) for c in calls) == [20, 50, 50]
    assert {rid for c in calls for rid in c.resource_ids} == {v.id for v in vms}
    # What the real client sent: the batch API's query, one time grain, both metrics, average.
    query = calls[0].query
    assert query["api-version"] == ["2024-02-01"]
    assert query["metricnamespace"] == ["Microsoft.Compute/virtualMachines"]
    assert query["metricnames"] == ["Percentage CPU,Available Memory Bytes"]
    assert query["interval"] == ["PT5M"] and query["aggregation"] == ["average"]
    for v in vms:
        u = usage[v.id]
        assert isinstance(u, VmUsage), u
        assert u.memory is not None and u.cpu.quality.completeness > 0.99
        # The fake's CPU is a daily wave around 12 %, its memory 40 % used (+-10 %) of the size's 16 GiB.
        assert float(np.nanmean(u.cpu.values)) == pytest.approx(12.0, rel=0.05)
        assert float(np.nanmean(u.memory.values)) == pytest.approx(40.0, rel=0.05)
        assert float(np.nanmax(u.memory.values)) < 45.0


def test_vms_of_two_subscriptions_and_two_regions_go_to_their_own_endpoint(monitor: FakeAzureMonitor) -> None:
    vms = fleet(
        monitor,
        [
            vm("a1"),
            vm("a2", region="northeurope"),
            vm("b1", sub=SUB_B),
            vm("b2", sub=SUB_B, region="northeurope"),
            vm("b3", sub=SUB_B, region="northeurope"),
        ],
    )
    usage = fetch(source(monitor), vms)
    assert all(isinstance(u, VmUsage) for u in usage.values())
    # The fake refuses (400) a resource outside the call's subscription or the endpoint's region.
    groups = sorted((c.subscription, c.region, len(c.resource_ids)) for c in monitor.calls)
    assert groups == [
        (SUB_A, "northeurope", 1),
        (SUB_A, "westeurope", 1),
        (SUB_B, "northeurope", 2),
        (SUB_B, "westeurope", 1),
    ]
    assert all(c.status == 200 for c in monitor.calls)


def test_batches_are_planned_per_subscription_and_region() -> None:
    vms = [vm(f"w{i}") for i in range(51)] + [vm(f"n{i}", region="NorthEurope") for i in range(3)]
    uniform = replace(
        vm("ss_0"),
        id=f"/subscriptions/{SUB_A}/resourceGroups/rg1/providers/Microsoft.Compute/virtualMachineScaleSets/ss/virtualMachines/0",
    )
    offline = replace(vm("offline"), id="offline-1", subscription_id=None)
    stopped = replace(vm("stopped"), power_state=PowerState.DEALLOCATED)
    batches, refused = plan_batches([*vms, uniform, offline, stopped], 50)
    assert sorted((b.region, b.namespace, len(b.vms)) for b in batches) == [
        ("northeurope", "Microsoft.Compute/virtualMachines", 3),
        ("westeurope", "Microsoft.Compute/virtualMachineScaleSets/virtualMachines", 1),
        ("westeurope", "Microsoft.Compute/virtualMachines", 1),
        ("westeurope", "Microsoft.Compute/virtualMachines", 50),
    ]
    assert [b.vms for b in batches if "ScaleSets" in b.namespace] == [(uniform,)]
    assert "not an Azure resource id" in refused["offline-1"].reason
    assert refused[stopped.id].reason == "VM is deallocated: not measured"


@pytest.mark.parametrize("form", ["delta-seconds", "http-date"])
def test_throttling_waits_as_long_as_retry_after_says_in_either_form(monitor: FakeAzureMonitor, form: str) -> None:
    vms = fleet(monitor, [vm(f"vm{i}") for i in range(3)])
    retry_after = "7" if form == "delta-seconds" else email.utils.formatdate(NOW + 7, usegmt=True)
    monitor.add_fault(MonitorFault(status=429, times=2, retry_after=retry_after))
    sleeps: list[float] = []
    usage = fetch(source(monitor, sleeps), vms)
    assert sleeps == [7.0, 7.0]
    assert [c.status for c in monitor.calls] == [429, 429, 200]
    assert all(isinstance(u, VmUsage) for u in usage.values())


def test_a_long_retry_after_is_capped_and_retries_are_bounded(monitor: FakeAzureMonitor) -> None:
    vms = fleet(monitor, [vm(f"vm{i}") for i in range(60)])
    # The first batch is throttled on every attempt (3), the second one is answered.
    monitor.add_fault(MonitorFault(status=429, times=3, retry_after="3600"))
    sleeps: list[float] = []
    src = source(monitor, sleeps, max_attempts=3, max_retry_delay_s=20.0, concurrency=1)
    usage = fetch(src, vms)
    assert sleeps == [20.0, 20.0]
    assert src.stats.failed_batches == 1 and src.stats.calls == 4
    skipped = [u for u in usage.values() if isinstance(u, NoUsage)]
    measured = [u for u in usage.values() if isinstance(u, VmUsage)]
    assert (len(skipped), len(measured)) == (50, 10)
    assert "Azure Monitor query failed" in skipped[0].reason and "HTTP 429 TooManyRequests" in skipped[0].reason


def test_server_errors_back_off_exponentially(monitor: FakeAzureMonitor) -> None:
    vms = fleet(monitor, [vm("a")])
    monitor.add_fault(MonitorFault(status=503, times=2, code="ServiceUnavailable"))
    sleeps: list[float] = []
    usage = fetch(source(monitor, sleeps, backoff_base_s=0.5), vms)
    assert sleeps == [0.5, 1.0]
    assert isinstance(usage[vms[0].id], VmUsage)


def test_one_resource_in_error_is_skipped_and_the_others_are_measured(monitor: FakeAzureMonitor) -> None:
    vms = fleet(monitor, [vm(f"vm{i}") for i in range(5)])
    monitor.vms[vms[2].id.lower()].error_code = "ResourceNotFound"
    unknown = vm("never-registered")  # the service answers an unknown resource with an error too
    usage = fetch(source(monitor), [*vms, unknown])
    assert len(monitor.calls) == 1
    for i, v in enumerate(vms):
        u = usage[v.id]
        if i == 2:
            assert isinstance(u, NoUsage) and "ResourceNotFound" in u.reason
        else:
            assert isinstance(u, VmUsage) and u.memory is not None
    gone = usage[unknown.id]
    assert isinstance(gone, NoUsage) and "ResourceNotFound" in gone.reason


def test_a_vm_without_memory_metric_is_skipped_unless_the_policy_allows_cpu_only(monitor: FakeAzureMonitor) -> None:
    vms = fleet(monitor, [vm("with-memory")])
    vms += fleet(monitor, [vm("no-memory")], has_memory_metric=False)
    unknown_size = fleet(monitor, [vm("odd-size", size="Standard_Unknown_v9")])
    vms += unknown_size

    default = fetch(source(monitor), vms)
    assert isinstance(default[vms[0].id], VmUsage)
    skipped = default[vms[1].id]
    assert isinstance(skipped, NoUsage)
    assert skipped.reason.startswith("memory unknown: no 'Available Memory Bytes' data from Azure Monitor")
    assert "metrics.size_without_memory" in skipped.reason
    odd = default[unknown_size[0].id]
    assert isinstance(odd, NoUsage) and "Standard_Unknown_v9 is not in the catalogue" in odd.reason

    allowed = fetch(source(monitor, metrics=MetricsSettings(size_without_memory=True)), vms)
    cpu_only = allowed[vms[1].id]
    assert isinstance(cpu_only, VmUsage) and cpu_only.memory is None
    assert cpu_only.memory_note.startswith("memory unknown")


def test_a_long_lookback_is_split_in_time_with_the_same_values(monitor: FakeAzureMonitor) -> None:
    vms = fleet(monitor, [vm("a"), vm("b")], missing_every=7)
    metrics = MetricsSettings(lookback_days=14.0, min_completeness=0.8)
    whole = fetch(source(monitor, metrics=metrics), vms)
    calls_whole = len(monitor.calls)
    split = fetch(source(monitor, metrics=metrics, max_points_per_call=1000), vms)
    assert calls_whole == 1 and len(monitor.calls) - calls_whole == 5  # 4032 points in windows of 1000
    for v in vms:
        a, b = whole[v.id], split[v.id]
        assert isinstance(a, VmUsage) and isinstance(b, VmUsage) and a.memory is not None and b.memory is not None
        np.testing.assert_array_equal(a.cpu.values, b.cpu.values)
        np.testing.assert_array_equal(a.memory.values, b.memory.values)
        # Every 7th minute-index point has no value: missing points count against completeness.
        assert a.cpu.quality.completeness < 1.0


def test_nothing_answered_is_a_service_unavailable(monitor: FakeAzureMonitor) -> None:
    vms = fleet(monitor, [vm("a"), vm("b", region="northeurope")])
    monitor.add_fault(MonitorFault(status=403, times=10, code="AuthorizationFailed", message="no Monitoring Reader"))
    settings = Settings()
    with pytest.raises(SourceUnavailable, match=r"none of 2 batches.*AuthorizationFailed"):
        live_usage(vms, settings, NOW, monitor_factory=lambda s: source(monitor))
    assert len(monitor.calls) == 2  # permanent errors are not retried


def test_recommend_reads_azure_monitor_by_default(monitor: FakeAzureMonitor, tmp_path: Path) -> None:
    idle = fleet(monitor, [vm(f"idle{i}") for i in range(3)], cpu_percent=2.0, memory_used_fraction=0.2)
    busy = fleet(monitor, [vm("busy")], cpu_percent=70.0, memory_used_fraction=0.5)
    blind = fleet(monitor, [vm("blind")], cpu_percent=2.0, has_memory_metric=False)
    inventory = tmp_path / "inventory.json"
    inventory.write_text(
        json.dumps(
            [
                {"id": v.id, "name": v.name, "resource_group": v.resource_group, "size": v.size, "region": v.region}
                for v in [*idle, *busy, *blind]
            ]
        )
    )
    config = tmp_path / "rightsizer.yaml"
    config.write_text(f"azure_monitor:\n  endpoint: '{monitor.endpoint_template}'\nforecast:\n  method: none\n")
    args = build_parser().parse_args(
        ["recommend", "--config", str(config), "--inventory", str(inventory), "--output", "json", "--now", str(NOW)]
    )
    out = io.StringIO()

    def monitor_factory(settings: Settings) -> AzureMonitorSource:
        assert settings.azure_monitor.endpoint == monitor.endpoint_template
        factory = metrics_client_factory(
            FakeCredential(), settings.azure_monitor, connection_verify=str(monitor.cert_path)
        )
        return AzureMonitorSource(settings.azure_monitor, settings.metrics, factory)

    assert run_recommend(args, out, monitor_factory=monitor_factory) == 0
    doc = json.loads(out.getvalue())
    assert "metrics from Azure Monitor (1 batches, 1 calls, 0 failed)" in doc["inputs"]
    rows = {r["vm"]: r for r in doc["recommendations"]}
    assert len(rows) == 5 and len(monitor.calls) == 1
    for v in idle:
        assert rows[v.name]["action"] in ("resize", "shutdown") and "no metrics" not in rows[v.name]["reason"]
    assert rows["busy"]["action"] in ("none", "resize")
    assert rows["blind"]["decision"] == "skip" and rows["blind"]["reason"].startswith("memory unknown")


def test_settings_of_the_source_are_typed_and_checked() -> None:
    from rightsizer.settings import SettingsError, settings_from_mapping
    from rightsizer.sources.live import live_source_name

    assert live_source_name(Settings()) == "azure-monitor"
    assert live_source_name(settings_from_mapping({"metrics": {"prometheus_url": "https://p:9090"}})) == "prometheus"
    explicit = {"metrics": {"source": "azure-monitor", "prometheus_url": "https://p:9090"}}
    assert live_source_name(settings_from_mapping(explicit)) == "azure-monitor"
    s = settings_from_mapping({"azure_monitor": {"concurrency": 8, "batch_size": 25, "granularity_s": 3600}})
    assert (s.azure_monitor.concurrency, s.azure_monitor.batch_size) == (8, 25)
    assert isinstance(s.azure_monitor.concurrency, int)
    cases: list[tuple[dict[str, Any], str]] = [
        ({"metrics": {"source": "influx"}}, "metrics.source: 'influx' is not one of azure-monitor, prometheus"),
        ({"azure_monitor": {"batch_size": 51}}, "outside 1-50"),
        ({"azure_monitor": {"concurrency": 2.5}}, "azure_monitor.concurrency: expected a whole number"),
        ({"azure_monitor": {"granularity_s": 120}}, "120 s is not an Azure Monitor time grain"),
        ({"metrics": {"step_s": 600}}, "metrics.step_s: 600 s is not an Azure Monitor time grain"),
        ({"azure_monitor": {"endpoint": "http://{region}.example"}}, "must be an https:// URL"),
        ({"azure_monitor": {"max_retries": 3}}, "max_retries"),
    ]
    for doc, message in cases:
        with pytest.raises(SettingsError, match=message.replace(".", r"\.").replace("(", r"\(")):
            settings_from_mapping(doc)
    # Prometheus at another step is not held to Azure's grains.
    settings_from_mapping({"metrics": {"source": "prometheus", "prometheus_url": "https://p", "step_s": 600}})
