"""The forecast statistic: methods, the library path, the fallback, and max(observed, forecast)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rightsizer.decide.forecast import forecast_p95, profile_p95, theil_sen_slope
from rightsizer.decide.usage_stats import usage_stats
from rightsizer.inputs import load_inventory_with_as_of, load_metrics_csv
from rightsizer.metrics import VmUsage, usage_from_samples
from rightsizer.settings import DAY_S, ForecastSettings, MetricsSettings, Settings

EXAMPLES = Path(__file__).resolve().parents[2] / "rightsizer" / "examples"
STEP = 300.0


def test_theil_sen_ignores_one_outlier() -> None:
    y = np.array([1.0, 2.0, 3.0, 40.0, 5.0, 6.0])
    assert theil_sen_slope(y) == pytest.approx(1.0)


def test_profile_adds_upward_trend_and_ignores_downward() -> None:
    t = np.arange(int(7 * DAY_S / STEP))
    daily = 10 + 5 * np.sin(2 * np.pi * t * STEP / DAY_S)
    flat = profile_p95(daily, STEP, 7 * DAY_S)
    assert flat == pytest.approx(np.quantile(daily, 0.95), abs=0.2)
    rising = daily + t * STEP / DAY_S  # +1 point per day
    assert profile_p95(rising, STEP, 7 * DAY_S) == pytest.approx(np.quantile(rising, 0.95) + 7.0, abs=0.5)
    falling = daily + 20 - 2 * t * STEP / DAY_S
    assert profile_p95(falling, STEP, 7 * DAY_S) == pytest.approx(np.quantile(falling, 0.95), abs=1e-9)


@pytest.fixture(scope="module")
def real_usage() -> VmUsage:
    _, as_of = load_inventory_with_as_of(EXAMPLES / "fleet-inventory.json")
    assert as_of is not None
    raw = load_metrics_csv(EXAMPLES / "fleet-metrics.csv.gz")["bb-89"]
    u = usage_from_samples("bb-89", raw.timestamps, raw.cpu_percent, raw.memory_percent, MetricsSettings(), as_of)
    assert isinstance(u, VmUsage)
    return u


def test_library_method_uses_the_forecasting_pipeline(real_usage: VmUsage) -> None:
    now = real_usage.cpu.end + STEP
    stat = forecast_p95("bb-89/cpu", real_usage.cpu, now, ForecastSettings(method="library"))
    assert stat.method.startswith("library:seasonal_naive")
    assert stat.p95 is not None and 0 < stat.p95 < 100
    assert 0.0 <= stat.accuracy <= 1.0 and stat.note == ""


def test_library_failure_falls_back_to_the_profile_and_says_so(real_usage: VmUsage) -> None:
    now = real_usage.cpu.end + STEP
    broken = ForecastSettings(method="library", library_candidates=("no_such_model",))
    stat = forecast_p95("bb-89/cpu", real_usage.cpu, now, broken)
    assert stat.method == "seasonal-profile"
    assert stat.note.startswith("library forecast unavailable (ValueError") and "used seasonal-profile" in stat.note


def test_profile_method_backtests_its_accuracy(real_usage: VmUsage) -> None:
    stat = forecast_p95("x", real_usage.cpu, real_usage.cpu.end, ForecastSettings(method="seasonal-profile"))
    assert stat.method == "seasonal-profile" and 0.0 < stat.accuracy <= 1.0


def test_statistic_is_max_of_observed_and_forecast() -> None:
    now = 1_790_000_000.0
    ts = np.arange(now - 7 * DAY_S + STEP, now + 1, STEP)
    rising = 20 + 3 * (ts - ts[0]) / DAY_S  # +3 points a day: next week is busier than the last
    u = usage_from_samples("r", ts, rising, None, MetricsSettings(), now)
    assert isinstance(u, VmUsage)
    s = usage_stats(u, now, Settings(forecast=ForecastSettings(method="seasonal-profile")))
    assert s.cpu_forecast_p95 is not None and s.cpu_forecast_p95 > s.cpu_observed_p95
    assert s.cpu == s.cpu_forecast_p95
    falling = usage_from_samples("f", ts, 60 - 3 * (ts - ts[0]) / DAY_S, None, MetricsSettings(), now)
    assert isinstance(falling, VmUsage)
    s2 = usage_stats(falling, now, Settings(forecast=ForecastSettings(method="library")))
    assert s2.cpu == max(s2.cpu_observed_p95, s2.cpu_forecast_p95 or 0.0)
    assert s2.cpu >= s2.cpu_observed_p95
    assert s2.memory is None  # not measured
    none = usage_stats(u, now, Settings(forecast=ForecastSettings(method="none")))
    assert none.cpu == none.cpu_observed_p95 and none.cpu_forecast_error == 0.0
    assert none.evidence is not None and none.evidence.cpu_p95.n == 5  # 7 days: 5 walk-forward windows
