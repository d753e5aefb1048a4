"""An equal-weight mean of several models' curves.

Averaging a smooth model (Prophet) with a model that remembers last week's exact shape (seasonal naive)
cancels part of each one's error; combinations like this are among the most reliable gains in forecasting.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from forecasting.curve import ForecastCurve
from forecasting.models.base import DEFAULT_CONTEXT_S, DEFAULT_HORIZON_S, FittedModel, Forecaster, ModelError
from forecasting.series import PreparedSeries


class MeanEnsemble(Forecaster):
    def __init__(self, members: Sequence[Forecaster], name: str | None = None) -> None:
        if not members:
            raise ValueError("an ensemble needs members")
        self.members = list(members)
        self.name = name or "mean(" + ",".join(m.name for m in members) + ")"

    def min_history_s(self) -> float:
        return max(m.min_history_s() for m in self.members)

    def fit(
        self,
        history: PreparedSeries,
        *,
        horizon_s: float = DEFAULT_HORIZON_S,
        context_s: float = DEFAULT_CONTEXT_S,
        warm_start: FittedModel | None = None,
    ) -> FittedModel:
        warm_parts = dict(warm_start.params.get("members", {})) if warm_start is not None else {}
        fitted: list[FittedModel] = []
        for member in self.members:
            previous = warm_parts.get(member.name)
            warm = None
            if previous is not None and warm_start is not None:
                warm = FittedModel(member.name, warm_start.trained_until, warm_start.curve, previous)
            fitted.append(member.fit(history, horizon_s=horizon_s, context_s=context_s, warm_start=warm))
        first = fitted[0].curve
        for f in fitted[1:]:
            if f.curve.start != first.start or len(f.curve) != len(first):
                raise ModelError(f"ensemble members disagree on the grid: {self.members[0].name} vs {f.name}")
        point = np.mean([f.curve.point for f in fitted], axis=0)
        lower = np.mean([f.curve.lower for f in fitted], axis=0)
        upper = np.mean([f.curve.upper for f in fitted], axis=0)
        curve = ForecastCurve(start=first.start, step_s=first.step_s, point=point, lower=lower, upper=upper)
        params = {"members": {f.name: dict(f.params) for f in fitted}}
        return FittedModel(name=self.name, trained_until=history.end, curve=curve, params=params)
