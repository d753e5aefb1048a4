"""The predictive metric under any (predictHorizon, predictQuantile, minConfidence), from one pass over a trace.

Used by the tuning search (:mod:`scaler_service.backtest.tune`): a model fitted at time ``t`` does not depend on
the lead, the quantile, the confidence gate or the HPA, so the trace is run through ``predictive_metric`` once and
every candidate's metric is computed from that run with arrays.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Protocol

import numpy as np

from forecasting.serving import ServingModel
from scaler_service.backtest.strategies import (
    FitFunction,
    PredictiveSettings,
    predictive_metric,
    reactive_metric,
)
from scaler_service.backtest.trace import DemandTrace, FloatArray


class MetricTable(Protocol):
    """What the tuning search reads: the observed metric at each poll (reactive's) and the predictive metric
    under any (predictHorizon, predictQuantile, minConfidence). :class:`ForecastTable` is the service's;
    the ceiling benchmark (``loadtests.tune_ceiling``) gives hindsight ones to measure what a better forecast
    could buy."""

    observed: FloatArray
    seconds: float

    def metric(self, lead_s: float, quantile: float, min_confidence: float) -> FloatArray: ...

    @property
    def passes(self) -> int: ...


class ForecastTable:
    """The predictive metric under any (predictHorizon, predictQuantile, minConfidence), from one pass.

    ``predictive_metric`` runs once with the gate open: it fits (through the caller's fit function), and
    records at each poll the model in use, the level factor and the confidence the gate judges. None of these
    depend on the lead, the quantile or ``minConfidence``; the served value under any of them is then computed
    here with arrays, exactly as ``decision.predictive_value`` computes it (checked against it in the tests):
    the peak of that quantile's curve over ``[now, now + lead]`` times the factor, never below the observed
    value; the observed value where there is no model, the curve does not cover the window, or the confidence
    is below ``minConfidence``.
    """

    def __init__(self, trace: DemandTrace, poll_times: FloatArray, base: PredictiveSettings, fit: FitFunction) -> None:
        began = time.perf_counter()
        self._polls = np.asarray(poll_times, dtype=np.float64)
        settings = replace(base, min_confidence=0.0, refit_on_low_live_confidence=False)
        self.run = predictive_metric(trace, self._polls, settings, fit)
        raw = reactive_metric(trace, self._polls)
        with np.errstate(invalid="ignore"):
            self.observed: FloatArray = np.where(np.isfinite(raw) & (raw > 0), raw, 0.0)
        assert self.run.confidence is not None and self.run.factors is not None
        self._confidence = self.run.confidence
        self._factors = self.run.factors
        by_model: dict[int, tuple[ServingModel, list[int]]] = {}
        for i, model in enumerate(self.run.models):
            if model is not None:
                by_model.setdefault(id(model), (model, []))[1].append(i)
        self._segments = [(m, np.asarray(idx, dtype=np.int64)) for m, idx in by_model.values()]
        self._values: dict[tuple[float, float], FloatArray] = {}
        self.seconds = time.perf_counter() - began

    def values(self, lead_s: float, quantile: float) -> FloatArray:
        """The served value at each poll with the gate open."""
        key = (lead_s, quantile)
        if key in self._values:
            return self._values[key]
        began = time.perf_counter()
        out = self.observed.copy()
        for model, idx in self._segments:
            curve = model.curve
            times = self._polls[idx]
            first = np.floor((times - curve.start) / curve.step_s).astype(np.int64)
            stop = np.floor((times + lead_s - curve.start) / curve.step_s).astype(np.int64) + 1
            inside = (first >= 0) & (stop <= len(curve))
            if not inside.any():
                continue
            band = model.quantile_curve(quantile)
            first, stop, at = first[inside], stop[inside], idx[inside]
            peaks = np.empty(len(at), dtype=np.float64)
            lengths = stop - first
            for length in np.unique(lengths).tolist():
                sel = lengths == length
                peaks[sel] = np.lib.stride_tricks.sliding_window_view(band, length).max(axis=1)[first[sel]]
            peaks = peaks * self._factors[at]
            with np.errstate(invalid="ignore"):
                peaks = np.where(np.isfinite(peaks) & (peaks > 0), peaks, 0.0)
            out[at] = np.maximum(peaks, self.observed[at])
        self._values[key] = out
        self.seconds += time.perf_counter() - began
        return out

    def metric(self, lead_s: float, quantile: float, min_confidence: float) -> FloatArray:
        with np.errstate(invalid="ignore"):
            gated = self._confidence < min_confidence
        return np.where(gated, self.observed, self.values(lead_s, quantile))

    @property
    def passes(self) -> int:
        return len(self._values)


__all__ = ["ForecastTable", "MetricTable"]
