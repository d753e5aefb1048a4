"""The gateway through the real azure-mgmt-compute client against the fake ARM (HTTPS on loopback)."""

from __future__ import annotations

import email.utils

import pytest

from rightsizer.azure import (
    CapacityError,
    ComputeGateway,
    NotFoundError,
    PermanentAzureError,
    RetrySettings,
    ScaleSetInfo,
    ScaleSetRef,
    TransientAzureError,
    VmRef,
)
from rightsizer.domain import PowerState, Priority
from rightsizer.settings import SettingsError, settings_from_mapping
from tests.fakes.arm import FakeArm, FakeCredential, Fault, client_kwargs

SUB = "00000000-0000-0000-0000-000000000001"


def gateway(arm: FakeArm, sleeps: list[float], **retry: float) -> ComputeGateway:
    return ComputeGateway(
        FakeCredential(),
        **client_kwargs(arm),
        sleep=sleeps.append,
        retry=RetrySettings(**retry),  # type: ignore[arg-type]
    )


def ref(name: str, rg: str = "rg1") -> VmRef:
    return VmRef(SUB, rg, name)


def test_list_vms_follows_paging_and_reads_every_field(fake_arm: FakeArm) -> None:
    for i in range(5):
        fake_arm.add_vm("rg1", f"vm{i}", "Standard_D4s_v5", zone="2", tags={"team": "a"}, data_disks=2, nics=2)
    fake_arm.add_vm("rg1", "win", "Standard_E4s_v5", os_type="Windows", availability_set="as1")
    fake_arm.add_vm("rg1", "spotty", "Standard_D2s_v5", priority="Spot", power_state="deallocated")
    fake_arm.add_vm("rg2", "elsewhere", "Standard_D2s_v5")
    fake_arm.add_scale_set("rg1", "flex", "Standard_D2s_v5", 3)
    fake_arm.add_scale_set("rg1", "uni", "Standard_F2s_v2", 2, orchestration_mode="Uniform", priority="Regular")

    vms = gateway(fake_arm, []).list_vms(SUB, ["rg1"])

    by_name = {vm.name: vm for vm in vms}
    assert len(vms) == 5 + 2 + 3 + 2
    assert "elsewhere" not in by_name
    vm0 = by_name["vm0"]
    assert (vm0.size, vm0.region, vm0.zone, vm0.os, vm0.priority) == (
        "Standard_D4s_v5",
        "westeurope",
        "2",
        "linux",
        Priority.REGULAR,
    )
    assert (vm0.power_state, vm0.data_disks, vm0.nics, dict(vm0.tags)) == (PowerState.RUNNING, 2, 2, {"team": "a"})
    assert vm0.id == f"/subscriptions/{SUB}/resourceGroups/rg1/providers/Microsoft.Compute/virtualMachines/vm0"
    assert by_name["win"].os == "windows" and by_name["win"].group == "as1"
    assert by_name["spotty"].priority is Priority.SPOT
    assert by_name["spotty"].power_state is PowerState.DEALLOCATED
    flex = [vm for vm in vms if vm.scale_set == "flex"]
    assert len(flex) == 3 and {vm.priority for vm in flex} == {Priority.REGULAR, Priority.SPOT}
    uniform = [vm for vm in vms if vm.scale_set == "uni"]
    assert len(uniform) == 2 and all(vm.size == "Standard_F2s_v2" and vm.group == "uni" for vm in uniform)
    assert all(vm.power_state is PowerState.RUNNING for vm in uniform)
    # 10 VMs at 2 a page: the client followed nextLink (absolute URLs back to the fake) 4 times.
    assert (
        len(fake_arm.requests_matching("GET", r"/resourceGroups/rg1/providers/Microsoft.Compute/virtualMachines$")) == 5
    )


def test_list_all_without_resource_groups_covers_the_subscription(fake_arm: FakeArm) -> None:
    fake_arm.add_vm("rg1", "a", "Standard_D2s_v5")
    fake_arm.add_vm("rg2", "b", "Standard_D2s_v5")
    fake_arm.add_vm("rg3", "c", "Standard_D2s_v5")
    names = sorted(vm.name for vm in gateway(fake_arm, []).list_vms(SUB))
    assert names == ["a", "b", "c"]


def test_power_operations_resize_and_available_sizes(fake_arm: FakeArm) -> None:
    fake_arm.add_vm("rg1", "vm", "Standard_D4s_v5", available_sizes=["Standard_D4s_v5", "Standard_D2s_v5"])
    compute = gateway(fake_arm, [])
    assert compute.list_available_sizes(ref("vm")) == ["Standard_D4s_v5", "Standard_D2s_v5"]
    compute.resize(ref("vm"), "Standard_D2s_v5")
    assert compute.get_vm(ref("vm")).size == "Standard_D2s_v5"
    compute.deallocate(ref("vm"))
    assert compute.get_vm(ref("vm")).power_state is PowerState.DEALLOCATED
    # Deallocated, the VM may take any size of the region.
    assert "Standard_E4s_v5" in compute.list_available_sizes(ref("vm"))
    compute.start(ref("vm"))
    assert compute.get_vm(ref("vm")).power_state is PowerState.RUNNING


def test_resize_to_a_size_outside_the_cluster_while_running_is_a_permanent_error(fake_arm: FakeArm) -> None:
    fake_arm.add_vm("rg1", "vm", "Standard_D4s_v5", available_sizes=["Standard_D4s_v5"])
    sleeps: list[float] = []
    with pytest.raises(PermanentAzureError) as raised:
        gateway(fake_arm, sleeps).resize(ref("vm"), "Standard_E2s_v5")
    assert raised.value.status == 409 and raised.value.code == "OperationNotAllowed"
    assert sleeps == []
    assert fake_arm.vm("rg1", "vm").size == "Standard_D4s_v5"


def test_429_is_retried_after_the_retry_after_the_server_asked_for(fake_arm: FakeArm) -> None:
    fake_arm.add_vm("rg1", "vm", "Standard_D4s_v5")
    fake_arm.add_fault(Fault(path="/virtualMachines/vm$", method="GET", status=429, retry_after=7, times=2))
    sleeps: list[float] = []
    vm = gateway(fake_arm, sleeps).get_vm(ref("vm"))
    assert vm.name == "vm"
    assert sleeps == [7.0, 7.0]
    assert len(fake_arm.requests_matching("GET", "/virtualMachines/vm$")) == 3


def test_429_with_an_http_date_retry_after_waits_until_that_date(fake_arm: FakeArm) -> None:
    # RFC 9110 allows Retry-After as an HTTP-date; Azure front doors send it. Read as seconds it was dropped
    # (plain exponential backoff of 1 s instead of the 40 s asked for).
    now = 1_796_000_000.0
    fake_arm.add_vm("rg1", "vm", "Standard_D4s_v5")
    when = email.utils.formatdate(now + 40, usegmt=True)
    fake_arm.add_fault(Fault(path="/virtualMachines/vm$", method="GET", status=429, retry_after=when))
    sleeps: list[float] = []
    gw = ComputeGateway(FakeCredential(), **client_kwargs(fake_arm), sleep=sleeps.append, clock=lambda: now)
    assert gw.get_vm(ref("vm")).name == "vm"
    assert sleeps == [40.0]


def test_retry_after_is_bounded(fake_arm: FakeArm) -> None:
    fake_arm.add_vm("rg1", "vm", "Standard_D4s_v5")
    fake_arm.add_fault(Fault(path="/virtualMachines/vm$", method="GET", status=429, retry_after=3600))
    sleeps: list[float] = []
    gateway(fake_arm, sleeps, max_delay_s=20).get_vm(ref("vm"))
    assert sleeps == [20.0]


def test_500_is_retried_with_exponential_backoff_then_given_up(fake_arm: FakeArm) -> None:
    fake_arm.add_vm("rg1", "vm", "Standard_D4s_v5")
    fake_arm.add_fault(Fault(path="/virtualMachines/vm/start$", method="POST", status=500, times=None))
    sleeps: list[float] = []
    with pytest.raises(TransientAzureError) as raised:
        gateway(fake_arm, sleeps, max_attempts=4, backoff_base_s=0.5).start(ref("vm"))
    assert raised.value.status == 500
    assert sleeps == [0.5, 1.0, 2.0]
    assert len(fake_arm.requests_matching("POST", "/vm/start$")) == 4


def test_a_dropped_connection_is_transient_and_retried(fake_arm: FakeArm) -> None:
    fake_arm.add_vm("rg1", "vm", "Standard_D4s_v5")
    fake_arm.add_fault(Fault(path="/virtualMachines/vm$", method="GET", kill=lambda: None))
    sleeps: list[float] = []
    assert gateway(fake_arm, sleeps).get_vm(ref("vm")).name == "vm"
    assert sleeps == [1.0]


def test_409_is_permanent_and_not_retried(fake_arm: FakeArm) -> None:
    fake_arm.add_vm("rg1", "vm", "Standard_D4s_v5")
    fake_arm.add_fault(Fault(path="/vm/deallocate$", method="POST", status=409, code="Conflict", message="busy"))
    sleeps: list[float] = []
    with pytest.raises(PermanentAzureError) as raised:
        gateway(fake_arm, sleeps).deallocate(ref("vm"))
    assert (raised.value.status, raised.value.code, sleeps) == (409, "Conflict", [])


def test_failed_long_running_operations_are_classified_by_code(fake_arm: FakeArm) -> None:
    fake_arm.add_vm("rg1", "vm", "Standard_D4s_v5", power_state="deallocated")
    fake_arm.add_fault(Fault(path="/vm/start$", method="POST", lro_failure=True, code="AllocationFailed"))
    fake_arm.add_fault(Fault(path="/virtualMachines/vm$", method="PATCH", lro_failure=True, code="SkuNotAvailable"))
    sleeps: list[float] = []
    compute = gateway(fake_arm, sleeps)
    with pytest.raises(CapacityError) as start_error:
        compute.start(ref("vm"))
    assert start_error.value.code == "AllocationFailed"
    with pytest.raises(CapacityError) as resize_error:
        compute.resize(ref("vm"), "Standard_D2s_v5")
    assert resize_error.value.code == "SkuNotAvailable"
    assert sleeps == []
    assert fake_arm.vm("rg1", "vm").power_state == "deallocated"
    assert fake_arm.vm("rg1", "vm").size == "Standard_D4s_v5"


def test_an_internal_error_in_an_operation_is_retried(fake_arm: FakeArm) -> None:
    fake_arm.add_vm("rg1", "vm", "Standard_D4s_v5")
    fake_arm.add_fault(Fault(path="/vm/deallocate$", method="POST", lro_failure=True, code="InternalExecutionError"))
    sleeps: list[float] = []
    gateway(fake_arm, sleeps).deallocate(ref("vm"))
    assert sleeps == [1.0]
    assert fake_arm.vm("rg1", "vm").power_state == "deallocated"


def test_missing_vm_is_not_found(fake_arm: FakeArm) -> None:
    with pytest.raises(NotFoundError):
        gateway(fake_arm, []).get_vm(ref("nope"))


def test_set_tags_merges_and_removes(fake_arm: FakeArm) -> None:
    fake_arm.add_vm("rg1", "vm", "Standard_D4s_v5", tags={"keep": "1", "drop": "2"})
    tags = gateway(fake_arm, []).set_tags(ref("vm"), {"new": "3", "drop": None})
    assert tags == {"keep": "1", "new": "3"}
    assert fake_arm.vm("rg1", "vm").tags == {"keep": "1", "new": "3"}


def test_resource_skus_for_a_region_with_string_capabilities(fake_arm: FakeArm) -> None:
    skus = gateway(fake_arm, []).list_resource_skus(SUB, "northeurope")
    by_name = {sku.name: sku for sku in skus}
    assert by_name["Standard_D4s_v5"].capabilities["vCPUs"] == "4"
    assert by_name["Standard_D4s_v5"].capabilities["MemoryGB"] == "16"
    assert by_name["Standard_D4s_v5"].region == "northeurope"
    assert "'northeurope'" in fake_arm.requests_matching("GET", "/skus$")[0].query["$filter"][0]


def test_scale_set_read_update_and_instances(fake_arm: FakeArm) -> None:
    fake_arm.add_scale_set("rg1", "pool", "Standard_D2s_v5", 5, base_regular=1, regular_percentage_above_base=25)
    compute = gateway(fake_arm, [])
    [info] = compute.list_scale_sets(SUB, ["rg1"])
    assert isinstance(info, ScaleSetInfo)
    assert (info.capacity, info.priority, info.base_regular_count, info.regular_percentage_above_base) == (
        5,
        Priority.SPOT,
        1,
        25,
    )
    # 1 base + ceil(4 * 25 %) = 2 regular of 5
    instances = compute.list_scale_set_instances(info)
    assert sorted(vm.priority.value for vm in instances) == ["Regular", "Regular", "Spot", "Spot", "Spot"]
    compute.update_scale_set(info.ref, capacity=8, base_regular_count=1, regular_percentage_above_base=100)
    after = compute.get_scale_set(info.ref)
    assert after.capacity == 8 and after.regular_percentage_above_base == 100
    regular = [vm for vm in compute.list_scale_set_instances(after) if vm.priority is Priority.REGULAR]
    assert len(regular) == 5
    spot = next(vm for vm in instances if vm.priority is Priority.SPOT)
    compute.simulate_eviction(VmRef.of(spot))
    assert compute.get_vm(VmRef.of(spot)).power_state is PowerState.DEALLOCATED
    compute.delete_scale_set_instances(ScaleSetRef(SUB, "rg1", "pool"), [spot.name])
    assert compute.get_scale_set(info.ref).capacity == 7


def test_a_bad_resource_id_names_the_accepted_form() -> None:
    with pytest.raises(ValueError, match="virtualMachines/<name>"):
        VmRef.parse("vm-without-an-id")


def test_a_huge_bad_resource_id_is_quoted_by_a_short_prefix() -> None:
    for parse in (VmRef.parse, ScaleSetRef.parse):
        with pytest.raises(ValueError) as bad:
            parse("/subscriptions/" + "x" * 1_000_000)
        assert "'/subscriptions/xxx" in str(bad.value) and len(str(bad.value)) < 500


def test_an_oversize_listing_page_is_refused_as_permanent_and_not_retried(fake_arm: FakeArm) -> None:
    def pad(body: dict[str, object]) -> None:
        body["padding"] = "x" * 3_000_000  # one VM's JSON makes its page 3 MB

    fake_arm.add_vm("rg1", "fine", "Standard_D2s_v5")
    fake_arm.add_vm("rg1", "padded", "Standard_D2s_v5", json_edit=pad)
    sleeps: list[float] = []
    capped = ComputeGateway(
        FakeCredential(), **client_kwargs(fake_arm), sleep=sleeps.append, max_response_mb=1, retry=RetrySettings()
    )
    # (How far the body is read before the refusal is the session's: see test_prometheus_answer_cap.py. The fake
    # runs in this process, so its own copies of the page rule out measuring memory here.)
    with pytest.raises(PermanentAzureError) as refused:
        capped.list_vms(SUB, ["rg1"])
    assert refused.value.code == "ResponseTooLarge"
    assert "answer larger than 1 MiB (azure.max_response_mb)" in str(refused.value)
    assert sleeps == [] and len(fake_arm.requests_matching("GET", "/virtualMachines$")) == 1  # permanent: asked once
    # The default cap (64 MiB) reads the same page, and the padded VM is listed like the other.
    assert {vm.name for vm in gateway(fake_arm, []).list_vms(SUB, ["rg1"])} == {"fine", "padded"}


def test_the_arm_answer_cap_setting_is_checked() -> None:
    assert settings_from_mapping({}).azure.max_response_mb == 64
    assert settings_from_mapping({"azure": {"max_response_mb": 2}}).azure.max_response_mb == 2
    for bad in (0, -1, 4096):
        with pytest.raises(SettingsError, match=r"azure\.max_response_mb"):
            settings_from_mapping({"azure": {"max_response_mb": bad}})
