"""``rightsizer recommend`` with the Azure inventory read through the real azure-mgmt-compute client from the
fake ARM server (tests/fakes/arm.py), and real metrics from a file."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from rightsizer.azure import ComputeGateway
from tests.fakes.arm import FakeArm, FakeCredential, client_kwargs
from tests.support.arm_recommend import recommend_over_arm

VMS = {"bb-30": "Standard_D4s_v5", "bb-89": "Standard_D2s_v5", "bb-213": "Standard_D8s_v5"}


def test_recommend_over_the_azure_inventory(fake_arm: FakeArm, tmp_path: Path) -> None:
    for name, size in VMS.items():
        fake_arm.add_vm("rg-example", name, size, tags={"team": "a"})
    fake_arm.add_vm("rg-example", "no-metrics", "Standard_D2s_v5")
    doc = recommend_over_arm(
        fake_arm, tmp_path, VMS, lambda: ComputeGateway(FakeCredential(), **client_kwargs(fake_arm))
    )
    recs = {r["vm"]: r for r in doc["recommendations"]}
    assert set(recs) == {*VMS, "no-metrics"}
    assert doc["inputs"] == f"Azure subscriptions {fake_arm.subscription}"
    for name in VMS:
        assert recs[name]["id"].endswith(
            f"/resourceGroups/rg-example/providers/Microsoft.Compute/virtualMachines/{name}"
        )
        assert recs[name]["current_size"] == VMS[name]
        assert "no metrics" not in recs[name]["reason"]
    assert recs["no-metrics"]["decision"] == "skip" and "no metrics" in recs["no-metrics"]["reason"]
    # A dry run reads only: no PUT/PATCH/POST reached the fake.
    assert not [r for r in fake_arm.requests if r.method in ("PUT", "PATCH", "POST")]


def test_azure_unreachable_is_one_line_and_exit_3(
    fake_arm: FakeArm, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from rightsizer.azure.gateway import RetrySettings
    from rightsizer.cli import main
    from tests.fakes.arm import Fault

    fake_arm.add_vm("rg-example", "web-1", "Standard_D4s_v5")
    fake_arm.add_fault(Fault(path="/virtualMachines$", method="GET", status=503, code="ServiceUnavailable", times=None))
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        f"azure:\n  subscriptions: ['{fake_arm.subscription}']\nmetrics: {{prometheus_url: 'http://127.0.0.1:1'}}\n"
    )
    code = main(
        ["recommend", "--config", str(cfg)],
        out=io.StringIO(),
        gateway_factory=lambda: ComputeGateway(
            FakeCredential(), retry=RetrySettings(max_attempts=2, backoff_base_s=0.01), **client_kwargs(fake_arm)
        ),
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 3 and err[-1].startswith("rightsizer: error: Azure unreachable: virtual_machines.list_all")
    assert all(
        json.loads(line)["level"] == "warning" for line in err[:-1]
    )  # the gateway's retry log lines, no traceback
