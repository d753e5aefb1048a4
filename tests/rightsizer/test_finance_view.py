"""The finance view: dry-run totals grouped by a tag (untagged VMs in their own group), and the monthly report
from the audit log grouped the same way, for chargeback."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from pathlib import Path

import pytest

from rightsizer.cli import main
from tests.rightsizer.offline import metric_rows, vm_entry, write_inputs


def fleet(tmp_path: Path) -> tuple[Path, Path]:
    vms = [
        vm_entry("a1", tags={"owner": "team-a"}),
        vm_entry("a2", tags={"Owner": "team-a"}),  # tag names are case-insensitive in Azure
        vm_entry("b1", tags={"owner": "team-b", "cost-center": "cc-7"}),
        vm_entry("x1"),
    ]
    rows = metric_rows("a1", 5) + metric_rows("a2", 6) + metric_rows("b1", 7) + metric_rows("x1", 8)
    return write_inputs(tmp_path, vms, rows)


def run(*args: str) -> str:
    out = io.StringIO()
    assert main(["recommend", "--forecast", "none", *args], out=out) == 0
    return out.getvalue()


def test_recommend_totals_by_tag_in_json_table_and_csv(tmp_path: Path) -> None:
    inventory, metrics = fleet(tmp_path)
    base = ("--inventory", str(inventory), "--metrics", str(metrics), "--group-by", "owner")
    doc = json.loads(run(*base, "--output", "json"))
    groups = {g["group"]: g for g in doc["totals_by_group"]["groups"]}
    assert doc["totals_by_group"]["tag"] == "owner"
    assert list(groups) == ["team-a", "team-b", "(untagged)"]
    assert (groups["team-a"]["vms"], groups["team-b"]["vms"], groups["(untagged)"]["vms"]) == (2, 1, 1)
    per_vm = {r["vm"]: r["monthly_savings_usd"] for r in doc["recommendations"] if r["decision"] != "skip"}
    assert groups["team-a"]["recommended_monthly_savings_usd"] == pytest.approx(
        per_vm.get("a1", 0) + per_vm.get("a2", 0), abs=0.02
    )
    assert sum(g["recommended_monthly_savings_usd"] for g in groups.values()) == pytest.approx(
        doc["totals"]["recommended_monthly_savings_usd"], abs=0.05
    )
    table = run(*base)
    assert "By tag 'owner' (VMs without it: (untagged)):" in table
    assert any(line.startswith("team-b ") for line in table.splitlines())
    rows = list(csv.DictReader(io.StringIO(run(*base, "--output", "csv"))))
    assert not any(r["vm"].startswith("TOTAL") for r in rows)  # totals are in JSON and the table, not rows
    assert {r["vm"]: r["tag:owner"] for r in rows if r["vm"] in ("a1", "b1")} == {"a1": "team-a", "b1": "team-b"}
    cost = json.loads(run("--inventory", str(inventory), "--metrics", str(metrics), "--group-by", "cost-center",
                          "--output", "json"))  # fmt: skip
    assert [g["group"] for g in cost["totals_by_group"]["groups"]] == ["cc-7", "(untagged)"]


def test_report_month_grouped_by_tag_from_the_audit_log(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    inventory, metrics = fleet(tmp_path)
    audit = tmp_path / "audit.jsonl"
    config = tmp_path / "c.yaml"
    config.write_text(f"audit_log: {audit}\n", encoding="utf-8")
    run("--config", str(config), "--inventory", str(inventory), "--metrics", str(metrics))
    month = dt.datetime.now(dt.UTC).strftime("%Y-%m")
    assert main(["report", "--month", month, "--audit-log", str(audit), "--group-by", "owner"]) == 0
    text = capsys.readouterr().out
    assert "Decisions recorded: 4" in text and "By tag 'owner'" in text
    lines = text.splitlines()
    header = lines.index(next(line for line in lines if line.startswith("OWNER")))
    assert [line.split()[0] for line in lines[header + 1 :]] == ["team-a", "team-b", "(untagged)"]
