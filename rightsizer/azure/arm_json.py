"""ARM's JSON for VMs and scale sets, read field by field into the rightsizer's values.

Every field is read from the JSON ARM sent (see :mod:`rightsizer.azure.listing`), not through the SDK's models:
those deserialise lazily and, on odd input, raise in the middle of a listing (``hardwareProfile`` missing,
``tags`` a list) or invent a value (a ``vmSize`` of ``None`` read as the size ``'None'``, a string ``zones``
read as a generator's repr). Here a field that is missing or not what ARM documents is a
:class:`EntryProblem` naming the VM, the field (its path in the JSON) and what is accepted, values quoted to 40
characters as for an inventory file; the listing turns it into that VM's skipped row (gate ``inventory``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from rightsizer.azure.resources import SCALE_SET_ID_FORM, VM_ID_FORM, ScaleSetInfo, ScaleSetRef, SkuInfo, VmRef
from rightsizer.domain import PowerState, Priority, VmInfo
from rightsizer.quoting import quote_prefix, quote_value

_SIZE = re.compile(r"^(?:standard|basic)_[a-z0-9_-]{1,64}$", re.IGNORECASE)
_REGION = re.compile(r"^[a-z0-9]{1,64}$", re.IGNORECASE)
_NAME_CHARS = 256
_PRIORITIES = {"regular": Priority.REGULAR, "spot": Priority.SPOT, "low": Priority.SPOT}
"""``Low`` is the former name of Spot (low-priority VMs)."""
_POWER_STATES = tuple(p.value for p in PowerState)


class EntryProblem(ValueError):
    """One field of one listed resource is missing or not what ARM documents; the message says which and what
    is accepted."""


class _Entry:
    """One resource's JSON and the label its problems start with."""

    def __init__(self, doc: Any, where: str) -> None:
        if not isinstance(doc, Mapping):
            raise EntryProblem(f"{where}: expected a JSON object, got {type(doc).__name__}")
        self.doc = doc
        self.where = where

    def get(self, path: str) -> Any:
        """The value at ``a.b.c`` (None when absent); a step that is there but not an object is a problem."""
        value: Any = self.doc
        walked: list[str] = []
        for key in path.split("."):
            if value is None:
                return None
            if not isinstance(value, Mapping):
                raise self.problem(".".join(walked), "must be an object", value)
            walked.append(key)
            value = value.get(key)
        return value

    def problem(self, path: str, accepted: str, value: Any) -> EntryProblem:
        return EntryProblem(f"{self.where}: '{path}' {accepted}, got {quote_value(value)}")

    def text(self, path: str, pattern: re.Pattern[str] | None, accepted: str, *, required: bool = True) -> str | None:
        value = self.get(path)
        if value is None and not required:
            return None
        if (
            not isinstance(value, str)
            or not value.strip()
            or len(value) > _NAME_CHARS
            or (pattern is not None and pattern.match(value) is None)
        ):
            raise self.problem(path, f"{'is required, ' if required else 'must be '}{accepted}", value)
        return value

    def choice(self, path: str, choices: Mapping[str, Any], default: Any) -> Any:
        value = self.get(path)
        if value is None:
            return default
        if not isinstance(value, str) or value.lower() not in choices:
            accepted = "one of " + ", ".join(choices)
            raise self.problem(path, f"must be {accepted}", value)
        return choices[value.lower()]

    def count(self, path: str) -> int:
        value = self.get(path)
        if value is None:
            return 0
        if not isinstance(value, list):
            raise self.problem(path, "must be a list", value)
        return len(value)

    def tags(self) -> dict[str, str]:
        tags = self.get("tags")
        if tags is None:
            return {}
        if not isinstance(tags, Mapping) or not all(isinstance(k, str) and isinstance(v, str) for k, v in tags.items()):
            raise self.problem("tags", "must be an object of string values", tags)
        return dict(tags)

    def zones(self) -> tuple[str, ...]:
        zones = self.get("zones")
        if zones is None:
            return ()
        if not isinstance(zones, list) or not all(isinstance(z, str) and z for z in zones):
            raise self.problem("zones", "must be a list of zone names (e.g. ['1'])", zones)
        return tuple(zones)

    def last_segment(self, path: str) -> str | None:
        """The name at the end of a referenced resource's id (availability set, scale set)."""
        arm_id = self.text(path, None, "a resource id", required=False)
        return arm_id.rstrip("/").rsplit("/", 1)[-1] if arm_id else None

    def vm_id(self) -> VmRef:
        value = self.get("id")
        try:
            return VmRef.parse(value) if isinstance(value, str) else VmRef.parse("")
        except ValueError:
            raise self.problem("id", f"must be a VM resource id ({VM_ID_FORM})", value) from None

    def name(self) -> str:
        return str(self.text("name", None, f"a non-empty string of at most {_NAME_CHARS} characters"))

    def region(self) -> str:
        return str(self.text("location", _REGION, "a region name (letters and digits, e.g. westeurope)")).lower()

    def size(self, path: str, *, required: bool = True) -> str | None:
        return self.text(path, _SIZE, "an ARM size name (e.g. Standard_D4s_v5)", required=required)

    def power_state(self) -> PowerState:
        """From the instance view's ``PowerState/<state>`` status; unknown when the listing has no instance view."""
        statuses = self.get("properties.instanceView.statuses")
        if statuses is None:
            return PowerState.UNKNOWN
        path = "properties.instanceView.statuses"
        if not isinstance(statuses, list):
            raise self.problem(path, "must be a list of statuses", statuses)
        for status in statuses:
            code = status.get("code") if isinstance(status, Mapping) else None
            if not isinstance(status, Mapping) or (code is not None and not isinstance(code, str)):
                raise self.problem(path, "must hold objects with a string 'code'", status)
            if code is not None and code.lower().startswith("powerstate/"):
                state = code.split("/", 1)[1].lower()
                if state not in _POWER_STATES:
                    accepted = ", ".join(_POWER_STATES)
                    raise self.problem(path, f"power state must be one of {accepted}", code)
                return PowerState(state)
        return PowerState.UNKNOWN


def _label(source: str, kind: str, i: int | None, doc: Any) -> str:
    """``<source>: VM #3 (web-1)``: entry ``i`` of a listing (``i`` None: a single resource read by name)."""
    name = doc.get("name") if isinstance(doc, Mapping) else None
    where = f"{source}: {kind}" if i is None else f"{source}: {kind} #{i}"
    return f"{where} ({name[:80]})" if isinstance(name, str) and name.strip() else where


def vm_from_arm(doc: Any, *, source: str, i: int | None = None) -> VmInfo:
    """Entry ``i`` of a VM listing (a plain or flexible scale set VM) as a :class:`VmInfo`; a VM whose JSON is
    not usable is a placeholder with its ``problem``."""
    where = _label(source, "VM", i, doc)
    try:
        entry = _Entry(doc, where)
        ref = entry.vm_id()
        scale_set = entry.last_segment("properties.virtualMachineScaleSet.id")
        zones = entry.zones()
        return VmInfo(
            id=str(entry.get("id")),
            name=entry.name(),
            resource_group=ref.resource_group,
            size=str(entry.size("properties.hardwareProfile.vmSize")),
            region=entry.region(),
            os=entry.choice(
                "properties.storageProfile.osDisk.osType", {"linux": "linux", "windows": "windows"}, "linux"
            ),
            priority=entry.choice("properties.priority", _PRIORITIES, Priority.REGULAR),
            tags=entry.tags(),
            group=scale_set or entry.last_segment("properties.availabilitySet.id"),
            zone=zones[0] if zones else None,
            power_state=entry.power_state(),
            subscription_id=ref.subscription_id,
            scale_set=scale_set,
            data_disks=entry.count("properties.storageProfile.dataDisks"),
            nics=entry.count("properties.networkProfile.networkInterfaces") or 1,
        )
    except EntryProblem as problem:
        return unusable_vm(doc, str(problem), fallback_id=f"{source}#VM-{i}")
    except Exception as error:  # an odd value this reader did not foresee is still this VM's problem only
        unreadable = f"{where}: unreadable ({type(error).__name__}: {quote_prefix(str(error), 80)})"
        return unusable_vm(doc, unreadable, fallback_id=f"{source}#VM-{i}")


def instance_from_arm(doc: Any, scale_set: ScaleSetInfo, *, source: str, i: int) -> VmInfo:
    """Entry ``i`` of a uniform scale set's instance listing; priority comes from the scale set, size from the
    instance (``properties.hardwareProfile.vmSize``, else ``sku.name``, else the scale set's)."""
    where = _label(source, "VM", i, doc)
    try:
        entry = _Entry(doc, where)
        ref = entry.vm_id()
        size = entry.size("properties.hardwareProfile.vmSize", required=False) or entry.size("sku.name", required=False)
        zones = entry.zones()
        return VmInfo(
            id=str(entry.get("id")),
            name=entry.name(),
            resource_group=ref.resource_group,
            size=size or scale_set.size,
            region=entry.region(),
            priority=scale_set.priority,
            tags=entry.tags(),
            group=scale_set.name,
            zone=zones[0] if zones else None,
            power_state=entry.power_state(),
            subscription_id=ref.subscription_id,
            scale_set=scale_set.name,
        )
    except EntryProblem as problem:
        return unusable_vm(doc, str(problem), fallback_id=f"{source}#VM-{i}", scale_set=scale_set.name)
    except Exception as error:  # as in vm_from_arm
        unreadable = f"{where}: unreadable ({type(error).__name__}: {quote_prefix(str(error), 80)})"
        return unusable_vm(doc, unreadable, fallback_id=f"{source}#VM-{i}", scale_set=scale_set.name)


def unusable_vm(doc: Any, problem: str, *, fallback_id: str, scale_set: str | None = None) -> VmInfo:
    """A placeholder for a listed VM (or scale set) that cannot be used, keeping what can be shown of it: never
    sized or acted on (its power state is unknown, its tags are not trusted)."""

    def text(value: Any) -> str:
        return value.strip()[:200] if isinstance(value, str) and value.strip() else ""

    mapping = doc if isinstance(doc, Mapping) else {}
    properties = mapping.get("properties")
    if scale_set is None and isinstance(properties, Mapping):
        # A flexible scale set's VM that cannot be used still counts among that scale set's instances.
        member_of = properties.get("virtualMachineScaleSet")
        member_id = text(member_of.get("id")) if isinstance(member_of, Mapping) else ""
        scale_set = member_id.rstrip("/").rsplit("/", 1)[-1] or None
    arm_id = text(mapping.get("id"))
    ref: VmRef | ScaleSetRef | None = None
    for parse in (VmRef.parse, ScaleSetRef.parse):
        try:
            ref = parse(arm_id)
            break
        except ValueError:
            continue
    hardware = properties.get("hardwareProfile") if isinstance(properties, Mapping) else None
    return VmInfo(
        id=arm_id or fallback_id,
        name=text(mapping.get("name")) or (ref.name if ref else "") or "(no name)",
        resource_group=ref.resource_group if ref else "",
        size=text(hardware.get("vmSize")) if isinstance(hardware, Mapping) else "",
        region=region.lower() if _REGION.match(region := text(mapping.get("location"))) else "",
        power_state=PowerState.UNKNOWN,
        subscription_id=ref.subscription_id if ref else None,
        scale_set=scale_set,
        group=scale_set,
        problem=problem,
    )


def scale_set_from_arm(doc: Any, *, source: str, i: int | None = None) -> ScaleSetInfo:
    """A scale set's JSON as a :class:`ScaleSetInfo`; :class:`EntryProblem` when a field it needs is not usable."""
    entry = _Entry(doc, _label(source, "scale set", i, doc))
    arm_id = entry.get("id")
    try:
        ref = ScaleSetRef.parse(arm_id if isinstance(arm_id, str) else "")
    except ValueError:
        raise entry.problem("id", f"must be a scale set resource id ({SCALE_SET_ID_FORM})", arm_id) from None
    capacity = entry.get("sku.capacity")
    if capacity is not None and (isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 0):
        raise entry.problem("sku.capacity", "must be a non-negative integer", capacity)
    mix = entry.get("properties.priorityMixPolicy")
    base, above = (None, None) if mix is None else (_mix_count(entry, "base"), _mix_count(entry, "above"))
    return ScaleSetInfo(
        id=str(arm_id),
        name=entry.name(),
        resource_group=ref.resource_group,
        subscription_id=ref.subscription_id,
        size=str(entry.size("sku.name")),
        region=entry.region(),
        capacity=int(capacity or 0),
        priority=entry.choice("properties.virtualMachineProfile.priority", _PRIORITIES, Priority.REGULAR),
        base_regular_count=base,
        regular_percentage_above_base=above,
        zones=entry.zones(),
        tags=entry.tags(),
        orchestration_mode=entry.choice(
            "properties.orchestrationMode", {"uniform": "Uniform", "flexible": "Flexible"}, "Uniform"
        ),
    )


def _mix_count(entry: _Entry, which: str) -> int | None:
    key = "baseRegularPriorityCount" if which == "base" else "regularPriorityPercentageAboveBase"
    path = f"properties.priorityMixPolicy.{key}"
    value = entry.get(path)
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
        raise entry.problem(path, "must be a non-negative integer", value)
    return None if value is None else int(value)


def sku_from_arm(doc: Any, region: str) -> SkuInfo | None:
    """A ``resourceSkus`` entry as a :class:`SkuInfo` when it is a VM size (None for disks and other types)."""
    if not isinstance(doc, Mapping) or str(doc.get("resourceType", "")).lower() != "virtualmachines":
        return None
    zones: tuple[str, ...] = ()
    for info in _objects(doc.get("locationInfo")):
        if str(info.get("location", "")).lower() == region.lower():
            zones = tuple(str(z) for z in info.get("zones") or ())
    return SkuInfo(
        name=str(doc.get("name")),
        region=region,
        capabilities={str(c.get("name")): str(c.get("value")) for c in _objects(doc.get("capabilities"))},
        zones=zones,
        restricted=bool(doc.get("restrictions")),
    )


def _objects(value: Any) -> list[Mapping[str, Any]]:
    return [item for item in value if isinstance(item, Mapping)] if isinstance(value, list) else []
