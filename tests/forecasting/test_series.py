"""Series preparation on constructed series with known answers."""

from __future__ import annotations

import gzip
import io
from pathlib import Path

import numpy as np
import pandas as pd  # type: ignore[import-untyped]
import pytest

from forecasting.series import (
    DAY_S,
    PreparationPolicy,
    PreparedSeries,
    SeriesRefused,
    format_instant,
    from_csv,
    from_pandas,
    from_prometheus_range,
    prepare,
)

T0 = 1_700_006_400.0  # 2023-11-15T00:00Z, a multiple of 60, 300 and 3600
STEP = 60.0


def minutes(days: float) -> int:
    return int(days * 1440)


def ramp(n: int, start: float = T0, step: float = STEP) -> tuple[np.ndarray, np.ndarray]:
    ts = start + step * np.arange(n, dtype=np.float64)
    return ts, np.arange(n, dtype=np.float64)


# --- grid, buckets, quality ------------------------------------------------------------------------------


def test_regular_input_is_kept_as_is() -> None:
    ts, vs = ramp(minutes(3))
    s = prepare(ts, vs, STEP)
    assert s.start == T0
    assert s.step_s == STEP
    np.testing.assert_array_equal(s.values, vs)
    assert s.quality.completeness == 1.0
    assert s.quality.longest_gap_s == 0.0
    assert s.quality.longest_gap_start is None
    assert s.quality.filled_points == 0


def test_unsorted_duplicated_and_sub_step_samples_are_averaged_into_their_bucket() -> None:
    ts, vs = ramp(minutes(3))
    # Two extra samples in bucket 10 (one duplicated timestamp, one 30 s later) and a shuffled order.
    ts_all = np.concatenate([ts, [T0 + 600.0, T0 + 630.0]])
    vs_all = np.concatenate([vs, [20.0, 30.0]])
    order = np.random.default_rng(7).permutation(len(ts_all))
    s = prepare(ts_all[order], vs_all[order], STEP)
    assert len(s) == len(ts)
    assert s.values[10] == pytest.approx((10.0 + 20.0 + 30.0) / 3)
    assert s.values[11] == 11.0
    assert s.quality.present_points == len(ts)


def test_grid_is_aligned_to_multiples_of_the_step() -> None:
    ts, vs = ramp(minutes(3))
    s = prepare(ts + 17.0, vs, STEP)
    assert s.start == T0  # floor(T0 + 17 s) to the minute
    np.testing.assert_array_equal(s.values, vs)


def test_completeness_and_longest_gap_on_a_constructed_case() -> None:
    n = minutes(3)
    ts, vs = ramp(n)
    vs[100:105] = np.nan  # 5-minute gap
    keep = np.ones(n, dtype=bool)
    keep[2000:2012] = False  # 12-minute gap, by absent samples
    s = prepare(ts[keep], vs[keep], STEP)
    q = s.quality
    assert q.expected_points == n
    assert q.present_points == n - 17
    assert q.completeness == pytest.approx((n - 17) / n)
    assert q.longest_gap_s == 12 * STEP
    assert q.longest_gap_start == T0 + 2000 * STEP
    assert q.filled_points == 17


def test_short_gaps_are_filled_by_linear_interpolation() -> None:
    n = minutes(3)
    ts, _ = ramp(n)
    vs = 2.0 * np.arange(n, dtype=np.float64) + 5.0
    vs[500:510] = np.nan
    s = prepare(ts, vs, STEP)
    np.testing.assert_allclose(s.values[500:510], 2.0 * np.arange(500, 510) + 5.0)
    assert s.observed is not None
    assert not s.observed[500:510].any()
    assert s.quality.filled_points == 10
    assert np.isfinite(s.values).all()


def test_short_gap_at_the_end_holds_the_last_value() -> None:
    ts, vs = ramp(minutes(3))
    s = prepare(ts, vs, STEP, end=ts[-1] + 5 * STEP)
    assert len(s) == len(ts) + 5
    np.testing.assert_array_equal(s.values[-5:], np.full(5, vs[-1]))
    assert s.quality.longest_gap_s == 5 * STEP
    assert s.quality.longest_gap_start == ts[-1] + STEP


def test_nan_counts_as_missing_and_negative_values_are_kept() -> None:
    ts, vs = ramp(minutes(3))
    vs[7] = -3.5
    vs[8] = np.inf
    s = prepare(ts, vs, STEP)
    assert s.values[7] == -3.5
    assert s.quality.present_points == len(ts) - 1
    assert s.values[8] == pytest.approx((-3.5 + 9.0) / 2)


def test_end_extends_the_expected_grid_so_missing_recent_data_counts() -> None:
    ts, vs = ramp(minutes(3))
    with pytest.raises(SeriesRefused) as info:
        prepare(ts, vs, STEP, end=ts[-1] + 3600.0)
    assert info.value.reason == "gap"
    assert "60 min" in str(info.value)
    assert format_instant(ts[-1] + STEP) in str(info.value)


def test_samples_outside_start_and_end_are_dropped() -> None:
    ts, vs = ramp(minutes(4))
    s = prepare(ts, vs, STEP, start=ts[1440], end=ts[4 * 1440 - 2])
    assert s.start == ts[1440]
    assert s.end == ts[4 * 1440 - 2]
    assert s.values[0] == 1440.0


# --- refusals --------------------------------------------------------------------------------------------


def test_series_with_a_three_day_gap_is_refused_naming_the_gap() -> None:
    n = minutes(10)
    ts, vs = ramp(n)
    gap_start = minutes(4)
    vs[gap_start : gap_start + minutes(3)] = np.nan
    with pytest.raises(SeriesRefused) as info:
        prepare(ts, vs, STEP)
    err = info.value
    assert err.reason == "incomplete"
    assert "3.0 days" in str(err)
    assert format_instant(T0 + 4 * DAY_S) in str(err)
    assert "2023-11-19T00:00Z" in str(err)
    assert err.quality is not None
    assert err.quality.longest_gap_s == 3 * DAY_S
    assert err.quality.completeness == pytest.approx(0.7)
    # 95% of 10 days present needs 2.5 more days of data.
    assert err.missing_s == pytest.approx(2.5 * DAY_S)


def test_long_gap_is_refused_even_when_completeness_is_high() -> None:
    n = minutes(20)
    ts, vs = ramp(n)
    vs[5000:5030] = np.nan
    with pytest.raises(SeriesRefused) as info:
        prepare(ts, vs, STEP)
    assert info.value.reason == "gap"
    assert "30 min" in str(info.value)
    assert format_instant(T0 + 5000 * STEP) in str(info.value)
    assert info.value.missing_s == 30 * STEP


def test_check_false_keeps_long_gaps_as_nan() -> None:
    n = minutes(3)
    ts, vs = ramp(n)
    vs[100:200] = np.nan
    vs[300:305] = np.nan
    s = prepare(ts, vs, STEP, check=False)
    assert np.isnan(s.values[100:200]).all()
    assert np.isfinite(s.values[300:305]).all()
    assert s.quality.longest_gap_s == 100 * STEP


def test_too_short_history_is_refused_with_how_much_is_missing() -> None:
    ts, vs = ramp(int(1.2 * 1440))
    with pytest.raises(SeriesRefused) as info:
        prepare(ts, vs, STEP)
    err = info.value
    assert err.reason == "short_history"
    assert "only 1.2 of 2.0 days of history (0.8 days missing" in str(err)
    assert err.missing_s == pytest.approx(0.8 * DAY_S)


def test_exactly_two_days_is_accepted_and_policy_is_honoured() -> None:
    ts, vs = ramp(minutes(2))
    assert len(prepare(ts, vs, STEP)) == minutes(2)
    lenient = PreparationPolicy(min_history_s=3600.0)
    assert len(prepare(ts[:60], vs[:60], STEP, policy=lenient)) == 60


def test_empty_input_is_refused() -> None:
    with pytest.raises(SeriesRefused, match="no usable samples") as info:
        prepare([T0, T0 + 60], [np.nan, np.nan], STEP)
    assert info.value.reason == "empty"


def test_bad_arguments_are_named() -> None:
    with pytest.raises(ValueError, match="step_s"):
        prepare([T0], [1.0], 0.0)
    with pytest.raises(ValueError, match="differ in length"):
        prepare([T0, T0 + 60], [1.0], STEP)
    with pytest.raises(ValueError, match="timestamps must be finite"):
        prepare([T0, np.nan], [1.0, 2.0], STEP)
    with pytest.raises(ValueError, match="min_completeness"):
        PreparationPolicy(min_completeness=1.5)


# --- PreparedSeries methods ------------------------------------------------------------------------------


def _series_days(days: float) -> PreparedSeries:
    ts, vs = ramp(minutes(days))
    return prepare(ts, vs, STEP)


def test_tail_and_until() -> None:
    s = _series_days(3)
    t = s.tail(3600.0)
    assert len(t) == 60
    assert t.end == s.end
    assert t.start == s.end - 59 * STEP
    cut = s.until(T0 + 100 * STEP + 30.0)
    assert len(cut) == 101
    assert cut.end <= T0 + 100 * STEP + 30.0
    assert cut.values[-1] == 100.0
    assert len(s.until(s.end + DAY_S)) == len(s)
    with pytest.raises(ValueError, match="before the series starts"):
        s.until(T0 - 1.0)


def test_slices_recompute_quality() -> None:
    ts, vs = ramp(minutes(3))
    vs[10:14] = np.nan
    s = prepare(ts, vs, STEP)
    head = s.until(T0 + 20 * STEP)
    assert head.quality.expected_points == 21
    assert head.quality.present_points == 17
    assert head.quality.longest_gap_start == T0 + 10 * STEP
    assert s.tail(3600.0).quality.completeness == 1.0


def test_resample_takes_the_mean_on_an_aligned_grid() -> None:
    s = _series_days(3)
    r = s.resample(300.0)
    assert r.step_s == 300.0
    assert r.start == T0
    assert len(r) == len(s) // 5
    assert r.values[0] == pytest.approx(np.mean(np.arange(5)))
    assert r.values[3] == pytest.approx(np.mean(np.arange(15, 20)))
    assert r.quality.completeness == 1.0
    with pytest.raises(ValueError, match="whole multiple"):
        s.resample(90.0)


def test_has_weekly_history() -> None:
    assert not _series_days(13.9).has_weekly_history()
    assert _series_days(14).has_weekly_history()
    assert _series_days(7).has_weekly_history(PreparationPolicy(weekly_history_s=7 * DAY_S))


# --- sources ---------------------------------------------------------------------------------------------


def _prom_series(ts: np.ndarray, vs: np.ndarray, **labels: str) -> dict[str, object]:
    return {"metric": labels, "values": [[float(t), repr(float(v))] for t, v in zip(ts, vs, strict=True)]}


def test_prometheus_matrix_with_one_series() -> None:
    ts, vs = ramp(minutes(2))
    vs[3] = np.nan  # Prometheus writes "NaN"
    result = [_prom_series(ts, vs, job="web")]
    s = from_prometheus_range(result, STEP)
    assert len(s) == len(ts)
    assert s.quality.present_points == len(ts) - 1
    assert s.values[3] == pytest.approx(3.0)
    whole_answer = {"status": "success", "data": {"resultType": "matrix", "result": result}}
    np.testing.assert_array_equal(from_prometheus_range(whole_answer, STEP).values, s.values)


def test_prometheus_matrix_with_zero_series_is_rejected() -> None:
    with pytest.raises(ValueError, match="returned 0 series; exactly one is needed"):
        from_prometheus_range([], STEP)


def test_prometheus_matrix_with_two_series_is_rejected_naming_them() -> None:
    ts, vs = ramp(10)
    result = [_prom_series(ts, vs, pod="a"), _prom_series(ts, vs, pod="b")]
    with pytest.raises(ValueError, match="returned 2 series") as info:
        from_prometheus_range(result, STEP)
    assert "'pod': 'a'" in str(info.value)
    assert "aggregate" in str(info.value)


def test_prometheus_instant_vector_and_malformed_values_are_rejected() -> None:
    with pytest.raises(ValueError, match="instant vector"):
        from_prometheus_range([{"metric": {}, "value": [T0, "1"]}], STEP)
    with pytest.raises(ValueError, match="range query"):
        from_prometheus_range({"data": {"resultType": "vector", "result": []}}, STEP)
    with pytest.raises(ValueError, match="pairs"):
        from_prometheus_range([{"metric": {}, "values": [[T0, "x"]]}], STEP)


def test_csv_with_iso_timestamps_and_offsets(tmp_path: Path) -> None:
    ts, vs = ramp(minutes(2))
    iso = pd.to_datetime(ts, unit="s", utc=True).tz_convert("America/New_York")
    lines = ["time,requests"] + [
        f"{t.isoformat()},{'' if i == 5 else int(v)}" for i, (t, v) in enumerate(zip(iso, vs, strict=True))
    ]
    path = tmp_path / "series.csv.gz"
    with gzip.open(path, "wt") as fh:
        fh.write("\n".join(lines) + "\n")
    s = from_csv(path)
    assert s.start == T0
    assert s.step_s == STEP  # inferred
    assert s.quality.present_points == len(ts) - 1
    np.testing.assert_allclose(s.values, vs)


def test_csv_with_naive_iso_timestamps_is_read_as_utc() -> None:
    text = "timestamp,value\n2023-11-15 00:00:00,1\n2023-11-15 00:01:00,2\n2023-11-15 00:02:00,3\n"
    s = from_csv(io.StringIO(text), policy=PreparationPolicy(min_history_s=0.0))
    assert s.start == T0
    np.testing.assert_array_equal(s.values, [1.0, 2.0, 3.0])


def test_csv_with_epoch_timestamps_and_a_chosen_value_column() -> None:
    ts, vs = ramp(minutes(2))
    body = "\n".join(f"{int(t)},{v},{-v}" for t, v in zip(ts, vs, strict=True))
    text = "epoch,a,b\n" + body + "\n"
    s = from_csv(io.StringIO(text), value_column="b", step_s=STEP)
    np.testing.assert_array_equal(s.values, -vs)
    with pytest.raises(ValueError, match="several value columns"):
        from_csv(io.StringIO(text))
    with pytest.raises(ValueError, match="not in CSV columns"):
        from_csv(io.StringIO(text), value_column="c")


def test_csv_errors_are_clear() -> None:
    with pytest.raises(ValueError, match="milliseconds"):
        from_csv(io.StringIO("t,v\n1700006400000,1\n1700006460000,2\n"))
    with pytest.raises(ValueError, match="ISO 8601"):
        from_csv(io.StringIO("t,v\nyesterday,1\ntoday,2\n"))
    with pytest.raises(ValueError, match="not a number"):
        from_csv(io.StringIO("t,v\n1700006400,1\n1700006460,lots\n"))


def test_pandas_with_datetime_and_epoch_index() -> None:
    ts, vs = ramp(minutes(2))
    by_time = pd.Series(vs, index=pd.to_datetime(ts, unit="s"))  # naive = UTC
    s = from_pandas(by_time)
    assert s.start == T0
    assert s.step_s == STEP
    np.testing.assert_array_equal(s.values, vs)
    aware = pd.Series(vs, index=pd.to_datetime(ts, unit="s", utc=True).tz_convert("Europe/Paris"))
    assert from_pandas(aware).start == T0
    by_epoch = pd.Series(vs, index=ts)
    np.testing.assert_array_equal(from_pandas(by_epoch, STEP).values, vs)
    with pytest.raises(ValueError, match="DatetimeIndex or epoch seconds"):
        from_pandas(pd.Series([1.0, 2.0], index=["a", "b"]))


def test_absurd_grid_is_refused_instead_of_allocated() -> None:
    with pytest.raises(ValueError, match="use a larger step or a shorter window"):
        prepare([0.0, T0], [1.0, 2.0], 1.0)


def test_prepare_recent_fits_on_the_data_after_a_long_gap() -> None:
    from forecasting.series import prepare_recent

    step = 300.0
    ts = np.arange(0, 6 * 86_400, step)
    values = np.ones_like(ts)
    keep = (ts < 86_400) | (ts >= 86_400 + 3600)  # a one-hour outage on day 2, 5 days of data after it
    series = prepare_recent(ts[keep], values[keep], step)
    assert series.start == 86_400 + 3600
    assert series.quality.completeness == 1.0


def test_prepare_recent_refuses_when_too_little_follows_the_gap() -> None:
    from forecasting.series import prepare_recent

    step = 300.0
    ts = np.arange(0, 6 * 86_400, step)
    keep = (ts < 5 * 86_400) | (ts >= 5 * 86_400 + 3600)
    with pytest.raises(SeriesRefused, match="only the data after the gap"):
        prepare_recent(ts[keep], np.ones(int(keep.sum())), step)
