"""The live forecast-vs-actual score the engine (and the capacity backtest) gate on."""

from __future__ import annotations

import pytest

from scaler_service.decision import LIVE_WINDOWS, live_accuracy, window_steps


def test_window_means_not_points() -> None:
    # Noisy points around a right mean: every point is 50 % off, every 10-point window mean is exact.
    compared = {i: (10.0, 5.0 if i % 2 else 15.0) for i in range(40)}
    acc = live_accuracy(compared, 10)
    assert acc.compared == 4
    assert acc.wmape == pytest.approx(0.0)
    assert acc.confidence == pytest.approx(1.0)
    assert acc.misses_over_20 == 0


def test_misses_and_confidence() -> None:
    # windows 0-2 exact, window 3 forecast 30 % high
    compared = {i: (10.0 if i < 30 else 13.0, 10.0) for i in range(40)}
    acc = live_accuracy(compared, 10)
    assert acc.misses_over_20 == 1
    assert acc.wmape == pytest.approx(3.0 / 40.0)
    assert acc.confidence == pytest.approx(1 - 3.0 / 40.0)


def test_too_few_windows_give_no_confidence_and_the_filling_window_waits() -> None:
    compared = {i: (20.0, 10.0) for i in range(25)}  # windows 0, 1 complete; window 2 half full (newest)
    acc = live_accuracy(compared, 10)
    assert acc.compared == 2
    assert acc.confidence is None
    assert acc.wmape == pytest.approx(1.0)
    assert live_accuracy({}, 10).confidence is None


def test_only_the_last_windows_count() -> None:
    old_bad = {i: (100.0, 10.0) for i in range(50)}
    recent_good = {i: (10.0, 10.0) for i in range(50, 50 + 10 * LIVE_WINDOWS)}
    acc = live_accuracy({**old_bad, **recent_good}, 10)
    assert acc.compared == LIVE_WINDOWS
    assert acc.confidence == pytest.approx(1.0)


def test_zero_actuals() -> None:
    assert live_accuracy({i: (0.0, 0.0) for i in range(30)}, 10).confidence == 1.0
    assert live_accuracy({i: (5.0, 0.0) for i in range(30)}, 10).confidence == 0.0


def test_the_gate_judges_over_forecasts_only() -> None:
    # windows 0-1 forecast 50 % high, windows 2-3 forecast 50 % low
    compared = {i: (15.0 if i < 20 else 5.0, 10.0) for i in range(40)}
    acc = live_accuracy(compared, 10)
    assert acc.wmape == pytest.approx(0.5)
    assert acc.confidence == pytest.approx(0.5)
    assert acc.overshoot == pytest.approx(10.0 / 40.0)
    assert acc.gate_confidence == pytest.approx(0.75)
    low = live_accuracy({i: (2.0, 10.0) for i in range(40)}, 10)
    assert low.confidence == pytest.approx(0.2)
    assert low.overshoot == 0.0 and low.gate_confidence == 1.0
    assert live_accuracy({i: (20.0, 10.0) for i in range(25)}, 10).gate_confidence is None  # 2 windows: too few


def test_an_under_forecast_is_served_as_the_observed_value_whatever_the_gate_says() -> None:
    import numpy as np

    from forecasting.curve import ForecastCurve
    from forecasting.models.base import FittedModel
    from forecasting.serving import ServingModel
    from scaler_service.decision import Reason, predictive_value

    point = np.full(10, 4.0)
    curve = ForecastCurve(start=0.0, step_s=60.0, point=point, lower=point - 1, upper=point + 1)
    model = ServingModel("k", FittedModel("m", 60.0, curve), confidence=0.9, fitted_at=0.0)
    common = {"now": 60.0, "observed": 10.0, "model": model, "factor": 1.0, "lead_s": 120.0, "min_confidence": 0.8}
    open_gate = predictive_value(**common, live_confidence=1.0)  # type: ignore[arg-type]
    closed_gate = predictive_value(**common, live_confidence=0.1)  # type: ignore[arg-type]
    assert open_gate[0] == closed_gate[0] == 10.0
    assert (open_gate[1], closed_gate[1]) == (Reason.FORECAST, Reason.LOW_CONFIDENCE)


def test_window_steps() -> None:
    assert window_steps(600, 60) == 10
    assert window_steps(600, 1800) == 1
    assert window_steps(1, 1) == 1


def test_predict_quantile_serves_the_peak_of_the_upper_band() -> None:
    import numpy as np

    from forecasting.curve import ForecastCurve
    from forecasting.models.base import FittedModel
    from forecasting.serving import ServingModel
    from scaler_service.decision import predictive_value

    point = np.array([10.0, 20.0, 30.0, 20.0])
    curve = ForecastCurve(start=0.0, step_s=60.0, point=point, lower=point - 5, upper=point + 5)
    model = ServingModel("k", FittedModel("m", 60.0, curve), confidence=0.9, fitted_at=0.0)
    common = {"now": 60.0, "observed": 12.0, "model": model, "factor": 1.0, "lead_s": 120.0, "min_confidence": 0.8}
    assert predictive_value(**common, quantile=0.5)[0] == 30.0  # type: ignore[arg-type]
    assert predictive_value(**common, quantile=0.9)[0] == 35.0  # type: ignore[arg-type]
    # Never below the observed value, whatever the quantile.
    assert predictive_value(**{**common, "observed": 50.0}, quantile=0.9)[0] == 50.0  # type: ignore[arg-type]


def test_misses_of_the_last_hour_are_counted_apart() -> None:
    # 12 windows of 10 points: windows 0-3 miss by 50 % (over an hour ago), window 9 and 11 miss by 30 %.
    missed = {0, 1, 2, 3, 9, 11}
    compared = {i: (15.0 if i // 10 in {0, 1, 2, 3} else 13.0 if i // 10 in missed else 10.0, 10.0) for i in range(120)}
    acc = live_accuracy(compared, 10)
    assert acc.misses_over_20 == 6
    assert acc.recent_misses_over_20 == 2  # windows 6-11 are the last hour's six
