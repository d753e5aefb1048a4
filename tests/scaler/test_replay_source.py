"""ReplaySource: bundled real traces and CSV files played against a clock, aligned by weekday and time."""

from __future__ import annotations

import gzip
import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from forecasting.series import WEEK_S
from forecasting.traces import load_trace_samples
from scaler_service.sources.base import QueryError
from scaler_service.sources.replay import ReplaySource

# A Friday, 12:34 UTC.
NOW = datetime(2026, 11, 27, 12, 34, tzinfo=UTC).timestamp()
DAY_S = 86_400.0


def fixed_clock(now: float = NOW) -> ReplaySource:
    return ReplaySource(clock=lambda: now)


def _utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, tz=UTC)


@pytest.mark.parametrize("name", ["nasa-http-1995", "nyc-taxi", "azure-2019-cpu"])
def test_value_now_is_the_trace_value_at_the_same_weekday_and_time_of_day(name: str) -> None:
    source = fixed_clock()
    ts, vs = load_trace_samples(name)
    loop = source.loop(name)
    trace_time = loop.trace_time_at(NOW)
    wall, replayed = _utc(NOW), _utc(trace_time)
    assert replayed.weekday() == wall.weekday()
    step = loop.step_s
    # Step-hold: the trace point in force at the same time of day is the one at or before it.
    assert 0 <= (wall.hour * 3600 + wall.minute * 60) - (replayed.hour * 3600 + replayed.minute * 60) < step
    held_index = int(np.searchsorted(ts, trace_time, side="right")) - 1
    assert trace_time - ts[held_index] < step
    raw_value = float(vs[held_index])
    assert source.fetch_latest(name, NOW) == (NOW, raw_value)


def test_nasa_replays_its_longest_clean_stretch_in_whole_weeks() -> None:
    loop = fixed_clock().loop("nasa-http-1995")
    assert loop.period_s == 4 * WEEK_S
    # The clean stretch after the August outage (the July log stops early on Jul 28).
    assert _utc(loop.start) == datetime(1995, 8, 3, 8, 36, tzinfo=UTC)
    assert not np.isnan(loop.values).any()


def test_replay_loops_over_whole_weeks() -> None:
    source = fixed_clock(NOW + 10 * WEEK_S)
    period = source.loop("nasa-http-1995").period_s
    for offset in (0.0, period, 2 * period, -period):
        assert source.fetch_latest("nasa-http-1995", NOW + offset) == (
            NOW + offset,
            source.fetch_latest("nasa-http-1995", NOW)[1],  # type: ignore[index]
        )


def test_values_hold_between_trace_points() -> None:
    source = fixed_clock()
    boundary = datetime(2026, 11, 27, 12, 0, tzinfo=UTC).timestamp()  # on the 30-min grid of the taxi trace
    held = source.fetch_range("nyc-taxi", boundary, boundary + 29 * 60, 60.0)
    assert len(held) == 30
    assert len(set(held.values.tolist())) == 1
    next_point = source.fetch_latest("nyc-taxi", boundary + 30 * 60)
    ts, vs = load_trace_samples("nyc-taxi")
    trace_next = source.loop("nyc-taxi").trace_time_at(boundary + 30 * 60)
    assert next_point is not None and next_point[1] == float(vs[int(np.flatnonzero(ts == trace_next)[0])])


def test_fetch_range_returns_history_up_to_now_and_nothing_later() -> None:
    source = fixed_clock()
    history = source.fetch_range("nasa-http-1995", NOW - 14 * DAY_S, NOW + 3600, 60.0)
    assert len(history) == 14 * 1440 + 1
    assert history.timestamps[0] == NOW - 14 * DAY_S
    assert history.timestamps[-1] == NOW
    assert history.values[-1] == source.fetch_latest("nasa-http-1995", NOW)[1]  # type: ignore[index]
    assert np.all(np.diff(history.timestamps) == 60.0)
    assert len(source.fetch_range("nasa-http-1995", NOW + 60, NOW + 3600, 60.0)) == 0


def test_weekly_pattern_survives_the_replay() -> None:
    # A week of replayed NASA data correlates with the week before it (the trace has weekly seasonality).
    source = fixed_clock()
    hist = source.fetch_range("nasa-http-1995", NOW - 14 * DAY_S, NOW, 3600.0)
    this_week, last_week = hist.values[-168:], hist.values[-336:-168]
    assert np.corrcoef(this_week, last_week)[0, 1] > 0.5


def test_unknown_name_lists_the_bundled_traces() -> None:
    with pytest.raises(QueryError, match=r"azure-2019-cpu, nasa-http-1995, nyc-taxi") as info:
        fixed_clock().fetch_latest("nasa", NOW)
    assert "nor a file in the replay directory" in str(info.value)


def _write_csv(path: Path, start: datetime, minutes: int, step_min: int = 5, gap: range | None = None) -> None:
    lines = ["timestamp,value"]
    for i in range(0, minutes, step_min):
        when = start + timedelta(minutes=i)
        value = "" if gap is not None and i in gap else str(float(when.hour * 100 + when.minute))
        lines.append(f"{when.isoformat()},{value}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def test_csv_path_relative_to_the_replay_dir_with_a_gap_uses_the_longest_stretch(tmp_path: Path) -> None:
    start = datetime(2024, 1, 1, tzinfo=UTC)  # a Monday
    # 10 days of 5-min data, with a 3-hour hole on day 2: the stretch after it (8+ days) is the longest.
    _write_csv(tmp_path / "demand.csv", start, 10 * 1440, gap=range(1440 + 600, 1440 + 780))
    source = ReplaySource(clock=lambda: NOW, replay_dir=tmp_path)
    loop = source.loop("demand.csv")
    assert loop.period_s == WEEK_S
    assert loop.start == (start + timedelta(minutes=1440 + 780)).timestamp()
    # The value encodes the time of day: replay must give the wall clock's own time of day.
    latest = source.fetch_latest("demand.csv", NOW)
    assert latest == (NOW, 1230.0)  # 12:34 held from the 12:30 point


def test_short_csv_loops_over_whole_days(tmp_path: Path) -> None:
    _write_csv(tmp_path / "two_days.csv", datetime(2024, 1, 1, tzinfo=UTC), 2 * 1440 + 300)
    source = ReplaySource(clock=lambda: NOW, replay_dir=tmp_path)
    loop = source.loop("two_days.csv")
    assert loop.period_s == 2 * DAY_S
    assert source.fetch_latest("two_days.csv", NOW) == (NOW, 1230.0)


def test_csv_problems_are_query_errors_naming_the_file(tmp_path: Path) -> None:
    source = ReplaySource(clock=lambda: NOW, replay_dir=tmp_path)
    with pytest.raises(QueryError, match=r"'missing\.csv': not a bundled trace name nor a file in the replay dir"):
        source.fetch_latest("missing.csv", NOW)
    _write_csv(tmp_path / "short.csv", datetime(2024, 1, 1, tzinfo=UTC), 600)
    with pytest.raises(QueryError, match=r"at least 1 day"):
        source.fetch_latest("short.csv", NOW)
    (tmp_path / "bad.csv").write_text("timestamp,value\nyesterday,3\nlater,4\n", encoding="utf-8")
    with pytest.raises(QueryError, match=r"(?s)bad\.csv.*is not a CSV of timestamp,value"):
        source.fetch_latest("bad.csv", NOW)


def test_csv_changes_are_picked_up(tmp_path: Path) -> None:
    path = tmp_path / "live.csv"
    _write_csv(path, datetime(2024, 1, 1, tzinfo=UTC), 2 * 1440)
    source = ReplaySource(clock=lambda: NOW, replay_dir=tmp_path)
    assert source.loop("live.csv").period_s == 2 * DAY_S
    _write_csv(path, datetime(2024, 1, 1, tzinfo=UTC), 8 * 1440)

    os.utime(path, (NOW, NOW))
    assert source.loop("live.csv").period_s == WEEK_S


def test_bad_ranges_are_refused() -> None:
    with pytest.raises(ValueError, match="step_s"):
        fixed_clock().fetch_range("nyc-taxi", NOW - 60, NOW, 0.0)
    with pytest.raises(ValueError, match="empty"):
        fixed_clock().fetch_range("nyc-taxi", NOW, NOW - 60, 60.0)


def test_options_scale_and_shift_derive_variants_of_a_trace() -> None:
    source = fixed_clock()
    base = source.fetch_range("nasa-http-1995", NOW - DAY_S, NOW, 60.0)
    scaled = source.fetch_range("nasa-http-1995?scale=2.5", NOW - DAY_S, NOW, 60.0)
    np.testing.assert_array_equal(scaled.values, base.values * 2.5)
    shifted = source.fetch_range("nasa-http-1995?shift=2h&scale=1", NOW - DAY_S, NOW, 60.0)
    np.testing.assert_array_equal(shifted.values[120:], base.values[:-120])
    latest = source.fetch_latest("nasa-http-1995?scale=0.5&shift=30m", NOW)
    assert latest == (NOW, source.fetch_latest("nasa-http-1995", NOW - 1800)[1] * 0.5)  # type: ignore[index]


@pytest.mark.parametrize(
    ("query", "pattern"),
    [
        ("nasa-http-1995?scale=-1", r"scale='-1' must be a number >= 0"),
        ("nasa-http-1995?scale=abc", r"scale='abc'"),
        ("nasa-http-1995?shift=soon", r"shift='soon' is not a duration"),
        ("nasa-http-1995?speed=2", r"unknown option 'speed'.*scale=<number> and shift=<duration"),
        ("nasa-http-1995?scale", r"cannot read the options"),
    ],
)
def test_bad_options_are_query_errors(query: str, pattern: str) -> None:
    with pytest.raises(QueryError, match=pattern):
        fixed_clock().fetch_latest(query, NOW)


# --- file access is confined to the replay directory ---------------------------------------------------


@pytest.fixture
def replay_dir(tmp_path: Path) -> Path:
    root = tmp_path / "replay"
    root.mkdir()
    _write_csv(root / "ok.csv", datetime(2024, 1, 1, tzinfo=UTC), 2 * 1440)
    (tmp_path / "secret.csv").write_text("timestamp,value\nAZURE_CLIENT_SECRET=hunter2,1\n", encoding="utf-8")
    return root


def _refused(source: ReplaySource, query: str) -> str:
    with pytest.raises(QueryError) as info:
        source.fetch_latest(query, NOW)
    return str(info.value)


def test_without_a_replay_dir_only_bundled_traces_are_replayable(replay_dir: Path) -> None:
    source = fixed_clock()
    for query in ("/proc/self/environ", "/etc/passwd", str(replay_dir / "ok.csv"), "ok.csv", "/dev/zero"):
        message = _refused(source, query)
        assert "not a bundled trace name nor a file in the replay directory" in message
        assert "no replay directory is configured" in message
        assert "root:" not in message and "PATH=" not in message
    assert source.fetch_latest("nyc-taxi", NOW) is not None


@pytest.mark.parametrize(
    "query",
    [
        "/proc/self/environ",
        "../secret.csv",
        "sub/../../secret.csv",
        "~/secret.csv",
        "escape.csv",  # a symlink to a file outside the directory
        "missing.csv",
        "fifo.csv",
        "device.csv",
        "dir.csv",
    ],
)
def test_paths_outside_the_replay_dir_and_non_regular_files_are_refused_alike(replay_dir: Path, query: str) -> None:
    (replay_dir / "escape.csv").symlink_to(replay_dir.parent / "secret.csv")
    os.mkfifo(replay_dir / "fifo.csv")
    (replay_dir / "device.csv").symlink_to("/dev/zero")
    (replay_dir / "dir.csv").mkdir()
    source = ReplaySource(clock=lambda: NOW, replay_dir=replay_dir, read_deadline_s=2.0)
    started = time.monotonic()
    message = _refused(source, query)
    assert time.monotonic() - started < 2.0  # a FIFO is refused before it is opened: nothing blocks
    # One answer whether the file exists or not, naming neither the directory nor anything outside it.
    assert "not a bundled trace name nor a file in the replay directory" in message
    assert str(replay_dir) not in message and "hunter2" not in message and "AZURE" not in message


def test_a_symlink_inside_the_replay_dir_is_followed(replay_dir: Path) -> None:
    (replay_dir / "alias.csv").symlink_to(replay_dir / "ok.csv")
    source = ReplaySource(clock=lambda: NOW, replay_dir=replay_dir)
    assert source.fetch_latest("alias.csv", NOW) == (NOW, 1230.0)


def test_a_file_over_the_size_cap_is_refused_without_being_read(replay_dir: Path) -> None:
    big = replay_dir / "big.csv"
    with big.open("wb") as fh:
        fh.truncate(10 * 2**20)  # sparse: 10 MiB of zeros
    source = ReplaySource(clock=lambda: NOW, replay_dir=replay_dir, max_file_bytes=2**20)
    assert "is larger than 1048576 bytes" in _refused(source, "big.csv")
    bomb = replay_dir / "bomb.csv.gz"
    bomb.write_bytes(gzip.compress(b"0" * (4 * 2**20)))
    assert "decompresses to more than" in _refused(source, "bomb.csv.gz")


def test_file_content_never_appears_in_an_error(replay_dir: Path) -> None:
    (replay_dir / "leak.csv").write_text(
        "timestamp,value\nAZURE_CLIENT_SECRET=hunter2,1\nroot:x:0:0,2\n", encoding="utf-8"
    )
    (replay_dir / "leak2.csv").write_text("AZURE_CLIENT_SECRET=hunter2\n", encoding="utf-8")
    source = ReplaySource(clock=lambda: NOW, replay_dir=replay_dir)
    for name in ("leak.csv", "leak2.csv"):
        message = _refused(source, name)
        assert "hunter2" not in message and "root:x" not in message and "AZURE" not in message
        assert "is not a CSV of timestamp,value" in message


def test_a_long_query_is_quoted_by_a_short_prefix_only() -> None:
    message = _refused(fixed_clock(), "x" * 5000 + ".csv")
    assert len(message) < 400
