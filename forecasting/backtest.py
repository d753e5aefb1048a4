"""Rolling-origin backtests, accuracy metrics, model choice and the confidence score.

The backtest replays how a model is used in serving: it is fitted at a *fit origin* on the trailing
training window, then queried at every *forecast origin* until the next refit, re-anchored at each one with
the observations available at that moment. Nothing after a forecast origin is ever used to make that
forecast.

Metrics, per lead h, over all forecast origins:

- MASE: mean absolute error / mean absolute one-step naive error on the data before the evaluation window;
- sMAPE: mean of 2|e| / (|y| + |ŷ|), points where both are 0 left out;
- WAPE: sum |e| / sum |y|;
- coverage: share of actuals inside the model's 80% band;
- under-forecast share: share of points with ŷ < y.

Confidence (what the scaler and the rightsizer gate on) judges the forecast of the *mean over the serving
window* (``peak_window_s``, default 10 min, the scaler's default horizon) made at every forecast origin,
against the mean that then happened:

    confidence = 1 - sum |mean(ŷ) - mean(y)| / sum |mean(y)|          (1 - WAPE of the window means)

The over-forecast part of that error is kept too:

    overshoot = sum max(0, mean(ŷ) - mean(y)) / sum |mean(y)|
    over-forecast confidence = 1 - overshoot

The scaler serves max(forecast, observed), so a forecast that runs low changes nothing it serves; it gates
on the over-forecast confidence. The rightsizer gates on the full confidence. The scaler tracks both live, on
the same 10-minute window means, as data arrive. The share of windows more than 20 % off is reported as the
miss rate.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from forecasting.curve import FloatArray
from forecasting.models.anchoring import LevelAnchored
from forecasting.models.base import ANCHOR_FACTOR_BOUNDS as ANCHOR_BOUNDS
from forecasting.models.base import Forecaster, ModelError
from forecasting.models.baselines import Z_80, PersistenceForecaster, SeasonalNaiveForecaster
from forecasting.series import DAY_S, PreparedSeries
from forecasting.serving import OVERSHOOT_KEY

IntArray = npt.NDArray[np.int64]
MISS_TOLERANCE = 0.2


@dataclass(frozen=True, slots=True)
class BacktestSettings:
    leads_s: tuple[float, ...] = (600.0, 1800.0, 3600.0)
    eval_s: float = 2 * DAY_S
    """Evaluation window at the end of the history."""
    min_eval_s: float = 12 * 3600.0
    refit_every_s: float = 12 * 3600.0
    """How often an expensive model is refitted inside the evaluation window."""
    origin_every_s: float = 600.0
    """Spacing of forecast origins."""
    training_window_s: float = 14 * DAY_S
    min_training_s: float = 2 * DAY_S
    peak_window_s: float = 600.0


@dataclass(frozen=True, slots=True)
class LeadMetrics:
    mase: float
    smape: float
    wape: float
    coverage: float
    under_share: float
    n: int


@dataclass(frozen=True, slots=True)
class BacktestResult:
    model: str
    by_lead: dict[float, LeadMetrics]
    window_miss_rate: float
    window_wape: float
    window_overshoot: float
    """Over-forecast part of ``window_wape``: sum max(0, ŷ - y) / sum |y| over the window means."""
    origins: int
    fits: int
    eval_start: float
    eval_end: float
    origin_times: FloatArray = field(default_factory=lambda: np.zeros(0))
    abs_errors: FloatArray = field(default_factory=lambda: np.zeros((0, 0)))
    """|ŷ - y| per forecast origin (rows) and lead (columns); NaN where no forecast was made."""
    predictions: FloatArray = field(default_factory=lambda: np.zeros((0, 0)))
    """ŷ per forecast origin and lead (what ``abs_errors`` was measured against)."""
    scale: float = float("nan")

    @property
    def confidence(self) -> float:
        return max(0.0, min(1.0, 1.0 - self.window_wape))

    @property
    def over_forecast_confidence(self) -> float:
        return max(0.0, min(1.0, 1.0 - self.window_overshoot))

    def mase(self, lead_s: float) -> float:
        return self.by_lead[lead_s].mase

    def as_accuracy(self) -> dict[str, float]:
        out: dict[str, float] = {
            "confidence": self.confidence,
            OVERSHOOT_KEY: self.window_overshoot,
            "origins": float(self.origins),
        }
        for lead, m in self.by_lead.items():
            tag = f"{int(lead // 60)}m"
            out[f"mase_{tag}"] = m.mase
            out[f"smape_{tag}"] = m.smape
            out[f"wape_{tag}"] = m.wape
            out[f"coverage_{tag}"] = m.coverage
            out[f"under_{tag}"] = m.under_share
        return out


class NotEnoughHistory(ValueError):
    """The history is too short to hold both a training window and an evaluation window."""


def naive_scale(values: FloatArray) -> float:
    """Mean absolute one-step change: the MASE denominator."""
    if len(values) < 2:
        return float("nan")
    return float(np.mean(np.abs(np.diff(values))))


def evaluation_window(series: PreparedSeries, settings: BacktestSettings) -> tuple[float, float]:
    """(start, end) of the evaluation window, or NotEnoughHistory saying what is missing."""
    max_lead = max(*settings.leads_s, settings.peak_window_s)
    available = series.span_s - settings.min_training_s - max_lead
    if available < settings.min_eval_s:
        need = settings.min_training_s + settings.min_eval_s + max_lead
        raise NotEnoughHistory(
            f"backtest needs {need / DAY_S:.1f} days of history, got {series.span_s / DAY_S:.1f} "
            f"({(need - series.span_s) / DAY_S:.1f} days missing)"
        )
    eval_len = min(settings.eval_s, available)
    end = series.end - max_lead
    return end - eval_len, end


def rolling_origin(
    series: PreparedSeries,
    forecasters: Sequence[Forecaster],
    settings: BacktestSettings = BacktestSettings(),
) -> dict[str, BacktestResult]:
    """Backtest each forecaster; forecasters whose name ends in ``+anchor`` are evaluated re-anchored.

    Cheap models (``cheap = True``: the baselines) are refitted at every forecast origin; the others every
    ``refit_every_s``.
    """
    eval_start, eval_end = evaluation_window(series, settings)
    step = series.step_s
    y = series.values
    first = int(math.ceil((eval_start - series.start) / step))
    last = int(math.floor((eval_end - series.start) / step))
    stride = max(1, int(round(settings.origin_every_s / step)))
    origins = np.arange(first, last + 1, stride)
    lead_steps = np.array([max(1, int(round(h / step))) for h in settings.leads_s])
    win_steps = max(1, int(round(settings.peak_window_s / step)))
    scale = naive_scale(y[max(0, first - int(settings.training_window_s / step)) : first])
    if not math.isfinite(scale) or scale <= 0:
        scale = float("nan")

    results: dict[str, BacktestResult] = {}
    for forecaster in forecasters:
        direct = _direct_predictions(forecaster, y, origins, lead_steps, win_steps, step, settings)
        if direct is None:
            direct = _refit_predictions(forecaster, series, origins, lead_steps, win_steps, settings)
        preds, lows, highs, win_pred, fits = direct
        results[forecaster.name] = _score(
            forecaster.name,
            y,
            origins,
            lead_steps,
            preds,
            lows,
            highs,
            win_pred,
            win_steps,
            scale,
            settings,
            fits,
            eval_start,
            eval_end,
            series.start,
            step,
        )
    return results


Predictions = tuple[FloatArray, FloatArray, FloatArray, FloatArray, int]


def _refit_predictions(
    forecaster: Forecaster,
    series: PreparedSeries,
    origins: IntArray,
    lead_steps: IntArray,
    win_steps: int,
    settings: BacktestSettings,
) -> Predictions:
    """Fit at each fit origin on the trailing window, then forecast from every origin until the next fit."""
    step = series.step_s
    y = series.values
    refit_steps = 1 if getattr(forecaster, "cheap", False) else max(1, int(round(settings.refit_every_s / step)))
    preds = np.full((len(origins), len(lead_steps)), np.nan)
    lows = np.full_like(preds, np.nan)
    highs = np.full_like(preds, np.nan)
    win_pred = np.full(len(origins), np.nan)
    fits = 0
    fit_at = -1
    fitted = None
    horizon = (settings.refit_every_s if refit_steps > 1 else 0.0) + max(*settings.leads_s, settings.peak_window_s)
    for k, o in enumerate(origins.tolist()):
        if fitted is None or o - fit_at >= refit_steps:
            train_lo = max(0, o + 1 - int(settings.training_window_s / step))
            try:
                fitted = forecaster.fit(_slice(series, train_lo, o + 1), horizon_s=horizon + 2 * step)
            except ModelError:
                fitted = None
                continue
            fit_at = o
            fits += 1
        curve = fitted.curve
        offset = int(round((curve.start - series.start) / step))
        factor = 1.0
        if fitted.anchor_window_s > 0:
            w = max(1, int(round(fitted.anchor_window_s / step)))
            lo = max(o + 1 - w, offset, 0)
            expected = float(curve.point[lo - offset : o + 1 - offset].sum())
            observed = float(y[lo : o + 1].sum())
            if expected > 1e-9 * max(1.0, abs(observed)):
                factor = min(max(observed / expected, ANCHOR_BOUNDS[0]), ANCHOR_BOUNDS[1])
        idx = o + lead_steps - offset
        if idx.max() >= len(curve.point) or idx.min() < 0:
            continue
        preds[k] = curve.point[idx] * factor
        lows[k] = curve.lower[idx] * factor
        highs[k] = curve.upper[idx] * factor
        w_idx = o + 1 - offset
        win_pred[k] = float(curve.point[w_idx : w_idx + win_steps].mean()) * factor
    return preds, lows, highs, win_pred, fits


def _direct_predictions(
    forecaster: Forecaster,
    y: FloatArray,
    origins: IntArray,
    lead_steps: IntArray,
    win_steps: int,
    step: float,
    settings: BacktestSettings,
) -> Predictions | None:
    """Persistence and seasonal naive (plain or anchored), refitted at every origin, computed in one pass.

    Gives exactly what fitting them at each origin gives, a hundred times faster: these are the models a
    large fleet backtests by the thousand. None for any other model.
    """
    anchor_steps = 0
    base = forecaster
    if isinstance(forecaster, LevelAnchored):
        base = forecaster.base
        anchor_steps = max(1, int(round(forecaster.window_s / step)))
    n_train = int(settings.training_window_s / step)
    o = origins[:, None]
    if isinstance(base, PersistenceForecaster):
        if anchor_steps:
            return None
        point = np.repeat(y[origins][:, None], len(lead_steps), axis=1)
        sigma = _rolling_std(np.diff(y, prepend=y[0]), origins, n_train - 1)[:, None] * np.sqrt(lead_steps)[None, :]
        win_pred = y[origins].astype(np.float64)
    elif isinstance(base, SeasonalNaiveForecaster):
        season = int(round(base.season_s / step))
        if origins.min() - season - anchor_steps < 0 or lead_steps.max() > season or win_steps > season:
            return None
        point = y[o + lead_steps[None, :] - season]
        diffs = np.concatenate([np.zeros(season), y[season:] - y[:-season]])
        sigma = np.repeat(_rolling_std(diffs, origins, n_train - season)[:, None], len(lead_steps), axis=1)
        csum = np.concatenate([[0.0], np.cumsum(y)])
        win_pred = (csum[origins + 1 - season + win_steps] - csum[origins + 1 - season]) / win_steps
        if anchor_steps:
            observed = csum[origins + 1] - csum[origins + 1 - anchor_steps]
            expected = csum[origins + 1 - season] - csum[origins + 1 - season - anchor_steps]
            factor = np.ones(len(origins))
            ok = expected > 1e-9 * np.maximum(1.0, np.abs(observed))
            factor[ok] = np.clip(observed[ok] / expected[ok], *ANCHOR_BOUNDS)
            point = point * factor[:, None]
            sigma = sigma * factor[:, None]
            win_pred = win_pred * factor
    else:
        return None
    band = Z_80 * sigma
    return point, np.maximum(point - band, 0.0), point + band, win_pred, len(origins)


def _rolling_std(x: FloatArray, origins: IntArray, window: int) -> FloatArray:
    """Standard deviation of ``x`` over the ``window`` points up to and including each origin."""
    c1 = np.concatenate([[0.0], np.cumsum(x)])
    c2 = np.concatenate([[0.0], np.cumsum(x * x)])
    hi = origins + 1
    lo = np.maximum(hi - max(window, 2), 0)
    n = hi - lo
    mean = (c1[hi] - c1[lo]) / n
    var = np.maximum((c2[hi] - c2[lo]) / n - mean * mean, 0.0)
    return np.asarray(np.sqrt(var), dtype=np.float64)


def _slice(series: PreparedSeries, lo: int, hi: int) -> PreparedSeries:
    return PreparedSeries(
        start=series.start + lo * series.step_s,
        step_s=series.step_s,
        values=series.values[lo:hi],
        quality=series.quality,
    )


def _score(
    name: str,
    y: FloatArray,
    origins: np.ndarray,
    lead_steps: np.ndarray,
    preds: FloatArray,
    lows: FloatArray,
    highs: FloatArray,
    win_pred: FloatArray,
    win_steps: int,
    scale: float,
    settings: BacktestSettings,
    fits: int,
    eval_start: float,
    eval_end: float,
    series_start: float,
    step_s: float,
) -> BacktestResult:
    by_lead: dict[float, LeadMetrics] = {}
    for j, lead in enumerate(settings.leads_s):
        ok = np.isfinite(preds[:, j])
        actual = y[origins[ok] + lead_steps[j]]
        pred = preds[ok, j]
        err = pred - actual
        abs_err = np.abs(err)
        denom = np.abs(actual) + np.abs(pred)
        nz = denom > 0
        by_lead[lead] = LeadMetrics(
            mase=float(abs_err.mean() / scale) if len(err) else float("nan"),
            smape=float(np.mean(2 * abs_err[nz] / denom[nz])) if nz.any() else float("nan"),
            wape=float(abs_err.sum() / np.abs(actual).sum()) if np.abs(actual).sum() > 0 else float("nan"),
            coverage=float(np.mean((actual >= lows[ok, j]) & (actual <= highs[ok, j]))) if len(err) else float("nan"),
            under_share=float(np.mean(pred < actual)) if len(err) else float("nan"),
            n=int(ok.sum()),
        )
    okw = np.isfinite(win_pred)
    csum = np.concatenate([[0.0], np.cumsum(y)])
    starts = origins[okw] + 1
    actual_mean = (csum[starts + win_steps] - csum[starts]) / win_steps
    win_err = np.abs(win_pred[okw] - actual_mean)
    misses = win_err > MISS_TOLERANCE * np.abs(actual_mean)
    miss_rate = float(misses.mean()) if len(misses) else 1.0
    total = float(np.abs(actual_mean).sum())
    window_wape = float(win_err.sum() / total) if total > 0 else 1.0
    over = np.maximum(win_pred[okw] - actual_mean, 0.0)
    window_overshoot = float(over.sum() / total) if total > 0 else 1.0
    return BacktestResult(
        model=name,
        by_lead=by_lead,
        window_miss_rate=miss_rate,
        window_wape=window_wape,
        window_overshoot=window_overshoot,
        origins=int(okw.sum()),
        fits=fits,
        eval_start=eval_start,
        eval_end=eval_end,
        origin_times=series_start + origins.astype(np.float64) * step_s,
        abs_errors=np.abs(preds - y[origins[:, None] + lead_steps[None, :]]),
        predictions=preds,
        scale=scale,
    )


@dataclass(frozen=True, slots=True)
class NoiseModel:
    """Spread of the data around a forecast: sigma(mu) = c * mu ** p.

    Request counts are close to Poisson (p = 0.5: a quiet night is relatively noisier than a busy afternoon);
    utilisation-like series scale with their level (p = 1). ``p`` is fitted, not assumed.
    """

    c: float
    p: float

    def sigma(self, mu: FloatArray) -> FloatArray:
        return np.asarray(self.c * np.power(np.maximum(mu, 0.0), self.p), dtype=np.float64)


def fit_noise(result: BacktestResult, lead_index: int = 0, bins: int = 10) -> NoiseModel | None:
    """sigma(mu) from the backtest's errors at one lead (see :func:`noise_from_errors`)."""
    if result.predictions.size == 0:
        return None
    return noise_from_errors(result.predictions[:, lead_index], result.abs_errors[:, lead_index], bins)


def noise_from_errors(mu: FloatArray, err: FloatArray, bins: int = 10) -> NoiseModel | None:
    """sigma(mu) from forecasts ``mu`` and their absolute errors: mean |e| by forecast-level bin, then a log-log
    line.

    Mean |e| of a normal error is sigma * sqrt(2 / pi). None when there are too few usable points.
    """
    ok = np.isfinite(mu) & np.isfinite(err) & (mu > 0)
    if ok.sum() < 4 * bins:
        return None
    mu, err = mu[ok], err[ok]
    order = np.argsort(mu)
    groups = np.array_split(order, bins)
    level = np.array([mu[g].mean() for g in groups])
    spread = np.array([err[g].mean() for g in groups]) * math.sqrt(math.pi / 2)
    usable = (level > 0) & (spread > 0)
    if usable.sum() < 3:
        return None
    x, z = np.log(level[usable]), np.log(spread[usable])
    p = 0.5 if np.ptp(x) < 1e-6 else float(np.clip(np.polyfit(x, z, 1)[0], 0.0, 1.0))
    c = float(np.exp(np.mean(z - p * x)))
    return NoiseModel(c=c, p=p)
