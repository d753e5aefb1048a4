"""Share one expensive fit between candidates that wrap the same model.

In a backtest, ``prophet``, ``prophet+anchor`` and the Prophet/seasonal-naive mean are all fitted on the same
history at the same origin; fitting Prophet once for all three cuts the backtest's cost by two thirds.
"""

from __future__ import annotations

from collections import OrderedDict

from forecasting.models.base import DEFAULT_CONTEXT_S, DEFAULT_HORIZON_S, FittedModel, Forecaster
from forecasting.series import PreparedSeries


class SharedFits(Forecaster):
    def __init__(self, base: Forecaster, keep: int = 4) -> None:
        self.base = base
        self.name = base.name
        self.keep = keep
        self._fits: OrderedDict[tuple[float, int, float, float, float], FittedModel] = OrderedDict()

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
        # A checksum of the values is part of the key: other data at the same times must not hit the memo.
        key = (history.start, len(history), horizon_s, context_s, float(history.values.sum()))
        hit = self._fits.get(key)
        if hit is not None:
            self._fits.move_to_end(key)
            return hit
        fitted = self.base.fit(history, horizon_s=horizon_s, context_s=context_s, warm_start=warm_start)
        self._fits[key] = fitted
        while len(self._fits) > self.keep:
            self._fits.popitem(last=False)
        return fitted
