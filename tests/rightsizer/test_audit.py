"""The hash-chained audit log: appends, tamper detection, locking across processes, the monthly report."""

from __future__ import annotations

import datetime as dt
import itertools
import json
import multiprocessing
from pathlib import Path

import pytest

from rightsizer import audit as kinds
from rightsizer.audit import GENESIS_HASH, AuditLog, AuditLogError, monthly_report, monthly_summary, record_hash

T0 = dt.datetime(2026, 11, 3, 2, 0, tzinfo=dt.UTC)


def filled(path: Path, n: int = 6) -> AuditLog:
    log = AuditLog(path)
    for i in range(n):
        log.append("decision", ts=T0 + dt.timedelta(minutes=i), vm=f"vm{i}", decision="auto", n=i)
    return log


def lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines(keepends=True)


def test_records_chain_to_each_other(tmp_path: Path) -> None:
    log = filled(tmp_path / "audit.jsonl")
    records = log.records()
    assert [r["seq"] for r in records] == [1, 2, 3, 4, 5, 6]
    assert records[0]["prev"] == GENESIS_HASH
    for before, after in itertools.pairwise(records):
        assert after["prev"] == before["hash"]
    assert all(record_hash(r) == r["hash"] for r in records)
    result = log.verify()
    assert result.ok and result.records == 6 and result.last_hash == records[-1]["hash"]


def test_an_edited_record_is_found(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    filled(path)
    content = lines(path)
    record = json.loads(content[3])
    record["decision"] = "skip"
    content[3] = json.dumps(record) + "\n"
    path.write_text("".join(content), encoding="utf-8")
    result = AuditLog(path).verify()
    assert not result.ok and result.first_bad_line == 4 and "edited" in result.reason


def test_an_edit_that_also_rehashes_the_record_breaks_the_next_link(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    filled(path)
    content = lines(path)
    record = json.loads(content[2])
    record["vm"] = "someone-else"
    record["hash"] = record_hash(record)
    content[2] = json.dumps(record) + "\n"
    path.write_text("".join(content), encoding="utf-8")
    result = AuditLog(path).verify()
    assert not result.ok and result.first_bad_line == 4


@pytest.mark.parametrize(
    ("mutate", "first_bad"),
    [
        (lambda c: c[:2] + c[3:], 3),  # a deleted record
        (lambda c: [c[0], c[2], c[1], *c[3:]], 2),  # two records swapped
        (lambda c: c[:1] + c[4:], 2),  # the middle cut out
    ],
    ids=["delete", "reorder", "truncate-middle"],
)
def test_deleted_reordered_or_cut_records_are_found(tmp_path: Path, mutate, first_bad: int) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "audit.jsonl"
    filled(path)
    path.write_text("".join(mutate(lines(path))), encoding="utf-8")
    result = AuditLog(path).verify()
    assert not result.ok
    assert result.first_bad_line == first_bad
    assert f"line {first_bad}" in result.describe(path)


def test_garbage_line_is_named(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    filled(path, 3)
    with open(path, "a", encoding="utf-8") as handle:
        handle.write("not json\n")
    assert AuditLog(path).verify().first_bad_line == 4
    with pytest.raises(AuditLogError, match="audit verify"):
        AuditLog(path).append("decision")


def test_reserved_fields_are_refused(tmp_path: Path) -> None:
    with pytest.raises(AuditLogError, match="reserved"):
        AuditLog(tmp_path / "a.jsonl").append("decision", hash="x")


def _append_many(path: str, worker: int, count: int) -> None:
    log = AuditLog(path)
    for i in range(count):
        log.append("decision", worker=worker, i=i, padding="x" * 500)


def test_concurrent_processes_never_fork_the_chain(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=_append_many, args=(str(path), w, 40)) for w in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
        assert worker.exitcode == 0
    result = AuditLog(path).verify()
    assert result.ok, result.reason
    assert result.records == 160


def test_monthly_report_counts_outcomes_and_savings(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path)
    nov = dt.datetime(2026, 11, 10, tzinfo=dt.UTC)
    log.append(kinds.DECISION, ts=dt.datetime(2026, 10, 31, 23, 59, tzinfo=dt.UTC), decision="auto")
    log.append(kinds.DECISION, ts=nov, decision="auto")
    log.append(kinds.DECISION, ts=nov, decision="skip")
    log.append(kinds.CHANGE_RECORDED, ts=nov, change_id="a", monthly_savings_usd=120.0)
    log.append(kinds.CHANGE_DONE, ts=nov, change_id="a", monthly_savings_usd=120.0)
    log.append(kinds.CHANGE_RECORDED, ts=nov, change_id="b", monthly_savings_usd=80.0)
    log.append(kinds.CHANGE_DONE, ts=nov, change_id="b", monthly_savings_usd=80.0)
    log.append(kinds.SLA_BREACH, ts=nov, change_id="b")
    log.append(kinds.ROLLBACK, ts=nov, change_id="b", ok=True)
    log.append(kinds.CHANGE_RECORDED, ts=nov, change_id="c", monthly_savings_usd=60.0)
    log.append(kinds.CHANGE_FAILED, ts=nov, change_id="c")
    summary = monthly_summary(path, "2026-11")
    assert summary.decisions == 2 and summary.decisions_by_outcome == {"auto": 1, "skip": 1}
    assert (summary.optimisations_started, summary.successes, summary.rollbacks) == (3, 1, 1)
    assert (summary.failures, summary.sla_breaches, summary.monthly_savings_usd) == (1, 1, 120.0)
    text = monthly_report(path, "2026-11")
    assert "$120.00" in text and "rolled back: 1" in text and "Audit chain: verified" in text


def test_report_month_must_be_yyyy_mm(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="YYYY-MM"):
        monthly_report(tmp_path / "a.jsonl", "November")
