"""The CLI end to end on the bundled example fleet (real Bitbrains VMs): table, JSON and CSV."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from rightsizer.cli import main, shard_of
from rightsizer.inputs import load_inventory

REPO = Path(__file__).resolve().parents[2]
EXAMPLE_INVENTORY = REPO / "rightsizer" / "examples" / "fleet-inventory.json"
EXAMPLE_METRICS = REPO / "rightsizer" / "examples" / "fleet-metrics.csv.gz"
FIELDS = ["vm", "current_size", "target_size", "action", "monthly_savings_usd", "confidence", "decision", "reason"]


def run_cli(*args: str) -> tuple[int, str]:
    out = io.StringIO()
    code = main(list(args), out=out)
    return code, out.getvalue()


@pytest.fixture(scope="module")
def json_doc() -> dict[str, Any]:
    code, text = run_cli("--output", "json", "--forecast", "seasonal-profile")
    assert code == 0
    doc: dict[str, Any] = json.loads(text)
    return doc


def test_default_run_is_a_dry_run_table_on_the_example_fleet() -> None:
    # The product default (library forecast), as the README's demo runs it.
    done = subprocess.run(
        [sys.executable, "-m", "rightsizer"], capture_output=True, text=True, cwd=REPO, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("rightsizer dry run as of 2013-07-15T00:00:00Z - bundled example fleet")
    assert "using bundled snapshot prices-2026-08-22.json.gz" in lines[1]
    header = next(line for line in lines if line.startswith("VM "))
    for col in ("CURRENT", "TARGET", "SAVINGS/MO", "CONF", "DECISION", "REASON"):
        assert col in header
    assert sum(1 for line in lines if line.startswith("bb-")) == 50
    assert any(line.startswith("TOTAL 50 VMs:") for line in lines)
    assert "monthly = hourly x 730 at Azure retail pay-as-you-go prices" in done.stdout
    rows = [line for line in lines if line.startswith("bb-")]
    assert max(len(line) for line in [header, *rows]) <= 180
    # An upsize costs money: it says so instead of showing a negative saving.
    assert not any(" $-" in line or "-$" in line for line in rows)
    upsizes = [line for line in rows if "costs $" in line]
    assert all(line.split("costs $", 1)[1].split()[1] == "more" for line in upsizes)


def test_json_has_every_field_per_vm_and_a_totals_object(json_doc: dict[str, Any]) -> None:
    recs = json_doc["recommendations"]
    assert isinstance(recs, list) and len(recs) == 50
    for r in recs:
        assert set(FIELDS) <= set(r)
    totals = json_doc["totals"]
    assert isinstance(totals, dict) and totals["vms"] == 50
    assert sum(totals["by_decision"].values()) == 50
    assert json_doc["pricing"].startswith("monthly = hourly x 730")
    assert json_doc["mode"] == "dry run" and json_doc["price_origin"] == "bundled"
    decisions = {r["decision"] for r in recs}
    assert {"auto", "skip", "recommend-only", "needs-approval"} <= decisions


def test_example_fleet_decisions_respect_the_tags_and_groups(json_doc: dict[str, Any]) -> None:
    recs = {r["vm"]: r for r in json_doc["recommendations"]}
    inventory = {vm.name: vm for vm in load_inventory(EXAMPLE_INVENTORY)}
    acting = ("auto", "approved", "needs-approval")
    for name, r in recs.items():
        tags = inventory[name].tags
        protected = tags.get("finops.ai/optimization-enabled") == "false" or any(
            k in tags for k in ("pci-dss", "hipaa", "sox", "fedramp", "compliance")
        )
        if protected:
            assert r["decision"] not in acting, name
        if tags.get("criticality") in ("tier-0", "tier-1") or tags.get("role") == "database":
            assert r["decision"] != "auto", name
        if r["decision"] == "auto":
            assert r["action"] == "resize" and r["monthly_savings_usd"] < 100 and r["confidence"] >= 0.8
        if r["action"] == "shutdown":
            assert r["decision"] in ("recommend-only", "skip")
    groups: dict[str, list[str]] = {}
    for name, vm in inventory.items():
        if (vm.group or vm.scale_set) and recs[name]["decision"] in acting and recs[name]["action"] == "resize":
            groups.setdefault(str(vm.group or vm.scale_set), []).append(name)
    assert all(len(members) == 1 for members in groups.values()), groups
    applicable = sum(r["monthly_savings_usd"] for r in recs.values() if r["decision"] in ("auto", "approved"))
    assert json_doc["totals"]["applicable_monthly_savings_usd"] == pytest.approx(applicable, abs=0.05)
    # bb-27's memory was not measured (mem_usage_kb == 0 in the source): its target keeps all 512 GiB.
    assert recs["bb-27"]["target_size"] in (None, "Standard_E64as_v5", "Standard_E64s_v5")


def test_csv_has_the_json_fields_and_no_totals_row() -> None:
    args = ("recommend", "--forecast", "seasonal-profile", "--inventory", str(EXAMPLE_INVENTORY),
            "--metrics", str(EXAMPLE_METRICS))  # fmt: skip
    code, text = run_cli(*args, "--output", "csv")
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(text)))
    code, doc_text = run_cli(*args, "--output", "json")
    doc = json.loads(doc_text)
    # One row per VM and nothing else: a spreadsheet's SUM over the column is the total.
    assert len(rows) == len(doc["recommendations"]) == 50
    assert not any(r["vm"].startswith("TOTAL") for r in rows)
    assert set(doc["recommendations"][0]) <= set(rows[0]) and list(rows[0])[: len(FIELDS)] == FIELDS
    for row, rec in zip(rows, doc["recommendations"], strict=True):
        assert row["id"] == rec["id"] and row["gate"] == ("" if rec["gate"] is None else rec["gate"])
        assert json.loads(row["stats"]) == rec["stats"]
    per_vm = sum(
        float(r["monthly_savings_usd"])
        for r in rows
        if r["decision"] != "skip" and r["action"] != "none" and float(r["monthly_savings_usd"]) > 0
    )
    assert doc["totals"]["recommended_monthly_savings_usd"] == pytest.approx(per_vm, abs=0.05)


def test_shards_partition_the_fleet_and_keep_groups_together() -> None:
    vms = load_inventory(EXAMPLE_INVENTORY)
    seen: list[str] = []
    for i in range(3):
        code, text = run_cli("--output", "json", "--forecast", "none", "--shard", f"{i}/3")
        assert code == 0
        seen += [r["vm"] for r in json.loads(text)["recommendations"]]
    assert sorted(seen) == sorted(vm.name for vm in vms)
    groups: dict[str, set[int]] = {}
    for vm in vms:
        if vm.group or vm.scale_set:
            groups.setdefault(str(vm.group or vm.scale_set), set()).add(shard_of(vm, 3))
    assert groups and all(len(s) == 1 for s in groups.values())


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--shard", "3/3"], "--shard '3/3': need n >= 1 and 0 <= i < n"),
        (["--shard", "x"], "expected i/n"),
        (["--metrics", "m.csv"], "--metrics needs --inventory, or azure.subscriptions"),
        (["--inventory", "/nonexistent.json", "--metrics", "/nonexistent.csv"], "cannot read inventory"),
        (["--apply"], "--apply acts on Azure VMs"),
    ],
)
def test_usage_errors_exit_2_with_a_clear_message(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _ = run_cli("recommend", "--forecast", "none", *args)
    assert code == 2
    assert message in capsys.readouterr().err


def test_bad_config_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("thresholds:\n  cpu_p95_max_percent: 180\n")
    assert run_cli("--config", str(cfg))[0] == 2
    assert "thresholds.cpu_p95_max_percent: 180.0 is outside (0, 100]" in capsys.readouterr().err
    cfg.write_text("gates:\n  min_confidense: 0.5\n")
    assert run_cli("--config", str(cfg))[0] == 2
    assert "gates: unknown key(s) min_confidense" in capsys.readouterr().err


def test_an_upsize_says_what_it_costs_instead_of_a_negative_saving() -> None:
    from rightsizer.output import format_savings

    assert format_savings(1234.5) == "$1,234.50"
    assert format_savings(-12.5) == "costs $12.50 more"
    assert format_savings(0.0) == "$0.00"
