"""Baselines every smarter model must beat: persistence and seasonal naive (one day, one week back)."""

from __future__ import annotations

import numpy as np

from forecasting.curve import ForecastCurve
from forecasting.models.base import DEFAULT_CONTEXT_S, DEFAULT_HORIZON_S, FittedModel, Forecaster, ModelError
from forecasting.series import DAY_S, WEEK_S, PreparedSeries

Z_80 = 1.2815515655446004


class PersistenceForecaster(Forecaster):
    """Tomorrow looks like now: the last value, flat. Anchored to one step, it tracks the newest value."""

    name = "persistence"
    cheap = True

    def fit(
        self,
        history: PreparedSeries,
        *,
        horizon_s: float = DEFAULT_HORIZON_S,
        context_s: float = DEFAULT_CONTEXT_S,
        warm_start: FittedModel | None = None,
    ) -> FittedModel:
        if len(history) < 2:
            raise ModelError("persistence needs at least two points")
        step = history.step_s
        n_ctx = int(round(context_s / step))
        n_fut = int(round(horizon_s / step))
        y = history.values
        ctx = y[-n_ctx - 1 : -1] if n_ctx < len(y) else np.full(n_ctx, y[0])
        ctx = np.concatenate([np.full(n_ctx - len(ctx), ctx[0] if len(ctx) else y[-1]), ctx])
        point = np.concatenate([ctx, np.full(n_fut + 1, y[-1])])
        sigma = float(np.std(np.diff(y))) if len(y) > 2 else 0.0
        ahead = np.concatenate([np.ones(n_ctx), np.sqrt(np.maximum(np.arange(n_fut + 1, dtype=np.float64), 1.0))])
        band = Z_80 * sigma * ahead
        curve = ForecastCurve(
            start=history.end - n_ctx * step,
            step_s=step,
            point=point,
            lower=np.maximum(point - band, 0.0),
            upper=point + band,
        )
        # Anchored to a single step, the flat curve is rescaled to the newest observation: true persistence.
        return FittedModel(name=self.name, trained_until=history.end, curve=curve, anchor_window_s=step)


class SeasonalNaiveForecaster(Forecaster):
    """The value one season back (a day or a week), repeated for as many seasons as the horizon needs."""

    cheap = True

    def __init__(self, season_s: float) -> None:
        self.season_s = season_s
        self.name = (
            "seasonal_naive_1w"
            if season_s == WEEK_S
            else ("seasonal_naive_1d" if season_s == DAY_S else f"seasonal_naive_{int(season_s)}s")
        )

    def min_history_s(self) -> float:
        return self.season_s

    def fit(
        self,
        history: PreparedSeries,
        *,
        horizon_s: float = DEFAULT_HORIZON_S,
        context_s: float = DEFAULT_CONTEXT_S,
        warm_start: FittedModel | None = None,
    ) -> FittedModel:
        step = history.step_s
        season = int(round(self.season_s / step))
        if len(history) < season + 1:
            raise ModelError(
                f"{self.name} needs {self.season_s / DAY_S:.1f} days of history, got {history.span_s / DAY_S:.1f}"
            )
        n_ctx = int(round(context_s / step))
        n_fut = int(round(horizon_s / step))
        y = history.values
        last = len(y) - 1
        idx = last - n_ctx + np.arange(n_ctx + n_fut + 1)
        # Step each index back by whole seasons until it lands on an observed point (<= last and one season back).
        back = np.maximum(1, np.ceil((idx - last) / season).astype(np.int64) + (idx <= last))
        src = idx - back * season
        src = np.clip(src, 0, last)
        point = y[src].astype(np.float64)
        hist_err = y[season:] - y[:-season]
        sigma = float(np.std(hist_err)) if len(hist_err) > 1 else 0.0
        band = Z_80 * sigma * np.sqrt(np.maximum(back, 1))
        curve = ForecastCurve(
            start=history.end - n_ctx * step,
            step_s=step,
            point=point,
            lower=np.maximum(point - band, 0.0),
            upper=point + band,
        )
        return FittedModel(name=self.name, trained_until=history.end, curve=curve)
