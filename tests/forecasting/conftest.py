from __future__ import annotations

import warnings

import numpy as np
import pytest

from forecasting.series import DAY_S, WEEK_S, PreparedSeries, SeriesQuality


def regular(values: np.ndarray, step_s: float, start: float = 1_700_006_400.0) -> PreparedSeries:
    """A complete regular series (start is a Wednesday 00:00 UTC, aligned to every step used here)."""
    n = len(values)
    return PreparedSeries(
        start=start,
        step_s=step_s,
        values=np.asarray(values, dtype=np.float64),
        quality=SeriesQuality(n, n, 0, 0.0, None),
    )


def weekly_sine(days: float, step_s: float = 300.0, start: float = 1_700_006_400.0) -> PreparedSeries:
    """100 + 30 sin(day) + 15 sin(week): a pure daily and weekly pattern, no noise, no trend."""
    t = start + step_s * np.arange(int(days * DAY_S / step_s))
    y = 100 + 30 * np.sin(2 * np.pi * t / DAY_S) + 15 * np.sin(2 * np.pi * t / WEEK_S)
    return regular(y, step_s, start)


@pytest.fixture(autouse=True)
def _quiet_prophet_deprecations() -> None:
    # Prophet 1.5 raises a pandas 3 deprecation warning inside its own code; it is not ours to fix.
    warnings.filterwarnings("ignore", category=FutureWarning, module="prophet")
    warnings.filterwarnings("ignore", category=DeprecationWarning, module="prophet")
