"""The tags that carry a change's state between CronJob runs (formats from the rightsizer contract)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from rightsizer.act.settings import APPROVAL_TAG, CHANGE_TAG, RECOMMENDATION_TAG
from rightsizer.domain import PREVIOUS_SIZE_TAG

__all__ = [
    "APPROVAL_TAG",
    "CHANGE_TAG",
    "PREVIOUS_SIZE_TAG",
    "RECOMMENDATION_TAG",
    "ChangeTag",
    "Phase",
    "PreviousSizeTag",
]


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


def iso(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def parse_iso(text: str) -> dt.datetime:
    when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    if when.tzinfo is None:
        raise ValueError(f"timestamp {text!r} has no timezone; expected ISO 8601 UTC like 2026-11-27T21:40:00Z")
    return when.astimezone(dt.UTC)


@dataclass(frozen=True, slots=True)
class ChangeTag:
    change_id: str
    phase: Phase
    target_size: str
    at: dt.datetime

    def render(self) -> str:
        return f"{self.change_id}|{self.phase.value}|{self.target_size}|{iso(self.at)}"

    @classmethod
    def parse(cls, value: str) -> ChangeTag:
        parts = value.split("|")
        if len(parts) != 4:
            raise ValueError(f"{CHANGE_TAG}={value!r}: expected '<change-id>|<phase>|<target_size>|<iso8601 utc>'")
        try:
            phase = Phase(parts[1])
        except ValueError as error:
            raise ValueError(
                f"{CHANGE_TAG}={value!r}: unknown phase {parts[1]!r}; expected one of {[p.value for p in Phase]}"
            ) from error
        return cls(parts[0], phase, parts[2], parse_iso(parts[3]))

    @classmethod
    def of(cls, tags: Mapping[str, str]) -> ChangeTag | None:
        value = tags.get(CHANGE_TAG)
        return None if value is None else cls.parse(value)


@dataclass(frozen=True, slots=True)
class PreviousSizeTag:
    size: str
    at: dt.datetime
    change_id: str

    def render(self) -> str:
        return f"{self.size}|{iso(self.at)}|{self.change_id}"

    @classmethod
    def parse(cls, value: str) -> PreviousSizeTag:
        parts = value.split("|")
        if len(parts) != 3:
            raise ValueError(f"{PREVIOUS_SIZE_TAG}={value!r}: expected '<size>|<iso8601 utc>|<change-id>'")
        return cls(parts[0], parse_iso(parts[1]), parts[2])

    @classmethod
    def of(cls, tags: Mapping[str, str]) -> PreviousSizeTag | None:
        value = tags.get(PREVIOUS_SIZE_TAG)
        return None if value is None else cls.parse(value)
