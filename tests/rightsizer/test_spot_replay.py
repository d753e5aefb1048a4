"""Replay a real day of Spot preemptions (SpotHedge AWS2 trace, see data/DATA.md) through the fake ARM.

A scale set of 20 with a 20 % regular mix (4 regular, 16 Spot). Every 5-minute step of the trace sets how many
Spot instances the cloud lets run; running Spot instances above that are evicted through the real
``simulate_eviction`` call; every other step (a CronJob every 10 minutes) one Spot fallback pass runs.
The regular share must never drop under the minimum, and after each pass the full capacity must be running.
"""

from __future__ import annotations

import csv
import datetime as dt
import math
from pathlib import Path

from rightsizer.act.settings import SpotSettings
from rightsizer.act.spot import run_spot_pass
from rightsizer.audit import AuditLog
from rightsizer.azure import ComputeGateway, ScaleSetRef, VmRef
from tests.fakes.arm import FakeArm, FakeCredential, client_kwargs

SUB = "00000000-0000-0000-0000-000000000001"
TRACE = Path(__file__).parent / "data" / "spot_preemptions_aws2_us-west-2c_24h.csv"
CAPACITY = 20
MIN_SHARE = 0.2
PASS_EVERY_STEPS = 2
T0 = dt.datetime(2026, 11, 28, 0, 0, tzinfo=dt.UTC)


def load_trace() -> list[tuple[float, int]]:
    with open(TRACE, newline="") as handle:
        rows = list(csv.DictReader(handle))
    start = float(rows[0]["t_offset_s"])
    return [(float(r["t_offset_s"]) - start, int(r["value"])) for r in rows]


def test_replayed_preemptions_never_push_the_regular_share_under_the_minimum(tmp_path: Path) -> None:
    with FakeArm(page_size=100) as arm:
        replay(arm, tmp_path)


def replay(fake_arm: FakeArm, tmp_path: Path) -> None:
    trace = load_trace()
    assert len(trace) == 288
    fake_arm.add_scale_set("rg1", "pool", "Standard_D2s_v5", CAPACITY, regular_percentage_above_base=20)
    scale_set = fake_arm.scale_sets[("rg1", "pool")]
    compute = ComputeGateway(FakeCredential(), **client_kwargs(fake_arm))
    audit = AuditLog(tmp_path / "audit.jsonl")
    settings = SpotSettings(min_regular_share=MIN_SHARE)
    ref = ScaleSetRef(SUB, "rg1", "pool")
    minimum_regular = math.ceil(MIN_SHARE * CAPACITY)

    evicted_total = 0
    modes: set[str] = set()
    returned_total = 0
    lowest_regular = CAPACITY
    passes = 0
    for step, (offset, spot_available) in enumerate(trace):
        now = T0 + dt.timedelta(seconds=offset)
        scale_set.spot_capacity = spot_available
        running_spot = [
            vm
            for vm in fake_arm.scale_set_instances("rg1", "pool")
            if vm.priority == "Spot" and vm.power_state == "running"
        ]
        for vm in running_spot[spot_available:]:
            compute.simulate_eviction(VmRef(SUB, "rg1", vm.name))
            evicted_total += 1
        regular_after_evictions = sum(
            1
            for vm in fake_arm.scale_set_instances("rg1", "pool")
            if vm.priority == "Regular" and vm.power_state == "running"
        )
        lowest_regular = min(lowest_regular, regular_after_evictions)
        assert regular_after_evictions >= minimum_regular, f"at {offset} s"

        if step % PASS_EVERY_STEPS:
            continue
        result = run_spot_pass(compute, compute.get_scale_set(ref), settings, now, audit, dry_run=False)
        modes.add(result.mode)
        returned_total += result.returned_to_spot
        instances = fake_arm.scale_set_instances("rg1", "pool")
        running = [vm for vm in instances if vm.power_state == "running"]
        regular = [vm for vm in running if vm.priority == "Regular"]
        assert len(instances) == CAPACITY, f"capacity changed at {offset} s"
        assert len(running) == CAPACITY, f"lost capacity not covered at {offset} s: {result}"
        assert len(regular) >= minimum_regular
        assert sum(1 for vm in running if vm.priority == "Spot") <= spot_available
        passes += 1

    # The day had real storms: the group was held on regular, and went back to Spot afterwards.
    assert evicted_total > 50
    assert {"spot", "regular-hold"} <= modes
    assert returned_total > 0
    assert audit.verify().ok
    print(
        f"replayed {len(trace)} steps ({passes} passes): {evicted_total} evictions, "
        f"{returned_total} instances returned to Spot, "
        f"lowest regular count {lowest_regular} (minimum {minimum_regular}), modes {sorted(modes)}"
    )
