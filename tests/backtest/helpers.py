"""Small real ingredients for backtest tests: a fast fit function built from the library's own forecasters."""

from __future__ import annotations

from forecasting.models.anchoring import LevelAnchored
from forecasting.models.baselines import SeasonalNaiveForecaster
from forecasting.series import DAY_S, WEEK_S, PreparedSeries
from forecasting.serving import ServingModel
from scaler_service.backtest.strategies import FitFunction


def seasonal_naive_fit(confidence: float = 0.95, season_s: float = WEEK_S, anchored: bool = True) -> FitFunction:
    """Fits the library's seasonal naive forecaster, with level anchoring by default (milliseconds, unlike
    Prophet)."""
    base = SeasonalNaiveForecaster(season_s)
    forecaster = LevelAnchored(base, 3600.0) if anchored else base

    def fit(history: PreparedSeries, now: float, previous: ServingModel | None) -> ServingModel:
        model = forecaster.fit(history, horizon_s=2 * DAY_S)
        return ServingModel(key="test", model=model, confidence=confidence, fitted_at=now)

    return fit
