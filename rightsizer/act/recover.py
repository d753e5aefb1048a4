"""Finish or roll back changes a crashed run left behind, so no VM stays deallocated or half-changed.

A change is unfinished when the VM's ``finops.ai/change`` tag has a phase other than ``done``/``rolled-back``.
The previous size comes from ``finops.ai/previous-size`` (same change id) or, failing that, from the audit log's
``change-recorded`` record; the power state to return to comes from that record (running when unknown: never
leave a VM deallocated).

``recover_mode = "rollback"`` (default): back to the previous size, started if it was running.
``recover_mode = "resume"``: finish the change (target size, started), validate it, and roll back on a breach.
A change that never got past ``recorded`` is rolled back in both modes (nothing was changed yet).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from typing import Any

import structlog

from rightsizer import audit as audit_kinds
from rightsizer.act.alerts import Alerter
from rightsizer.act.clock import Clock, SystemClock
from rightsizer.act.health import HealthProbe, NoSignalsProbe
from rightsizer.act.settings import ActSettings
from rightsizer.act.steps import ActionResult, ChangeSteps, FunctionClock, Outcome, unfinished_change
from rightsizer.audit import AuditLog
from rightsizer.azure.errors import AzureError
from rightsizer.azure.gateway import ComputeGateway, VmRef
from rightsizer.domain import VmInfo
from rightsizer.tags import ChangeTag, Phase, PreviousSizeTag

# Not cached on first use: a CLI test configuring structlog must not pin these loggers to its stream.
log = structlog.wrap_logger(None, logger_factory_args=(__name__,), cache_logger_on_first_use=False)


class Recoverer:
    """Finishes or rolls back one VM's unfinished change with the shared change steps."""

    def __init__(self, steps: ChangeSteps) -> None:
        self.steps = steps

    def _before_state(self, change_id: str) -> dict[str, Any] | None:
        for record in reversed(self.steps.audit.records()):
            if record.get("kind") == audit_kinds.CHANGE_RECORDED and record.get("change_id") == change_id:
                return dict(record)
        return None

    def recover_vm(self, vm: VmInfo) -> ActionResult:
        def result(outcome: Outcome, reason: str, change_id: str | None = None) -> ActionResult:
            return ActionResult(vm.id, vm.name, outcome, reason, vm.size, None, change_id)

        try:
            change = ChangeTag.of(vm.tags)
        except ValueError as error:
            return result(Outcome.SKIPPED, f"unreadable change tag: {error}")
        if change is None or change.phase.finished:
            return result(Outcome.SKIPPED, "no unfinished change")
        ref = VmRef.of(vm)
        bound = log.bind(vm=vm.name, change_id=change.change_id, phase=change.phase.value)
        before = self._before_state(change.change_id)
        previous: str | None = None
        try:
            tag = PreviousSizeTag.of(vm.tags)
        except ValueError:
            tag = None
        if tag is not None and tag.change_id == change.change_id:
            previous = tag.size
        elif before is not None:
            previous = str(before.get("from_size"))
        was_running = True if before is None else before.get("power_state") in ("running", "starting", None)
        if previous is None:
            bound.error("recover.no_previous_size")
            return result(Outcome.FAILED, "no previous size in tags or audit log: left as is", change.change_id)
        act: ActSettings = self.steps.act
        mode = act.recover_mode if change.phase is not Phase.RECORDED else "rollback"
        bound.info("recover.start", mode=mode, size=vm.size, power_state=vm.power_state.value, previous=previous)
        if mode == "resume":
            try:
                self.steps.ensure_state(ref, change.target_size, was_running)
                self.steps.write_phase(ref, change.change_id, Phase.VALIDATING, change.target_size)
            except AzureError as error:
                bound.warning("recover.resume_failed", error=str(error))
                mode = "rollback"
            else:
                breaches = self.steps.validate(vm, was_running, bound)
                if not breaches:
                    self.steps.write_phase(ref, change.change_id, Phase.DONE, change.target_size)
                    self.steps.audit.append(
                        audit_kinds.RECOVERY,
                        change_id=change.change_id,
                        vm=vm.id,
                        found_phase=change.phase.value,
                        found_size=vm.size,
                        found_power_state=vm.power_state.value,
                        action="resumed",
                        size=change.target_size,
                    )
                    self.steps.audit.append(
                        audit_kinds.CHANGE_DONE,
                        change_id=change.change_id,
                        vm=vm.id,
                        vm_name=vm.name,
                        from_size=previous,
                        to_size=change.target_size,
                        path="recovered",
                        monthly_savings_usd=float((before or {}).get("monthly_savings_usd") or 0.0),
                    )
                    return result(Outcome.RECOVERED, f"resumed to {change.target_size}", change.change_id)
                mode = "rollback"
        restored = self.steps.restore(
            ref,
            change.change_id,
            previous,
            change.target_size,
            was_running,
            reason=f"recovery of a change found at phase {change.phase.value}",
        )
        self.steps.audit.append(
            audit_kinds.RECOVERY,
            change_id=change.change_id,
            vm=vm.id,
            found_phase=change.phase.value,
            found_size=vm.size,
            found_power_state=vm.power_state.value,
            action="rolled-back" if restored else "rollback-failed",
            size=previous,
        )
        if not restored:
            return result(Outcome.FAILED, "rollback failed; will retry next run", change.change_id)
        return result(Outcome.RECOVERED, f"rolled back to {previous}", change.change_id)


def recover_changes(
    vms: Sequence[VmInfo],
    *,
    compute: ComputeGateway,
    act: ActSettings,
    audit: AuditLog,
    now_fn: Callable[[], dt.datetime] | None = None,
    clock: Clock | None = None,
    probe: HealthProbe | None = None,
    alerter: Alerter | None = None,
) -> list[ActionResult]:
    """Recover every VM in ``vms`` that carries an unfinished change."""
    if clock is None:
        clock = FunctionClock(now_fn, SystemClock().sleep) if now_fn is not None else SystemClock()
    steps = ChangeSteps(
        compute=compute,
        act=act,
        audit=audit,
        clock=clock,
        probe=probe if probe is not None else NoSignalsProbe(),
        alerter=alerter if alerter is not None else Alerter(webhook_url=act.webhook_url),
    )
    recoverer = Recoverer(steps)
    results = []
    for vm in vms:
        if unfinished_change(vm) is None:
            continue
        results.append(recoverer.recover_vm(vm))
    return results


def unfinished(vms: Sequence[VmInfo]) -> list[VmInfo]:
    return [vm for vm in vms if unfinished_change(vm) is not None]
