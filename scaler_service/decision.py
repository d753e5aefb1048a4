"""What value the scaler serves, and why: one pure function shared by the gRPC handlers and the backtest.

Nothing here reads a clock, a source or a cache: everything arrives as arguments, so the live service and
the capacity backtest compute exactly the same number from the same inputs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum

from forecasting.curve import CurveRangeError
from forecasting.serving import ServingModel


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
) -> tuple[float, Reason, str, float | None]:
    """max(forecast peak over [now, now + lead], observed), or the observed value with the reason why not."""
    observed = _clean(observed)
    if model is None:
        return observed, Reason.NO_MODEL, "no fitted model yet: serving the observed value", None
    confidence = model.confidence if live_confidence is None else min(model.confidence, live_confidence)
    if confidence < min_confidence:
        return (
            observed,
            Reason.LOW_CONFIDENCE,
            f"confidence {confidence:.2f} < minConfidence {min_confidence:.2f}: serving the observed value",
            confidence,
        )
    try:
        peak = model.peak(now, lead_s, factor)
    except CurveRangeError as exc:
        return (
            observed,
            Reason.MODEL_OUT_OF_RANGE,
            f"model curve does not cover the horizon: {exc}",
            confidence,
        )
    peak = _clean(peak)
    if peak >= observed:
        detail = f"forecast peak {peak:.3f} over the next {lead_s:.0f}s ({model.name}, level x{factor:.2f})"
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
