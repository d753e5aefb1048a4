"""What a tuning run is asked for and where it looks: the service level and the split of the trace into a
tuning stretch and a held-back one (see :mod:`scaler_service.backtest.tune`)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from forecasting.series import DAY_S, format_duration, format_instant
from scaler_service.backtest.hpa import TICK_S
from scaler_service.backtest.metrics import StrategyMetrics
from scaler_service.backtest.trace import MINUTE_S, DemandTrace, TraceError

RECOMMENDED_HOLDOUT_DAYS = 7.0
MIN_TUNE_S = DAY_S


@dataclass(frozen=True, slots=True)
class ServiceLevel:
    """What the user accepts: a share of under-provisioned minutes, or of unserved demand (or both)."""

    max_underprovisioned: float | None = 0.01
    max_unserved: float | None = None

    def __post_init__(self) -> None:
        if self.max_underprovisioned is None and self.max_unserved is None:
            raise ValueError("state a service level: a maximum under-provisioned share or unserved share")
        for name in ("max_underprovisioned", "max_unserved"):
            value = getattr(self, name)
            if value is not None and not 0 <= value < 1:
                raise ValueError(f"{name} must be a share in [0, 1), got {value}")

    def excess(self, m: StrategyMetrics, demand_total: float) -> float:
        """How far ``m`` is above the service level, as a share (0 when it is met)."""
        over = 0.0
        if self.max_underprovisioned is not None:
            share = m.underprovisioned_minutes / m.eval_minutes if m.eval_minutes else 0.0
            over = max(over, share - self.max_underprovisioned)
        if self.max_unserved is not None:
            share = m.unserved_demand / demand_total if demand_total > 0 else 0.0
            over = max(over, share - self.max_unserved)
        return max(0.0, over)

    def describe(self) -> str:
        parts = []
        if self.max_underprovisioned is not None:
            parts.append(f"at most {self.max_underprovisioned:.2%} of minutes under-provisioned")
        if self.max_unserved is not None:
            parts.append(f"at most {self.max_unserved:.2%} of demand unserved")
        return " and ".join(parts)


@dataclass(frozen=True, slots=True)
class TuneSplit:
    sim_start: float
    tune_start: float
    holdout_start: float
    end: float

    @property
    def tune_from_tick(self) -> int:
        return round((self.tune_start - self.sim_start) / TICK_S)

    @property
    def holdout_from_tick(self) -> int:
        return round((self.holdout_start - self.sim_start) / TICK_S)

    @property
    def n_ticks(self) -> int:
        return round((self.end - self.sim_start) / TICK_S)

    def describe(self) -> str:
        text = (
            f"tuned on {format_instant(self.tune_start)} to {format_instant(self.holdout_start)} "
            f"({format_duration(self.holdout_start - self.tune_start)}); held back and evaluated: "
            f"{format_instant(self.holdout_start)} to {format_instant(self.end)} "
            f"({format_duration(self.end - self.holdout_start)}), never seen by the search"
        )
        if self.end - self.holdout_start < RECOMMENDED_HOLDOUT_DAYS * DAY_S:
            text += f" (less than the recommended {RECOMMENDED_HOLDOUT_DAYS:.0f} days: a weekly pattern is not judged)"
        return text


def split_trace(
    trace: DemandTrace,
    *,
    holdout_days: float = RECOMMENDED_HOLDOUT_DAYS,
    tune_days: float = 14.0,
    settle_s: float = 3600.0,
    min_history_s: float = 2 * DAY_S,
) -> TuneSplit:
    """Held-back stretch at the end, tuning stretch before it (see the module docs)."""
    if not holdout_days > 0 or not tune_days > 0:
        raise ValueError(f"held-back and tuning days must be > 0, got {holdout_days} and {tune_days}")
    end = math.floor(trace.end / MINUTE_S) * MINUTE_S
    holdout_start = math.floor((end - holdout_days * DAY_S) / MINUTE_S) * MINUTE_S
    earliest = math.ceil((trace.start + min_history_s + settle_s) / MINUTE_S) * MINUTE_S
    tune_start = max(holdout_start - math.floor(tune_days * DAY_S / MINUTE_S) * MINUTE_S, earliest)
    if holdout_start - tune_start < MIN_TUNE_S:
        raise TraceError(
            f"trace [{format_instant(trace.start)}, {format_instant(trace.end)}] is too short to tune: "
            f"{format_duration(min_history_s)} of history, {format_duration(MIN_TUNE_S)} to tune on and "
            f"{format_duration(holdout_days * DAY_S)} held back are needed "
            f"({format_duration(min_history_s + settle_s + MIN_TUNE_S + holdout_days * DAY_S)})"
        )
    return TuneSplit(tune_start - settle_s, tune_start, holdout_start, end)


__all__ = ["MIN_TUNE_S", "RECOMMENDED_HOLDOUT_DAYS", "ServiceLevel", "TuneSplit", "split_trace"]
