"""One call that turns a prepared history into a :class:`ServingModel`: backtest candidates, choose, fit.

Model choice: every candidate is backtested (``forecasting.backtest``) and scored by its MASE at
``selection_lead_s``. Prophet with level anchoring is chosen unless another candidate beats it by more than
``selection_margin`` (2 %): a baseline must be *clearly* better to win, so the choice does not flap between
near-equal models. The choice is kept for ``reselect_every_s``; refits in between fit only the chosen model,
warm-started from the previous parameters.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np

from forecasting.backtest import (
    BacktestResult,
    BacktestSettings,
    NoiseModel,
    NotEnoughHistory,
    fit_noise,
    rolling_origin,
)
from forecasting.curve import ForecastCurve
from forecasting.models.anchoring import LevelAnchored
from forecasting.models.base import FittedModel, Forecaster, ModelError
from forecasting.models.baselines import Z_80, PersistenceForecaster, SeasonalNaiveForecaster
from forecasting.models.ensemble import MeanEnsemble
from forecasting.models.memo import SharedFits
from forecasting.models.prophet_model import ProphetForecaster, ProphetSettings
from forecasting.series import DAY_S, WEEK_S, PreparedSeries
from forecasting.serving import ServingModel

PRIMARY_MODEL = "prophet+anchor"


@dataclass(frozen=True, slots=True)
class FitConfig:
    horizon_s: float = DAY_S
    """How far ahead the served curve reaches after a fit."""
    holidays_country: str | None = None
    """ISO country code whose public holidays Prophet models (e.g. "US")."""
    anchor_window_s: float = 3600.0
    """Window of recent observations the level anchoring compares with the fit."""
    backtest_leads_s: tuple[float, ...] = (600.0, 1800.0, 3600.0)
    selection_lead_s: float = 1800.0
    """The lead at which candidates are compared."""
    selection_margin: float = 0.02
    peak_window_s: float = 600.0
    """The serving window whose forecast the confidence score judges."""
    backtest_eval_s: float = 2 * DAY_S
    backtest_refit_every_s: float = 12 * 3600.0
    training_window_s: float = 14 * DAY_S
    """Trailing window each fit uses."""
    reselect_every_s: float = DAY_S
    """Between reselections a refit fits only the chosen model."""
    candidates: tuple[str, ...] = (
        "prophet+anchor",
        "prophet",
        "prophet_snaive+anchor",
        "seasonal_naive_1w+anchor",
        "seasonal_naive_1w",
        "seasonal_naive_1d",
        "persistence",
    )
    prophet: ProphetSettings = field(default_factory=ProphetSettings)


def make_forecaster(name: str, config: FitConfig, *, prophet: Forecaster | None = None) -> Forecaster:
    """The forecaster for a candidate name (``<base>`` or ``<base>+anchor``).

    ``prophet`` lets several candidates share one Prophet forecaster (and so its fits, see ``SharedFits``).
    """
    base_name, _, anchored = name.partition("+")
    base: Forecaster
    if base_name == "prophet":
        base = prophet or ProphetForecaster(_prophet_settings(config))
    elif base_name == "seasonal_naive_1w":
        base = SeasonalNaiveForecaster(WEEK_S)
    elif base_name == "seasonal_naive_1d":
        base = SeasonalNaiveForecaster(DAY_S)
    elif base_name == "prophet_snaive":
        base = MeanEnsemble(
            [prophet or ProphetForecaster(_prophet_settings(config)), SeasonalNaiveForecaster(WEEK_S)],
            name="prophet_snaive",
        )
    elif base_name == "persistence":
        base = PersistenceForecaster()
    else:
        raise ValueError(f"unknown model {name!r}")
    if anchored == "anchor":
        return LevelAnchored(base, config.anchor_window_s)
    if anchored:
        raise ValueError(f"unknown model suffix in {name!r}: only '+anchor' is known")
    return base


def _prophet_settings(config: FitConfig) -> ProphetSettings:
    if config.holidays_country and config.prophet.holidays_country != config.holidays_country:
        return replace(config.prophet, holidays_country=config.holidays_country)
    return config.prophet


def backtest_settings(config: FitConfig) -> BacktestSettings:
    return BacktestSettings(
        leads_s=config.backtest_leads_s,
        eval_s=config.backtest_eval_s,
        refit_every_s=config.backtest_refit_every_s,
        training_window_s=config.training_window_s,
        peak_window_s=config.peak_window_s,
    )


def choose_model(results: dict[str, BacktestResult], lead_s: float, margin: float, primary: str = PRIMARY_MODEL) -> str:
    """The primary model unless another is better by more than ``margin`` at ``lead_s``."""
    scores = {name: r.mase(lead_s) for name, r in results.items() if math.isfinite(r.mase(lead_s))}
    if not scores:
        raise ModelError("no candidate model could be backtested")
    best = min(scores, key=lambda k: scores[k])
    if primary in scores and scores[best] >= scores[primary] * (1.0 - margin):
        return primary
    return best


def usable_candidates(history: PreparedSeries, config: FitConfig) -> list[Forecaster]:
    out = []
    shared = SharedFits(ProphetForecaster(_prophet_settings(config)))
    for name in config.candidates:
        f = make_forecaster(name, config, prophet=shared)
        if history.span_s >= f.min_history_s() + 2 * DAY_S or name.startswith("persistence"):
            out.append(f)
    return out


def fit_serving_model(
    key: str,
    history: PreparedSeries,
    config: FitConfig = FitConfig(),
    *,
    previous: ServingModel | None = None,
    clock: Callable[[], float] = time.time,
) -> ServingModel:
    """Backtest the candidate models on ``history``, fit the chosen one on its tail, and package it.

    With too little history for a backtest the primary model is fitted anyway with confidence 0, so serving
    falls back to observed values and says why ("backtest needs 4.0 days of history, got 2.5").
    """
    started = time.perf_counter()
    reuse = (
        previous is not None
        and previous.accuracy.get("selected_at") is not None
        and clock() - previous.accuracy["selected_at"] < config.reselect_every_s
        and previous.name in config.candidates
    )
    training = history.tail(config.training_window_s)
    accuracy: dict[str, float]
    candidates: dict[str, float]
    if reuse and previous is not None:
        chosen = previous.name
        accuracy = dict(previous.accuracy)
        candidates = dict(previous.candidates)
        confidence = previous.confidence
    else:
        forecasters = usable_candidates(history, config)
        try:
            results = rolling_origin(history, forecasters, backtest_settings(config))
        except NotEnoughHistory as exc:
            chosen = PRIMARY_MODEL if history.span_s >= 2 * DAY_S else "persistence"
            accuracy = {"selected_at": clock()}
            candidates = {}
            confidence = 0.0
            fitted = make_forecaster(chosen, config).fit(training, horizon_s=config.horizon_s)
            return ServingModel(
                key=key,
                model=replace(fitted, params={**fitted.params, "note": str(exc)}),
                confidence=confidence,
                fitted_at=clock(),
                fit_duration_s=time.perf_counter() - started,
                accuracy=accuracy,
                candidates=candidates,
            )
        chosen = choose_model(results, config.selection_lead_s, config.selection_margin)
        accuracy = results[chosen].as_accuracy()
        accuracy["selected_at"] = clock()
        noise = fit_noise(results[chosen])
        if noise is not None:
            accuracy["noise_c"], accuracy["noise_p"] = noise.c, noise.p
        candidates = {name: r.mase(config.selection_lead_s) for name, r in results.items()}
        confidence = results[chosen].confidence
    warm = previous.model if previous is not None and previous.name == chosen else None
    fitted = make_forecaster(chosen, config).fit(training, horizon_s=config.horizon_s, warm_start=warm)
    if "noise_c" in accuracy:
        fitted = with_noise_band(fitted, NoiseModel(accuracy["noise_c"], accuracy["noise_p"]))
    return ServingModel(
        key=key,
        model=fitted,
        confidence=confidence,
        fitted_at=clock(),
        fit_duration_s=time.perf_counter() - started,
        accuracy=accuracy,
        candidates=candidates,
    )


def with_noise_band(fitted: FittedModel, noise: NoiseModel) -> FittedModel:
    """The fitted curve with its band replaced by the 10th-90th percentile of the data around it, as measured
    in the backtest: a model's own band (Prophet's residual scale on 5-minute means) knows nothing of the
    noise of the series it serves."""
    curve = fitted.curve
    band = Z_80 * noise.sigma(curve.point)
    banded = ForecastCurve(
        start=curve.start,
        step_s=curve.step_s,
        point=curve.point,
        lower=np.maximum(curve.point - band, 0.0),
        upper=curve.point + band,
    )
    return replace(fitted, curve=banded)
