"""The Spot pass that acts: observe a scale set, plan with :func:`rightsizer.decide.spot.plan_spot`, and carry
the plan out through the gateway (surge first, then delete, so capacity never dips). ``dry_run=True`` (the default)
observes and plans only: nothing is written to Azure, not even the state tag.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

import structlog

from rightsizer import audit as audit_kinds
from rightsizer.act.settings import SPOT_STATE_TAG, SpotSettings
from rightsizer.audit import AuditLog
from rightsizer.azure.errors import AzureError, CapacityError
from rightsizer.azure.gateway import ComputeGateway, ScaleSetInfo
from rightsizer.azure.resources import UnreadableScaleSet
from rightsizer.decide.spot import ANY_ZONE, Offering, SpotPlan, SpotState, plan_spot
from rightsizer.domain import Priority

# Not cached on first use: a CLI test configuring structlog must not pin these loggers to its stream.
log = structlog.wrap_logger(None, logger_factory_args=(__name__,), cache_logger_on_first_use=False)


FAILED_MODE = "error"
"""The ``mode`` of a :class:`SpotPassResult` for a scale set that got no pass."""


@dataclass(frozen=True, slots=True)
class SpotPassResult:
    scale_set: str
    mode: str
    replaced_evicted: int
    returned_to_spot: int
    capacity_restored: bool
    reasons: tuple[str, ...]
    errors: tuple[str, ...] = ()
    dry_run: bool = False
    plan: SpotPlan | None = None

    @classmethod
    def failed(cls, scale_set: str, reason: str, *, dry_run: bool) -> SpotPassResult:
        """A scale set that got no pass (mode ``error``): unreadable, or its pass failed."""
        return cls(scale_set, FAILED_MODE, 0, 0, False, (), (reason,), dry_run=dry_run)


def run_spot_pass(
    compute: ComputeGateway,
    scale_set: ScaleSetInfo,
    settings: SpotSettings,
    now: dt.datetime,
    audit: AuditLog | None = None,
    *,
    dry_run: bool = True,
) -> SpotPassResult:
    """Observe, plan and (unless ``dry_run``) act for one scale set; the new state is written to its tag."""
    bound = log.bind(scale_set=scale_set.name)
    ref = scale_set.ref
    instances = compute.list_scale_set_instances(scale_set)
    state = SpotState.decode(scale_set.tags.get(SPOT_STATE_TAG))
    plan = plan_spot(scale_set, instances, state, settings, now)
    if dry_run:
        bound.info("spot.plan", mode=plan.mode, reasons=list(plan.reasons), dry_run=True)
        return SpotPassResult(scale_set.name, plan.mode, 0, 0, True, plan.reasons, dry_run=True, plan=plan)
    state = plan.state
    errors: list[str] = []
    now_s = now.timestamp()
    restored = True
    if plan.delete_evicted:
        # Surge regular first, then remove the evicted instances: capacity never dips, and if no regular
        # capacity is to be had the evicted (deallocated) instances stay for a later start.
        try:
            compute.update_scale_set(
                ref,
                capacity=plan.capacity + len(plan.delete_evicted),
                base_regular_count=plan.base_regular_count,
                regular_percentage_above_base=plan.fill_percentage,
                size=scale_set.size,
            )
        except CapacityError as error:
            restored = False
            errors.append(f"regular replacement failed: {error.code}")
            state = state.mark_unavailable(
                Offering(scale_set.size, ANY_ZONE, Priority.REGULAR), now_s + settings.ttl_for(error.code), error.code
            )
        else:
            compute.delete_scale_set_instances(ref, plan.delete_evicted)
    returned = 0
    if plan.rebalance_regular:
        try:
            compute.update_scale_set(
                ref,
                capacity=plan.capacity + len(plan.rebalance_regular),
                base_regular_count=plan.base_regular_count,
                regular_percentage_above_base=plan.policy_percentage,
                size=scale_set.size,
            )
        except CapacityError as error:
            errors.append(f"Spot surge failed: {error.code}")
            state = state.mark_unavailable(
                Offering(scale_set.size, ANY_ZONE, Priority.SPOT),
                now_s + settings.ttl_for(error.code),
                error.code,
            )
        else:
            compute.delete_scale_set_instances(ref, plan.rebalance_regular)
            returned = len(plan.rebalance_regular)
    current_policy = (scale_set.base_regular_count, scale_set.regular_percentage_above_base)
    wanted_policy = (plan.base_regular_count, plan.policy_percentage)
    if plan.delete_evicted or plan.rebalance_regular or current_policy != wanted_policy:
        try:
            compute.update_scale_set(
                ref,
                base_regular_count=plan.base_regular_count,
                regular_percentage_above_base=plan.policy_percentage,
            )
        except AzureError as error:
            errors.append(f"setting the priority mix failed: {error}")
    encoded = state.encode()
    if encoded != scale_set.tags.get(SPOT_STATE_TAG):
        compute.set_scale_set_tags(ref, {SPOT_STATE_TAG: encoded})
    result = SpotPassResult(
        scale_set=scale_set.name,
        mode=plan.mode,
        replaced_evicted=len(plan.delete_evicted) if restored else 0,
        returned_to_spot=returned,
        capacity_restored=restored,
        reasons=plan.reasons,
        errors=tuple(errors),
        plan=plan,
    )
    if plan.reasons or errors:
        bound.info("spot.pass", mode=plan.mode, reasons=list(plan.reasons), errors=errors)
        if audit is not None:
            audit.append(
                audit_kinds.SPOT,
                scale_set=scale_set.id,
                mode=plan.mode,
                replaced_evicted=result.replaced_evicted,
                returned_to_spot=returned,
                reasons=list(plan.reasons),
                errors=errors,
            )
    return result


def run_spot_passes(
    compute: ComputeGateway,
    subscription_id: str,
    resource_groups: Sequence[str] | None,
    settings: SpotSettings,
    now: dt.datetime,
    audit: AuditLog | None = None,
    *,
    dry_run: bool = True,
) -> list[SpotPassResult]:
    """One pass over every scale set with Spot instances in the subscription / resource groups (plans only when
    ``dry_run``). A scale set that cannot be read, or whose pass fails, is a result with mode ``error`` and the
    reason; the others still get their pass."""
    results = []
    for scale_set in compute.list_scale_sets(subscription_id, resource_groups):
        if isinstance(scale_set, UnreadableScaleSet):  # its priority is unknown: it may hold Spot instances
            log.warning("spot.scale_set_unreadable", scale_set=scale_set.label, error=scale_set.problem)
            results.append(SpotPassResult.failed(scale_set.label, scale_set.problem, dry_run=dry_run))
            continue
        if scale_set.priority is not Priority.SPOT:
            continue
        try:
            results.append(run_spot_pass(compute, scale_set, settings, now, audit, dry_run=dry_run))
        except AzureError as error:
            log.warning("spot.pass_failed", scale_set=scale_set.name, error=str(error))
            results.append(SpotPassResult.failed(scale_set.name, str(error), dry_run=dry_run))
    return results
