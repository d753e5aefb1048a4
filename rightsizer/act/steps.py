"""The change steps a resize (:mod:`rightsizer.act.apply`) and a recovery (:mod:`rightsizer.act.recover`) share:
writing a phase (tag and audit record), validating a VM on its new size, bringing a VM back to a size and power
state, and restoring the previous size. Every Azure call goes through the gateway passed in.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import structlog

from rightsizer import audit as audit_kinds
from rightsizer.act.alerts import Alerter
from rightsizer.act.clock import Clock
from rightsizer.act.health import Breach, HealthProbe, HealthProbeError
from rightsizer.act.settings import ActSettings
from rightsizer.audit import AuditLog
from rightsizer.azure.errors import AzureError
from rightsizer.azure.gateway import ComputeGateway, VmRef
from rightsizer.domain import PowerState, VmInfo
from rightsizer.tags import CHANGE_TAG, ChangeTag, Phase

# Not cached on first use: a CLI test configuring structlog must not pin these loggers to its stream.
log = structlog.wrap_logger(None, logger_factory_args=(__name__,), cache_logger_on_first_use=False)


class Outcome(StrEnum):
    DONE = "done"
    ROLLED_BACK = "rolled-back"
    """Changed, then a health signal breached during validation: back at the previous size."""
    FAILED = "failed"
    """A step failed; the VM was restored to its previous size (or recovery will finish the job)."""
    SKIPPED = "skipped"
    DEFERRED = "deferred"
    """Not attempted this run: outside the maintenance window or over the per-run cap."""
    DRY_RUN = "dry-run"
    RECOVERED = "recovered"


@dataclass(frozen=True, slots=True)
class ActionResult:
    vm_id: str
    vm_name: str
    outcome: Outcome
    reason: str
    from_size: str
    to_size: str | None = None
    change_id: str | None = None
    path: str | None = None
    monthly_savings_usd: float = 0.0
    breaches: tuple[Breach, ...] = ()


class FunctionClock:
    """A clock from a ``now`` function and a ``sleep`` (tests drive time with them)."""

    def __init__(self, now_fn: Callable[[], dt.datetime], sleep: Callable[[float], None]) -> None:
        self._now_fn = now_fn
        self._sleep = sleep

    def now(self) -> dt.datetime:
        return self._now_fn()

    def sleep(self, seconds: float) -> None:
        self._sleep(seconds)


def unfinished_change(vm: VmInfo) -> ChangeTag | None:
    """The VM's change in flight, None when there is none (or its tag is unreadable: logged, left alone)."""
    try:
        tag = ChangeTag.of(vm.tags)
    except ValueError as error:
        log.warning("change.bad_change_tag", vm=vm.name, error=str(error))
        return None
    if tag is None or tag.phase.finished:
        return None
    return tag


class ChangeSteps:
    """The shared steps, bound to one run's gateway, settings, audit log, clock, probe and alerter."""

    def __init__(
        self,
        *,
        compute: ComputeGateway,
        act: ActSettings,
        audit: AuditLog,
        clock: Clock,
        probe: HealthProbe,
        alerter: Alerter,
    ) -> None:
        self.compute = compute
        self.act = act
        self.audit = audit
        self.clock = clock
        self.probe = probe
        self.alerter = alerter

    def write_phase(self, ref: VmRef, change_id: str, phase: Phase, target: str) -> Phase:
        now = self.clock.now()
        self.compute.set_tags(ref, {CHANGE_TAG: ChangeTag(change_id, phase, target, now).render()})
        self.audit.append(audit_kinds.CHANGE_PHASE, change_id=change_id, vm=ref.arm_id, phase=phase.value)
        return phase

    # -- validation ------------------------------------------------------------------------------------------

    def validate(self, before: VmInfo, was_running: bool, bound: Any) -> list[Breach]:
        signals = self.act.signals_for(before.name, before.group)
        start = self.clock.now()
        deadline = start + dt.timedelta(seconds=self.act.validation_window_s)
        while True:
            now = self.clock.now()
            breaches: list[Breach] = []
            if was_running:
                try:
                    state = self.compute.get_vm(VmRef.of(before)).power_state
                except AzureError as error:
                    state = PowerState.UNKNOWN
                    bound.warning("validate.read_failed", error=str(error))
                if state is not PowerState.RUNNING:
                    breaches.append(Breach("vm_running", None, 1.0, f"power state {state.value}"))
            try:
                breaches.extend(self.probe.check(before, signals, now))
            except HealthProbeError as error:
                bound.warning("validate.probe_error", error=str(error))
                if self.act.rollback_on_probe_error:
                    breaches.append(Breach("health_unreadable", None, 0.0, str(error)))
            if breaches:
                self.audit.append(
                    audit_kinds.VALIDATION,
                    vm=before.id,
                    result="breach",
                    signals=[b.signal for b in breaches],
                    elapsed_s=(now - start).total_seconds(),
                )
                return breaches
            if now >= deadline:
                self.audit.append(
                    audit_kinds.VALIDATION,
                    vm=before.id,
                    result="healthy",
                    signals=[s.name for s in signals],
                    elapsed_s=(now - start).total_seconds(),
                )
                return []
            self.clock.sleep(min(self.act.validation_interval_s, (deadline - now).total_seconds()))

    # -- restoring -------------------------------------------------------------------------------------------

    def ensure_state(self, ref: VmRef, size: str, running: bool) -> None:
        """Bring the VM to ``size`` and the given power state, whatever step it is at."""
        vm = self.compute.get_vm(ref)
        if vm.size != size:
            deallocated = vm.power_state in (PowerState.DEALLOCATED, PowerState.STOPPED)
            if not deallocated and size not in self.compute.list_available_sizes(ref):
                self.compute.deallocate(ref)
            self.compute.resize(ref, size)
            vm = self.compute.get_vm(ref)
        if running and vm.power_state is not PowerState.RUNNING:
            self.compute.start(ref)

    def restore(
        self, ref: VmRef, change_id: str, previous_size: str, target: str, was_running: bool, *, reason: str
    ) -> bool:
        """Back to the previous size and power state; True when that worked (tags and audit updated)."""
        try:
            self.ensure_state(ref, previous_size, was_running)
            self.write_phase(ref, change_id, Phase.ROLLED_BACK, target)
        except AzureError as error:
            log.error("apply.restore_failed", vm=ref.name, change_id=change_id, error=str(error))
            self.audit.append(
                audit_kinds.ROLLBACK,
                change_id=change_id,
                vm=ref.arm_id,
                ok=False,
                reason=reason,
                error=str(error),
            )
            self.alerter.alert("rightsizer-rollback-failed", vm=ref.arm_id, change_id=change_id, error=str(error))
            return False
        self.alerter.rollbacks.labels(reason="breach" if reason.startswith("validation") else "failure").inc()
        self.audit.append(
            audit_kinds.ROLLBACK,
            change_id=change_id,
            vm=ref.arm_id,
            ok=True,
            reason=reason,
            to_size=previous_size,
        )
        return True
