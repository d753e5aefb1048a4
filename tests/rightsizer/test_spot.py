"""Spot fallback: the pure planner, its state tag, standalone recommendations, and passes against the fake ARM."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from rightsizer import audit as kinds
from rightsizer.act.settings import SPOT_STATE_TAG, SpotSettings
from rightsizer.act.spot import run_spot_pass
from rightsizer.audit import AuditLog
from rightsizer.azure import ComputeGateway, ScaleSetInfo, ScaleSetRef
from rightsizer.decide.spot import (
    ANY_ZONE,
    Offering,
    SpotState,
    plan_spot,
    regular_target,
    spot_move_recommendation,
)
from rightsizer.domain import Action, Decision, PowerState, Priority, VmInfo
from tests.fakes.arm import FakeArm, FakeCredential, Fault, client_kwargs

SUB = "00000000-0000-0000-0000-000000000001"
T0 = dt.datetime(2026, 11, 28, 2, 0, tzinfo=dt.UTC)
SIZE = "Standard_D2s_v5"


def at(minutes: float) -> dt.datetime:
    return T0 + dt.timedelta(minutes=minutes)


def scale_set(capacity: int = 10, pct: int = 20, zones: tuple[str, ...] = ("1", "2", "3")) -> ScaleSetInfo:
    return ScaleSetInfo(
        id=ScaleSetRef(SUB, "rg1", "pool").arm_id,
        name="pool",
        resource_group="rg1",
        subscription_id=SUB,
        size=SIZE,
        region="westeurope",
        capacity=capacity,
        priority=Priority.SPOT,
        base_regular_count=0,
        regular_percentage_above_base=pct,
        zones=zones,
    )


def instance(n: int, priority: Priority, state: PowerState = PowerState.RUNNING, zone: str = "1") -> VmInfo:
    name = f"pool_{n:06x}"
    return VmInfo(
        id=f"/subscriptions/{SUB}/resourceGroups/rg1/providers/Microsoft.Compute/virtualMachines/{name}",
        name=name,
        resource_group="rg1",
        size=SIZE,
        region="westeurope",
        priority=priority,
        zone=zone,
        power_state=state,
        scale_set="pool",
    )


def fleet(regular: int, spot: int, evicted: int = 0) -> list[VmInfo]:
    vms = [instance(i, Priority.REGULAR) for i in range(regular)]
    vms += [instance(100 + i, Priority.SPOT) for i in range(spot)]
    vms += [instance(200 + i, Priority.SPOT, PowerState.DEALLOCATED, zone="2") for i in range(evicted)]
    return vms


def test_regular_target_follows_spot_priority_mix() -> None:
    assert regular_target(10, 2, 50) == 6  # Microsoft's example: 2 base + 50 % of the 8 above
    assert regular_target(20, 0, 20) == 4
    assert regular_target(7, 0, 20) == 2  # 1.4 rounded up: never under the share
    assert regular_target(1, 3, 0) == 1


def test_state_tag_round_trips_and_fits_a_tag() -> None:
    state = SpotState(
        evictions=(1_700_000_000.0, 1_700_000_100.0),
        hold_until=1_700_003_600.0,
        unavailable=((Offering(SIZE, "2", Priority.SPOT), 1_700_000_700.0, "AllocationFailed"),),
    )
    assert SpotState.decode(state.encode()) == state
    many = SpotState(evictions=tuple(1_700_000_000.0 + i for i in range(100)))
    encoded = many.encode()
    assert len(encoded) <= 256
    assert SpotState.decode(encoded).evictions[-1] == 1_700_000_099.0  # the newest are kept


def test_an_unreadable_state_tag_reads_as_empty() -> None:
    assert SpotState.decode("h=abc;zz") == SpotState()


def test_evictions_are_replaced_by_regular_and_their_zone_remembered() -> None:
    plan = plan_spot(scale_set(), fleet(2, 6, evicted=2), SpotState(), SpotSettings(), T0)
    assert plan.delete_evicted == ("pool_0000c8", "pool_0000c9")
    assert (plan.capacity, plan.fill_percentage) == (10, 100)
    assert plan.mode == "spot" and plan.policy_percentage == 20
    assert plan.state.evictions == (T0.timestamp(),) * 2
    [(offering, until, code)] = plan.state.unavailable
    assert (offering, code) == (Offering(SIZE, "2", Priority.SPOT), "eviction")
    assert until == T0.timestamp() + 600


def test_three_evictions_within_an_hour_hold_regular_until_the_cooldown_ends() -> None:
    settings = SpotSettings(hold_s=3600)
    plan = plan_spot(scale_set(), fleet(2, 7, evicted=1), SpotState(), settings, at(0))
    plan = plan_spot(scale_set(), fleet(3, 6, evicted=1), plan.state, settings, at(20))
    assert plan.mode == "spot"
    plan = plan_spot(scale_set(), fleet(4, 5, evicted=1), plan.state, settings, at(50))
    assert plan.mode == "regular-hold" and plan.policy_percentage == 100
    assert plan.state.hold_until == at(110).timestamp()
    plan = plan_spot(scale_set(), fleet(5, 5), plan.state, settings, at(100))
    assert plan.mode == "regular-hold" and plan.rebalance_regular == ()
    plan = plan_spot(scale_set(), fleet(5, 5), plan.state, settings, at(111))
    assert plan.mode == "spot" and plan.policy_percentage == 20
    # 5 regular where the mix wants 2: the 3 newest stand-ins go back to Spot.
    assert plan.rebalance_regular == ("pool_000002", "pool_000003", "pool_000004")


def test_two_evictions_an_hour_apart_do_not_hold() -> None:
    settings = SpotSettings()
    plan = plan_spot(scale_set(), fleet(2, 6, evicted=2), SpotState(), settings, at(0))
    plan = plan_spot(scale_set(), fleet(4, 5, evicted=1), plan.state, settings, at(61))
    assert plan.mode == "spot"


def test_no_return_to_spot_until_quiet_and_available() -> None:
    settings = SpotSettings(quiet_before_return_s=1800)
    plan = plan_spot(scale_set(), fleet(2, 7, evicted=1), SpotState(), settings, at(0))
    assert plan_spot(scale_set(), fleet(3, 7), plan.state, settings, at(20)).rebalance_regular == ()
    assert plan_spot(scale_set(), fleet(3, 7), plan.state, settings, at(31)).rebalance_regular == ("pool_000002",)


@pytest.mark.parametrize(
    ("code", "ttl_min"), [("AllocationFailed", 10), ("SkuNotAvailable", 60), ("LowPriorityCores", 60)]
)
def test_unavailable_offerings_expire_after_a_time_that_depends_on_the_error(code: str, ttl_min: int) -> None:
    settings = SpotSettings()
    until = T0.timestamp() + settings.ttl_for(code)
    state = SpotState(unavailable=((Offering(SIZE, ANY_ZONE, Priority.SPOT), until, code),))
    assert plan_spot(scale_set(), fleet(2, 8), state, settings, at(ttl_min - 1)).mode == "regular-unavailable"
    assert plan_spot(scale_set(), fleet(2, 8), state, settings, at(ttl_min)).mode == "spot"


def test_one_zone_unavailable_does_not_block_a_zonal_scale_set() -> None:
    state = SpotState(unavailable=((Offering(SIZE, "2", Priority.SPOT), at(30).timestamp(), "eviction"),))
    assert plan_spot(scale_set(), fleet(2, 8), state, SpotSettings(), T0).mode == "spot"
    all_zones = SpotState(
        unavailable=tuple((Offering(SIZE, z, Priority.SPOT), at(30).timestamp(), "eviction") for z in "123")
    )
    assert plan_spot(scale_set(), fleet(2, 8), all_zones, SpotSettings(), T0).mode == "regular-unavailable"


def test_standalone_vms_get_recommend_only_spot_moves() -> None:
    vm = VmInfo(id="/x", name="batch", resource_group="rg", size="Standard_D4s_v5", region="westeurope")
    rec = spot_move_recommendation(vm, ondemand_hourly_usd=0.192, spot_hourly_usd=0.0384, eviction_rate_band="0-5%")
    assert rec is not None
    assert (rec.action, rec.decision, rec.applicable) == (Action.MOVE_TO_SPOT, Decision.RECOMMEND_ONLY, False)
    assert rec.monthly_savings_usd == pytest.approx((0.192 - 0.0384) * 730, abs=0.01)
    assert "0-5%" in rec.reason and "cannot change in place" in rec.reason
    spot_vm = VmInfo(
        id="/y", name="s", resource_group="rg", size="Standard_D4s_v5", region="we", priority=Priority.SPOT
    )
    assert spot_move_recommendation(spot_vm, ondemand_hourly_usd=0.2, spot_hourly_usd=0.04) is None
    assert spot_move_recommendation(vm, ondemand_hourly_usd=0.2, spot_hourly_usd=None) is None
    assert spot_move_recommendation(vm, ondemand_hourly_usd=0.2, spot_hourly_usd=0.3) is None
    with pytest.raises(ValueError, match="USD/hour"):
        spot_move_recommendation(vm, ondemand_hourly_usd=0.2, spot_hourly_usd=-1)


# -- against the fake ARM ----------------------------------------------------------------------------------


def running(arm: FakeArm) -> tuple[int, int]:
    instances = arm.scale_set_instances("rg1", "pool")
    regular = sum(1 for vm in instances if vm.priority == "Regular" and vm.power_state == "running")
    spot = sum(1 for vm in instances if vm.priority == "Spot" and vm.power_state == "running")
    return regular, spot


def test_a_pass_replaces_evicted_spot_with_regular_and_returns_later(fake_arm: FakeArm, tmp_path: Path) -> None:
    fake_arm.add_scale_set("rg1", "pool", SIZE, 10, regular_percentage_above_base=20)
    compute = ComputeGateway(FakeCredential(), **client_kwargs(fake_arm))
    audit = AuditLog(tmp_path / "audit.jsonl")
    settings = SpotSettings(quiet_before_return_s=1800)
    assert running(fake_arm) == (2, 8)
    spot = [vm for vm in fake_arm.scale_set_instances("rg1", "pool") if vm.priority == "Spot"]
    fake_arm.evict("rg1", spot[0].name)
    fake_arm.evict("rg1", spot[1].name)

    ref = ScaleSetRef(SUB, "rg1", "pool")
    result = run_spot_pass(compute, compute.get_scale_set(ref), settings, at(0), audit, dry_run=False)
    assert (result.replaced_evicted, result.capacity_restored) == (2, True)
    assert running(fake_arm) == (4, 6)
    assert len(fake_arm.scale_set_instances("rg1", "pool")) == 10
    info = compute.get_scale_set(ref)
    assert info.regular_percentage_above_base == 20  # the mix for future scale-outs is back to configured
    assert SpotState.decode(info.tags[SPOT_STATE_TAG]).evictions == (at(0).timestamp(),) * 2
    assert [r["kind"] for r in audit.records()] == [kinds.SPOT]

    result = run_spot_pass(compute, compute.get_scale_set(ref), settings, at(10), audit, dry_run=False)
    assert result.returned_to_spot == 0 and running(fake_arm) == (4, 6)
    result = run_spot_pass(compute, compute.get_scale_set(ref), settings, at(31), audit, dry_run=False)
    assert result.returned_to_spot == 2
    assert running(fake_arm) == (2, 8)
    assert len(fake_arm.scale_set_instances("rg1", "pool")) == 10


def test_no_spot_capacity_on_return_keeps_regular_and_remembers(fake_arm: FakeArm) -> None:
    fake_arm.add_scale_set("rg1", "pool", SIZE, 10, regular_percentage_above_base=20)
    compute = ComputeGateway(FakeCredential(), **client_kwargs(fake_arm))
    ref = ScaleSetRef(SUB, "rg1", "pool")
    spot = [vm for vm in fake_arm.scale_set_instances("rg1", "pool") if vm.priority == "Spot"]
    fake_arm.evict("rg1", spot[0].name)
    run_spot_pass(compute, compute.get_scale_set(ref), SpotSettings(), at(0), dry_run=False)
    assert running(fake_arm) == (3, 7)
    fake_arm.add_fault(
        Fault(
            path="/virtualMachineScaleSets/pool$",
            method="PATCH",
            body_contains='"capacity": 11',
            lro_failure=True,
            code="SkuNotAvailable",
        )
    )
    result = run_spot_pass(compute, compute.get_scale_set(ref), SpotSettings(), at(31), dry_run=False)
    assert result.returned_to_spot == 0 and result.errors == ("Spot surge failed: SkuNotAvailable",)
    assert running(fake_arm) == (3, 7)
    state = SpotState.decode(compute.get_scale_set(ref).tags[SPOT_STATE_TAG])
    assert any(o.zone == ANY_ZONE and code == "SkuNotAvailable" for o, _, code in state.unavailable)
    # Within the hour nothing is tried; after it, the stand-in goes back to Spot.
    assert (
        run_spot_pass(compute, compute.get_scale_set(ref), SpotSettings(), at(80), dry_run=False).mode
        == "regular-unavailable"
    )
    assert (
        run_spot_pass(compute, compute.get_scale_set(ref), SpotSettings(), at(92), dry_run=False).returned_to_spot == 1
    )
    assert running(fake_arm) == (2, 8)


def test_no_regular_capacity_keeps_the_evicted_instances_and_says_so(fake_arm: FakeArm) -> None:
    fake_arm.add_scale_set("rg1", "pool", SIZE, 10, regular_percentage_above_base=20)
    compute = ComputeGateway(FakeCredential(), **client_kwargs(fake_arm))
    ref = ScaleSetRef(SUB, "rg1", "pool")
    spot = [vm for vm in fake_arm.scale_set_instances("rg1", "pool") if vm.priority == "Spot"]
    fake_arm.evict("rg1", spot[0].name)
    fake_arm.add_fault(
        Fault(
            path="/virtualMachineScaleSets/pool$",
            method="PATCH",
            body_contains='"capacity": 11',
            lro_failure=True,
            code="ZonalAllocationFailed",
        )
    )
    result = run_spot_pass(compute, compute.get_scale_set(ref), SpotSettings(), at(0), dry_run=False)
    assert not result.capacity_restored
    assert result.errors == ("regular replacement failed: ZonalAllocationFailed",)
    instances = fake_arm.scale_set_instances("rg1", "pool")
    assert len(instances) == 10 and fake_arm.vm("rg1", spot[0].name).power_state == "deallocated"
    state = SpotState.decode(compute.get_scale_set(ref).tags[SPOT_STATE_TAG])
    assert any(o.priority is Priority.REGULAR and code == "ZonalAllocationFailed" for o, _, code in state.unavailable)


def test_the_spot_pass_takes_dry_run_itself_and_writes_nothing_by_default(fake_arm: FakeArm, tmp_path: Path) -> None:
    fake_arm.add_scale_set("rg1", "pool", SIZE, 10, regular_percentage_above_base=20)
    compute = ComputeGateway(FakeCredential(), **client_kwargs(fake_arm))
    spot = [vm for vm in fake_arm.scale_set_instances("rg1", "pool") if vm.priority == "Spot"]
    fake_arm.evict("rg1", spot[0].name)
    ref = ScaleSetRef(SUB, "rg1", "pool")
    before = len(fake_arm.requests)
    result = run_spot_pass(compute, compute.get_scale_set(ref), SpotSettings(), at(0), AuditLog(tmp_path / "a.jsonl"))
    assert result.dry_run and result.plan is not None and result.plan.delete_evicted
    assert result.replaced_evicted == 0
    writes = [r for r in fake_arm.requests[before:] if r.method not in ("GET", "HEAD")]
    assert writes == []
    assert running(fake_arm) == (2, 7)
