"""Safety gates, in the seed's order; each skip is a value with its reason.

1. confidence >= ``gates.min_confidence`` (0.8)
2. monthly savings >= ``gates.min_monthly_savings_usd`` ($50)
3. HA: never the last healthy member of a group; pools (scale sets) keep >= ``gates.min_pool_instances``
   healthy instances while one changes; at most one member of a group changes per run (the one with the
   largest savings; a member with a change in flight counts as that one)
4. opt-out tag ``finops.ai/optimization-enabled=false``
5. compliance tags (pci-dss, hipaa, sox, fedramp): never auto-optimised
6. criticality tier-0/tier-1 and databases: need approval (at least finops-lead)

Then the approval tier by savings (< $100 automatic, $100-$1000 finops-lead, > $1000 executive) and the
approval found on the VM's tags decide between auto, approved and needs-approval. Shutdowns pass the same
gates but are only ever recommended.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from rightsizer import tags
from rightsizer.decide.approvals import approval_status, max_tier
from rightsizer.domain import (
    CRITICALITY_TAG,
    OPT_OUT_TAG,
    ROLE_TAG,
    WORKLOAD_TAG,
    Action,
    ApprovalTier,
    Decision,
    VmInfo,
)
from rightsizer.settings import Settings

GATE_ORDER = ("confidence", "savings", "ha", "opt-out", "compliance", "criticality")


@dataclass(frozen=True, slots=True)
class GateResult:
    decision: Decision
    reason: str
    gate: str | None
    tier: ApprovalTier = ApprovalTier.AUTOMATIC


def group_key(vm: VmInfo) -> str | None:
    if vm.scale_set:
        return f"scale-set:{vm.resource_group}/{vm.scale_set}"
    if vm.group:
        return f"group:{vm.group}"
    return None


def change_in_flight(vm: VmInfo) -> bool:
    return tags.change_in_flight(vm.tags)


@dataclass(frozen=True)
class FleetContext:
    """What the HA gate needs to know about the other members of each group."""

    healthy_members: Mapping[str, frozenset[str]]
    """Group key -> ids of its healthy, running members."""
    in_flight: Mapping[str, str]
    """Group key -> id of a member whose change has not finished."""

    @classmethod
    def of(cls, vms: Sequence[VmInfo]) -> FleetContext:
        healthy: dict[str, set[str]] = {}
        in_flight: dict[str, str] = {}
        for vm in vms:
            key = group_key(vm)
            if key is None:
                continue
            healthy.setdefault(key, set())
            if vm.healthy and vm.power_state.value == "running":
                healthy[key].add(vm.id)
            if change_in_flight(vm):
                in_flight.setdefault(key, vm.name)
        return cls({k: frozenset(v) for k, v in healthy.items()}, in_flight)


def ha_problem(vm: VmInfo, fleet: FleetContext, settings: Settings) -> str | None:
    """The static HA checks (the one-per-run rule needs the whole run, see :func:`run_gates`)."""
    key = group_key(vm)
    if key is None:
        return None
    others = fleet.healthy_members.get(key, frozenset()) - {vm.id}
    name = key.split(":", 1)[1]
    if not others:
        return f"HA: last healthy member of {name}"
    if vm.scale_set and len(others) < settings.gates.min_pool_instances:
        return (
            f"HA: pool {name} would keep {len(others)} healthy instance(s) during the change "
            f"(< {settings.gates.min_pool_instances})"
        )
    flying = fleet.in_flight.get(key)
    if flying is not None and flying != vm.name:
        return f"HA: {flying} of {name} has a change in progress"
    return None


def compliance_regimes(vm: VmInfo) -> list[str]:
    return tags.compliance_regimes(vm.tags)


def needs_approval_because(vm: VmInfo, settings: Settings) -> str | None:
    crit = vm.tags.get(CRITICALITY_TAG, "").strip().lower()
    if crit in settings.gates.approval_criticality:
        return f"criticality {crit}"
    for tag in (ROLE_TAG, WORKLOAD_TAG):
        role = vm.tags.get(tag, "").strip().lower()
        if role in settings.gates.database_roles:
            return f"{tag}={role} (database)"
    return None


def tier_for_savings(monthly_savings: float, settings: Settings) -> ApprovalTier:
    g = settings.gates
    if monthly_savings > g.executive_above_usd:
        return ApprovalTier.EXECUTIVE
    if monthly_savings >= g.finops_lead_above_usd:
        return ApprovalTier.FINOPS_LEAD
    return ApprovalTier.AUTOMATIC


def skip_gates(
    vm: VmInfo, confidence: float, monthly_savings: float, fleet: FleetContext, settings: Settings
) -> tuple[str, str] | None:
    """(gate, reason) of the first skip gate that fails, in order, ignoring the one-per-run rule."""
    g = settings.gates
    if confidence < g.min_confidence:
        return "confidence", f"confidence {confidence:.3f} < {g.min_confidence:g}"
    if monthly_savings < g.min_monthly_savings_usd:
        return "savings", f"saves ${monthly_savings:,.2f}/month < ${g.min_monthly_savings_usd:,.0f}"
    ha = ha_problem(vm, fleet, settings)
    if ha is not None:
        return "ha", ha
    if tags.opted_out(vm.tags):
        return "opt-out", f"opted out ({OPT_OUT_TAG}=false)"
    regimes = compliance_regimes(vm)
    if regimes:
        return "compliance", f"compliance ({', '.join(regimes)}): never auto-optimised"
    return None


def approval_gate(
    vm: VmInfo, action: Action, target: str | None, monthly_savings: float, now: float, settings: Settings
) -> GateResult:
    """Gate 6 and the approval tiers, for a VM that passed the skip gates."""
    tier = tier_for_savings(monthly_savings, settings)
    why = needs_approval_because(vm, settings)
    if why is not None:
        tier = max_tier(tier, ApprovalTier.FINOPS_LEAD)
    if action is Action.SHUTDOWN:
        return GateResult(Decision.RECOMMEND_ONLY, "shutdown is only recommended, never applied", None, tier)
    if tier is ApprovalTier.AUTOMATIC:
        return GateResult(Decision.AUTO, "passes every gate", None, tier)
    assert target is not None
    status = approval_status(vm, target, tier, now, settings)
    because = f"{why}; " if why else f"saves ${monthly_savings:,.0f}/month; "
    gate = "criticality" if why else "approval"
    if status.valid:
        return GateResult(Decision.APPROVED, f"{because}{status.reason}", gate, tier)
    return GateResult(Decision.NEEDS_APPROVAL, f"{because}{status.reason}", gate, tier)
