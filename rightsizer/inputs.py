"""Offline inputs: an inventory JSON file and a metrics CSV file (optionally gzipped).

Inventory: a JSON list of VMs (or ``{"vms": [...]}``), each with ``id``, ``name``, ``resource_group``,
``size`` (ARM name), ``region``, ``os`` (linux|windows), ``priority`` (Regular|Spot), ``tags`` (object of
strings) and optionally ``group``, ``scale_set``, ``zone``, ``data_disks``, ``nics``, ``uses_temp_disk``, ``healthy``,
``power_state``.

Metrics: CSV with header ``vm,timestamp,cpu_percent,memory_percent``; ``vm`` matches the inventory's ``name``
or ``id``; ``timestamp`` ISO 8601 (with zone, or UTC assumed) or epoch seconds; percentages in [0, 100]
(see :mod:`rightsizer.samples` for the rules on overshoot and duplicates); ``memory_percent`` may be empty.

A problem with the file as a whole (unreadable, too big, corrupt gzip, not UTF-8, no header, a malformed row) is
an :class:`InputError` or :class:`~rightsizer.files.FileProblem`; a bad value in one VM's rows is that VM's
problem (``RawUsage.problems``), so only that VM is skipped.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from rightsizer.domain import PowerState, Priority, VmInfo
from rightsizer.files import DEFAULT_MAX_BYTES, FileProblem, load_json, read_bytes
from rightsizer.inventory import flag_duplicate_ids
from rightsizer.prices import normalise_size_name
from rightsizer.quoting import quote_prefix, quote_value

FloatArray = npt.NDArray[np.float64]

METRICS_COLUMNS = ("vm", "timestamp", "cpu_percent", "memory_percent")
MAX_FIELD_CHARS = 1024
"""A metrics field longer than this (a VM name, a number, a timestamp) means the file is not what it claims."""
MAX_PROBLEMS_PER_VM = 5


class InputError(FileProblem):
    """Bad offline input; the message names the file, the row or VM, the field and the accepted form."""


@dataclass(frozen=True, slots=True)
class RawUsage:
    """Raw samples of one VM as read (unsorted, possibly duplicated); NaN memory where not measured."""

    vm: str
    timestamps: FloatArray
    cpu_percent: FloatArray
    memory_percent: FloatArray
    problems: tuple[str, ...] = ()
    """Bad values found in this VM's rows (each names its row); the VM is skipped with the first."""


# --- inventory -----------------------------------------------------------------------------------------

_REQUIRED = ("id", "name", "resource_group", "size", "region")


def _field(entry: Mapping[str, Any], key: str, where: str, kind: type, default: Any = None) -> Any:
    value = entry.get(key, default)
    if value is None:
        return default
    if kind is int and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
        raise InputError(f"{where}: '{key}' must be a non-negative integer, got {quote_value(value)}")
    if kind is bool and not isinstance(value, bool):
        raise InputError(f"{where}: '{key}' must be true or false, got {quote_value(value)}")
    if kind is str and not isinstance(value, str):
        raise InputError(f"{where}: '{key}' must be a string, got {quote_value(value)}")
    return value


def parse_inventory(doc: Any, *, source: str = "inventory") -> list[VmInfo]:
    """The inventory's VMs in file order. A bad entry (a missing or malformed field, an id listed twice) is kept
    as a VM with its ``problem``: a skipped row naming the entry, the field and what is accepted; only a file
    that is not a list of VMs at all is refused whole."""
    entries = doc.get("vms") if isinstance(doc, Mapping) else doc
    if not isinstance(entries, list):
        raise InputError(f"{source}: expected a JSON list of VMs (or an object with a 'vms' list)")
    vms: list[VmInfo] = []
    for i, entry in enumerate(entries):
        try:
            vms.append(_parse_vm(entry, f"{source}: VM #{i}"))
        except InputError as problem:
            vms.append(_unusable(entry, i, source, str(problem)))
    return flag_duplicate_ids(vms, source=source)


def _unusable(entry: Any, i: int, source: str, problem: str) -> VmInfo:
    """A placeholder VM for an entry that cannot be parsed, keeping what can be shown of it."""

    def text(key: str, fallback: str) -> str:
        value = entry.get(key) if isinstance(entry, Mapping) else None
        return value.strip()[:200] if isinstance(value, str) and value.strip() else fallback

    return VmInfo(
        id=text("id", f"{source}#VM-{i}"),
        name=text("name", f"VM #{i}"),
        resource_group=text("resource_group", ""),
        size=text("size", ""),
        region=text("region", "").lower(),
        problem=problem,
    )


def _parse_vm(entry: Any, where: str) -> VmInfo:
    if not isinstance(entry, Mapping):
        raise InputError(f"{where}: expected an object, got {type(entry).__name__}")
    for key in _REQUIRED:
        value = entry.get(key)
        if not isinstance(value, str) or not value.strip():
            raise InputError(f"{where}: '{key}' is required (a non-empty string), got {quote_value(value)}")
    where = f"{where} ({entry['name'][:80]})"
    os = str(entry.get("os", "linux")).lower()
    if os not in ("linux", "windows"):
        raise InputError(f"{where}: 'os' must be linux or windows, got {quote_value(entry.get('os'))}")
    priority_text = str(entry.get("priority", "Regular"))
    try:
        priority = Priority(priority_text.capitalize())
    except ValueError:
        raise InputError(f"{where}: 'priority' must be Regular or Spot, got {quote_value(priority_text)}") from None
    tags = entry.get("tags") or {}
    if not isinstance(tags, Mapping) or not all(isinstance(k, str) and isinstance(v, str) for k, v in tags.items()):
        raise InputError(f"{where}: 'tags' must be an object of string values, got {quote_value(tags)}")
    power_text = str(entry.get("power_state", "running")).lower()
    try:
        power = PowerState(power_text)
    except ValueError:
        accepted = ", ".join(p.value for p in PowerState)
        raise InputError(f"{where}: 'power_state' {quote_value(power_text)} is not one of {accepted}") from None
    return VmInfo(
        id=entry["id"],
        name=entry["name"],
        resource_group=entry["resource_group"],
        size=normalise_size_name(entry["size"]),
        region=entry["region"].lower(),
        os=os,
        priority=priority,
        tags=dict(tags),
        group=_field(entry, "group", where, str),
        zone=_field(entry, "zone", where, str),
        power_state=power,
        subscription_id=_field(entry, "subscription_id", where, str),
        scale_set=_field(entry, "scale_set", where, str),
        data_disks=_field(entry, "data_disks", where, int, 0),
        nics=_field(entry, "nics", where, int, 1),
        healthy=_field(entry, "healthy", where, bool, True),
        uses_temp_disk=_field(entry, "uses_temp_disk", where, bool, False),
    )


def load_inventory(path: Path) -> list[VmInfo]:
    return load_inventory_with_as_of(path)[0]


def load_inventory_with_as_of(path: Path, *, max_bytes: int = DEFAULT_MAX_BYTES) -> tuple[list[VmInfo], float | None]:
    """The VMs and, when the file is ``{"as_of": ISO 8601, "vms": [...]}``, the time its data end (the
    example fleet's metrics are from 2013, so its evaluation time is part of the file)."""
    doc = load_json(path, "inventory", max_bytes=max_bytes)
    as_of: float | None = None
    if isinstance(doc, Mapping) and doc.get("as_of") is not None:
        try:
            as_of = parse_timestamp(str(doc["as_of"]))
        except ValueError:
            raise InputError(
                f"{path}: 'as_of'={quote_prefix(str(doc['as_of']))} is not ISO 8601 or epoch seconds"
            ) from None
    return parse_inventory(doc, source=str(path)), as_of


# --- metrics -------------------------------------------------------------------------------------------


def parse_timestamp(text: str) -> float:
    """Epoch seconds from ``1372637004``/``1372637004.5`` or ISO 8601 (naive = UTC); ValueError otherwise."""
    t = text.strip()
    if not t.isascii() or "_" in t:
        raise ValueError(f"{quote_prefix(t)} is not an ASCII timestamp")
    try:
        value = float(t)
    except ValueError:
        pass
    else:
        if not math.isfinite(value) or value > 32_503_680_000.0:
            raise ValueError(f"{t!r} is not epoch seconds (milliseconds?)")
        return value
    dt = datetime.fromisoformat(t.replace("Z", "+00:00"))
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


def _percent(text: str, *, row: int, column: str, source: str, allow_empty: bool) -> tuple[float, str | None]:
    """The value (NaN when empty and allowed) and, for a cell that is not a number, the problem naming the row.
    The range is checked later, per VM, by :func:`rightsizer.samples.clean_samples`."""
    t = text.strip()
    if not t:
        if allow_empty:
            return math.nan, None
        return math.nan, f"{source} row {row}: '{column}' is empty; expected a percentage 0-100"
    try:
        v = float(t)
    except ValueError:
        v = math.nan
    if not math.isfinite(v) or not t.isascii() or "_" in t:
        shown = quote_prefix(t)
        return math.nan, f"{source} row {row}: '{column}'={shown} is not a number; expected a percentage 0-100"
    return v, None


def parse_metrics_rows(rows: Iterable[list[str]], *, source: str = "metrics") -> dict[str, RawUsage]:
    """Samples per VM name. A malformed row (fields missing, no VM, a field longer than
    :data:`MAX_FIELD_CHARS`) refuses the file; a bad value is recorded against its VM only."""
    it = iter(rows)
    try:
        header = next(it, None)
    except csv.Error as exc:
        raise InputError(f"{source} row 1: not CSV ({exc})") from None
    if header is None:
        raise InputError(f"{source}: empty file; expected header {','.join(METRICS_COLUMNS)}")
    cols = [h.strip().lower() for h in header]
    missing = [c for c in METRICS_COLUMNS if c not in cols]
    if missing:
        shown = quote_prefix(",".join(cols), 120)
        raise InputError(f"{source}: header {shown} lacks {', '.join(missing)}; expected {','.join(METRICS_COLUMNS)}")
    idx = {c: cols.index(c) for c in METRICS_COLUMNS}
    per_vm: dict[str, tuple[list[float], list[float], list[float], list[str]]] = {}
    row_no = 1
    while True:
        try:
            row = next(it)
        except StopIteration:
            break
        except csv.Error as exc:
            raise InputError(f"{source} row {row_no + 1}: not CSV ({exc})") from None
        row_no += 1
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) < len(cols):
            raise InputError(f"{source} row {row_no}: {len(row)} fields, expected {len(cols)} ({','.join(cols)})")
        longest = max(len(c) for c in row)
        if longest > MAX_FIELD_CHARS:
            raise InputError(
                f"{source} row {row_no}: a field of {longest} characters (at most {MAX_FIELD_CHARS} accepted)"
            )
        vm = row[idx["vm"]].strip()
        if not vm:
            raise InputError(f"{source} row {row_no}: 'vm' is empty")
        t_list, c_list, m_list, problems = per_vm.setdefault(vm, ([], [], [], []))
        try:
            ts = parse_timestamp(row[idx["timestamp"]])
        except ValueError:
            ts = math.nan
            if len(problems) < MAX_PROBLEMS_PER_VM:
                problems.append(
                    f"{source} row {row_no}: 'timestamp'={quote_prefix(row[idx['timestamp']])} is neither epoch "
                    "seconds nor ISO 8601 (e.g. 2026-11-20T13:05:00Z)"
                )
        cpu, cpu_problem = _percent(
            row[idx["cpu_percent"]], row=row_no, column="cpu_percent", source=source, allow_empty=False
        )
        mem, mem_problem = _percent(
            row[idx["memory_percent"]], row=row_no, column="memory_percent", source=source, allow_empty=True
        )
        for problem in (cpu_problem, mem_problem):
            if problem is not None and len(problems) < MAX_PROBLEMS_PER_VM:
                problems.append(problem)
        t_list.append(ts)
        c_list.append(cpu)
        m_list.append(mem)
    return {
        vm: RawUsage(
            vm,
            np.asarray(t, dtype=np.float64),
            np.asarray(c, dtype=np.float64),
            np.asarray(m, dtype=np.float64),
            tuple(problems),
        )
        for vm, (t, c, m, problems) in per_vm.items()
    }


def load_metrics_csv(path: Path, *, max_bytes: int = DEFAULT_MAX_BYTES) -> dict[str, RawUsage]:
    """Read a metrics CSV (bounded and UTF-8-checked, see :mod:`rightsizer.files`): pandas' C parser for
    well-formed files, and a row-by-row pass (which names the bad row and field) whenever anything looks wrong.
    Only the file's bytes are held, never a decoded copy of the whole text."""
    data = read_bytes(path, "metrics", max_bytes=max_bytes, utf8=True)
    try:
        fast = _load_metrics_fast(data)
    except (ValueError, KeyError, TypeError, OverflowError):
        fast = None
    if fast is not None:
        return fast
    text = io.TextIOWrapper(io.BytesIO(data), encoding="utf-8", newline="")
    return parse_metrics_rows(csv.reader(text), source=str(path))


def newest_sample(raw: Mapping[str, RawUsage], *, not_after: float = math.inf) -> float | None:
    """The latest timestamp in the file not after ``not_after`` (the default evaluation time of an offline run;
    samples dated in the future are their VM's problem, they do not move everyone's evaluation time)."""
    latest: float | None = None
    for r in raw.values():
        ts = r.timestamps[np.isfinite(r.timestamps) & (r.timestamps <= not_after)]
        if len(ts):
            latest = max(float(ts.max()), latest if latest is not None else -math.inf)
    return latest


def _load_metrics_fast(data: bytes) -> dict[str, RawUsage] | None:
    import pandas as pd

    frame = pd.read_csv(io.BytesIO(data), dtype={"vm": str}, skipinitialspace=True, encoding="utf-8")
    frame.columns = [str(c).strip().lower() for c in frame.columns]
    if any(c not in frame.columns for c in METRICS_COLUMNS) or frame["vm"].isna().any() or len(frame) == 0:
        return None
    ts_col = frame["timestamp"]
    if pd.api.types.is_numeric_dtype(ts_col.dtype):
        ts = ts_col.to_numpy(dtype=np.float64)
    else:
        parsed = pd.to_datetime(ts_col, utc=True, format="ISO8601")
        ts = parsed.astype("int64").to_numpy(dtype=np.float64) / _unit_per_second(parsed)
    cpu = frame["cpu_percent"]
    mem = frame["memory_percent"]
    if not (pd.api.types.is_numeric_dtype(cpu.dtype) and pd.api.types.is_numeric_dtype(mem.dtype)):
        return None
    cpu_v = cpu.to_numpy(dtype=np.float64)
    mem_v = mem.to_numpy(dtype=np.float64)
    # Anything odd goes to the row-by-row pass, which names the row.
    if not np.all(np.isfinite(ts)) or ts.max() > 32_503_680_000.0 or not np.all(np.isfinite(cpu_v)):
        return None
    if np.any(np.isinf(mem_v)):
        return None
    codes, uniques = pd.factorize(frame["vm"])
    names = [str(u).strip() for u in uniques]
    if any(not n or len(n) > MAX_FIELD_CHARS for n in names) or len(set(names)) != len(names):
        return None
    order = np.argsort(codes, kind="stable")
    bounds = np.flatnonzero(np.diff(codes[order])) + 1
    out: dict[str, RawUsage] = {}
    for chunk in np.split(order, bounds):
        name = names[codes[chunk[0]]]
        out[name] = RawUsage(name, ts[chunk], cpu_v[chunk], mem_v[chunk])
    return out


def _unit_per_second(parsed: Any) -> float:
    unit = str(getattr(parsed.dtype, "unit", "ns"))
    return {"s": 1.0, "ms": 1e3, "us": 1e6, "ns": 1e9}[unit]
