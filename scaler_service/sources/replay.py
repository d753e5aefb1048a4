"""ReplaySource: plays a real trace against the wall clock, so the scaler serves real forecasts anywhere.

A query names a bundled trace (``nasa-http-1995``, ``nyc-taxi``, ``azure-2019-cpu``) or, only when the
operator names a replay directory (``replay_dir``, the ``--replay-dir`` setting), a CSV file
``timestamp,value`` in it (ISO 8601 times or epoch seconds; a header row; ``.csv`` or ``.csv.gz``), by its
path relative to that directory.

A query is written by whoever writes a ScaledObject, so file access is confined (:func:`open_in_dir`): no
absolute path, no ``..``, nothing that resolves (through symlinks) outside the directory, regular files only
(a FIFO or a device is refused before it is opened, and the file is opened non-blocking), at most
``max_file_bytes`` read (and as much decompressed), within ``read_deadline_s``. Errors quote at most a short
prefix of the query and never a path outside the directory nor anything read from a file.

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

import gzip
import io
import math
import os
import re
import stat
import threading
import time
import zlib
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

DEFAULT_MAX_FILE_BYTES = 64 * 2**20
"""Largest replay file read (and, for ``.csv.gz``, largest decompressed content)."""
DEFAULT_READ_DEADLINE_S = 10.0
QUOTED_CHARS = 40
"""Errors quote at most this much of a query: it is caller input."""
NOT_REPLAYABLE = "not a bundled trace name nor a file in the replay directory"


def quoted(text: str, limit: int = QUOTED_CHARS) -> str:
    """``repr`` of at most ``limit`` characters of caller input, marked when cut."""
    return repr(text) if len(text) <= limit else repr(text[:limit]) + "..."


class ReplayFileRefused(QueryError):
    """The file a query names is outside the replay directory, not a regular file, too big or too slow."""


def open_in_dir(root: Path, name: str, *, max_bytes: int, deadline_s: float) -> tuple[bytes, float]:
    """The content and mtime of the regular file ``name`` (a relative path) inside ``root``.

    Refused (:class:`ReplayFileRefused`, naming only the query) when ``name`` is absolute, holds ``..`` or
    resolves outside ``root``, when the file is not a regular file (checked before opening, and again on
    the open descriptor, which is opened non-blocking so a FIFO swapped in meanwhile cannot block), when it
    is larger than ``max_bytes``, or when reading it takes longer than ``deadline_s``.
    """
    refused = ReplayFileRefused(f"replay query {quoted(name)}: {NOT_REPLAYABLE}")
    parts = Path(name).parts
    if not name or "\x00" in name or Path(name).is_absolute() or name.startswith("~") or ".." in parts:
        raise refused
    base = root.resolve()
    try:
        path = (base / name).resolve(strict=True)
    except (OSError, RuntimeError):
        raise refused from None
    if not path.is_relative_to(base) or path == base:
        raise refused
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            raise refused
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        raise refused from None
    too_big = ReplayFileRefused(f"replay file {quoted(name)} is larger than {max_bytes} bytes")
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise refused
        if info.st_size > max_bytes:
            raise too_big
        end = time.monotonic() + deadline_s
        chunks: list[bytes] = []
        total = 0
        while True:
            if time.monotonic() > end:
                raise ReplayFileRefused(f"replay file {quoted(name)} was not read within {deadline_s:g} s")
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                break
            total += len(chunk)
            if total > max_bytes:
                raise too_big
            chunks.append(chunk)
    except OSError:
        raise refused from None
    finally:
        os.close(fd)
    data = b"".join(chunks)
    if name.endswith(".gz"):
        data = _gunzip(name, data, max_bytes)
    return data, info.st_mtime


def _gunzip(name: str, data: bytes, max_bytes: int) -> bytes:
    out = io.BytesIO()
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(data)) as fh:
            while chunk := fh.read(1 << 20):
                out.write(chunk)
                if out.tell() > max_bytes:
                    raise ReplayFileRefused(f"replay file {quoted(name)} decompresses to more than {max_bytes} bytes")
    except (OSError, EOFError, zlib.error):
        raise ReplayFileRefused(f"replay file {quoted(name)} is not a readable .gz file") from None
    return out.getvalue()


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
        raise QueryError(f"replay query {quoted(query)}: cannot read the options after '?'; {accepted}") from None
    for key, value in pairs:
        if key == "scale":
            try:
                scale = float(value)
            except ValueError:
                scale = math.nan
            if not (math.isfinite(scale) and scale >= 0):
                raise QueryError(f"replay query {quoted(query)}: scale={quoted(value, 20)} must be a number >= 0")
        elif key == "shift":
            match = _DURATION_RE.match(value)
            if match is None:
                raise QueryError(
                    f"replay query {quoted(query)}: shift={quoted(value, 20)} is not a duration like 90s, 30m, 2h, 1d"
                )
            shift = float(match.group(1)) * _UNIT_S[match.group(2)]
        else:
            raise QueryError(f"replay query {quoted(query)}: unknown option {quoted(key, 20)}; {accepted}")
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
    """A :class:`~scaler_service.sources.base.DataSource` replaying bundled traces or CSV files of
    ``replay_dir`` (none: bundled traces only)."""

    def __init__(
        self,
        clock: Callable[[], float] = time.time,
        replay_dir: Path | None = None,
        *,
        max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
        read_deadline_s: float = DEFAULT_READ_DEADLINE_S,
    ) -> None:
        self._clock = clock
        self._replay_dir = replay_dir
        self._max_file_bytes = max_file_bytes
        self._read_deadline_s = read_deadline_s
        self._loops: dict[str, tuple[float, ReplayLoop]] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"ReplaySource(replay_dir={self._replay_dir!r})"

    def loop(self, query: str) -> ReplayLoop:
        """The replay loop of the trace a query names, without options (cached; a CSV file is re-read when
        its mtime changes)."""
        name = parse_query(query).trace
        if name in TRACES:
            with self._lock:
                cached = self._loops.get(name)
            if cached is not None:
                return cached[1]
            ts, vs = load_trace_samples(name)
            built = build_loop(name, np.asarray(ts), np.asarray(vs), trace_info(name).step_s)
            with self._lock:
                self._loops[name] = (0.0, built)
            return built
        if self._replay_dir is None or not name.endswith((".csv", ".csv.gz")):
            raise QueryError(
                f"replay query {quoted(name)}: {NOT_REPLAYABLE} (bundled: {', '.join(sorted(TRACES))}; "
                + (
                    "files: none, no replay directory is configured)"
                    if self._replay_dir is None
                    else "files: a .csv or .csv.gz path relative to the replay directory)"
                )
            )
        key = "file:" + name
        root = self._replay_dir
        try:
            version = (root.resolve() / name).stat().st_mtime if ".." not in Path(name).parts else -1.0
        except (OSError, ValueError):
            version = -1.0
        with self._lock:
            cached = self._loops.get(key)
        if cached is not None and cached[0] == version and version >= 0:
            return cached[1]
        data, mtime = open_in_dir(root, name, max_bytes=self._max_file_bytes, deadline_s=self._read_deadline_s)
        try:
            ts, vs = samples_from_csv(io.BytesIO(data))
            step = _infer_step(ts)
        except Exception:  # pandas and our parser quote cells: nothing read from the file goes into an error
            raise QueryError(
                f"replay file {quoted(name)} is not a CSV of timestamp,value "
                "(a header row, ISO 8601 or epoch-second times, numbers)"
            ) from None
        built = build_loop(quoted(name), ts, vs, step)
        with self._lock:
            self._loops[key] = (mtime, built)
        return built

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
