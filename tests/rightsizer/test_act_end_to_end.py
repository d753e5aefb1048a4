"""The whole loop through the real clients: Azure inventory (fake ARM) + metrics (real Prometheus) ->
recommend --apply -> needs approval (tag) -> approve -> next run applies -> audit verify and monthly report."""

from __future__ import annotations

import argparse
import io
import time
from pathlib import Path

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from rightsizer.act.cli import cmd_approve, register
from rightsizer.act.settings import CHANGE_TAG, RECOMMENDATION_TAG
from rightsizer.audit import AuditLog
from rightsizer.azure import ComputeGateway, VmRef
from rightsizer.cli import run_recommend
from rightsizer.domain import APPROVAL_TAG, PREVIOUS_SIZE_TAG
from rightsizer.report import monthly_summary
from rightsizer.tags import ChangeTag, Phase
from tests.fakes.arm import DEFAULT_SKUS, FakeArm, FakeCredential, client_kwargs
from tests.support.prometheus import (  # noqa: F401  (fixtures, used by name)
    StartPrometheus,
    prometheus_factory,
    series,
)

pytestmark = pytest.mark.prometheus


def recommend_args(config: Path, textfile: Path | None = None) -> argparse.Namespace:
    return argparse.Namespace(
        metrics_textfile=None if textfile is None else str(textfile),
        config=str(config),
        inventory=None,
        metrics=None,
        shard=None,
        now=None,
        forecast=None,
        refresh_prices=False,
        apply=True,
        output="json",
    )


def test_recommend_approve_apply_audit(prometheus_factory: StartPrometheus, tmp_path: Path) -> None:  # noqa: F811
    end = time.time() - 60
    stamps = np.arange(end - 8 * 86_400, end, 300.0)
    rng = np.random.default_rng(7)
    idle_cpu = 6 + 3 * np.sin(stamps / 86_400 * 2 * np.pi) + rng.normal(0, 0.5, stamps.size)
    memory = np.full(stamps.size, 20.0)
    prometheus = prometheus_factory(
        series("vm_cpu_percent", stamps, idle_cpu, vm="big"),
        series("vm_memory_percent", stamps, memory, vm="big"),
    )
    skus = {**DEFAULT_SKUS, "Standard_E4as_v5": (4, 32.0), "Standard_E2as_v5": (2, 16.0), "Standard_D4as_v5": (4, 16.0)}
    with FakeArm(skus=skus) as arm:
        arm.add_vm("rg1", "big", "Standard_D16s_v5", available_sizes=["Standard_D16s_v5", "Standard_D8s_v5"])
        audit_path = tmp_path / "audit.jsonl"
        config = tmp_path / "rightsizer.yaml"
        config.write_text(
            f"""
audit_log: {audit_path}
azure: {{subscriptions: ['{arm.subscription}'], resource_groups: [rg1]}}
metrics:
  prometheus_url: '{prometheus.url}'
  cpu_query: 'vm_cpu_percent{{{{vm="{{vm}}"}}}}'
  memory_query: 'vm_memory_percent{{{{vm="{{vm}}"}}}}'
forecast: {{method: none}}
act: {{validation_window_s: 0, health_signals: []}}
""",
            encoding="utf-8",
        )
        compute = ComputeGateway(FakeCredential(), **client_kwargs(arm))

        out = io.StringIO()
        assert run_recommend(recommend_args(config), out, gateway_factory=lambda: compute) == 0
        pending = arm.vm("rg1", "big").tags[RECOMMENDATION_TAG]
        target, savings, _ = pending.split("|")
        assert float(savings) > 100  # a FinOps lead must approve
        assert arm.vm("rg1", "big").size == "Standard_D16s_v5"

        parser = argparse.ArgumentParser()
        register(parser.add_subparsers(dest="command"))
        approve = parser.parse_args(
            ["approve", VmRef(arm.subscription, "rg1", "big").arm_id, "--target", target, "--by", "Dana",
             "--tier", "finops-lead", "--config", str(config)]
        )  # fmt: skip
        assert cmd_approve(approve, compute=compute, out=io.StringIO()) == 0
        assert arm.vm("rg1", "big").tags[APPROVAL_TAG].startswith(f"{target}|finops-lead|Dana|")

        textfile = tmp_path / "rightsizer.prom"
        assert run_recommend(recommend_args(config, textfile), io.StringIO(), gateway_factory=lambda: compute) == 0
        vm = arm.vm("rg1", "big")
        assert (vm.size, vm.power_state) == (target, "running")
        assert vm.tags[PREVIOUS_SIZE_TAG].startswith("Standard_D16s_v5|")
        assert ChangeTag.parse(vm.tags[CHANGE_TAG]).phase is Phase.DONE
        # Not in the running VM's cluster: it went through deallocate, resize, start.
        assert len(arm.requests_matching("POST", "/big/deallocate$")) == 1

        audit = AuditLog(audit_path)
        assert audit.verify().ok
        kinds = [r["kind"] for r in audit.records()]
        assert kinds.count("decision") == 2 and "approval" in kinds and kinds[-1] == "change-done"
        month = time.strftime("%Y-%m", time.gmtime())
        summary = monthly_summary(audit_path, month)
        assert (summary.successes, summary.approvals) == (1, 1)
        # The run's metrics: the change counted by the Alerter in the run's registry, the applied savings, the head.
        exported = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(textfile.read_text(encoding="utf-8"))
            for s in family.samples
        }
        assert exported[("rightsizer_changes_total", (("outcome", "done"),))] == 1
        assert exported[("rightsizer_savings_monthly", (("state", "applied"),))] == pytest.approx(float(savings))
        assert exported[("rightsizer_compliance_changes_total", ())] == 0
        assert exported[("rightsizer_audit_head_info", (("hash", audit.verify().last_hash),))] == 1
        assert summary.monthly_savings_usd == pytest.approx(float(savings), abs=0.01)
