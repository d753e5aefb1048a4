"""Offline inputs: good files parse, bad rows and fields get an error naming them and the accepted form."""

from __future__ import annotations

import gzip
import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from rightsizer.domain import Priority
from rightsizer.files import FileProblem
from rightsizer.inputs import InputError, load_inventory, load_inventory_with_as_of, load_metrics_csv, parse_inventory
from rightsizer.metrics import NoUsage, VmUsage, usage_from_raw
from rightsizer.settings import MetricsSettings

GOOD_VM = {
    "id": "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/web-1",
    "name": "web-1",
    "resource_group": "rg",
    "size": "D4s v5",
    "region": "WestEurope",
    "os": "linux",
    "priority": "Regular",
    "tags": {"team": "web"},
    "group": "web-avset",
}


def write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_inventory_parses_and_normalises(tmp_path: Path) -> None:
    vms = load_inventory(
        write(
            tmp_path,
            "inv.json",
            json.dumps([GOOD_VM, {**GOOD_VM, "id": "x", "name": "spot-1", "priority": "spot", "os": "Windows"}]),
        )
    )
    assert vms[0].size == "Standard_D4s_v5" and vms[0].region == "westeurope" and vms[0].group == "web-avset"
    assert vms[1].priority is Priority.SPOT and vms[1].os == "windows"


def test_inventory_as_of(tmp_path: Path) -> None:
    _, as_of = load_inventory_with_as_of(
        write(tmp_path, "i.json", json.dumps({"as_of": "2013-07-15T00:00:00Z", "vms": [GOOD_VM]}))
    )
    assert as_of == 1373846400.0


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"name": ""}, "VM #0: 'name' is required"),
        ({"size": None}, "'size' is required"),
        ({"os": "beos"}, "'os' must be linux or windows, got 'beos'"),
        ({"priority": "Low"}, "'priority' must be Regular or Spot, got 'Low'"),
        ({"tags": {"a": 1}}, "'tags' must be an object of string values"),
        ({"data_disks": -1}, "'data_disks' must be a non-negative integer"),
        ({"uses_temp_disk": "yes"}, "'uses_temp_disk' must be true or false"),
        ({"power_state": "asleep"}, "'power_state' 'asleep' is not one of"),
    ],
)
def test_bad_inventory_fields_are_named_on_their_vm_only(change: dict[str, object], message: str) -> None:
    other = {**GOOD_VM, "id": "other-id", "name": "web-2"}
    bad, good = parse_inventory([{**GOOD_VM, **change}, other], source="inv.json")
    assert bad.problem is not None and message in bad.problem and bad.problem.startswith("inv.json: VM #0")
    assert good.problem is None and good.name == "web-2"


def test_inventory_shape_and_duplicates(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="expected a JSON list of VMs"):
        parse_inventory({"machines": []})
    # The same id twice: which entry is right is unknown, so neither is sized; both rows are kept.
    first, second, third = parse_inventory([GOOD_VM, {**GOOD_VM, "size": "D8s v5"}, {**GOOD_VM, "id": "x"}])
    assert first.problem is not None and first.problem == second.problem
    assert "duplicate id" in first.problem and "listed as VM #0 and VM #1" in first.problem
    assert first.id == GOOD_VM["id"] and second.id != first.id and third.problem is None
    # A bad entry's id still counts: a later entry with it gets a row of its own, never the same id twice.
    bad, again = parse_inventory([{**GOOD_VM, "os": "beos"}, GOOD_VM])
    assert bad.problem is not None and "'os'" in bad.problem and again.problem is not None
    assert "duplicate id" in again.problem and again.id != bad.id
    with pytest.raises(FileProblem, match="not valid JSON"):
        load_inventory(write(tmp_path, "bad.json", "[{"))


def test_an_unparsable_entry_keeps_what_can_be_shown_and_quotes_a_short_prefix() -> None:
    huge = "x" * 100_000
    entries: list[object] = ["not an object", {**GOOD_VM, "id": "a", "os": huge}, {"name": "half"}]
    not_object, huge_os, half = parse_inventory(entries, source="inv.json")
    assert not_object.problem == "inv.json: VM #0: expected an object, got str" and not_object.name == "VM #0"
    assert huge_os.problem is not None and len(huge_os.problem) < 200 and huge_os.id == "a"
    assert half.name == "half" and half.problem is not None and "'id' is required" in half.problem
    assert len({vm.id for vm in (not_object, huge_os, half)}) == 3


def test_metrics_csv_iso_and_epoch_and_empty_memory(tmp_path: Path) -> None:
    text = (
        "vm,timestamp,cpu_percent,memory_percent\n"
        "web-1,2026-09-20T10:00:00Z,12.5,40\n"
        "web-1,1790000100,13.5,\n"
        "web-1,2026-09-20T12:05:00+02:00,14,41.5\n"
    )
    raw = load_metrics_csv(write(tmp_path, "m.csv", text))["web-1"]
    assert raw.timestamps[0] == datetime(2026, 9, 20, 10, tzinfo=UTC).timestamp()
    assert raw.timestamps[1] == 1790000100.0
    assert raw.timestamps[2] == raw.timestamps[0] + 300.0  # +02:00 honoured
    assert np.isnan(raw.memory_percent[1]) and raw.memory_percent[2] == 41.5


def test_gzipped_metrics(tmp_path: Path) -> None:
    p = tmp_path / "m.csv.gz"
    p.write_bytes(gzip.compress(b"vm,timestamp,cpu_percent,memory_percent\na,1790000000,1,2\n"))
    assert len(load_metrics_csv(p)["a"].timestamps) == 1


@pytest.mark.parametrize(
    ("row", "message"),
    [
        (",1790000000,12,40", "row 3: 'vm' is empty"),
        ("web-1,1790000000", "row 3: 2 fields, expected 4"),
        ("web-1,1790000000," + "9" * 5000 + ",40", "row 3: a field of 5000 characters (at most 1024 accepted)"),
    ],
)
def test_malformed_metric_rows_refuse_the_file(tmp_path: Path, row: str, message: str) -> None:
    text = f"vm,timestamp,cpu_percent,memory_percent\nweb-1,1790000000,10,40\n{row}\n"
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_metrics_csv(write(tmp_path, "m.csv", text))


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ("web-1,yesterday,12,40", "row 3: 'timestamp'='yesterday' is neither epoch seconds nor ISO 8601"),
        ("web-1,1790000000,lots,40", "row 3: 'cpu_percent'='lots' is not a number; expected a percentage 0-100"),
        ("web-1,1790000000,1_000,40", "row 3: 'cpu_percent'='1_000' is not a number"),
        ("web-1,1790000000,\u0661\u0662,40", "row 3: 'cpu_percent'='\u0661\u0662' is not a number"),
        ("web-1,1790000000,,40", "row 3: 'cpu_percent' is empty"),
        ("web-1,1790000000000,12,40", "row 3: 'timestamp'='1790000000000' is neither"),
    ],
)
def test_bad_metric_values_are_the_vms_problem_naming_the_row(tmp_path: Path, row: str, message: str) -> None:
    text = f"vm,timestamp,cpu_percent,memory_percent\nweb-1,1790000000,10,40\nok-1,1790000000,10,40\n{row}\n"
    raw = load_metrics_csv(write(tmp_path, "m.csv", text))
    assert raw["ok-1"].problems == ()
    problems = raw["web-1"].problems
    assert len(problems) == 1 and message.replace("row 3", "row 4") in problems[0], problems


def test_bad_metrics_header(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"lacks cpu_percent.*expected vm,timestamp,cpu_percent,memory_percent"):
        load_metrics_csv(write(tmp_path, "m.csv", "vm,timestamp,cpu,memory_percent\n"))
    with pytest.raises(InputError, match="empty file"):
        load_metrics_csv(write(tmp_path, "e.csv", ""))


def test_usage_matches_vms_by_name_or_id_and_flags_missing_memory(tmp_path: Path) -> None:
    now = 1_790_000_000.0
    ts = np.arange(now - 7 * 86400 + 300, now + 1, 300)
    rows = ["vm,timestamp,cpu_percent,memory_percent"]
    rows += [f"web-1,{t:.0f},20," for t in ts]
    vms = parse_inventory([GOOD_VM, {**GOOD_VM, "id": "other", "name": "web-2"}])
    raw = load_metrics_csv(write(tmp_path, "m.csv", "\n".join(rows) + "\n"))
    usage = usage_from_raw(raw, vms, MetricsSettings(), now)
    u1 = usage[vms[0].id]
    assert isinstance(u1, VmUsage) and u1.memory is None and u1.memory_note == "memory not measured"
    assert u1.cpu.quality.completeness == pytest.approx(1.0)
    u2 = usage["other"]
    assert isinstance(u2, NoUsage) and "no metrics" in u2.reason
