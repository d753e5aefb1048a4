"""approval_status: the pure check of the approval tags (contract in .coord/rightsizer-contract.md)."""

from __future__ import annotations

import pytest

from rightsizer.decide.approvals import ApprovalState, approval_status, parse_iso_utc
from rightsizer.domain import APPROVAL_TAG, RECOMMENDATION_TAG, ApprovalTier
from rightsizer.settings import Gates, Settings
from tests.rightsizer.helpers import vm

NOW = parse_iso_utc("2026-09-21T12:00:00Z")
SETTINGS = Settings()


def tags(
    approval: str | None, recommendation: str | None = "Standard_D4s_v5|300.00|2026-09-20T00:00:00Z"
) -> dict[str, str]:
    out = {}
    if approval is not None:
        out[APPROVAL_TAG] = approval
    if recommendation is not None:
        out[RECOMMENDATION_TAG] = recommendation
    return out


def status(
    t: dict[str, str],
    need: ApprovalTier = ApprovalTier.FINOPS_LEAD,
    target: str = "Standard_D4s_v5",
    settings: Settings = SETTINGS,
) -> ApprovalState:
    return approval_status(vm("a", tags=t), target, need, NOW, settings).state


def test_valid_approval() -> None:
    s = approval_status(
        vm("a", tags=tags("Standard_D4s_v5|finops-lead|bob|2026-09-20T06:00:00Z")),
        "Standard_D4s_v5",
        ApprovalTier.FINOPS_LEAD,
        NOW,
        SETTINGS,
    )
    assert s.valid and s.approver == "bob" and s.tier is ApprovalTier.FINOPS_LEAD


def test_a_higher_tier_approves_a_lower_need() -> None:
    assert status(tags("Standard_D4s_v5|executive|eve|2026-09-20T06:00:00Z")) is ApprovalState.VALID


def test_a_lower_tier_does_not() -> None:
    t = tags("Standard_D4s_v5|finops-lead|bob|2026-09-20T06:00:00Z")
    assert status(t, ApprovalTier.EXECUTIVE) is ApprovalState.INSUFFICIENT_TIER


def test_missing_approval() -> None:
    assert status(tags(None)) is ApprovalState.MISSING


def test_approval_for_another_target() -> None:
    t = tags("Standard_D2s_v5|finops-lead|bob|2026-09-20T06:00:00Z")
    assert status(t) is ApprovalState.WRONG_TARGET
    # The recommendation tag moved on to another target: the old approval no longer holds.
    t2 = tags("Standard_D4s_v5|finops-lead|bob|2026-09-20T06:00:00Z", "Standard_D2s_v5|350|2026-09-20T00:00:00Z")
    assert status(t2) is ApprovalState.WRONG_TARGET


@pytest.mark.parametrize(
    ("approved_at", "state"),
    [
        ("2026-09-14T13:00:00Z", ApprovalState.VALID),  # 6.96 days
        ("2026-09-14T11:00:00Z", ApprovalState.EXPIRED),  # 7.04 days > approval_ttl 7
    ],
)
def test_approval_ttl(approved_at: str, state: ApprovalState) -> None:
    t = tags(f"Standard_D4s_v5|finops-lead|bob|{approved_at}", "Standard_D4s_v5|300|2026-09-14T00:00:00Z")
    assert status(t) is state


def test_stale_recommendation_invalidates_the_approval() -> None:
    t = tags("Standard_D4s_v5|finops-lead|bob|2026-09-20T06:00:00Z", "Standard_D4s_v5|300|2026-09-06T00:00:00Z")
    assert status(t) is ApprovalState.STALE_RECOMMENDATION
    lenient = Settings(gates=Gates(recommendation_ttl_days=30))
    assert status(t, settings=lenient) is ApprovalState.VALID


def test_no_recommendation_tag() -> None:
    assert status(tags("Standard_D4s_v5|finops-lead|bob|2026-09-20T06:00:00Z", None)) is ApprovalState.NO_RECOMMENDATION


@pytest.mark.parametrize(
    "bad",
    [
        "Standard_D4s_v5|finops-lead|bob",  # 3 fields
        "Standard_D4s_v5|boss|bob|2026-09-20T06:00:00Z",  # unknown tier
        "Standard_D4s_v5|finops-lead|bob|yesterday",  # not ISO 8601
        "Standard_D4s_v5|finops-lead|bob|2026-09-20T06:00:00",  # no zone
    ],
)
def test_malformed_approval_says_the_accepted_form(bad: str) -> None:
    s = approval_status(vm("a", tags=tags(bad)), "Standard_D4s_v5", ApprovalTier.FINOPS_LEAD, NOW, SETTINGS)
    assert s.state is ApprovalState.MALFORMED
    assert "<target_size>|<automatic|finops-lead|executive>|<approver>|<iso8601 utc>" in s.reason


def test_malformed_recommendation_tag() -> None:
    t = tags("Standard_D4s_v5|finops-lead|bob|2026-09-20T06:00:00Z", "Standard_D4s_v5|lots|2026-09-20T00:00:00Z")
    assert status(t) is ApprovalState.MALFORMED
