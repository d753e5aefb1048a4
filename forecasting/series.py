"""Series preparation: from raw samples (Prometheus, CSV, pandas) to a regular, checked series.

Every model in the library consumes a :class:`PreparedSeries`: a regular grid of float values with no
holes, plus a record of how complete the raw data were. Preparation refuses data that are too sparse or
too short with a :class:`SeriesRefused` that says how much is missing.

Rules (see :func:`prepare`):

- The grid is aligned to multiples of ``step_s`` (epoch seconds, UTC). A raw sample at ``t`` falls in the
  bucket ``floor(t / step_s) * step_s``; several samples in one bucket (duplicated or sub-step timestamps)
  are averaged.
- NaN and infinite values count as missing. Negative values are kept as they are: whether a negative
  request rate is an error is the caller's decision, not the preparation's.
- Runs of missing grid points no longer than ``max_fill_gap_s`` are filled by linear interpolation (a
  short run at the very end holds the last value). Longer gaps make :func:`prepare` refuse the series.
- A series is refused when its completeness (share of expected grid points that had a sample) is below
  ``min_completeness`` or when it spans less than ``min_history_s``.
"""

from __future__ import annotations

import math
import operator
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO, Any

import numpy as np
import numpy.typing as npt
import pandas as pd  # type: ignore[import-untyped]

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

DAY_S = 86_400.0
WEEK_S = 7 * DAY_S

MAX_GRID_POINTS = 50_000_000
"""Largest grid :func:`prepare` builds (400 MB of float64): a guard against a wrong step or window."""

# Relative tolerance when mapping a timestamp to its bucket, so that 1e9 + 60.0 computed in floating
# point (e.g. 1000000059.99999999) still lands in the bucket it names.
_BUCKET_EPS = 1e-9


@dataclass(frozen=True, slots=True)
class SeriesQuality:
    expected_points: int
    """Grid points between the first and the last raw sample (inclusive)."""
    present_points: int
    """Grid points that had at least one raw sample."""
    filled_points: int
    """Grid points filled by interpolation across short gaps."""
    longest_gap_s: float
    """Longest run of missing grid points, in seconds (0 when none is missing)."""
    longest_gap_start: float | None
    """Epoch seconds of the first missing point of the longest gap."""

    @property
    def completeness(self) -> float:
        return self.present_points / self.expected_points if self.expected_points else 0.0

    @property
    def missing_points(self) -> int:
        return self.expected_points - self.present_points


@dataclass(frozen=True, slots=True)
class PreparationPolicy:
    """When a series is good enough to fit on. All durations in seconds."""

    min_completeness: float = 0.95
    """Refuse when fewer than this share of the expected grid points had a sample."""
    max_fill_gap_s: float = 900.0
    """Longest run of missing points (in seconds of grid) filled by interpolation; longer ones are refused."""
    min_history_s: float = 2 * DAY_S
    """Shortest history accepted: two full days, so a daily cycle is seen twice."""
    weekly_history_s: float = 14 * DAY_S
    """History needed before weekly seasonality is used: two full weeks."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.min_completeness <= 1.0:
            raise ValueError(f"min_completeness must be in [0, 1], got {self.min_completeness}")
        for name in ("max_fill_gap_s", "min_history_s", "weekly_history_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number of seconds >= 0, got {value}")


DEFAULT_POLICY = PreparationPolicy()

_first = operator.itemgetter(0)
_second = operator.itemgetter(1)


class SeriesRefused(ValueError):
    """The data are too sparse or too short to fit on; the message says how much is missing."""

    def __init__(self, reason: str, message: str, *, missing_s: float, quality: SeriesQuality | None) -> None:
        super().__init__(message)
        self.reason = reason
        """One of ``"empty"``, ``"short_history"``, ``"incomplete"``, ``"gap"``."""
        self.missing_s = missing_s
        """Seconds of data missing for the series to be accepted (for ``"gap"``: the gap's length)."""
        self.quality = quality


def format_duration(seconds: float) -> str:
    """A short human duration: ``"45 s"``, ``"12 min"``, ``"5.5 h"``, ``"3.0 days"``."""
    s = abs(seconds)
    if s < 120:
        return f"{seconds:.0f} s"
    if s < 2 * 3600:
        return f"{seconds / 60:.0f} min"
    if s < 2 * DAY_S:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / DAY_S:.1f} days"


def format_instant(ts: float) -> str:
    """Epoch seconds as a compact ISO 8601 UTC string, e.g. ``"1995-07-28T17:33Z"``."""
    dt = datetime.fromtimestamp(ts, tz=UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ" if dt.second else "%Y-%m-%dT%H:%MZ")


@dataclass(frozen=True, slots=True)
class PreparedSeries:
    """A regular series: ``values[i]`` is the value at ``start + i * step_s`` (epoch seconds, UTC)."""

    start: float
    step_s: float
    values: FloatArray
    quality: SeriesQuality
    observed: BoolArray | None = None
    """``observed[i]`` is True when point ``i`` came from raw samples (not filled, not missing).
    ``None`` when unknown (a series built by hand); then finite values are taken as observed."""

    @property
    def end(self) -> float:
        """Epoch seconds of the last point."""
        return self.start + (len(self.values) - 1) * self.step_s

    @property
    def span_s(self) -> float:
        return len(self.values) * self.step_s

    def __len__(self) -> int:
        return len(self.values)

    def timestamps(self) -> FloatArray:
        return self.start + self.step_s * np.arange(len(self.values), dtype=np.float64)

    def _observed_mask(self) -> BoolArray:
        if self.observed is not None:
            return self.observed
        return np.isfinite(self.values)

    def _slice(self, i: int, j: int) -> PreparedSeries:
        values = self.values[i:j]
        observed = self._observed_mask()[i:j]
        start = self.start + i * self.step_s
        return PreparedSeries(
            start=start,
            step_s=self.step_s,
            values=values,
            quality=_quality_of(observed, values, start, self.step_s),
            observed=observed,
        )

    def tail(self, duration_s: float) -> PreparedSeries:
        """The last ``duration_s`` seconds of the series (``ceil(duration_s / step_s)`` points at most)."""
        if not duration_s > 0:
            raise ValueError(f"tail duration must be > 0 seconds, got {duration_s}")
        n = min(len(self.values), math.ceil(duration_s / self.step_s - _BUCKET_EPS))
        return self._slice(len(self.values) - n, len(self.values))

    def since_last_gap(self) -> PreparedSeries:
        """The part after the last unfilled gap (NaN points left by ``prepare(check=False)``); all of it if none."""
        missing = np.flatnonzero(~np.isfinite(self.values))
        if len(missing) == 0:
            return self
        return self._slice(int(missing[-1]) + 1, len(self.values))

    def until(self, ts: float) -> PreparedSeries:
        """The points with timestamp <= ``ts``: what a forecaster standing at ``ts`` may see."""
        n = math.floor((ts - self.start) / self.step_s + _BUCKET_EPS) + 1
        if n <= 0:
            raise ValueError(f"cut at {format_instant(ts)} is before the series starts ({format_instant(self.start)})")
        return self._slice(0, min(n, len(self.values)))

    def resample(self, step_s: float) -> PreparedSeries:
        """Mean over buckets of ``step_s`` (a whole multiple of the step) aligned to multiples of it."""
        ratio = step_s / self.step_s
        if not (step_s > 0 and ratio >= 1 and abs(ratio - round(ratio)) < 1e-9):
            raise ValueError(f"resample step {step_s} s must be a whole multiple of the series step {self.step_s} s")
        if round(ratio) == 1:
            return self
        ts = self.timestamps()
        buckets = np.floor(ts / step_s + _BUCKET_EPS).astype(np.int64)
        idx = buckets - buckets[0]
        n = int(idx[-1]) + 1 if len(idx) else 0
        finite = np.isfinite(self.values)
        sums = np.bincount(idx, weights=np.where(finite, self.values, 0.0), minlength=n)
        counts = np.bincount(idx, weights=finite.astype(np.float64), minlength=n)
        observed = np.bincount(idx, weights=self._observed_mask().astype(np.float64), minlength=n) > 0
        with np.errstate(invalid="ignore", divide="ignore"):
            values = np.where(counts > 0, sums / np.maximum(counts, 1.0), np.nan)
        start = float(buckets[0]) * step_s if len(idx) else self.start
        return PreparedSeries(
            start=start,
            step_s=float(step_s),
            values=values,
            quality=_quality_of(observed, values, start, float(step_s)),
            observed=observed,
        )

    def has_weekly_history(self, policy: PreparationPolicy = DEFAULT_POLICY) -> bool:
        """True when the series is long enough for weekly seasonality to be used."""
        return self.span_s >= policy.weekly_history_s - _BUCKET_EPS * self.step_s


# --- preparation ---------------------------------------------------------------------------------------


def _missing_runs(observed: BoolArray) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]]:
    """(start index, length) of every run of unobserved points."""
    edges = np.diff(np.concatenate(([0], (~observed).astype(np.int8), [0])))
    starts = np.flatnonzero(edges == 1)
    ends = np.flatnonzero(edges == -1)
    return starts, ends - starts


def _quality_of(observed: BoolArray, values: FloatArray, start: float, step_s: float) -> SeriesQuality:
    starts, lengths = _missing_runs(observed)
    if len(lengths):
        k = int(np.argmax(lengths))
        longest_s = float(lengths[k]) * step_s
        longest_start: float | None = start + float(starts[k]) * step_s
    else:
        longest_s, longest_start = 0.0, None
    present = int(np.count_nonzero(observed))
    filled = int(np.count_nonzero(~observed & np.isfinite(values)))
    return SeriesQuality(
        expected_points=len(observed),
        present_points=present,
        filled_points=filled,
        longest_gap_s=longest_s,
        longest_gap_start=longest_start,
    )


def _as_float_array(name: str, data: Any) -> FloatArray:
    try:
        arr = np.asarray(data, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be numbers (epoch seconds for timestamps): {exc}") from exc
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {arr.shape}")
    return arr


def _gap_text(quality: SeriesQuality) -> str:
    if quality.longest_gap_start is None:
        return "no gap"
    gap = format_duration(quality.longest_gap_s)
    return f"longest gap {gap} from {format_instant(quality.longest_gap_start)}"


def prepare(
    timestamps: Sequence[float] | FloatArray,
    values: Sequence[float] | FloatArray,
    step_s: float,
    *,
    policy: PreparationPolicy = DEFAULT_POLICY,
    start: float | None = None,
    end: float | None = None,
    check: bool = True,
) -> PreparedSeries:
    """Raw samples (any order, duplicates, NaN allowed) -> a regular series on multiples of ``step_s``.

    ``start``/``end`` (epoch seconds), when given, fix the expected grid: samples outside are dropped and
    missing data at either end count against completeness (so a scrape that stopped an hour ago shows as an
    hour-long gap). Otherwise the grid runs from the first to the last usable sample.

    With ``check=True`` (the default) the series is refused with :class:`SeriesRefused` when it is empty,
    shorter than ``policy.min_history_s``, less complete than ``policy.min_completeness`` or has a gap longer
    than ``policy.max_fill_gap_s``. With ``check=False`` only an empty window is refused; short gaps are still
    filled and the points of longer gaps stay NaN: the caller decides what to do with them.
    """
    if not (math.isfinite(step_s) and step_s > 0):
        raise ValueError(f"step_s must be a positive number of seconds, got {step_s}")
    ts = _as_float_array("timestamps", timestamps)
    vs = _as_float_array("values", values)
    if len(ts) != len(vs):
        raise ValueError(f"timestamps and values differ in length ({len(ts)} vs {len(vs)})")
    if not np.all(np.isfinite(ts)):
        bad = int(np.flatnonzero(~np.isfinite(ts))[0])
        raise ValueError(f"timestamp #{bad} is {ts[bad]}; timestamps must be finite epoch seconds")

    usable = np.isfinite(vs)
    buckets = np.floor(ts / step_s + _BUCKET_EPS).astype(np.int64)
    if start is not None:
        usable &= buckets >= math.ceil(start / step_s - _BUCKET_EPS)
    if end is not None:
        usable &= buckets <= math.floor(end / step_s + _BUCKET_EPS)
    if not np.any(usable):
        window = ""
        if start is not None or end is not None:
            lo = format_instant(start) if start is not None else "-"
            hi = format_instant(end) if end is not None else "-"
            window = f" in [{lo}, {hi}]"
        raise SeriesRefused(
            "empty",
            f"no usable samples{window} ({len(ts)} raw samples, {int(np.count_nonzero(np.isfinite(vs)))} "
            "with a finite value)",
            missing_s=policy.min_history_s,
            quality=None,
        )
    first = math.ceil(start / step_s - _BUCKET_EPS) if start is not None else 0
    last = math.floor(end / step_s + _BUCKET_EPS) if end is not None else 0
    b = buckets[usable]
    v = vs[usable]
    k0 = int(b.min()) if start is None else first
    k1 = int(b.max()) if end is None else last
    n = k1 - k0 + 1
    if n > MAX_GRID_POINTS:
        raise ValueError(
            f"a {step_s:g} s grid from {format_instant(k0 * step_s)} to {format_instant(k1 * step_s)} "
            f"has {n} points, more than {MAX_GRID_POINTS}: use a larger step or a shorter window"
        )
    idx = b - k0
    sums = np.bincount(idx, weights=v, minlength=n)
    counts = np.bincount(idx, minlength=n)
    observed = counts > 0
    values_out = np.full(n, np.nan)
    np.divide(sums, counts, out=values_out, where=observed)
    grid_start = k0 * step_s

    run_starts, run_lengths = _missing_runs(observed)
    max_fill = math.floor(policy.max_fill_gap_s / step_s + _BUCKET_EPS)
    short = run_lengths <= max_fill
    if np.any(short):
        marks = np.zeros(n + 1, dtype=np.int64)
        np.add.at(marks, run_starts[short], 1)
        np.add.at(marks, run_starts[short] + run_lengths[short], -1)
        fill = np.cumsum(marks[:n]) > 0
        present_idx = np.flatnonzero(observed)
        # np.interp holds the edge value beyond the first/last observed point, which is what a short gap
        # at either end of the window should get.
        values_out[fill] = np.interp(np.flatnonzero(fill), present_idx, values_out[present_idx])

    quality = _quality_of(observed, values_out, grid_start, step_s)
    series = PreparedSeries(
        start=grid_start, step_s=float(step_s), values=values_out, quality=quality, observed=observed
    )
    if check:
        check_series(series, policy)
    return series


def prepare_recent(
    timestamps: Sequence[float] | FloatArray,
    values: Sequence[float] | FloatArray,
    step_s: float,
    *,
    policy: PreparationPolicy = DEFAULT_POLICY,
    end: float | None = None,
) -> PreparedSeries:
    """Like :func:`prepare`, but a long gap does not condemn the whole window: the data after the last long
    gap are used when they meet ``policy`` on their own (a live service should not stop forecasting for two
    weeks because its metrics were down for an hour). Refused, saying why, when they do not."""
    full = prepare(timestamps, values, step_s, policy=policy, end=end, check=False)
    recent = full.since_last_gap()
    if recent is full:
        check_series(full, policy)
        return full
    if len(recent) == 0:
        gap = full.quality
        raise SeriesRefused(
            "gap",
            f"no data since {format_instant(full.start + (len(full) - 1) * full.step_s)}: the newest "
            f"{format_duration(gap.longest_gap_s)} are missing",
            missing_s=policy.min_history_s,
            quality=gap,
        )
    try:
        check_series(recent, policy)
    except SeriesRefused as exc:
        raise SeriesRefused(
            exc.reason,
            f"{exc} (only the data after the gap that ends at {format_instant(recent.start)} can be used)",
            missing_s=exc.missing_s,
            quality=exc.quality,
        ) from exc
    return recent


def check_series(series: PreparedSeries, policy: PreparationPolicy = DEFAULT_POLICY) -> None:
    """Raise :class:`SeriesRefused` when ``series`` does not meet ``policy`` (see :func:`prepare`)."""
    q = series.quality
    span = series.span_s
    if span < policy.min_history_s - _BUCKET_EPS * series.step_s:
        missing = policy.min_history_s - span
        raise SeriesRefused(
            "short_history",
            f"only {span / DAY_S:.1f} of {policy.min_history_s / DAY_S:.1f} days of history "
            f"({missing / DAY_S:.1f} days missing; {format_duration(span)} from "
            f"{format_instant(series.start)} to {format_instant(series.end)})",
            missing_s=missing,
            quality=q,
        )
    if q.completeness < policy.min_completeness:
        # How many more points would have had to be present to reach the threshold.
        needed = math.ceil(policy.min_completeness * q.expected_points - q.present_points - 1e-9)
        raise SeriesRefused(
            "incomplete",
            f"completeness {100 * q.completeness:.1f}% < {100 * policy.min_completeness:g}% "
            f"({_gap_text(q)}; {format_duration(q.missing_points * series.step_s)} of "
            f"{format_duration(q.expected_points * series.step_s)} missing)",
            missing_s=needed * series.step_s,
            quality=q,
        )
    if q.longest_gap_s > policy.max_fill_gap_s:
        assert q.longest_gap_start is not None
        raise SeriesRefused(
            "gap",
            f"gap of {format_duration(q.longest_gap_s)} from {format_instant(q.longest_gap_start)} is longer "
            f"than the {format_duration(policy.max_fill_gap_s)} that are filled by interpolation "
            f"(completeness {100 * q.completeness:.1f}%); fit on the data after the gap or prepare a "
            "window without it",
            missing_s=q.longest_gap_s,
            quality=q,
        )


# --- sources -------------------------------------------------------------------------------------------


def _infer_step(ts: FloatArray, source: str) -> float:
    finite = np.unique(ts[np.isfinite(ts)])
    if len(finite) < 2:
        raise ValueError(f"cannot infer the step of {source}: fewer than two distinct timestamps; pass step_s")
    step = float(np.median(np.diff(finite)))
    if not step > 0:
        raise ValueError(f"cannot infer the step of {source}; pass step_s")
    return step


def from_prometheus_range(
    result: Sequence[Mapping[str, Any]] | Mapping[str, Any],
    step_s: float,
    *,
    policy: PreparationPolicy = DEFAULT_POLICY,
    start: float | None = None,
    end: float | None = None,
    check: bool = True,
) -> PreparedSeries:
    """Prepare the single series of a Prometheus range-query (matrix) answer.

    ``result`` is ``data.result`` (a list of ``{"metric": {...}, "values": [[ts, "value"], ...]}``), as
    prometheus-api-client's ``custom_query_range`` returns it; the whole JSON answer (``{"status": ...,
    "data": {...}}``) or its ``data`` object are accepted too. Values such as ``"NaN"`` count as missing.
    """
    items: Any = result
    if isinstance(items, Mapping):
        data = items.get("data", items)
        if not isinstance(data, Mapping) or "result" not in data:
            raise ValueError("expected a Prometheus query_range answer: a list of series or {'data': {'result'}}")
        result_type = data.get("resultType", "matrix")
        if result_type != "matrix":
            raise ValueError(f"Prometheus answer is a {result_type!r}; a range query (matrix) is needed")
        items = data["result"]
    if not isinstance(items, Sequence) or isinstance(items, str | bytes):
        raise ValueError(f"expected the list of series of a Prometheus matrix, got {type(items).__name__}")
    if len(items) != 1:
        labels = "; ".join(str(dict(s.get("metric", {}))) for s in items[:3] if isinstance(s, Mapping))
        more = f" ({labels}{'; ...' if len(items) > 3 else ''})" if labels else ""
        raise ValueError(
            f"Prometheus range query returned {len(items)} series{more}; exactly one is needed: "
            + (
                "check the metric name and label selector"
                if not items
                else "aggregate them (e.g. sum(...)) or narrow the label selector"
            )
        )
    series = items[0]
    if not isinstance(series, Mapping) or "values" not in series:
        has_value = isinstance(series, Mapping) and "value" in series
        raise ValueError(
            "Prometheus series has no 'values': "
            + ("this is an instant vector; use a range query" if has_value else f"got {series!r:.200}")
        )
    pairs = series["values"]
    if len(pairs) == 0:
        ts = np.empty(0)
        vs = np.empty(0)
    else:
        # map() in C: about 20 ms for 30 days at 1 min, against 30 ms for an object-array round trip.
        try:
            ts = np.fromiter(map(float, map(_first, pairs)), dtype=np.float64, count=len(pairs))
            vs = np.fromiter(map(float, map(_second, pairs)), dtype=np.float64, count=len(pairs))
        except (TypeError, ValueError, IndexError, KeyError) as exc:
            raise ValueError(f"Prometheus 'values' must be [[epoch_seconds, \"number\"], ...] pairs: {exc}") from exc
    return prepare(ts, vs, step_s, policy=policy, start=start, end=end, check=check)


def _epoch_seconds_from_column(column: pd.Series, name: str) -> FloatArray:
    if pd.api.types.is_numeric_dtype(column.dtype) and not pd.api.types.is_bool_dtype(column.dtype):
        ts = np.asarray(column.to_numpy(dtype=np.float64, na_value=np.nan), dtype=np.float64)
        finite = ts[np.isfinite(ts)]
        if len(finite) and float(np.max(np.abs(finite))) > 1e11:
            raise ValueError(
                f"time column {name!r} holds values up to {np.max(finite):.0f}: these look like "
                "milliseconds; epoch seconds are expected"
            )
        return ts
    if isinstance(column.dtype, pd.DatetimeTZDtype) or pd.api.types.is_datetime64_dtype(column.dtype):
        dt = pd.to_datetime(column, utc=True)
    else:
        try:
            dt = pd.to_datetime(column, utc=True, format="ISO8601")
        except (ValueError, TypeError) as exc:
            raise ValueError(
                f"time column {name!r} is neither epoch seconds nor ISO 8601 (e.g. 2024-05-01T12:00:00Z): {exc}"
            ) from exc
    seconds = (dt - pd.Timestamp(0, tz="UTC")) / pd.Timedelta(seconds=1)
    return np.asarray(seconds.to_numpy(dtype=np.float64, na_value=np.nan), dtype=np.float64)


def _values_from_column(column: pd.Series, name: str) -> FloatArray:
    if pd.api.types.is_numeric_dtype(column.dtype) and not pd.api.types.is_bool_dtype(column.dtype):
        return np.asarray(column.to_numpy(dtype=np.float64, na_value=np.nan), dtype=np.float64)
    converted = pd.to_numeric(column, errors="coerce")
    bad = converted.isna() & column.notna() & (column.astype(str).str.strip() != "")
    if bool(bad.any()):
        pos = int(np.flatnonzero(bad.to_numpy())[0])
        raise ValueError(f"value column {name!r} row {pos} is {column.iloc[pos]!r}, not a number")
    return np.asarray(converted.to_numpy(dtype=np.float64, na_value=np.nan), dtype=np.float64)


def samples_from_csv(
    path_or_file: str | os.PathLike[str] | IO[str] | IO[bytes],
    *,
    time_column: str | None = None,
    value_column: str | None = None,
) -> tuple[FloatArray, FloatArray]:
    """Raw (timestamps, values) from a CSV; see :func:`from_csv` for the accepted forms."""
    frame = pd.read_csv(path_or_file)
    columns = [str(c) for c in frame.columns]
    if len(columns) < 2:
        raise ValueError(f"CSV needs a time column and a value column; found columns {columns}")
    tcol = time_column if time_column is not None else columns[0]
    if tcol not in columns:
        raise ValueError(f"time column {tcol!r} not in CSV columns {columns}")
    if value_column is None:
        rest = [c for c in columns if c != tcol]
        if len(rest) != 1:
            raise ValueError(f"CSV has several value columns {rest}; choose one with value_column=")
        vcol = rest[0]
    else:
        vcol = value_column
        if vcol not in columns:
            raise ValueError(f"value column {vcol!r} not in CSV columns {columns}")
    ts = _epoch_seconds_from_column(frame[tcol], tcol)
    vs = _values_from_column(frame[vcol], vcol)
    if not np.all(np.isfinite(ts)):
        row = int(np.flatnonzero(~np.isfinite(ts))[0])
        raise ValueError(f"time column {tcol!r} row {row} is empty or not a time")
    return ts, vs


def from_csv(
    path_or_file: str | os.PathLike[str] | IO[str] | IO[bytes],
    *,
    step_s: float | None = None,
    time_column: str | None = None,
    value_column: str | None = None,
    policy: PreparationPolicy = DEFAULT_POLICY,
    start: float | None = None,
    end: float | None = None,
    check: bool = True,
) -> PreparedSeries:
    """Prepare a series from a CSV file (plain or ``.gz``) or an open file.

    The time column (default: the first) holds ISO 8601 times (an offset such as ``-04:00`` or ``Z`` is
    honoured; times without one are taken as UTC) or epoch seconds. The value column defaults to the only
    other column; empty cells are missing. ``step_s`` defaults to the median spacing of the timestamps.
    """
    ts, vs = samples_from_csv(path_or_file, time_column=time_column, value_column=value_column)
    step = step_s if step_s is not None else _infer_step(ts, "the CSV")
    return prepare(ts, vs, step, policy=policy, start=start, end=end, check=check)


def from_pandas(
    series: pd.Series,
    step_s: float | None = None,
    *,
    policy: PreparationPolicy = DEFAULT_POLICY,
    start: float | None = None,
    end: float | None = None,
    check: bool = True,
) -> PreparedSeries:
    """Prepare a pandas Series indexed by a DatetimeIndex (naive = UTC) or by epoch seconds."""
    if not isinstance(series, pd.Series):
        raise ValueError(f"expected a pandas Series, got {type(series).__name__}")
    index = series.index
    if isinstance(index, pd.DatetimeIndex):
        dt = index.tz_localize("UTC") if index.tz is None else index.tz_convert("UTC")
        ts = np.asarray(((dt - pd.Timestamp(0, tz="UTC")) / pd.Timedelta(seconds=1)).to_numpy(), dtype=np.float64)
    elif pd.api.types.is_numeric_dtype(index.dtype):
        ts = _epoch_seconds_from_column(pd.Series(index), "index")
    else:
        raise ValueError(
            f"pandas Series index must be a DatetimeIndex or epoch seconds, got {type(index).__name__} of {index.dtype}"
        )
    vs = _values_from_column(series.reset_index(drop=True), str(series.name or "values"))
    step = step_s if step_s is not None else _infer_step(ts, "the pandas Series")
    return prepare(ts, vs, step, policy=policy, start=start, end=end, check=check)


__all__ = [
    "DAY_S",
    "DEFAULT_POLICY",
    "MAX_GRID_POINTS",
    "WEEK_S",
    "FloatArray",
    "PreparationPolicy",
    "PreparedSeries",
    "SeriesQuality",
    "SeriesRefused",
    "check_series",
    "format_duration",
    "format_instant",
    "from_csv",
    "from_pandas",
    "from_prometheus_range",
    "prepare",
    "samples_from_csv",
]
