from __future__ import annotations

import numpy as np
import pytest

from forecasting.pipeline import FitConfig, fit_serving_model
from forecasting.series import DAY_S
from forecasting.serving import ServingFormatError, ServingModel
from forecasting.traces import clean_segments, load_trace
from tests.forecasting.conftest import weekly_sine

QUICK = FitConfig(backtest_eval_s=DAY_S, backtest_refit_every_s=DAY_S)


def test_fit_serving_model_on_the_real_taxi_trace() -> None:
    series = load_trace("nyc-taxi")
    history = series.until(series.start + 20 * DAY_S)
    now = history.end
    model = fit_serving_model("taxi", history, QUICK, clock=lambda: now)
    assert model.name in QUICK.candidates
    assert 0.0 <= model.confidence <= 1.0
    assert set(model.candidates) >= {"prophet+anchor", "persistence", "seasonal_naive_1w"}
    # The served curve covers the next day, and a peak lookup is plain indexing.
    assert model.covers(now, DAY_S - history.step_s)
    assert model.peak(now, 3600.0) > 0
    assert model.accuracy["selected_at"] == now
    assert "mase_30m" in model.accuracy


def test_refit_within_the_reselection_interval_fits_only_the_chosen_model() -> None:
    history = weekly_sine(16)
    t0 = history.end
    first = fit_serving_model("s", history, QUICK, clock=lambda: t0)
    again = fit_serving_model("s", history, QUICK, previous=first, clock=lambda: t0 + 3600)
    assert again.name == first.name
    assert again.accuracy["selected_at"] == t0
    later = fit_serving_model("s", history, QUICK, previous=first, clock=lambda: t0 + 2 * DAY_S)
    assert later.accuracy["selected_at"] == t0 + 2 * DAY_S


def test_short_history_is_served_with_zero_confidence_and_says_why() -> None:
    history = weekly_sine(2.5)
    model = fit_serving_model("s", history, QUICK, clock=lambda: history.end)
    assert model.confidence == 0.0
    assert "days missing" in str(model.model.params["note"])


def test_serving_model_json_round_trip() -> None:
    history = weekly_sine(16)
    model = fit_serving_model("key/1", history, QUICK, clock=lambda: history.end)
    restored = ServingModel.from_json(model.to_json())
    assert restored.key == "key/1"
    assert restored.name == model.name
    assert restored.confidence == model.confidence
    assert np.array_equal(restored.curve.point, model.curve.point)
    assert restored.peak(history.end, 1800.0) == model.peak(history.end, 1800.0)


def test_serving_model_refuses_other_versions() -> None:
    history = weekly_sine(3)
    doc = fit_serving_model("k", history, QUICK, clock=lambda: history.end).to_json()
    doc["version"] = 999
    with pytest.raises(ServingFormatError, match="version 999"):
        ServingModel.from_json(doc)


@pytest.mark.slow
def test_on_nasa_the_chosen_model_beats_persistence() -> None:
    start, _ = clean_segments("nasa-http-1995", min_days=16)[0]
    history = load_trace("nasa-http-1995", start=start, end=start + 17 * DAY_S - 60)
    model = fit_serving_model("nasa", history, QUICK, clock=lambda: history.end)
    assert model.candidates[model.name] <= model.candidates["persistence"]


def test_served_band_is_the_measured_noise_and_quantile_peaks_read_it() -> None:
    series = load_trace("nyc-taxi")
    history = series.until(series.start + 20 * DAY_S)
    model = fit_serving_model("taxi", history, QUICK, clock=lambda: history.end)
    assert {"noise_c", "noise_p"} <= set(model.accuracy)
    now = history.end
    point = model.peak(now, 3600.0)
    upper = model.peak(now, 3600.0, quantile=0.9)
    higher = model.peak(now, 3600.0, quantile=0.97)
    assert point < upper < higher
    # 0.9 is exactly the top of the 10th-90th percentile band.
    assert upper == pytest.approx(model.curve.peak_upper(now, 3600.0))
