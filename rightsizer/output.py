"""Recommendations as a readable table, JSON or CSV, each with totals.

Money: monthly = hourly x 730 at Azure retail pay-as-you-go prices (reservations and savings plans ignored),
the convention Azure Advisor and the pricing calculator use.
"""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from rightsizer.domain import Action, Decision, Recommendation
from rightsizer.tags import UNTAGGED, group_of

PRICING_NOTE = "monthly = hourly x 730 at Azure retail pay-as-you-go prices (USD)"
FIELDS = (
    "vm",
    "current_size",
    "target_size",
    "action",
    "monthly_savings_usd",
    "confidence",
    "decision",
    "reason",
)


@dataclass(frozen=True, slots=True)
class Totals:
    vms: int
    by_decision: dict[str, int]
    by_action: dict[str, int]
    applicable_monthly_savings_usd: float
    """Savings of resizes that would be applied now (auto + approved)."""
    pending_approval_monthly_savings_usd: float
    recommended_monthly_savings_usd: float
    """Savings of every recommended resize and shutdown that passed the skip gates."""

    def as_dict(self) -> dict[str, Any]:
        return {
            "vms": self.vms,
            "by_decision": self.by_decision,
            "by_action": self.by_action,
            "applicable_monthly_savings_usd": round(self.applicable_monthly_savings_usd, 2),
            "pending_approval_monthly_savings_usd": round(self.pending_approval_monthly_savings_usd, 2),
            "recommended_monthly_savings_usd": round(self.recommended_monthly_savings_usd, 2),
        }


def totals(recs: Sequence[Recommendation]) -> Totals:
    def savings(decisions: tuple[Decision, ...], actions: tuple[Action, ...] = (Action.RESIZE,)) -> float:
        return sum(
            r.monthly_savings_usd
            for r in recs
            if r.decision in decisions and r.action in actions and r.monthly_savings_usd > 0
        )

    return Totals(
        vms=len(recs),
        by_decision=dict(sorted(Counter(r.decision.value for r in recs).items())),
        by_action=dict(sorted(Counter(r.action.value for r in recs).items())),
        applicable_monthly_savings_usd=savings((Decision.AUTO, Decision.APPROVED)),
        pending_approval_monthly_savings_usd=savings((Decision.NEEDS_APPROVAL,)),
        recommended_monthly_savings_usd=savings(
            (Decision.AUTO, Decision.APPROVED, Decision.NEEDS_APPROVAL, Decision.RECOMMEND_ONLY),
            (Action.RESIZE, Action.SHUTDOWN),
        ),
    )


def totals_by_group(recs: Sequence[Recommendation], tag: str) -> list[tuple[str, Totals]]:
    """Totals per value of ``tag`` (chargeback), tagged groups by name, untagged VMs last in their own group."""
    groups: dict[str, list[Recommendation]] = {}
    for rec in recs:
        groups.setdefault(group_of(rec.vm.tags, tag), []).append(rec)
    return [(name, totals(groups[name])) for name in sorted(groups, key=lambda g: (g == UNTAGGED, g))]


def row(rec: Recommendation) -> dict[str, Any]:
    return {
        "vm": rec.vm.name,
        "current_size": rec.current_size,
        "target_size": rec.target_size,
        "action": rec.action.value,
        "monthly_savings_usd": round(rec.monthly_savings_usd, 2),
        "confidence": round(rec.confidence, 3),
        "decision": rec.decision.value,
        "reason": rec.reason,
    }


def full_row(rec: Recommendation) -> dict[str, Any]:
    """Every field of a recommendation: JSON's objects and CSV's rows are these (CSV writes stats as JSON)."""
    return {
        **row(rec),
        "id": rec.vm.id,
        "approval_tier": rec.approval_tier.value,
        "gate": rec.gate,
        "current_monthly_usd": rec.current_monthly_usd,
        "target_monthly_usd": rec.target_monthly_usd,
        "stats": dict(rec.stats),
    }


CSV_FIELDS = (*FIELDS, "id", "approval_tier", "gate", "current_monthly_usd", "target_monthly_usd", "stats")


def to_json(
    recs: Sequence[Recommendation], *, header: dict[str, Any] | None = None, group_by: str | None = None
) -> str:
    doc: dict[str, Any] = dict(header or {})
    doc["pricing"] = PRICING_NOTE
    doc["recommendations"] = [full_row(r) for r in recs]
    doc["totals"] = totals(recs).as_dict()
    if group_by:
        doc["totals_by_group"] = {
            "tag": group_by,
            "groups": [{"group": name, **t.as_dict()} for name, t in totals_by_group(recs, group_by)],
        }
    return json.dumps(doc, indent=2) + "\n"


def to_csv(recs: Sequence[Recommendation], *, as_of: str | None = None, group_by: str | None = None) -> str:
    """One row per VM with the JSON's fields, and nothing else: totals are sums a reader computes (or takes
    from the JSON output), never a row that a spreadsheet would add to the data. ``as_of`` and ``group_by``
    (the VM's value of that tag) become columns."""
    fields = [*CSV_FIELDS, *(["as_of"] if as_of else []), *([f"tag:{group_by}"] if group_by else [])]
    out = io.StringIO()
    w = csv.DictWriter(out, fieldnames=fields, lineterminator="\n")
    w.writeheader()
    for r in recs:
        values = full_row(r)
        values["stats"] = json.dumps(values["stats"], sort_keys=True, separators=(",", ":"))
        if as_of:
            values["as_of"] = as_of
        if group_by:
            values[f"tag:{group_by}"] = group_of(r.vm.tags, group_by)
        w.writerow({k: ("" if v is None else v) for k, v in values.items()})
    return out.getvalue()


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


TABLE_WIDTH = 180
"""The table fits a 180-column terminal: the reason column takes what the others leave."""


def format_savings(usd: float) -> str:
    """A saving, or what an upsize costs: never a negative saving."""
    return f"${usd:,.2f}" if usd >= 0 else f"costs ${-usd:,.2f} more"


def to_table(
    recs: Sequence[Recommendation],
    *,
    header_lines: Sequence[str] = (),
    width: int = TABLE_WIDTH,
    group_by: str | None = None,
) -> str:
    cols = ("VM", "CURRENT", "TARGET", "ACTION", "SAVINGS/MO", "CONF", "DECISION", "REASON")
    cells = [
        (
            _clip(r.vm.name, 40),
            r.current_size,
            r.target_size or "-",
            r.action.value,
            format_savings(r.monthly_savings_usd),
            f"{r.confidence:.2f}",
            r.decision.value,
            r.reason,
        )
        for r in recs
    ]
    fixed = [max(len(c), *(len(x[i]) for x in cells)) if cells else len(c) for i, c in enumerate(cols[:-1])]
    reason_width = max(20, width - sum(fixed) - 2 * len(fixed))
    rows = [(*x[:-1], _clip(x[-1], reason_width)) for x in cells]
    widths = [*fixed, max(len(cols[-1]), *(len(x[-1]) for x in rows)) if rows else len(cols[-1])]
    right = {4, 5}

    def fmt(values: Sequence[str]) -> str:
        cells = [v.rjust(widths[i]) if i in right else v.ljust(widths[i]) for i, v in enumerate(values)]
        return "  ".join(cells).rstrip()

    lines = [*header_lines, fmt(cols), fmt(["-" * w for w in widths])]
    lines += [fmt(x) for x in rows]
    t = totals(recs)
    lines.append("")
    lines.append(
        f"TOTAL {t.vms} VMs: "
        + ", ".join(f"{v} {k}" for k, v in t.by_decision.items())
        + f" | applicable now ${t.applicable_monthly_savings_usd:,.2f}/month"
        + f" | awaiting approval ${t.pending_approval_monthly_savings_usd:,.2f}/month"
        + f" | all recommendations ${t.recommended_monthly_savings_usd:,.2f}/month"
    )
    lines.append(f"({PRICING_NOTE})")
    if group_by:
        lines += ["", f"By tag {group_by!r} (VMs without it: {UNTAGGED}):", _group_table(group_by, recs)]
    return "\n".join(lines) + "\n"


def _group_table(tag: str, recs: Sequence[Recommendation]) -> str:
    cols = (tag.upper(), "VMS", "APPLICABLE/MO", "AWAITING APPROVAL/MO", "ALL RECOMMENDED/MO")
    rows = [
        (
            name,
            str(g.vms),
            f"${g.applicable_monthly_savings_usd:,.2f}",
            f"${g.pending_approval_monthly_savings_usd:,.2f}",
            f"${g.recommended_monthly_savings_usd:,.2f}",
        )
        for name, g in totals_by_group(recs, tag)
    ]
    widths = [max(len(c), *(len(r[i]) for r in rows)) if rows else len(c) for i, c in enumerate(cols)]

    def fmt(values: Sequence[str]) -> str:
        return "  ".join(v.ljust(widths[i]) if i == 0 else v.rjust(widths[i]) for i, v in enumerate(values)).rstrip()

    return "\n".join([fmt(cols), *(fmt(r) for r in rows)])
