"""The demand the backtest replays: a checked 1-minute series, from a CSV, a bundled trace, Prometheus or the
scaler's observe-mode records.

Conventions. ``values[i]`` is the demand (a rate: requests per minute, per second, CPU...) during the minute
``[start + 60 i, start + 60 (i + 1))``. A minute's value is known once the minute is over, so the value a
scaler observes at time ``t`` is the one of the last complete minute (:meth:`DemandTrace.observed_at`).

Bad input: non-numeric or negative values and duplicate timestamps are errors; out-of-order rows are sorted,
gaps up to 15 minutes are filled by linear interpolation, data coarser than a minute are linearly
interpolated to 1 minute and finer data averaged per minute. Every repair is listed in ``repairs`` and printed
with the results. A longer gap is an error naming where it is and the clean stretches around it.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import IO

import numpy as np
import numpy.typing as npt
import pandas as pd  # type: ignore[import-untyped]

from forecasting.series import (
    PreparationPolicy,
    PreparedSeries,
    SeriesQuality,
    format_duration,
    format_instant,
    prepare,
    samples_from_csv,
)

FloatArray = npt.NDArray[np.float64]

MINUTE_S = 60.0
MAX_FILL_GAP_S = 900.0


class TraceError(ValueError):
    """The input cannot be replayed as it is; the message says what is wrong and the accepted form."""


@dataclass(frozen=True, slots=True)
class DemandTrace:
    name: str
    start: float
    """Epoch seconds of ``values[0]``, a multiple of 60."""
    values: FloatArray
    """Demand per minute, finite and >= 0."""
    source_step_s: float
    """Step of the data before conversion to 1 minute."""
    repairs: tuple[str, ...] = ()
    unit: str = ""

    @property
    def end(self) -> float:
        """Epoch seconds just after the last minute."""
        return self.start + len(self.values) * MINUTE_S

    def __len__(self) -> int:
        return len(self.values)

    def _index(self, times: FloatArray) -> npt.NDArray[np.int64]:
        return np.floor((np.asarray(times, dtype=np.float64) - self.start) / MINUTE_S + 1e-9).astype(np.int64)

    def demand_at(self, times: FloatArray) -> FloatArray:
        """Demand at each time (the value of the minute containing it)."""
        idx = self._index(times)
        if len(idx) and (idx.min() < 0 or idx.max() >= len(self.values)):
            raise ValueError("demand asked outside the trace")
        return self.values[idx]

    def observed_at(self, times: FloatArray) -> FloatArray:
        """What a scaler observes at each time: the demand of the last complete minute."""
        idx = self._index(times) - 1
        if len(idx) and (idx.min() < 0 or idx.max() >= len(self.values)):
            raise ValueError("observation asked outside the trace")
        return self.values[idx]

    def series(self) -> PreparedSeries:
        n = len(self.values)
        quality = SeriesQuality(
            expected_points=n, present_points=n, filled_points=0, longest_gap_s=0.0, longest_gap_start=None
        )
        return PreparedSeries(
            start=self.start,
            step_s=MINUTE_S,
            values=self.values,
            quality=quality,
            observed=np.ones(n, dtype=bool),
        )

    def window(self, start: float | None, end: float | None) -> DemandTrace:
        """The minutes in ``[start, end)``."""
        i = 0 if start is None else max(0, math.ceil((start - self.start) / MINUTE_S - 1e-9))
        j = len(self.values) if end is None else min(len(self.values), math.floor((end - self.start) / MINUTE_S))
        if j - i < 2:
            raise TraceError(
                f"window [{_fmt(start)}, {_fmt(end)}] holds {max(0, j - i)} minutes of the trace "
                f"[{format_instant(self.start)}, {format_instant(self.end)}]"
            )
        return replace(self, start=self.start + i * MINUTE_S, values=self.values[i:j])

    def with_repairs(self, *more: str) -> DemandTrace:
        return replace(self, repairs=(*self.repairs, *more))


def _fmt(ts: float | None) -> str:
    return "-" if ts is None else format_instant(ts)


def _infer_step(ts: FloatArray, what: str) -> float:
    diffs = np.diff(ts)
    diffs = diffs[diffs > 0]
    if len(diffs) == 0:
        raise TraceError(f"{what} has fewer than two distinct timestamps: at least two are needed")
    return float(np.median(diffs))


def from_samples(
    name: str,
    timestamps: FloatArray,
    values: FloatArray,
    *,
    step_s: float | None = None,
    start: float | None = None,
    end: float | None = None,
    what: str = "the trace",
    unit: str = "",
    upsample: str = "interpolate",
) -> DemandTrace:
    """Check raw samples and turn them into a 1-minute :class:`DemandTrace` (see the module docs).

    Data coarser than a minute are ``"interpolate"``d linearly between samples or ``"hold"``: each sample's
    value held for the minutes of its step (demand jumps at every sample).
    """
    if upsample not in ("interpolate", "hold"):
        raise TraceError(f"upsample must be 'interpolate' or 'hold', got {upsample!r}")
    ts = np.asarray(timestamps, dtype=np.float64)
    vs = np.asarray(values, dtype=np.float64)
    if len(ts) != len(vs):
        raise TraceError(f"{what}: {len(ts)} timestamps but {len(vs)} values")
    if len(ts) == 0:
        raise TraceError(f"{what} is empty: expected rows of timestamp,value")
    if not np.all(np.isfinite(ts)):
        row = int(np.flatnonzero(~np.isfinite(ts))[0])
        raise TraceError(f"{what}: row {row} has no valid timestamp (expected ISO 8601 or epoch seconds)")
    repairs: list[str] = []
    order = np.argsort(ts, kind="stable")
    if np.any(np.diff(ts) < 0):
        moved = int(np.count_nonzero(order != np.arange(len(ts))))
        repairs.append(f"{moved} rows were out of time order: sorted by timestamp")
        ts, vs = ts[order], vs[order]
    if start is not None or end is not None:
        keep = np.ones(len(ts), dtype=bool)
        if start is not None:
            keep &= ts >= start
        if end is not None:
            keep &= ts <= end
        ts, vs, order = ts[keep], vs[keep], order[keep]
        if len(ts) < 2:
            raise TraceError(f"{what} has fewer than two samples in [{_fmt(start)}, {_fmt(end)}]")
    dup = np.flatnonzero(np.diff(ts) == 0)
    if len(dup):
        i = int(order[dup[0]])
        j = int(order[dup[0] + 1])
        raise TraceError(
            f"{what}: timestamp {format_instant(float(ts[dup[0]]))} appears more than once "
            f"(data rows {i + 1} and {j + 1}; "
            f"{len(dup)} duplicates in all): each time must appear once. A local-time export across a "
            "daylight-saving change does this: export with a UTC offset or epoch seconds"
        )
    negative = np.flatnonzero(vs < 0)
    if len(negative):
        row = int(order[negative[0]])
        raise TraceError(
            f"{what}: data row {row + 1} ({format_instant(float(ts[negative[0]]))}) has the negative value "
            f"{vs[negative[0]]:g} ({len(negative)} negative values in all): demand must be >= 0"
        )
    step = step_s if step_s is not None else _infer_step(ts, what)
    if not (math.isfinite(step) and step > 0):
        raise TraceError(f"{what}: step must be > 0 seconds, got {step}")
    grid_step = MINUTE_S if step <= MINUTE_S else step
    policy = PreparationPolicy(min_completeness=0.0, max_fill_gap_s=MAX_FILL_GAP_S, min_history_s=0.0)
    prepared = prepare(ts, vs, grid_step, policy=policy, check=False)
    missing = ~np.isfinite(prepared.values)
    if np.any(missing):
        q = prepared.quality
        gap_start = q.longest_gap_start if q.longest_gap_start is not None else prepared.start
        raise TraceError(
            f"{what} has a gap of {format_duration(q.longest_gap_s)} from {format_instant(gap_start)} "
            f"(gaps up to {format_duration(MAX_FILL_GAP_S)} are filled, longer ones are not); "
            f"choose a window without it with --start/--end. Clean stretches: "
            + ", ".join(f"{format_instant(a)} to {format_instant(b)}" for a, b in _clean_stretches(prepared))
        )
    filled = prepared.quality.filled_points
    if filled:
        repairs.append(
            f"{filled} missing {format_duration(grid_step)} points filled by linear interpolation "
            f"(longest gap {format_duration(prepared.quality.longest_gap_s)})"
        )
    if step < MINUTE_S:
        repairs.append(f"{format_duration(step)} samples averaged per minute")
    if grid_step > MINUTE_S:
        grid_ts = prepared.timestamps()
        first = math.ceil(grid_ts[0] / MINUTE_S) * MINUTE_S
        if upsample == "hold":
            minutes = np.arange(first, grid_ts[-1] + grid_step - 1e-6, MINUTE_S)
            idx = np.floor((minutes - grid_ts[0]) / grid_step + 1e-9).astype(np.int64)
            minute_values = prepared.values[idx]
            repairs.append(f"{format_duration(grid_step)} values held for each minute of their step")
        else:
            minutes = np.arange(first, grid_ts[-1] + 1e-6, MINUTE_S)
            minute_values = np.interp(minutes, grid_ts, prepared.values)
            repairs.append(f"{format_duration(grid_step)} values linearly interpolated to 1 minute")
        start_out, values_out = float(minutes[0]), np.asarray(minute_values, dtype=np.float64)
    else:
        start_out, values_out = prepared.start, np.asarray(prepared.values, dtype=np.float64)
    if len(values_out) < 2:
        raise TraceError(f"{what} spans less than two minutes")
    return DemandTrace(
        name=name,
        start=start_out,
        values=values_out,
        source_step_s=float(grid_step),
        repairs=tuple(repairs),
        unit=unit,
    )


def _clean_stretches(series: PreparedSeries) -> list[tuple[float, float]]:
    ok = np.isfinite(series.values)
    edges = np.diff(np.concatenate(([0], ok.astype(np.int8), [0])))
    starts = np.flatnonzero(edges == 1)
    ends = np.flatnonzero(edges == -1) - 1
    spans = sorted(zip(starts, ends, strict=True), key=lambda p: p[1] - p[0], reverse=True)[:3]
    return [(series.start + a * series.step_s, series.start + b * series.step_s) for a, b in sorted(spans)]


def from_csv(
    path: str | os.PathLike[str] | IO[str],
    *,
    start: float | None = None,
    end: float | None = None,
    step_s: float | None = None,
    upsample: str = "interpolate",
) -> DemandTrace:
    """A CSV of ``timestamp,value`` (ISO 8601 with or without offset, or epoch seconds; header row)."""
    what = f"CSV {os.fspath(path)!r}" if isinstance(path, str | os.PathLike) else "the CSV"
    try:
        ts, vs = samples_from_csv(path)
    except FileNotFoundError:
        raise TraceError(f"{what} does not exist") from None
    except (ValueError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise TraceError(f"{what}: {exc} (expected a header row and rows of timestamp,value)") from exc
    name = os.path.basename(os.fspath(path)) if isinstance(path, str | os.PathLike) else "csv"
    return from_samples(name, ts, vs, step_s=step_s, start=start, end=end, what=what, upsample=upsample)


def from_bundled(
    name: str, *, start: float | None = None, end: float | None = None, upsample: str = "interpolate"
) -> DemandTrace:
    """A trace bundled with the forecasting library. Without a window, the last stretch without long gaps."""
    from forecasting.traces import clean_segments, load_trace_samples, trace_info

    try:
        info = trace_info(name)
    except ValueError as exc:
        raise TraceError(str(exc)) from None
    ts, vs = load_trace_samples(name)
    repairs: list[str] = []
    if start is None and end is None:
        segments = clean_segments(name, min_days=2.0, max_gap_s=MAX_FILL_GAP_S)
        full = (float(np.nanmin(ts)), float(np.nanmax(ts)))
        if segments and segments[-1] != full:
            start, end = segments[-1]
            repairs.append(
                f"{name} has long gaps: using its last clean stretch {format_instant(start)} to "
                f"{format_instant(end)} (choose another with --start/--end)"
            )
    trace = from_samples(
        name,
        np.array(ts),
        np.array(vs),
        step_s=info.step_s,
        start=start,
        end=end,
        what=f"trace {name!r}",
        unit=info.unit,
        upsample=upsample,
    )
    return trace.with_repairs(*repairs) if repairs else trace


def from_prometheus(
    fetch_range: Callable[[str, float, float, float], tuple[FloatArray, FloatArray]],
    query: str,
    *,
    start: float,
    end: float,
    step_s: float,
) -> DemandTrace:
    """The series of ``query`` over ``[start, end]`` at ``step_s``.

    Prometheus stamps a sample at the end of the window it measures; the trace convention is the start of
    the minute, so samples are moved back by one step.
    """
    ts, vs = fetch_range(query, start, end, step_s)
    if len(ts) == 0:
        raise TraceError(f"Prometheus query {query!r} returned no data in [{_fmt(start)}, {_fmt(end)}]")
    return from_samples("prometheus", np.asarray(ts) - step_s, np.asarray(vs), step_s=step_s, what=f"query {query!r}")


RECORDS_COLUMNS = ("timestamp", "observed", "served", "predictive")


@dataclass(frozen=True, slots=True)
class RecordedPredictive:
    """What the scaler in observe mode said predictive mode would have served, as a step function of time."""

    timestamps: FloatArray
    values: FloatArray

    def at(self, times: FloatArray) -> FloatArray:
        """The value of the latest record at or before each time (the first record's before it)."""
        idx = np.searchsorted(self.timestamps, times, side="right") - 1
        return self.values[np.clip(idx, 0, len(self.values) - 1)]


def from_records(
    path: str | os.PathLike[str],
    *,
    start: float | None = None,
    end: float | None = None,
) -> tuple[DemandTrace, RecordedPredictive]:
    """The observe-mode records of one ScaledObject: observed values as demand, the predictive column as the
    predictive strategy's metric. A record at ``ts`` carries the rate of the step ending at ``ts``."""
    what = f"records {os.fspath(path)!r}"
    try:
        frame = pd.read_csv(path)
    except FileNotFoundError:
        raise TraceError(f"{what} does not exist") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise TraceError(f"{what}: {exc}") from exc
    columns = [str(c).strip() for c in frame.columns]
    missing = [c for c in RECORDS_COLUMNS if c not in columns]
    if missing:
        raise TraceError(
            f"{what} lacks column(s) {', '.join(missing)}: expected the header {','.join(RECORDS_COLUMNS)} "
            "(the files the scaler writes in observe mode)"
        )
    frame.columns = columns
    ts = _epoch_column(frame["timestamp"], what)
    observed = _number_column(frame["observed"], "observed", what)
    predictive = _number_column(frame["predictive"], "predictive", what)
    step = _infer_step(np.sort(ts), what)
    trace = from_samples(
        os.path.basename(os.fspath(path)), ts - step, observed, step_s=step, start=start, end=end, what=what
    )
    order = np.argsort(ts, kind="stable")
    ok = np.isfinite(predictive[order])
    recorded = RecordedPredictive(timestamps=ts[order][ok], values=np.maximum(predictive[order][ok], 0.0))
    if len(recorded.timestamps) == 0:
        raise TraceError(f"{what}: the predictive column has no numbers")
    return trace, recorded


def _epoch_column(column: pd.Series, what: str) -> FloatArray:
    numeric = pd.to_numeric(column, errors="coerce")
    if bool(numeric.notna().all()):
        return np.asarray(numeric.to_numpy(dtype=np.float64), dtype=np.float64)
    try:
        when = pd.to_datetime(column, utc=True, format="ISO8601")
    except (ValueError, TypeError) as exc:
        raise TraceError(f"{what}: timestamp column is neither epoch seconds nor ISO 8601 ({exc})") from exc
    seconds = (when - pd.Timestamp(0, tz="UTC")) / pd.Timedelta(seconds=1)
    return np.asarray(seconds.to_numpy(dtype=np.float64), dtype=np.float64)


def _number_column(column: pd.Series, name: str, what: str) -> FloatArray:
    converted = pd.to_numeric(column, errors="coerce")
    bad = converted.isna() & column.notna()
    if bool(bad.any()):
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise TraceError(f"{what}: column {name!r} row {row} is {column.iloc[row]!r}, not a number")
    return np.asarray(converted.to_numpy(dtype=np.float64, na_value=np.nan), dtype=np.float64)


__all__ = [
    "MINUTE_S",
    "RECORDS_COLUMNS",
    "DemandTrace",
    "RecordedPredictive",
    "TraceError",
    "from_bundled",
    "from_csv",
    "from_prometheus",
    "from_records",
    "from_samples",
]
