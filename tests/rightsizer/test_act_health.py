"""Health signals from a real Prometheus (Debian's binary, backfilled): the probe and a breach-driven rollback."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from rightsizer.act.alerts import Alerter
from rightsizer.act.apply import Outcome, apply_recommendations
from rightsizer.act.health import HealthProbeError, PrometheusHealthProbe
from rightsizer.act.settings import ActSettings, HealthSignal
from rightsizer.audit import AuditLog
from rightsizer.azure import ComputeGateway, VmRef
from rightsizer.domain import Action, Decision, Recommendation, VmInfo
from rightsizer.settings import Settings
from tests.fakes.arm import FakeArm, FakeCredential, ManualClock, client_kwargs
from tests.support.prometheus import (  # noqa: F401  (fixtures, used by name)
    PrometheusServer,
    StartPrometheus,
    prometheus_factory,
    series,
)

pytestmark = pytest.mark.prometheus


SUB = "00000000-0000-0000-0000-000000000001"
LATENCY = HealthSignal("p95_latency_ms", 'max_over_time(app_latency_p95_ms{{vm="{vm}"}}[5m])', 250.0)
ERRORS = HealthSignal("error_rate", 'max_over_time(app_error_ratio{{vm="{vm}"}}[5m])', 0.01)


def vm(name: str) -> VmInfo:
    return VmInfo(id=VmRef(SUB, "rg1", name).arm_id, name=name, resource_group="rg1", size="x", region="westeurope")


@pytest.fixture
def prometheus(prometheus_factory: StartPrometheus) -> tuple[PrometheusServer, float]:  # noqa: F811
    end = time.time() - 30
    stamps = np.arange(end - 3600, end, 60.0)
    slow = np.full(stamps.size, 120.0)
    slow[-3:] = 900.0  # the last three minutes breach
    return (
        prometheus_factory(
            series("app_latency_p95_ms", stamps, slow, vm="hot"),
            series("app_latency_p95_ms", stamps, np.full(stamps.size, 110.0), vm="calm"),
            series("app_error_ratio", stamps, np.full(stamps.size, 0.001), vm="calm"),
        ),
        end,
    )


def test_probe_reads_signals_and_compares_thresholds(prometheus: tuple[PrometheusServer, float]) -> None:
    server, end = prometheus
    probe = PrometheusHealthProbe(server.url)
    now = dt.datetime.fromtimestamp(end, dt.UTC)
    [breach] = probe.check(vm("hot"), [LATENCY, ERRORS], now)
    assert (breach.signal, breach.value, breach.threshold) == ("p95_latency_ms", 900.0, 250.0)
    assert probe.check(vm("calm"), [LATENCY, ERRORS], now) == []
    # Before the spike the same VM was healthy; a VM without data is not a breach.
    assert probe.check(vm("hot"), [LATENCY], now - dt.timedelta(minutes=10)) == []
    assert probe.check(vm("unknown"), [LATENCY], now) == []
    with pytest.raises(HealthProbeError, match="p95"):
        probe.check(vm("hot"), [HealthSignal("p95", "max_over_time(", 1.0)], now)


def test_a_breach_seen_in_prometheus_rolls_the_resize_back(
    fake_arm: FakeArm, prometheus: tuple[PrometheusServer, float], tmp_path: Path
) -> None:
    server, end = prometheus
    fake_arm.add_vm("rg1", "hot", "Standard_D4s_v5")
    fake_arm.add_vm("rg1", "calm", "Standard_D4s_v5")
    compute = ComputeGateway(FakeCredential(), **client_kwargs(fake_arm))
    recs = [
        Recommendation(compute.get_vm(VmRef(SUB, "rg1", n)), Action.RESIZE, Decision.AUTO, "low cpu", "Standard_D2s_v5")
        for n in ("hot", "calm")
    ]
    act = ActSettings(
        health_signals=(LATENCY,),
        health_signals_by_vm={"calm": (ERRORS,)},
        prometheus_url=server.url,
        validation_window_s=120,
        validation_interval_s=60,
    )
    # The validation window ends at the data's end: the spike is inside it for "hot".
    clock = ManualClock(dt.datetime.fromtimestamp(end - 120, dt.UTC))
    registry = CollectorRegistry()
    results = apply_recommendations(
        recs,
        compute=compute,
        settings=Settings(dry_run=False, act=act),
        audit=AuditLog(tmp_path / "audit.jsonl"),
        clock=clock,
        alerter=Alerter(registry),
    )
    outcomes = {r.vm_name: r.outcome for r in results}
    assert outcomes == {"hot": Outcome.ROLLED_BACK, "calm": Outcome.DONE}
    assert fake_arm.vm("rg1", "hot").size == "Standard_D4s_v5"
    assert fake_arm.vm("rg1", "calm").size == "Standard_D2s_v5"
    assert registry.get_sample_value("rightsizer_sla_breaches_total", {"signal": "p95_latency_ms"}) == 1.0
