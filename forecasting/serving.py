"""What the model cache holds and serving reads: a fitted curve, its confidence, and nothing else.

A :class:`ServingModel` is immutable; a refit replaces it whole, so readers never see a half-updated model.
It serialises to versioned JSON so a restart can serve at once.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from statistics import NormalDist
from typing import Any

import numpy as np

from forecasting.curve import CurveRangeError, FloatArray, ForecastCurve
from forecasting.models.base import FittedModel, anchor_factor

SERVING_FORMAT_VERSION = 1
Z_80 = 1.2815515655446004
"""The curve's band is the 10th to 90th percentile: +-Z_80 standard deviations of a normal."""


@lru_cache(maxsize=64)
def _normal_quantile(q: float) -> float:
    return float(NormalDist().inv_cdf(min(max(q, 1e-6), 1 - 1e-6)))


OVERSHOOT_KEY = "overshoot"
"""Key of ``ServingModel.accuracy`` holding the backtest's over-forecast error (see ``forecasting.backtest``)."""


class ServingFormatError(ValueError):
    """A persisted model is not in a format this version can read."""


@dataclass(frozen=True, slots=True)
class ServingModel:
    key: str
    model: FittedModel
    confidence: float
    """In [0, 1], from the backtest (see ``forecasting.backtest.confidence_score``)."""
    fitted_at: float
    """Wall-clock epoch seconds when the fit finished."""
    fit_duration_s: float = 0.0
    accuracy: Mapping[str, float] = field(default_factory=dict)
    """Backtest figures of the chosen model, e.g. ``{"mase_30m": 0.82, "coverage": 0.79}``."""
    candidates: Mapping[str, float] = field(default_factory=dict)
    """Backtest score of every candidate model (lower is better), to explain the choice."""

    @property
    def name(self) -> str:
        return self.model.name

    @property
    def over_forecast_confidence(self) -> float:
        """1 - the backtest's over-forecast error (what a max(forecast, observed) consumer gates on). Models
        whose backtest did not record it (older files, no backtest) fall back to ``confidence``, never higher."""
        overshoot = self.accuracy.get(OVERSHOOT_KEY)
        if overshoot is None or not math.isfinite(overshoot):
            return self.confidence
        return max(self.confidence, min(1.0, 1.0 - overshoot))

    @property
    def curve(self) -> ForecastCurve:
        return self.model.curve

    @property
    def trained_until(self) -> float:
        return self.model.trained_until

    def anchor_factor(self, obs_start: float, obs_values: FloatArray) -> float:
        """Level correction to apply to :meth:`peak`, from the observations of the anchor window."""
        if self.model.anchor_window_s <= 0:
            return 1.0
        n = int(round(self.model.anchor_window_s / self.curve.step_s))
        if len(obs_values) > n:
            obs_start += (len(obs_values) - n) * self.curve.step_s
            obs_values = obs_values[-n:]
        return anchor_factor(self.curve, obs_start, obs_values)

    def peak(self, now: float, lead_s: float, factor: float = 1.0, quantile: float = 0.5) -> float:
        """Forecast peak over [now, now + lead_s], level-corrected by ``factor``.

        ``quantile`` > 0.5 serves the peak of that quantile of the forecast demand instead of its median: the
        band (the 10th to 90th percentile) is read as normal, so 0.9 is the upper band and 0.5 the point.
        """
        if quantile <= 0.5:
            return self.curve.peak(now, lead_s) * factor
        window = self.curve.window(now, lead_s)
        return float(self.quantile_curve(quantile, window).max()) * factor

    def quantile_curve(self, quantile: float, window: slice = slice(None)) -> FloatArray:
        """That quantile of the forecast demand over the curve's points (``window`` of them): the point forecast
        for 0.5 and below, else the point plus the band read as normal (:meth:`peak` takes its maximum)."""
        point = self.curve.point[window]
        if quantile <= 0.5:
            return point
        k = _normal_quantile(quantile) / Z_80
        return point + k * (self.curve.upper[window] - point)

    def covers(self, now: float, lead_s: float) -> bool:
        return self.curve.covers(now, lead_s)

    @property
    def nbytes(self) -> int:
        return self.model.nbytes + 256

    # --- persistence -------------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        c = self.curve
        return {
            "format": "foresight.serving-model",
            "version": SERVING_FORMAT_VERSION,
            "key": self.key,
            "model": {
                "name": self.model.name,
                "trained_until": self.model.trained_until,
                "anchor_window_s": self.model.anchor_window_s,
                "params": dict(self.model.params),
                "curve": {
                    "start": c.start,
                    "step_s": c.step_s,
                    "point": c.point.tolist(),
                    "lower": c.lower.tolist(),
                    "upper": c.upper.tolist(),
                },
            },
            "confidence": self.confidence,
            "fitted_at": self.fitted_at,
            "fit_duration_s": self.fit_duration_s,
            "accuracy": dict(self.accuracy),
            "candidates": dict(self.candidates),
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> ServingModel:
        if doc.get("format") != "foresight.serving-model":
            raise ServingFormatError("not a foresight serving model")
        if doc.get("version") != SERVING_FORMAT_VERSION:
            raise ServingFormatError(
                f"serving model format version {doc.get('version')!r}; this build reads {SERVING_FORMAT_VERSION}"
            )
        try:
            m = doc["model"]
            cd = m["curve"]
            curve = ForecastCurve(
                start=float(cd["start"]),
                step_s=float(cd["step_s"]),
                point=np.asarray(cd["point"], dtype=np.float64),
                lower=np.asarray(cd["lower"], dtype=np.float64),
                upper=np.asarray(cd["upper"], dtype=np.float64),
            )
            fitted = FittedModel(
                name=str(m["name"]),
                trained_until=float(m["trained_until"]),
                curve=curve,
                params=dict(m.get("params", {})),
                anchor_window_s=float(m.get("anchor_window_s", 0.0)),
            )
            confidence = float(doc["confidence"])
            if not (0.0 <= confidence <= 1.0) or not math.isfinite(confidence):
                raise ServingFormatError(f"confidence {confidence} outside [0, 1]")
            return cls(
                key=str(doc["key"]),
                model=fitted,
                confidence=confidence,
                fitted_at=float(doc["fitted_at"]),
                fit_duration_s=float(doc.get("fit_duration_s", 0.0)),
                accuracy={str(k): float(v) for k, v in doc.get("accuracy", {}).items()},
                candidates={str(k): float(v) for k, v in doc.get("candidates", {}).items()},
            )
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, ServingFormatError):
                raise
            raise ServingFormatError(f"malformed serving model: {exc}") from exc


__all__ = ["SERVING_FORMAT_VERSION", "CurveRangeError", "ServingFormatError", "ServingModel"]
