"""From usage to a size: the statistics a VM is sized on, and the cheapest size that keeps them in bounds.

Statistic per resource = max(observed P95 over the lookback, forecast P95 over the next week). Memory uses
P95 or max (``thresholds.memory_statistic``); when memory is unknown the target keeps at least the current
memory. The statistic is rescaled to a candidate size by the vCPU (memory) ratio and must stay under the
target thresholds *on the new size*.

Confidence = min(completeness, forecast accuracy): completeness is the share of the lookback grid that had
samples (the lower of CPU and memory when memory is known); forecast accuracy is the lower of the CPU and
memory forecasts' backtest scores (``ServingModel.confidence`` for the library method, see
:mod:`rightsizer.decide.forecast`). Both must reach the gate (0.8) for a change to go ahead.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from rightsizer.catalogue import Catalogue, VmSize, burstable_baseline
from rightsizer.decide.forecast import forecast_p95
from rightsizer.domain import (
    HOURS_PER_MONTH,
    USER_FACING_TAG,
    WORKLOAD_TAG,
    Action,
    Priority,
    VmInfo,
)
from rightsizer.metrics import VmUsage
from rightsizer.settings import DAY_S, Settings
from rightsizer.tags import PreviousSizeTag


@dataclass(frozen=True, slots=True)
class UsageStats:
    cpu_observed_p95: float
    cpu_forecast_p95: float | None
    cpu_mean: float
    memory_observed: float | None
    """Observed P95 or max of memory percent (per settings); None when memory is unknown."""
    memory_forecast_p95: float | None
    completeness: float
    accuracy: float
    method: str
    notes: tuple[str, ...] = ()

    @property
    def cpu(self) -> float:
        """The CPU statistic sized on."""
        return max(self.cpu_observed_p95, self.cpu_forecast_p95 or 0.0)

    @property
    def memory(self) -> float | None:
        if self.memory_observed is None:
            return None
        return max(self.memory_observed, self.memory_forecast_p95 or 0.0)

    @property
    def confidence(self) -> float:
        return max(0.0, min(1.0, self.completeness, self.accuracy))

    def as_dict(self) -> dict[str, float]:
        out = {
            "cpu_observed_p95": self.cpu_observed_p95,
            "cpu_stat": self.cpu,
            "cpu_mean": self.cpu_mean,
            "completeness": self.completeness,
            "forecast_accuracy": self.accuracy,
        }
        if self.cpu_forecast_p95 is not None:
            out["cpu_forecast_p95"] = self.cpu_forecast_p95
        if self.memory_observed is not None:
            out["memory_observed"] = self.memory_observed
            out["memory_stat"] = self.memory or 0.0
        if self.memory_forecast_p95 is not None:
            out["memory_forecast_p95"] = self.memory_forecast_p95
        return {k: round(v, 4) for k, v in out.items()}


def _quantile(values: np.ndarray, q: float) -> float:
    finite = values[np.isfinite(values)]
    return float(np.quantile(finite, q)) if len(finite) else math.nan


def usage_stats(usage: VmUsage, now: float, settings: Settings) -> UsageStats:
    cpu_values = usage.cpu.values
    cpu_fc = forecast_p95(f"{usage.vm}/cpu", usage.cpu, now, settings.forecast)
    notes = [n for n in (cpu_fc.note, usage.memory_note) if n]
    accuracy = cpu_fc.accuracy
    mem_obs = mem_fc_p95 = None
    if usage.memory is not None:
        mv = usage.memory.values
        q = 1.0 if settings.thresholds.memory_statistic == "max" else 0.95
        mem_obs = _quantile(mv, q)
        mem_fc = forecast_p95(f"{usage.vm}/memory", usage.memory, now, settings.forecast)
        mem_fc_p95 = mem_fc.p95
        accuracy = min(accuracy, mem_fc.accuracy)
        if mem_fc.note and mem_fc.note not in notes:
            notes.append(mem_fc.note)
    finite_cpu = cpu_values[np.isfinite(cpu_values)]
    return UsageStats(
        cpu_observed_p95=_quantile(cpu_values, 0.95),
        cpu_forecast_p95=cpu_fc.p95,
        cpu_mean=float(finite_cpu.mean()) if len(finite_cpu) else math.nan,
        memory_observed=mem_obs,
        memory_forecast_p95=mem_fc_p95,
        completeness=usage.completeness,
        accuracy=accuracy,
        method=cpu_fc.method,
        notes=tuple(notes),
    )


def is_user_facing(vm: VmInfo) -> bool:
    v = vm.tags.get(USER_FACING_TAG, "").strip().lower()
    return v in ("true", "yes", "1") or vm.tags.get(WORKLOAD_TAG, "").strip().lower() == "user-facing"


@dataclass(frozen=True, slots=True)
class Sizing:
    action: Action
    reason: str
    target: str | None = None
    current_hourly: float | None = None
    target_hourly: float | None = None
    undersized: bool = False
    """The current size breaks the thresholds: the target is larger (recommend-only)."""
    problem: bool = False
    """Cannot size (unknown size, no price): a skip, not a 'keep'."""
    stats: dict[str, float] = field(default_factory=dict)

    @property
    def monthly_savings(self) -> float:
        if self.current_hourly is None:
            return 0.0
        if self.action is Action.SHUTDOWN:
            return self.current_hourly * HOURS_PER_MONTH
        if self.target_hourly is None:
            return 0.0
        return (self.current_hourly - self.target_hourly) * HOURS_PER_MONTH


def cpu_limit(vm: VmInfo, settings: Settings) -> float:
    t = settings.thresholds
    return t.cpu_p95_max_percent_user_facing if is_user_facing(vm) else t.cpu_p95_max_percent


def capability_problem(vm: VmInfo, current: VmSize, candidate: VmSize) -> str | None:
    """Why ``candidate`` cannot host what ``vm`` uses on ``current`` (None when it can)."""
    if candidate.cpu_arch != current.cpu_arch:
        return f"{candidate.cpu_arch} (image is {current.cpu_arch})"
    if current.premium_storage and not candidate.premium_storage:
        return "no premium storage"
    if current.accelerated_networking and not candidate.accelerated_networking:
        return "no accelerated networking"
    if vm.data_disks > candidate.max_data_disks:
        return f"max {candidate.max_data_disks} data disks < {vm.data_disks}"
    if vm.nics > candidate.max_nics:
        return f"max {candidate.max_nics} NICs < {vm.nics}"
    if vm.uses_temp_disk and not candidate.has_temp_disk:
        return "no temp disk"
    return None


def fits(vm: VmInfo, current: VmSize, candidate: VmSize, stats: UsageStats, settings: Settings) -> str | None:
    """None when ``candidate`` keeps the statistics under the thresholds, else why not."""
    t = settings.thresholds
    cpu_on_target = stats.cpu * current.vcpus / candidate.vcpus
    if cpu_on_target > cpu_limit(vm, settings):
        return f"P95 CPU {cpu_on_target:.0f}% > {cpu_limit(vm, settings):g}%"
    mem = stats.memory
    if mem is None:
        if candidate.memory_gib < current.memory_gib:
            return "memory unknown: keeps at least the current memory"
    else:
        mem_on_target = mem * current.memory_gib / candidate.memory_gib
        if mem_on_target > t.memory_max_percent:
            return f"memory {mem_on_target:.0f}% > {t.memory_max_percent:g}%"
    if candidate.burstable:
        baseline = burstable_baseline(candidate.name)
        if not t.offer_burstable or baseline is None:
            return "burstable not offered"
        mean_on_target = stats.cpu_mean * current.vcpus / candidate.vcpus
        if mean_on_target > 100 * baseline:
            return f"mean CPU {mean_on_target:.0f}% > burstable baseline {100 * baseline:.0f}%"
    return None


def _last_resize_age_days(vm: VmInfo, now: float) -> float | None:
    try:
        tag = PreviousSizeTag.of(vm.tags)
    except ValueError:
        return None
    return None if tag is None else (now - tag.at.timestamp()) / DAY_S


def choose_size(vm: VmInfo, stats: UsageStats, catalogue: Catalogue, settings: Settings, now: float) -> Sizing:
    """The sizing decision for one VM (pure): shutdown, resize to the cheapest fit, or keep."""
    t = settings.thresholds
    detail = stats.as_dict()
    current = catalogue.size(vm.size)
    if current is None:
        return Sizing(Action.NONE, f"size {vm.size} is not in the catalogue", problem=True, stats=detail)
    spot = vm.priority is Priority.SPOT
    current_hourly = catalogue.hourly(vm.size, vm.region, vm.os, spot=spot)
    if current_hourly is None:
        return Sizing(
            Action.NONE,
            f"no {'Spot ' if spot else ''}{vm.os} price for {vm.size} in {vm.region}",
            problem=True,
            stats=detail,
        )
    best: tuple[VmSize, float] | None = None
    for candidate, payg in catalogue.priced_sizes(vm.region, vm.os):
        price = catalogue.hourly(candidate.name, vm.region, vm.os, spot=True) if spot else payg
        if price is None or (best is not None and price >= best[1]):
            continue
        if capability_problem(vm, current, candidate) is not None:
            continue
        if fits(vm, current, candidate, stats, settings) is None and (best is None or price < best[1]):
            best = (candidate, price)
    current_misfit = fits(vm, current, current, stats, settings)
    if stats.cpu < t.idle_cpu_p95_percent:
        # Shutdown is only ever recommended; the fallback target says what to run if it must stay on.
        fallback = ""
        target_name = target_hourly_or_none = None
        if best is not None and best[0].name != current.name and best[1] < current_hourly:
            target_name, target_hourly_or_none = best[0].name, best[1]
            fallback = (
                f"; if it must stay on, {target_name} saves ${(current_hourly - best[1]) * HOURS_PER_MONTH:,.2f}/month"
            )
        return Sizing(
            Action.SHUTDOWN,
            f"idle: P95 CPU {stats.cpu:.1f}% < {t.idle_cpu_p95_percent:g}%: shut down{fallback}",
            target=target_name,
            current_hourly=current_hourly,
            target_hourly=target_hourly_or_none,
            stats=detail,
        )
    if best is None:
        reason = "no catalogue size fits the usage and capabilities"
        if current_misfit:
            reason += f" (current: {current_misfit})"
        return Sizing(Action.NONE, reason, current_hourly=current_hourly, stats=detail)
    target, target_hourly = best
    if target.name == current.name:
        return Sizing(Action.NONE, "already the cheapest size that fits", current_hourly=current_hourly, stats=detail)
    if current_misfit is not None and target_hourly >= current_hourly:
        return Sizing(
            Action.RESIZE,
            f"undersized ({current_misfit} on {current.name}): {target.name} is the cheapest fit",
            target=target.name,
            current_hourly=current_hourly,
            target_hourly=target_hourly,
            undersized=True,
            stats=detail,
        )
    if current_misfit is None:
        cut = (current_hourly - target_hourly) / current_hourly
        if cut < t.min_saving_fraction:
            return Sizing(
                Action.NONE,
                f"{target.name} would cut the price only {100 * cut:.1f}% "
                f"(< {100 * t.min_saving_fraction:g}%): "
                "keeping the current size",
                current_hourly=current_hourly,
                stats=detail,
            )
    age = _last_resize_age_days(vm, now)
    if age is not None and age < t.resize_cooldown_days:
        return Sizing(
            Action.NONE,
            f"resized {age:.1f} days ago (cooldown {t.resize_cooldown_days:g} days): keeping {current.name}",
            current_hourly=current_hourly,
            stats=detail,
        )
    mem_text = "memory unknown" if stats.memory is None else f"memory {stats.memory:.0f}%"
    burst = " (burstable)" if target.burstable else ""
    return Sizing(
        Action.RESIZE,
        f"P95 CPU {stats.cpu:.0f}%, {mem_text} of {current.name}: {target.name}{burst} is the cheapest fit",
        target=target.name,
        current_hourly=current_hourly,
        target_hourly=target_hourly,
        stats=detail,
    )
