"""Level anchoring: correct a seasonal model by how the latest observations deviate from its fit.

A seasonal model gets the *shape* of a day right long before it gets the *level* right: traffic drifts,
campaigns start, a holiday halves everything. The wrapper keeps the base model's curve and marks it with an
anchor window; serving multiplies the forecast by observed/fitted over that window (see
``forecasting.models.base.anchor_factor``), recomputed whenever a new observation arrives, with no refit.
"""

from __future__ import annotations

from dataclasses import replace

from forecasting.models.base import DEFAULT_CONTEXT_S, DEFAULT_HORIZON_S, FittedModel, Forecaster
from forecasting.series import PreparedSeries

DEFAULT_ANCHOR_WINDOW_S = 3600.0


class LevelAnchored(Forecaster):
    def __init__(self, base: Forecaster, window_s: float = DEFAULT_ANCHOR_WINDOW_S) -> None:
        self.base = base
        self.window_s = window_s
        self.name = f"{base.name}+anchor"
        self.cheap = bool(getattr(base, "cheap", False))

    def min_history_s(self) -> float:
        return self.base.min_history_s()

    def fit(
        self,
        history: PreparedSeries,
        *,
        horizon_s: float = DEFAULT_HORIZON_S,
        context_s: float = DEFAULT_CONTEXT_S,
        warm_start: FittedModel | None = None,
    ) -> FittedModel:
        fitted = self.base.fit(
            history, horizon_s=horizon_s, context_s=max(context_s, self.window_s), warm_start=warm_start
        )
        return replace(fitted, name=self.name, anchor_window_s=self.window_s)
