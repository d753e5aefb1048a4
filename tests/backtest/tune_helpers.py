"""Synthetic traces for the tuning tests: a daily shape the seasonal naive model forecasts well."""

from __future__ import annotations

import numpy as np

from forecasting.series import DAY_S
from scaler_service.backtest.trace import DemandTrace

START = 1_700_006_400.0  # a midnight UTC


def daily_trace(days: float, *, seed: int = 0, noise: float = 0.05, name: str = "synthetic") -> DemandTrace:
    n = round(days * 1440)
    t = np.arange(n) * 60.0
    rng = np.random.default_rng(seed)
    phase = 2 * np.pi * (t % DAY_S) / DAY_S
    # A morning ramp to a midday peak: the kind of rise reactive scaling meets late.
    shape = 40 + 160 * np.clip(np.sin(phase - np.pi / 3), 0, None) ** 2
    values = shape * (1 + rng.normal(0, noise, n))
    return DemandTrace(name, START, np.maximum(values, 0.0), 60.0)


def with_holdout_replaced(trace: DemandTrace, holdout_start: float, values: np.ndarray) -> DemandTrace:
    i = round((holdout_start - trace.start) / 60.0)
    new = trace.values.copy()
    new[i:] = values[: len(new) - i]
    return DemandTrace(trace.name, trace.start, new, trace.source_step_s)
