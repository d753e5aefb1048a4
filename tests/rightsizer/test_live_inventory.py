"""One VM with odd JSON in the Azure listing is that VM's skipped row (gate ``inventory``), as for an inventory
file; every other VM is still listed and sized. Through the real azure-mgmt-compute client against the fake ARM
server over HTTPS (tests/fakes/arm.py), end to end through ``rightsizer recommend``."""

from __future__ import annotations

import argparse
import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from rightsizer.act.cli import cmd_recover, register
from rightsizer.azure import (
    ComputeGateway,
    PermanentAzureError,
    RetrySettings,
    ScaleSetInfo,
    TransientAzureError,
    VmRef,
)
from rightsizer.domain import CHANGE_TAG, PREVIOUS_SIZE_TAG, PowerState
from tests.fakes.arm import FakeArm, FakeCredential, Fault, client_kwargs
from tests.support.arm_recommend import recommend_over_arm

GOOD = {"bb-30": "Standard_D4s_v5", "bb-213": "Standard_D8s_v5"}
"""VMs of the example fleet, whose real metrics are in the example metrics file."""
Edit = Callable[[dict[str, Any]], None]


def gateway(arm: FakeArm) -> ComputeGateway:
    return ComputeGateway(
        FakeCredential(), retry=RetrySettings(max_attempts=2, backoff_base_s=0.001), **client_kwargs(arm)
    )


def recommend_json(arm: FakeArm, tmp_path: Path) -> dict[str, Any]:
    """``rightsizer recommend --config`` over the fake's subscription with the example fleet's metrics."""
    return recommend_over_arm(arm, tmp_path, GOOD, lambda: gateway(arm))


def pop(*path: str) -> Edit:
    def edit(body: dict[str, Any]) -> None:
        node = body
        for key in path[:-1]:
            node = node[key]
        node.pop(path[-1])

    return edit


def put(value: Any, *path: str) -> Edit:
    def edit(body: dict[str, Any]) -> None:
        node = body
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value

    return edit


ODD: dict[str, tuple[Edit, str]] = {
    # VM name: (what is wrong with its JSON, what its row's reason says)
    "no-hardware": (
        pop("properties", "hardwareProfile"),
        "'properties.hardwareProfile.vmSize' is required, an ARM size name (e.g. Standard_D4s_v5), got None",
    ),
    "size-number": (
        put(42, "properties", "hardwareProfile", "vmSize"),
        "'properties.hardwareProfile.vmSize' is required, an ARM size name (e.g. Standard_D4s_v5), got 42",
    ),
    "no-location": (pop("location"), "'location' is required, a region name (letters and digits, e.g. westeurope)"),
    "bad-id": (
        put("/subscriptions/x/" + "y" * 500, "id"),
        "'id' must be a VM resource id (/subscriptions/<sub>/resourceGroups/<rg>/providers/Microsoft.Compute/"
        "virtualMachines/<name>), got '/subscriptions/x/yyyyyyyyyyyyyyyyyyy...",
    ),
    "odd-priority": (put("Ultra", "properties", "priority"), "'properties.priority' must be one of regular, spot, low"),
    "odd-power": (
        put([{"code": "PowerState/hibernated"}], "properties", "instanceView", "statuses"),
        "'properties.instanceView.statuses' power state must be one of running, deallocated, stopped, starting",
    ),
    "bad-view": (put("garbage", "properties", "instanceView"), "'properties.instanceView' must be an object"),
    "tags-list": (put(["a"], "tags"), "'tags' must be an object of string values, got ['a']"),
    "zones-text": (put("1", "zones"), "'zones' must be a list of zone names (e.g. ['1']), got '1'"),
}


def test_an_odd_vm_in_the_azure_listing_is_its_own_skipped_row(fake_arm: FakeArm, tmp_path: Path) -> None:
    for name, size in GOOD.items():
        fake_arm.add_vm("rg-example", name, size)
    for name, (edit, _) in ODD.items():
        fake_arm.add_vm("rg-example", name, "Standard_D2s_v5", json_edit=edit)

    recs = {r["vm"]: r for r in recommend_json(fake_arm, tmp_path)["recommendations"]}

    assert set(recs) == {*GOOD, *ODD}
    for name, size in GOOD.items():  # listed and sized as if the odd VMs were not there
        assert recs[name]["current_size"] == size and recs[name]["gate"] != "inventory" and recs[name]["stats"]
    for name, (_, reason) in ODD.items():
        row = recs[name]
        assert (row["decision"], row["gate"]) == ("skip", "inventory"), name
        assert row["reason"].startswith(f"Azure subscription {fake_arm.subscription}: VM #"), row["reason"]
        assert f"({name}): {reason}" in row["reason"], row["reason"]
    # Values are quoted to 40 characters: the 517-character id is not repeated.
    assert "'/subscriptions/x/" + "y" * 19 + "..." in recs["bad-id"]["reason"]
    assert len(recs["bad-id"]["reason"]) < 300


def test_an_id_listed_twice_makes_both_rows_skipped_as_for_a_file(fake_arm: FakeArm, tmp_path: Path) -> None:
    for name, size in GOOD.items():
        fake_arm.add_vm("rg-example", name, size)
    twin = fake_arm.add_vm("rg-example", "twin-a", "Standard_D2s_v5")
    fake_arm.add_vm("rg-example", "twin-b", "Standard_D4s_v5", json_edit=put(twin.arm_id, "id"))

    recs = recommend_json(fake_arm, tmp_path)["recommendations"]

    rows = {r["vm"]: r for r in recs}
    a, b = rows["twin-a"], rows["twin-b"]
    assert (a["decision"], a["gate"]) == (b["decision"], b["gate"]) == ("skip", "inventory")
    assert a["reason"] == b["reason"]
    assert f"duplicate id '/subscriptions/{fake_arm.subscription[:20]}" in a["reason"]
    assert a["reason"].endswith("listed as VM #2 and VM #3; neither is sized")
    assert a["id"] == twin.arm_id and b["id"] == f"{twin.arm_id}#inventory-entry-3"
    assert len({r["id"] for r in recs}) == len(recs)
    for name in GOOD:
        assert rows[name]["gate"] != "inventory" and rows[name]["stats"]


def test_an_odd_uniform_scale_set_instance_is_skipped_and_its_siblings_listed(fake_arm: FakeArm) -> None:
    fake_arm.add_vm("rg1", "plain", "Standard_D2s_v5")
    fake_arm.add_scale_set("rg1", "uni", "Standard_F2s_v2", 3, orchestration_mode="Uniform", priority="Regular")
    odd, *siblings = fake_arm.scale_set_instances("rg1", "uni")
    odd.json_edit = pop("location")

    vms = {vm.name: vm for vm in gateway(fake_arm).list_vms(fake_arm.subscription, ["rg1"])}

    assert vms[odd.name].scale_set == "uni"
    assert f"({odd.name}): 'location' is required" in (vms[odd.name].problem or "")
    assert vms[odd.name].power_state is PowerState.UNKNOWN  # a placeholder is never taken for a running VM
    for vm in (vms["plain"], *(vms[s.name] for s in siblings)):
        assert vm.problem is None and vm.region == "westeurope"
    # Spot decisions count every instance, so that scale set's pass refuses instead of guessing.
    compute = gateway(fake_arm)
    [uni] = compute.list_scale_sets(fake_arm.subscription, ["rg1"])
    assert isinstance(uni, ScaleSetInfo)
    with pytest.raises(PermanentAzureError, match="'location' is required"):
        compute.list_scale_set_instances(uni)


def test_an_empty_vm_or_an_unreadable_scale_set_is_a_row_too(fake_arm: FakeArm) -> None:
    fake_arm.add_vm("rg1", "fine", "Standard_D2s_v5")
    fake_arm.add_vm("rg1", "empty", "Standard_D2s_v5", json_edit=lambda body: body.clear())
    scale_set = fake_arm.add_scale_set("rg1", "uni", "Standard_F2s_v2", 1, orchestration_mode="Uniform")
    scale_set.orchestration_mode = "Sideways"

    vms = gateway(fake_arm).list_vms(fake_arm.subscription, ["rg1"])

    by_problem = sorted((vm.name, vm.problem or "") for vm in vms)
    assert [name for name, problem in by_problem if not problem] == ["fine"]
    problems = " | ".join(problem for _, problem in by_problem)
    assert "VM #0: 'id' must be a VM resource id" in problems
    assert "scale set #0 (uni): 'properties.orchestrationMode' must be one of uniform, flexible, got 'Sideways'" in (
        problems
    )


def test_reading_one_odd_vm_by_name_is_a_permanent_error_naming_the_field(fake_arm: FakeArm) -> None:
    fake_arm.add_vm("rg1", "odd", "Standard_D2s_v5", json_edit=put("Ultra", "properties", "priority"))
    with pytest.raises(PermanentAzureError, match=r"\(odd\): 'properties.priority' must be one of regular, spot, low"):
        gateway(fake_arm).get_vm(VmRef(fake_arm.subscription, "rg1", "odd"))


def test_a_failed_page_still_fails_the_whole_listing(fake_arm: FakeArm) -> None:
    for i in range(5):
        fake_arm.add_vm("rg1", f"vm{i}", "Standard_D2s_v5")
    # The second page (the fake serves two VMs a page) fails every time: no partial inventory.
    fake_arm.add_fault(Fault(path="/virtualMachines$", method="GET", status=500, skip=1, times=None))
    with pytest.raises(TransientAzureError):
        gateway(fake_arm).list_vms(fake_arm.subscription, ["rg1"])


def test_a_resource_group_named_twice_is_listed_once(fake_arm: FakeArm) -> None:
    fake_arm.add_vm("rg1", "vm", "Standard_D2s_v5")
    vms = gateway(fake_arm).list_vms(fake_arm.subscription, ["rg1", "RG1"])
    assert [(vm.name, vm.problem) for vm in vms] == [("vm", None)]


def test_recover_names_a_vm_it_cannot_read_and_still_recovers_the_others(fake_arm: FakeArm, tmp_path: Path) -> None:
    change = {
        PREVIOUS_SIZE_TAG: "Standard_D4s_v5|2026-11-28T02:00:00Z|c-1",
        CHANGE_TAG: "c-1|starting|Standard_E2s_v5|2026-11-28T02:01:00Z",
    }
    fake_arm.add_vm("rg1", "vm", "Standard_E2s_v5", power_state="deallocated", tags=change)
    fake_arm.add_vm("rg1", "odd", "Standard_E2s_v5", tags=change, json_edit=pop("location"))
    cfg = tmp_path / "rightsizer.yaml"
    cfg.write_text(f"azure:\n  subscriptions: ['{fake_arm.subscription}']\n  resource_groups: [rg1]\n")
    parser = argparse.ArgumentParser(prog="rightsizer")
    register(parser.add_subparsers(dest="command"))
    out = io.StringIO()
    assert cmd_recover(parser.parse_args(["recover", "--config", str(cfg)]), compute=gateway(fake_arm), out=out) == 0
    lines = out.getvalue().splitlines()
    assert any(line.startswith("odd: not checked: ") and "'location' is required" in line for line in lines)
    assert "vm: unfinished change c-1|starting" in out.getvalue() and "1 unfinished change(s)" in out.getvalue()
