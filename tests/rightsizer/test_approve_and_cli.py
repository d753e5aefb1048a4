"""The act side's commands: approve (Azure tag / offline inventory), audit verify, report, spot, recover."""

from __future__ import annotations

import argparse
import datetime as dt
import io
import json
from pathlib import Path

import pytest

from rightsizer.act.cli import cmd_approve, cmd_recover, cmd_spot, register
from rightsizer.act.settings import CHANGE_TAG, RECOMMENDATION_TAG
from rightsizer.audit import AuditLog
from rightsizer.azure import ComputeGateway, VmRef
from rightsizer.cli import build_parser
from rightsizer.decide.approvals import approval_status
from rightsizer.domain import APPROVAL_TAG, PREVIOUS_SIZE_TAG, ApprovalTier
from rightsizer.settings import Settings
from rightsizer.tags import ChangeTag, Phase
from tests.fakes.arm import FakeArm, FakeCredential, client_kwargs

SUB = "00000000-0000-0000-0000-000000000001"
NOW = "2026-11-28T02:30:00Z"


def main(argv: list[str]) -> int:
    """Like ``rightsizer.cli.main`` without configuring structlog globally (that would outlive the test)."""
    args = build_parser().parse_args(argv)
    return int(args.func(args))


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="rightsizer")
    register(parser.add_subparsers(dest="command"))
    return parser.parse_args(argv)


def config(tmp_path: Path) -> Path:
    path = tmp_path / "rightsizer.yaml"
    path.write_text(
        f"audit_log: {tmp_path / 'audit.jsonl'}\nazure:\n  subscriptions: ['{SUB}']\n  resource_groups: [rg1]\n",
        encoding="utf-8",
    )
    return path


def test_approve_writes_an_approval_the_decide_side_accepts(fake_arm: FakeArm, tmp_path: Path) -> None:
    fake_arm.add_vm(
        "rg1", "vm", "Standard_D8s_v5", tags={RECOMMENDATION_TAG: "Standard_D2s_v5|412.00|2026-11-27T02:00:00Z"}
    )
    compute = ComputeGateway(FakeCredential(), **client_kwargs(fake_arm))
    vm_id = VmRef(SUB, "rg1", "vm").arm_id
    args = parse(
        [
            "approve",
            vm_id,
            "--target",
            "Standard_D2s_v5",
            "--by",
            "Dana",
            "--tier",
            "finops-lead",
            "--config",
            str(config(tmp_path)),
            "--now",
            NOW,
        ]
    )
    out = io.StringIO()
    assert cmd_approve(args, compute=compute, out=out) == 0
    tag = fake_arm.vm("rg1", "vm").tags[APPROVAL_TAG]
    assert tag == "Standard_D2s_v5|finops-lead|Dana|2026-11-28T02:30:00Z"
    assert fake_arm.vm("rg1", "vm").tags[RECOMMENDATION_TAG].startswith("Standard_D2s_v5|")  # kept
    vm = compute.get_vm(VmRef(SUB, "rg1", "vm"))
    now = dt.datetime(2026, 11, 28, 3, tzinfo=dt.UTC).timestamp()
    status = approval_status(vm, "Standard_D2s_v5", ApprovalTier.FINOPS_LEAD, now, Settings())
    assert status.valid, status.reason
    assert not approval_status(vm, "Standard_D2s_v5", ApprovalTier.EXECUTIVE, now, Settings()).valid
    [record] = AuditLog(tmp_path / "audit.jsonl").records()
    assert (record["kind"], record["approver"], record["tier"]) == ("approval", "Dana", "finops-lead")


def test_approve_refuses_a_target_that_is_not_the_pending_recommendation(fake_arm: FakeArm, tmp_path: Path) -> None:
    fake_arm.add_vm(
        "rg1", "vm", "Standard_D8s_v5", tags={RECOMMENDATION_TAG: "Standard_D2s_v5|412.00|2026-11-27T02:00:00Z"}
    )
    fake_arm.add_vm("rg1", "bare", "Standard_D8s_v5")
    compute = ComputeGateway(FakeCredential(), **client_kwargs(fake_arm))
    cfg = str(config(tmp_path))

    def approve(vm: str) -> argparse.Namespace:
        target = ["--target", "Standard_D4s_v5", "--by", "Dana", "--tier", "executive"]
        return parse(["approve", VmRef(SUB, "rg1", vm).arm_id, *target, "--config", cfg])

    wrong = approve("vm")
    with pytest.raises(ValueError, match="pending recommendation is Standard_D2s_v5"):
        cmd_approve(wrong, compute=compute)
    none = approve("bare")
    with pytest.raises(ValueError, match="no pending recommendation"):
        cmd_approve(none, compute=compute)
    assert APPROVAL_TAG not in fake_arm.vm("rg1", "vm").tags


def test_approve_into_an_offline_inventory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    inventory = tmp_path / "vms.json"
    inventory.write_text(
        json.dumps(
            {
                "as_of": NOW,
                "vms": [
                    {
                        "id": "vm-1",
                        "name": "web-1",
                        "resource_group": "rg",
                        "size": "Standard_D8s_v5",
                        "region": "westeurope",
                    },
                    {
                        "id": "vm-2",
                        "name": "web-2",
                        "resource_group": "rg",
                        "size": "Standard_D8s_v5",
                        "region": "westeurope",
                        "tags": {"team": "a"},
                    },
                ],
            }
        ),
        encoding="utf-8",
    )
    code = main(
        [
            "approve",
            "web-2",
            "--target",
            "Standard_D2s_v5",
            "--by",
            "Eve",
            "--tier",
            "executive",
            "--inventory",
            str(inventory),
            "--audit-log",
            str(tmp_path / "a.jsonl"),
            "--now",
            NOW,
        ]
    )
    assert code == 0
    doc = json.loads(inventory.read_text(encoding="utf-8"))
    assert doc["as_of"] == NOW
    assert doc["vms"][1]["tags"] == {"team": "a", APPROVAL_TAG: "Standard_D2s_v5|executive|Eve|2026-11-28T02:30:00Z"}
    assert "tags" not in doc["vms"][0]
    assert (
        main(
            [
                "approve",
                "web-9",
                "--target",
                "X",
                "--by",
                "Eve",
                "--tier",
                "executive",
                "--inventory",
                str(inventory),
                "--audit-log",
                str(tmp_path / "a.jsonl"),
            ]
        )
        == 2
    )
    assert "0 VMs match 'web-9'" in capsys.readouterr().err


def test_audit_verify_and_report_through_the_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path)
    when = dt.datetime(2026, 11, 5, tzinfo=dt.UTC)
    log.append("change-recorded", ts=when, change_id="c1", monthly_savings_usd=99.5)
    log.append("change-done", ts=when, change_id="c1", monthly_savings_usd=99.5)
    log.append("decision", ts=when, decision="auto")
    assert main(["audit", "verify", "--audit-log", str(path)]) == 0
    assert "OK, 3 records" in capsys.readouterr().out
    assert main(["report", "--month", "2026-11", "--audit-log", str(path)]) == 0
    assert "$99.50" in capsys.readouterr().out
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    path.write_text(lines[0] + lines[2], encoding="utf-8")
    assert main(["audit", "verify", "--audit-log", str(path)]) == 4
    assert "FAILED at line 2" in capsys.readouterr().out
    assert main(["report", "--month", "11/2026", "--audit-log", str(path)]) == 2
    assert "YYYY-MM" in capsys.readouterr().err


def test_spot_command_reports_an_unreadable_scale_set_and_still_plans_the_others(
    fake_arm: FakeArm, tmp_path: Path
) -> None:
    fake_arm.add_scale_set("rg1", "pool", "Standard_D2s_v5", 4)
    odd = fake_arm.add_scale_set("rg1", "odd", "Standard_D2s_v5", 2)
    odd.orchestration_mode = "Sideways"
    compute = ComputeGateway(FakeCredential(), **client_kwargs(fake_arm))
    out = io.StringIO()
    assert cmd_spot(parse(["spot", "--config", str(config(tmp_path)), "--now", NOW]), compute=compute, out=out) == 3
    lines = out.getvalue().splitlines()
    assert any(
        line.startswith("odd: failed: ") and "'properties.orchestrationMode' must be one of uniform, flexible" in line
        for line in lines
    ), lines
    assert any(line.startswith("pool: would run in mode spot") for line in lines), lines


def test_spot_command_plans_without_apply_and_acts_with_it(fake_arm: FakeArm, tmp_path: Path) -> None:
    fake_arm.add_scale_set("rg1", "pool", "Standard_D2s_v5", 10)
    fake_arm.add_scale_set("rg1", "regular-only", "Standard_D2s_v5", 2, priority="Regular")
    spot = [vm for vm in fake_arm.scale_set_instances("rg1", "pool") if vm.priority == "Spot"]
    fake_arm.evict("rg1", spot[0].name)
    compute = ComputeGateway(FakeCredential(), **client_kwargs(fake_arm))
    cfg = str(config(tmp_path))
    out = io.StringIO()
    assert cmd_spot(parse(["spot", "--config", cfg, "--now", NOW]), compute=compute, out=out) == 0
    assert "pool: would run in mode spot; replace 1 evicted" in out.getvalue()
    assert "regular-only" not in out.getvalue()
    assert fake_arm.vm("rg1", spot[0].name).power_state == "deallocated"
    out = io.StringIO()
    assert cmd_spot(parse(["spot", "--apply", "--config", cfg, "--now", NOW]), compute=compute, out=out) == 0
    assert "pool: mode spot; replaced 1 evicted" in out.getvalue()
    running = [vm for vm in fake_arm.scale_set_instances("rg1", "pool") if vm.power_state == "running"]
    assert len(running) == 10


def test_recover_command_lists_then_fixes(fake_arm: FakeArm, tmp_path: Path) -> None:
    fake_arm.add_vm(
        "rg1",
        "vm",
        "Standard_E2s_v5",
        power_state="deallocated",
        tags={
            PREVIOUS_SIZE_TAG: "Standard_D4s_v5|2026-11-28T02:00:00Z|c-1",
            CHANGE_TAG: "c-1|starting|Standard_E2s_v5|2026-11-28T02:01:00Z",
        },
    )
    compute = ComputeGateway(FakeCredential(), **client_kwargs(fake_arm))
    cfg = str(config(tmp_path))
    out = io.StringIO()
    assert cmd_recover(parse(["recover", "--config", cfg]), compute=compute, out=out) == 0
    assert "1 unfinished change(s)" in out.getvalue()
    assert fake_arm.vm("rg1", "vm").power_state == "deallocated"
    out = io.StringIO()
    assert cmd_recover(parse(["recover", "--apply", "--config", cfg, "--now", NOW]), compute=compute, out=out) == 0
    assert "vm: recovered: rolled back to Standard_D4s_v5" in out.getvalue()
    fake = fake_arm.vm("rg1", "vm")
    # No audit record of the change survived (another machine's log): the VM is started, never left deallocated.
    assert (fake.size, fake.power_state) == ("Standard_D4s_v5", "running")
    assert ChangeTag.parse(fake.tags[CHANGE_TAG]).phase is Phase.ROLLED_BACK


def test_commands_without_subscriptions_say_what_to_configure(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["recover", "--audit-log", str(tmp_path / "a.jsonl")]) == 2
    assert "azure.subscriptions" in capsys.readouterr().err


def test_audit_verify_cli_expectations_and_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "audit.jsonl"
    key_file = tmp_path / "audit.key"
    key_file.write_text("s" * 32)
    log = AuditLog(path, key=key_file.read_bytes())
    log.append("decision", decision="auto")
    base = ["audit", "verify", "--audit-log", str(path)]
    assert main([*base, "--audit-key-file", str(key_file)]) == 0
    out = capsys.readouterr().out
    assert "OK, 1 records, keyed (HMAC-SHA256)" in out
    head = out.strip().rsplit(" ", 1)[1]
    assert main([*base, "--audit-key-file", str(key_file), "--expect-head", head]) == 0
    assert main(base) == 4  # keyed log, no key
    assert "pass the key" in capsys.readouterr().out
    monkeypatch.setenv("FORESIGHT_AUDIT_KEY", "s" * 32)
    assert main(base) == 0
    capsys.readouterr()
    assert main([*base, "--expect-head", "ab" * 32]) == 4
    assert "is not in the chain" in capsys.readouterr().out
    path.write_text("", encoding="utf-8")
    assert main(base) == 4  # emptied: the head file says a record exists
    assert "names record 1" in capsys.readouterr().out
    empty = tmp_path / "empty.jsonl"
    empty.write_text("", encoding="utf-8")
    assert main(["audit", "verify", "--audit-log", str(empty), "--min-records", "1"]) == 4
    assert main(["audit", "verify", "--audit-log", str(tmp_path / "none.jsonl"), "--min-records", "1"]) == 4
