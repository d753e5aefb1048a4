"""Memory measured in part only: sized on the measured samples' max, widened for the short record, never on
filled-in values; too short a record stays "memory unknown" (the target keeps at least the current memory)."""

from __future__ import annotations

import numpy as np
import pytest

from rightsizer.decide import recommend
from rightsizer.decide.confidence import window_samples
from rightsizer.decide.usage_stats import usage_stats
from rightsizer.domain import Decision
from rightsizer.metrics import VmUsage, usage_from_samples
from rightsizer.settings import DAY_S, MetricsSettings, Settings, SettingsError, settings_from_mapping
from tests.rightsizer.helpers import CHEAP_SETTINGS, NOW, catalogue, size, vm

E8 = size("Standard_E8_x", 8, 64)
E2 = size("Standard_E2_x", 2, 16)
D2 = size("Standard_D2_x", 2, 8)


def partial_samples(measured_share: float, memory_max: float, *, days: float = 7.0) -> tuple[np.ndarray, ...]:
    """CPU every 5 minutes over ``days``; memory reported in the first ``measured_share`` of every day only
    (as a guest agent that reports part of the time), peaking at ``memory_max`` once a day."""
    ts = np.arange(NOW - days * DAY_S + 300.0, NOW + 1.0, 300.0)
    cpu = np.full(len(ts), 20.0)
    phase = ((ts - ts[0]) % DAY_S) / DAY_S
    mem = np.where(phase < measured_share, 0.5 * memory_max, np.nan)
    first_of_day = np.flatnonzero(np.diff(np.floor((ts - ts[0]) / DAY_S), prepend=-1) > 0)
    mem[first_of_day + 3] = memory_max
    return ts, cpu, mem


def test_a_partly_measured_memory_record_is_sized_on_its_measured_samples_with_the_widening() -> None:
    ts, cpu, mem = partial_samples(0.4, 10.0)
    u = usage_from_samples("a", ts, cpu, mem, MetricsSettings(), NOW)
    assert isinstance(u, VmUsage) and u.memory is not None
    days = u.memory_measured_days
    assert days is not None
    assert days == pytest.approx(0.4 * 7, rel=0.02)
    # Unmeasured points stay NaN: nothing is interpolated into the gaps.
    assert np.isfinite(u.memory.values).mean() == pytest.approx(0.4, abs=0.01)
    assert "memory measured in 40% of the last 7 days (2.8 days of samples)" in u.memory_note
    s = usage_stats(u, NOW, CHEAP_SETTINGS)
    # The max of what was measured (not the P95: the unmeasured time may hold the peaks), x (1 + 1/2.8 days).
    assert s.memory == pytest.approx(10.0 * (1 + 1 / days), rel=1e-6)
    assert s.memory_forecast_p95 is None
    assert s.memory_widening == pytest.approx(1 + 1 / days)
    assert s.as_dict()["memory_widening"] == pytest.approx(1 + 1 / days, abs=1e-4)
    # Completeness (and so the data gate) is the CPU's: the memory record is judged by its own rule.
    assert u.completeness == pytest.approx(1.0)


def test_a_record_under_the_minimum_days_stays_memory_unknown() -> None:
    ts, cpu, mem = partial_samples(0.1, 10.0)  # 0.7 days of samples
    u = usage_from_samples("a", ts, cpu, mem, MetricsSettings(), NOW)
    assert isinstance(u, VmUsage) and u.memory is None and u.memory_measured_days is None
    assert u.memory_note.startswith("memory unknown: memory 10.0% complete")
    # The threshold is a setting: half a day of samples is enough when the policy says so.
    lenient = usage_from_samples("a", ts, cpu, mem, MetricsSettings(partial_memory_min_days=0.5), NOW)
    assert isinstance(lenient, VmUsage) and lenient.memory is not None
    # Set above the lookback, any incomplete memory record is unknown.
    ts, cpu, mem = partial_samples(0.9, 10.0)
    strict = usage_from_samples("a", ts, cpu, mem, MetricsSettings(partial_memory_min_days=8), NOW)
    assert isinstance(strict, VmUsage) and strict.memory is None


def test_a_fully_measured_record_is_unchanged() -> None:
    ts, cpu, mem = partial_samples(1.0, 10.0)
    u = usage_from_samples("a", ts, cpu, mem, MetricsSettings(), NOW)
    assert isinstance(u, VmUsage) and u.memory is not None and u.memory_measured_days is None
    s = usage_stats(u, NOW, CHEAP_SETTINGS)
    assert s.memory_widening == 1.0 and s.memory_partial_note == "" and "memory_widening" not in s.as_dict()
    assert s.memory == pytest.approx(5.0)  # the P95 (the product's memory statistic), not the daily peak


def test_sparse_days_are_judged_for_a_partial_record_and_left_out_otherwise() -> None:
    mem = partial_samples(0.3, 10.0)[2]
    dense = window_samples(mem, 300.0, 1.0)
    sparse = window_samples(mem, 300.0, 1.0, sparse=True)
    assert dense.n == 0  # under half a day measured: not judged as a full record's day
    assert sparse.n == 5  # days 3..7 each judged on their measured samples
    assert np.allclose(sparse.realised, 10.0) and np.allclose(sparse.learned, 10.0)


def test_the_row_says_what_the_memory_rests_on_and_the_target_keeps_the_widened_headroom() -> None:
    a = vm("a", E8.name)
    ts, cpu, mem = partial_samples(0.4, 10.0)
    cpu[:] = 5.0  # 0.4 vCPU: fits anything, so memory decides
    u = usage_from_samples(a.id, ts, cpu, mem, MetricsSettings(), NOW)
    cat = catalogue({E8: 0.60, E2: 0.14, D2: 0.10})
    (rec,) = recommend([a], {a.id: u}, cat, CHEAP_SETTINGS, NOW)
    # 10% of 64 GiB = 6.4 GiB, x 1.36 = 8.7 GiB: 109% of D2's 8 GiB (> 70%), 54% of E2's 16 GiB.
    assert rec.decision is not Decision.SKIP and rec.target_size == E2.name
    assert "max memory on target 54% vs limit 70% (memory measured in 40% of the last 7 days" in rec.reason
    # With the record read as complete and P95-sized (no widening), the cheaper D2 would have been taken.
    full = usage_from_samples(a.id, ts, cpu, np.where(np.isfinite(mem), mem, 5.0), MetricsSettings(), NOW)
    (full_rec,) = recommend([a], {a.id: full}, cat, CHEAP_SETTINGS, NOW)
    assert full_rec.target_size == D2.name


def test_the_setting_is_validated() -> None:
    assert settings_from_mapping({"metrics": {"partial_memory_min_days": 2}}).metrics.partial_memory_min_days == 2.0
    with pytest.raises(SettingsError, match="partial_memory_min_days"):
        settings_from_mapping({"metrics": {"partial_memory_min_days": 0}})
    assert Settings().metrics.partial_memory_min_days == 1.0
