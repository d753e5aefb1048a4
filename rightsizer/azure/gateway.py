"""A thin gateway over ``azure-mgmt-compute``: the only module that talks to Azure Resource Manager.

It turns SDK objects into the rightsizer's plain values (:class:`~rightsizer.domain.VmInfo`,
:class:`ScaleSetInfo`) and SDK exceptions into :mod:`rightsizer.azure.errors`, retrying transient failures itself
(the SDK's own retries are switched off so that there is one retry policy, :mod:`rightsizer.azure.retry`, shared
with the metrics source; its sleeps go through an injectable ``sleep``).

Production: ``ComputeGateway(DefaultAzureCredential())`` (workload identity in AKS). Tests:
``ComputeGateway(credential, base_url=fake.url, connection_verify=fake.cert_path, polling_interval=0)``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import partial
from typing import Any, TypeVar

from azure.mgmt.compute import ComputeManagementClient
from azure.mgmt.compute.models import (
    HardwareProfile,
    PriorityMixPolicy,
    Sku,
    VirtualMachineProperties,
    VirtualMachineScaleSetUpdate,
    VirtualMachineScaleSetUpdateProperties,
    VirtualMachineScaleSetVMInstanceRequiredIDs,
    VirtualMachineUpdate,
)

from rightsizer.azure.resources import ScaleSetInfo, ScaleSetRef, SkuInfo, VmRef
from rightsizer.azure.retry import RetrySettings, call_with_retries, classify
from rightsizer.domain import PowerState, Priority, VmInfo

T = TypeVar("T")

__all__ = ["ComputeGateway", "RetrySettings", "ScaleSetInfo", "ScaleSetRef", "SkuInfo", "VmRef", "classify"]


def _power_state(statuses: Iterable[Any] | None) -> PowerState:
    for status in statuses or ():
        code = str(getattr(status, "code", "") or "")
        if code.lower().startswith("powerstate/"):
            value = code.split("/", 1)[1].lower()
            try:
                return PowerState(value)
            except ValueError:
                return PowerState.UNKNOWN
    return PowerState.UNKNOWN


def _text(value: Any) -> str:
    """SDK fields may come back as str-enums (``str()`` of those is ``Class.MEMBER``): take their value."""
    return str(getattr(value, "value", value))


def _priority(value: Any) -> Priority:
    return Priority.SPOT if _text(value or "Regular").lower() in ("spot", "low") else Priority.REGULAR


def _last_segment(arm_id: str | None) -> str | None:
    return arm_id.rstrip("/").rsplit("/", 1)[-1] if arm_id else None


def vm_info_from_sdk(vm: Any) -> VmInfo:
    """A ``VirtualMachine`` from the SDK as a :class:`VmInfo` (power state needs the instance view)."""
    ref = VmRef.parse(vm.id)
    storage = vm.storage_profile
    os_type = getattr(getattr(storage, "os_disk", None), "os_type", None)
    os_name = _text(os_type or "linux").lower()
    scale_set = _last_segment(getattr(vm.virtual_machine_scale_set, "id", None))
    availability_set = _last_segment(getattr(vm.availability_set, "id", None))
    instance_view = vm.instance_view
    return VmInfo(
        id=vm.id,
        name=vm.name,
        resource_group=ref.resource_group,
        size=_text(vm.hardware_profile.vm_size),
        region=vm.location,
        os="windows" if os_name == "windows" else "linux",
        priority=_priority(vm.priority),
        tags=dict(vm.tags or {}),
        group=scale_set or availability_set,
        zone=vm.zones[0] if vm.zones else None,
        power_state=_power_state(getattr(instance_view, "statuses", None)),
        subscription_id=ref.subscription_id,
        scale_set=scale_set,
        data_disks=len(getattr(storage, "data_disks", None) or []),
        nics=len(getattr(vm.network_profile, "network_interfaces", None) or []) or 1,
    )


def _scale_set_info(scale_set: Any) -> ScaleSetInfo:
    ref = ScaleSetRef.parse(scale_set.id)
    mix = scale_set.priority_mix_policy
    profile = scale_set.virtual_machine_profile
    mode = scale_set.orchestration_mode
    return ScaleSetInfo(
        id=scale_set.id,
        name=scale_set.name,
        resource_group=ref.resource_group,
        subscription_id=ref.subscription_id,
        size=_text(scale_set.sku.name),
        region=scale_set.location,
        capacity=int(scale_set.sku.capacity or 0),
        priority=_priority(getattr(profile, "priority", None)),
        base_regular_count=None if mix is None else mix.base_regular_priority_count,
        regular_percentage_above_base=None if mix is None else mix.regular_priority_percentage_above_base,
        zones=tuple(scale_set.zones or ()),
        tags=dict(scale_set.tags or {}),
        orchestration_mode=_text(mode or "Uniform"),
    )


class ComputeGateway:
    """Reads and changes VMs and scale sets through the real ``azure-mgmt-compute`` client."""

    def __init__(
        self,
        credential: Any,
        *,
        base_url: str | None = None,
        connection_verify: bool | str = True,
        polling_interval: float | None = None,
        retry: RetrySettings | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._credential = credential
        self._base_url = base_url
        self._connection_verify = connection_verify
        self._polling_interval = polling_interval
        self.retry = retry or RetrySettings()
        self._sleep = sleep
        self._clock = clock
        self._clients: dict[str, ComputeManagementClient] = {}
        self._lock = threading.Lock()

    def client(self, subscription_id: str) -> ComputeManagementClient:
        with self._lock:
            client = self._clients.get(subscription_id)
            if client is None:
                kwargs: dict[str, Any] = {"connection_verify": self._connection_verify, "retry_total": 0}
                if self._base_url is not None:
                    kwargs["base_url"] = self._base_url
                if self._polling_interval is not None:
                    kwargs["polling_interval"] = self._polling_interval
                client = ComputeManagementClient(self._credential, subscription_id, **kwargs)
                self._clients[subscription_id] = client
            return client

    def close(self) -> None:
        with self._lock:
            for client in self._clients.values():
                client.close()
            self._clients.clear()

    def _call(self, operation: str, fn: Callable[[], T], **context: Any) -> T:
        return call_with_retries(operation, fn, retry=self.retry, sleep=self._sleep, clock=self._clock, **context)

    # -- VMs -------------------------------------------------------------------------------------------------

    def list_vms(self, subscription_id: str, resource_groups: Sequence[str] | None = None) -> list[VmInfo]:
        """Every VM (with power state) in the resource groups, or the whole subscription when none are given,
        plus the instances of uniform scale sets (flexible ones are listed as VMs already)."""
        vms = self._list_plain_vms(subscription_id, resource_groups)
        for scale_set in self.list_scale_sets(subscription_id, resource_groups):
            if scale_set.orchestration_mode.lower() == "uniform":
                vms.extend(self._uniform_instances(scale_set))
        return vms

    def _list_plain_vms(self, subscription_id: str, resource_groups: Sequence[str] | None) -> list[VmInfo]:
        client = self.client(subscription_id)
        raw = self._list_by_group(
            "virtual_machines",
            resource_groups,
            partial(_list_in_group, client.virtual_machines),
            lambda: list(client.virtual_machines.list_all(expand="instanceView")),
        )
        return [vm_info_from_sdk(vm) for vm in raw]

    def _list_by_group(
        self,
        collection: str,
        resource_groups: Sequence[str] | None,
        in_group: Callable[[str], list[Any]],
        in_subscription: Callable[[], list[Any]],
    ) -> list[Any]:
        """``collection`` listed per resource group, or across the subscription when no group is given."""
        if not resource_groups:
            return self._call(f"{collection}.list_all", in_subscription)
        raw: list[Any] = []
        for group in resource_groups:
            raw.extend(self._call(f"{collection}.list", partial(in_group, group), resource_group=group))
        return raw

    def _uniform_instances(self, scale_set: ScaleSetInfo) -> list[VmInfo]:
        client = self.client(scale_set.subscription_id)
        instances = self._call(
            "virtual_machine_scale_set_vms.list",
            lambda: list(
                client.virtual_machine_scale_set_vms.list(
                    scale_set.resource_group, scale_set.name, expand="instanceView"
                )
            ),
            scale_set=scale_set.name,
        )
        result = []
        for instance in instances:
            properties = instance
            size = getattr(getattr(properties, "hardware_profile", None), "vm_size", None) or getattr(
                instance.sku, "name", scale_set.size
            )
            result.append(
                VmInfo(
                    id=str(instance.id),
                    name=str(instance.name),
                    resource_group=scale_set.resource_group,
                    size=_text(size),
                    region=instance.location,
                    priority=scale_set.priority,
                    tags=dict(instance.tags or {}),
                    group=scale_set.name,
                    zone=instance.zones[0] if instance.zones else None,
                    power_state=_power_state(getattr(instance.instance_view, "statuses", None)),
                    subscription_id=scale_set.subscription_id,
                    scale_set=scale_set.name,
                )
            )
        return result

    def get_vm(self, ref: VmRef) -> VmInfo:
        client = self.client(ref.subscription_id)
        vm = self._call(
            "virtual_machines.get",
            lambda: client.virtual_machines.get(ref.resource_group, ref.name, expand="instanceView"),
            vm=ref.name,
        )
        return vm_info_from_sdk(vm)

    def list_available_sizes(self, ref: VmRef) -> list[str]:
        """Sizes the VM can move to now without deallocation (every region size when it is deallocated)."""
        client = self.client(ref.subscription_id)
        sizes = self._call(
            "virtual_machines.list_available_sizes",
            lambda: list(client.virtual_machines.list_available_sizes(ref.resource_group, ref.name)),
            vm=ref.name,
        )
        return [_text(size.name) for size in sizes]

    def list_resource_skus(self, subscription_id: str, region: str) -> list[SkuInfo]:
        client = self.client(subscription_id)
        skus = self._call(
            "resource_skus.list",
            lambda: list(client.resource_skus.list(filter=f"location eq '{region}'")),
            region=region,
        )
        result = []
        for sku in skus:
            if _text(sku.resource_type).lower() != "virtualmachines":
                continue
            zones: tuple[str, ...] = ()
            for info in sku.location_info or []:
                if str(info.location).lower() == region.lower():
                    zones = tuple(info.zones or ())
            result.append(
                SkuInfo(
                    name=_text(sku.name),
                    region=region,
                    capabilities={str(c.name): str(c.value) for c in sku.capabilities or []},
                    zones=zones,
                    restricted=bool(sku.restrictions),
                )
            )
        return result

    def resize(self, ref: VmRef, size: str) -> None:
        client = self.client(ref.subscription_id)
        update = VirtualMachineUpdate(
            properties=VirtualMachineProperties(hardware_profile=HardwareProfile(vm_size=size))
        )
        self._call(
            "virtual_machines.begin_update",
            lambda: client.virtual_machines.begin_update(ref.resource_group, ref.name, update).result(),
            vm=ref.name,
            target_size=size,
        )

    def deallocate(self, ref: VmRef) -> None:
        client = self.client(ref.subscription_id)
        self._call(
            "virtual_machines.begin_deallocate",
            lambda: client.virtual_machines.begin_deallocate(ref.resource_group, ref.name).result(),
            vm=ref.name,
        )

    def start(self, ref: VmRef) -> None:
        client = self.client(ref.subscription_id)
        self._call(
            "virtual_machines.begin_start",
            lambda: client.virtual_machines.begin_start(ref.resource_group, ref.name).result(),
            vm=ref.name,
        )

    def set_tags(self, ref: VmRef, updates: Mapping[str, str | None]) -> dict[str, str]:
        """Merge ``updates`` into the VM's tags (``None`` removes a tag). ARM's PATCH replaces the whole tag
        dictionary, so this reads the current tags first."""
        client = self.client(ref.subscription_id)
        current = self._call(
            "virtual_machines.get",
            lambda: client.virtual_machines.get(ref.resource_group, ref.name),
            vm=ref.name,
        )
        tags = _merge_tags(current.tags, updates)
        self._call(
            "virtual_machines.begin_update(tags)",
            lambda: client.virtual_machines.begin_update(
                ref.resource_group, ref.name, VirtualMachineUpdate(tags=tags)
            ).result(),
            vm=ref.name,
        )
        return tags

    def simulate_eviction(self, ref: VmRef) -> None:
        client = self.client(ref.subscription_id)
        if ref.scale_set is not None and ref.instance_id is not None:
            self._call(
                "virtual_machine_scale_set_vms.simulate_eviction",
                lambda: client.virtual_machine_scale_set_vms.simulate_eviction(
                    ref.resource_group, ref.scale_set or "", ref.instance_id or ""
                ),
                vm=ref.name,
            )
            return
        self._call(
            "virtual_machines.simulate_eviction",
            lambda: client.virtual_machines.simulate_eviction(ref.resource_group, ref.name),
            vm=ref.name,
        )

    # -- scale sets -------------------------------------------------------------------------------------------

    def list_scale_sets(self, subscription_id: str, resource_groups: Sequence[str] | None = None) -> list[ScaleSetInfo]:
        client = self.client(subscription_id)
        raw = self._list_by_group(
            "virtual_machine_scale_sets",
            resource_groups,
            partial(_list_scale_sets_in_group, client.virtual_machine_scale_sets),
            lambda: list(client.virtual_machine_scale_sets.list_all()),
        )
        return [_scale_set_info(s) for s in raw]

    def get_scale_set(self, ref: ScaleSetRef) -> ScaleSetInfo:
        client = self.client(ref.subscription_id)
        raw = self._call(
            "virtual_machine_scale_sets.get",
            lambda: client.virtual_machine_scale_sets.get(ref.resource_group, ref.name),
            scale_set=ref.name,
        )
        return _scale_set_info(raw)

    def list_scale_set_instances(self, scale_set: ScaleSetInfo) -> list[VmInfo]:
        """The scale set's instances with priority and power state. Flexible scale sets' instances are VMs of the
        resource group (they carry their own priority); uniform ones come from the scale set's VM list."""
        if scale_set.orchestration_mode.lower() == "uniform":
            return self._uniform_instances(scale_set)
        vms = self._list_plain_vms(scale_set.subscription_id, [scale_set.resource_group])
        return [vm for vm in vms if vm.scale_set is not None and vm.scale_set.lower() == scale_set.name.lower()]

    def update_scale_set(
        self,
        ref: ScaleSetRef,
        *,
        capacity: int | None = None,
        base_regular_count: int | None = None,
        regular_percentage_above_base: int | None = None,
        tags: Mapping[str, str] | None = None,
        size: str | None = None,
    ) -> None:
        """One PATCH of the scale set: capacity, Spot Priority Mix and/or the whole tag dictionary."""
        client = self.client(ref.subscription_id)
        sku: Sku | None = None
        if capacity is not None:
            sku = Sku(name=size or self.get_scale_set(ref).size, capacity=capacity)
        properties: VirtualMachineScaleSetUpdateProperties | None = None
        if base_regular_count is not None or regular_percentage_above_base is not None:
            properties = VirtualMachineScaleSetUpdateProperties(
                priority_mix_policy=PriorityMixPolicy(
                    base_regular_priority_count=base_regular_count,
                    regular_priority_percentage_above_base=regular_percentage_above_base,
                )
            )
        update = VirtualMachineScaleSetUpdate(sku=sku, properties=properties, tags=None if tags is None else dict(tags))
        self._call(
            "virtual_machine_scale_sets.begin_update",
            lambda: client.virtual_machine_scale_sets.begin_update(ref.resource_group, ref.name, update).result(),
            scale_set=ref.name,
            capacity=capacity,
        )

    def set_scale_set_capacity(self, ref: ScaleSetRef, capacity: int) -> None:
        self.update_scale_set(ref, capacity=capacity)

    def set_priority_mix(self, ref: ScaleSetRef, base_regular_count: int, regular_percentage_above_base: int) -> None:
        self.update_scale_set(
            ref,
            base_regular_count=base_regular_count,
            regular_percentage_above_base=regular_percentage_above_base,
        )

    def set_scale_set_tags(self, ref: ScaleSetRef, updates: Mapping[str, str | None]) -> dict[str, str]:
        current = self.get_scale_set(ref)
        tags = _merge_tags(current.tags, updates)
        self.update_scale_set(ref, tags=tags)
        return tags

    def delete_scale_set_instances(self, ref: ScaleSetRef, instance_ids: Sequence[str]) -> None:
        if not instance_ids:
            return
        client = self.client(ref.subscription_id)
        body = VirtualMachineScaleSetVMInstanceRequiredIDs(instance_ids=list(instance_ids))
        self._call(
            "virtual_machine_scale_sets.begin_delete_instances",
            lambda: client.virtual_machine_scale_sets.begin_delete_instances(
                ref.resource_group, ref.name, body
            ).result(),
            scale_set=ref.name,
            instances=list(instance_ids),
        )


def _list_in_group(operations: Any, group: str) -> list[Any]:
    return list(operations.list(group, expand="instanceView"))


def _list_scale_sets_in_group(operations: Any, group: str) -> list[Any]:
    return list(operations.list(group))


def _merge_tags(current: Mapping[str, str] | None, updates: Mapping[str, str | None]) -> dict[str, str]:
    tags = dict(current or {})
    for name, value in updates.items():
        if value is None:
            tags.pop(name, None)
        else:
            tags[name] = value
    return tags
