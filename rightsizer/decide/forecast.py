"""The forecast statistic: P95 of a VM's utilisation over the next week, and how far to trust it.

One function, :func:`forecast_p95`, chooses the method from the settings:

- ``library``: ``forecasting.pipeline.fit_serving_model`` (backtests its candidates, picks one, fits it)
  with a one-week horizon; the statistic is the P95 of the point forecast over the next week and the
  accuracy is the model's backtest confidence. Falls back to ``seasonal-profile`` (and says so) when the
  library cannot fit.
- ``seasonal-profile``: cheap and P95-oriented, for large fleets. Next week repeats the lookback (its daily
  and weekly shape, i.e. a seasonal-naive forecast at the lookback's period) shifted by the upward level
  trend of the daily means (Theil-Sen slope, projected to the middle of next week; a downward trend is
  ignored so a fading workload is never sized on its extrapolated decline). Its accuracy is a backtest of
  the same rule: learn on all but the last two days, predict their P95, and score
  ``1 - |predicted - actual| / max(actual, 10 points)``.
- ``none``: no forecast (observed statistic only), accuracy 1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from forecasting.series import PreparedSeries
from rightsizer.inputs import FloatArray
from rightsizer.settings import DAY_S, ForecastSettings

BACKTEST_HOLDOUT_S = 2 * DAY_S
ACCURACY_FLOOR_POINTS = 10.0
"""Errors are judged against at least 10 percentage points, so a 1 % vs 2 % miss on an idle VM is not 50 %."""


@dataclass(frozen=True, slots=True)
class ForecastStat:
    p95: float | None
    """Forecast P95 over the horizon, same unit as the series (percent); None for method ``none``."""
    accuracy: float
    """In [0, 1]: how well the method predicted this series' recent past."""
    method: str
    note: str = ""
    error_points: float = 0.0
    """The method's backtest error in percentage points (the confidence adds it to the week's uncertainty):
    ``library``: 1 - confidence is the WAPE of its hourly forecasts, so the error is WAPE x the series' mean
    (the mean absolute error); ``seasonal-profile``: |predicted - actual| P95 on the held-out days."""


def _daily_means(values: FloatArray, step_s: float) -> FloatArray:
    per_day = max(1, round(DAY_S / step_s))
    n_days = len(values) // per_day
    if n_days == 0:
        return np.empty(0)
    tail = values[len(values) - n_days * per_day :].reshape(n_days, per_day)
    with np.errstate(all="ignore"):
        return np.asarray(np.nanmean(tail, axis=1), dtype=np.float64)


def theil_sen_slope(y: FloatArray) -> float:
    """Median of pairwise slopes (per index step); 0 for fewer than 2 finite points."""
    idx = np.flatnonzero(np.isfinite(y))
    if len(idx) < 2:
        return 0.0
    i, j = np.triu_indices(len(idx), k=1)
    slopes = (y[idx[j]] - y[idx[i]]) / (idx[j] - idx[i])
    return float(np.median(slopes))


def profile_p95(values: FloatArray, step_s: float, horizon_s: float, quantile: float = 0.95) -> float:
    """Seasonal-naive P95 over the horizon plus the upward daily-mean trend (see module docstring)."""
    finite = values[np.isfinite(values)]
    if len(finite) == 0:
        return math.nan
    base = float(np.quantile(finite, quantile))
    slope_per_day = max(0.0, theil_sen_slope(_daily_means(values, step_s)))
    span_days = len(values) * step_s / DAY_S
    # From the middle of the lookback (where the observed P95 sits) to the middle of the horizon.
    shift_days = span_days / 2 + horizon_s / DAY_S / 2
    return base + slope_per_day * shift_days


def _accuracy(predicted: float, actual: float) -> float:
    if not (math.isfinite(predicted) and math.isfinite(actual)):
        return 0.0
    return max(0.0, 1.0 - abs(predicted - actual) / max(actual, ACCURACY_FLOOR_POINTS))


def profile_forecast(series: PreparedSeries, settings: ForecastSettings) -> ForecastStat:
    values = series.values
    horizon_s = settings.horizon_days * DAY_S
    p95 = profile_p95(values, series.step_s, horizon_s, settings.profile_quantile)
    holdout = round(BACKTEST_HOLDOUT_S / series.step_s)
    if len(values) < holdout + round(2 * DAY_S / series.step_s):
        # Unjudged: its error is taken as the whole statistic.
        return ForecastStat(p95, 0.0, "seasonal-profile", "too short to backtest (needs 4 days)", abs(p95))
    train, test = values[:-holdout], values[-holdout:]
    predicted = profile_p95(train, series.step_s, BACKTEST_HOLDOUT_S, settings.profile_quantile)
    finite = test[np.isfinite(test)]
    actual = float(np.quantile(finite, settings.profile_quantile)) if len(finite) else math.nan
    error = abs(predicted - actual) if math.isfinite(predicted) and math.isfinite(actual) else abs(p95)
    return ForecastStat(p95, _accuracy(predicted, actual), "seasonal-profile", error_points=error)


def _filled(series: PreparedSeries) -> PreparedSeries:
    """Long gaps (NaN after preparation) linearly bridged: the library fits on complete grids."""
    v = series.values
    bad = ~np.isfinite(v)
    if not bad.any():
        return series
    good = np.flatnonzero(~bad)
    filled = v.copy()
    filled[bad] = np.interp(np.flatnonzero(bad), good, v[good])
    return replace(series, values=filled)


def library_forecast(key: str, series: PreparedSeries, now: float, settings: ForecastSettings) -> ForecastStat:
    from forecasting.models.base import ModelError
    from forecasting.pipeline import FitConfig, fit_serving_model

    horizon_s = settings.horizon_days * DAY_S
    # Rightsizing judges hours, not the scaler's 10-minute windows, and one backtest refit per candidate
    # keeps a fit near 1.5 s on 7 days at 5 min (the library default refits every 12 h: ~5 s).
    config = FitConfig(
        horizon_s=horizon_s,
        training_window_s=max(series.span_s, 2 * DAY_S),
        backtest_leads_s=(3600.0,),
        selection_lead_s=3600.0,
        peak_window_s=3600.0,
        backtest_refit_every_s=2 * DAY_S,
    )
    if settings.library_candidates:
        config = replace(config, candidates=tuple(settings.library_candidates))
    try:
        model = fit_serving_model(key, _filled(series), config, clock=lambda: now)
        curve = model.curve
        start = max(now, curve.start)
        window = curve.point[curve.window(start, min(horizon_s, curve.end - start))]
        # No level anchoring here: it corrects short leads by the last hour, and one busy hour must not
        # resize a VM for a week.
        window = window[np.isfinite(window)]
        if len(window) == 0:
            raise ModelError("forecast curve has no finite point over the horizon")
        confidence = float(model.confidence)
        finite = series.values[np.isfinite(series.values)]
        mean = float(finite.mean()) if len(finite) else 0.0
        return ForecastStat(
            float(np.quantile(window, 0.95)),
            confidence,
            f"library:{model.name}",
            error_points=max(0.0, 1.0 - confidence) * abs(mean),
        )
    except (NotImplementedError, ModelError, ValueError, LookupError) as exc:
        fallback = profile_forecast(series, settings)
        return replace(
            fallback,
            note=f"library forecast unavailable ({type(exc).__name__}: {exc}); used seasonal-profile",
        )


def forecast_p95(key: str, series: PreparedSeries, now: float, settings: ForecastSettings) -> ForecastStat:
    """The one switch between forecast methods (see module docstring)."""
    if settings.method == "none":
        return ForecastStat(None, 1.0, "none")
    if settings.method == "seasonal-profile":
        return profile_forecast(series, settings)
    return library_forecast(key, series, now, settings)
