"""Per-VM CPU and memory utilisation on a regular grid over the lookback, from a CSV or from Prometheus.

Every VM gets either a :class:`VmUsage` (grid over ``[now - lookback, now]``, completeness known) or a
:class:`NoUsage` whose reason says what is missing, e.g. ``"not enough data: 2.1 of 7 days"``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

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

    @property
    def completeness(self) -> float:
        c = self.cpu.quality.completeness
        if self.memory is not None:
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
                note = mem_problem.replace("not enough data: ", "memory unknown: ")
    return VmUsage(vm, cpu, memory, note, data_note)


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


# --- Prometheus -------------------------------------------------------------------------------------------


class RangeQuery(Protocol):
    """The part of ``prometheus_api_client.PrometheusConnect`` used here."""

    def custom_query_range(self, query: str, start_time: Any, end_time: Any, step: str) -> list[dict[str, Any]]: ...


MAX_POINTS_PER_QUERY = 10_000
"""Prometheus refuses more than 11,000 points per series per range query; chunk below that."""


def _instance_of(vm: VmInfo, settings: MetricsSettings) -> str:
    return vm.tags.get(settings.instance_label_tag) or vm.name


def _query_samples(
    client: RangeQuery, query: str, start: float, end: float, step_s: float
) -> tuple[FloatArray, FloatArray]:
    from datetime import UTC, datetime

    ts_parts: list[FloatArray] = []
    val_parts: list[FloatArray] = []
    chunk_s = MAX_POINTS_PER_QUERY * step_s
    t0 = start
    while t0 <= end:
        t1 = min(end, t0 + chunk_s - step_s)
        result = client.custom_query_range(
            query,
            start_time=datetime.fromtimestamp(t0, UTC),
            end_time=datetime.fromtimestamp(t1, UTC),
            step=f"{int(step_s)}s",
        )
        if len(result) > 1:
            labels = "; ".join(str(s.get("metric", {})) for s in result[:3])
            raise ValueError(f"query returned {len(result)} series ({labels}); exactly one per VM is needed: {query}")
        if result:
            pairs = result[0].get("values", [])
            ts_parts.append(np.fromiter((float(p[0]) for p in pairs), dtype=np.float64, count=len(pairs)))
            val_parts.append(np.fromiter((float(p[1]) for p in pairs), dtype=np.float64, count=len(pairs)))
        t0 = t1 + step_s
    if not ts_parts:
        return np.empty(0), np.empty(0)
    return np.concatenate(ts_parts), np.concatenate(val_parts)


def usage_from_prometheus(
    client: RangeQuery, vms: Iterable[VmInfo], settings: MetricsSettings, now: float
) -> dict[str, Usage]:
    """Range-query CPU and memory per VM with the settings' templates (``{vm}`` = the VM's instance label)."""
    out: dict[str, Usage] = {}
    end = math.floor(now / settings.step_s) * settings.step_s
    start = end - settings.lookback_days * DAY_S + settings.step_s
    for vm in vms:
        instance = _instance_of(vm, settings)
        try:
            ts, cpu = _query_samples(client, settings.cpu_query.format(vm=instance), start, end, settings.step_s)
            mts, mem = _query_samples(client, settings.memory_query.format(vm=instance), start, end, settings.step_s)
        except (ValueError, OSError) as exc:
            out[vm.id] = NoUsage(vm.id, f"metrics query failed: {exc}")
            continue
        except Exception as exc:  # prometheus-api-client raises its own exception types for HTTP errors
            out[vm.id] = NoUsage(vm.id, f"metrics query failed: {type(exc).__name__}: {exc}")
            continue
        memory = _align(ts, mts, mem)
        out[vm.id] = usage_from_samples(vm.id, ts, cpu, memory, settings, now)
    return out


def _align(ts: FloatArray, other_ts: FloatArray, other_values: FloatArray) -> FloatArray:
    """``other_values`` at the timestamps ``ts`` (NaN where the other query had no point)."""
    out = np.full(len(ts), np.nan)
    if len(other_ts) == 0 or len(ts) == 0:
        return out
    index = {float(t): i for i, t in enumerate(other_ts)}
    for i, t in enumerate(ts):
        j = index.get(float(t))
        if j is not None:
            out[i] = other_values[j]
    return out
