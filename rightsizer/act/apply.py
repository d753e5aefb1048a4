"""The one place that changes VM sizes (only when not in dry-run).

For each applicable recommendation (decision ``auto`` or ``approved``, action ``resize``):

1. Re-read the VM. Skip it if its size moved since the recommendation, or if it carries an unfinished change
   (that one is recovered first, see :mod:`rightsizer.act.recover`).
2. Record the before-state FIRST: an audit record (size, power state, planned path) and the tags
   ``finops.ai/previous-size`` and ``finops.ai/change`` (phase ``recorded``). From here on a rollback is always
   possible, even if the job dies.
3. Resize in place when the target is in ``list_available_sizes``; otherwise deallocate, resize, start. Every
   phase is written to the change tag before it starts.
4. Validation window: watch the health signals (and that the VM is running) until the window ends. A breach rolls
   back to the previous size at once, alerts (log, counter, webhook) and is recorded.
5. A failed step restores the previous size and power state and is recorded; if even that fails, the change
   tag keeps its phase so the next run's recovery finishes the job.

Maintenance window, per-run cap and concurrency limit come from :class:`~rightsizer.act.settings.ActSettings`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

import structlog

from rightsizer import audit as audit_kinds
from rightsizer.act.alerts import Alerter
from rightsizer.act.clock import Clock, SystemClock
from rightsizer.act.health import Breach, HealthProbe, NoSignalsProbe, PrometheusHealthProbe
from rightsizer.act.recover import Recoverer
from rightsizer.act.settings import ActSettings
from rightsizer.act.steps import ActionResult, ChangeSteps, FunctionClock, Outcome, unfinished_change
from rightsizer.audit import AuditLog
from rightsizer.azure.errors import AzureError
from rightsizer.azure.gateway import ComputeGateway, VmRef
from rightsizer.domain import OPT_OUT_TAG, Action, Decision, PowerState, Recommendation
from rightsizer.run_metrics import ChangeSummary
from rightsizer.tags import (
    CHANGE_TAG,
    PREVIOUS_SIZE_TAG,
    RECOMMENDATION_TAG,
    ChangeTag,
    Phase,
    PreviousSizeTag,
    RecommendationTag,
    iso,
    opted_out,
)

__all__ = ["ActionResult", "Applier", "Outcome", "apply_recommendations", "change_summaries", "record_decisions"]

# Not cached on first use: a CLI test configuring structlog must not pin these loggers to its stream.
log = structlog.wrap_logger(None, logger_factory_args=(__name__,), cache_logger_on_first_use=False)

IN_PLACE = "in-place"
DEALLOCATE_RESIZE_START = "deallocate-resize-start"


class RunSettings(Protocol):
    """What apply needs from the rightsizer's ``Settings``."""

    @property
    def dry_run(self) -> bool: ...

    @property
    def act(self) -> ActSettings: ...


def default_probe(settings: Any, act: ActSettings) -> HealthProbe:
    metrics = getattr(settings, "metrics", None)
    url = act.prometheus_url or getattr(metrics, "prometheus_url", None)
    if url:
        # The metrics section's TLS (CA bundle) and credentials apply to the health signals' Prometheus too.
        from rightsizer.settings import MetricsSettings
        from rightsizer.sources.prometheus import prometheus_client

        base = metrics if isinstance(metrics, MetricsSettings) else MetricsSettings()
        return PrometheusHealthProbe(url, connection=prometheus_client(dataclasses.replace(base, prometheus_url=url)))
    log.warning("apply.no_health_prometheus", note="validation only checks that the VM runs")
    return NoSignalsProbe()


def change_summaries(recs: Sequence[Recommendation], results: Sequence[ActionResult]) -> list[ChangeSummary]:
    """For the run's metrics: which changes were started (a change id was recorded) and which are done."""
    by_vm = {rec.vm.id: rec for rec in recs}
    out = []
    for result in results:
        rec = by_vm.get(result.vm_id)
        if rec is not None:
            done = result.outcome is Outcome.DONE
            out.append(ChangeSummary.of(rec, started=result.change_id is not None, done=done))
    return out


def record_decisions(recs: Sequence[Recommendation], audit: AuditLog, *, dry_run: bool) -> None:
    """One audit record per recommendation, skips included."""
    for rec in recs:
        audit.append(
            audit_kinds.DECISION,
            vm=rec.vm.id,
            vm_name=rec.vm.name,
            action=rec.action.value,
            decision=rec.decision.value,
            reason=rec.reason,
            current_size=rec.current_size,
            target_size=rec.target_size,
            monthly_savings_usd=rec.monthly_savings_usd,
            confidence=rec.confidence,
            approval_tier=rec.approval_tier.value,
            dry_run=dry_run,
            tags=dict(rec.vm.tags),
        )


def apply_recommendations(
    recs: Sequence[Recommendation],
    *,
    compute: ComputeGateway,
    settings: RunSettings,
    audit: AuditLog,
    now_fn: Callable[[], dt.datetime] | None = None,
    clock: Clock | None = None,
    probe: HealthProbe | None = None,
    alerter: Alerter | None = None,
    record: bool = True,
) -> list[ActionResult]:
    """Apply the applicable recommendations (never in dry-run) and return one result per applicable one.

    ``record=False`` skips the per-recommendation decision records (when the caller wrote them already).
    """
    act = settings.act
    if clock is None:
        clock = FunctionClock(now_fn, time.sleep) if now_fn is not None else SystemClock()
    if record:
        record_decisions(recs, audit, dry_run=settings.dry_run)
    applier = Applier(
        compute=compute,
        act=act,
        audit=audit,
        clock=clock,
        probe=probe if probe is not None else default_probe(settings, act),
        alerter=alerter if alerter is not None else Alerter(webhook_url=act.webhook_url),
    )
    return applier.run(recs, dry_run=settings.dry_run)


class Applier(ChangeSteps):
    """Applies a run's recommendations with the shared change steps (:class:`~rightsizer.act.steps.ChangeSteps`)."""

    # -- the run ---------------------------------------------------------------------------------------------

    def run(self, recs: Sequence[Recommendation], *, dry_run: bool) -> list[ActionResult]:
        applicable = [rec for rec in recs if rec.applicable and rec.target_size]
        if not dry_run:
            self._tag_pending_approvals([rec for rec in recs if rec.decision is Decision.NEEDS_APPROVAL])
        if dry_run:
            return [_result(rec, Outcome.DRY_RUN, "dry run: would resize", path=None) for rec in applicable]
        results: dict[int, ActionResult] = {}
        to_run: list[tuple[int, Recommendation]] = []
        groups: set[str] = set()
        for index, rec in enumerate(applicable):
            reason = self._refusal(rec)
            group = (rec.vm.group or "").lower()
            if reason is None and group and group in groups:
                # The decide side's HA gate already allows one member per run; this guards the concurrency.
                reason = f"another member of group {rec.vm.group} changes in this run"
            if reason is not None:
                results[index] = _result(rec, Outcome.SKIPPED, reason)
            elif len(to_run) >= self.act.max_changes_per_run:
                results[index] = _result(
                    rec, Outcome.DEFERRED, f"per-run cap of {self.act.max_changes_per_run} changes reached"
                )
            else:
                to_run.append((index, rec))
                if group:
                    groups.add(group)
        with ThreadPoolExecutor(max_workers=self.act.max_concurrent_changes, thread_name_prefix="rightsizer") as pool:
            futures = {index: pool.submit(self._change_guarded, rec) for index, rec in to_run}
            for index, future in futures.items():
                results[index] = future.result()
        ordered = [results[i] for i in sorted(results)]
        for result in ordered:
            self.alerter.changes.labels(outcome=result.outcome.value).inc()
        return ordered

    def _refusal(self, rec: Recommendation) -> str | None:
        if rec.action is not Action.RESIZE:
            return f"action {rec.action.value} is never applied"
        if opted_out(rec.vm.tags):
            return f"opted out ({OPT_OUT_TAG}=false)"
        if rec.vm.scale_set is not None or "/virtualMachineScaleSets/" in rec.vm.id:
            return "scale set instance: resize the scale set's model instead"
        return None

    def _change_guarded(self, rec: Recommendation) -> ActionResult:
        window = self.act.maintenance_window
        now = self.clock.now()
        if window is not None and not window.contains(now):
            return _result(rec, Outcome.DEFERRED, f"outside the maintenance window ({iso(now)})")
        try:
            return self._change(rec)
        except Exception as error:  # a bug or an unclassified failure must not take other changes down
            log.exception("apply.unexpected_error", vm=rec.vm.name)
            return _result(rec, Outcome.FAILED, f"unexpected error: {type(error).__name__}: {error}")

    # -- one change ------------------------------------------------------------------------------------------

    def _change(self, rec: Recommendation) -> ActionResult:
        ref = VmRef.of(rec.vm)
        target = str(rec.target_size)
        bound = log.bind(vm=rec.vm.name, vm_id=rec.vm.id, target_size=target)
        try:
            current = self.compute.get_vm(ref)
        except AzureError as error:
            return _result(rec, Outcome.FAILED, f"could not read the VM: {error}")
        unfinished = unfinished_change(current)
        if unfinished is not None:
            recovered = Recoverer(self).recover_vm(current)
            return _result(
                rec,
                Outcome.SKIPPED,
                f"found unfinished change {unfinished.change_id} ({unfinished.phase.value}); "
                f"recovery: {recovered.reason}; the new change waits for the next run",
            )
        if current.size != rec.current_size:
            return _result(rec, Outcome.SKIPPED, f"size is now {current.size}, not {rec.current_size}: stale")
        if current.size == target:
            return _result(rec, Outcome.SKIPPED, f"already {target}")

        now = self.clock.now()
        change_id = f"{now.strftime('%Y%m%dT%H%M%SZ')}-{uuid.uuid4().hex[:8]}"
        was_running = current.power_state in (PowerState.RUNNING, PowerState.STARTING)
        bound = bound.bind(change_id=change_id)
        # Before-state first: the audit record, then the tags. Nothing is changed before both are written.
        self.audit.append(
            audit_kinds.CHANGE_RECORDED,
            change_id=change_id,
            vm=rec.vm.id,
            vm_name=rec.vm.name,
            from_size=current.size,
            to_size=target,
            power_state=current.power_state.value,
            monthly_savings_usd=rec.monthly_savings_usd,
            decision=rec.decision.value,
            approval_tier=rec.approval_tier.value,
            tags=dict(rec.vm.tags),
        )
        try:
            self.compute.set_tags(
                ref,
                {
                    PREVIOUS_SIZE_TAG: PreviousSizeTag(current.size, now, change_id).render(),
                    CHANGE_TAG: ChangeTag(change_id, Phase.RECORDED, target, now).render(),
                },
            )
        except AzureError as error:
            self.audit.append(
                audit_kinds.CHANGE_FAILED,
                change_id=change_id,
                vm=rec.vm.id,
                phase="recorded",
                error=str(error),
            )
            return _result(rec, Outcome.FAILED, f"could not record the before-state tags: {error}", change_id)

        path = IN_PLACE
        phase = Phase.RECORDED
        try:
            available = self.compute.list_available_sizes(ref)
            path = IN_PLACE if target in available else DEALLOCATE_RESIZE_START
            bound.info("apply.change_started", path=path, from_size=current.size)
            if path == IN_PLACE:
                phase = self.write_phase(ref, change_id, Phase.RESIZING, target)
                self.compute.resize(ref, target)
            else:
                phase = self.write_phase(ref, change_id, Phase.DEALLOCATING, target)
                self.compute.deallocate(ref)
                phase = self.write_phase(ref, change_id, Phase.RESIZING, target)
                self.compute.resize(ref, target)
                if was_running:
                    phase = self.write_phase(ref, change_id, Phase.STARTING, target)
                    self.compute.start(ref)
            phase = self.write_phase(ref, change_id, Phase.VALIDATING, target)
        except AzureError as error:
            bound.warning("apply.change_failed", phase=phase.value, error=str(error), code=error.code)
            self.audit.append(
                audit_kinds.CHANGE_FAILED,
                change_id=change_id,
                vm=rec.vm.id,
                phase=phase.value,
                error=str(error),
                code=error.code,
                status=error.status,
                transient=error.__class__.__name__ == "TransientAzureError",
            )
            restored = self.restore(ref, change_id, current.size, target, was_running, reason=f"failed: {error}")
            reason = f"{phase.value} failed ({error.code or error.status}): {error.message}"
            if not restored:
                reason += "; restoring failed too, the next run's recovery will finish it"
            return _result(rec, Outcome.FAILED, reason, change_id, path)

        breaches = self.validate(current, was_running, bound)
        if breaches:
            names = ", ".join(f"{b.signal}={b.value}" for b in breaches)
            for breach in breaches:
                self.alerter.sla_breaches.labels(signal=breach.signal).inc()
            self.audit.append(
                audit_kinds.SLA_BREACH,
                change_id=change_id,
                vm=rec.vm.id,
                vm_name=rec.vm.name,
                size=target,
                breaches=[
                    {"signal": b.signal, "value": b.value, "threshold": b.threshold, "detail": b.detail}
                    for b in breaches
                ],
            )
            self.alerter.alert(
                "rightsizer-validation-breach",
                vm=rec.vm.id,
                change_id=change_id,
                from_size=current.size,
                to_size=target,
                breaches=names,
            )
            restored = self.restore(
                ref, change_id, current.size, target, was_running, reason=f"validation breach: {names}"
            )
            reason = f"validation breach ({names}): rolled back to {current.size}"
            if not restored:
                reason += " (rollback incomplete: recovery will finish it)"
            return _result(rec, Outcome.ROLLED_BACK, reason, change_id, path, breaches=tuple(breaches))

        done_at = self.clock.now()
        try:
            self.write_phase(ref, change_id, Phase.DONE, target)
        except AzureError as error:
            bound.warning("apply.done_tag_failed", error=str(error))
        self.audit.append(
            audit_kinds.CHANGE_DONE,
            change_id=change_id,
            vm=rec.vm.id,
            vm_name=rec.vm.name,
            from_size=current.size,
            to_size=target,
            path=path,
            monthly_savings_usd=rec.monthly_savings_usd,
            validated_until=iso(done_at),
        )
        bound.info("apply.change_done", path=path)
        return _result(rec, Outcome.DONE, f"resized {current.size} -> {target} ({path})", change_id, path)

    # -- approvals -------------------------------------------------------------------------------------------

    def _tag_pending_approvals(self, recs: Sequence[Recommendation]) -> None:
        """Write ``finops.ai/recommendation`` on VMs whose recommendation needs approval, so approvers see it
        and its age can be checked (refreshed when the target changes or the tag is older than a day)."""
        now = self.clock.now()
        for rec in recs:
            if not rec.target_size:
                continue
            try:
                existing = RecommendationTag.of(rec.vm.tags)
            except ValueError:
                existing = None  # rewritten below
            if existing is not None and existing.target_size == rec.target_size:
                age = (now - existing.at).total_seconds()
                if age < self.act.recommendation_tag_refresh_s:
                    continue
            value = RecommendationTag(rec.target_size, rec.monthly_savings_usd, now).render()
            try:
                self.compute.set_tags(VmRef.of(rec.vm), {RECOMMENDATION_TAG: value})
            except (AzureError, ValueError) as error:
                log.warning("apply.recommendation_tag_failed", vm=rec.vm.name, error=str(error))


def _result(
    rec: Recommendation,
    outcome: Outcome,
    reason: str,
    change_id: str | None = None,
    path: str | None = None,
    *,
    breaches: tuple[Breach, ...] = (),
) -> ActionResult:
    return ActionResult(
        vm_id=rec.vm.id,
        vm_name=rec.vm.name,
        outcome=outcome,
        reason=reason,
        from_size=rec.current_size,
        to_size=rec.target_size,
        change_id=change_id,
        path=path,
        monthly_savings_usd=rec.monthly_savings_usd,
        breaches=breaches,
    )
