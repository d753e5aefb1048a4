"""Bad input gives a clear error or a stated repair; conversions to the 1-minute grid."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from scaler_service.backtest.trace import (
    DemandTrace,
    TraceError,
    from_bundled,
    from_csv,
    from_records,
    from_samples,
)

T0 = 1_700_000_040.0  # a whole minute


def _write(tmp_path: Path, rows: list[str], header: str = "timestamp,value") -> Path:
    path = tmp_path / "trace.csv"
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def _minutes(n: int, value: float = 5.0) -> list[tuple[float, float]]:
    return [(T0 + 60.0 * i, value + i % 3) for i in range(n)]


def test_epoch_and_iso_csv_give_the_same_trace(tmp_path: Path) -> None:
    rows = _minutes(30)
    epoch = from_csv(_write(tmp_path, [f"{t:.0f},{v}" for t, v in rows]))
    iso_path = tmp_path / "iso.csv"
    iso_path.write_text("timestamp,value\n" + "\n".join(f"{np.datetime64(int(t), 's')}Z,{v}" for t, v in rows) + "\n")
    iso = from_csv(iso_path)
    assert epoch.start == iso.start == T0
    np.testing.assert_array_equal(epoch.values, iso.values)
    assert epoch.repairs == ()


def test_unsorted_rows_are_sorted_and_say_so(tmp_path: Path) -> None:
    rows = _minutes(20)
    rows[3], rows[7] = rows[7], rows[3]
    trace = from_csv(_write(tmp_path, [f"{t:.0f},{v}" for t, v in rows]))
    assert any("out of time order" in r and "sorted" in r for r in trace.repairs)
    assert trace.values[3] == 5.0 + 3 % 3 and trace.values[7] == 5.0 + 7 % 3


def test_duplicate_timestamps_are_an_error_naming_the_rows(tmp_path: Path) -> None:
    rows = _minutes(20)
    rows[5] = (rows[4][0], 9.0)
    with pytest.raises(TraceError, match=r"appears more than once \(data rows 5 and 6"):
        from_csv(_write(tmp_path, [f"{t:.0f},{v}" for t, v in rows]))


def test_negative_values_are_an_error(tmp_path: Path) -> None:
    rows = _minutes(20)
    rows[8] = (rows[8][0], -3.0)
    with pytest.raises(TraceError, match=r"data row 9 .* negative value -3 .* must be >= 0"):
        from_csv(_write(tmp_path, [f"{t:.0f},{v}" for t, v in rows]))


def test_non_numbers_are_an_error(tmp_path: Path) -> None:
    rows = [f"{t:.0f},{v}" for t, v in _minutes(10)]
    rows[2] = f"{T0 + 120:.0f},lots"
    with pytest.raises(TraceError, match="not a number"):
        from_csv(_write(tmp_path, rows))


def test_short_gap_is_filled_and_stated(tmp_path: Path) -> None:
    rows = [r for i, r in enumerate(_minutes(60)) if not 10 <= i < 15]
    trace = from_csv(_write(tmp_path, [f"{t:.0f},{v}" for t, v in rows]))
    assert len(trace) == 60
    assert any("5 missing" in r and "interpolation" in r for r in trace.repairs)
    assert np.all(np.isfinite(trace.values))


def test_long_gap_is_an_error_naming_it_and_the_clean_stretches(tmp_path: Path) -> None:
    rows = [r for i, r in enumerate(_minutes(200)) if not 50 <= i < 90]
    with pytest.raises(TraceError, match=r"gap of 40 min from .*--start/--end.*Clean stretches"):
        from_csv(_write(tmp_path, [f"{t:.0f},{v}" for t, v in rows]))


def test_empty_and_missing_files(tmp_path: Path) -> None:
    with pytest.raises(TraceError, match="does not exist"):
        from_csv(tmp_path / "nope.csv")
    with pytest.raises(TraceError):
        from_csv(_write(tmp_path, []))


def test_coarse_data_are_interpolated_to_minutes() -> None:
    ts = T0 + 1800.0 * np.arange(4, dtype=np.float64)
    trace = from_samples("x", ts, np.array([0.0, 30.0, 60.0, 30.0]))
    assert len(trace) == 91
    assert trace.values[15] == pytest.approx(15.0)
    assert trace.values[45] == pytest.approx(45.0)
    assert any("interpolated to 1 minute" in r for r in trace.repairs)
    assert trace.source_step_s == 1800.0


def test_coarse_data_can_be_held_instead() -> None:
    ts = T0 + 1800.0 * np.arange(3, dtype=np.float64)
    trace = from_samples("x", ts, np.array([0.0, 30.0, 60.0]), upsample="hold")
    assert len(trace) == 90
    assert set(trace.values[:30].tolist()) == {0.0} and set(trace.values[30:60].tolist()) == {30.0}
    assert any("held for each minute" in r for r in trace.repairs)
    with pytest.raises(TraceError, match="upsample"):
        from_samples("x", ts, np.array([0.0, 30.0, 60.0]), upsample="cubic")


def test_fine_data_are_averaged_per_minute() -> None:
    ts = T0 + 15.0 * np.arange(8, dtype=np.float64)
    trace = from_samples("x", ts, np.array([1.0, 2.0, 3.0, 4.0, 10.0, 10.0, 10.0, 10.0]))
    np.testing.assert_allclose(trace.values, [2.5, 10.0])
    assert any("averaged per minute" in r for r in trace.repairs)


def test_observed_is_the_last_complete_minute() -> None:
    trace = DemandTrace(name="x", start=0.0, values=np.array([1.0, 2.0, 3.0]), source_step_s=60.0)
    times = np.array([60.0, 75.0, 119.0, 120.0])
    np.testing.assert_array_equal(trace.observed_at(times), [1.0, 1.0, 1.0, 2.0])
    np.testing.assert_array_equal(trace.demand_at(times), [2.0, 2.0, 2.0, 3.0])


def test_bundled_trace_with_gaps_uses_its_last_clean_stretch() -> None:
    nasa = from_bundled("nasa-http-1995")
    assert any("last clean stretch" in r for r in nasa.repairs)
    assert len(nasa) > 25 * 1440
    with pytest.raises(TraceError, match="unknown trace"):
        from_bundled("no-such-trace")
    with pytest.raises(TraceError, match="gap of"):
        from_bundled("nasa-http-1995", start=None, end=nasa.end)


def test_records_replay_observed_as_demand_and_predictive_as_metric(tmp_path: Path) -> None:
    path = tmp_path / "records.csv"
    lines = ["timestamp,observed,served,predictive"]
    for i in range(1, 11):
        lines.append(f"{T0 + 60 * i:.0f},{i},{i},{10 * i}")
    path.write_text("\n".join(lines) + "\n")
    trace, recorded = from_records(path)
    # The record at T0 + 60 i carries the minute ending then: observed at that time is i.
    np.testing.assert_array_equal(trace.observed_at(np.array([T0 + 120.0, T0 + 150.0])), [2.0, 2.0])
    np.testing.assert_array_equal(recorded.at(np.array([T0 + 120.0, T0 + 179.0, T0 + 180.0])), [20.0, 20.0, 30.0])
    bad = tmp_path / "bad.csv"
    bad.write_text("timestamp,value\n1,2\n")
    with pytest.raises(TraceError, match="timestamp,observed,served,predictive"):
        from_records(bad)
