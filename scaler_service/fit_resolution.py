"""The step a series' history is read and fitted at: its queryStep, or a coarser one when the history is long.

A fit reads ``historyTimeWindow / step`` points from the source. A trigger with ``queryStep=1s`` and
``historyTimeWindow=400d`` would read 34.6 million points (over 3,000 Prometheus range queries) for a model
that fits 5-minute means anyway. So the history is read at the smallest step that keeps it within
``max_points`` points: the query step itself when it does, else a round step (1m, 5m, 30m, ...) that is a
whole multiple of the query step. A fit step beyond :data:`MAX_FIT_STEP_S` is refused: a model fitted on
coarser points cannot forecast the few minutes ahead the scaler serves.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

DEFAULT_MAX_POINTS_PER_FIT = 20_160
"""Fourteen days at one minute: the default history at the default queryStep is read as it is."""
MAX_FIT_STEP_S = 3600.0
_ROUND_STEPS_S = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600)


class FitTooCoarse(ValueError):
    """The history would have to be read at a step beyond :data:`MAX_FIT_STEP_S`."""


@dataclass(frozen=True, slots=True)
class FitResolution:
    step_s: float
    """The step the history is read and fitted at."""
    points: int
    """Points one fit reads (``ceil(history / step)``)."""
    query_step_s: float

    @property
    def coarsened(self) -> bool:
        return self.step_s > self.query_step_s


def fit_resolution(history_s: float, query_step_s: float, max_points: int) -> FitResolution:
    """The step to read ``history_s`` of a series queried every ``query_step_s`` within ``max_points``."""
    if max_points < 1:
        raise ValueError(f"max_points must be >= 1, got {max_points}")
    needed = history_s / max_points
    if query_step_s >= needed:
        step = query_step_s
    else:
        step = next(
            (
                float(r)
                for r in _ROUND_STEPS_S
                if r >= needed and abs(r / query_step_s - round(r / query_step_s)) < 1e-9
            ),
            math.ceil(needed / query_step_s - 1e-9) * query_step_s,
        )
    if step > MAX_FIT_STEP_S and step > query_step_s:
        raise FitTooCoarse(
            f"{history_s / 86_400:g} days of history within {max_points} points needs a step of "
            f"{needed:.0f} s, coarser than the {MAX_FIT_STEP_S:.0f} s a fit may use: shorten "
            "historyTimeWindow or raise --max-points-per-fit"
        )
    return FitResolution(step_s=step, points=math.ceil(history_s / step - 1e-9), query_step_s=query_step_s)


__all__ = ["DEFAULT_MAX_POINTS_PER_FIT", "MAX_FIT_STEP_S", "FitResolution", "FitTooCoarse", "fit_resolution"]
