"""apply_recommendations through the real azure-mgmt-compute client against the fake ARM."""

from __future__ import annotations

import datetime as dt
import json
import threading
from collections.abc import Iterator, Sequence
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from rightsizer import audit as kinds
from rightsizer.act.alerts import Alerter
from rightsizer.act.apply import DEALLOCATE_RESIZE_START, IN_PLACE, ActionResult, Outcome, apply_recommendations
from rightsizer.act.health import Breach, HealthProbeError
from rightsizer.act.settings import ActSettings, HealthSignal, MaintenanceWindow
from rightsizer.audit import AuditLog
from rightsizer.azure import ComputeGateway, RetrySettings, VmRef
from rightsizer.domain import Action, ApprovalTier, Decision, Recommendation, VmInfo
from rightsizer.settings import Settings
from rightsizer.tags import CHANGE_TAG, PREVIOUS_SIZE_TAG, RECOMMENDATION_TAG, ChangeTag, Phase, PreviousSizeTag
from tests.fakes.arm import FakeArm, FakeCredential, Fault, ManualClock, client_kwargs

SUB = "00000000-0000-0000-0000-000000000001"
NOW = dt.datetime(2026, 11, 28, 2, 30, tzinfo=dt.UTC)  # a Saturday
NO_SIGNALS: tuple[HealthSignal, ...] = ()


class ScriptedProbe:
    """A HealthProbe argument for tests: breaches the named VMs from the ``breach_after``-th check on."""

    def __init__(self, breaching: Sequence[str] = (), breach_after: int = 1, error: bool = False) -> None:
        self.breaching = set(breaching)
        self.breach_after = breach_after
        self.error = error
        self.checks: dict[str, int] = {}
        self.lock = threading.Lock()

    def check(self, vm: VmInfo, signals: Sequence[HealthSignal], now: dt.datetime) -> list[Breach]:
        with self.lock:
            self.checks[vm.name] = self.checks.get(vm.name, 0) + 1
            count = self.checks[vm.name]
        if self.error:
            raise HealthProbeError("prometheus unreachable")
        if vm.name in self.breaching and count >= self.breach_after:
            return [Breach("p95_latency_ms", 900.0, 250.0)]
        return []


class Harness:
    def __init__(self, arm: FakeArm, tmp_path: Path) -> None:
        self.arm = arm
        self.sleeps: list[float] = []
        self.compute = ComputeGateway(
            FakeCredential(),
            **client_kwargs(arm),
            sleep=self.sleeps.append,
            retry=RetrySettings(max_attempts=4),
        )
        self.clock = ManualClock(NOW)
        self.audit = AuditLog(tmp_path / "audit.jsonl", now_fn=self.clock.now)
        self.registry = CollectorRegistry()
        self.alerter = Alerter(self.registry)

    def vm(self, name: str) -> VmInfo:
        return self.compute.get_vm(VmRef(SUB, "rg1", name))

    def rec(self, name: str, target: str, savings: float = 80.0, decision: Decision = Decision.AUTO) -> Recommendation:
        return Recommendation(
            vm=self.vm(name),
            action=Action.RESIZE,
            decision=decision,
            reason="p95 cpu 12 %",
            target_size=target,
            monthly_savings_usd=savings,
            confidence=0.9,
            approval_tier=ApprovalTier.AUTOMATIC,
        )

    def apply(
        self,
        recs: Sequence[Recommendation],
        act: ActSettings | None = None,
        probe: Any = None,
        dry_run: bool = False,
        alerter: Alerter | None = None,
    ) -> list[ActionResult]:
        act = act or ActSettings(health_signals=NO_SIGNALS, validation_window_s=60, validation_interval_s=30)
        return apply_recommendations(
            recs,
            compute=self.compute,
            settings=Settings(dry_run=dry_run, act=act),
            audit=self.audit,
            clock=self.clock,
            probe=probe or ScriptedProbe(),
            alerter=alerter or self.alerter,
        )

    def kinds(self) -> list[str]:
        return [r["kind"] for r in self.audit.records()]


@pytest.fixture
def h(fake_arm: FakeArm, tmp_path: Path) -> Harness:
    return Harness(fake_arm, tmp_path)


def counter(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


def test_dry_run_writes_nothing_but_records_decisions(h: Harness) -> None:
    h.arm.add_vm("rg1", "vm", "Standard_D4s_v5")
    results = h.apply([h.rec("vm", "Standard_D2s_v5")], dry_run=True)
    assert [r.outcome for r in results] == [Outcome.DRY_RUN]
    assert [r for r in h.arm.requests if r.method != "GET"] == []
    assert h.kinds() == [kinds.DECISION]
    assert h.audit.records()[0]["dry_run"] is True


def test_in_place_resize_records_the_before_state_first(h: Harness) -> None:
    h.arm.add_vm("rg1", "vm", "Standard_D4s_v5", available_sizes=["Standard_D4s_v5", "Standard_D2s_v5"])
    [result] = h.apply([h.rec("vm", "Standard_D2s_v5")])
    assert (result.outcome, result.path) == (Outcome.DONE, IN_PLACE)
    fake = h.arm.vm("rg1", "vm")
    assert (fake.size, fake.power_state) == ("Standard_D2s_v5", "running")
    assert h.arm.requests_matching("POST", "/vm/deallocate$") == []
    # The first write to the VM is the tag write carrying the before-state; the size changes after it.
    writes = [r for r in h.arm.requests if r.method in ("PATCH", "POST")]
    assert PREVIOUS_SIZE_TAG in writes[0].body["tags"]  # type: ignore[index]
    assert "properties" not in writes[0].body  # type: ignore[operator]
    previous = PreviousSizeTag.parse(fake.tags[PREVIOUS_SIZE_TAG])
    change = ChangeTag.parse(fake.tags[CHANGE_TAG])
    assert (previous.size, previous.change_id) == ("Standard_D4s_v5", result.change_id)
    assert (change.phase, change.target_size) == (Phase.DONE, "Standard_D2s_v5")
    sequence = h.kinds()
    assert sequence.index(kinds.CHANGE_RECORDED) < sequence.index(kinds.CHANGE_PHASE)
    phases = [r["phase"] for r in h.audit.records() if r["kind"] == kinds.CHANGE_PHASE]
    assert phases == ["resizing", "validating", "done"]
    assert sequence[-1] == kinds.CHANGE_DONE
    assert h.audit.verify().ok
    assert counter(h.registry, "rightsizer_changes_total", outcome="done") == 1


def test_size_outside_the_cluster_goes_deallocate_resize_start(h: Harness) -> None:
    h.arm.add_vm("rg1", "vm", "Standard_D4s_v5", available_sizes=["Standard_D4s_v5"])
    [result] = h.apply([h.rec("vm", "Standard_E2s_v5")])
    assert (result.outcome, result.path) == (Outcome.DONE, DEALLOCATE_RESIZE_START)
    writes = [(r.method, r.path.rsplit("/", 1)[-1], r.body) for r in h.arm.requests if r.method in ("PATCH", "POST")]
    size_steps = [step for step in writes if step[0] == "POST" or (step[2] and "properties" in step[2])]
    assert [(m, p) for m, p, _ in size_steps] == [("POST", "deallocate"), ("PATCH", "vm"), ("POST", "start")]
    phases = [r["phase"] for r in h.audit.records() if r["kind"] == kinds.CHANGE_PHASE]
    assert phases == ["deallocating", "resizing", "starting", "validating", "done"]
    fake = h.arm.vm("rg1", "vm")
    assert (fake.size, fake.power_state) == ("Standard_E2s_v5", "running")


def test_a_deallocated_vm_is_resized_and_left_deallocated(h: Harness) -> None:
    h.arm.add_vm("rg1", "vm", "Standard_D4s_v5", power_state="deallocated", available_sizes=["Standard_D4s_v5"])
    [result] = h.apply([h.rec("vm", "Standard_D2s_v5")])
    assert (result.outcome, result.path) == (Outcome.DONE, IN_PLACE)
    fake = h.arm.vm("rg1", "vm")
    assert (fake.size, fake.power_state) == ("Standard_D2s_v5", "deallocated")
    assert h.arm.requests_matching("POST", "/start$") == []


def test_failed_start_after_resize_restores_the_old_size_and_starts_it(h: Harness) -> None:
    h.arm.add_vm("rg1", "vm", "Standard_D4s_v5", available_sizes=["Standard_D4s_v5"])
    h.arm.add_fault(Fault(path="/vm/start$", method="POST", lro_failure=True, code="AllocationFailed"))
    [result] = h.apply([h.rec("vm", "Standard_E2s_v5")])
    assert result.outcome is Outcome.FAILED and "AllocationFailed" in result.reason
    fake = h.arm.vm("rg1", "vm")
    assert (fake.size, fake.power_state) == ("Standard_D4s_v5", "running")
    assert ChangeTag.parse(fake.tags[CHANGE_TAG]).phase is Phase.ROLLED_BACK
    records = h.audit.records()
    failed = next(r for r in records if r["kind"] == kinds.CHANGE_FAILED)
    assert (failed["phase"], failed["code"]) == ("starting", "AllocationFailed")
    rollback = next(r for r in records if r["kind"] == kinds.ROLLBACK)
    assert rollback["ok"] is True and rollback["to_size"] == "Standard_D4s_v5"
    assert kinds.CHANGE_DONE not in h.kinds()


def test_failed_resize_operation_leaves_the_vm_as_it_was(h: Harness) -> None:
    h.arm.add_vm("rg1", "vm", "Standard_D4s_v5", available_sizes=["Standard_D4s_v5", "Standard_D2s_v5"])
    h.arm.add_fault(
        Fault(path="/virtualMachines/vm$", method="PATCH", lro_failure=True, code="SkuNotAvailable", skip=1)
    )
    [result] = h.apply([h.rec("vm", "Standard_D2s_v5")])
    assert result.outcome is Outcome.FAILED and "SkuNotAvailable" in result.reason
    fake = h.arm.vm("rg1", "vm")
    assert (fake.size, fake.power_state) == ("Standard_D4s_v5", "running")
    assert ChangeTag.parse(fake.tags[CHANGE_TAG]).phase is Phase.ROLLED_BACK


def test_409_on_deallocate_fails_the_change_without_touching_the_vm(h: Harness) -> None:
    h.arm.add_vm("rg1", "vm", "Standard_D4s_v5", available_sizes=["Standard_D4s_v5"])
    h.arm.add_fault(Fault(path="/vm/deallocate$", method="POST", status=409, code="Conflict"))
    [result] = h.apply([h.rec("vm", "Standard_E2s_v5")])
    assert result.outcome is Outcome.FAILED and "Conflict" in result.reason
    assert h.sleeps == []
    fake = h.arm.vm("rg1", "vm")
    assert (fake.size, fake.power_state) == ("Standard_D4s_v5", "running")


def test_throttling_and_server_errors_are_retried_and_the_change_completes(h: Harness) -> None:
    h.arm.add_vm("rg1", "vm", "Standard_D4s_v5", available_sizes=["Standard_D4s_v5"])
    h.arm.add_fault(Fault(path="/vm/deallocate$", method="POST", status=429, retry_after=12))
    h.arm.add_fault(Fault(path="/vm/start$", method="POST", status=500, times=2))
    [result] = h.apply([h.rec("vm", "Standard_E2s_v5")])
    assert result.outcome is Outcome.DONE
    assert h.sleeps == [12.0, 1.0, 2.0]
    assert h.arm.vm("rg1", "vm").size == "Standard_E2s_v5"


class WebhookReceiver:
    def __init__(self) -> None:
        self.payloads: list[dict[str, Any]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers["Content-Length"])
                receiver.payloads.append(json.loads(self.rfile.read(length)))
                self.send_response(204)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def webhook() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver()
    yield receiver
    receiver.close()


def test_validation_breach_rolls_back_at_once_and_alerts(h: Harness, webhook: WebhookReceiver) -> None:
    h.arm.add_vm("rg1", "vm", "Standard_D4s_v5", available_sizes=["Standard_D4s_v5", "Standard_D2s_v5"])
    h.arm.add_vm("rg1", "ok", "Standard_D4s_v5", available_sizes=["Standard_D4s_v5", "Standard_D2s_v5"])
    probe = ScriptedProbe(breaching=["vm"], breach_after=3)
    act = ActSettings(health_signals=NO_SIGNALS, validation_window_s=300, validation_interval_s=30)
    alerter = h.alerter
    alerter.webhook_url = webhook.url
    results = h.apply([h.rec("vm", "Standard_D2s_v5"), h.rec("ok", "Standard_D2s_v5")], act, probe, alerter=alerter)
    by_name = {r.vm_name: r for r in results}
    assert by_name["vm"].outcome is Outcome.ROLLED_BACK
    assert by_name["vm"].breaches[0].signal == "p95_latency_ms"
    assert by_name["ok"].outcome is Outcome.DONE
    # Rolled back on the 3rd check, not at the end of the window; the healthy VM was watched the whole window.
    assert probe.checks["vm"] == 3
    assert probe.checks["ok"] == 11
    assert h.arm.vm("rg1", "vm").size == "Standard_D4s_v5"
    assert h.arm.vm("rg1", "ok").size == "Standard_D2s_v5"
    assert ChangeTag.parse(h.arm.vm("rg1", "vm").tags[CHANGE_TAG]).phase is Phase.ROLLED_BACK
    assert counter(h.registry, "rightsizer_sla_breaches_total", signal="p95_latency_ms") == 1
    assert counter(h.registry, "rightsizer_rollbacks_total", reason="breach") == 1
    assert [p["alert"] for p in webhook.payloads] == ["rightsizer-validation-breach"]
    assert webhook.payloads[0]["vm"].endswith("/vm")
    records = h.audit.records()
    breach = next(r for r in records if r["kind"] == kinds.SLA_BREACH)
    assert breach["breaches"][0]["value"] == 900.0
    assert sum(1 for r in records if r["kind"] == kinds.ROLLBACK) == 1


def test_unreadable_health_signals_count_as_a_breach(h: Harness) -> None:
    h.arm.add_vm("rg1", "vm", "Standard_D4s_v5")
    [result] = h.apply([h.rec("vm", "Standard_D2s_v5")], probe=ScriptedProbe(error=True))
    assert result.outcome is Outcome.ROLLED_BACK
    assert h.arm.vm("rg1", "vm").size == "Standard_D4s_v5"


def test_a_vm_that_stops_during_validation_is_rolled_back(h: Harness) -> None:
    h.arm.add_vm("rg1", "vm", "Standard_D4s_v5")

    class StopsTheVm(ScriptedProbe):
        def check(self, vm: VmInfo, signals: Sequence[HealthSignal], now: dt.datetime) -> list[Breach]:
            h.arm.vm("rg1", "vm").power_state = "stopped"
            return []

    [result] = h.apply([h.rec("vm", "Standard_D2s_v5")], probe=StopsTheVm())
    assert result.outcome is Outcome.ROLLED_BACK and result.breaches[0].signal == "vm_running"
    fake = h.arm.vm("rg1", "vm")
    assert (fake.size, fake.power_state) == ("Standard_D4s_v5", "running")


def test_outside_the_maintenance_window_nothing_is_changed(h: Harness) -> None:
    h.arm.add_vm("rg1", "vm", "Standard_D4s_v5")
    act = ActSettings(health_signals=NO_SIGNALS, maintenance_window=MaintenanceWindow(("sun",), 1, 5))
    [result] = h.apply([h.rec("vm", "Standard_D2s_v5")], act)
    assert result.outcome is Outcome.DEFERRED and "maintenance window" in result.reason
    assert [r for r in h.arm.requests if r.method != "GET"] == []
    h.clock.advance(24 * 3600)  # Sunday 02:30
    [result] = h.apply([h.rec("vm", "Standard_D2s_v5")], act)
    assert result.outcome is Outcome.DONE


def test_maintenance_window_wrapping_midnight() -> None:
    window = MaintenanceWindow(("fri",), 22, 4)
    assert window.contains(dt.datetime(2026, 11, 27, 23, 0, tzinfo=dt.UTC))  # Friday 23:00
    assert window.contains(dt.datetime(2026, 11, 28, 3, 59, tzinfo=dt.UTC))  # Saturday 03:59
    assert not window.contains(dt.datetime(2026, 11, 28, 4, 0, tzinfo=dt.UTC))
    assert not window.contains(dt.datetime(2026, 11, 27, 3, 0, tzinfo=dt.UTC))  # Friday 03:00 (Thursday's night)


def test_per_run_cap_defers_the_rest(h: Harness) -> None:
    for i in range(5):
        h.arm.add_vm("rg1", f"vm{i}", "Standard_D4s_v5")
    act = ActSettings(health_signals=NO_SIGNALS, max_changes_per_run=2, validation_window_s=0)
    results = h.apply([h.rec(f"vm{i}", "Standard_D2s_v5") for i in range(5)], act)
    assert [r.outcome for r in results] == [Outcome.DONE] * 2 + [Outcome.DEFERRED] * 3
    sizes = [h.arm.vm("rg1", f"vm{i}").size for i in range(5)]
    assert sizes == ["Standard_D2s_v5"] * 2 + ["Standard_D4s_v5"] * 3


def test_concurrency_limit_is_respected_and_used(h: Harness) -> None:
    for i in range(6):
        h.arm.add_vm("rg1", f"vm{i}", "Standard_D4s_v5")

    class CountingProbe(ScriptedProbe):
        def __init__(self) -> None:
            super().__init__()
            self.active = 0
            self.peak = 0
            self.barrier = threading.Barrier(2, timeout=20)

        def check(self, vm: VmInfo, signals: Sequence[HealthSignal], now: dt.datetime) -> list[Breach]:
            with self.lock:
                self.active += 1
                self.peak = max(self.peak, self.active)
            # Two changes must be validating at the same time to pass this barrier; a third would be a bug.
            self.barrier.wait()
            with self.lock:
                self.active -= 1
            return []

    probe = CountingProbe()
    act = ActSettings(health_signals=NO_SIGNALS, max_concurrent_changes=2, validation_window_s=0)
    results = h.apply([h.rec(f"vm{i}", "Standard_D2s_v5") for i in range(6)], act, probe)
    assert [r.outcome for r in results] == [Outcome.DONE] * 6
    assert probe.peak == 2


def test_only_applicable_recommendations_are_applied_and_approvals_get_a_tag(h: Harness) -> None:
    h.arm.add_vm("rg1", "auto", "Standard_D4s_v5")
    h.arm.add_vm("rg1", "needs", "Standard_D4s_v5")
    h.arm.add_vm("rg1", "shut", "Standard_D4s_v5")
    h.arm.add_vm("rg1", "optout", "Standard_D4s_v5", tags={"finops.ai/optimization-enabled": "false"})
    shutdown = Recommendation(h.vm("shut"), Action.SHUTDOWN, Decision.RECOMMEND_ONLY, "idle")
    recs = [
        h.rec("auto", "Standard_D2s_v5"),
        h.rec("needs", "Standard_D2s_v5", savings=350.0, decision=Decision.NEEDS_APPROVAL),
        shutdown,
        h.rec("optout", "Standard_D2s_v5"),
    ]
    results = h.apply(recs)
    assert [(r.vm_name, r.outcome) for r in results] == [("auto", Outcome.DONE), ("optout", Outcome.SKIPPED)]
    assert h.arm.vm("rg1", "needs").size == "Standard_D4s_v5"
    assert h.arm.vm("rg1", "needs").tags[RECOMMENDATION_TAG] == "Standard_D2s_v5|350.00|2026-11-28T02:30:00Z"
    assert h.arm.vm("rg1", "shut").power_state == "running"
    assert h.arm.vm("rg1", "optout").size == "Standard_D4s_v5"
    assert sum(1 for k in h.kinds() if k == kinds.DECISION) == 4


def test_a_recommendation_made_stale_by_a_manual_resize_is_skipped(h: Harness) -> None:
    h.arm.add_vm("rg1", "vm", "Standard_D4s_v5")
    rec = h.rec("vm", "Standard_D2s_v5")
    h.arm.vm("rg1", "vm").size = "Standard_D8s_v5"
    [result] = h.apply([rec])
    assert result.outcome is Outcome.SKIPPED and "stale" in result.reason
    assert h.arm.vm("rg1", "vm").size == "Standard_D8s_v5"


def test_two_members_of_one_group_never_change_in_the_same_run(h: Harness) -> None:
    h.arm.add_vm("rg1", "a", "Standard_D4s_v5", availability_set="web")
    h.arm.add_vm("rg1", "b", "Standard_D4s_v5", availability_set="web")
    act = ActSettings(health_signals=NO_SIGNALS, max_concurrent_changes=2, validation_window_s=0)
    results = h.apply([h.rec("a", "Standard_D2s_v5"), h.rec("b", "Standard_D2s_v5")], act)
    assert [r.outcome for r in results] == [Outcome.DONE, Outcome.SKIPPED]
    assert "group web" in results[1].reason
    assert h.arm.vm("rg1", "b").size == "Standard_D4s_v5"
