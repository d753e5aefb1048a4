"""The monthly report for finance and compliance, built from the audit log; totals by a tag for chargeback.

Savings conventions as everywhere in the rightsizer: retail pay-as-you-go, monthly = hourly x 730. "In effect" is
the savings of changes done in the month and not rolled back; "recommended" is the latest decision of the month
per VM (resizes and shutdowns that passed the skip gates), whether applied or not.
"""

from __future__ import annotations

import datetime as dt
import os
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from rightsizer.audit import (
    APPROVAL,
    CHANGE_DONE,
    CHANGE_FAILED,
    CHANGE_RECORDED,
    DECISION,
    RECOVERY,
    ROLLBACK,
    SLA_BREACH,
    SPOT,
    AuditLog,
)
from rightsizer.tags import UNTAGGED, group_of

RECOMMENDED_DECISIONS = ("auto", "approved", "needs-approval", "recommend-only")
RECOMMENDED_ACTIONS = ("resize", "shutdown")


def parse_month(month: str) -> tuple[dt.datetime, dt.datetime]:
    try:
        start = dt.datetime.strptime(month, "%Y-%m").replace(tzinfo=dt.UTC)
    except ValueError as error:
        raise ValueError(f"month must be YYYY-MM (e.g. 2026-11), got {month!r}") from error
    end = start.replace(year=start.year + 1, month=1) if start.month == 12 else start.replace(month=start.month + 1)
    return start, end


@dataclass(frozen=True, slots=True)
class GroupTotals:
    group: str
    vms: int = 0
    recommended_monthly_savings_usd: float = 0.0
    changes_in_effect: int = 0
    in_effect_monthly_savings_usd: float = 0.0


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
    chain_note: str = ""
    group_by: str | None = None
    groups: Sequence[GroupTotals] = field(default_factory=tuple)


def _in_month(records: Sequence[Mapping[str, Any]], start: dt.datetime, end: dt.datetime) -> list[Mapping[str, Any]]:
    out = []
    for record in records:
        try:
            when = dt.datetime.fromisoformat(str(record.get("ts")))
        except ValueError:
            continue
        if start <= when < end:
            out.append(record)
    return out


def _groups(
    in_month: Sequence[Mapping[str, Any]],
    done: Sequence[Mapping[str, Any]],
    recorded: Mapping[str, Mapping[str, Any]],
    tag: str,
) -> tuple[GroupTotals, ...]:
    latest: dict[str, Mapping[str, Any]] = {}
    for record in in_month:
        if record.get("kind") == DECISION and record.get("vm") is not None:
            latest[str(record["vm"])] = record
    vms: dict[str, set[str]] = defaultdict(set)
    recommended: dict[str, float] = defaultdict(float)
    for vm, record in latest.items():
        group = group_of(record.get("tags"), tag)
        vms[group].add(vm)
        savings = float(record.get("monthly_savings_usd") or 0.0)
        if (
            record.get("decision") in RECOMMENDED_DECISIONS
            and record.get("action", "resize") in RECOMMENDED_ACTIONS
            and savings > 0
        ):
            recommended[group] += savings
    changes: Counter[str] = Counter()
    in_effect: dict[str, float] = defaultdict(float)
    for record in done:
        before = recorded.get(str(record.get("change_id")), {})
        group = group_of(before.get("tags", record.get("tags")), tag)
        changes[group] += 1
        in_effect[group] += float(record.get("monthly_savings_usd") or 0.0)
    names = sorted(set(vms) | set(changes), key=lambda g: (g == UNTAGGED, g))
    return tuple(
        GroupTotals(
            group=name,
            vms=len(vms.get(name, ())),
            recommended_monthly_savings_usd=round(recommended.get(name, 0.0), 2),
            changes_in_effect=changes[name],
            in_effect_monthly_savings_usd=round(in_effect.get(name, 0.0), 2),
        )
        for name in names
    )


def monthly_summary(
    path: str | os.PathLike[str],
    month: str,
    *,
    key: bytes | None = None,
    group_by: str | None = None,
) -> MonthlySummary:
    start, end = parse_month(month)
    audit = AuditLog(path, key=key)
    verification = audit.verify()
    records = audit.records()
    in_month = _in_month(records, start, end)
    kinds = Counter(str(r.get("kind")) for r in in_month)
    outcomes = Counter(str(r.get("decision")) for r in in_month if r.get("kind") == DECISION)
    rolled_back = {r.get("change_id") for r in in_month if r.get("kind") == ROLLBACK}
    done = [r for r in in_month if r.get("kind") == CHANGE_DONE and r.get("change_id") not in rolled_back]
    recorded = {str(r.get("change_id")): r for r in records if r.get("kind") == CHANGE_RECORDED}
    savings = sum(float(r.get("monthly_savings_usd") or 0.0) for r in done)
    return MonthlySummary(
        month=month,
        decisions=kinds[DECISION],
        decisions_by_outcome=dict(sorted(outcomes.items())),
        approvals=kinds[APPROVAL],
        optimisations_started=kinds[CHANGE_RECORDED],
        successes=len(done),
        failures=kinds[CHANGE_FAILED],
        rollbacks=kinds[ROLLBACK],
        sla_breaches=kinds[SLA_BREACH],
        recoveries=kinds[RECOVERY],
        spot_actions=kinds[SPOT],
        monthly_savings_usd=round(savings, 2),
        chain_ok=verification.ok,
        chain_note=verification.describe(path),
        group_by=group_by,
        groups=_groups(in_month, done, recorded, group_by) if group_by else (),
    )


def monthly_report(
    path: str | os.PathLike[str],
    month: str,
    *,
    key: bytes | None = None,
    group_by: str | None = None,
) -> str:
    """A plain-text monthly summary for finance and compliance (with ``group_by``: a table per tag value)."""
    summary = monthly_summary(path, month, key=key, group_by=group_by)
    outcomes = ", ".join(f"{name} {count}" for name, count in summary.decisions_by_outcome.items()) or "none"
    lines = [
        f"Rightsizer report for {summary.month} (audit log {path})",
        "Audit chain: " + ("verified" if summary.chain_ok else f"NOT VERIFIED - {summary.chain_note}"),
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
    if summary.group_by:
        lines += ["", f"By tag {summary.group_by!r} (VMs without it: {UNTAGGED}):"]
        lines.append(group_table(summary.group_by, summary.groups))
    return "\n".join(lines) + "\n"


def group_table(tag: str, groups: Sequence[GroupTotals]) -> str:
    cols = (tag.upper(), "VMS", "RECOMMENDED/MO", "CHANGES", "IN EFFECT/MO")
    rows = [
        (
            g.group,
            str(g.vms),
            f"${g.recommended_monthly_savings_usd:,.2f}",
            str(g.changes_in_effect),
            f"${g.in_effect_monthly_savings_usd:,.2f}",
        )
        for g in groups
    ]
    widths = [max(len(c), *(len(r[i]) for r in rows)) if rows else len(c) for i, c in enumerate(cols)]

    def fmt(values: Sequence[str]) -> str:
        return "  ".join(v.ljust(widths[i]) if i == 0 else v.rjust(widths[i]) for i, v in enumerate(values)).rstrip()

    return "\n".join([fmt(cols), *(fmt(r) for r in rows)])
