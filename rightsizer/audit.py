"""Append-only JSON Lines audit log with a hash chain, and the monthly report built from it.

Each line is one JSON object::

    {"seq": 7, "ts": "2026-11-27T21:40:00+00:00", "kind": "change-done", ...fields..., "prev": "<hash of line 6>",
     "hash": "<sha256 of this record without 'hash', as canonical JSON>"}

Canonical JSON: ``json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False)`` in UTF-8. The
first record's ``prev`` is 64 zeros. :meth:`AuditLog.verify` recomputes every hash and link and names the first
bad line, so editing, deleting, reordering or cutting records out of the middle is detected. Cutting records off
the *end* leaves a valid shorter chain: keep the last hash elsewhere (``VerifyResult.last_hash``, printed by
``rightsizer audit verify``) if that matters.

Appends take an exclusive ``fcntl.flock`` on the file, so two runs cannot interleave or fork the chain.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import hashlib
import json
import os
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import structlog

GENESIS_HASH = "0" * 64

# Not cached on first use: a CLI test configuring structlog must not pin these loggers to its stream.
log = structlog.wrap_logger(None, logger_factory_args=(__name__,), cache_logger_on_first_use=False)

# Record kinds written by the rightsizer (other kinds are allowed and counted as "other" in the report).
DECISION = "decision"
APPROVAL = "approval"
CHANGE_RECORDED = "change-recorded"
CHANGE_PHASE = "change-phase"
CHANGE_DONE = "change-done"
CHANGE_FAILED = "change-failed"
VALIDATION = "validation"
ROLLBACK = "rollback"
SLA_BREACH = "sla-breach"
RECOVERY = "recovery"
SPOT = "spot"


def canonical_json(record: Mapping[str, Any]) -> str:
    return json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def record_hash(record: Mapping[str, Any]) -> str:
    body = {key: value for key, value in record.items() if key != "hash"}
    return hashlib.sha256(canonical_json(body).encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class VerifyResult:
    ok: bool
    records: int
    first_bad_line: int | None = None
    """1-based line number of the first record that fails."""
    reason: str = ""
    last_hash: str = GENESIS_HASH

    def describe(self, path: str | os.PathLike[str]) -> str:
        if self.ok:
            return f"{path}: OK, {self.records} records, chain head {self.last_hash}"
        return f"{path}: TAMPERED at line {self.first_bad_line}: {self.reason}"


class AuditLogError(ValueError):
    pass


class AuditLog:
    """The audit log at ``path`` (created on first append). Safe across threads and processes."""

    def __init__(self, path: str | os.PathLike[str], *, now_fn: Callable[[], dt.datetime] | None = None) -> None:
        self.path = Path(path)
        self._now_fn = now_fn or (lambda: dt.datetime.now(dt.UTC))

    @contextlib.contextmanager
    def _locked(self) -> Iterator[IO[bytes]]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a+b") as handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            try:
                yield handle
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)

    @staticmethod
    def _last_line(handle: IO[bytes]) -> bytes | None:
        handle.seek(0, os.SEEK_END)
        end = handle.tell()
        if end == 0:
            return None
        block = 4096
        position = end
        data = b""
        while position > 0:
            step = min(block, position)
            position -= step
            handle.seek(position)
            data = handle.read(step) + data
            stripped = data.rstrip(b"\n")
            if b"\n" in stripped:
                return stripped.rsplit(b"\n", 1)[1]
        return data.rstrip(b"\n") or None

    def append(self, kind: str, *, ts: dt.datetime | None = None, **fields: Any) -> dict[str, Any]:
        """Append one record and return it (with ``seq``, ``ts``, ``prev`` and ``hash``)."""
        if not kind:
            raise AuditLogError("audit record kind must be a non-empty string")
        reserved = {"seq", "ts", "kind", "prev", "hash"} & fields.keys()
        if reserved:
            raise AuditLogError(f"audit fields {sorted(reserved)} are reserved; rename them")
        when = (ts or self._now_fn()).astimezone(dt.UTC)
        with self._locked() as handle:
            last = self._last_line(handle)
            if last is None:
                seq, prev = 1, GENESIS_HASH
            else:
                try:
                    previous = json.loads(last)
                    seq, prev = int(previous["seq"]) + 1, str(previous["hash"])
                except (ValueError, KeyError, TypeError) as error:
                    raise AuditLogError(
                        f"{self.path}: the last line is not an audit record ({error}); run `rightsizer audit verify`"
                    ) from error
            record: dict[str, Any] = {
                "seq": seq,
                "ts": when.isoformat(),
                "kind": kind,
                **fields,
                "prev": prev,
            }
            record = json.loads(canonical_json(record))
            record["hash"] = record_hash(record)
            handle.seek(0, os.SEEK_END)
            handle.write((canonical_json(record) + "\n").encode("utf-8"))
            handle.flush()
            os.fsync(handle.fileno())
        log.info("audit." + kind, **{k: v for k, v in record.items() if k not in ("prev", "hash", "kind")})
        return record

    def records(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        result = []
        with open(self.path, encoding="utf-8") as handle:
            for line in handle:
                if line.strip():
                    result.append(json.loads(line))
        return result

    def verify(self) -> VerifyResult:
        """Check every record's hash and its link to the one before; name the first bad line."""
        if not self.path.exists():
            return VerifyResult(True, 0)
        prev = GENESIS_HASH
        count = 0
        with open(self.path, encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    return VerifyResult(False, count, number, "empty line", prev)
                try:
                    record = json.loads(line)
                except ValueError as error:
                    return VerifyResult(False, count, number, f"not JSON ({error})", prev)
                if not isinstance(record, dict) or "hash" not in record or "prev" not in record:
                    return VerifyResult(False, count, number, "not an audit record (no hash/prev)", prev)
                if record.get("seq") != number:
                    return VerifyResult(
                        False,
                        count,
                        number,
                        f"seq is {record.get('seq')!r}, expected {number} (deleted/reordered)",
                        prev,
                    )
                if record["prev"] != prev:
                    return VerifyResult(
                        False,
                        count,
                        number,
                        "prev does not match the previous record's hash (deleted/reordered)",
                        prev,
                    )
                if record_hash(record) != record["hash"]:
                    return VerifyResult(False, count, number, "hash does not match the content (edited)", prev)
                prev = record["hash"]
                count += 1
        return VerifyResult(True, count, last_hash=prev)


def _parse_month(month: str) -> tuple[dt.datetime, dt.datetime]:
    try:
        start = dt.datetime.strptime(month, "%Y-%m").replace(tzinfo=dt.UTC)
    except ValueError as error:
        raise ValueError(f"month must be YYYY-MM (e.g. 2026-11), got {month!r}") from error
    end = start.replace(year=start.year + 1, month=1) if start.month == 12 else start.replace(month=start.month + 1)
    return start, end


@dataclass(frozen=True, slots=True)
class MonthlySummary:
    month: str
    decisions: int
    decisions_by_outcome: Mapping[str, int]
    approvals: int
    optimisations_started: int
    successes: int
    failures: int
    rollbacks: int
    sla_breaches: int
    recoveries: int
    spot_actions: int
    monthly_savings_usd: float
    """Sum of the monthly savings of changes that succeeded (and were not rolled back) in the month."""
    chain_ok: bool


def monthly_summary(path: str | os.PathLike[str], month: str) -> MonthlySummary:
    start, end = _parse_month(month)
    audit = AuditLog(path)
    verification = audit.verify()
    in_month = []
    for record in audit.records():
        try:
            when = dt.datetime.fromisoformat(str(record.get("ts")))
        except ValueError:
            continue
        if start <= when < end:
            in_month.append(record)
    kinds = Counter(str(r.get("kind")) for r in in_month)
    outcomes = Counter(str(r.get("decision")) for r in in_month if r.get("kind") == DECISION)
    rolled_back = {r.get("change_id") for r in in_month if r.get("kind") == ROLLBACK}
    savings = sum(
        float(r.get("monthly_savings_usd") or 0.0)
        for r in in_month
        if r.get("kind") == CHANGE_DONE and r.get("change_id") not in rolled_back
    )
    return MonthlySummary(
        month=month,
        decisions=kinds[DECISION],
        decisions_by_outcome=dict(sorted(outcomes.items())),
        approvals=kinds[APPROVAL],
        optimisations_started=kinds[CHANGE_RECORDED],
        successes=sum(1 for r in in_month if r.get("kind") == CHANGE_DONE and r.get("change_id") not in rolled_back),
        failures=kinds[CHANGE_FAILED],
        rollbacks=kinds[ROLLBACK],
        sla_breaches=kinds[SLA_BREACH],
        recoveries=kinds[RECOVERY],
        spot_actions=kinds[SPOT],
        monthly_savings_usd=round(savings, 2),
        chain_ok=verification.ok,
    )


def monthly_report(path: str | os.PathLike[str], month: str) -> str:
    """A plain-text monthly summary for finance and compliance."""
    summary = monthly_summary(path, month)
    outcomes = ", ".join(f"{name} {count}" for name, count in summary.decisions_by_outcome.items()) or "none"
    lines = [
        f"Rightsizer report for {summary.month} (audit log {path})",
        f"Audit chain: {'verified' if summary.chain_ok else 'TAMPERED - run `rightsizer audit verify`'}",
        f"Decisions recorded: {summary.decisions} ({outcomes})",
        f"Approvals recorded: {summary.approvals}",
        f"Optimisations started: {summary.optimisations_started}",
        f"  succeeded: {summary.successes}",
        f"  failed (VM left at its previous size): {summary.failures}",
        f"  rolled back: {summary.rollbacks}",
        f"SLA breaches detected in validation: {summary.sla_breaches}",
        f"Crashed changes recovered: {summary.recoveries}",
        f"Spot fallback actions: {summary.spot_actions}",
        f"Monthly savings of changes in effect: ${summary.monthly_savings_usd:,.2f} (retail, hourly x 730)",
    ]
    return "\n".join(lines) + "\n"
