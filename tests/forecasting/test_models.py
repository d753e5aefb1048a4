from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from forecasting.curve import CurveRangeError, ForecastCurve
from forecasting.models.anchoring import LevelAnchored
from forecasting.models.base import ModelError, anchor_factor
from forecasting.models.baselines import PersistenceForecaster, SeasonalNaiveForecaster
from forecasting.models.prophet_model import ProphetForecaster, ProphetSettings
from forecasting.series import DAY_S, WEEK_S
from forecasting.traces import clean_segments, load_trace
from tests.forecasting.conftest import regular, weekly_sine


def truth(ts: np.ndarray) -> np.ndarray:
    return np.asarray(100 + 30 * np.sin(2 * np.pi * ts / DAY_S) + 15 * np.sin(2 * np.pi * ts / WEEK_S))


def test_prophet_forecasts_a_pure_daily_and_weekly_sine_almost_exactly() -> None:
    history = weekly_sine(21)
    fitted = ProphetForecaster().fit(history, horizon_s=DAY_S)
    future = fitted.curve.slice_from(history.end + history.step_s)
    expected = truth(future.timestamps())
    # The pattern swings by +-45 around 100: a forecast within 1% of the level is "almost exactly".
    assert np.max(np.abs(future.point - expected)) < 1.0
    assert fitted.params["weekly"] is True


def test_prophet_curve_from_parameters_equals_prophet_predict() -> None:
    from prophet import Prophet

    history = weekly_sine(15)
    settings = ProphetSettings(
        holidays_country="US", flat_future_trend=False, split_daily_by_weekend=False, seasonality_mode="multiplicative"
    )
    fitted = ProphetForecaster(settings).fit(history, horizon_s=6 * 3600)
    # The same model, predicted the slow way with Prophet's own code.
    m = Prophet(
        yearly_seasonality=False,
        weekly_seasonality=settings.weekly_fourier_order,
        daily_seasonality=settings.daily_fourier_order,
        seasonality_mode="multiplicative",
        n_changepoints=settings.n_changepoints,
        changepoint_prior_scale=settings.changepoint_prior_scale,
        uncertainty_samples=0,
    )
    m.add_country_holidays(country_name="US")
    m.fit(pd.DataFrame({"ds": pd.to_datetime(history.timestamps(), unit="s"), "y": history.values}))
    yhat = m.predict(pd.DataFrame({"ds": pd.to_datetime(fitted.curve.timestamps(), unit="s")}))["yhat"]
    assert np.allclose(fitted.curve.point, yhat.to_numpy(), rtol=1e-6, atol=1e-6)


def test_prophet_refit_warm_starts_from_the_previous_parameters() -> None:
    history = weekly_sine(4)
    forecaster = ProphetForecaster()
    first = forecaster.fit(history)
    second = forecaster.fit(history, warm_start=first)
    assert first.params["warm_started"] is False
    assert second.params["warm_started"] is True
    assert np.allclose(first.curve.point, second.curve.point, rtol=1e-3)


def test_prophet_keeps_parameters_not_the_training_frame() -> None:
    fitted = ProphetForecaster().fit(weekly_sine(15))
    assert set(fitted.params) >= {"k", "m", "delta", "beta", "sigma_obs", "y_scale"}
    # 15 days at 5 min is 4,320 points; the model keeps the 1-day curve (~300 points x 3) and ~90 floats.
    assert fitted.nbytes < 100_000


def test_prophet_without_two_weeks_uses_daily_seasonality_only() -> None:
    fitted = ProphetForecaster().fit(weekly_sine(5))
    assert fitted.params["weekly"] is False


def test_persistence_is_the_last_value_flat() -> None:
    series = regular(np.array([1.0, 2.0, 3.0, 7.0]), 60.0)
    fitted = PersistenceForecaster().fit(series, horizon_s=600, context_s=120)
    assert fitted.curve.start == series.end - 120
    assert fitted.curve.value_at(series.end + 300) == 7.0
    assert fitted.curve.peak(series.end, 600) == 7.0


def test_seasonal_naive_repeats_the_last_season() -> None:
    step = 3600.0
    values = np.arange(3 * 24, dtype=np.float64)  # three days, hourly, strictly increasing
    series = regular(values, step)
    fitted = SeasonalNaiveForecaster(DAY_S).fit(series, horizon_s=2 * DAY_S, context_s=0)
    # One hour after the end is one day back from then: index 72 - 24 = 48.
    assert fitted.curve.value_at(series.end + step) == 48.0
    # 25 h after the end needs two days back: index 96 - 48 = 48 + ... = 96 - 48.
    assert fitted.curve.value_at(series.end + 25 * step) == 48.0
    assert fitted.curve.value_at(series.end + 24 * step) == 71.0


def test_seasonal_naive_refuses_less_than_one_season() -> None:
    with pytest.raises(ModelError, match=r"7\.0 days of history"):
        SeasonalNaiveForecaster(WEEK_S).fit(weekly_sine(3))


def test_anchor_factor_is_observed_over_fitted_and_clipped() -> None:
    curve = ForecastCurve(
        start=0.0, step_s=60.0, point=np.full(10, 10.0), lower=np.full(10, 8.0), upper=np.full(10, 12.0)
    )
    assert anchor_factor(curve, 120.0, np.array([15.0, 15.0, 15.0])) == pytest.approx(1.5)
    assert anchor_factor(curve, 120.0, np.array([1000.0])) == 4.0
    assert anchor_factor(curve, 120.0, np.array([])) == 1.0
    zero = ForecastCurve(start=0.0, step_s=60.0, point=np.zeros(3), lower=np.zeros(3), upper=np.zeros(3))
    assert anchor_factor(zero, 0.0, np.array([5.0])) == 1.0


def test_level_anchoring_corrects_a_level_shift() -> None:
    history = weekly_sine(9)
    shifted = regular(history.values * 1.5, history.step_s, history.start)
    fitted = LevelAnchored(SeasonalNaiveForecaster(WEEK_S), window_s=3600).fit(history)
    assert fitted.name == "seasonal_naive_1w+anchor"
    # The last hour came in 50% above the model's own fit of it: the factor says so.
    obs = shifted.values[-12:]
    factor = anchor_factor(fitted.curve, shifted.end - 11 * shifted.step_s, obs)
    assert factor == pytest.approx(1.5, rel=1e-9)


def test_curve_peak_and_window_bounds() -> None:
    curve = ForecastCurve(
        start=1000.0, step_s=60.0, point=np.arange(10.0), lower=np.zeros(10), upper=np.arange(10.0) + 1
    )
    assert curve.peak(1000.0, 120.0) == 2.0
    assert curve.peak(1030.0, 120.0) == 2.0  # the grid point at or before the start counts
    assert curve.peak_upper(1000.0, 0.0) == 1.0
    with pytest.raises(CurveRangeError):
        curve.peak(1000.0, 3600.0)
    with pytest.raises(CurveRangeError):
        curve.peak(900.0, 60.0)


@pytest.mark.slow
def test_prophet_on_the_real_nasa_trace_follows_the_next_day() -> None:
    start, _ = clean_segments("nasa-http-1995", min_days=15)[0]
    series = load_trace("nasa-http-1995", start=start, end=start + 15 * DAY_S - 60)
    actual = load_trace("nasa-http-1995", start=series.end + 60, end=series.end + DAY_S)
    fitted = ProphetForecaster().fit(series, horizon_s=DAY_S)
    pred = fitted.curve.point[fitted.curve.index_at(actual.start) :][: len(actual)]
    # Hourly means: the daily cycle (trough ~4x below the peak) must be followed within 25% WAPE.
    a = actual.values[: len(pred) // 60 * 60].reshape(-1, 60).mean(axis=1)
    p = pred[: len(a) * 60].reshape(-1, 60).mean(axis=1)
    assert np.abs(p - a).sum() / a.sum() < 0.25
    assert np.corrcoef(p, a)[0, 1] > 0.85
