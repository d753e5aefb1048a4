"""Approval state read from the VM's tags (pure): is there a valid approval for this target and tier?

Tags (formats in :mod:`rightsizer.tags`):
``finops.ai/recommendation`` = ``<target_size>|<monthly_savings_usd>|<iso8601 utc>`` (written by the act side)
``finops.ai/approval`` = ``<target_size>|<tier>|<approver>|<iso8601 utc>`` (written by ``rightsizer approve``)
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from rightsizer.domain import APPROVAL_TAG, RECOMMENDATION_TAG, ApprovalTier, VmInfo
from rightsizer.prices import normalise_size_name
from rightsizer.settings import DAY_S, Settings
from rightsizer.tags import ApprovalTag, RecommendationTag, parse_iso_epoch

TIER_RANK = {ApprovalTier.AUTOMATIC: 0, ApprovalTier.FINOPS_LEAD: 1, ApprovalTier.EXECUTIVE: 2}


class ApprovalState(StrEnum):
    VALID = "valid"
    MISSING = "missing"
    MALFORMED = "malformed"
    NO_RECOMMENDATION = "no-recommendation"
    STALE_RECOMMENDATION = "stale-recommendation"
    WRONG_TARGET = "wrong-target"
    INSUFFICIENT_TIER = "insufficient-tier"
    EXPIRED = "expired"


@dataclass(frozen=True, slots=True)
class ApprovalStatus:
    state: ApprovalState
    reason: str
    approver: str | None = None
    tier: ApprovalTier | None = None

    @property
    def valid(self) -> bool:
        return self.state is ApprovalState.VALID


def tier_at_least(have: ApprovalTier, need: ApprovalTier) -> bool:
    return TIER_RANK[have] >= TIER_RANK[need]


def max_tier(a: ApprovalTier, b: ApprovalTier) -> ApprovalTier:
    return a if TIER_RANK[a] >= TIER_RANK[b] else b


parse_iso_utc = parse_iso_epoch
"""Epoch seconds from ISO 8601 with a zone (the tag codec's one parser)."""


def _age_days(now: float, then: float) -> float:
    return (now - then) / DAY_S


def approval_status(
    vm: VmInfo, target_size: str, needed_tier: ApprovalTier, now: float, settings: Settings
) -> ApprovalStatus:
    """Whether the VM's tags hold an approval letting ``target_size`` be applied now (``now``: epoch s)."""
    target = normalise_size_name(target_size)
    gates = settings.gates
    approval_text = vm.tags.get(APPROVAL_TAG)
    if not approval_text:
        return ApprovalStatus(ApprovalState.MISSING, f"needs {needed_tier.value} approval")
    try:
        approval = ApprovalTag.parse(approval_text)
    except ValueError as exc:
        return ApprovalStatus(
            ApprovalState.MALFORMED,
            f"{APPROVAL_TAG}={approval_text[:80]!r} is malformed ({exc}); expected {ApprovalTag.FORM}",
        )
    a_target, a_tier, approver = approval.target_size, approval.tier, approval.approver
    approved_at = approval.at.timestamp()
    rec_text = vm.tags.get(RECOMMENDATION_TAG)
    if not rec_text:
        return ApprovalStatus(
            ApprovalState.NO_RECOMMENDATION,
            f"approval by {approver} has no {RECOMMENDATION_TAG} tag to approve; needs a fresh one",
            approver,
            a_tier,
        )
    try:
        recommendation = RecommendationTag.parse(rec_text)
    except ValueError as exc:
        return ApprovalStatus(
            ApprovalState.MALFORMED,
            f"{RECOMMENDATION_TAG}={rec_text[:80]!r} is malformed ({exc}); expected {RecommendationTag.FORM}",
            approver,
            a_tier,
        )
    r_target = normalise_size_name(recommendation.target_size)
    recommended_at = recommendation.at.timestamp()
    rec_age = _age_days(now, recommended_at)
    if rec_age > gates.recommendation_ttl_days:
        return ApprovalStatus(
            ApprovalState.STALE_RECOMMENDATION,
            f"recommendation is {rec_age:.1f} days old (> {gates.recommendation_ttl_days:g}); needs a fresh "
            f"{needed_tier.value} approval",
            approver,
            a_tier,
        )
    if normalise_size_name(a_target) != target or r_target != target:
        return ApprovalStatus(
            ApprovalState.WRONG_TARGET,
            f"approval by {approver} is for {normalise_size_name(a_target)} (recommendation {r_target}), "
            f"now recommending {target}; needs {needed_tier.value} approval",
            approver,
            a_tier,
        )
    if not tier_at_least(a_tier, needed_tier):
        return ApprovalStatus(
            ApprovalState.INSUFFICIENT_TIER,
            f"approved by {approver} as {a_tier.value}, needs {needed_tier.value}",
            approver,
            a_tier,
        )
    age = _age_days(now, approved_at)
    if age > gates.approval_ttl_days:
        return ApprovalStatus(
            ApprovalState.EXPIRED,
            f"approval by {approver} is {age:.1f} days old (> {gates.approval_ttl_days:g}); needs renewal",
            approver,
            a_tier,
        )
    return ApprovalStatus(ApprovalState.VALID, f"approved by {approver} ({a_tier.value})", approver, a_tier)
