"""The bundled real traces load with the documented times, gaps and values."""

from __future__ import annotations

import numpy as np
import pytest

from forecasting.series import DAY_S, PreparationPolicy, SeriesRefused
from forecasting.traces import (
    AZURE_2019_EPOCH,
    TRACES,
    clean_segments,
    load_trace,
    load_trace_samples,
)

# 1995-07-01T00:00-04:00 and the documented empty stretches (local EDT times converted to UTC).
NASA_START = 804_571_200.0  # 1995-07-01T04:00Z
JUL28_1333_EDT = 806_952_780.0  # 1995-07-28T17:33Z, first missing minute (July log ends)
AUG01_1453_EDT = 807_303_180.0  # 1995-08-01T18:53Z, first missing minute (server down)
AUG03_0436_EDT = 807_438_960.0  # 1995-08-03T08:36Z, first minute back


def test_every_trace_loads_with_its_documented_size() -> None:
    sizes = {"nasa-http-1995": 89_280, "nyc-taxi": 10_320, "azure-2019-cpu": 8_640}
    assert set(TRACES) == set(sizes)
    for name, n in sizes.items():
        ts, values = load_trace_samples(name)
        assert len(ts) == len(values) == n
        assert np.all(np.diff(ts) == TRACES[name].step_s)


def test_nasa_offsets_are_honoured_and_empty_cells_are_nan() -> None:
    ts, values = load_trace_samples("nasa-http-1995")
    assert ts[0] == NASA_START
    assert int(np.isnan(values).sum()) == 7_210
    assert np.nansum(values) == 3_461_603
    assert np.isnan(values[ts == JUL28_1333_EDT]).all()
    assert np.isfinite(values[ts == JUL28_1333_EDT - 60]).all()


def test_cached_arrays_are_read_only() -> None:
    _ts, values = load_trace_samples("nyc-taxi")
    with pytest.raises(ValueError):
        values[0] = 1.0
    assert load_trace_samples("nyc-taxi")[1] is values


def test_nyc_taxi_naive_times_are_read_as_utc() -> None:
    ts, values = load_trace_samples("nyc-taxi")
    assert ts[0] == 1_404_172_800.0  # 2014-07-01T00:00Z
    assert values[0] == 10_844.0


def test_azure_offsets_are_anchored_on_a_monday() -> None:
    ts, values = load_trace_samples("azure-2019-cpu")
    assert ts[0] == AZURE_2019_EPOCH
    assert np.datetime64(int(AZURE_2019_EPOCH), "s").astype("datetime64[D]").item().weekday() == 0
    assert values[0] == pytest.approx(6_135_515.87712279)
    s = load_trace("azure-2019-cpu")
    assert s.quality.completeness == 1.0
    assert s.has_weekly_history()


def test_nasa_clean_segments_are_split_at_the_two_gaps() -> None:
    segments = clean_segments("nasa-http-1995", min_days=2.0)
    assert len(segments) == 2
    (a_start, a_end), (b_start, b_end) = segments
    assert a_start == NASA_START
    assert a_end == JUL28_1333_EDT - 60  # last minute before the July log ends
    assert b_start == AUG03_0436_EDT  # first minute after the outage
    assert b_end == NASA_START + 62 * DAY_S - 60
    # The short stretch on Aug 1 before the outage is a segment of its own when short ones are allowed.
    short = clean_segments("nasa-http-1995", min_days=0.1)
    assert len(short) == 3
    assert short[1][1] == AUG01_1453_EDT - 60


def test_nasa_segments_prepare_cleanly_and_the_whole_trace_is_refused() -> None:
    for start, end in clean_segments("nasa-http-1995", min_days=2.0):
        s = load_trace("nasa-http-1995", start=start, end=end)
        assert s.quality.completeness == 1.0
        assert s.start == start
        assert s.end == end
        assert s.has_weekly_history()
    with pytest.raises(SeriesRefused) as info:
        load_trace("nasa-http-1995")
    assert "completeness 91.9% < 95%" in str(info.value)
    assert "1995-07-28T17:33Z" in str(info.value)


def test_window_reaching_into_the_outage_is_refused() -> None:
    with pytest.raises(SeriesRefused) as info:
        load_trace("nasa-http-1995", start=AUG03_0436_EDT - 10 * DAY_S, end=AUG03_0436_EDT + 5 * DAY_S)
    assert info.value.quality is not None
    assert info.value.quality.longest_gap_start == JUL28_1333_EDT


def test_other_traces_have_one_clean_segment() -> None:
    for name in ("nyc-taxi", "azure-2019-cpu"):
        ts, _ = load_trace_samples(name)
        assert clean_segments(name, min_days=2.0) == [(ts[0], ts[-1])]


def test_short_windows_load_unless_the_default_history_policy_is_asked_for() -> None:
    one_day = load_trace("nyc-taxi", start=1_404_172_800.0, end=1_404_172_800.0 + DAY_S - 1800.0)
    assert len(one_day) == 48
    with pytest.raises(SeriesRefused, match=r"only 1\.0 of 2\.0 days of history"):
        load_trace(
            "nyc-taxi",
            start=1_404_172_800.0,
            end=1_404_172_800.0 + DAY_S - 1800.0,
            policy=PreparationPolicy(),
        )


def test_unknown_trace_is_named() -> None:
    with pytest.raises(ValueError, match="unknown trace 'nope'; known traces: azure-2019-cpu"):
        load_trace_samples("nope")
