"""From the statistics a VM is sized on (:mod:`rightsizer.decide.usage_stats`) to a size: the cheapest one
that keeps them in bounds. When memory is unknown the target keeps at least the current memory. The
statistic is rescaled to a candidate size by the vCPU (memory) ratio and must stay under the
target thresholds *on the new size*.

Confidence is the estimated probability that the chosen size holds those limits over the coming week (see
:mod:`rightsizer.decide.confidence`). The target is the cheapest fitting size whose confidence reaches
``gates.min_confidence``; when no fitting size that is a valid move reaches it, the cheapest fit is kept and
the confidence gate skips the row with what the estimate rests on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from rightsizer.catalogue import Catalogue, VmSize, burstable_baseline
from rightsizer.decide.confidence import (
    HORIZON_WINDOWS,
    STAT_FLOOR_PERCENT,
    Confidence,
    LimitCheck,
    credit_exhaustion,
    hold_confidence,
)
from rightsizer.decide.usage_stats import UsageStats, usage_stats
from rightsizer.domain import (
    HOURS_PER_MONTH,
    USER_FACING_TAG,
    WORKLOAD_TAG,
    Action,
    Priority,
    VmInfo,
)
from rightsizer.settings import DAY_S, Settings
from rightsizer.tags import PreviousSizeTag

__all__ = [
    "Sizing",
    "UsageStats",  # re-exported: defined in rightsizer.decide.usage_stats
    "capability_problem",
    "choose_size",
    "cpu_limit",
    "fits",
    "is_user_facing",
    "limit_checks",
    "target_confidence",
    "usage_stats",
]


def is_user_facing(vm: VmInfo) -> bool:
    v = vm.tags.get(USER_FACING_TAG, "").strip().lower()
    return v in ("true", "yes", "1") or vm.tags.get(WORKLOAD_TAG, "").strip().lower() == "user-facing"


@dataclass(frozen=True, slots=True)
class Sizing:
    action: Action
    reason: str
    target: str | None = None
    current_hourly: float | None = None
    target_hourly: float | None = None
    undersized: bool = False
    """The current size breaks the thresholds: the target is larger (recommend-only)."""
    problem: bool = False
    """Cannot size (unknown size, no price): a skip, not a 'keep'."""
    stats: dict[str, float] = field(default_factory=dict)
    confidence: Confidence | None = None
    """How likely the target (the current size for a keep) holds its limits; None when nothing was sized."""

    @property
    def probability(self) -> float:
        return 0.0 if self.confidence is None else self.confidence.probability

    @property
    def monthly_savings(self) -> float:
        if self.current_hourly is None:
            return 0.0
        if self.action is Action.SHUTDOWN:
            return self.current_hourly * HOURS_PER_MONTH
        if self.target_hourly is None:
            return 0.0
        return (self.current_hourly - self.target_hourly) * HOURS_PER_MONTH


def cpu_limit(vm: VmInfo, settings: Settings) -> float:
    t = settings.thresholds
    return t.cpu_p95_max_percent_user_facing if is_user_facing(vm) else t.cpu_p95_max_percent


def capability_problem(vm: VmInfo, current: VmSize, candidate: VmSize) -> str | None:
    """Why ``candidate`` cannot host what ``vm`` uses on ``current`` (None when it can)."""
    if candidate.cpu_arch != current.cpu_arch:
        return f"{candidate.cpu_arch} (image is {current.cpu_arch})"
    if current.premium_storage and not candidate.premium_storage:
        return "no premium storage"
    if current.accelerated_networking and not candidate.accelerated_networking:
        return "no accelerated networking"
    if vm.data_disks > candidate.max_data_disks:
        return f"max {candidate.max_data_disks} data disks < {vm.data_disks}"
    if vm.nics > candidate.max_nics:
        return f"max {candidate.max_nics} NICs < {vm.nics}"
    if vm.uses_temp_disk and not candidate.has_temp_disk:
        return "no temp disk"
    return None


def fits(vm: VmInfo, current: VmSize, candidate: VmSize, stats: UsageStats, settings: Settings) -> str | None:
    """None when ``candidate`` keeps the statistics under the thresholds, else why not."""
    t = settings.thresholds
    cpu_on_target = stats.cpu * current.vcpus / candidate.vcpus
    if cpu_on_target > cpu_limit(vm, settings):
        return f"P95 CPU {cpu_on_target:.0f}% > {cpu_limit(vm, settings):g}%"
    mem = stats.memory
    if mem is None:
        if candidate.memory_gib < current.memory_gib:
            return "memory unknown: keeps at least the current memory"
    else:
        mem_on_target = mem * current.memory_gib / candidate.memory_gib
        if mem_on_target > t.memory_max_percent:
            return f"memory {mem_on_target:.0f}% > {t.memory_max_percent:g}%"
    if candidate.burstable:
        baseline = burstable_baseline(candidate.name)
        if not t.offer_burstable or baseline is None:
            return "burstable not offered"
        mean_on_target = stats.cpu_mean * current.vcpus / candidate.vcpus
        if mean_on_target > 100 * baseline:
            return f"mean CPU {mean_on_target:.0f}% > burstable baseline {100 * baseline:.0f}%"
    return None


def _relative(error_points: float, statistic: float | None, forecast: float | None = None) -> float:
    """A forecast error in points relative to the statistic (unknown errors count as 100 %).

    Only a statistic sized on the forecast (the forecast above the observed value) carries the forecast's
    error: one sized on the observed history is the estimator the walk-forward windows backtest directly.
    """
    if forecast is not None and statistic is not None and math.isfinite(statistic) and forecast < statistic:
        return 0.0
    if not math.isfinite(error_points):
        return 1.0
    if statistic is None or not math.isfinite(statistic):
        return 1.0 if error_points > 0 else 0.0
    return error_points / max(statistic, STAT_FLOOR_PERCENT)


def limit_checks(
    vm: VmInfo, current: VmSize, candidate: VmSize, stats: UsageStats, settings: Settings
) -> list[LimitCheck]:
    """The limits ``candidate`` must keep (as in :func:`fits`), with the VM's evidence to judge each one."""
    ev = stats.evidence
    if ev is None:
        return []
    t = settings.thresholds
    cpu_scale = current.vcpus / candidate.vcpus
    checks = [
        LimitCheck(
            "P95 CPU",
            stats.cpu * cpu_scale,
            cpu_limit(vm, settings),
            ev.cpu_p95,
            _relative(stats.cpu_forecast_error, stats.cpu, stats.cpu_forecast_p95),
            scale=cpu_scale,
        )
    ]
    if stats.memory is not None and ev.memory is not None:
        partial = bool(stats.memory_partial_note)
        checks.append(
            LimitCheck(
                "max memory" if t.memory_statistic == "max" or partial else "P95 memory",
                stats.memory * current.memory_gib / candidate.memory_gib,
                t.memory_max_percent,
                ev.memory,
                _relative(stats.memory_forecast_error, stats.memory, stats.memory_forecast_p95),
                scale=current.memory_gib / candidate.memory_gib,
                detail=stats.memory_partial_note,
            )
        )
    baseline = burstable_baseline(candidate.name) if candidate.burstable else None
    if baseline is not None:
        # Credits running out is what breaks a burstable target: a past day breached it when the bank,
        # simulated on the target over the history, ran dry. The week's mean under the baseline is what keeps
        # the bank from draining; it is the observed mean (never forecast), so no forecast error is added.
        ran_out = (
            None
            if ev.cpu is None
            else credit_exhaustion(ev.cpu, ev.step_s, cpu_scale, 100 * baseline, windows=ev.cpu_windows)
        )
        checks.append(
            LimitCheck(
                "mean CPU",
                stats.cpu_mean * cpu_scale,
                100 * baseline,
                ev.cpu_mean,
                limit_name="burstable baseline",
                scale=cpu_scale,
                averaged_windows=HORIZON_WINDOWS,
                window_breaches=ran_out,
                detail="" if ran_out is None else f"credits ran out in {sum(ran_out)}/{len(ran_out)} past days",
            )
        )
    return checks


def target_confidence(
    vm: VmInfo, current: VmSize, candidate: VmSize, stats: UsageStats, settings: Settings
) -> Confidence:
    """The estimated probability that ``vm`` keeps every limit on ``candidate`` over the coming week."""
    if stats.evidence is None:
        return Confidence(0.0, 0, 0, note="no usage history to judge the target on")
    return hold_confidence(limit_checks(vm, current, candidate, stats, settings))


def _last_resize_age_days(vm: VmInfo, now: float) -> float | None:
    try:
        tag = PreviousSizeTag.of(vm.tags)
    except ValueError:
        return None
    return None if tag is None else (now - tag.at.timestamp()) / DAY_S


@dataclass(frozen=True, slots=True)
class _Pick:
    size: VmSize
    hourly: float
    confidence: Confidence
    passed_over: str = ""
    """Why cheaper fitting sizes were not taken (their confidence), or empty."""


def _pick_target(
    vm: VmInfo,
    current: VmSize,
    current_hourly: float,
    fitting: list[tuple[VmSize, float]],
    stats: UsageStats,
    settings: Settings,
    *,
    undersized: bool,
) -> _Pick | None:
    """The cheapest fitting size whose confidence reaches the gate; else the cheapest fit (the gate decides).

    Only a saving is traded for confidence: a dearer but more confident size is taken when it still cuts
    the price by ``min_saving_fraction``. An undersized VM gets the cheapest fit (growing it further for
    confidence would spend money on a guess) and the gate judges that fit.
    """
    if not fitting:
        return None
    gate = settings.gates.min_confidence
    max_price = current_hourly * (1.0 - settings.thresholds.min_saving_fraction)
    cheapest, cheapest_price = fitting[0]
    cheapest_conf = target_confidence(vm, current, cheapest, stats, settings)
    if cheapest_conf.probability >= gate or cheapest.name == current.name or undersized:
        return _Pick(cheapest, cheapest_price, cheapest_conf)
    for candidate, price in fitting[1:]:
        if candidate.name == current.name or price > max_price:
            break
        conf = target_confidence(vm, current, candidate, stats, settings)
        if conf.probability >= gate:
            passed = f"{cheapest.name} fits but holds with confidence {cheapest_conf.probability:.2f} only"
            return _Pick(candidate, price, conf, passed)
    return _Pick(cheapest, cheapest_price, cheapest_conf)


def choose_size(vm: VmInfo, stats: UsageStats, catalogue: Catalogue, settings: Settings, now: float) -> Sizing:
    """The sizing decision for one VM (pure): shutdown, resize to the cheapest confident fit, or keep."""
    t = settings.thresholds
    detail = stats.as_dict()
    current = catalogue.size(vm.size)
    if current is None:
        return Sizing(Action.NONE, f"size {vm.size} is not in the catalogue", problem=True, stats=detail)
    spot = vm.priority is Priority.SPOT
    current_hourly = catalogue.hourly(vm.size, vm.region, vm.os, spot=spot)
    if current_hourly is None:
        return Sizing(
            Action.NONE,
            f"no {'Spot ' if spot else ''}{vm.os} price for {vm.size} in {vm.region}",
            problem=True,
            stats=detail,
        )
    current_misfit = fits(vm, current, current, stats, settings)
    # Fitting sizes, cheapest first. Pay-as-you-go sizes come cheapest first, so the scan stops once nothing
    # further could be picked: after the first fit of an undersized VM, or past the minimum-change price.
    max_price = current_hourly * (1.0 - t.min_saving_fraction)
    fitting: list[tuple[VmSize, float]] = []
    for candidate, payg in catalogue.priced_sizes(vm.region, vm.os):
        if not spot and fitting and (current_misfit is not None or payg > max_price):
            break
        price = catalogue.hourly(candidate.name, vm.region, vm.os, spot=True) if spot else payg
        if price is None or capability_problem(vm, current, candidate) is not None:
            continue
        if fits(vm, current, candidate, stats, settings) is None:
            fitting.append((candidate, price))
    fitting.sort(key=lambda cp: cp[1])  # stable: equal prices keep the catalogue's order (Spot prices differ)
    pick = _pick_target(vm, current, current_hourly, fitting, stats, settings, undersized=current_misfit is not None)
    passed_over = f" ({pick.passed_over})" if pick is not None and pick.passed_over else ""
    if pick is not None:
        detail["hold_windows"] = float(pick.confidence.windows)
        detail["hold_windows_held"] = float(pick.confidence.held)
    if stats.cpu < t.idle_cpu_p95_percent:
        # Shutdown is only ever recommended; the fallback target says what to run if it must stay on.
        fallback = ""
        target_name = target_hourly_or_none = None
        confidence = None if pick is None else pick.confidence
        if pick is not None and pick.size.name != current.name and pick.hourly < current_hourly:
            target_name, target_hourly_or_none = pick.size.name, pick.hourly
            fallback = (
                f"; if it must stay on, {target_name} saves "
                f"${(current_hourly - pick.hourly) * HOURS_PER_MONTH:,.2f}/month{passed_over}"
            )
        else:
            confidence = target_confidence(vm, current, current, stats, settings)
        return Sizing(
            Action.SHUTDOWN,
            f"idle: P95 CPU {stats.cpu:.1f}% < {t.idle_cpu_p95_percent:g}%: shut down{fallback}",
            target=target_name,
            current_hourly=current_hourly,
            target_hourly=target_hourly_or_none,
            stats=detail,
            confidence=confidence,
        )
    if pick is None:
        reason = "no catalogue size fits the usage and capabilities"
        if current_misfit:
            reason += f" (current: {current_misfit})"
        return Sizing(Action.NONE, reason, current_hourly=current_hourly, stats=detail)
    target, target_hourly = pick.size, pick.hourly
    if target.name == current.name:
        return Sizing(
            Action.NONE,
            "already the cheapest size that fits",
            current_hourly=current_hourly,
            stats=detail,
            confidence=pick.confidence,
        )
    if current_misfit is not None and target_hourly >= current_hourly:
        return Sizing(
            Action.RESIZE,
            f"undersized ({current_misfit} on {current.name}): {target.name} is the cheapest fit{passed_over}",
            target=target.name,
            current_hourly=current_hourly,
            target_hourly=target_hourly,
            undersized=True,
            stats=detail,
            confidence=pick.confidence,
        )
    if current_misfit is None:
        cut = (current_hourly - target_hourly) / current_hourly
        if cut < t.min_saving_fraction:
            return Sizing(
                Action.NONE,
                f"{target.name} would cut the price only {100 * cut:.1f}% "
                f"(< {100 * t.min_saving_fraction:g}%): "
                "keeping the current size",
                current_hourly=current_hourly,
                stats=detail,
                confidence=pick.confidence,
            )
    age = _last_resize_age_days(vm, now)
    if age is not None and age < t.resize_cooldown_days:
        return Sizing(
            Action.NONE,
            f"resized {age:.1f} days ago (cooldown {t.resize_cooldown_days:g} days): keeping {current.name}",
            current_hourly=current_hourly,
            stats=detail,
            confidence=pick.confidence,
        )
    mem_text = "memory unknown" if stats.memory is None else f"memory {stats.memory:.0f}%"
    burst = " (burstable)" if target.burstable else ""
    fit_text = "the cheapest confident fit" if passed_over else "the cheapest fit"
    return Sizing(
        Action.RESIZE,
        f"P95 CPU {stats.cpu:.0f}%, {mem_text} of {current.name}: {target.name}{burst} is {fit_text}{passed_over}",
        target=target.name,
        current_hourly=current_hourly,
        target_hourly=target_hourly,
        stats=detail,
        confidence=pick.confidence,
    )
