"""Per-VM CPU and memory utilisation on a regular grid over the lookback, whatever the source (a CSV file, Azure
Monitor, Prometheus: see :mod:`rightsizer.sources`).

Every VM gets either a :class:`VmUsage` (grid over ``[now - lookback, now]``, completeness known) or a
:class:`NoUsage` whose reason says what is missing, e.g. ``"not enough data: 2.1 of 7 days"``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

import numpy as np

from forecasting.series import (
    PreparationPolicy,
    PreparedSeries,
    SeriesRefused,
    format_duration,
    format_instant,
    prepare,
)
from rightsizer.domain import VmInfo
from rightsizer.inputs import FloatArray, RawUsage
from rightsizer.samples import RefusedSamples, clean_samples
from rightsizer.settings import DAY_S, MetricsSettings


@dataclass(frozen=True, slots=True)
class VmUsage:
    vm: str
    cpu: PreparedSeries
    """CPU percent of the VM's current size; NaN where a gap was too long to fill."""
    memory: PreparedSeries | None
    """Memory percent; None when not measured well enough to size on (see ``memory_note``)."""
    memory_note: str = ""
    data_note: str = ""
    """Repairs made to the raw samples by :mod:`rightsizer.samples` (e.g. duplicates merged), for the row."""
    memory_measured_days: float | None = None
    """Set when memory was measured in part only (under ``min_completeness`` of the lookback, at least
    ``partial_memory_min_days`` of samples): the days' worth of samples ``memory`` rests on. Its unmeasured
    points are NaN (never filled), so statistics come from measured samples only. None: fully measured."""

    @property
    def completeness(self) -> float:
        c = self.cpu.quality.completeness
        if self.memory is not None and self.memory_measured_days is None:
            c = min(c, self.memory.quality.completeness)
        return c


@dataclass(frozen=True, slots=True)
class NoUsage:
    vm: str
    reason: str


Usage = VmUsage | NoUsage


def _grid(timestamps: FloatArray, values: FloatArray, settings: MetricsSettings, now: float) -> PreparedSeries:
    lookback_s = settings.lookback_days * DAY_S
    policy = PreparationPolicy(min_completeness=settings.min_completeness, min_history_s=0.0)
    # The grid covers the whole lookback, so data that stopped or started late count as missing.
    return prepare(
        timestamps,
        values,
        settings.step_s,
        policy=policy,
        start=now - lookback_s + settings.step_s,
        end=now,
        check=False,
    )


def _problem(series: PreparedSeries, what: str, settings: MetricsSettings) -> str | None:
    q = series.quality
    lookback_days = settings.lookback_days
    observed = series.observed if series.observed is not None else np.isfinite(series.values)
    present = np.flatnonzero(observed)
    if len(present) == 0:
        return f"no {what} data in the last {lookback_days:g} days"
    covered_days = (len(series) - present[0]) * series.step_s / DAY_S
    if covered_days < settings.min_completeness * lookback_days:
        return f"not enough data: {covered_days:.1f} of {lookback_days:g} days"
    if q.completeness < settings.min_completeness:
        gap = ""
        if q.longest_gap_start is not None:
            gap = f"; longest gap {format_duration(q.longest_gap_s)} from {format_instant(q.longest_gap_start)}"
        return (
            f"not enough data: {what} {100 * q.completeness:.1f}% complete over {lookback_days:g} days "
            f"(< {100 * settings.min_completeness:g}%{gap})"
        )
    return None


def usage_from_samples(
    vm: str,
    timestamps: FloatArray,
    cpu_percent: FloatArray,
    memory_percent: FloatArray | None,
    settings: MetricsSettings,
    now: float,
    *,
    not_after: float | None = None,
    problems: tuple[str, ...] = (),
) -> Usage:
    """Check, grid and judge one VM's samples; memory that is missing or incomplete becomes unknown, not zero.
    Whatever is wrong with the samples becomes this VM's ``NoUsage`` reason, never an exception."""
    if len(timestamps) == 0 and not problems:
        return NoUsage(vm, f"no metrics for this VM in the last {settings.lookback_days:g} days")
    memory_raw = memory_percent if memory_percent is not None else np.full(len(timestamps), np.nan)
    cleaned = clean_samples(timestamps, cpu_percent, memory_raw, not_after=not_after, problems=problems)
    if isinstance(cleaned, RefusedSamples):
        return NoUsage(vm, f"bad metrics: {cleaned.reason}")
    data_note = "; ".join(cleaned.notes)
    try:
        cpu = _grid(cleaned.timestamps, cleaned.cpu_percent, settings, now)
    except SeriesRefused:
        newest = format_instant(float(cleaned.timestamps.max()))
        return NoUsage(
            vm,
            f"no CPU data in the {settings.lookback_days:g} days before {format_instant(now)} "
            f"(this VM's samples end {newest})",
        )
    problem = _problem(cpu, "CPU", settings)
    if problem is not None:
        return NoUsage(vm, problem)
    memory: PreparedSeries | None = None
    note = "memory not measured"
    if memory_percent is not None and np.any(np.isfinite(cleaned.memory_percent)):
        try:
            mem = _grid(cleaned.timestamps, cleaned.memory_percent, settings, now)
        except SeriesRefused:
            note = f"memory unknown: no memory data in the last {settings.lookback_days:g} days"
        else:
            mem_problem = _problem(mem, "memory", settings)
            if mem_problem is None:
                memory, note = mem, ""
            else:
                partial = _partial_memory(mem, settings)
                if partial is not None:
                    memory, measured_days = partial
                    note = (
                        f"memory measured in {100 * mem.quality.completeness:.0f}% of the last "
                        f"{settings.lookback_days:g} days ({measured_days:.1f} days of samples): sized on their "
                        f"max x {1 + 1 / measured_days:.2f} for the short record"
                    )
                    return VmUsage(vm, cpu, memory, note, data_note, memory_measured_days=measured_days)
                note = mem_problem.replace("not enough data: ", "memory unknown: ")
    return VmUsage(vm, cpu, memory, note, data_note)


def _partial_memory(mem: PreparedSeries, settings: MetricsSettings) -> tuple[PreparedSeries, float] | None:
    """A memory record measured in part, as measured samples only (gaps NaN, never interpolated across), and the
    days' worth of samples it holds; None when that is under ``partial_memory_min_days``."""
    observed = mem.observed if mem.observed is not None else np.isfinite(mem.values)
    measured_days = float(np.count_nonzero(observed)) * mem.step_s / DAY_S
    if measured_days < settings.partial_memory_min_days:
        return None
    values = np.where(observed, mem.values, np.nan)
    return replace(mem, values=values), measured_days


def usage_from_raw(
    raw: Mapping[str, RawUsage],
    vms: Iterable[VmInfo],
    settings: MetricsSettings,
    now: float,
    *,
    not_after: float | None = None,
) -> dict[str, Usage]:
    """Usage per VM id; CSV rows are matched to a VM by its id, or by its name when no other VM in the
    inventory has that name (a name shared by several VMs is ambiguous: those VMs need rows keyed by id)."""
    vm_list = list(vms)
    name_count: dict[str, int] = {}
    for vm in vm_list:
        name_count[vm.name] = name_count.get(vm.name, 0) + 1
    out: dict[str, Usage] = {}
    for vm in vm_list:
        r = raw.get(vm.id)
        if r is None and vm.name in raw:
            if name_count[vm.name] > 1:
                out[vm.id] = NoUsage(
                    vm.id,
                    f"name {vm.name!r} is shared by {name_count[vm.name]} VMs in the inventory and the metrics file "
                    "has rows for that name only: ambiguous, key this VM's rows by its resource id",
                )
                continue
            r = raw[vm.name]
        if r is None:
            out[vm.id] = NoUsage(vm.id, "no metrics for this VM in the metrics file")
            continue
        out[vm.id] = usage_from_samples(
            vm.id,
            r.timestamps,
            r.cpu_percent,
            r.memory_percent,
            settings,
            now,
            not_after=not_after,
            problems=r.problems,
        )
    return out


def apply_memory_policy(usage: Usage, *, allow_cpu_only: bool) -> Usage:
    """A VM whose memory is unknown is sized on CPU alone only when allowed; otherwise a skip saying so."""
    if not isinstance(usage, VmUsage) or usage.memory is not None or allow_cpu_only:
        return usage
    note = usage.memory_note or "memory unknown"
    if not note.startswith("memory unknown"):
        note = f"memory unknown: {note}"
    return NoUsage(usage.vm, f"{note}; not sized on CPU alone (metrics.size_without_memory is off)")
