"""Real demand traces bundled with the library, for tests, demos and benchmarks.

Provenance and the time-zone handling of each file are in ``forecasting/traces/DATA.md``. In short:

- ``nasa-http-1995``: requests per minute at the NASA KSC web server, July-August 1995. Times carry their
  ``-04:00`` offset and are converted to UTC exactly. Two stretches have no data (the July log ends on
  Jul 28 at 13:33 local; the server was down from Aug 1 14:53 to Aug 3 04:35 local).
- ``nyc-taxi``: NYC taxi passengers per 30 min, July 2014 - January 2015. The file gives no zone (NYC local
  time); the loader treats the times as UTC so that the grid stays regular across the DST change.
- ``azure-2019-cpu``: Azure 2019 cluster CPU usage per 5 min, 30 days. The file gives offsets from an
  unstated start; the loader anchors offset 0 at :data:`AZURE_2019_EPOCH` (2019-07-01T00:00Z, a Monday).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from types import MappingProxyType

import numpy as np
import pandas as pd  # type: ignore[import-untyped]

from forecasting.series import (
    DAY_S,
    DEFAULT_POLICY,
    FloatArray,
    PreparationPolicy,
    PreparedSeries,
    prepare,
)

AZURE_2019_EPOCH = 1_561_939_200.0
"""2019-07-01T00:00:00Z (a Monday): where the Azure 2019 trace's offset 0 is placed. The real start date is
not given by the source, so weekdays and dates of this trace carry no meaning beyond the weekly phase."""


TRACE_WINDOW_POLICY = PreparationPolicy(min_history_s=0.0)
"""What :func:`load_trace` checks by default: no long gap and 95% completeness, but any length (a window of
actuals to score a forecast against may be short; fitting code checks the history it needs)."""


@dataclass(frozen=True, slots=True)
class TraceInfo:
    name: str
    filename: str
    """File in ``forecasting/traces/``."""
    step_s: float
    time_column: str
    value_column: str
    time_kind: str
    """``"iso"``: ISO 8601, offset honoured, none = UTC; ``"offset"``: seconds after the Azure epoch."""
    description: str
    unit: str = ""
    """What a value counts, for axis labels (e.g. ``requests/min``)."""


TRACES: Mapping[str, TraceInfo] = MappingProxyType(
    {
        "nasa-http-1995": TraceInfo(
            name="nasa-http-1995",
            filename="nasa_http_1995_requests_per_min.csv.gz",
            step_s=60.0,
            time_column="timestamp_local",
            value_column="requests",
            time_kind="iso",
            description="NASA KSC WWW server, HTTP requests per minute, 1995-07-01..1995-08-31 (EDT)",
            unit="HTTP requests/min",
        ),
        "nyc-taxi": TraceInfo(
            name="nyc-taxi",
            filename="nab_nyc_taxi_30min.csv",
            step_s=1800.0,
            time_column="timestamp",
            value_column="value",
            time_kind="iso",
            description="NYC taxi passengers per 30 min, 2014-07-01..2015-01-31 (local time read as UTC)",
            unit="taxi passengers/30 min",
        ),
        "azure-2019-cpu": TraceInfo(
            name="azure-2019-cpu",
            filename="azure2019_dc_aggregate_cpu_mem_5min.csv.gz",
            step_s=300.0,
            time_column="t_offset_s",
            value_column="cpu_usage",
            time_kind="offset",
            description="Azure 2019 VM trace, cluster CPU usage (core-weighted sum) per 5 min, 30 days",
            unit="CPU usage (core-weighted sum)",
        ),
    }
)


def trace_info(name: str) -> TraceInfo:
    try:
        return TRACES[name]
    except KeyError:
        raise ValueError(f"unknown trace {name!r}; known traces: {', '.join(sorted(TRACES))}") from None


@functools.cache
def _load(name: str) -> tuple[FloatArray, FloatArray]:
    info = trace_info(name)
    resource = resources.files("forecasting").joinpath("traces", info.filename)
    with resource.open("rb") as fh:
        frame = pd.read_csv(
            fh,
            usecols=[info.time_column, info.value_column],
            compression="gzip" if info.filename.endswith(".gz") else None,
        )
    if info.time_kind == "offset":
        ts = AZURE_2019_EPOCH + frame[info.time_column].to_numpy(dtype=np.float64)
    else:
        when = pd.to_datetime(frame[info.time_column], utc=True, format="ISO8601")
        seconds = (when - pd.Timestamp(0, tz="UTC")) / pd.Timedelta(seconds=1)
        ts = np.asarray(seconds.to_numpy(dtype=np.float64), dtype=np.float64)
    values = np.asarray(frame[info.value_column].to_numpy(dtype=np.float64, na_value=np.nan), dtype=np.float64)
    # Shared by every caller through the cache: make accidental in-place edits fail loudly.
    ts.setflags(write=False)
    values.setflags(write=False)
    return ts, values


def load_trace_samples(name: str) -> tuple[FloatArray, FloatArray]:
    """Raw ``(timestamps, values)`` of a trace (epoch seconds UTC; NaN where the source cell is empty).

    The arrays are cached and read-only; copy them before changing them.
    """
    return _load(name)


def load_trace(
    name: str,
    *,
    start: float | None = None,
    end: float | None = None,
    policy: PreparationPolicy = TRACE_WINDOW_POLICY,
    check: bool = True,
) -> PreparedSeries:
    """The trace (or its ``[start, end]`` window, epoch seconds) as a :class:`PreparedSeries` at its own step.

    Refused like any other series when the window holds a long gap or is less than 95% complete (pick a
    window from :func:`clean_segments`); by default any length is accepted (:data:`TRACE_WINDOW_POLICY`):
    pass ``policy=PreparationPolicy()`` to also require two days of history.
    """
    info = trace_info(name)
    ts, values = _load(name)
    return prepare(ts, values, info.step_s, policy=policy, start=start, end=end, check=check)


def clean_segments(
    name: str, min_days: float = 2.0, *, max_gap_s: float = DEFAULT_POLICY.max_fill_gap_s
) -> list[tuple[float, float]]:
    """The ``(start, end)`` stretches (epoch seconds of the first and last sample) with no gap longer than
    ``max_gap_s`` and at least ``min_days`` long, in time order."""
    info = trace_info(name)
    ts, values = _load(name)
    present = np.sort(ts[np.isfinite(values)])
    if len(present) == 0:
        return []
    # A gap of k missing steps shows as a spacing of (k + 1) steps between present samples.
    breaks = np.flatnonzero(np.diff(present) > max_gap_s + info.step_s * (1 + 1e-9))
    starts = np.concatenate(([present[0]], present[breaks + 1]))
    ends = np.concatenate((present[breaks], [present[-1]]))
    min_span = min_days * DAY_S
    return [(float(s), float(e)) for s, e in zip(starts, ends, strict=True) if e - s + info.step_s >= min_span]


__all__ = [
    "AZURE_2019_EPOCH",
    "TRACES",
    "TRACE_WINDOW_POLICY",
    "TraceInfo",
    "clean_segments",
    "load_trace",
    "load_trace_samples",
    "trace_info",
]
