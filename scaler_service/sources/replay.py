"""ReplaySource: plays a real trace against the wall clock, so the scaler serves real forecasts anywhere.

A query names a bundled trace (``nasa-http-1995``, ``nyc-taxi``, ``azure-2019-cpu``) or the path of a CSV file
``timestamp,value`` (ISO 8601 times or epoch seconds; a header row; ``.csv`` or ``.csv.gz``). Relative paths
are resolved against ``traces_dir`` (default: the working directory).

Options after ``?`` derive variants of a trace, so one trace can stand for many workloads:
``scale`` multiplies the values (default 1) and ``shift`` delays the trace by a duration (``90s``, ``30m``,
``2h``, ``1d`` or plain seconds; default 0), e.g. ``nasa-http-1995?scale=0.5&shift=2h``.

How a trace is played:

- Its longest clean stretch is used (no gap longer than 15 min beyond one step; NASA has two outages), cut to
  whole weeks from its first sample: a *loop* of N weeks. A stretch shorter than a week is cut to whole days
  (time of day kept, weekday not); shorter than a day is refused.
- The value at wall time ``t`` is the trace value at the trace time with the same weekday and time of day
  (UTC): ``loop_start + ((t - loop_start) mod loop_length)``. The loop repeats forever, in both directions.
- Between trace points the value is held (a 30-min taxi point holds for 30 min); a short gap inside the clean
  stretch holds the last value before it.
- ``fetch_range`` returns the replayed values on the grid ``start, start + step_s, ...`` up to
  ``min(end, clock())``: history only, nothing from the future. ``fetch_latest(query, now)`` returns
  ``(now, value at now)``, like a Prometheus instant query that reports its evaluation time.
"""

from __future__ import annotations

import math
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl

import numpy as np

from forecasting.series import DAY_S, WEEK_S, FloatArray, samples_from_csv
from forecasting.traces import TRACES, load_trace_samples, trace_info
from scaler_service.sources.base import QueryError, Samples

MAX_FILL_GAP_S = 900.0
"""Longest gap (beyond one step) a clean stretch may hold; the same default as the forecasting library's."""

MAX_POINTS_PER_RANGE = 2_000_000
"""A guard against a range that would build an absurd array (e.g. a 1 s step over a year)."""


_DURATION_RE = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*(s|m|h|d)?\s*$")
_UNIT_S = {None: 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86_400.0}


@dataclass(frozen=True, slots=True)
class ReplayQuery:
    """A parsed replay query: the trace (name or CSV path) and its variant options."""

    trace: str
    scale: float = 1.0
    shift_s: float = 0.0


def parse_query(query: str) -> ReplayQuery:
    trace, _, options = query.strip().partition("?")
    scale, shift = 1.0, 0.0
    accepted = "options are scale=<number> and shift=<duration like 90s, 30m, 2h, 1d>"
    try:
        pairs = parse_qsl(options, keep_blank_values=True, strict_parsing=True) if options else []
    except ValueError:
        raise QueryError(f"replay query {query!r}: cannot read the options after '?'; {accepted}") from None
    for key, value in pairs:
        if key == "scale":
            try:
                scale = float(value)
            except ValueError:
                scale = math.nan
            if not (math.isfinite(scale) and scale >= 0):
                raise QueryError(f"replay query {query!r}: scale={value!r} must be a number >= 0")
        elif key == "shift":
            match = _DURATION_RE.match(value)
            if match is None:
                raise QueryError(f"replay query {query!r}: shift={value!r} is not a duration like 90s, 30m, 2h, 1d")
            shift = float(match.group(1)) * _UNIT_S[match.group(2)]
        else:
            raise QueryError(f"replay query {query!r}: unknown option {key!r}; {accepted}")
    return ReplayQuery(trace=trace.strip(), scale=scale, shift_s=shift)


@dataclass(frozen=True, slots=True)
class ReplayLoop:
    """One period of a trace on a grid: ``values[i]`` holds on [start + i*step, start + (i+1)*step)."""

    source: str
    start: float
    step_s: float
    values: FloatArray
    period_s: float

    def value_at(self, wall_times: FloatArray) -> FloatArray:
        phase = np.mod(wall_times - self.start, self.period_s)
        index = np.minimum((phase // self.step_s).astype(np.int64), len(self.values) - 1)
        result: FloatArray = self.values[index]
        return result

    def trace_time_at(self, wall_time: float) -> float:
        """The trace time replayed at ``wall_time`` (same weekday and time of day)."""
        return self.start + math.fmod(wall_time - self.start, self.period_s) % self.period_s


def _infer_step(timestamps: FloatArray) -> float:
    spacing = np.diff(np.unique(timestamps))
    if len(spacing) == 0:
        raise ValueError("fewer than two distinct timestamps")
    return float(np.median(spacing))


def build_loop(source: str, timestamps: FloatArray, values: FloatArray, step_s: float) -> ReplayLoop:
    """The replay loop of a raw trace: its longest clean stretch, cut to whole weeks (or whole days)."""
    present = np.isfinite(values) & np.isfinite(timestamps)
    ts = np.asarray(timestamps[present], dtype=np.float64)
    vs = np.asarray(values[present], dtype=np.float64)
    order = np.argsort(ts, kind="stable")
    ts, vs = ts[order], vs[order]
    if len(ts) < 2:
        raise QueryError(f"trace {source}: fewer than two numeric samples, nothing to replay")
    breaks = np.flatnonzero(np.diff(ts) > MAX_FILL_GAP_S + step_s * (1 + 1e-9))
    starts = np.concatenate(([0], breaks + 1))
    ends = np.concatenate((breaks, [len(ts) - 1]))
    spans = ts[ends] - ts[starts] + step_s
    best = int(np.argmax(spans))
    first, last, span = int(starts[best]), int(ends[best]), float(spans[best])
    if span >= WEEK_S:
        period = math.floor(span / WEEK_S + 1e-9) * WEEK_S
    elif span >= DAY_S:
        period = math.floor(span / DAY_S + 1e-9) * DAY_S
    else:
        raise QueryError(
            f"trace {source}: its longest stretch without a gap over {MAX_FILL_GAP_S / 60:.0f} min is "
            f"{span / 3600:.1f} h; replay needs at least 1 day (1 week to keep weekdays)"
        )
    loop_start = float(ts[first])
    n_points = max(1, math.floor(period / step_s + 1e-9))
    grid = loop_start + step_s * np.arange(n_points, dtype=np.float64)
    stretch_ts, stretch_vs = ts[first : last + 1], vs[first : last + 1]
    # Step-hold: each grid point takes the newest sample at or before it.
    held = np.searchsorted(stretch_ts, grid + 1e-6, side="right") - 1
    loop_values = np.asarray(stretch_vs[np.maximum(held, 0)], dtype=np.float64)
    loop_values.setflags(write=False)
    return ReplayLoop(source=source, start=loop_start, step_s=step_s, values=loop_values, period_s=period)


class ReplaySource:
    """A :class:`~scaler_service.sources.base.DataSource` replaying bundled traces or CSV files."""

    def __init__(self, clock: Callable[[], float] = time.time, traces_dir: Path | None = None) -> None:
        self._clock = clock
        self._traces_dir = traces_dir
        self._loops: dict[str, tuple[float, ReplayLoop]] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"ReplaySource(traces_dir={self._traces_dir!r})"

    def loop(self, query: str) -> ReplayLoop:
        """The replay loop of the trace a query names, without options (cached; a CSV file is re-read when
        its mtime changes)."""
        name = parse_query(query).trace
        if name in TRACES:
            key, version = name, 0.0
        else:
            path = self._path_of(name)
            key = str(path)
            try:
                version = path.stat().st_mtime
            except OSError as error:
                raise QueryError(f"replay query {name!r}: cannot read {path}: {error.strerror}") from None
        with self._lock:
            cached = self._loops.get(key)
        if cached is not None and cached[0] == version:
            return cached[1]
        built = self._build(name, key)
        with self._lock:
            self._loops[key] = (version, built)
        return built

    def _path_of(self, name: str) -> Path:
        looks_like_path = "/" in name or name.endswith((".csv", ".csv.gz"))
        if not looks_like_path:
            raise QueryError(
                f"replay query {name!r} is not a bundled trace ({', '.join(sorted(TRACES))}) "
                "nor a CSV path (a file ending in .csv or .csv.gz with columns timestamp,value)"
            )
        path = Path(name).expanduser()
        if not path.is_absolute() and self._traces_dir is not None:
            path = self._traces_dir / path
        return path

    def _build(self, name: str, key: str) -> ReplayLoop:
        if name in TRACES:
            ts, vs = load_trace_samples(name)
            return build_loop(name, np.asarray(ts), np.asarray(vs), trace_info(name).step_s)
        try:
            ts, vs = samples_from_csv(key)
            step = _infer_step(ts)
        except (ValueError, OSError) as error:
            raise QueryError(
                f"replay CSV {key}: {error} (expected columns timestamp,value with ISO 8601 or epoch-second times)"
            ) from None
        return build_loop(key, ts, vs, step)

    def fetch_range(self, query: str, start: float, end: float, step_s: float) -> Samples:
        if not (math.isfinite(start) and math.isfinite(end)) or end < start:
            raise ValueError(f"range [{start}, {end}] is empty or not finite")
        if not step_s > 0:
            raise ValueError(f"step_s={step_s}: must be > 0")
        parsed = parse_query(query)
        loop = self.loop(parsed.trace)
        last = min(end, self._clock())
        if last < start:
            return Samples(timestamps=np.empty(0, dtype=np.float64), values=np.empty(0, dtype=np.float64))
        n_points = math.floor((last - start) / step_s + 1e-9) + 1
        if n_points > MAX_POINTS_PER_RANGE:
            raise ValueError(f"range of {n_points} points at step {step_s} s is too large")
        timestamps = start + step_s * np.arange(n_points, dtype=np.float64)
        values = loop.value_at(timestamps - parsed.shift_s) * parsed.scale
        return Samples(timestamps=timestamps, values=values)

    def fetch_latest(self, query: str, now: float) -> tuple[float, float] | None:
        parsed = parse_query(query)
        loop = self.loop(parsed.trace)
        value = loop.value_at(np.array([now - parsed.shift_s], dtype=np.float64))[0] * parsed.scale
        return now, float(value)
