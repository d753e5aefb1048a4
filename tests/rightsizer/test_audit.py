"""The hash-chained audit log: appends, tamper detection, locking across processes, the monthly report."""

from __future__ import annotations

import datetime as dt
import itertools
import json
import multiprocessing
from pathlib import Path

import pytest

from rightsizer import audit as kinds
from rightsizer.audit import GENESIS_HASH, AuditLog, AuditLogError, record_hash
from rightsizer.report import monthly_report, monthly_summary

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


# -- expectations: an emptied or cut log, keyed chaining, an anchored head ------------------------------------

KEY = b"k" * 32


def test_an_emptied_log_fails_when_its_head_file_says_records_exist(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log = filled(path, 3)
    assert log.read_head() is not None and log.read_head().seq == 3  # type: ignore[union-attr]
    path.write_text("", encoding="utf-8")
    result = AuditLog(path).verify()
    assert not result.ok and "names record 3" in result.reason and "cut off the end" in result.reason
    filled(tmp_path / "b.jsonl", 4)
    cut = tmp_path / "b.jsonl"
    cut.write_text("".join(lines(cut)[:2]), encoding="utf-8")
    assert not AuditLog(cut).verify().ok
    assert AuditLog(cut).verify(use_head_file=False).ok  # the chain alone cannot tell


def test_min_records_fails_on_an_empty_log(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    path.write_text("", encoding="utf-8")
    assert AuditLog(path).verify().ok
    result = AuditLog(path).verify(min_records=1)
    assert not result.ok and "0 records, at least 1 expected" in result.reason


def _rehash_after_edit(path: Path, key: bytes | None) -> None:
    """What someone with write access does: edit record 2, then recompute every hash after it."""
    records = [json.loads(line) for line in lines(path)]
    records[1]["decision"] = "skip"
    prev = records[0]["hash"]
    for record in records[1:]:
        record["prev"] = prev
        record["hash"] = record_hash(record, key)
        prev = record["hash"]
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")


def test_a_rehashed_chain_passes_unkeyed_but_not_keyed(tmp_path: Path) -> None:
    plain = tmp_path / "plain.jsonl"
    filled(plain, 4)
    _rehash_after_edit(plain, None)
    # What the unkeyed chain cannot find by itself; the head file does, unless it was rewritten too.
    assert AuditLog(plain).verify(use_head_file=False).ok
    assert not AuditLog(plain).verify().ok
    keyed = tmp_path / "keyed.jsonl"
    log = AuditLog(keyed, key=KEY)
    for i in range(4):
        log.append("decision", ts=T0, vm=f"vm{i}", decision="auto")
    assert all(r["mac"] == "hmac-sha256" for r in log.records())
    assert AuditLog(keyed, key=KEY).verify().ok
    _rehash_after_edit(keyed, None)  # without the key: plain SHA-256 is all an attacker can compute
    result = AuditLog(keyed, key=KEY).verify()
    assert not result.ok and result.first_bad_line == 2 and "HMAC does not match" in result.reason
    _rehash_after_edit(keyed, b"w" * 32)  # a wrong key
    assert not AuditLog(keyed, key=KEY).verify().ok


def test_keyed_and_unkeyed_modes_do_not_mix(tmp_path: Path) -> None:
    keyed = tmp_path / "keyed.jsonl"
    AuditLog(keyed, key=KEY).append("decision")
    result = AuditLog(keyed).verify()
    assert not result.ok and "pass the key" in result.reason
    with pytest.raises(AuditLogError, match="keeps one mode"):
        AuditLog(keyed).append("decision")
    plain = filled(tmp_path / "plain.jsonl", 2)
    with pytest.raises(AuditLogError, match="keeps one mode"):
        AuditLog(plain.path, key=KEY).append("decision")
    result = AuditLog(plain.path, key=KEY).verify()
    assert not result.ok and "unkeyed record in a keyed check" in result.reason


def test_an_anchored_head_finds_a_rehash_and_a_cut(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log = filled(path, 4)
    anchored = log.verify().last_hash
    log.append("decision", ts=T0, vm="later")
    assert log.verify(expect_head=anchored).ok  # the log grew: the anchored head is still in it
    _rehash_after_edit(path, None)
    result = AuditLog(path).verify(expect_head=anchored, use_head_file=False)
    assert not result.ok and "is not in the chain" in result.reason


def test_the_audit_key_comes_from_a_file_or_the_environment(tmp_path: Path) -> None:
    from rightsizer.audit import AuditKeyError, load_audit_key

    assert load_audit_key(None, env={}) is None
    assert load_audit_key(None, env={"FORESIGHT_AUDIT_KEY": "e" * 20}) == b"e" * 20
    key_file = tmp_path / "key"
    key_file.write_bytes(b"f" * 24 + b"\n")
    assert load_audit_key(key_file, env={"FORESIGHT_AUDIT_KEY": "e" * 20}) == b"f" * 24
    key_file.write_bytes(b"short")
    with pytest.raises(AuditKeyError, match="at least 16 bytes"):
        load_audit_key(key_file)
    with pytest.raises(AuditKeyError, match="cannot read audit key file"):
        load_audit_key(tmp_path / "missing")


def test_monthly_report_groups_by_a_tag_with_untagged_vms_apart(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path)
    nov = dt.datetime(2026, 11, 10, tzinfo=dt.UTC)
    team_a = {"Owner": "team-a"}
    log.append(
        kinds.DECISION, ts=nov, vm="a1", decision="auto", action="resize", monthly_savings_usd=100.0, tags=team_a
    )
    log.append(kinds.DECISION, ts=nov, vm="a2", decision="skip", action="none", monthly_savings_usd=0.0, tags=team_a)
    log.append(
        kinds.DECISION,
        ts=nov,
        vm="b1",
        decision="needs-approval",
        action="resize",
        monthly_savings_usd=300.0,
        tags={"owner": "team-b"},
    )
    log.append(kinds.DECISION, ts=nov, vm="x1", decision="auto", action="resize", monthly_savings_usd=40.0, tags={})
    log.append(kinds.CHANGE_RECORDED, ts=nov, change_id="c1", vm="a1", monthly_savings_usd=100.0, tags=team_a)
    log.append(kinds.CHANGE_DONE, ts=nov, change_id="c1", vm="a1", monthly_savings_usd=100.0)
    summary = monthly_summary(path, "2026-11", group_by="owner")
    groups = {g.group: g for g in summary.groups}
    assert list(groups) == ["team-a", "team-b", "(untagged)"]
    assert (groups["team-a"].vms, groups["team-a"].recommended_monthly_savings_usd) == (2, 100.0)
    assert (groups["team-a"].changes_in_effect, groups["team-a"].in_effect_monthly_savings_usd) == (1, 100.0)
    assert groups["team-b"].recommended_monthly_savings_usd == 300.0 and groups["team-b"].changes_in_effect == 0
    assert groups["(untagged)"].recommended_monthly_savings_usd == 40.0
    text = monthly_report(path, "2026-11", group_by="owner")
    assert "By tag 'owner'" in text and "team-b" in text and "$300.00" in text
