"""Sizing on constructed catalogues: thresholds on the new size, capabilities, cheapest fit, burstable, shutdown."""

from __future__ import annotations

from dataclasses import replace

import pytest

from rightsizer.decide.sizing import choose_size
from rightsizer.domain import PREVIOUS_SIZE_TAG, Action
from rightsizer.settings import Settings, Thresholds
from tests.rightsizer.helpers import NOW, catalogue, size, stats, vm

D8 = size("Standard_D8_x", 8, 32)
D4 = size("Standard_D4_x", 4, 16)
D2 = size("Standard_D2_x", 2, 8)
F4 = size("Standard_F4_x", 4, 8)
E2 = size("Standard_E2_x", 2, 16)
SETTINGS = Settings()


def test_cheapest_size_keeping_p95_cpu_under_80_percent_on_the_new_size() -> None:
    cat = catalogue({D8: 0.40, D4: 0.20, D2: 0.10})
    # 30% of 8 vCPUs = 2.4 vCPUs: 60% of D4 (fits), 120% of D2 (does not).
    s = choose_size(vm("a", D8.name), stats(30.0, 20.0), cat, SETTINGS, NOW)
    assert s.action is Action.RESIZE and s.target == D4.name
    assert s.monthly_savings == pytest.approx((0.40 - 0.20) * 730)


def test_user_facing_vms_get_the_stricter_40_percent_threshold() -> None:
    cat = catalogue({D8: 0.40, D4: 0.20, D2: 0.10})
    plain = choose_size(vm("a", D8.name), stats(30.0), cat, SETTINGS, NOW)
    facing = choose_size(vm("a", D8.name, tags={"user-facing": "true"}), stats(30.0), cat, SETTINGS, NOW)
    assert plain.target == D4.name
    # 60% on D4 breaks 40%: stays on D8 (30% < 40%).
    assert facing.action is Action.NONE and "already the cheapest" in facing.reason
    also_facing = choose_size(vm("a", D8.name, tags={"workload": "user-facing"}), stats(30.0), cat, SETTINGS, NOW)
    assert also_facing.action is Action.NONE


def test_memory_keeps_30_percent_headroom_on_the_new_size() -> None:
    cat = catalogue({D8: 0.40, D4: 0.20, F4: 0.15})
    # 20% of 32 GiB = 6.4 GiB: 80% of F4's 8 GiB (> 70%), 40% of D4's 16 GiB.
    s = choose_size(vm("a", D8.name), stats(30.0, 20.0), cat, SETTINGS, NOW)
    assert s.target == D4.name
    low_mem = choose_size(vm("a", D8.name), stats(30.0, 10.0), cat, SETTINGS, NOW)
    assert low_mem.target == F4.name  # 40% of 8 GiB fits, F4 is cheaper


def test_unknown_memory_keeps_at_least_the_current_memory() -> None:
    cat = catalogue({D8: 0.40, D4: 0.20, E2: 0.12})
    s = choose_size(vm("a", D8.name), stats(10.0, None), cat, SETTINGS, NOW)
    assert s.action is Action.NONE  # D4 and E2 have less memory than D8's 32 GiB
    big_e = size("Standard_E4_x", 4, 32)
    s2 = choose_size(vm("a", D8.name), stats(10.0, None), catalogue({D8: 0.40, big_e: 0.25}), SETTINGS, NOW)
    assert s2.target == big_e.name


@pytest.mark.parametrize(
    ("current_kw", "candidate_kw", "vm_kw", "why"),
    [
        ({"premium": True}, {"premium": False}, {}, "premium storage"),
        ({"accel": True}, {"accel": False}, {}, "accelerated networking"),
        ({}, {"disks": 4}, {"data_disks": 6}, "data disks"),
        ({}, {"nics": 2}, {"nics": 3}, "NICs"),
        ({"temp": 100.0}, {"temp": 0.0}, {"uses_temp_disk": True}, "temp disk"),
        ({}, {"arch": "arm64"}, {}, "arm64"),
    ],
)
def test_capability_constraints_rule_out_cheaper_sizes(
    current_kw: dict[str, object], candidate_kw: dict[str, object], vm_kw: dict[str, object], why: str
) -> None:
    base: dict[str, object] = {"disks": 8, "nics": 4}
    current = size("Standard_D8_c", 8, 32, **{**base, **current_kw})  # type: ignore[arg-type]
    cheap = size("Standard_D4_c", 4, 16, **{**base, **current_kw, **candidate_kw})  # type: ignore[arg-type]
    ok = size("Standard_D4_ok", 4, 16, **{**base, **current_kw})  # type: ignore[arg-type]
    cat = catalogue({current: 0.40, cheap: 0.10, ok: 0.20})
    s = choose_size(vm("a", current.name, **vm_kw), stats(30.0), cat, SETTINGS, NOW)  # type: ignore[arg-type]
    assert s.target == ok.name, why
    from rightsizer.decide.sizing import capability_problem

    assert why in (capability_problem(vm("a", current.name, **vm_kw), current, cheap) or "")  # type: ignore[arg-type]


def test_temp_disk_only_matters_when_the_vm_uses_it() -> None:
    current = size("Standard_D8_t", 8, 32, temp=300.0)
    no_temp = size("Standard_D4_n", 4, 16, temp=0.0)
    cat = catalogue({current: 0.40, no_temp: 0.20})
    assert choose_size(vm("a", current.name), stats(30.0), cat, SETTINGS, NOW).target == no_temp.name


def test_burstable_is_offered_when_mean_cpu_stays_under_its_baseline() -> None:
    burst = size("Standard_B4s_v2", 4, 16, family="burstable")  # baseline 40% per vCPU (v2 rule)
    cat = catalogue({D8: 0.40, D4: 0.20, burst: 0.15})
    # Mean 10% of 8 vCPUs = 20% of 4: under the 40% baseline.
    s = choose_size(vm("a", D8.name), stats(30.0, 20.0, mean=10.0), cat, SETTINGS, NOW)
    assert s.target == burst.name and "burstable" in s.reason
    # Mean 25% of 8 = 50% of 4 > 40% baseline: the regular D4.
    busy = choose_size(vm("a", D8.name), stats(30.0, 20.0, mean=25.0), cat, SETTINGS, NOW)
    assert busy.target == D4.name
    off = Settings(thresholds=Thresholds(offer_burstable=False))
    assert choose_size(vm("a", D8.name), stats(30.0, mean=10.0), cat, off, NOW).target == D4.name


def test_idle_vms_are_recommended_for_shutdown_with_a_fallback_size() -> None:
    cat = catalogue({D8: 0.40, D4: 0.20, D2: 0.10})
    s = choose_size(vm("a", D8.name), stats(2.5, 10.0), cat, SETTINGS, NOW)
    assert s.action is Action.SHUTDOWN
    assert s.monthly_savings == pytest.approx(0.40 * 730)
    assert s.target == D2.name and "if it must stay on" in s.reason
    not_idle = choose_size(vm("a", D8.name), stats(3.0, 10.0), cat, SETTINGS, NOW)
    assert not_idle.action is Action.RESIZE


def test_minimum_change_rule_keeps_sizes_that_are_nearly_cheapest() -> None:
    near = size("Standard_D8_near", 8, 32)
    cat = catalogue({D8: 0.40, near: 0.37})  # 7.5% cheaper: below the 10% minimum
    s = choose_size(vm("a", D8.name), stats(50.0), cat, SETTINGS, NOW)
    assert s.action is Action.NONE and "only 7.5%" in s.reason
    lenient = Settings(thresholds=Thresholds(min_saving_fraction=0.05))
    assert choose_size(vm("a", D8.name), stats(50.0), cat, lenient, NOW).target == near.name


def test_cooldown_after_a_recent_resize() -> None:
    cat = catalogue({D8: 0.40, D4: 0.20})
    recent = vm("a", D8.name, tags={PREVIOUS_SIZE_TAG: "Standard_D16_x|2026-09-19T00:00:00Z|chg-1"})
    s = choose_size(recent, stats(30.0), cat, SETTINGS, 1_790_000_000.0)  # 2026-09-21
    assert s.action is Action.NONE and "cooldown" in s.reason
    old = vm("a", D8.name, tags={PREVIOUS_SIZE_TAG: "Standard_D16_x|2026-08-01T00:00:00Z|chg-1"})
    assert choose_size(old, stats(30.0), cat, SETTINGS, 1_790_000_000.0).target == D4.name


def test_undersized_vms_get_a_larger_size_marked_undersized() -> None:
    d16 = size("Standard_D16_x", 16, 64)
    cat = catalogue({D8: 0.40, d16: 0.80})
    s = choose_size(vm("a", D8.name), stats(95.0), cat, SETTINGS, NOW)
    assert s.undersized and s.target == d16.name and s.monthly_savings < 0
    assert "undersized" in s.reason


def test_unknown_size_or_price_is_a_problem_not_a_keep() -> None:
    cat = catalogue({D8: 0.40})
    s = choose_size(vm("a", "Standard_Z99"), stats(30.0), cat, SETTINGS, NOW)
    assert s.problem and "not in the catalogue" in s.reason
    windows = replace(vm("a", D8.name), os="windows")
    s2 = choose_size(windows, stats(30.0), cat, SETTINGS, NOW)
    assert s2.problem and "no windows price" in s2.reason
