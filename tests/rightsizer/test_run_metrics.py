"""A CronJob run's metrics: pushed to the real Pushgateway (Debian's prometheus-pushgateway) and written as a
node-exporter textfile, parsed back with prometheus_client's parser; export failures and their exit codes."""

from __future__ import annotations

import io
import json
import socket
import time
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from rightsizer.audit import AuditLog
from rightsizer.cli import main
from tests.rightsizer.offline import T0, metric_rows, vm_entry, write_inputs
from tests.support.pushgateway import Pushgateway, metric_families, pushgateway  # noqa: F401  (fixture)

CONTRACT_METRICS = (
    "rightsizer_vms_seen",
    "rightsizer_rows",
    "rightsizer_savings_monthly",
    "rightsizer_changes_total",
    "rightsizer_rollbacks_total",
    "rightsizer_compliance_changes_total",
    "rightsizer_run_duration_seconds",
    "rightsizer_last_success_timestamp_seconds",
    "rightsizer_audit_head_info",
)


def fleet(tmp_path: Path) -> tuple[Path, Path]:
    rows = metric_rows("web-1", 5.0) + metric_rows("web-2", 12.0) + [f"stale,{T0 - 400 * 86_400},5,5"]
    return write_inputs(tmp_path, [vm_entry("web-1"), vm_entry("web-2"), vm_entry("stale")], rows)


def run(*args: str) -> tuple[int, str]:
    out = io.StringIO()
    code = main(["recommend", "--forecast", "none", *args], out=out)
    return code, out.getvalue()


def samples(families: dict[str, Any], name: str) -> list[tuple[dict[str, str], float]]:
    family_name = name.removesuffix("_total")
    family = families.get(name) or families.get(family_name)
    assert family is not None, f"{name} not exported; have {sorted(families)}"
    return [(dict(s.labels), s.value) for s in family.samples if s.name in (name, f"{name}_total")]


def parse_textfile(path: Path) -> dict[str, Any]:
    return {f.name: f for f in text_string_to_metric_families(path.read_text(encoding="utf-8"))}


def test_recommend_pushes_the_runs_metrics_to_the_pushgateway(pushgateway: Pushgateway, tmp_path: Path) -> None:  # noqa: F811
    inventory, metrics = fleet(tmp_path)
    code, text = run("--inventory", str(inventory), "--metrics", str(metrics), "--output", "json",
                     "--pushgateway", pushgateway.url)  # fmt: skip
    assert code == 0
    doc = json.loads(text)
    families = metric_families(pushgateway.url)
    [(labels, seen)] = samples(families, "rightsizer_vms_seen")
    assert labels["job"] == "foresight-rightsizer" and seen == 3
    rows = samples(families, "rightsizer_rows")
    assert sum(v for _, v in rows) == 3
    assert any(lab["decision"] == "skip" and lab["gate"] == "data" and v == 1 for lab, v in rows)
    savings = {lab["state"]: v for lab, v in samples(families, "rightsizer_savings_monthly")}
    assert savings["recommended"] == pytest.approx(doc["totals"]["recommended_monthly_savings_usd"])
    assert savings["pending"] == pytest.approx(doc["totals"]["pending_approval_monthly_savings_usd"])
    assert savings["applied"] == 0.0  # a dry run
    [(_, compliance)] = samples(families, "rightsizer_compliance_changes_total")
    assert compliance == 0
    [(_, last_success)] = samples(families, "rightsizer_last_success_timestamp_seconds")
    assert abs(last_success - time.time()) < 120
    [(_, duration)] = samples(families, "rightsizer_run_duration_seconds")
    assert 0 < duration < 120


def test_shards_push_to_their_own_groups(pushgateway: Pushgateway, tmp_path: Path) -> None:  # noqa: F811
    inventory, metrics = fleet(tmp_path)
    for shard in ("0/2", "1/2"):
        code, _ = run("--inventory", str(inventory), "--metrics", str(metrics), "--shard", shard,
                      "--pushgateway", pushgateway.url)  # fmt: skip
        assert code == 0
    seen = samples(metric_families(pushgateway.url), "rightsizer_vms_seen")
    assert sorted(lab["shard"] for lab, _ in seen) == ["0-of-2", "1-of-2"]
    assert sum(v for _, v in seen) == 3  # each VM in exactly one shard, neither push replaced the other


def test_the_textfile_holds_every_contract_metric_and_the_audit_head(tmp_path: Path) -> None:
    inventory, metrics = fleet(tmp_path)
    audit_path = tmp_path / "audit.jsonl"
    config = tmp_path / "c.yaml"
    config.write_text(f"audit_log: {audit_path}\n", encoding="utf-8")
    textfile = tmp_path / "textfile" / "rightsizer.prom"
    textfile.parent.mkdir()
    code, _ = run("--config", str(config), "--inventory", str(inventory), "--metrics", str(metrics),
                  "--metrics-textfile", str(textfile))  # fmt: skip
    assert code == 0
    assert [p.name for p in textfile.parent.iterdir()] == ["rightsizer.prom"]  # written atomically, no leftovers
    text = textfile.read_text(encoding="utf-8")
    for name in CONTRACT_METRICS:
        assert f"# TYPE {name} " in text, name
    families = parse_textfile(textfile)
    head = AuditLog(audit_path).verify()
    assert head.ok and head.records == 3
    [(labels, value)] = samples(families, "rightsizer_audit_head_info")
    assert labels == {"hash": head.last_hash} and value == 1
    # The exported head anchors the log: verify against it later.
    assert main(["audit", "verify", "--audit-log", str(audit_path), "--expect-head", labels["hash"]]) == 0


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_an_unreachable_pushgateway_is_a_warning_and_exit_3(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    inventory, metrics = fleet(tmp_path)
    textfile = tmp_path / "m.prom"
    code, out = run("--inventory", str(inventory), "--metrics", str(metrics), "--metrics-textfile", str(textfile),
                    "--pushgateway", f"http://127.0.0.1:{_closed_port()}")  # fmt: skip
    assert code == 3
    assert "web-1" in out and textfile.exists()  # the run and the other export went on
    assert "rightsizer: warning: push to http://127.0.0.1:" in capsys.readouterr().err


def test_a_pushgateway_that_never_answers_is_cut_off_by_the_timeout(tmp_path: Path) -> None:
    inventory, metrics = fleet(tmp_path)
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)  # accepts connections into the backlog, never answers
        started = time.monotonic()
        code, _ = run("--inventory", str(inventory), "--metrics", str(metrics),
                      "--pushgateway", f"http://127.0.0.1:{silent.getsockname()[1]}",
                      "--pushgateway-timeout", "0.5")  # fmt: skip
        assert code == 3 and time.monotonic() - started < 30


def test_a_failed_run_keeps_its_own_exit_code_and_pushes_nothing(
    pushgateway: Pushgateway,  # noqa: F811
    tmp_path: Path,
) -> None:
    inventory, _ = fleet(tmp_path)
    bad = tmp_path / "bad.csv.gz"
    bad.write_bytes(b"not gzip at all")
    code, _ = run("--inventory", str(inventory), "--metrics", str(bad), "--pushgateway", pushgateway.url)
    assert code == 2
    assert "rightsizer_vms_seen" not in metric_families(pushgateway.url)


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--pushgateway", "ftp://example", "expected http(s)://host[:port][/path]"),
        ("--pushgateway-timeout", "0", "expected seconds in (0, 300]"),
    ],
)
def test_bad_export_arguments_are_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flag: str, value: str, message: str
) -> None:
    inventory, metrics = fleet(tmp_path)
    extra = [flag, value] if flag == "--pushgateway" else ["--pushgateway", "http://127.0.0.1:1", flag, value]
    code, _ = run("--inventory", str(inventory), "--metrics", str(metrics), *extra)
    assert code == 2 and message in capsys.readouterr().err


def test_an_unwritable_textfile_is_a_warning_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    inventory, metrics = fleet(tmp_path)
    code, out = run("--inventory", str(inventory), "--metrics", str(metrics),
                    "--metrics-textfile", str(tmp_path / "missing-dir" / "m.prom"))  # fmt: skip
    assert code == 2 and "web-1" in out
    assert "rightsizer: warning: cannot write --metrics-textfile" in capsys.readouterr().err
