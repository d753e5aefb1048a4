"""The one codec for the rightsizer's VM tags: each ``finops.ai/*`` value parsed and rendered here, with one ISO
8601 parser, so the deciding and the acting side read a tag the same way (pure, no I/O).

Formats (``|``-separated, times ISO 8601 UTC such as ``2026-11-27T21:40:00Z``):

- ``finops.ai/change`` = ``<change-id>|<phase>|<target_size>|<time>``: a change in flight (:class:`ChangeTag`).
- ``finops.ai/previous-size`` = ``<size>|<time>|<change-id>``: the size before the last change
  (:class:`PreviousSizeTag`; the change id may be missing in hand-written tags).
- ``finops.ai/recommendation`` = ``<target_size>|<monthly_savings_usd>|<time>`` (:class:`RecommendationTag`).
- ``finops.ai/approval`` = ``<target_size>|<tier>|<approver>|<time>`` (:class:`ApprovalTag`).
- ``finops.ai/optimization-enabled=false`` opts a VM out; ``finops.ai/spot-eligible=false`` out of Spot moves.
- Compliance: a tag named after a regime (``pci-dss``, ``hipaa``, ``sox``, ``fedramp``; any value but ``false``)
  or ``compliance=pci-dss,sox``.

A malformed value raises ``ValueError`` naming the tag and the expected form; each caller decides the safe
reading (a malformed change tag counts as a change in flight, for example).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from rightsizer.domain import (
    APPROVAL_TAG,
    CHANGE_TAG,
    COMPLIANCE_TAG,
    COMPLIANCE_TAGS,
    OPT_OUT_TAG,
    PREVIOUS_SIZE_TAG,
    RECOMMENDATION_TAG,
    ApprovalTier,
)

SPOT_ELIGIBLE_TAG = "finops.ai/spot-eligible"

__all__ = [
    "APPROVAL_TAG",
    "CHANGE_TAG",
    "PREVIOUS_SIZE_TAG",
    "RECOMMENDATION_TAG",
    "SPOT_ELIGIBLE_TAG",
    "UNTAGGED",
    "ApprovalTag",
    "ChangeTag",
    "Phase",
    "PreviousSizeTag",
    "RecommendationTag",
    "change_in_flight",
    "compliance_regimes",
    "group_of",
    "iso",
    "opted_out",
    "parse_iso",
    "parse_iso_epoch",
    "spot_eligible",
]


def iso(when: dt.datetime) -> str:
    """``2026-11-27T21:40:00Z``: UTC, whole seconds."""
    return when.astimezone(dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def parse_iso(text: str) -> dt.datetime:
    """An aware UTC datetime from ISO 8601 with a zone (``Z`` or an offset); ValueError otherwise."""
    t = text.strip()
    if not t.isascii():
        raise ValueError(f"timestamp {t[:40]!r} is not ASCII; expected ISO 8601 UTC like 2026-11-27T21:40:00Z")
    when = dt.datetime.fromisoformat(t.replace("Z", "+00:00"))
    if when.tzinfo is None:
        raise ValueError(f"timestamp {t!r} has no timezone; expected ISO 8601 UTC like 2026-11-27T21:40:00Z")
    return when.astimezone(dt.UTC)


def parse_iso_epoch(text: str) -> float:
    return parse_iso(text).timestamp()


def _fields(name: str, value: str, form: str, counts: tuple[int, ...]) -> list[str]:
    parts = value.split("|")
    if len(parts) not in counts:
        raise ValueError(f"{name}={value[:80]!r}: expected '{form}'")
    return parts


class Phase(StrEnum):
    RECORDED = "recorded"
    DEALLOCATING = "deallocating"
    RESIZING = "resizing"
    STARTING = "starting"
    VALIDATING = "validating"
    DONE = "done"
    ROLLED_BACK = "rolled-back"

    @property
    def finished(self) -> bool:
        return self in (Phase.DONE, Phase.ROLLED_BACK)


@dataclass(frozen=True, slots=True)
class ChangeTag:
    change_id: str
    phase: Phase
    target_size: str
    at: dt.datetime

    FORM = "<change-id>|<phase>|<target_size>|<iso8601 utc>"

    def render(self) -> str:
        return f"{self.change_id}|{self.phase.value}|{self.target_size}|{iso(self.at)}"

    @classmethod
    def parse(cls, value: str) -> ChangeTag:
        parts = _fields(CHANGE_TAG, value, cls.FORM, (4,))
        try:
            phase = Phase(parts[1])
        except ValueError as error:
            raise ValueError(
                f"{CHANGE_TAG}={value[:80]!r}: unknown phase {parts[1][:40]!r}; expected one of "
                f"{[p.value for p in Phase]}"
            ) from error
        return cls(parts[0], phase, parts[2], parse_iso(parts[3]))

    @classmethod
    def of(cls, tags: Mapping[str, str]) -> ChangeTag | None:
        value = tags.get(CHANGE_TAG)
        return None if value is None else cls.parse(value)


def change_in_flight(tags: Mapping[str, str]) -> bool:
    """An unfinished change; a malformed change tag counts as one (the safe reading: leave the VM alone)."""
    try:
        tag = ChangeTag.of(tags)
    except ValueError:
        return True
    return tag is not None and not tag.phase.finished


@dataclass(frozen=True, slots=True)
class PreviousSizeTag:
    size: str
    at: dt.datetime
    change_id: str = ""

    FORM = "<size>|<iso8601 utc>|<change-id>"

    def render(self) -> str:
        return f"{self.size}|{iso(self.at)}|{self.change_id}"

    @classmethod
    def parse(cls, value: str) -> PreviousSizeTag:
        parts = _fields(PREVIOUS_SIZE_TAG, value, cls.FORM, (2, 3))
        return cls(parts[0], parse_iso(parts[1]), parts[2] if len(parts) == 3 else "")

    @classmethod
    def of(cls, tags: Mapping[str, str]) -> PreviousSizeTag | None:
        value = tags.get(PREVIOUS_SIZE_TAG)
        return None if value is None else cls.parse(value)


@dataclass(frozen=True, slots=True)
class RecommendationTag:
    target_size: str
    monthly_savings_usd: float
    at: dt.datetime

    FORM = "<target_size>|<monthly_savings_usd>|<iso8601 utc>"

    def render(self) -> str:
        return f"{self.target_size}|{self.monthly_savings_usd:.2f}|{iso(self.at)}"

    @classmethod
    def parse(cls, value: str) -> RecommendationTag:
        parts = _fields(RECOMMENDATION_TAG, value, cls.FORM, (3,))
        try:
            savings = float(parts[1])
        except ValueError:
            shown = parts[1][:20]
            raise ValueError(f"{RECOMMENDATION_TAG}={value[:80]!r}: savings {shown!r} is not a number") from None
        return cls(parts[0], savings, parse_iso(parts[2]))

    @classmethod
    def of(cls, tags: Mapping[str, str]) -> RecommendationTag | None:
        value = tags.get(RECOMMENDATION_TAG)
        return None if value is None else cls.parse(value)


@dataclass(frozen=True, slots=True)
class ApprovalTag:
    target_size: str
    tier: ApprovalTier
    approver: str
    at: dt.datetime

    FORM = "<target_size>|<automatic|finops-lead|executive>|<approver>|<iso8601 utc>"

    def render(self) -> str:
        return f"{self.target_size}|{self.tier.value}|{self.approver}|{iso(self.at)}"

    @classmethod
    def parse(cls, value: str) -> ApprovalTag:
        parts = _fields(APPROVAL_TAG, value, cls.FORM, (4,))
        try:
            tier = ApprovalTier(parts[1].strip())
        except ValueError:
            raise ValueError(f"{APPROVAL_TAG}={value[:80]!r}: unknown tier {parts[1][:40]!r}") from None
        return cls(parts[0], tier, parts[2], parse_iso(parts[3]))

    @classmethod
    def of(cls, tags: Mapping[str, str]) -> ApprovalTag | None:
        value = tags.get(APPROVAL_TAG)
        return None if value is None else cls.parse(value)


def opted_out(tags: Mapping[str, str]) -> bool:
    return tags.get(OPT_OUT_TAG, "").strip().lower() == "false"


def spot_eligible(tags: Mapping[str, str]) -> bool:
    return tags.get(SPOT_ELIGIBLE_TAG, "").strip().lower() != "false"


UNTAGGED = "(untagged)"
"""The group of VMs without the tag a report groups by."""


def group_of(tags: Any, tag: str) -> str:
    """The value of ``tag`` (name case-insensitive, as Azure treats tag names), or ``(untagged)``."""
    if isinstance(tags, Mapping):
        for name, value in tags.items():
            if str(name).lower() == tag.lower() and str(value).strip():
                return str(value).strip()
    return UNTAGGED


def compliance_regimes(tags: Mapping[str, str]) -> list[str]:
    """The compliance regimes a VM's tags name (sorted, lower case)."""
    lowered = {k.lower(): v for k, v in tags.items()}
    found = [t for t in COMPLIANCE_TAGS if t in lowered and lowered[t].strip().lower() != "false"]
    listed = tags.get(COMPLIANCE_TAG, "")
    found += [r.strip().lower() for r in listed.replace(";", ",").split(",") if r.strip().lower() in COMPLIANCE_TAGS]
    return sorted(set(found))
