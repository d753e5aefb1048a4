from __future__ import annotations

import numpy as np
import pytest

from forecasting.backtest import (
    BacktestResult,
    BacktestSettings,
    LeadMetrics,
    NotEnoughHistory,
    naive_scale,
    rolling_origin,
)
from forecasting.models.anchoring import LevelAnchored
from forecasting.models.baselines import PersistenceForecaster, SeasonalNaiveForecaster
from forecasting.pipeline import choose_model
from forecasting.series import DAY_S, WEEK_S
from tests.forecasting.conftest import regular, weekly_sine

QUICK = BacktestSettings(eval_s=DAY_S, min_eval_s=6 * 3600, refit_every_s=12 * 3600, origin_every_s=1800)


def test_naive_scale_is_the_mean_absolute_one_step_change() -> None:
    assert naive_scale(np.array([1.0, 3.0, 2.0, 2.0])) == pytest.approx(1.0)


def test_seasonal_naive_is_perfect_on_a_purely_weekly_series() -> None:
    series = weekly_sine(16)
    # Only the weekly term: a week back is exactly right, a day back is not.
    t = series.timestamps()
    weekly_only = regular(100 + 15 * np.sin(2 * np.pi * t / WEEK_S), series.step_s, series.start)
    results = rolling_origin(weekly_only, [SeasonalNaiveForecaster(WEEK_S), SeasonalNaiveForecaster(DAY_S)], QUICK)
    assert results["seasonal_naive_1w"].mase(1800.0) == pytest.approx(0.0, abs=1e-9)
    assert results["seasonal_naive_1w"].confidence == pytest.approx(1.0)
    assert results["seasonal_naive_1d"].mase(1800.0) > 1.0


def test_persistence_errors_and_under_forecast_share_on_a_ramp() -> None:
    # A steady ramp: persistence is always behind by exactly lead/step increments.
    series = regular(np.arange(16 * 288, dtype=np.float64), 300.0)
    results = rolling_origin(series, [PersistenceForecaster()], QUICK)
    m = results["persistence"].by_lead[1800.0]
    assert m.mase == pytest.approx(6.0)  # 30 min = 6 steps behind, scale = 1 per step
    assert m.under_share == pytest.approx(1.0)


def test_anchored_model_beats_its_base_after_a_level_shift() -> None:
    series = weekly_sine(16)
    values = series.values.copy()
    values[-3 * 288 :] *= 1.4  # traffic grew 40% three days ago
    shifted = regular(values, series.step_s, series.start)
    base = SeasonalNaiveForecaster(WEEK_S)
    results = rolling_origin(shifted, [base, LevelAnchored(base)], QUICK)
    assert results["seasonal_naive_1w+anchor"].mase(1800.0) < 0.5 * results["seasonal_naive_1w"].mase(1800.0)


def test_too_short_history_says_how_much_is_missing() -> None:
    with pytest.raises(NotEnoughHistory, match=r"days missing"):
        rolling_origin(weekly_sine(2), [PersistenceForecaster()], QUICK)


def _result(name: str, mase: float) -> BacktestResult:
    m = LeadMetrics(mase=mase, smape=0.1, wape=0.1, coverage=0.8, under_share=0.5, n=10)
    return BacktestResult(name, {1800.0: m}, 0.1, 0.1, 0.04, 10, 1, 0.0, 1.0)


def test_model_choice_prefers_prophet_unless_a_baseline_is_clearly_better() -> None:
    close = {"prophet+anchor": _result("prophet+anchor", 1.00), "persistence": _result("persistence", 0.99)}
    assert choose_model(close, 1800.0, 0.02) == "prophet+anchor"
    clear = {"prophet+anchor": _result("prophet+anchor", 1.00), "persistence": _result("persistence", 0.97)}
    assert choose_model(clear, 1800.0, 0.02) == "persistence"
    worse = {"prophet+anchor": _result("prophet+anchor", 0.80), "persistence": _result("persistence", 1.2)}
    assert choose_model(worse, 1800.0, 0.02) == "prophet+anchor"


def test_confidence_is_one_minus_window_wape_and_bounded() -> None:
    assert _result("x", 1.0).confidence == pytest.approx(0.9)
    bad = BacktestResult("x", {}, 1.0, 3.0, 2.5, 1, 1, 0.0, 1.0)
    assert bad.confidence == 0.0
    assert _result("x", 1.0).over_forecast_confidence == pytest.approx(0.96)
    assert bad.over_forecast_confidence == 0.0


@pytest.mark.parametrize("name", ["seasonal_naive_1w+anchor", "seasonal_naive_1d", "persistence"])
def test_one_pass_baseline_backtest_equals_refitting_at_every_origin(name: str) -> None:
    from forecasting.backtest import _direct_predictions, _refit_predictions, evaluation_window
    from forecasting.pipeline import FitConfig, make_forecaster

    series = weekly_sine(16)
    noisy = regular(series.values + np.random.default_rng(7).normal(0, 5, len(series)), series.step_s, series.start)
    forecaster = make_forecaster(name, FitConfig())
    start, end = evaluation_window(noisy, QUICK)
    step = noisy.step_s
    origins = np.arange(int(np.ceil((start - noisy.start) / step)), int((end - noisy.start) // step) + 1, 6)
    leads = np.array([2, 6, 12])
    direct = _direct_predictions(forecaster, noisy.values, origins, leads, 2, step, QUICK)
    assert direct is not None
    refit = _refit_predictions(forecaster, noisy, origins, leads, 2, QUICK)
    for a, b in zip(direct[:4], refit[:4], strict=True):
        assert np.allclose(a, b, rtol=1e-9, atol=1e-9)


def test_noise_model_recovers_poisson_like_spread() -> None:
    from forecasting.backtest import fit_noise

    rng = np.random.default_rng(3)
    mu = rng.uniform(5, 500, 4000)
    actual = rng.poisson(mu).astype(np.float64)
    m = LeadMetrics(mase=1.0, smape=0.1, wape=0.1, coverage=0.8, under_share=0.5, n=len(mu))
    result = BacktestResult(
        "x",
        {600.0: m},
        0.1,
        0.1,
        0.05,
        len(mu),
        1,
        0.0,
        1.0,
        abs_errors=np.abs(mu - actual)[:, None],
        predictions=mu[:, None],
    )
    noise = fit_noise(result)
    assert noise is not None
    # Poisson: sigma = sqrt(mu), i.e. c = 1, p = 0.5.
    assert noise.p == pytest.approx(0.5, abs=0.05)
    assert noise.c == pytest.approx(1.0, rel=0.15)
