"""A fake Azure Resource Manager (Microsoft.Compute) speaking the real REST API over HTTPS on loopback.

The real ``azure-mgmt-compute`` client (39.x) talks to it unchanged: point ``ComputeManagementClient`` at
``FakeArm.url`` with ``base_url=``, pass :class:`FakeCredential` and ``connection_verify=FakeArm.cert_path``.

Why HTTPS with a self-signed certificate rather than plain HTTP: azure-core refuses to send a bearer token over
plain HTTP unless every call passes ``enforce_https=False``; with a certificate the production code path (and its
pipeline) runs unchanged, only ``connection_verify`` differs. The certificate is made at start with
``cryptography`` for ``127.0.0.1``.

What it serves (``api-version`` is accepted, not checked):

- VMs: list per resource group and ``list_all`` (``nextLink`` paging, ``page_size`` items a page, absolute URLs),
  ``get`` (``$expand=instanceView``), ``instanceView``, ``PATCH`` (size and tags) as a long-running operation,
  ``deallocate`` / ``start`` / ``powerOff`` as long-running operations, ``vmSizes``, ``simulateEviction``.
- ``resourceSkus`` (``$filter=location eq '<region>'``, capabilities as strings).
- Scale sets: get / list / list_all / ``PATCH`` (``sku.capacity``, ``priorityMixPolicy``, tags), ``delete``
  (instances), their VMs (``virtualMachineScaleSets/{name}/virtualMachines`` with instance views) and per-instance
  ``simulateEviction``. Flexible scale sets' instances are also VMs of the resource group (as in Azure).
- Long-running operations answer ``Azure-AsyncOperation`` and ``Location`` with absolute URLs; each operation
  reports ``InProgress`` ``lro_in_progress_polls`` times, then ``Succeeded`` (or ``Failed`` with the injected
  error). The change is applied when the operation is accepted (Azure carries on when the caller dies).
  ``Retry-After`` is never sent on operations: the SDK treats ``0`` as absent, which means 30 s.

Faults (:class:`Fault`), matched on method + path regex, ``skip`` matches ignored first, ``times`` consumed:
an HTTP error with an ARM error body (429 + ``Retry-After``, 409, 500, ...), a long-running operation that ends
``Failed`` with a code (``AllocationFailed``, ``SkuNotAvailable``, ...), or ``kill``: a callable run before the
request is applied (a test kills the client process there), after which the connection is dropped unanswered.

Odd answers: a VM's ``json_edit`` (a callable given the VM's JSON, as listed or read) changes what is sent for it
(a field removed, a value of the wrong type, another VM's id), for tests of how the client copes with one bad VM.

Spot capacity: a scale set's ``spot_capacity`` caps its running Spot instances; a scale-out that would need more
fails with ``AllocationFailed`` and changes nothing; ``spot_available`` per region/size does the same for
standalone VMs started with Spot priority.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
import socket
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlsplit

from azure.core.credentials import AccessToken

from tests.fakes.tls import FakeApiHandler, LoopbackHttps

FAKE_TOKEN = "fake-arm-token"

DEFAULT_SKUS: dict[str, tuple[int, float]] = {
    "Standard_B2s": (2, 4.0),
    "Standard_B2ms": (2, 8.0),
    "Standard_D2s_v5": (2, 8.0),
    "Standard_D4s_v5": (4, 16.0),
    "Standard_D8s_v5": (8, 32.0),
    "Standard_D16s_v5": (16, 64.0),
    "Standard_E2s_v5": (2, 16.0),
    "Standard_E4s_v5": (4, 32.0),
    "Standard_F2s_v2": (2, 4.0),
    "Standard_F4s_v2": (4, 8.0),
}

Json = dict[str, Any]


class FakeCredential:
    """A credential for the fake: ``get_token`` returns a fixed token the fake checks."""

    def __init__(self, token: str = FAKE_TOKEN) -> None:
        self.token = token
        self.calls = 0

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        self.calls += 1
        return AccessToken(self.token, int(time.time()) + 3600)


@dataclass
class Fault:
    """An injected failure for requests matching ``method`` and ``path`` (a regex searched in the URL path)."""

    path: str
    method: str | None = None
    status: int | None = None
    """HTTP status to answer at once (429, 409, 500, ...)."""
    code: str = "InternalServerError"
    message: str = "injected fault"
    retry_after: int | str | None = None
    """``Retry-After`` sent with ``status``: delta-seconds (an int) or any text, e.g. an HTTP-date."""
    lro_failure: bool = False
    """Accept the request (202) but end its long-running operation ``Failed`` with ``code``; nothing changes."""
    kill: Callable[[], None] | None = None
    """Run before the request is applied, then drop the connection unanswered (the client 'dies' here)."""
    body_contains: str | None = None
    """Only requests whose raw JSON body contains this text (e.g. ``"vmSize"`` for a resize PATCH)."""
    times: int | None = 1
    """How many matching requests fail; None = all."""
    skip: int = 0
    """Let this many matching requests through first."""
    hits: int = 0

    def matches(self, method: str, path: str, body: bytes = b"") -> bool:
        if self.method is not None and self.method.upper() != method.upper():
            return False
        if self.body_contains is not None and self.body_contains.encode() not in body:
            return False
        return re.search(self.path, path, flags=re.IGNORECASE) is not None


@dataclass
class FakeVm:
    resource_group: str
    name: str
    size: str
    location: str
    subscription: str
    priority: str = "Regular"
    zone: str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    power_state: str = "running"
    os_type: str = "Linux"
    available_sizes: list[str] | None = None
    """Sizes the running VM can move to without deallocation (its hardware cluster); None = the region's SKUs."""
    scale_set: str | None = None
    availability_set: str | None = None
    data_disks: int = 0
    nics: int = 1
    eviction_policy: str = "Deallocate"
    evicted: bool = False
    vm_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    instance_id: str = ""
    json_edit: Callable[[Json], None] | None = None
    """Changes this VM's JSON in place before it is sent (see "Odd answers")."""

    @property
    def arm_id(self) -> str:
        return (
            f"/subscriptions/{self.subscription}/resourceGroups/{self.resource_group}"
            f"/providers/Microsoft.Compute/virtualMachines/{self.name}"
        )


@dataclass
class FakeScaleSet:
    resource_group: str
    name: str
    size: str
    location: str
    subscription: str
    zones: list[str] = field(default_factory=lambda: ["1", "2", "3"])
    priority: str = "Spot"
    base_regular: int = 0
    regular_percentage_above_base: int = 20
    orchestration_mode: str = "Flexible"
    tags: dict[str, str] = field(default_factory=dict)
    spot_capacity: int | None = None
    """Most Spot instances that can run at once (None = unlimited)."""
    counter: int = 0

    @property
    def arm_id(self) -> str:
        return (
            f"/subscriptions/{self.subscription}/resourceGroups/{self.resource_group}"
            f"/providers/Microsoft.Compute/virtualMachineScaleSets/{self.name}"
        )


@dataclass
class _Operation:
    polls_left: int
    error: Json | None
    result: Callable[[], Json | None]


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    query: Mapping[str, list[str]]
    body: Json | None


class ArmError(Exception):
    def __init__(self, status: int, code: str, message: str, retry_after: int | None = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.retry_after = retry_after


class _DropConnection(Exception):
    pass


def regular_target(capacity: int, base: int, percentage_above_base: int) -> int:
    """Regular instances Spot Priority Mix keeps for ``capacity`` (rounded up, the conservative reading)."""
    above = max(0, capacity - base)
    return min(capacity, base) + math.ceil(above * percentage_above_base / 100)


_PROVIDER = r"/subscriptions/(?P<sub>[^/]+)(?:/resourceGroups/(?P<rg>[^/]+))?/providers/Microsoft\.Compute"


class FakeArm:
    """The fake server. Use as a context manager, or ``start()`` / ``stop()``."""

    def __init__(
        self,
        subscription: str = "00000000-0000-0000-0000-000000000001",
        *,
        page_size: int = 2,
        skus: Mapping[str, tuple[int, float]] | None = None,
        regions: tuple[str, ...] = ("westeurope", "northeurope"),
        lro_in_progress_polls: int = 1,
    ) -> None:
        self.subscription = subscription
        self.page_size = page_size
        self.skus = dict(skus or DEFAULT_SKUS)
        self.regions = regions
        self.lro_in_progress_polls = lro_in_progress_polls
        self.vms: dict[tuple[str, str], FakeVm] = {}
        self.scale_sets: dict[tuple[str, str], FakeScaleSet] = {}
        self.faults: list[Fault] = []
        self.requests: list[RecordedRequest] = []
        self.spot_available: dict[tuple[str, str], int] = {}
        self.lock = threading.RLock()
        self._operations: dict[str, _Operation] = {}
        self._https = LoopbackHttps("fake-arm")
        self.cert_path = self._https.cert_path
        self.url = ""

    # -- lifecycle ---------------------------------------------------------------------------------------------

    def start(self) -> FakeArm:
        self.url = self._https.start(_make_handler(self))
        return self

    def stop(self) -> None:
        self._https.stop()

    def __enter__(self) -> FakeArm:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- world building ----------------------------------------------------------------------------------------

    def add_vm(self, resource_group: str, name: str, size: str, location: str = "westeurope", **kw: Any) -> FakeVm:
        if size not in self.skus:
            raise ValueError(f"unknown size {size!r}; the fake knows {sorted(self.skus)}")
        vm = FakeVm(resource_group, name, size, location, self.subscription, **kw)
        with self.lock:
            self.vms[(resource_group.lower(), name.lower())] = vm
        return vm

    def add_scale_set(
        self,
        resource_group: str,
        name: str,
        size: str,
        capacity: int,
        location: str = "westeurope",
        **kw: Any,
    ) -> FakeScaleSet:
        scale_set = FakeScaleSet(resource_group, name, size, location, self.subscription, **kw)
        with self.lock:
            self.scale_sets[(resource_group.lower(), name.lower())] = scale_set
            self._scale_out(scale_set, capacity, check_spot=False)
        return scale_set

    def add_fault(self, fault: Fault) -> Fault:
        with self.lock:
            self.faults.append(fault)
        return fault

    def vm(self, resource_group: str, name: str) -> FakeVm:
        with self.lock:
            return self.vms[(resource_group.lower(), name.lower())]

    def scale_set_instances(self, resource_group: str, name: str) -> list[FakeVm]:
        with self.lock:
            return [
                vm
                for vm in self.vms.values()
                if vm.scale_set is not None
                and vm.scale_set.lower() == name.lower()
                and vm.resource_group.lower() == resource_group.lower()
            ]

    def evict(self, resource_group: str, name: str) -> None:
        """What ``simulateEviction`` does, for tests that evict without a client."""
        with self.lock:
            self._evict(self.vm(resource_group, name))

    def requests_matching(self, method: str, path_regex: str) -> list[RecordedRequest]:
        with self.lock:
            return [
                r for r in self.requests if r.method == method and re.search(path_regex, r.path, flags=re.IGNORECASE)
            ]

    # -- behaviour -------------------------------------------------------------------------------------------

    def _region_sizes(self) -> list[str]:
        return sorted(self.skus)

    def _evict(self, vm: FakeVm) -> None:
        if vm.priority != "Spot":
            raise ArmError(409, "OperationNotAllowed", f"VM {vm.name} is not a Spot VM; only Spot VMs can be evicted")
        if vm.power_state != "running":
            raise ArmError(409, "OperationNotAllowed", f"VM {vm.name} is not running")
        vm.power_state = "deallocated"
        vm.evicted = True

    def _scale_set_mode(self, vm: FakeVm) -> str:
        scale_set = self.scale_sets.get((vm.resource_group.lower(), (vm.scale_set or "").lower()))
        return scale_set.orchestration_mode if scale_set is not None else "Flexible"

    def _running_spot(self, scale_set: FakeScaleSet) -> int:
        return sum(
            1
            for vm in self.scale_set_instances(scale_set.resource_group, scale_set.name)
            if vm.priority == "Spot" and vm.power_state == "running"
        )

    def _scale_out(self, scale_set: FakeScaleSet, capacity: int, *, check_spot: bool = True) -> None:
        instances = self.scale_set_instances(scale_set.resource_group, scale_set.name)
        current = len(instances)
        if capacity < current:
            self._scale_in(scale_set, instances, capacity)
            return
        target_regular = regular_target(capacity, scale_set.base_regular, scale_set.regular_percentage_above_base)
        regular = sum(1 for vm in instances if vm.priority == "Regular")
        new_priorities: list[str] = []
        for _ in range(capacity - current):
            if scale_set.priority == "Regular" or regular < target_regular:
                new_priorities.append("Regular")
                regular += 1
            else:
                new_priorities.append("Spot")
        new_spot = new_priorities.count("Spot")
        if (
            check_spot
            and scale_set.spot_capacity is not None
            and new_spot
            and self._running_spot(scale_set) + new_spot > scale_set.spot_capacity
        ):
            raise ArmError(
                200,
                "AllocationFailed",
                f"Allocation failed. We do not have sufficient capacity for the requested VM size "
                f"{scale_set.size} (Spot) in this region.",
            )
        for priority in new_priorities:
            scale_set.counter += 1
            zone = scale_set.zones[scale_set.counter % len(scale_set.zones)] if scale_set.zones else None
            vm = FakeVm(
                scale_set.resource_group,
                f"{scale_set.name}_{scale_set.counter:06x}",
                scale_set.size,
                scale_set.location,
                scale_set.subscription,
                priority=priority,
                zone=zone,
                scale_set=scale_set.name,
                instance_id=str(scale_set.counter),
            )
            self.vms[(vm.resource_group.lower(), vm.name.lower())] = vm

    def _scale_in(self, scale_set: FakeScaleSet, instances: list[FakeVm], capacity: int) -> None:
        target_regular = regular_target(capacity, scale_set.base_regular, scale_set.regular_percentage_above_base)
        # Azure removes instances so that the mix is kept: spot first while regulars are at or under target.
        ordered = sorted(instances, key=lambda vm: (vm.power_state == "running", -scale_set.counter))
        regular = sum(1 for vm in instances if vm.priority == "Regular")
        remaining = len(instances)
        for vm in ordered:
            if remaining <= capacity:
                break
            if vm.priority == "Regular" and regular <= target_regular:
                continue
            del self.vms[(vm.resource_group.lower(), vm.name.lower())]
            remaining -= 1
            if vm.priority == "Regular":
                regular -= 1
        for vm in ordered:
            if remaining <= capacity:
                break
            key = (vm.resource_group.lower(), vm.name.lower())
            if key in self.vms:
                del self.vms[key]
                remaining -= 1

    # -- JSON -----------------------------------------------------------------------------------------------

    def _instance_view(self, vm: FakeVm) -> Json:
        power = {
            "running": "VM running",
            "deallocated": "VM deallocated",
            "stopped": "VM stopped",
            "starting": "VM starting",
            "deallocating": "VM deallocating",
        }[vm.power_state]
        return {
            "computerName": vm.name,
            "osName": "ubuntu" if vm.os_type == "Linux" else "Windows Server 2022",
            "statuses": [
                {
                    "code": "ProvisioningState/succeeded",
                    "level": "Info",
                    "displayStatus": "Provisioning succeeded",
                },
                {"code": f"PowerState/{vm.power_state}", "level": "Info", "displayStatus": power},
            ],
        }

    def _vm_json(self, vm: FakeVm, *, expand: bool = False) -> Json:
        properties: Json = {
            "vmId": vm.vm_id,
            "hardwareProfile": {"vmSize": vm.size},
            "priority": vm.priority,
            "storageProfile": {
                "osDisk": {"osType": vm.os_type, "name": f"{vm.name}-os", "createOption": "FromImage"},
                "dataDisks": [
                    {"lun": i, "name": f"{vm.name}-data{i}", "createOption": "Empty", "diskSizeGB": 64}
                    for i in range(vm.data_disks)
                ],
            },
            "networkProfile": {
                "networkInterfaces": [
                    {
                        "id": f"/subscriptions/{vm.subscription}/resourceGroups/{vm.resource_group}"
                        f"/providers/Microsoft.Network/networkInterfaces/{vm.name}-nic{i}"
                    }
                    for i in range(vm.nics)
                ]
            },
            "provisioningState": "Succeeded",
        }
        if vm.priority == "Spot":
            properties["evictionPolicy"] = vm.eviction_policy
            properties["billingProfile"] = {"maxPrice": -1}
        if vm.scale_set is not None:
            properties["virtualMachineScaleSet"] = {
                "id": f"/subscriptions/{vm.subscription}/resourceGroups/{vm.resource_group}"
                f"/providers/Microsoft.Compute/virtualMachineScaleSets/{vm.scale_set}"
            }
        if vm.availability_set is not None:
            properties["availabilitySet"] = {
                "id": f"/subscriptions/{vm.subscription}/resourceGroups/{vm.resource_group}"
                f"/providers/Microsoft.Compute/availabilitySets/{vm.availability_set}"
            }
        if expand:
            properties["instanceView"] = self._instance_view(vm)
        body: Json = {
            "id": vm.arm_id,
            "name": vm.name,
            "type": "Microsoft.Compute/virtualMachines",
            "location": vm.location,
            "tags": dict(vm.tags),
            "properties": properties,
        }
        if vm.zone is not None:
            body["zones"] = [vm.zone]
        if vm.json_edit is not None:
            vm.json_edit(body)
        return body

    def _scale_set_vm_json(self, scale_set: FakeScaleSet, vm: FakeVm, *, expand: bool) -> Json:
        properties: Json = {
            "vmId": vm.vm_id,
            "latestModelApplied": True,
            "hardwareProfile": {"vmSize": vm.size},
            "provisioningState": "Succeeded",
            "virtualMachineResourceId": vm.arm_id,
        }
        if expand:
            properties["instanceView"] = {"statuses": self._instance_view(vm)["statuses"]}
        body: Json = {
            "id": f"{scale_set.arm_id}/virtualMachines/{vm.name}",
            "name": vm.name,
            "instanceId": vm.name if scale_set.orchestration_mode == "Flexible" else vm.instance_id,
            "type": "Microsoft.Compute/virtualMachineScaleSets/virtualMachines",
            "location": vm.location,
            "tags": dict(vm.tags),
            "sku": {"name": vm.size, "tier": "Standard"},
            "properties": properties,
        }
        if vm.zone is not None:
            body["zones"] = [vm.zone]
        if vm.json_edit is not None:
            vm.json_edit(body)
        return body

    def _scale_set_json(self, scale_set: FakeScaleSet) -> Json:
        instances = self.scale_set_instances(scale_set.resource_group, scale_set.name)
        profile: Json = {"priority": scale_set.priority}
        if scale_set.priority == "Spot":
            profile["evictionPolicy"] = "Deallocate"
            profile["billingProfile"] = {"maxPrice": -1}
        return {
            "id": scale_set.arm_id,
            "name": scale_set.name,
            "type": "Microsoft.Compute/virtualMachineScaleSets",
            "location": scale_set.location,
            "tags": dict(scale_set.tags),
            "zones": list(scale_set.zones),
            "sku": {"name": scale_set.size, "tier": "Standard", "capacity": len(instances)},
            "properties": {
                "orchestrationMode": scale_set.orchestration_mode,
                "priorityMixPolicy": {
                    "baseRegularPriorityCount": scale_set.base_regular,
                    "regularPriorityPercentageAboveBase": scale_set.regular_percentage_above_base,
                },
                "virtualMachineProfile": profile,
                "provisioningState": "Succeeded",
            },
        }

    def _sku_json(self, name: str, location: str) -> Json:
        vcpus, memory = self.skus[name]
        return {
            "resourceType": "virtualMachines",
            "name": name,
            "tier": "Standard",
            "size": name.removeprefix("Standard_"),
            "family": "standard" + name.removeprefix("Standard_").split("_")[0] + "Family",
            "locations": [location],
            "locationInfo": [{"location": location, "zones": ["1", "2", "3"]}],
            "capabilities": [
                {"name": "vCPUs", "value": str(vcpus)},
                {"name": "MemoryGB", "value": f"{memory:g}"},
                {"name": "MaxDataDiskCount", "value": str(max(4, vcpus * 2))},
                {"name": "MaxNetworkInterfaces", "value": str(2 if vcpus <= 2 else 4)},
                {"name": "PremiumIO", "value": "True" if "s" in name.split("_")[1][1:] else "False"},
                {
                    "name": "AcceleratedNetworkingEnabled",
                    "value": "False" if name.startswith("Standard_B") else "True",
                },
                {"name": "LowPriorityCapable", "value": "False" if name.startswith("Standard_B") else "True"},
            ],
            "restrictions": [],
        }

    def _size_json(self, name: str) -> Json:
        vcpus, memory = self.skus[name]
        return {
            "name": name,
            "numberOfCores": vcpus,
            "memoryInMB": int(memory * 1024),
            "maxDataDiskCount": max(4, vcpus * 2),
            "osDiskSizeInMB": 1047552,
            "resourceDiskSizeInMB": 0,
        }

    # -- long-running operations ---------------------------------------------------------------------------

    def _new_operation(self, result: Callable[[], Json | None], error: Json | None = None) -> str:
        op_id = uuid.uuid4().hex
        self._operations[op_id] = _Operation(self.lro_in_progress_polls, error, result)
        return op_id

    def _operation_headers(self, op_id: str) -> dict[str, str]:
        return {
            "Azure-AsyncOperation": f"{self.url}/fakeOperations/{op_id}?api-version=2026-04-01",
            "Location": f"{self.url}/fakeOperations/{op_id}/result?api-version=2026-04-01",
        }

    def _operation_status(self, op_id: str) -> tuple[Json, bool]:
        operation = self._operations.get(op_id)
        if operation is None:
            raise ArmError(404, "NotFound", f"operation {op_id} not found")
        now = dt.datetime.now(dt.UTC).isoformat()
        if operation.polls_left > 0:
            operation.polls_left -= 1
            return {"name": op_id, "status": "InProgress", "startTime": now}, False
        if operation.error is not None:
            return {
                "name": op_id,
                "status": "Failed",
                "startTime": now,
                "endTime": now,
                "error": operation.error,
            }, True
        return {"name": op_id, "status": "Succeeded", "startTime": now, "endTime": now}, True


def _make_handler(arm: FakeArm) -> type[BaseHTTPRequestHandler]:
    class Handler(FakeApiHandler):
        def do_GET(self) -> None:
            self._handle("GET")

        def do_POST(self) -> None:
            self._handle("POST")

        def do_PATCH(self) -> None:
            self._handle("PATCH")

        def do_PUT(self) -> None:
            self._handle("PUT")

        def do_DELETE(self) -> None:
            self._handle("DELETE")

        def _send(self, status: int, body: Json | None, headers: Mapping[str, str] | None = None) -> None:
            payload = b"" if body is None else json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(payload)))
            self.send_header("x-ms-request-id", str(uuid.uuid4()))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            if payload:
                self.wfile.write(payload)

        def _handle(self, method: str) -> None:
            split = urlsplit(self.path)
            query = parse_qs(split.query)
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            body: Json | None = json.loads(raw) if raw else None
            path = split.path
            if self.headers.get("Authorization") != f"Bearer {FAKE_TOKEN}":
                self._send(401, {"error": {"code": "AuthenticationFailed", "message": "missing or bad token"}})
                return
            try:
                with arm.lock:
                    arm.requests.append(RecordedRequest(method, path, query, body))
                    fault = self._fault(method, path, raw)
                if fault is not None and fault.kill is not None:
                    fault.kill()
                    raise _DropConnection
                if fault is not None and fault.status is not None:
                    headers = {"Retry-After": str(fault.retry_after)} if fault.retry_after is not None else {}
                    self._send(fault.status, {"error": {"code": fault.code, "message": fault.message}}, headers)
                    return
                with arm.lock:
                    status, response, headers = self._route(method, path, query, body, fault)
                self._send(status, response, headers)
            except _DropConnection:
                self.close_connection = True
                with _suppress_os_error():
                    self.connection.shutdown(socket.SHUT_RDWR)
            except ArmError as error:
                headers = {"Retry-After": str(error.retry_after)} if error.retry_after is not None else {}
                self._send(error.status, {"error": {"code": error.code, "message": error.message}}, headers)

        def _fault(self, method: str, path: str, raw: bytes) -> Fault | None:
            for fault in arm.faults:
                if fault.times is not None and fault.times <= 0:
                    continue
                if not fault.matches(method, path, raw):
                    continue
                fault.hits += 1
                if fault.hits <= fault.skip:
                    continue
                if fault.times is not None:
                    fault.times -= 1
                return fault
            return None

        def _paged(self, items: list[Json], path: str, query: Mapping[str, list[str]]) -> Json:
            start = int(query.get("$skiptoken", ["0"])[0])
            page = items[start : start + arm.page_size]
            body: Json = {"value": page}
            if start + arm.page_size < len(items):
                extra = "".join(
                    f"&{key}={value[0]}" for key, value in query.items() if key not in ("$skiptoken", "api-version")
                )
                body["nextLink"] = f"{arm.url}{path}?api-version=2026-04-01{extra}&$skiptoken={start + arm.page_size}"
            return body

        def _route(
            self,
            method: str,
            path: str,
            query: Mapping[str, list[str]],
            body: Json | None,
            fault: Fault | None,
        ) -> tuple[int, Json | None, dict[str, str]]:
            expand = query.get("$expand", [""])[0].lower() == "instanceview"
            match = re.fullmatch(r"/fakeOperations/(?P<op>[0-9a-f]+)(?P<result>/result)?", path)
            if match:
                status_body, done = arm._operation_status(match["op"])
                if match["result"] is None:
                    return 200, status_body, {}
                if not done:
                    return 202, None, arm._operation_headers(match["op"])
                return 200, arm._operations[match["op"]].result(), {}

            match = re.fullmatch(_PROVIDER + r"/(?P<rest>.*)", path, flags=re.IGNORECASE)
            if match is None or match["sub"] != arm.subscription:
                raise ArmError(404, "SubscriptionNotFound", f"no route for {path}")
            rg = match["rg"]
            parts = match["rest"].split("/")
            kind = parts[0].lower()
            if kind == "skus" and method == "GET":
                return 200, self._skus(query), {}
            if kind == "virtualmachines":
                return self._virtual_machines(method, rg, parts[1:], path, query, body, fault, expand)
            if kind == "virtualmachinescalesets":
                return self._scale_sets(method, rg, parts[1:], path, query, body, fault, expand)
            raise ArmError(404, "NotFound", f"no route for {method} {path}")

        def _skus(self, query: Mapping[str, list[str]]) -> Json:
            location_filter = query.get("$filter", [""])[0]
            match = re.search(r"location eq '([^']+)'", location_filter)
            regions = [match[1]] if match else list(arm.regions)
            return {"value": [arm._sku_json(name, region) for region in regions for name in arm._region_sizes()]}

        def _lro(self, fault: Fault | None, apply: Callable[[], None], result: Callable[[], Json | None]) -> str:
            if fault is not None and fault.lro_failure:
                return arm._new_operation(result, {"code": fault.code, "message": fault.message})
            try:
                apply()
            except ArmError as error:
                if error.status != 200:
                    raise
                return arm._new_operation(result, {"code": error.code, "message": error.message})
            return arm._new_operation(result)

        def _virtual_machines(
            self,
            method: str,
            rg: str | None,
            parts: list[str],
            path: str,
            query: Mapping[str, list[str]],
            body: Json | None,
            fault: Fault | None,
            expand: bool,
        ) -> tuple[int, Json | None, dict[str, str]]:
            if not parts or parts == [""]:
                vms = [
                    vm
                    for vm in arm.vms.values()
                    if rg is None or vm.resource_group.lower() == rg.lower()
                    if vm.scale_set is None or arm._scale_set_mode(vm) == "Flexible"
                ]
                vms.sort(key=lambda vm: (vm.resource_group, vm.name))
                return 200, self._paged([arm._vm_json(vm, expand=expand) for vm in vms], path, query), {}
            if rg is None:
                raise ArmError(404, "NotFound", f"no route for {path}")
            vm = arm.vms.get((rg.lower(), parts[0].lower()))
            if vm is None:
                raise ArmError(
                    404,
                    "ResourceNotFound",
                    f"The Resource 'Microsoft.Compute/virtualMachines/{parts[0]}' "
                    f"under resource group '{rg}' was not found.",
                )
            action = parts[1].lower() if len(parts) > 1 else ""
            if action == "" and method == "GET":
                return 200, arm._vm_json(vm, expand=expand), {}
            if action == "instanceview" and method == "GET":
                return 200, arm._instance_view(vm), {}
            if action == "vmsizes" and method == "GET":
                if vm.power_state == "running" and vm.available_sizes is not None:
                    sizes = vm.available_sizes
                else:
                    sizes = arm._region_sizes()
                return 200, {"value": [arm._size_json(name) for name in sizes]}, {}
            if action == "simulateeviction" and method == "POST":
                arm._evict(vm)
                return 204, None, {}
            if action == "" and method == "PATCH":
                return self._patch_vm(vm, body or {}, fault)
            if method == "POST" and action in ("deallocate", "start", "poweroff", "restart"):
                op_id = self._lro(fault, lambda: self._power(vm, action), lambda: None)
                return 202, None, arm._operation_headers(op_id)
            raise ArmError(404, "NotFound", f"no route for {method} {path}")

        def _power(self, vm: FakeVm, action: str) -> None:
            if action == "deallocate":
                vm.power_state = "deallocated"
            elif action == "poweroff":
                vm.power_state = "stopped"
            elif action == "start":
                if vm.priority == "Spot":
                    key = (vm.location, vm.size)
                    available = arm.spot_available.get(key)
                    if available is not None:
                        running = sum(
                            1
                            for other in arm.vms.values()
                            if other.priority == "Spot"
                            and other.power_state == "running"
                            and (other.location, other.size) == key
                        )
                        if running >= available:
                            raise ArmError(200, "AllocationFailed", f"no Spot capacity for {vm.size}")
                vm.power_state = "running"
                vm.evicted = False
            elif action == "restart":
                vm.power_state = "running"

        def _patch_vm(self, vm: FakeVm, body: Json, fault: Fault | None) -> tuple[int, Json | None, dict[str, str]]:
            new_size = (body.get("properties", {}).get("hardwareProfile") or {}).get("vmSize")
            if new_size is not None and new_size not in arm.skus:
                raise ArmError(
                    409,
                    "SkuNotAvailable",
                    f"The requested size {new_size} is not available in location '{vm.location}'.",
                )
            if (
                new_size is not None
                and new_size != vm.size
                and vm.power_state == "running"
                and vm.available_sizes is not None
                and new_size not in vm.available_sizes
            ):
                raise ArmError(
                    409,
                    "OperationNotAllowed",
                    f"Unable to resize the VM '{vm.name}' because the requested size {new_size} is not available in "
                    f"the current hardware cluster. Deallocate the VM and retry.",
                )

            def apply() -> None:
                if new_size is not None:
                    vm.size = new_size
                if "tags" in body:
                    vm.tags = dict(body["tags"] or {})

            op_id = self._lro(fault, apply, lambda: arm._vm_json(vm))
            response = arm._vm_json(vm)
            response["properties"]["provisioningState"] = "Updating"
            return 200, response, arm._operation_headers(op_id)

        def _scale_sets(
            self,
            method: str,
            rg: str | None,
            parts: list[str],
            path: str,
            query: Mapping[str, list[str]],
            body: Json | None,
            fault: Fault | None,
            expand: bool,
        ) -> tuple[int, Json | None, dict[str, str]]:
            if not parts or parts == [""]:
                sets = [s for s in arm.scale_sets.values() if rg is None or s.resource_group.lower() == rg.lower()]
                sets.sort(key=lambda s: (s.resource_group, s.name))
                return 200, self._paged([arm._scale_set_json(s) for s in sets], path, query), {}
            if rg is None:
                raise ArmError(404, "NotFound", f"no route for {path}")
            scale_set = arm.scale_sets.get((rg.lower(), parts[0].lower()))
            if scale_set is None:
                raise ArmError(404, "ResourceNotFound", f"scale set {parts[0]} not found in {rg}")
            rest = [p.lower() for p in parts[1:]]
            if rest == [] and method == "GET":
                return 200, arm._scale_set_json(scale_set), {}
            if rest == [] and method == "PATCH":
                return self._patch_scale_set(scale_set, body or {}, fault)
            if rest == ["delete"] and method == "POST":
                ids = [str(i) for i in (body or {}).get("instanceIds", [])]
                op_id = self._lro(fault, lambda: self._delete_instances(scale_set, ids), lambda: None)
                return 202, None, arm._operation_headers(op_id)
            if rest == ["virtualmachines"] and method == "GET":
                instances = sorted(arm.scale_set_instances(rg, scale_set.name), key=lambda vm: vm.name)
                items = [arm._scale_set_vm_json(scale_set, vm, expand=expand) for vm in instances]
                return 200, self._paged(items, path, query), {}
            if len(rest) >= 2 and rest[0] == "virtualmachines":
                vm = self._instance(scale_set, parts[2])
                if len(rest) == 2 and method == "GET":
                    return 200, arm._scale_set_vm_json(scale_set, vm, expand=expand), {}
                if rest[2:] == ["instanceview"] and method == "GET":
                    return 200, {"statuses": arm._instance_view(vm)["statuses"]}, {}
                if rest[2:] == ["simulateeviction"] and method == "POST":
                    arm._evict(vm)
                    return 204, None, {}
                if rest[2:] in (["start"], ["deallocate"]) and method == "POST":
                    op_id = self._lro(fault, lambda: self._power(vm, rest[2]), lambda: None)
                    return 202, None, arm._operation_headers(op_id)
            raise ArmError(404, "NotFound", f"no route for {method} {path}")

        def _instance(self, scale_set: FakeScaleSet, instance_id: str) -> FakeVm:
            for vm in arm.scale_set_instances(scale_set.resource_group, scale_set.name):
                if instance_id in (vm.name, vm.instance_id):
                    return vm
            raise ArmError(404, "NotFound", f"instance {instance_id} not found in scale set {scale_set.name}")

        def _delete_instances(self, scale_set: FakeScaleSet, ids: list[str]) -> None:
            targets = [self._instance(scale_set, instance_id) for instance_id in ids]
            for vm in targets:
                del arm.vms[(vm.resource_group.lower(), vm.name.lower())]

        def _patch_scale_set(
            self, scale_set: FakeScaleSet, body: Json, fault: Fault | None
        ) -> tuple[int, Json | None, dict[str, str]]:
            def apply() -> None:
                mix = (body.get("properties") or {}).get("priorityMixPolicy")
                saved = (scale_set.base_regular, scale_set.regular_percentage_above_base)
                if mix is not None:
                    scale_set.base_regular = int(mix.get("baseRegularPriorityCount", scale_set.base_regular))
                    scale_set.regular_percentage_above_base = int(
                        mix.get("regularPriorityPercentageAboveBase", scale_set.regular_percentage_above_base)
                    )
                capacity = (body.get("sku") or {}).get("capacity")
                if capacity is not None:
                    try:
                        arm._scale_out(scale_set, int(capacity))
                    except ArmError:
                        scale_set.base_regular, scale_set.regular_percentage_above_base = saved
                        raise
                if "tags" in body:
                    scale_set.tags = dict(body["tags"] or {})

            op_id = self._lro(fault, apply, lambda: arm._scale_set_json(scale_set))
            response = arm._scale_set_json(scale_set)
            response["properties"]["provisioningState"] = "Updating"
            return 200, response, arm._operation_headers(op_id)

    return Handler


class _suppress_os_error:
    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> bool:
        return exc_type is not None and issubclass(exc_type, OSError)


def client_kwargs(arm: FakeArm) -> dict[str, Any]:
    """Keyword arguments that point ``ComputeGateway`` (or ``ComputeManagementClient``) at the fake."""
    return {"base_url": arm.url, "connection_verify": str(arm.cert_path), "polling_interval": 0}


class ManualClock:
    """A clock for the acting side's ``clock`` argument: ``sleep`` advances time instead of waiting.

    Shared by threads: every sleep moves the one clock forward (and is recorded in ``sleeps``)."""

    def __init__(self, start: dt.datetime) -> None:
        self._now = start
        self._lock = threading.Lock()
        self.sleeps: list[float] = []

    def now(self) -> dt.datetime:
        with self._lock:
            return self._now

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.sleeps.append(seconds)
            self._now += dt.timedelta(seconds=seconds)

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._now += dt.timedelta(seconds=seconds)
