"""The deciding side: usage + catalogue + settings -> one Recommendation per VM (pure, ``now`` given).

``recommend`` never performs I/O; the only expensive step is the per-VM forecast (see
:mod:`rightsizer.decide.forecast`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

import structlog

from rightsizer.catalogue import Catalogue
from rightsizer.decide.gates import (
    FleetContext,
    approval_gate,
    group_key,
    skip_gates,
)
from rightsizer.decide.sizing import Sizing, choose_size
from rightsizer.decide.usage_stats import UsageStats, usage_stats
from rightsizer.domain import Action, Decision, PowerState, Recommendation, VmInfo
from rightsizer.metrics import NoUsage, Usage, VmUsage
from rightsizer.settings import Settings

# Not cached on first use: a CLI test configuring structlog must not pin these loggers to its stream.
log = structlog.wrap_logger(None, logger_factory_args=(__name__,), cache_logger_on_first_use=False)


@dataclass(frozen=True, slots=True)
class _Candidate:
    vm: VmInfo
    sizing: Sizing
    stats: UsageStats
    skip: tuple[str, str] | None


def _rec(
    vm: VmInfo,
    decision: Decision,
    reason: str,
    gate: str | None,
    sizing: Sizing | None = None,
    confidence: float = 0.0,
    **extra: object,
) -> Recommendation:
    if sizing is None:
        return Recommendation(
            vm=vm,
            action=Action.NONE,
            decision=decision,
            reason=reason,
            gate=gate,
            confidence=round(confidence, 3),
        )
    return Recommendation(
        vm=vm,
        action=sizing.action,
        decision=decision,
        reason=reason,
        target_size=sizing.target,
        monthly_savings_usd=round(sizing.monthly_savings, 2),
        confidence=round(confidence, 3),
        gate=gate,
        current_monthly_usd=None if sizing.current_hourly is None else round(sizing.current_hourly * 730.0, 2),
        target_monthly_usd=None if sizing.target_hourly is None else round(sizing.target_hourly * 730.0, 2),
        stats=sizing.stats,
        **extra,  # type: ignore[arg-type]
    )


def recommend(
    vms: Sequence[VmInfo],
    metrics: Mapping[str, Usage],
    catalogue: Catalogue,
    settings: Settings,
    now: float,
    *,
    on_vm: Callable[[VmInfo, UsageStats], None] | None = None,
    on_stats: Callable[[], object] | None = None,
) -> list[Recommendation]:
    """Exactly one recommendation per VM, in input order, skips included with their reason.

    ``metrics`` is keyed by VM id (see :mod:`rightsizer.metrics`); ``now`` is epoch seconds.
    """
    fleet = FleetContext.of([vm for vm in vms if vm.problem is None])
    out: dict[str, Recommendation] = {}
    candidates: list[_Candidate] = []
    sized: list[tuple[VmInfo, VmUsage]] = []
    for vm in vms:
        if vm.problem is not None:
            out[vm.id] = _rec(vm, Decision.SKIP, vm.problem, "inventory")
            continue
        if vm.power_state is not PowerState.RUNNING:
            out[vm.id] = _rec(vm, Decision.SKIP, f"VM is {vm.power_state.value}: nothing to size", "state")
            continue
        usage = metrics.get(vm.id)
        if usage is None or isinstance(usage, NoUsage):
            reason = usage.reason if usage is not None else "no metrics for this VM"
            out[vm.id] = _rec(vm, Decision.SKIP, reason, "data")
            continue
        sized.append((vm, usage))
    all_stats = _all_usage_stats(sized, now, settings, on_stats)
    for vm, vm_usage in sized:
        stats = all_stats.get(vm.id)
        if isinstance(stats, Exception):
            out[vm.id] = _rec(vm, Decision.SKIP, f"could not evaluate: {type(stats).__name__}: {stats}", "error")
            continue
        assert stats is not None
        if on_vm is not None:
            on_vm(vm, stats)
        try:
            sizing = choose_size(vm, stats, catalogue, settings, now)
        except Exception as exc:  # one VM's unexpected data must not stop the fleet
            log.exception("decide.vm_failed", vm=vm.name)
            out[vm.id] = _rec(vm, Decision.SKIP, f"could not size: {type(exc).__name__}: {exc}", "error")
            continue
        if vm_usage.data_note:
            sizing = replace(sizing, reason=f"{sizing.reason}; data: {vm_usage.data_note}")
        conf = sizing.probability
        if sizing.problem:
            out[vm.id] = _rec(vm, Decision.SKIP, sizing.reason, "sizing", sizing, conf)
            continue
        if sizing.action is Action.NONE:
            out[vm.id] = _rec(vm, Decision.SKIP, _with_confidence(sizing.reason, sizing), None, sizing, conf)
            continue
        if sizing.undersized:
            # Growing a VM costs money: shown to people, never applied by the rightsizer.
            if conf < settings.gates.min_confidence:
                reason = f"{_confidence_skip(sizing, settings)}; {sizing.reason}"
                out[vm.id] = _rec(vm, Decision.SKIP, reason, "confidence", sizing, conf)
            else:
                out[vm.id] = _rec(
                    vm, Decision.RECOMMEND_ONLY, _with_confidence(sizing.reason, sizing), None, sizing, conf
                )
            continue
        skip = skip_gates(vm, conf, sizing.monthly_savings, fleet, settings)
        candidates.append(_Candidate(vm, sizing, stats, skip))

    # At most one member of a group per run: the passing member with the largest savings claims it.
    claimed: dict[str, str] = {}
    for c in sorted(candidates, key=lambda c: (-c.sizing.monthly_savings, c.vm.id)):
        key = group_key(c.vm)
        if c.skip is None and key is not None and key not in claimed and c.sizing.action is Action.RESIZE:
            claimed[key] = c.vm.name
    for c in candidates:
        conf = c.sizing.probability
        skip = c.skip
        key = group_key(c.vm)
        if (
            c.sizing.action is Action.RESIZE
            and key is not None
            and claimed.get(key, c.vm.name) != c.vm.name
            and (skip is None or _after_ha(skip[0]))
        ):
            skip = (
                "ha",
                f"HA: {claimed[key]} of {key.split(':', 1)[1]} changes this run (one member per run)",
            )
        if skip is not None:
            gate, reason = skip
            why = c.sizing.reason
            if gate == "confidence":
                reason = _confidence_skip(c.sizing, settings)
            else:
                why = _with_confidence(why, c.sizing)
            out[c.vm.id] = _rec(c.vm, Decision.SKIP, f"{reason} ({why})", gate, c.sizing, conf)
            continue
        result = approval_gate(c.vm, c.sizing.action, c.sizing.target, c.sizing.monthly_savings, now, settings)
        out[c.vm.id] = _rec(
            c.vm,
            result.decision,
            f"{_with_confidence(c.sizing.reason, c.sizing)}; {result.reason}",
            result.gate,
            c.sizing,
            conf,
            approval_tier=result.tier,
        )
    return [out[vm.id] for vm in vms]


def _all_usage_stats(
    sized: Sequence[tuple[VmInfo, VmUsage]],
    now: float,
    settings: Settings,
    on_stats: Callable[[], object] | None = None,
) -> dict[str, UsageStats | Exception]:
    """Per-VM statistics (or the exception one VM raised, so the others go on); the forecast fits run on
    ``forecast.workers`` threads (results do not depend on it). ``on_stats`` is called after each VM (from
    the worker threads: progress display only)."""

    def one(u: VmUsage) -> UsageStats | Exception:
        try:
            return usage_stats(u, now, settings)
        except Exception as exc:  # one VM's unexpected data must not stop the fleet
            log.exception("decide.stats_failed", vm=u.vm)
            return exc
        finally:
            if on_stats is not None:
                on_stats()

    workers = settings.forecast.workers
    if workers <= 1 or len(sized) <= 1 or settings.forecast.method != "library":
        return {vm.id: one(u) for vm, u in sized}
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="rightsizer-fit") as pool:
        futures = {vm.id: pool.submit(one, u) for vm, u in sized}
        return {vm_id: f.result() for vm_id, f in futures.items()}


def _with_confidence(reason: str, sizing: Sizing) -> str:
    """The row's reason followed by what its confidence rests on."""
    if sizing.confidence is None:
        return reason
    c = sizing.confidence
    return f"{reason}; confidence {c.probability:.2f}: {c.reason}"


def _confidence_skip(sizing: Sizing, settings: Settings) -> str:
    c = sizing.confidence
    why = "" if c is None else f": {c.reason}"
    return f"confidence {sizing.probability:.3f} < {settings.gates.min_confidence:g}{why}"


def _after_ha(gate: str) -> bool:
    return gate in ("opt-out", "compliance")


__all__ = ["recommend"]
