"""Settings of the acting side: when, how many, how to validate, how to alert, and Spot fallback.

Nested in the rightsizer's settings as ``Settings.act``; :meth:`ActSettings.from_mapping` reads the ``act:``
section of the config file and names the field and accepted form for anything it refuses.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from rightsizer.domain import APPROVAL_TAG, CHANGE_TAG, RECOMMENDATION_TAG

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")

__all__ = [
    "APPROVAL_TAG",
    "CHANGE_TAG",
    "RECOMMENDATION_TAG",
    "SPOT_STATE_TAG",
    "ActSettings",
    "HealthSignal",
    "MaintenanceWindow",
    "SpotSettings",
]

SPOT_STATE_TAG = "finops.ai/spot-state"

DEFAULT_CPU_SUSTAINED_QUERY = (
    'min_over_time((100 - avg by (instance) (rate(node_cpu_seconds_total{{mode="idle",instance="{vm}"}}[1m]))'
    " * 100)[5m:1m])"
)


class ActSettingsError(ValueError):
    """A refused act setting; the message names the field and the accepted form."""


@dataclass(frozen=True, slots=True)
class MaintenanceWindow:
    """Changes start only inside this weekly window (UTC). ``end_hour <= start_hour`` wraps past midnight:
    ``start_hour=22, end_hour=4`` is 22:00-04:00, counted on the day it starts."""

    days: tuple[str, ...] = WEEKDAYS
    start_hour: int = 0
    end_hour: int = 24

    def __post_init__(self) -> None:
        bad = [d for d in self.days if d not in WEEKDAYS]
        if bad or not self.days:
            raise ActSettingsError(f"maintenance_window.days: {bad or 'empty'} not accepted; use some of {WEEKDAYS}")
        if not 0 <= self.start_hour <= 23:
            raise ActSettingsError(f"maintenance_window.start_hour must be 0-23, got {self.start_hour}")
        if not 1 <= self.end_hour <= 24:
            raise ActSettingsError(f"maintenance_window.end_hour must be 1-24, got {self.end_hour}")

    def contains(self, now: dt.datetime) -> bool:
        if now.tzinfo is None:
            raise ValueError("now must be timezone-aware (UTC)")
        now = now.astimezone(dt.UTC)
        hour = now.hour + now.minute / 60 + now.second / 3600
        today = WEEKDAYS[now.weekday()]
        yesterday = WEEKDAYS[(now.weekday() - 1) % 7]
        if self.start_hour < self.end_hour:
            return today in self.days and self.start_hour <= hour < self.end_hour
        return (today in self.days and hour >= self.start_hour) or (yesterday in self.days and hour < self.end_hour)


@dataclass(frozen=True, slots=True)
class HealthSignal:
    """One health check during validation: a PromQL instant query (``{vm}``, ``{resource_group}``, ``{group}``
    are replaced) whose largest value must stay at or under ``threshold`` (or at or over it, ``above=False``)."""

    name: str
    query: str
    threshold: float
    breach_when_above: bool = True

    def render(self, *, vm: str, resource_group: str = "", group: str = "") -> str:
        return self.query.format(vm=vm, resource_group=resource_group, group=group)

    def breached(self, value: float) -> bool:
        return value > self.threshold if self.breach_when_above else value < self.threshold


DEFAULT_HEALTH_SIGNALS = (HealthSignal("cpu_above_90_sustained", DEFAULT_CPU_SUSTAINED_QUERY, 90.0),)


@dataclass(frozen=True, slots=True)
class SpotSettings:
    """Spot fallback for scale sets."""

    min_regular_share: float = 0.2
    """Share of a scale set that stays on regular priority (Spot Priority Mix)."""
    base_regular_count: int = 0
    """``priorityMixPolicy.baseRegularPriorityCount``; the share applies above it."""
    eviction_threshold: int = 3
    eviction_window_s: float = 3600.0
    hold_s: float = 3600.0
    """After ``eviction_threshold`` evictions within ``eviction_window_s``, stay on regular this long."""
    quiet_before_return_s: float = 1800.0
    """Move regular stand-ins back to Spot only after this long without an eviction."""
    unavailable_ttl_s: Mapping[str, float] = field(
        default_factory=lambda: {
            "AllocationFailed": 600.0,
            "ZonalAllocationFailed": 600.0,
            "OverconstrainedAllocationRequest": 1800.0,
            "OverconstrainedZonalAllocationRequest": 1800.0,
            "SkuNotAvailable": 3600.0,
            "quota": 3600.0,
            "eviction": 600.0,
        }
    )
    """How long an unavailable (size, zone, priority) is remembered, by error code ('quota' for quota errors,
    'eviction' after an eviction); other codes use ``default_unavailable_ttl_s``."""
    default_unavailable_ttl_s: float = 900.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.min_regular_share <= 1.0:
            raise ActSettingsError(f"spot.min_regular_share must be in [0, 1], got {self.min_regular_share}")
        if self.base_regular_count < 0 or self.eviction_threshold < 1:
            raise ActSettingsError("spot.base_regular_count must be >= 0 and spot.eviction_threshold >= 1")

    def ttl_for(self, code: str) -> float:
        if code in self.unavailable_ttl_s:
            return self.unavailable_ttl_s[code]
        if "quota" in code.lower() or code == "LowPriorityCores":
            return self.unavailable_ttl_s.get("quota", self.default_unavailable_ttl_s)
        return self.default_unavailable_ttl_s

    @property
    def regular_percentage_above_base(self) -> int:
        return round(self.min_regular_share * 100)


@dataclass(frozen=True, slots=True)
class ActSettings:
    maintenance_window: MaintenanceWindow | None = None
    """None: changes may start at any time."""
    max_concurrent_changes: int = 1
    max_changes_per_run: int = 10
    validation_window_s: float = 300.0
    validation_interval_s: float = 30.0
    health_signals: tuple[HealthSignal, ...] = DEFAULT_HEALTH_SIGNALS
    """Checked for every VM, plus the ones for its group and for the VM itself below."""
    health_signals_by_group: Mapping[str, tuple[HealthSignal, ...]] = field(default_factory=dict)
    health_signals_by_vm: Mapping[str, tuple[HealthSignal, ...]] = field(default_factory=dict)
    rollback_on_probe_error: bool = True
    """A validation whose signals cannot be read counts as a breach (the safe side)."""
    prometheus_url: str | None = None
    """Prometheus for health signals; the rightsizer's metrics Prometheus when None."""
    webhook_url: str | None = None
    webhook_timeout_s: float = 5.0
    recover_mode: str = "rollback"
    """What ``recover`` does with a crashed change: ``rollback`` (to the previous size) or ``resume``."""
    recommendation_tag_refresh_s: float = 86_400.0
    spot: SpotSettings = field(default_factory=SpotSettings)

    def __post_init__(self) -> None:
        if self.max_concurrent_changes < 1:
            raise ActSettingsError(f"act.max_concurrent_changes must be >= 1, got {self.max_concurrent_changes}")
        if self.max_changes_per_run < 0:
            raise ActSettingsError(f"act.max_changes_per_run must be >= 0, got {self.max_changes_per_run}")
        if self.validation_window_s < 0 or self.validation_interval_s <= 0:
            raise ActSettingsError("act.validation_window_s must be >= 0 and act.validation_interval_s > 0")
        if self.recover_mode not in ("rollback", "resume"):
            raise ActSettingsError(f"act.recover_mode must be 'rollback' or 'resume', got {self.recover_mode!r}")

    def signals_for(self, vm_name: str, group: str | None) -> tuple[HealthSignal, ...]:
        signals = list(self.health_signals)
        if group is not None:
            signals.extend(self.health_signals_by_group.get(group, ()))
        signals.extend(self.health_signals_by_vm.get(vm_name, ()))
        return tuple(signals)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> ActSettings:
        """Build from the ``act:`` section of a config file (plain dicts and lists)."""
        if not isinstance(data, Mapping):
            raise ActSettingsError(f"act: expected a mapping, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ActSettingsError(f"act: unknown field(s) {unknown}; accepted: {sorted(known)}")
        values: dict[str, Any] = {}
        for name, value in data.items():
            if name == "maintenance_window":
                values[name] = None if value is None else _build(MaintenanceWindow, value, "act.maintenance_window")
            elif name == "spot":
                values[name] = _build(SpotSettings, value, "act.spot")
            elif name == "health_signals":
                values[name] = _signals(value, "act.health_signals")
            elif name in ("health_signals_by_group", "health_signals_by_vm"):
                if not isinstance(value, Mapping):
                    raise ActSettingsError(f"act.{name}: expected a mapping of name -> list of signals")
                values[name] = {str(k): _signals(v, f"act.{name}.{k}") for k, v in value.items()}
            else:
                values[name] = value
        try:
            return cls(**values)
        except TypeError as error:
            raise ActSettingsError(f"act: {error}") from error


def _build(kind: type[Any], value: Any, where: str) -> Any:
    if not isinstance(value, Mapping):
        raise ActSettingsError(f"{where}: expected a mapping, got {value!r}")
    known = {f.name for f in fields(kind)}
    unknown = sorted(set(value) - known)
    if unknown:
        raise ActSettingsError(f"{where}: unknown field(s) {unknown}; accepted: {sorted(known)}")
    converted = {k: tuple(v) if isinstance(v, list) else v for k, v in value.items()}
    try:
        return kind(**converted)
    except TypeError as error:
        raise ActSettingsError(f"{where}: {error}") from error


def _signals(value: Any, where: str) -> tuple[HealthSignal, ...]:
    if not isinstance(value, list):
        raise ActSettingsError(f"{where}: expected a list of {{name, query, threshold[, breach_when_above]}}")
    signals = []
    for index, item in enumerate(value):
        if not isinstance(item, Mapping):
            raise ActSettingsError(f"{where}[{index}]: expected a mapping, got {item!r}")
        try:
            threshold = float(item.get("threshold"))  # type: ignore[arg-type]
        except (TypeError, ValueError) as error:
            raise ActSettingsError(f"{where}[{index}].threshold must be a number") from error
        signals.append(_build(HealthSignal, {**item, "threshold": threshold}, f"{where}[{index}]"))
    return tuple(signals)
