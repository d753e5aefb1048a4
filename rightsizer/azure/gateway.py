"""A thin gateway over ``azure-mgmt-compute``: the only module that talks to Azure Resource Manager.

It hands the JSON of what it lists to :mod:`rightsizer.azure.arm_json`, which reads it into the rightsizer's plain
values (:class:`~rightsizer.domain.VmInfo`, :class:`ScaleSetInfo`), and turns SDK exceptions into
:mod:`rightsizer.azure.errors`, retrying transient failures itself
(the SDK's own retries are switched off so that there is one retry policy, :mod:`rightsizer.azure.retry`, shared
with the metrics source; its sleeps go through an injectable ``sleep``).

Production: ``ComputeGateway(DefaultAzureCredential())`` (workload identity in AKS). Tests:
``ComputeGateway(credential, base_url=fake.url, connection_verify=fake.cert_path, polling_interval=0)``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
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

from rightsizer.azure.arm_json import (
    EntryProblem,
    instance_from_arm,
    scale_set_from_arm,
    sku_from_arm,
    unusable_vm,
    vm_from_arm,
)
from rightsizer.azure.clients import DEFAULT_MAX_RESPONSE_MB, ComputeClients
from rightsizer.azure.errors import PermanentAzureError
from rightsizer.azure.listing import got_json, listed_json
from rightsizer.azure.resources import ScaleSetInfo, ScaleSetRef, SkuInfo, UnreadableScaleSet, VmRef
from rightsizer.azure.retry import RetrySettings, call_with_retries, classify
from rightsizer.domain import VmInfo
from rightsizer.inventory import flag_duplicate_ids

T = TypeVar("T")

UNUSABLE_RESPONSE = "UnusableResponse"
"""Code of the :class:`PermanentAzureError` raised when one resource read by name has JSON that cannot be used."""

__all__ = ["ComputeGateway", "RetrySettings", "ScaleSetInfo", "ScaleSetRef", "SkuInfo", "VmRef", "classify"]


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
        max_response_mb: float = DEFAULT_MAX_RESPONSE_MB,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._clients = ComputeClients(
            ComputeManagementClient,
            credential,
            base_url=base_url,
            connection_verify=connection_verify,
            polling_interval=polling_interval,
            max_response_mb=max_response_mb,
        )
        self.retry = retry or RetrySettings()
        self._sleep = sleep
        self._clock = clock

    def client(self, subscription_id: str) -> ComputeManagementClient:
        return self._clients.client(subscription_id)

    def close(self) -> None:
        self._clients.close()

    def _call(self, operation: str, fn: Callable[[], T], **context: Any) -> T:
        return call_with_retries(operation, fn, retry=self.retry, sleep=self._sleep, clock=self._clock, **context)

    # -- VMs -------------------------------------------------------------------------------------------------

    def list_vms(self, subscription_id: str, resource_groups: Sequence[str] | None = None) -> list[VmInfo]:
        """Every VM (with power state) in the resource groups, or the whole subscription when none are given,
        plus the instances of uniform scale sets (flexible ones are listed as VMs already).

        As for an inventory file, a VM whose JSON cannot be used (a field missing or not what ARM documents) is a
        placeholder with its ``problem`` (a skipped row, gate ``inventory``), and an id listed twice makes both
        rows problems; a scale set that cannot be read is such a row too. A failure of the listing itself
        (authentication, throttling, paging) raises."""
        source = f"Azure subscription {subscription_id}"
        raw = self._list_raw_vms(subscription_id, resource_groups)
        vms = [vm_from_arm(doc, source=source, i=i) for i, doc in enumerate(raw)]
        for k, doc in enumerate(self._list_raw_scale_sets(subscription_id, resource_groups)):
            try:
                scale_set = scale_set_from_arm(doc, source=source, i=k)
            except EntryProblem as problem:
                unread = f"{problem}; if it is a uniform scale set, its instances are not listed"
                vms.append(unusable_vm(doc, unread, fallback_id=f"{source}#scale-set-{k}"))
                continue
            if scale_set.orchestration_mode.lower() == "uniform":
                vms.extend(self._uniform_instances(scale_set, source=source, first=len(vms)))
        return flag_duplicate_ids(vms, source=source)

    def _list_raw_vms(self, subscription_id: str, resource_groups: Sequence[str] | None) -> list[Any]:
        client = self.client(subscription_id)
        return self._list_by_group(
            "virtual_machines",
            resource_groups,
            partial(_list_in_group, client.virtual_machines),
            lambda: listed_json(partial(client.virtual_machines.list_all, expand="instanceView")),
        )

    def _list_by_group(
        self,
        collection: str,
        resource_groups: Sequence[str] | None,
        in_group: Callable[[str], list[Any]],
        in_subscription: Callable[[], list[Any]],
    ) -> list[Any]:
        """``collection`` listed per resource group, or across the subscription when no group is given. A group
        named twice (ARM names ignore case) is listed once: its VMs are not duplicates."""
        if not resource_groups:
            return self._call(f"{collection}.list_all", in_subscription)
        raw: list[Any] = []
        for group in {group.lower(): group for group in resource_groups}.values():
            raw.extend(self._call(f"{collection}.list", partial(in_group, group), resource_group=group))
        return raw

    def _uniform_instances(self, scale_set: ScaleSetInfo, *, source: str, first: int = 0) -> list[VmInfo]:
        client = self.client(scale_set.subscription_id)
        instances = self._call(
            "virtual_machine_scale_set_vms.list",
            lambda: listed_json(
                partial(
                    client.virtual_machine_scale_set_vms.list,
                    scale_set.resource_group,
                    scale_set.name,
                    expand="instanceView",
                )
            ),
            scale_set=scale_set.name,
        )
        return [
            instance_from_arm(instance, scale_set, source=source, i=first + n) for n, instance in enumerate(instances)
        ]

    def get_vm(self, ref: VmRef) -> VmInfo:
        client = self.client(ref.subscription_id)
        vm = self._call(
            "virtual_machines.get",
            lambda: got_json(partial(client.virtual_machines.get, ref.resource_group, ref.name, expand="instanceView")),
            vm=ref.name,
        )
        info = vm_from_arm(vm, source=f"Azure resource group {ref.resource_group}")
        if info.problem is not None:
            raise PermanentAzureError("virtual_machines.get", info.problem, code=UNUSABLE_RESPONSE)
        return info

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
            lambda: listed_json(partial(client.resource_skus.list, filter=f"location eq '{region}'")),
            region=region,
        )
        return [info for info in (sku_from_arm(sku, region) for sku in skus) if info is not None]

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

    def list_scale_sets(
        self, subscription_id: str, resource_groups: Sequence[str] | None = None
    ) -> list[ScaleSetInfo | UnreadableScaleSet]:
        """The scale sets, one that cannot be read as an :class:`UnreadableScaleSet` naming the field, so the
        others are still handled. A failure of the listing itself raises."""
        source = f"Azure subscription {subscription_id}"
        out: list[ScaleSetInfo | UnreadableScaleSet] = []
        for k, doc in enumerate(self._list_raw_scale_sets(subscription_id, resource_groups)):
            try:
                out.append(scale_set_from_arm(doc, source=source, i=k))
            except EntryProblem as problem:
                name = doc.get("name") if isinstance(doc, Mapping) else None
                label = name[:80] if isinstance(name, str) and name else f"scale set #{k}"
                out.append(UnreadableScaleSet(label, str(problem)))
        return out

    def _list_raw_scale_sets(self, subscription_id: str, resource_groups: Sequence[str] | None) -> list[Any]:
        client = self.client(subscription_id)
        return self._list_by_group(
            "virtual_machine_scale_sets",
            resource_groups,
            partial(_list_scale_sets_in_group, client.virtual_machine_scale_sets),
            lambda: listed_json(client.virtual_machine_scale_sets.list_all),
        )

    def get_scale_set(self, ref: ScaleSetRef) -> ScaleSetInfo:
        client = self.client(ref.subscription_id)
        raw = self._call(
            "virtual_machine_scale_sets.get",
            lambda: got_json(partial(client.virtual_machine_scale_sets.get, ref.resource_group, ref.name)),
            scale_set=ref.name,
        )
        return _scale_set_or_raise(raw, "virtual_machine_scale_sets.get", f"Azure {ref.arm_id}", None)

    def list_scale_set_instances(self, scale_set: ScaleSetInfo) -> list[VmInfo]:
        """The scale set's instances with priority and power state. Flexible scale sets' instances are VMs of the
        resource group (they carry their own priority); uniform ones come from the scale set's VM list. An
        instance that cannot be read raises :class:`PermanentAzureError`: Spot decisions count every instance."""
        source = f"Azure scale set {scale_set.id}"
        if scale_set.orchestration_mode.lower() == "uniform":
            instances = self._uniform_instances(scale_set, source=source)
        else:
            raw = self._list_raw_vms(scale_set.subscription_id, [scale_set.resource_group])
            vms = [vm_from_arm(doc, source=source, i=i) for i, doc in enumerate(raw)]
            instances = [
                vm for vm in vms if vm.scale_set is not None and vm.scale_set.lower() == scale_set.name.lower()
            ]
        unusable = [vm.problem for vm in instances if vm.problem is not None]
        if unusable:
            more = f" (and {len(unusable) - 1} more)" if len(unusable) > 1 else ""
            raise PermanentAzureError("virtual_machine_scale_set_vms.list", unusable[0] + more, code=UNUSABLE_RESPONSE)
        return instances

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


def _text(value: Any) -> str:
    """SDK fields may come back as str-enums (``str()`` of those is ``Class.MEMBER``): take their value."""
    return str(getattr(value, "value", value))


def _scale_set_or_raise(doc: Any, operation: str, source: str, i: int | None) -> ScaleSetInfo:
    try:
        return scale_set_from_arm(doc, source=source, i=i)
    except EntryProblem as problem:
        raise PermanentAzureError(operation, str(problem), code=UNUSABLE_RESPONSE) from None


def _list_in_group(operations: Any, group: str) -> list[Any]:
    return listed_json(partial(operations.list, group, expand="instanceView"))


def _list_scale_sets_in_group(operations: Any, group: str) -> list[Any]:
    return listed_json(partial(operations.list, group))


def _merge_tags(current: Mapping[str, str] | None, updates: Mapping[str, str | None]) -> dict[str, str]:
    tags = dict(current or {})
    for name, value in updates.items():
        if value is None:
            tags.pop(name, None)
        else:
            tags[name] = value
    return tags
