"""One VM's raw samples checked and repaired by stated rules before they are gridded (pure, no I/O).

The rules (each repair is said in the VM's row; each refusal skips the VM with the reason, never the run):

- A cell that is not a number, or a timestamp that is not a time: the VM is refused (first bad row named).
- Percentages must lie in 0-100. Values in (100, :data:`OVERSHOOT_PERCENT`] are clipped to 100 (utilisation
  counters overshoot slightly when a sample interval is stretched: the bundled Bitbrains trace reaches 105.6 %,
  its source 106.6 %); anything else is refused.
- Samples dated after ``not_after`` (the wall clock plus a little skew) are refused: a clock or unit error.
- Exact duplicates (same timestamp, same values) are dropped.
- Conflicting duplicates (same timestamp, different values): when at most :data:`MAX_CONFLICT_FRACTION` of the
  timestamps conflict, the larger value is kept (sizing then errs towards the bigger size); more than that
  means two series share one name (e.g. two VMs, or two exporters), and the VM is refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]

OVERSHOOT_PERCENT = 110.0
MAX_CONFLICT_FRACTION = 0.01


@dataclass(frozen=True, slots=True)
class CleanSamples:
    """Sorted, one sample per timestamp, values in [0, 100] (memory NaN where not measured)."""

    timestamps: FloatArray
    cpu_percent: FloatArray
    memory_percent: FloatArray
    notes: tuple[str, ...] = ()
    """The repairs made, for the row's reason."""


@dataclass(frozen=True, slots=True)
class RefusedSamples:
    reason: str


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _range_check(values: FloatArray, timestamps: FloatArray, column: str, notes: list[str]) -> str | None:
    finite = np.isfinite(values)
    bad = finite & ((values < 0) | (values > OVERSHOOT_PERCENT))
    if np.any(bad):
        i = int(np.flatnonzero(bad)[0])
        count = int(np.count_nonzero(bad))
        more = f" (and {count - 1} more)" if count > 1 else ""
        return (
            f"{column} {values[i]:g} at {_when(float(timestamps[i]))} is outside 0-100{more}; "
            f"values up to {OVERSHOOT_PERCENT:g} are clipped to 100 as counter overshoot, others refused"
        )
    over = finite & (values > 100.0)
    if np.any(over):
        notes.append(f"{int(np.count_nonzero(over))} {column} samples in (100, {OVERSHOOT_PERCENT:g}] clipped to 100")
        values[over] = 100.0
    return None


def clean_samples(
    timestamps: FloatArray,
    cpu_percent: FloatArray,
    memory_percent: FloatArray,
    *,
    not_after: float | None = None,
    problems: tuple[str, ...] = (),
) -> CleanSamples | RefusedSamples:
    """Apply the module's rules to one VM's raw samples (any order). ``problems`` are parse-level refusals
    already found for this VM (bad cells, with their row)."""
    if problems:
        more = f" (and {len(problems) - 1} more bad rows)" if len(problems) > 1 else ""
        return RefusedSamples(f"{problems[0]}{more}")
    ts = np.asarray(timestamps, dtype=np.float64)
    cpu = np.array(cpu_percent, dtype=np.float64)
    mem = np.array(memory_percent, dtype=np.float64)
    if not np.all(np.isfinite(ts)):
        return RefusedSamples("a timestamp is not a finite number of epoch seconds")
    if not np.all(np.isfinite(cpu)):
        return RefusedSamples("cpu_percent is empty or not finite in some samples; expected a percentage 0-100")
    if not_after is not None and len(ts) and float(ts.max()) > not_after:
        future = int(np.count_nonzero(ts > not_after))
        return RefusedSamples(
            f"{future} samples dated after the current time (latest {_when(float(ts.max()))}): "
            "a clock or unit error (milliseconds?)"
        )
    notes: list[str] = []
    for values, column in ((cpu, "cpu_percent"), (mem, "memory_percent")):
        refusal = _range_check(values, ts, column, notes)
        if refusal is not None:
            return RefusedSamples(refusal)
    order = np.argsort(ts, kind="stable")
    ts, cpu, mem = ts[order], cpu[order], mem[order]
    if len(ts) > 1:
        same_as_next = ts[1:] == ts[:-1]
        if np.any(same_as_next):
            ts, cpu, mem, refusal = _merge_duplicates(ts, cpu, mem, notes)
            if refusal is not None:
                return RefusedSamples(refusal)
    return CleanSamples(ts, cpu, mem, tuple(notes))


def _merge_duplicates(
    ts: FloatArray, cpu: FloatArray, mem: FloatArray, notes: list[str]
) -> tuple[FloatArray, FloatArray, FloatArray, str | None]:
    """Sorted input with repeated timestamps -> one sample per timestamp, by the module's rules."""
    starts = np.flatnonzero(np.concatenate(([True], ts[1:] != ts[:-1])))
    unique_ts = ts[starts]
    cpu_max = np.maximum.reduceat(cpu, starts)
    cpu_min = np.minimum.reduceat(cpu, starts)
    mem_filled = np.where(np.isfinite(mem), mem, -1.0)
    mem_max = np.maximum.reduceat(mem_filled, starts)
    mem_min = np.minimum.reduceat(mem_filled, starts)
    conflicting = (cpu_max != cpu_min) | (mem_max != mem_min)
    duplicates = len(ts) - len(unique_ts)
    n_conflicts = int(np.count_nonzero(conflicting))
    if n_conflicts > MAX_CONFLICT_FRACTION * len(unique_ts):
        i = int(np.flatnonzero(conflicting)[0])
        return (
            ts,
            cpu,
            mem,
            f"{n_conflicts} of {len(unique_ts)} timestamps ({100 * n_conflicts / len(unique_ts):.1f}%) have "
            f"conflicting values (e.g. {_when(float(unique_ts[i]))}: cpu {cpu_min[i]:g} vs {cpu_max[i]:g}): "
            f"two series under one name? refused (up to {100 * MAX_CONFLICT_FRACTION:g}% are repaired by keeping "
            "the larger value)",
        )
    exact = duplicates - int(np.sum((np.diff(np.append(starts, len(ts))) - 1)[conflicting]))
    if exact:
        notes.append(f"{exact} exact duplicate samples dropped")
    if n_conflicts:
        notes.append(f"{n_conflicts} timestamps with conflicting values: kept the larger")
    memory = np.where(mem_max < 0, np.nan, mem_max)
    return unique_ts, cpu_max, memory, None
