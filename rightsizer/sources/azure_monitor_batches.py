"""Which VMs go in which Azure Monitor batch call: one subscription, one region and one resource type per call,
at most 50 resources (the service's limits), and the lookback cut into windows the API answers in one piece."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from rightsizer.domain import PowerState, VmInfo
from rightsizer.metrics import NoUsage

NAMESPACE = "Microsoft.Compute/virtualMachines"
SCALE_SET_VM_NAMESPACE = "Microsoft.Compute/virtualMachineScaleSets/virtualMachines"
"""Instances of uniform scale sets are metrics resources of their own type (same metric names)."""
MAX_BATCH = 50
"""The service's limit: resources per getBatch call."""

_SUBSCRIPTION = re.compile(r"^/subscriptions/([^/]+)/", re.IGNORECASE)
_UNIFORM_INSTANCE = re.compile(r"/virtualMachineScaleSets/[^/]+/virtualMachines/[^/]+$", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Batch:
    subscription: str
    region: str
    vms: tuple[VmInfo, ...]
    namespace: str = NAMESPACE
    """One resource type per call: plain and flexible-scale-set VMs, or uniform scale set instances."""


def endpoint_for(template: str, region: str) -> str:
    return template.replace("{region}", region.lower())


def plan_batches(vms: Iterable[VmInfo], batch_size: int) -> tuple[list[Batch], dict[str, NoUsage]]:
    """VMs grouped by (subscription, region) in batches; VMs that cannot be queried get their reason instead."""
    groups: dict[tuple[str, str, str], list[VmInfo]] = {}
    refused: dict[str, NoUsage] = {}
    for vm in vms:
        match = _SUBSCRIPTION.match(vm.id)
        subscription = vm.subscription_id or (match.group(1) if match else None)
        if subscription is None:
            refused[vm.id] = NoUsage(vm.id, "not an Azure resource id: Azure Monitor needs /subscriptions/<id>/...")
            continue
        if vm.power_state in (PowerState.DEALLOCATED, PowerState.STOPPED):
            # Nothing to size (the deciding side says so); not worth a share of a call.
            refused[vm.id] = NoUsage(vm.id, f"VM is {vm.power_state.value}: not measured")
            continue
        namespace = SCALE_SET_VM_NAMESPACE if _UNIFORM_INSTANCE.search(vm.id) else NAMESPACE
        groups.setdefault((subscription.lower(), vm.region.lower(), namespace), []).append(vm)
    size = max(1, min(batch_size, MAX_BATCH))
    batches = [
        Batch(sub, region, tuple(members[i : i + size]), namespace)
        for (sub, region, namespace), members in sorted(groups.items())
        for i in range(0, len(members), size)
    ]
    return batches, refused


def time_chunks(start: float, end: float, step_s: float, max_points: int) -> list[tuple[float, float]]:
    """``[start, end)`` cut into windows of at most ``max_points`` steps."""
    span = max_points * step_s
    out = []
    t = start
    while t < end:
        out.append((t, min(end, t + span)))
        t += span
    return out
