"""The rightsizer's vocabulary: VMs, sizes, prices, recommendations. Plain values, no I/O.

Shared by the deciding side (``rightsizer.decide``) and the acting side (``rightsizer.act``); extend it
additively.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

HOURS_PER_MONTH = 730.0
"""Monthly = hourly x 730, the convention Azure's pricing calculator uses."""

OPT_OUT_TAG = "finops.ai/optimization-enabled"
PREVIOUS_SIZE_TAG = "finops.ai/previous-size"
COMPLIANCE_TAGS = ("pci-dss", "hipaa", "sox", "fedramp")
RECOMMENDATION_TAG = "finops.ai/recommendation"
"""``<target_size>|<monthly_savings_usd>|<iso8601 utc>``, written by the act side when approval is needed."""
APPROVAL_TAG = "finops.ai/approval"
"""``<target_size>|<tier>|<approver>|<iso8601 utc>``, written by ``rightsizer approve``."""
CHANGE_TAG = "finops.ai/change"
"""``<change-id>|<phase>|<target_size>|<iso8601 utc>``, the act side's in-flight change record."""
COMPLIANCE_TAG = "compliance"
"""Alternative to one tag per regime: ``compliance=pci-dss,sox``."""
CRITICALITY_TAG = "criticality"
USER_FACING_TAG = "user-facing"
"""``user-facing=true`` (or ``workload=user-facing``) selects the stricter CPU threshold."""
WORKLOAD_TAG = "workload"
ROLE_TAG = "role"
"""``role=database`` (or ``workload=database``) marks a database: changes need approval."""


class Priority(StrEnum):
    REGULAR = "Regular"
    SPOT = "Spot"


class PowerState(StrEnum):
    RUNNING = "running"
    DEALLOCATED = "deallocated"
    STOPPED = "stopped"
    STARTING = "starting"
    STOPPING = "stopping"
    DEALLOCATING = "deallocating"
    UNKNOWN = "unknown"
    """Azure reports it as ``PowerState/unknown``; also a VM listed without its instance view."""


@dataclass(frozen=True, slots=True)
class VmInfo:
    id: str
    """ARM resource id (or any unique id in offline mode)."""
    name: str
    resource_group: str
    size: str
    """ARM size name, e.g. ``Standard_D4s_v5``."""
    region: str
    os: str = "linux"
    """``linux`` or ``windows``."""
    priority: Priority = Priority.REGULAR
    tags: Mapping[str, str] = field(default_factory=dict)
    group: str | None = None
    """HA group: availability set, scale set or a user-given group name."""
    zone: str | None = None
    power_state: PowerState = PowerState.RUNNING
    subscription_id: str | None = None
    scale_set: str | None = None
    """Name of the VM scale set this VM is an instance of, if any."""
    data_disks: int = 0
    nics: int = 1
    healthy: bool = True
    uses_temp_disk: bool = False
    """The workload keeps data on the temp (resource) disk, so the target size must have one."""
    problem: str | None = None
    """What is wrong with this VM's inventory entry: it is a skipped row with this reason, never sized or
    acted on (one bad entry does not stop the others)."""


class Action(StrEnum):
    RESIZE = "resize"
    SHUTDOWN = "shutdown"
    MOVE_TO_SPOT = "move-to-spot"
    NONE = "none"


class Decision(StrEnum):
    AUTO = "auto"
    """Passes every gate: applied when not in dry-run."""
    APPROVED = "approved"
    """Needed approval and has a valid one: applied when not in dry-run."""
    NEEDS_APPROVAL = "needs-approval"
    RECOMMEND_ONLY = "recommend-only"
    """Shown to people, never applied (shutdowns, Spot moves of standalone VMs)."""
    SKIP = "skip"


class ApprovalTier(StrEnum):
    AUTOMATIC = "automatic"
    FINOPS_LEAD = "finops-lead"
    EXECUTIVE = "executive"


@dataclass(frozen=True, slots=True)
class Recommendation:
    vm: VmInfo
    action: Action
    decision: Decision
    reason: str
    target_size: str | None = None
    monthly_savings_usd: float = 0.0
    confidence: float = 0.0
    approval_tier: ApprovalTier = ApprovalTier.AUTOMATIC
    gate: str | None = None
    """Name of the gate that produced a skip / approval decision (``confidence``, ``savings``, ``ha``,
    ``opt-out``, ``compliance``, ``criticality``, ``approval``, ``data``, ``sizing``), None otherwise."""
    current_monthly_usd: float | None = None
    target_monthly_usd: float | None = None
    stats: Mapping[str, float] = field(default_factory=dict)
    """Figures behind the decision: observed/forecast P95 CPU and memory, completeness, etc."""

    @property
    def current_size(self) -> str:
        return self.vm.size

    @property
    def applicable(self) -> bool:
        return self.decision in (Decision.AUTO, Decision.APPROVED) and self.action is Action.RESIZE
