"""Where Azure resources live and what the rightsizer keeps of them: VM and scale set references parsed from
ARM resource ids, and the plain values for scale sets and SKUs. No I/O."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from rightsizer.domain import Priority, VmInfo
from rightsizer.quoting import quote_prefix

_VM_ID = re.compile(
    r"^/subscriptions/(?P<sub>[^/]+)/resourceGroups/(?P<rg>[^/]+)/providers/Microsoft\.Compute/"
    r"(?:virtualMachineScaleSets/(?P<ss>[^/]+)/virtualMachines/(?P<instance>[^/]+)|virtualMachines/(?P<vm>[^/]+))$",
    re.IGNORECASE,
)
_SCALE_SET_ID = re.compile(
    r"^/subscriptions/(?P<sub>[^/]+)/resourceGroups/(?P<rg>[^/]+)/providers/Microsoft\.Compute/"
    r"virtualMachineScaleSets/(?P<ss>[^/]+)$",
    re.IGNORECASE,
)


VM_ID_FORM = "/subscriptions/<sub>/resourceGroups/<rg>/providers/Microsoft.Compute/virtualMachines/<name>"
SCALE_SET_ID_FORM = (
    "/subscriptions/<sub>/resourceGroups/<rg>/providers/Microsoft.Compute/virtualMachineScaleSets/<name>"
)
ID_QUOTE_CHARS = 200
"""An id that does not parse is quoted to this many characters: enough for any real ARM id, not for a megabyte."""


@dataclass(frozen=True, slots=True)
class VmRef:
    """Where a VM lives. ``scale_set``/``instance_id`` are set for a uniform scale set's instance."""

    subscription_id: str
    resource_group: str
    name: str
    scale_set: str | None = None
    instance_id: str | None = None

    @classmethod
    def parse(cls, arm_id: str) -> VmRef:
        match = _VM_ID.match(arm_id)
        if match is None:
            raise ValueError(
                f"not a VM resource id: {quote_prefix(arm_id, ID_QUOTE_CHARS)}; expected {VM_ID_FORM} "
                "(or .../virtualMachineScaleSets/<ss>/virtualMachines/<id>)"
            )
        if match["vm"]:
            return cls(match["sub"], match["rg"], match["vm"])
        return cls(match["sub"], match["rg"], match["instance"], match["ss"], match["instance"])

    @classmethod
    def of(cls, vm: VmInfo) -> VmRef:
        return cls.parse(vm.id)

    @property
    def arm_id(self) -> str:
        base = f"/subscriptions/{self.subscription_id}/resourceGroups/{self.resource_group}/providers/Microsoft.Compute"
        if self.scale_set is not None:
            return f"{base}/virtualMachineScaleSets/{self.scale_set}/virtualMachines/{self.instance_id}"
        return f"{base}/virtualMachines/{self.name}"


@dataclass(frozen=True, slots=True)
class ScaleSetRef:
    subscription_id: str
    resource_group: str
    name: str

    @classmethod
    def parse(cls, arm_id: str) -> ScaleSetRef:
        match = _SCALE_SET_ID.match(arm_id)
        if match is None:
            raise ValueError(
                f"not a scale set resource id: {quote_prefix(arm_id, ID_QUOTE_CHARS)}; expected {SCALE_SET_ID_FORM}"
            )
        return cls(match["sub"], match["rg"], match["ss"])

    @property
    def arm_id(self) -> str:
        return (
            f"/subscriptions/{self.subscription_id}/resourceGroups/{self.resource_group}"
            f"/providers/Microsoft.Compute/virtualMachineScaleSets/{self.name}"
        )


@dataclass(frozen=True, slots=True)
class ScaleSetInfo:
    id: str
    name: str
    resource_group: str
    subscription_id: str
    size: str
    region: str
    capacity: int
    priority: Priority
    """Priority of the scale set's VM profile (Spot for a Spot/regular mix)."""
    base_regular_count: int | None = None
    regular_percentage_above_base: int | None = None
    zones: tuple[str, ...] = ()
    tags: Mapping[str, str] = field(default_factory=dict)
    orchestration_mode: str = "Flexible"

    @property
    def ref(self) -> ScaleSetRef:
        return ScaleSetRef(self.subscription_id, self.resource_group, self.name)


@dataclass(frozen=True, slots=True)
class UnreadableScaleSet:
    """A listed scale set whose JSON cannot be used: a row of its own, so the others are still handled."""

    label: str
    """Its name when the JSON has one, else its position in the listing."""
    problem: str


@dataclass(frozen=True, slots=True)
class SkuInfo:
    name: str
    region: str
    capabilities: Mapping[str, str]
    zones: tuple[str, ...] = ()
    restricted: bool = False
