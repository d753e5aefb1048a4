"""The one small interface every model implements: fit history -> fitted model -> forecast curve."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from forecasting.curve import FloatArray, ForecastCurve
from forecasting.series import DAY_S, PreparedSeries

DEFAULT_HORIZON_S = DAY_S
"""How far past the end of training a fitted curve reaches."""
DEFAULT_CONTEXT_S = 2 * 3600.0
"""How far before the end of training a fitted curve starts, so anchoring can compare fit and data."""


class ModelError(RuntimeError):
    """A model could not be fitted on the given history."""


@dataclass(frozen=True, slots=True)
class FittedModel:
    """What a fit leaves behind: the curve serving needs and the parameters a refit warm-starts from.

    ``curve`` runs on the series' own grid from ``trained_until - context_s`` to
    ``trained_until + horizon_s``; the part before ``trained_until`` is the model's in-sample fit.
    No training frame is kept.
    """

    name: str
    trained_until: float
    curve: ForecastCurve
    params: Mapping[str, Any] = field(default_factory=dict)
    anchor_window_s: float = 0.0
    """> 0 when the model's level is corrected by the most recent observations (see :func:`anchor_factor`)."""

    @property
    def nbytes(self) -> int:
        return self.curve.nbytes + 64 * max(1, len(self.params))


class Forecaster(ABC):
    """Fits a model on a prepared history."""

    name: str

    @abstractmethod
    def fit(
        self,
        history: PreparedSeries,
        *,
        horizon_s: float = DEFAULT_HORIZON_S,
        context_s: float = DEFAULT_CONTEXT_S,
        warm_start: FittedModel | None = None,
    ) -> FittedModel:
        """Fit on ``history`` and return the curve from ``history.end - context_s`` to ``history.end + horizon_s``."""

    def min_history_s(self) -> float:
        """Shortest history this model can be fitted on."""
        return 0.0


ANCHOR_FACTOR_BOUNDS = (0.25, 4.0)


def anchor_factor(
    curve: ForecastCurve,
    obs_start: float,
    obs_values: FloatArray,
    *,
    bounds: tuple[float, float] = ANCHOR_FACTOR_BOUNDS,
) -> float:
    """Multiplicative level correction: observed total over the model's total on the same grid points.

    ``obs_values[i]`` is the observation at ``obs_start + i * curve.step_s``. Points outside the curve are
    ignored. The factor is clipped to ``bounds`` so one odd hour cannot blow a forecast up or to zero; when
    the model expects (almost) nothing the factor is 1.
    """
    if len(obs_values) == 0:
        return 1.0
    i = curve.index_at(obs_start)
    lo = max(i, 0)
    hi = min(i + len(obs_values), len(curve.point))
    if hi <= lo:
        return 1.0
    expected = float(curve.point[lo:hi].sum())
    seen = obs_values[lo - i : hi - i]
    observed = float(np.nansum(seen))
    if not math.isfinite(expected) or expected <= 1e-9 * max(1.0, abs(observed)):
        return 1.0
    return min(max(observed / expected, bounds[0]), bounds[1])
