"""A run killed in the middle of a change: the next run brings the VM back (rolled back or resumed).

The apply runs in a real subprocess with the real code path; the fake ARM kills that process (SIGKILL) when the
chosen request arrives, before acting on it, exactly like a CronJob pod dying mid-change.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from rightsizer import audit as kinds
from rightsizer.act.apply import Outcome, apply_recommendations
from rightsizer.act.recover import recover_changes
from rightsizer.act.settings import ActSettings
from rightsizer.audit import AuditLog
from rightsizer.azure import ComputeGateway, VmRef
from rightsizer.domain import Action, Decision, Recommendation
from rightsizer.settings import Settings
from rightsizer.tags import CHANGE_TAG, ChangeTag, Phase
from tests.fakes.arm import FakeArm, FakeCredential, Fault, ManualClock, client_kwargs

SUB = "00000000-0000-0000-0000-000000000001"
REPO = Path(__file__).resolve().parents[2]
NOW = dt.datetime(2026, 11, 28, 2, 30, tzinfo=dt.UTC)

DRIVER = """
import json, sys
from rightsizer.act.apply import apply_recommendations
from rightsizer.act.settings import ActSettings
from rightsizer.audit import AuditLog
from rightsizer.azure import ComputeGateway, VmRef
from rightsizer.domain import Action, Decision, Recommendation
from rightsizer.settings import Settings
from tests.fakes.arm import FakeCredential

cfg = json.loads(sys.argv[1])
compute = ComputeGateway(FakeCredential(), base_url=cfg["url"], connection_verify=cfg["cert"], polling_interval=0)
vm = compute.get_vm(VmRef.parse(cfg["vm_id"]))
rec = Recommendation(vm, Action.RESIZE, Decision.AUTO, "p95 cpu low", target_size=cfg["target"],
                     monthly_savings_usd=75.0, confidence=0.9)
act = ActSettings(health_signals=(), validation_window_s=0)
apply_recommendations([rec], compute=compute, settings=Settings(dry_run=False, act=act), audit=AuditLog(cfg["audit"]))
print("finished")
"""


def run_killed_apply(arm: FakeArm, audit_path: Path, vm: str, target: str, fault: Fault) -> None:
    """Run apply in a subprocess; ``fault`` (its ``kill`` is set here) kills it at the chosen request."""
    holder: list[subprocess.Popen[str]] = []
    fault.kill = lambda: os.kill(holder[0].pid, signal.SIGKILL)
    arm.add_fault(fault)
    cfg = {
        "url": arm.url,
        "cert": str(arm.cert_path),
        "vm_id": VmRef(SUB, "rg1", vm).arm_id,
        "target": target,
        "audit": str(audit_path),
    }
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen(
        [sys.executable, "-c", DRIVER, json.dumps(cfg)],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    holder.append(process)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == -signal.SIGKILL, f"the driver was not killed: {stdout}\n{stderr}"
    assert fault.hits >= 1


def gateway(arm: FakeArm) -> ComputeGateway:
    return ComputeGateway(FakeCredential(), **client_kwargs(arm), sleep=lambda s: None)


def test_killed_between_deallocate_and_start_is_rolled_back_by_the_next_run(fake_arm: FakeArm, tmp_path: Path) -> None:
    fake_arm.add_vm("rg1", "vm", "Standard_D4s_v5", available_sizes=["Standard_D4s_v5"])
    audit_path = tmp_path / "audit.jsonl"
    run_killed_apply(
        fake_arm, audit_path, "vm", "Standard_E2s_v5", Fault(path="/virtualMachines/vm/start$", method="POST")
    )
    # The crash left the VM deallocated at the new size, mid-change.
    fake = fake_arm.vm("rg1", "vm")
    assert (fake.size, fake.power_state) == ("Standard_E2s_v5", "deallocated")
    assert ChangeTag.parse(fake.tags[CHANGE_TAG]).phase is Phase.STARTING

    compute = gateway(fake_arm)
    audit = AuditLog(audit_path)
    results = recover_changes(
        compute.list_vms(SUB, ["rg1"]), compute=compute, act=ActSettings(), audit=audit, clock=ManualClock(NOW)
    )
    assert [(r.vm_name, r.outcome) for r in results] == [("vm", Outcome.RECOVERED)]
    fake = fake_arm.vm("rg1", "vm")
    assert (fake.size, fake.power_state) == ("Standard_D4s_v5", "running")
    assert ChangeTag.parse(fake.tags[CHANGE_TAG]).phase is Phase.ROLLED_BACK
    recovery = next(r for r in audit.records() if r["kind"] == kinds.RECOVERY)
    assert (recovery["found_phase"], recovery["found_power_state"], recovery["action"]) == (
        "starting",
        "deallocated",
        "rolled-back",
    )
    assert audit.verify().ok  # the killed process's records and ours form one chain
    # A second recovery pass finds nothing left to do.
    assert recover_changes(compute.list_vms(SUB, ["rg1"]), compute=compute, act=ActSettings(), audit=audit) == []


def test_resume_mode_finishes_the_change_instead(fake_arm: FakeArm, tmp_path: Path) -> None:
    fake_arm.add_vm("rg1", "vm", "Standard_D4s_v5", available_sizes=["Standard_D4s_v5"])
    audit_path = tmp_path / "audit.jsonl"
    run_killed_apply(
        fake_arm, audit_path, "vm", "Standard_E2s_v5", Fault(path="/virtualMachines/vm/start$", method="POST")
    )
    compute = gateway(fake_arm)
    audit = AuditLog(audit_path)
    act = ActSettings(recover_mode="resume", health_signals=(), validation_window_s=60, validation_interval_s=30)
    [result] = recover_changes(
        compute.list_vms(SUB, ["rg1"]), compute=compute, act=act, audit=audit, clock=ManualClock(NOW)
    )
    assert result.outcome is Outcome.RECOVERED and "resumed" in result.reason
    fake = fake_arm.vm("rg1", "vm")
    assert (fake.size, fake.power_state) == ("Standard_E2s_v5", "running")
    assert ChangeTag.parse(fake.tags[CHANGE_TAG]).phase is Phase.DONE
    done = [r for r in audit.records() if r["kind"] == kinds.CHANGE_DONE]
    assert len(done) == 1 and done[0]["monthly_savings_usd"] == 75.0


def test_the_next_apply_run_recovers_before_anything_else(fake_arm: FakeArm, tmp_path: Path) -> None:
    fake_arm.add_vm("rg1", "vm", "Standard_D4s_v5", available_sizes=["Standard_D4s_v5"])
    audit_path = tmp_path / "audit.jsonl"
    # Killed when the resize itself is sent: the VM is deallocated at its old size.
    run_killed_apply(
        fake_arm,
        audit_path,
        "vm",
        "Standard_E2s_v5",
        Fault(path="/virtualMachines/vm$", method="PATCH", body_contains="vmSize"),
    )
    fake = fake_arm.vm("rg1", "vm")
    assert (fake.size, fake.power_state) == ("Standard_D4s_v5", "deallocated")

    compute = gateway(fake_arm)
    vm = compute.get_vm(VmRef(SUB, "rg1", "vm"))
    rec = Recommendation(vm, Action.RESIZE, Decision.AUTO, "again", target_size="Standard_E2s_v5")
    act = ActSettings(health_signals=(), validation_window_s=0)
    [result] = apply_recommendations(
        [rec],
        compute=compute,
        settings=Settings(dry_run=False, act=act),
        audit=AuditLog(audit_path),
        clock=ManualClock(NOW),
    )
    assert result.outcome is Outcome.SKIPPED and "unfinished change" in result.reason
    fake = fake_arm.vm("rg1", "vm")
    assert (fake.size, fake.power_state) == ("Standard_D4s_v5", "running")


def test_killed_before_anything_changed_is_closed_without_a_resize(fake_arm: FakeArm, tmp_path: Path) -> None:
    fake_arm.add_vm("rg1", "vm", "Standard_D4s_v5", available_sizes=["Standard_D4s_v5"])
    audit_path = tmp_path / "audit.jsonl"
    run_killed_apply(
        fake_arm, audit_path, "vm", "Standard_E2s_v5", Fault(path="/virtualMachines/vm/vmSizes$", method="GET")
    )
    assert ChangeTag.parse(fake_arm.vm("rg1", "vm").tags[CHANGE_TAG]).phase is Phase.RECORDED
    compute = gateway(fake_arm)
    act = ActSettings(recover_mode="resume")
    [result] = recover_changes(compute.list_vms(SUB, ["rg1"]), compute=compute, act=act, audit=AuditLog(audit_path))
    assert result.outcome is Outcome.RECOVERED
    assert fake_arm.requests_matching("PATCH", "/vm$")[-1].body == {"tags": fake_arm.vm("rg1", "vm").tags}
    assert fake_arm.vm("rg1", "vm").size == "Standard_D4s_v5"
    assert fake_arm.requests_matching("POST", "/vm/deallocate$") == []


@pytest.mark.parametrize("tag", ["garbage", "c1|exploding|Standard_D2s_v5|2026-11-28T02:30:00Z"])
def test_an_unreadable_change_tag_is_refused_with_the_accepted_form(tag: str) -> None:
    with pytest.raises(ValueError, match=r"finops\.ai/change=.*expected"):
        ChangeTag.parse(tag)
