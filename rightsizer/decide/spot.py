"""Spot planning (pure, ``now`` passed in): what one pass does for a scale set with Spot instances, and the
Spot-move recommendation for a standalone VM. Acting on a plan is :mod:`rightsizer.act.spot`.

Scale sets:

- The regular share is kept with Azure's Spot Priority Mix: ``baseRegularPriorityCount`` plus
  ``regularPriorityPercentageAboveBase`` (default 0 + 20 %). Base regular instances are never evicted.
- Evicted Spot instances (deallocated Spot VMs of the scale set) are replaced at once by regular instances:
  scale out by their number with the mix at 100 % regular, then delete them (capacity never dips).
- Capacity errors (``AllocationFailed``, ``SkuNotAvailable``, quota) and evictions mark the offering
  (size, zone, priority) unavailable for a time that depends on the error (Karpenter-style: minutes for
  allocation failures and evictions, an hour for SKU/quota problems; see ``SpotSettings.unavailable_ttl_s``).
  While the scale set's Spot offering is unavailable, new capacity is regular.
- ``eviction_threshold`` (3) evictions within ``eviction_window_s`` (1 h) put the group on hold: regular only
  for ``hold_s``. When the hold has expired, nothing is marked unavailable and there was no eviction for
  ``quiet_before_return_s``, regular stand-ins above the configured mix are replaced by Spot (surge Spot first,
  then remove the stand-ins, so capacity never dips).
- State between runs lives in the scale set's tag ``finops.ai/spot-state`` (compact, <= 256 characters).

Standalone VMs: priority cannot change in place (``VMPriorityCannotBeApplied``), so
:func:`spot_move_recommendation` only recommends (``RECOMMEND_ONLY``), with the Spot price and eviction risk.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import structlog

from rightsizer.act.settings import SPOT_STATE_TAG, SpotSettings
from rightsizer.domain import (
    HOURS_PER_MONTH,
    Action,
    Decision,
    PowerState,
    Priority,
    Recommendation,
    VmInfo,
)
from rightsizer.tags import spot_eligible

if TYPE_CHECKING:
    from rightsizer.azure.gateway import ScaleSetInfo

# Not cached on first use: a CLI test configuring structlog must not pin these loggers to its stream.
log = structlog.wrap_logger(None, logger_factory_args=(__name__,), cache_logger_on_first_use=False)


ANY_ZONE = "*"
TAG_VALUE_LIMIT = 256
"""Azure tag values hold at most 256 characters."""


@dataclass(frozen=True, slots=True)
class Offering:
    size: str
    zone: str
    priority: Priority


@dataclass(frozen=True, slots=True)
class SpotState:
    """What a scale set's Spot logic remembers between runs (times are epoch seconds)."""

    evictions: tuple[float, ...] = ()
    hold_until: float = 0.0
    unavailable: tuple[tuple[Offering, float, str], ...] = ()
    """(offering, until, reason code)."""

    def encode(self) -> str:
        """``h=<hold>;e=<t>,<t>;u=<size>/<zone>/<S|R>/<until>/<code>,...``; oldest entries dropped to fit 256."""
        evictions = list(self.evictions)
        unavailable = list(self.unavailable)
        while True:
            parts = [f"h={int(self.hold_until)}"]
            if evictions:
                parts.append("e=" + ",".join(str(int(t)) for t in evictions))
            if unavailable:
                parts.append(
                    "u="
                    + ",".join(
                        f"{o.size}/{o.zone}/{'S' if o.priority is Priority.SPOT else 'R'}/{int(until)}/{code}"
                        for o, until, code in unavailable
                    )
                )
            text = ";".join(parts)
            if len(text) <= TAG_VALUE_LIMIT:
                return text
            if len(evictions) > 1:
                evictions.pop(0)
            elif unavailable:
                unavailable.pop(0)
            else:
                return text[:TAG_VALUE_LIMIT]

    @classmethod
    def decode(cls, text: str | None) -> SpotState:
        """The state in a tag; an unreadable tag is logged and read as empty (the safe default is Spot as
        configured, with a fresh eviction count)."""
        if not text:
            return cls()
        try:
            hold = 0.0
            evictions: tuple[float, ...] = ()
            unavailable: list[tuple[Offering, float, str]] = []
            for part in text.split(";"):
                key, _, value = part.partition("=")
                if key == "h":
                    hold = float(value)
                elif key == "e" and value:
                    evictions = tuple(float(t) for t in value.split(","))
                elif key == "u" and value:
                    for item in value.split(","):
                        size, zone, priority, until, code = item.split("/")
                        offering = Offering(size, zone, Priority.SPOT if priority == "S" else Priority.REGULAR)
                        unavailable.append((offering, float(until), code))
                else:
                    raise ValueError(f"unknown part {part!r}")
            return cls(evictions, hold, tuple(unavailable))
        except ValueError as error:
            log.warning("spot.bad_state_tag", tag=SPOT_STATE_TAG, value=text, error=str(error))
            return cls()

    def prune(self, now_s: float, keep_evictions_s: float) -> SpotState:
        return SpotState(
            tuple(t for t in self.evictions if now_s - t < keep_evictions_s),
            self.hold_until if self.hold_until > now_s else 0.0,
            tuple(entry for entry in self.unavailable if entry[1] > now_s),
        )

    def mark_unavailable(self, offering: Offering, until: float, code: str) -> SpotState:
        kept = tuple(entry for entry in self.unavailable if entry[0] != offering)
        return replace(self, unavailable=(*kept, (offering, until, code)))

    def spot_blocked(self, size: str, zones: Sequence[str]) -> bool:
        """The scale set's Spot offering is unavailable: for any zone, or for every zone it spans."""
        marked = {o.zone for o, _, _ in self.unavailable if o.size == size and o.priority is Priority.SPOT}
        return ANY_ZONE in marked or (bool(zones) and set(zones) <= marked)


def regular_target(capacity: int, base: int, percentage_above_base: int) -> int:
    """Regular instances a Spot Priority Mix keeps at ``capacity`` (the share above base rounded up)."""
    return min(capacity, base) + math.ceil(max(0, capacity - base) * percentage_above_base / 100)


@dataclass(frozen=True, slots=True)
class SpotPlan:
    scale_set: str
    capacity: int
    """Capacity to hold (the current one: evicted instances still count in it)."""
    delete_evicted: tuple[str, ...]
    fill_percentage: int
    """Regular share above base for the scale-out that replaces evicted instances (100 = all regular)."""
    base_regular_count: int
    policy_percentage: int
    """Regular share above base left in place for future scale-outs."""
    rebalance_regular: tuple[str, ...]
    """Regular stand-ins to replace with Spot (surge Spot first, then delete these)."""
    state: SpotState
    mode: str
    """``spot``, ``regular-hold`` or ``regular-unavailable``."""
    reasons: tuple[str, ...] = field(default_factory=tuple)


def _instance_id(vm: VmInfo) -> str:
    """A uniform scale set's instance id (the last segment of ``.../virtualMachineScaleSets/<ss>/virtualMachines/
    <id>``); a Flexible scale set's instances are ordinary VMs, named by their name."""
    if "/virtualmachinescalesets/" in vm.id.lower():
        return vm.id.rstrip("/").rsplit("/", 1)[1]
    return vm.name


def plan_spot(
    scale_set: ScaleSetInfo,
    instances: Sequence[VmInfo],
    state: SpotState,
    settings: SpotSettings,
    now: dt.datetime,
) -> SpotPlan:
    """Decide one pass for one scale set. Pure: same inputs, same plan."""
    now_s = now.timestamp()
    state = state.prune(now_s, max(settings.eviction_window_s, settings.quiet_before_return_s))
    reasons: list[str] = []
    evicted = [
        vm
        for vm in instances
        if vm.priority is Priority.SPOT and vm.power_state in (PowerState.DEALLOCATED, PowerState.STOPPED)
    ]
    if evicted:
        state = replace(state, evictions=(*state.evictions, *([now_s] * len(evicted))))
        reasons.append(f"{len(evicted)} Spot instance(s) evicted: replaced by regular")
        ttl = settings.ttl_for("eviction")
        for zone in sorted({vm.zone or ANY_ZONE for vm in evicted}):
            state = state.mark_unavailable(Offering(scale_set.size, zone, Priority.SPOT), now_s + ttl, "eviction")
    recent = [t for t in state.evictions if now_s - t < settings.eviction_window_s]
    if len(recent) >= settings.eviction_threshold and state.hold_until <= now_s:
        state = replace(state, hold_until=now_s + settings.hold_s)
        reasons.append(
            f"{len(recent)} evictions within {settings.eviction_window_s:g} s: regular only for {settings.hold_s:g} s"
        )
    held = state.hold_until > now_s
    blocked = state.spot_blocked(scale_set.size, scale_set.zones)
    base = settings.base_regular_count
    configured = settings.regular_percentage_above_base
    if held:
        mode = "regular-hold"
    elif blocked:
        mode = "regular-unavailable"
        reasons.append(f"Spot {scale_set.size} marked unavailable: new capacity is regular")
    else:
        mode = "spot"
    policy = 100 if mode != "spot" else configured
    rebalance: tuple[str, ...] = ()
    last_eviction = max(state.evictions, default=None)
    quiet = last_eviction is None or now_s - last_eviction >= settings.quiet_before_return_s
    if mode == "spot" and not evicted and quiet:
        running_regular = [
            vm for vm in instances if vm.priority is Priority.REGULAR and vm.power_state is PowerState.RUNNING
        ]
        excess = len(running_regular) - regular_target(scale_set.capacity, base, configured)
        if excess > 0:
            # Newest stand-ins first (names sort by creation in Azure's and the fake's naming).
            rebalance = tuple(_instance_id(vm) for vm in sorted(running_regular, key=lambda v: v.name)[-excess:])
            reasons.append(f"back to Spot: replacing {excess} regular stand-in(s)")
    return SpotPlan(
        scale_set=scale_set.name,
        capacity=scale_set.capacity,
        delete_evicted=tuple(_instance_id(vm) for vm in evicted),
        fill_percentage=100,
        base_regular_count=base,
        policy_percentage=policy,
        rebalance_regular=rebalance,
        state=state,
        mode=mode,
        reasons=tuple(reasons),
    )


# -- standalone VMs: recommend only -------------------------------------------------------------------------


def spot_move_recommendation(
    vm: VmInfo,
    *,
    ondemand_hourly_usd: float | None,
    spot_hourly_usd: float | None,
    eviction_rate_band: str | None = None,
    min_monthly_savings_usd: float = 0.0,
) -> Recommendation | None:
    """A ``MOVE_TO_SPOT`` recommendation (never applied) for a standalone regular VM, or None when it does not
    apply (already Spot, part of a scale set, opted out of Spot, no price, no saving)."""
    if vm.priority is Priority.SPOT or vm.scale_set is not None:
        return None
    if not spot_eligible(vm.tags):
        return None
    if ondemand_hourly_usd is None or spot_hourly_usd is None:
        return None
    if spot_hourly_usd < 0 or ondemand_hourly_usd < 0:
        raise ValueError(
            f"prices must be >= 0 USD/hour, got on-demand {ondemand_hourly_usd} and Spot {spot_hourly_usd}"
        )
    saving = (ondemand_hourly_usd - spot_hourly_usd) * HOURS_PER_MONTH
    if saving <= 0 or saving < min_monthly_savings_usd:
        return None
    discount = 1 - spot_hourly_usd / ondemand_hourly_usd if ondemand_hourly_usd else 0.0
    risk = f"eviction rate {eviction_rate_band}" if eviction_rate_band else "eviction rate unknown"
    return Recommendation(
        vm=vm,
        action=Action.MOVE_TO_SPOT,
        decision=Decision.RECOMMEND_ONLY,
        reason=(
            f"Spot {vm.size} ${spot_hourly_usd:.4f}/h vs ${ondemand_hourly_usd:.4f}/h ({discount:.0%} less), {risk}; "
            "priority cannot change in place: recreate as Spot (eviction policy Deallocate, max price -1) "
            "only if the workload tolerates 30 s eviction notices"
        ),
        target_size=vm.size,
        monthly_savings_usd=round(saving, 2),
        confidence=0.5 if eviction_rate_band is None else 0.7,
    )
