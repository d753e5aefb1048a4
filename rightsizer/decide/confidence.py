"""Confidence that a new size holds: the estimated probability that the VM stays within its limits on it.

The limits are the ones the size was chosen for, on the *target* size: P95 CPU under the CPU target (80 %,
40 % for user-facing VMs), the memory statistic under the memory limit (70 %), and for a burstable target
its CPU credits never running out (the mean CPU under the baseline, bursts covered by the bank). The
estimate is a walk-forward backtest on the VM's own history:

1. **Windows.** The history is cut into whole days (a day is the shortest window that holds a VM's daily
   cycle). For every day from the third on, the statistic learned from all the days before it is compared
   with the statistic the day itself realised: ``r_k = realised_k / learned_k``, i.e. how much more (or
   less) than "what the past said" the next window needed. With 7 days of history that is 5 windows, with
   14 days 12 (the learning part grows from 2 to 13 days; one day says nothing of a VM whose days differ).
   A P95 is judged by single days: a week's P95 lies between its days' lowest and highest P95, so a day's
   errs on the safe side. A mean over the week is the average of its days' means (step 2).
2. **Margin.** The target leaves a headroom ``h = limit / statistic on the target``: it holds as long as the
   coming week needs less than ``h`` times what the history says. ``log r`` is treated as normal with unknown
   mean and variance, so the coming window's ``log r`` follows the Student-t *predictive* distribution:
   centre the mean of the ``log r_k``, scale ``s * sqrt(1 + 1/n)``, ``n - 1`` degrees of freedom; for a
   mean, the average of the week's 7 days: scale ``s * sqrt(1/7 + 1/n)`` (never under 5 %). Few windows
   mean heavy tails and a lower probability: this is the small-sample honesty (5 windows give t with 4
   degrees of freedom, far more cautious than a raw frequency of 5/5 = 100 %).
3. **Forecast error.** When the statistic is sized on the forecast (the forecast above what was observed),
   the forecast's own error (its backtest error in points, relative to the statistic) is added to the
   scale as an independent spread: ``scale^2 = scale^2 + log(1 + e)^2``. A statistic sized on the observed
   history is exactly the estimator the windows backtest: nothing is added.
4. **Limits together.** ``P(hold) = P(every limit holds) >= 1 - sum(P(limit breached))`` (the union bound:
   no assumption on how CPU and memory move together).
5. **Breaches seen.** A past day breached the target when its statistic, on the target, exceeded the limit
   (a burstable: when its credit bank, simulated on the target over the history, ran dry that day). After
   breaches the estimate is capped at the rule-of-succession frequency ``(held + 1) / (n + 2)``: a breach
   the VM really had is never outweighed by the model.

Everything here is pure: arrays and numbers in, a :class:`Confidence` out (no clock, no I/O).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from rightsizer.inputs import FloatArray
from rightsizer.settings import DAY_S

WINDOW_S = DAY_S
"""One backtest window: a day."""
MIN_LEARNING_WINDOWS = 2
"""The first origin has two days behind it: one day says nothing of a VM whose days differ."""
MIN_WINDOW_COVERAGE = 0.5
"""A window (or what precedes it) with fewer than half its samples measured is left out."""
MIN_SPARSE_WINDOW_S = 3600.0
"""For a record measured in part only (memory with gaps), a day is judged when it holds at least an hour of
samples: its statistic is then the measured samples', as the sizing statistic is."""
MIN_WINDOWS = 2
"""Below two windows there is no spread to estimate: confidence 0, with the reason."""
STAT_FLOOR_PERCENT = 1.0
"""Statistics below one percentage point are taken as one: a 0.2 % -> 0.5 % move on an idle VM is noise,
not a 2.5x growth."""
MIN_LOG_SPREAD = 0.05
"""No statistic is known better than about +-5 % from one window to the next (also keeps a perfectly flat
series from giving a certainty that measurements of a real VM never support)."""
HORIZON_WINDOWS = 7
"""The coming week in windows: a mean over it is the average of seven days' means."""
CREDIT_BANK_S = DAY_S
"""A B-series size banks at most 24 h of its baseline accrual (Azure's cap for most sizes)."""


@dataclass(frozen=True, slots=True)
class WindowSamples:
    """One statistic over the past windows: what each window realised and what the days before it said."""

    realised: FloatArray
    learned: FloatArray

    @property
    def n(self) -> int:
        return len(self.realised)

    def log_ratios(self) -> FloatArray:
        realised = np.maximum(self.realised, STAT_FLOOR_PERCENT)
        learned = np.maximum(self.learned, STAT_FLOOR_PERCENT)
        return np.asarray(np.log(realised / learned), dtype=np.float64)


def _statistic(values: FloatArray, quantile: float | None) -> float:
    finite = values[np.isfinite(values)]
    if len(finite) == 0:
        return math.nan
    if quantile is None:
        return float(finite.mean())
    return float(np.quantile(finite, quantile))


def window_samples(values: FloatArray, step_s: float, quantile: float | None, *, sparse: bool = False) -> WindowSamples:
    """Walk-forward samples of one statistic (``quantile`` in [0, 1], or None for the mean) over daily windows.

    ``values`` is a regular grid (NaN = not measured) ending now; the days are counted back from the end so
    the last window is the most recent whole day. ``sparse``: a record measured in part only, whose days are
    judged on as little as :data:`MIN_SPARSE_WINDOW_S` of samples.
    """
    realised: list[float] = []
    learned: list[float] = []
    min_coverage = min(1.0, MIN_SPARSE_WINDOW_S / WINDOW_S) if sparse else MIN_WINDOW_COVERAGE
    for start, stop in _judged_windows(len(values), step_s, values, min_coverage):
        realised.append(_statistic(values[start:stop], quantile))
        learned.append(_statistic(values[:start], quantile))
    return WindowSamples(np.asarray(realised, dtype=np.float64), np.asarray(learned, dtype=np.float64))


def _judged_windows(
    length: int, step_s: float, values: FloatArray, min_coverage: float = MIN_WINDOW_COVERAGE
) -> list[tuple[int, int]]:
    """The (start, stop) sample indices of the past days judged, oldest first (the same for every check)."""
    per_window = max(1, round(WINDOW_S / step_s))
    # Rounded, so a grid a sample short of whole days (a lookback that ends on "now") keeps its oldest day.
    n_windows = round(length / per_window)
    out: list[tuple[int, int]] = []
    for k in range(MIN_LEARNING_WINDOWS, n_windows):
        start = max(0, length - (n_windows - k) * per_window)
        stop = start + per_window
        window, before = values[start:stop], values[:start]
        if np.isfinite(window).mean() < min_coverage or np.isfinite(before).mean() < min_coverage:
            continue
        out.append((start, stop))
    return out


def credit_exhaustion(
    cpu: FloatArray,
    step_s: float,
    scale: float,
    baseline_percent: float,
    *,
    bank_s: float = CREDIT_BANK_S,
    windows: Sequence[tuple[int, int]] | None = None,
) -> tuple[bool, ...]:
    """Per judged past day (as :func:`window_samples`): would a burstable target have run out of CPU credits.

    A B-series VM earns credits while under its baseline and spends them above it, banking at most
    ``bank_s`` of accrual; it is throttled only when the bank is empty. ``cpu`` (percent of the current
    size, NaN = not measured) is rescaled by ``scale`` to the target and the bank simulated over the whole
    history, full at its start: a day counts as breached when the balance reached zero in it. ``windows``:
    the judged days when already known (:attr:`UsageEvidence.cpu_windows`).
    """
    capacity = baseline_percent * bank_s
    if windows is None:
        windows = _judged_windows(len(cpu), step_s, cpu)
    on_target = cpu * scale
    earned = np.where(np.isfinite(on_target), (baseline_percent - on_target) * step_s, 0.0)
    # Until it first runs dry, the bank is the running sum reflected under its cap: one vectorised pass
    # settles the common case (never dry); only a bank that does run dry is walked sample by sample.
    total = np.cumsum(earned)
    if len(total) == 0 or float(np.min(capacity + total - np.maximum(np.maximum.accumulate(total), 0.0))) >= 0.0:
        return (False,) * len(windows)
    balance = capacity
    empty = np.zeros(len(cpu), dtype=bool)
    for i, pct in enumerate(on_target.tolist()):
        if pct != pct:  # NaN: not measured, nothing earned or spent
            continue
        balance = min(capacity, balance + (baseline_percent - pct) * step_s)
        if balance < 0.0:
            empty[i] = True
            balance = 0.0
    return tuple(bool(empty[start:stop].any()) for start, stop in windows)


@dataclass(frozen=True, slots=True)
class UsageEvidence:
    """A VM's walk-forward samples, computed once per VM and reused for every candidate size."""

    cpu_p95: WindowSamples
    cpu_mean: WindowSamples
    memory: WindowSamples | None
    """None when memory is unknown."""
    cpu: FloatArray | None = None
    """The CPU grid itself (percent of the current size), for a burstable target's credit simulation."""
    step_s: float = 300.0
    cpu_windows: tuple[tuple[int, int], ...] = ()
    """The judged days of ``cpu`` as (start, stop) sample indices."""


def usage_evidence(
    cpu: FloatArray,
    memory: FloatArray | None,
    step_s: float,
    *,
    memory_quantile: float = 0.95,
    memory_sparse: bool = False,
) -> UsageEvidence:
    """Daily walk-forward samples of the statistics sizing uses: P95 CPU, mean CPU, memory P95 (or max).
    ``memory_sparse``: memory measured in part only (see :func:`window_samples`)."""
    return UsageEvidence(
        cpu_p95=window_samples(cpu, step_s, 0.95),
        cpu_mean=window_samples(cpu, step_s, None),
        memory=None if memory is None else window_samples(memory, step_s, memory_quantile, sparse=memory_sparse),
        cpu=cpu,
        step_s=step_s,
        cpu_windows=tuple(_judged_windows(len(cpu), step_s, cpu)),
    )


@dataclass(frozen=True, slots=True)
class LimitCheck:
    """One limit the target must keep, and the evidence to judge it."""

    what: str
    """As shown in reasons: ``P95 CPU``, ``memory``, ``mean CPU``."""
    on_target: float
    """The statistic the size was chosen on, rescaled to the target size (percent of the target)."""
    limit: float
    """Percent of the target the statistic must stay under."""
    samples: WindowSamples
    forecast_error: float = 0.0
    """The forecast's error relative to the statistic (0.08 = 8 %); 0 without a forecast."""
    limit_name: str = "limit"
    """How the limit is named in reasons (``limit``, ``baseline``)."""
    scale: float = 1.0
    """From the samples' unit (percent of the current size) to percent of the target: a past window broke
    the target's limit when ``realised * scale > limit``."""
    averaged_windows: int = 1
    """How many windows the coming week's statistic averages: 1 for a P95 (judged by single days),
    :data:`HORIZON_WINDOWS` for a mean."""
    window_breaches: tuple[bool, ...] | None = None
    """Per past window, whether the target broke this limit, when that is not the statistic against the
    limit (a burstable's credits running out); None: ``realised * scale > limit``."""
    detail: str = ""
    """Added to the reason after the limit (e.g. ``credits ran out in 0/5 past days``)."""


@dataclass(frozen=True, slots=True)
class LimitOutcome:
    check: LimitCheck
    probability: float
    """Estimated probability that this limit holds over the coming week."""
    breached: tuple[bool, ...]
    """Per past window: would the target have been breached there."""


@dataclass(frozen=True, slots=True)
class Confidence:
    probability: float
    """Estimated probability that the target holds every limit over the coming week, in [0, 1]."""
    windows: int
    held: int
    """Windows in which every limit held."""
    outcomes: tuple[LimitOutcome, ...] = ()
    note: str = ""
    """Why the estimate is what it is when it is not a plain backtest (too little history, capped, ...)."""

    @property
    def reason(self) -> str:
        """What the confidence rests on, e.g. ``holds in 6/6 past days; P95 CPU on target 31% vs limit 80%``."""
        if self.windows < MIN_WINDOWS:
            return self.note or "no history to judge the target on"
        parts = [f"holds in {self.held}/{self.windows} past days"]
        for o in self.outcomes:
            c = o.check
            detail = f" ({c.detail})" if c.detail else ""
            parts.append(f"{c.what} on target {c.on_target:.0f}% vs {c.limit_name} {c.limit:.0f}%{detail}")
        errors = [o.check.forecast_error for o in self.outcomes if o.check.forecast_error > 0]
        if errors:
            parts.append(f"forecast error {100 * max(errors):.0f}%")
        if self.note:
            parts.append(self.note)
        return "; ".join(parts)


def student_t_cdf(x: float, df: float) -> float:
    """P(T <= x) for Student's t with ``df`` > 0 degrees of freedom (regularised incomplete beta)."""
    if math.isinf(x):
        return 1.0 if x > 0 else 0.0
    tail = 0.5 * _betainc(df / 2.0, 0.5, df / (df + x * x))
    return 1.0 - tail if x > 0 else tail


def _betainc(a: float, b: float, x: float) -> float:
    """Regularised incomplete beta I_x(a, b) by its continued fraction (modified Lentz)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x > (a + 1.0) / (a + b + 2.0):
        return 1.0 - _betainc(b, a, 1.0 - x)
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    f = d
    for m in range(1, 300):
        for numerator in (
            m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),
        ):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            f *= c * d
        if abs(c * d - 1.0) < 1e-14:
            break
    return math.exp(log_front) * f / a


def limit_outcome(check: LimitCheck) -> LimitOutcome:
    """Probability that one limit holds, from the walk-forward ratios (module docstring, steps 2-3)."""
    x = check.samples.log_ratios()
    n = len(x)
    if check.limit <= 0:
        log_headroom = -math.inf
    elif check.on_target <= 0:
        log_headroom = math.inf
    else:
        log_headroom = math.log(check.limit / check.on_target)
    if check.window_breaches is not None:
        breached = check.window_breaches
    else:
        breached = tuple(bool(v * check.scale > check.limit) for v in check.samples.realised)
    if n < MIN_WINDOWS:
        return LimitOutcome(check, 0.0, breached)
    spread = max(float(np.std(x, ddof=1)), MIN_LOG_SPREAD)
    # Predictive spread of the average of ``h`` coming windows, their common mean estimated from ``n``.
    h = max(1, check.averaged_windows)
    spread = max(spread * math.sqrt(1.0 / h + 1.0 / n), MIN_LOG_SPREAD)
    forecast = math.log1p(max(0.0, check.forecast_error))
    scale = math.sqrt(spread * spread + forecast * forecast)
    probability = student_t_cdf((log_headroom - float(np.mean(x))) / scale, n - 1)
    return LimitOutcome(check, probability, breached)


def hold_confidence(checks: Sequence[LimitCheck]) -> Confidence:
    """The probability that every limit holds over the coming week (module docstring, steps 1-5)."""
    if not checks:
        return Confidence(0.0, 0, 0, note="no limit to judge")
    outcomes = tuple(limit_outcome(c) for c in checks)
    windows = min(o.check.samples.n for o in outcomes)
    if windows < MIN_WINDOWS:
        return Confidence(
            0.0,
            windows,
            0,
            outcomes,
            note=(
                f"too little history to judge the target: {windows} walk-forward day(s), needs {MIN_WINDOWS} "
                f"({MIN_LEARNING_WINDOWS + MIN_WINDOWS} whole days)"
            ),
        )
    any_breach = [any(o.breached[i] for o in outcomes if i < len(o.breached)) for i in range(windows)]
    held = windows - sum(any_breach)
    probability = max(0.0, 1.0 - sum(1.0 - o.probability for o in outcomes))
    note = ""
    if held < windows:
        succession = (held + 1) / (windows + 2)
        if succession < probability:
            probability = succession
            note = f"capped at (held + 1)/(days + 2) = {succession:.2f} after breaches in past days"
    return Confidence(min(1.0, probability), windows, held, outcomes, note)


__all__ = [
    "Confidence",
    "LimitCheck",
    "LimitOutcome",
    "UsageEvidence",
    "WindowSamples",
    "credit_exhaustion",
    "hold_confidence",
    "limit_outcome",
    "student_t_cdf",
    "usage_evidence",
    "window_samples",
]
