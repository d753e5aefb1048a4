"""Constructed VMs, usage and catalogues for the deciding side's tests."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from rightsizer.catalogue import Catalogue, VmSize
from rightsizer.decide.usage_stats import UsageStats
from rightsizer.domain import VmInfo
from rightsizer.metrics import Usage, usage_from_samples
from rightsizer.prices import PriceKey, PriceTable
from rightsizer.settings import DAY_S, ForecastSettings, MetricsSettings, Settings

NOW = 1_790_000_000.0  # 2026-09-21T...Z, a fixed "now"
REGION = "westeurope"

CHEAP_SETTINGS = Settings(forecast=ForecastSettings(method="none"))
"""Observed statistics only (confidence = completeness): for tests where the forecast is not the subject."""


def vm(
    name: str,
    size: str = "Standard_D8_x",
    *,
    tags: Mapping[str, str] | None = None,
    group: str | None = None,
    scale_set: str | None = None,
    healthy: bool = True,
    **kw: object,
) -> VmInfo:
    return VmInfo(
        id=f"/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/{name}",
        name=name,
        resource_group="rg",
        size=size,
        region=REGION,
        tags=dict(tags or {}),
        group=group,
        scale_set=scale_set,
        healthy=healthy,
        **kw,  # type: ignore[arg-type]
    )


def usage(
    vm_info: VmInfo,
    cpu: float,
    memory: float | None = 20.0,
    *,
    days: float = 7.0,
    missing_fraction: float = 0.0,
    now: float = NOW,
    settings: MetricsSettings | None = None,
) -> Usage:
    """Constant-ish usage (a small daily wave around ``cpu``) over ``days`` ending at ``now``."""
    ts = np.arange(now - days * DAY_S + 300.0, now + 1.0, 300.0)
    wave = np.sin(2 * np.pi * ts / DAY_S)
    cpu_v = np.clip(cpu * (1 + 0.02 * wave), 0, 100)
    mem_v = None if memory is None else np.clip(memory * (1 + 0.01 * wave), 0, 100)
    if missing_fraction > 0:
        # Scattered single missing points (short gaps get filled but still count as missing).
        keep = np.ones(len(ts), dtype=bool)
        step = max(2, int(round(1 / missing_fraction)))
        keep[::step] = False
        ts, cpu_v = ts[keep], cpu_v[keep]
        mem_v = None if mem_v is None else mem_v[keep]
    return usage_from_samples(vm_info.id, ts, cpu_v, mem_v, settings or MetricsSettings(), now)


def stats(cpu: float, memory: float | None = 20.0, *, mean: float | None = None, confidence: float = 1.0) -> UsageStats:
    return UsageStats(
        cpu_observed_p95=cpu,
        cpu_forecast_p95=None,
        cpu_mean=cpu if mean is None else mean,
        memory_observed=memory,
        memory_forecast_p95=None,
        completeness=1.0,
        accuracy=confidence,
        method="none",
    )


def size(
    name: str,
    vcpus: int,
    memory_gib: float,
    *,
    family: str = "general-purpose",
    premium: bool = True,
    accel: bool = True,
    disks: int = 8,
    nics: int = 2,
    temp: float = 0.0,
    arch: str = "x86-64",
) -> VmSize:
    return VmSize(
        name=name,
        series=name.split("_")[1] if "_" in name else name,
        family_kind=family,
        vcpus=vcpus,
        memory_gib=memory_gib,
        temp_storage_gib=temp,
        premium_storage=premium,
        accelerated_networking=accel,
        max_data_disks=disks,
        max_nics=nics,
        cpu_arch=arch,
        cpu_vendor="arm" if arch == "arm64" else "intel",
    )


def catalogue(prices: Mapping[VmSize, float]) -> Catalogue:
    table = {PriceKey(s.name, REGION, "linux", False): p for s, p in prices.items()}
    return Catalogue({s.name: s for s in prices}, PriceTable(table, source="constructed"))
