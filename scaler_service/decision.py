"""What value the scaler serves, and why: one pure function shared by the gRPC handlers and the backtest.

Nothing here reads a clock, a source or a cache: everything arrives as arguments, so the live service and
the capacity backtest compute exactly the same number from the same inputs.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum

from forecasting.curve import CurveRangeError
from forecasting.serving import ServingModel

DEFAULT_PREDICT_QUANTILE = 0.9
"""Which forecast's peak is served by default (trigger key ``predictQuantile``): the 90th percentile of demand,
so the scaler provisions for the noise the backtest measured around its forecast. In the capacity backtest on
NASA (10-min pod start-up, 15-min lead) it saved 11.3 % replica-hours against reactive-with-headroom where the
point forecast (0.5) saved 4.5 %."""


class Mode(StrEnum):
    PREDICTIVE = "predictive"
    OBSERVE = "observe"
    REACTIVE = "reactive"


class Reason(StrEnum):
    FORECAST = "forecast"
    """The forecast peak over the horizon, at least the observed value."""
    NO_MODEL = "no-model"
    LOW_CONFIDENCE = "low-confidence"
    MODEL_OUT_OF_RANGE = "model-out-of-range"
    REACTIVE_MODE = "reactive-mode"
    OBSERVE_MODE = "observe-mode"
    OPTED_OUT = "opted-out"
    CIRCUIT_BREAKER = "circuit-breaker"


@dataclass(frozen=True, slots=True)
class ServedValue:
    value: float
    """What GetMetrics returns (finite, >= 0)."""
    predictive_value: float
    """What predictive mode would return; equal to ``value`` in predictive mode."""
    observed: float
    reason: Reason
    detail: str
    confidence: float | None = None


def _clean(x: float) -> float:
    return x if math.isfinite(x) and x > 0 else 0.0


def predictive_value(
    *,
    now: float,
    observed: float,
    model: ServingModel | None,
    factor: float,
    lead_s: float,
    min_confidence: float,
    live_confidence: float | None = None,
    quantile: float = DEFAULT_PREDICT_QUANTILE,
) -> tuple[float, Reason, str, float | None]:
    """max(forecast peak over [now, now + lead], observed), or the observed value with the reason why not.

    ``quantile`` picks which forecast's peak: 0.5 the point forecast, 0.9 the 90th percentile of demand.
    ``live_confidence`` is the live gate's score (:attr:`LiveAccuracy.gate_confidence`), None before there is one.
    """
    observed = _clean(observed)
    if model is None:
        return observed, Reason.NO_MODEL, "no fitted model yet: serving the observed value", None
    # Only an over-forecast can make max(forecast, observed) differ from the observed value, so the gate judges
    # the forecast on over-forecasts (backtest and live); see forecasting.backtest for the formula.
    backtest = model.over_forecast_confidence
    confidence = backtest if live_confidence is None else min(backtest, live_confidence)
    if confidence < min_confidence:
        which = "backtest" if live_confidence is None or backtest <= live_confidence else "live"
        return (
            observed,
            Reason.LOW_CONFIDENCE,
            f"{which} over-forecast confidence {confidence:.2f} < minConfidence {min_confidence:.2f}: "
            "serving the observed value",
            confidence,
        )
    try:
        peak = model.peak(now, lead_s, factor, quantile)
    except CurveRangeError as exc:
        return (
            observed,
            Reason.MODEL_OUT_OF_RANGE,
            f"model curve does not cover the horizon: {exc}",
            confidence,
        )
    peak = _clean(peak)
    if peak >= observed:
        which = "forecast peak" if quantile <= 0.5 else f"peak of the {100 * quantile:.0f}th-percentile forecast"
        detail = f"{which} {peak:.3f} over the next {lead_s:.0f}s ({model.name}, level x{factor:.2f})"
    else:
        detail = f"observed {observed:.3f} is above the forecast peak {peak:.3f}: serving the observed value"
    return max(peak, observed), Reason.FORECAST, detail, confidence


def decide_served_value(
    *,
    mode: Mode,
    now: float,
    observed: float,
    model: ServingModel | None,
    factor: float,
    lead_s: float,
    min_confidence: float,
    live_confidence: float | None = None,
    quantile: float = DEFAULT_PREDICT_QUANTILE,
    opted_out: bool = False,
    emergency_value: float | None = None,
) -> ServedValue:
    """The value to serve now. ``emergency_value`` is set while the latency circuit breaker is open."""
    pv, reason, detail, confidence = predictive_value(
        now=now,
        observed=observed,
        model=model,
        factor=factor,
        lead_s=lead_s,
        min_confidence=min_confidence,
        live_confidence=live_confidence,
        quantile=quantile,
    )
    obs = _clean(observed)
    if opted_out:
        value, reason, detail = (
            obs,
            Reason.OPTED_OUT,
            "optimization disabled by annotation: serving the observed value",
        )
    elif mode is Mode.REACTIVE:
        value, reason, detail = obs, Reason.REACTIVE_MODE, "mode reactive: serving the observed value"
    elif mode is Mode.OBSERVE:
        value = obs
        detail = f"mode observe: serving the observed value; predictive would serve {pv:.3f} ({reason.value})"
        reason = Reason.OBSERVE_MODE
    else:
        value = pv
    if emergency_value is not None:
        em = _clean(emergency_value)
        if em > value:
            value = em
            reason = Reason.CIRCUIT_BREAKER
            detail = f"latency SLO breached: serving the emergency value {em:.3f} (recent peak)"
    return ServedValue(
        value=value, predictive_value=pv, observed=obs, reason=reason, detail=detail, confidence=confidence
    )


# --- live forecast-vs-actual (shared by the engine and the capacity backtest) --------------------------------

LIVE_WINDOW_S = 600.0
"""Forecast and actual are compared as means over windows this long: the backtest's serving window."""
LIVE_WINDOWS = 12
"""Live accuracy covers the last this-many complete windows."""
LIVE_MIN_WINDOWS = 3
"""Live confidence is reported once this many windows were compared."""
MISS_RATIO = 0.2


@dataclass(frozen=True, slots=True)
class LiveAccuracy:
    compared: int = 0
    """Complete windows compared."""
    wmape: float | None = None
    """WAPE of the window means: sum |mean forecast - mean actual| / sum |mean actual|."""
    misses_over_20: int = 0
    """Windows whose mean forecast was more than 20 % away from the mean actual."""
    confidence: float | None = None
    """1 - wmape once LIVE_MIN_WINDOWS windows were compared, else None: the live accuracy. Below
    ``minConfidence`` the engine asks for a refit."""
    overshoot: float | None = None
    """The over-forecast part of wmape: sum max(0, mean forecast - mean actual) / sum |mean actual|."""
    gate_confidence: float | None = None
    """1 - overshoot once LIVE_MIN_WINDOWS windows were compared, else None: what the serving gate uses.

    The served value is max(forecast peak, observed), so a forecast that runs low is served as the observed
    value, exactly as a reactive scaler would serve; gating it changes nothing. The gate can only change what
    is served when the forecast runs high, so it judges the forecast on over-forecasts alone (the cost of
    trusting it). Under-forecasts still lower ``confidence`` and trigger a refit."""


def window_steps(window_s: float, step_s: float) -> int:
    return max(1, round(window_s / step_s))


def live_accuracy(compared: Mapping[int, tuple[float, float]], steps_per_window: int) -> LiveAccuracy:
    """Accuracy of ``(forecast, actual)`` pairs keyed by grid index, on the means of windows of
    ``steps_per_window`` grid points (window k holds indices [k*w, (k+1)*w)).

    A window counts when at least half its points were compared; the newest window is left out while it is
    still filling. Only the last LIVE_WINDOWS windows count.
    """
    if not compared:
        return LiveAccuracy()
    w = max(1, steps_per_window)
    windows: dict[int, list[tuple[float, float]]] = {}
    for index, pair in compared.items():
        windows.setdefault(index // w, []).append(pair)
    newest = max(windows)
    keys = [k for k in sorted(windows) if len(windows[k]) >= max(1, w // 2)]
    if keys and keys[-1] == newest and len(windows[newest]) < w:
        keys.pop()
    keys = keys[-LIVE_WINDOWS:]
    if not keys:
        return LiveAccuracy()
    abs_err = over_err = total = 0.0
    misses = 0
    for k in keys:
        pairs = windows[k]
        forecast = sum(p for p, _ in pairs) / len(pairs)
        actual = sum(a for _, a in pairs) / len(pairs)
        err = abs(forecast - actual)
        abs_err += err
        over_err += max(0.0, forecast - actual)
        total += abs(actual)
        misses += err > MISS_RATIO * abs(actual)
    wmape = _error_ratio(abs_err, total)
    overshoot = _error_ratio(over_err, total)
    enough = len(keys) >= LIVE_MIN_WINDOWS
    return LiveAccuracy(
        compared=len(keys),
        wmape=wmape,
        misses_over_20=misses,
        confidence=max(0.0, 1.0 - wmape) if enough else None,
        overshoot=overshoot,
        gate_confidence=max(0.0, 1.0 - overshoot) if enough else None,
    )


def compare_forecast(
    compared: dict[int, tuple[float, float]],
    model: ServingModel,
    factor: float,
    points: Iterable[tuple[int, float, float]],
    *,
    steps_per_window: int,
    now_bucket: int | None = None,
) -> None:
    """Add the live accuracy's ``(forecast, actual)`` pair of each ``(bucket, timestamp, actual)`` to ``compared``.

    The forecast is the model's point forecast at the timestamp times the anchor ``factor``; points the curve does
    not cover and values that are not finite are skipped. Only the ``(LIVE_WINDOWS + 1)`` windows of buckets up to
    ``now_bucket`` (default: the newest bucket given) are kept: what :func:`live_accuracy` reads. The engine
    and the capacity backtest both score through this function, so they judge a forecast the same way.
    """
    curve = model.curve
    newest = now_bucket
    for bucket, ts, actual in points:
        if newest is None or bucket > newest:
            newest = bucket
        if not math.isfinite(actual):
            continue
        i = curve.index_at(ts)
        if i < 0 or i >= len(curve.point):
            continue
        predicted = float(curve.point[i]) * factor
        if math.isfinite(predicted):
            compared[bucket] = (predicted, actual)
    if newest is None or not compared:
        return
    keep_from = newest - (LIVE_WINDOWS + 1) * max(1, steps_per_window) + 1
    if min(compared) < keep_from:
        for b in [b for b in compared if b < keep_from]:
            del compared[b]


def _error_ratio(error: float, total: float) -> float:
    return error / total if total > 0 else (0.0 if error == 0 else 1.0)
