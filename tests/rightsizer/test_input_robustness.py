"""A careless or hostile input never stops the fleet run: a VM's bad data is that VM's skipped row with its reason;
a bad file is one line on stderr and exit code 2; an old export works without ``--now``."""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from rightsizer.cli import main
from rightsizer.samples import CleanSamples, RefusedSamples, clean_samples
from tests.rightsizer.offline import DAY, T0, metric_rows, vm_entry, write_inputs


def run(*args: str) -> tuple[int, str]:
    out = io.StringIO()
    code = main(["recommend", "--forecast", "none", *args], out=out)
    return code, out.getvalue()


def run_json(inventory: Path, metrics: Path, *extra: str) -> dict[str, Any]:
    code, text = run("--inventory", str(inventory), "--metrics", str(metrics), "--output", "json", *extra)
    assert code == 0
    doc: dict[str, Any] = json.loads(text)
    return doc


def rows_by_vm(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["vm"]: r for r in doc["recommendations"]}


# -- per-VM problems ---------------------------------------------------------------------------------------


def test_a_vm_whose_samples_lie_outside_the_lookback_is_a_skipped_row(tmp_path: Path) -> None:
    old = [f"stale,{T0 - 400 * DAY},5,5"]
    inventory, metrics = write_inputs(tmp_path, [vm_entry("web-1"), vm_entry("stale")], metric_rows("web-1") + old)
    rows = rows_by_vm(run_json(inventory, metrics, "--now", "2013-07-09T00:00:00Z"))
    assert rows["web-1"]["decision"] != "skip"
    assert rows["stale"]["decision"] == "skip" and rows["stale"]["gate"] == "data"
    assert "no CPU data in the 7 days before 2013-07-09" in rows["stale"]["reason"]
    assert "samples end 2012-05-27" in rows["stale"]["reason"]


def test_conflicting_duplicates_out_of_range_and_bad_cells_skip_only_their_vm(tmp_path: Path) -> None:
    rows = metric_rows("good")
    # Two series under one name: every timestamp twice, with different values (averaging them hid the peaks).
    rows += metric_rows("merged", 2.0) + metric_rows("merged", 95.0)
    rows += metric_rows("hot")
    rows.append(f"hot,{T0 + DAY + 1},150,30")
    rows += metric_rows("typo")
    rows.append(f"typo,{T0 + DAY + 1},abc,30")
    vms = [vm_entry(n) for n in ("good", "merged", "hot", "typo")]
    inventory, metrics = write_inputs(tmp_path, vms, rows)
    doc = run_json(inventory, metrics)
    by_vm = rows_by_vm(doc)
    assert by_vm["good"]["decision"] != "skip"
    merged = by_vm["merged"]
    assert merged["decision"] == "skip" and merged["gate"] == "data"
    assert "have conflicting values" in merged["reason"] and "two series under one name" in merged["reason"]
    assert by_vm["hot"]["decision"] == "skip"
    assert "cpu_percent 150 at 2013-07-02T00:00:01Z is outside 0-100" in by_vm["hot"]["reason"]
    assert by_vm["typo"]["decision"] == "skip"
    assert "'cpu_percent'='abc' is not a number; expected a percentage 0-100" in by_vm["typo"]["reason"]


def test_repairs_by_the_stated_rules_are_said_in_the_row(tmp_path: Path) -> None:
    rows = metric_rows("web-1")
    rows.append(rows[10])  # an exact duplicate
    t_conflict = T0 + 2 * DAY
    rows.append(f"web-1,{t_conflict},12.5,30")  # one conflicting duplicate among 2,304 timestamps
    rows.append(f"web-1,{T0 + 3 * DAY + 7},103,30")  # counter overshoot
    inventory, metrics = write_inputs(tmp_path, [vm_entry("web-1")], rows)
    reason = rows_by_vm(run_json(inventory, metrics))["web-1"]["reason"]
    assert "data: 1 cpu_percent samples in (100, 110] clipped to 100" in reason
    assert "1 exact duplicate samples dropped" in reason
    assert "1 timestamps with conflicting values: kept the larger" in reason


def test_vms_sharing_a_name_are_refused_by_name_and_matched_by_id(tmp_path: Path) -> None:
    a = vm_entry("web", "/subscriptions/s/resourceGroups/rg-a/providers/Microsoft.Compute/virtualMachines/web")
    b = vm_entry("web", "/subscriptions/s/resourceGroups/rg-b/providers/Microsoft.Compute/virtualMachines/web")
    inventory, metrics = write_inputs(tmp_path, [a, b], metric_rows("web"))
    doc = run_json(inventory, metrics)
    assert [r["decision"] for r in doc["recommendations"]] == ["skip", "skip"]
    for r in doc["recommendations"]:
        assert "name 'web' is shared by 2 VMs" in r["reason"] and "key this VM's rows by its resource id" in r["reason"]
    inventory, metrics = write_inputs(tmp_path, [a, b], metric_rows(a["id"], 10.0) + metric_rows(b["id"], 60.0))
    recs = run_json(inventory, metrics)["recommendations"]
    assert recs[0]["stats"] != recs[1]["stats"]
    assert all(r["gate"] != "data" for r in recs)


def test_a_bad_or_repeated_inventory_entry_is_its_own_skipped_row(tmp_path: Path) -> None:
    entries = [
        vm_entry("web-1"),
        vm_entry("odd", os="beos"),
        vm_entry("twin"),
        vm_entry("twin", size="Standard_D8s_v5"),
        vm_entry("web-2"),
    ]
    rows = metric_rows("web-1") + metric_rows("odd") + metric_rows("twin") + metric_rows("web-2")
    inventory, metrics = write_inputs(tmp_path, entries, rows)
    recs = run_json(inventory, metrics)["recommendations"]
    assert [r["vm"] for r in recs] == ["web-1", "odd", "twin", "twin", "web-2"]
    by_gate = [(r["vm"], r["decision"], r["gate"]) for r in recs]
    assert by_gate[1] == ("odd", "skip", "inventory") and by_gate[2][1:] == by_gate[3][1:] == ("skip", "inventory")
    assert "'os' must be linux or windows, got 'beos'" in recs[1]["reason"]
    assert "duplicate id" in recs[2]["reason"] and "listed as VM #2 and VM #3; neither is sized" in recs[2]["reason"]
    for good in (recs[0], recs[4]):
        assert good["gate"] != "inventory" and good["stats"]


# -- time ----------------------------------------------------------------------------------------------------


def test_an_old_export_is_evaluated_as_of_its_newest_sample_and_says_so(tmp_path: Path) -> None:
    inventory, metrics = write_inputs(tmp_path, [vm_entry("web-1")], metric_rows("web-1"))
    doc = run_json(inventory, metrics)
    assert doc["as_of"] == "2013-07-08T23:55:00Z"
    assert doc["as_of_basis"].startswith("the newest sample in the metrics file")
    assert doc["recommendations"][0]["gate"] != "data"
    code, table = run("--inventory", str(inventory), "--metrics", str(metrics))
    assert code == 0
    assert "evaluated as of 2013-07-08T23:55:00Z: the newest sample in the metrics file" in table
    code, text = run("--inventory", str(inventory), "--metrics", str(metrics), "--output", "csv")
    first = next(iter(csv.DictReader(io.StringIO(text))))
    assert first["as_of"].startswith("2013-07-08T23:55:00Z (the newest sample in the metrics file")
    # --now still wins.
    doc = run_json(inventory, metrics, "--now", "2013-07-05T00:00:00Z")
    assert doc["as_of"] == "2013-07-05T00:00:00Z" and doc["as_of_basis"] == "--now"


def test_samples_dated_in_the_future_skip_their_vm_and_do_not_move_the_evaluation_time(tmp_path: Path) -> None:
    rows = metric_rows("web-1") + metric_rows("ms")
    rows.append(f"ms,{4_102_444_800},10,30")  # 2100-01-01: a clock or unit error
    inventory, metrics = write_inputs(tmp_path, [vm_entry("web-1"), vm_entry("ms")], rows)
    doc = run_json(inventory, metrics)
    assert doc["as_of"] == "2013-07-08T23:55:00Z"
    by_vm = rows_by_vm(doc)
    assert by_vm["web-1"]["gate"] != "data"
    assert "1 samples dated after the current time (latest 2100-01-01T00:00:00Z)" in by_vm["ms"]["reason"]


# -- file problems: one line, exit 2 ---------------------------------------------------------------------------


def _file_problem(tmp_path: Path, case: str) -> tuple[Path, Path, list[str]]:
    inventory, metrics = write_inputs(tmp_path, [vm_entry("web-1")], metric_rows("web-1"))
    extra: list[str] = []
    if case == "corrupt-gz":
        bad = tmp_path / "metrics.csv.gz"
        bad.write_bytes(b"vm,timestamp\n" * 10)
        metrics = bad
    elif case == "truncated-gz":
        bad = tmp_path / "metrics.csv.gz"
        bad.write_bytes(gzip.compress(metrics.read_bytes())[:200])
        metrics = bad
    elif case == "gzip-bomb":
        bomb = tmp_path / "bomb.csv.gz"
        bomb.write_bytes(gzip.compress(b"vm,timestamp,cpu_percent,memory_percent\n" + b"0" * (4 * 1024 * 1024)))
        metrics = bomb
        extra = ["--max-file-mb", "1"]
    elif case == "non-utf8-inventory":
        inventory.write_bytes(b'[{"name": "caf\xe9"}]')
    elif case == "nested-json":
        inventory.write_text("[" * 100_000 + "]" * 100_000)
    elif case == "device":
        inventory = Path("/dev/zero")
    elif case == "fifo":
        fifo = tmp_path / "fifo.csv"
        os.mkfifo(fifo)
        metrics = fifo
    elif case == "huge-field":
        metrics.write_text("vm,timestamp,cpu_percent,memory_percent\n" + "x" * 200_000 + ",1,2,3\n")
    elif case == "oversized":
        extra = ["--max-file-mb", "0.01"]
    return inventory, metrics, extra


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("corrupt-gz", "corrupt or truncated gzip data"),
        ("truncated-gz", "corrupt or truncated gzip data"),
        ("gzip-bomb", "decompresses to more than 1 MiB (--max-file-mb)"),
        ("non-utf8-inventory", "not UTF-8 text (byte 0xe9 at offset 14)"),
        ("nested-json", "JSON nested too deeply"),
        ("device", "/dev/zero is not a regular file"),
        ("fifo", "is not a regular file (a FIFO, device or directory is refused)"),
        ("huge-field", "row 2: "),
        ("oversized", "is more than 0.01 MiB (--max-file-mb)"),
    ],
)
def test_a_file_problem_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str, message: str
) -> None:
    inventory, metrics, extra = _file_problem(tmp_path, case)
    code, out = run("--inventory", str(inventory), "--metrics", str(metrics), *extra)
    err = capsys.readouterr().err
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rightsizer: error: ") and message in lines[0], err
    assert len(lines[0]) < 400


# -- the rules, unit by unit -----------------------------------------------------------------------------------


def test_clean_samples_rules() -> None:
    ts = np.array([3.0, 1.0, 2.0, 2.0])
    cpu = np.array([30.0, 10.0, 20.0, 20.0])
    mem = np.array([np.nan, 5.0, np.nan, np.nan])
    clean = clean_samples(ts, cpu, mem)
    assert isinstance(clean, CleanSamples)
    assert list(clean.timestamps) == [1.0, 2.0, 3.0] and list(clean.cpu_percent) == [10.0, 20.0, 30.0]
    assert np.isnan(clean.memory_percent[1]) and clean.notes == ("1 exact duplicate samples dropped",)
    refused = clean_samples(np.array([1.0]), np.array([-0.5]), np.array([np.nan]))
    assert isinstance(refused, RefusedSamples) and "cpu_percent -0.5" in refused.reason
    refused = clean_samples(np.array([1.0, 2.0]), np.array([1.0, 1.0]), np.array([1.0, 170.0]))
    assert isinstance(refused, RefusedSamples) and "memory_percent 170" in refused.reason


def test_utf8_is_checked_across_read_chunks(tmp_path: Path) -> None:
    from rightsizer.files import FileProblem, read_bytes

    good = tmp_path / "good.csv"
    text = "é" * 700_000  # 1.4 MB: characters straddle the 1 MiB read chunks
    good.write_text(text, encoding="utf-8")
    assert read_bytes(good, "metrics", utf8=True).decode("utf-8") == text
    bad = tmp_path / "bad.csv"
    bad.write_bytes("é".encode() * 600_000 + b"\xff" + b"x" * 10)
    with pytest.raises(FileProblem, match="byte 0xff at offset 1200000"):
        read_bytes(bad, "metrics", utf8=True)
    cut = tmp_path / "cut.csv"
    cut.write_bytes(b"abc" + "é".encode()[:1])  # a character cut off at the end of the file
    with pytest.raises(FileProblem, match="at offset 3"):
        read_bytes(cut, "metrics", utf8=True)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (
            "a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n",
            "aliases (*name) are not accepted",
        ),
        ("dry_run: true\n" + "#" * (2 * 1024 * 1024) + "\n", "is more than 1 MiB"),
    ],
    ids=["yaml-alias-bomb", "oversized"],
)
def test_a_hostile_settings_file_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str, message: str
) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(content, encoding="utf-8")
    code, _ = run("--config", str(config))
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and message in err[0]
    assert main(["audit", "verify", "--config", "/dev/zero"]) == 2
    assert "not a regular file" in capsys.readouterr().err
