"""Confidence = the estimated probability that the target size holds its limits over the coming week."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from rightsizer.decide.confidence import (
    CREDIT_BANK_S,
    MIN_WINDOWS,
    LimitCheck,
    WindowSamples,
    credit_exhaustion,
    hold_confidence,
    limit_outcome,
    student_t_cdf,
    usage_evidence,
    window_samples,
)
from rightsizer.decide.sizing import choose_size, target_confidence
from rightsizer.decide.usage_stats import UsageStats
from rightsizer.settings import DAY_S, Settings
from tests.rightsizer.helpers import NOW, catalogue, size, vm

STEP = 300.0
PER_DAY = int(DAY_S / STEP)
D4 = size("Standard_D4_x", 4, 16)
D2 = size("Standard_D2_x", 2, 8)
B2TS = size("Standard_B2ts_v2", 2, 8, family="burstable")  # baseline 20 % per vCPU
SETTINGS = Settings()


def series(level: float, *, days: int = 7, noise: float = 0.1, peak: float = 0.0, seed: int = 1) -> np.ndarray:
    """A daily wave around ``level`` percent with multiplicative noise and an optional daily peak hour."""
    rng = np.random.default_rng(seed)
    t = np.arange(days * PER_DAY) * STEP
    wave = 1 + 0.3 * np.sin(2 * np.pi * t / DAY_S)
    values = level * wave * rng.lognormal(0.0, noise, len(t))
    if peak:
        values[(t % DAY_S) // 3600 == 14] += peak
    return np.asarray(np.clip(values, 0, 100), dtype=np.float64)


def stats_of(cpu: np.ndarray, memory: np.ndarray | None, *, cpu_error: float = 0.0) -> UsageStats:
    finite = cpu[np.isfinite(cpu)]
    return UsageStats(
        cpu_observed_p95=float(np.quantile(finite, 0.95)),
        cpu_forecast_p95=None,
        cpu_mean=float(finite.mean()),
        memory_observed=None if memory is None else float(np.quantile(memory, 0.95)),
        memory_forecast_p95=None,
        completeness=1.0,
        accuracy=1.0,
        method="none",
        cpu_forecast_error=cpu_error,
        evidence=usage_evidence(cpu, memory, STEP),
    )


def test_student_t_cdf_matches_tables() -> None:
    assert student_t_cdf(2.015, 5) == pytest.approx(0.95, abs=1e-4)
    assert student_t_cdf(1.812, 10) == pytest.approx(0.95, abs=1e-4)
    assert student_t_cdf(1.0, 1) == pytest.approx(0.5 + math.atan(1.0) / math.pi)  # Cauchy
    assert student_t_cdf(-2.015, 5) == pytest.approx(0.05, abs=1e-4)
    assert student_t_cdf(0.0, 3) == 0.5
    assert student_t_cdf(1.6449, 1e6) == pytest.approx(0.95, abs=1e-4)  # normal in the limit


def test_an_idle_vm_going_from_4_to_2_vcpus_is_near_certain() -> None:
    cpu = series(0.5, noise=0.5)
    mem = series(20.0, noise=0.05, seed=2)
    s = stats_of(cpu, mem, cpu_error=0.4)  # a poor forecast in relative terms: 0.4 points on a 0.5 % VM
    conf = target_confidence(vm("idle", D4.name), D4, D2, s, SETTINGS)
    assert conf.probability > 0.99
    assert (conf.windows, conf.held) == (5, 5)


def test_a_vm_whose_peaks_approach_the_limit_is_not_confident_however_accurate_its_forecast() -> None:
    cpu = series(26.0, noise=0.15)  # P95 about 38 % of 4 vCPUs: about 77 % of 2 against the 80 % limit
    s = stats_of(cpu, None, cpu_error=0.0)
    conf = target_confidence(vm("busy", D4.name), D4, D2, s, SETTINGS)
    assert 70 < conf.outcomes[0].check.on_target < 80  # it fits: the sizing rule alone would take it
    assert conf.probability < 0.8
    roomy = target_confidence(vm("busy", D4.name), D4, D4, s, SETTINGS)  # the same VM on its own size
    assert roomy.probability > 0.99


def test_burstable_baseline_breach_lowers_the_confidence() -> None:
    # Mean about 9.6 % of 4 vCPUs = 19 % of 2: under B2ts_v2's 20 % baseline, but only just; P95 has room.
    cpu = series(9.2, noise=0.3)
    s = stats_of(cpu, None)
    conf = target_confidence(vm("b", D4.name), D4, B2TS, s, SETTINGS)
    by_what = {o.check.what: o for o in conf.outcomes}
    assert by_what["P95 CPU"].probability > 0.99
    assert by_what["mean CPU"].probability < 0.8 and conf.probability < 0.8
    assert "mean CPU on target 19% vs burstable baseline 20% (credits ran out in 0/5 past days)" in conf.reason
    quiet = stats_of(series(3.0, noise=0.3), None)
    assert target_confidence(vm("b", D4.name), D4, B2TS, quiet, SETTINGS).probability > 0.95


def test_memory_headroom_is_judged_on_the_target() -> None:
    cpu = series(5.0)
    tight = stats_of(cpu, series(33.0, noise=0.05, seed=3))  # P95 about 42 % of 16 GiB: about 68-70 % of 8 GiB
    conf = target_confidence(vm("m", D4.name), D4, D2, tight, SETTINGS)
    mem = next(o for o in conf.outcomes if o.check.what == "P95 memory")
    assert mem.check.limit == 70.0 and mem.probability < 0.8 and conf.probability < 0.8
    loose = stats_of(cpu, series(15.0, noise=0.05, seed=3))
    assert target_confidence(vm("m", D4.name), D4, D2, loose, SETTINGS).probability > 0.99


def test_few_windows_give_a_more_cautious_estimate_than_many() -> None:
    rng = np.random.default_rng(7)
    ratios = np.exp(rng.normal(0.0, 0.15, 12))
    many = WindowSamples(ratios * 50.0, np.full(12, 50.0))
    few = WindowSamples(many.realised[:4], many.learned[:4])
    check = LimitCheck("P95 CPU", 60.0, 80.0, many)
    p_many = limit_outcome(check).probability
    p_few = limit_outcome(LimitCheck("P95 CPU", 60.0, 80.0, few)).probability
    assert p_few < p_many
    # Every window held, yet the estimate stays below a raw 4/4 = 100 %.
    assert all(not b for b in limit_outcome(LimitCheck("P95 CPU", 60.0, 80.0, few)).breached) and p_few < 0.99


def test_too_little_history_is_no_confidence_with_the_reason() -> None:
    cpu = series(5.0, days=3)
    s = stats_of(cpu, None)
    assert s.evidence is not None and s.evidence.cpu_p95.n == 1 < MIN_WINDOWS
    conf = target_confidence(vm("new", D4.name), D4, D2, s, SETTINGS)
    assert conf.probability == 0.0 and "too little history" in conf.reason


def test_fourteen_days_give_twelve_walk_forward_windows() -> None:
    samples = window_samples(series(5.0, days=14), STEP, 0.95)
    assert samples.n == 12  # days 3..14, each judged against all the days before it


def test_the_forecast_error_is_added_to_the_uncertainty() -> None:
    cpu = series(25.0, noise=0.1)
    exact = target_confidence(vm("f", D4.name), D4, D2, stats_of(cpu, None, cpu_error=0.0), SETTINGS)
    vague = target_confidence(vm("f", D4.name), D4, D2, stats_of(cpu, None, cpu_error=8.0), SETTINGS)
    assert vague.probability < exact.probability
    assert "forecast error" not in exact.reason and "forecast error 2" in vague.reason  # 8 points of ~33 %


def test_a_breach_seen_in_the_history_caps_the_estimate() -> None:
    learned = np.full(6, 40.0)
    realised = np.array([40.0, 41.0, 39.0, 40.0, 40.0, 90.0])  # one day needed 2.25x what the past said
    conf = hold_confidence([LimitCheck("P95 CPU", 40.0, 80.0, WindowSamples(realised, learned))])
    assert (conf.windows, conf.held) == (6, 5)
    assert conf.probability <= (5 + 1) / (6 + 2)
    assert "holds in 5/6 past days" in conf.reason


def test_limits_combine_by_the_union_bound() -> None:
    s = WindowSamples(np.array([50.0, 52.0, 48.0, 51.0, 49.0]), np.full(5, 50.0))
    a, b = LimitCheck("P95 CPU", 70.0, 80.0, s), LimitCheck("P95 memory", 62.0, 70.0, s)
    pa, pb = limit_outcome(a).probability, limit_outcome(b).probability
    assert hold_confidence([a, b]).probability == pytest.approx(max(0.0, pa + pb - 1.0))


def test_reason_says_what_the_confidence_rests_on() -> None:
    cpu = series(8.0, noise=0.1)
    s = stats_of(cpu, series(20.0, noise=0.05, seed=4), cpu_error=0.5)
    conf = target_confidence(vm("r", D4.name), D4, D2, s, SETTINGS)
    assert conf.reason.startswith("holds in 5/5 past days; P95 CPU on target ")
    assert "% vs limit 80%; P95 memory on target " in conf.reason and "% vs limit 70%" in conf.reason
    assert "forecast error " in conf.reason


def test_sizing_takes_the_cheapest_size_that_holds_confidently() -> None:
    d3 = size("Standard_D3_x", 3, 12)
    cat = catalogue({D4: 0.40, d3: 0.30, D2: 0.20})
    s = stats_of(series(26.0, noise=0.15), series(10.0, noise=0.05))  # CPU ~77 % of D2 (uncertain), ~51 % of D3
    sizing = choose_size(vm("c", D4.name), s, cat, SETTINGS, NOW)
    assert sizing.target == d3.name and sizing.probability >= 0.8
    assert "Standard_D2_x fits but holds with confidence 0." in sizing.reason
    # When no cheaper size is confident, the cheapest fit stays for the confidence gate to judge.
    only_d2 = choose_size(vm("c", D4.name), s, catalogue({D4: 0.40, D2: 0.20}), SETTINGS, NOW)
    assert only_d2.target == D2.name and only_d2.probability < 0.8


def bursts(level: float, burst: float, hours: int, *, every: int = 1, days: int = 7) -> np.ndarray:
    """``level`` percent all day, with ``burst`` percent for the first ``hours`` of every ``every``-th day."""
    values = series(level, days=days, noise=0.05)
    t = np.arange(len(values)) * STEP
    busy = ((t % DAY_S) // 3600 < hours) & ((t // DAY_S) % every == every - 1)
    values[busy] = burst
    return values


def test_credits_banked_on_quiet_days_carry_a_burstable_through_busy_ones() -> None:
    # Every other day 6 hours at 38 % of 4 vCPUs (76 % of 2), otherwise about 3 % (6 % of 2): a busy day's
    # mean (about 23.5 % on the target) is over B2ts_v2's 20 % baseline, yet the bank (24 h of accrual, 480
    # point-hours) covers the burst (56 x 6 = 336) and the quiet day refills it.
    cpu = bursts(3.0, 38.0, 6, every=2)
    conf = target_confidence(vm("b", D4.name), D4, B2TS, stats_of(cpu, None), SETTINGS)
    mean = next(o for o in conf.outcomes if o.check.what == "mean CPU")
    assert sum(v * 2 > 20 for v in mean.check.samples.realised) == 2  # days 4 and 6 averaged over the baseline
    assert mean.breached == (False,) * 5 and conf.held == 5
    assert "credits ran out in 0/5 past days" in conf.reason
    by_day_mean = limit_outcome(replace(mean.check, window_breaches=None))
    assert by_day_mean.breached == (False, True, False, True, False)  # what a per-day mean check would say


def test_a_burstable_that_would_have_run_out_of_credits_is_capped_by_those_days() -> None:
    # 10 hours a day at 60 % of 4 vCPUs (120 % of 2 is more than the target has; 100 % is spent): the burst
    # costs 80 points x 10 h, more than the 20 x 24 h the bank holds, so each day ends throttled.
    cpu = bursts(2.0, 50.0, 10)
    ran_out = credit_exhaustion(cpu, STEP, 2.0, 20.0)
    assert ran_out == (True,) * 5
    conf = target_confidence(vm("b", D4.name), D4, B2TS, stats_of(cpu, None), SETTINGS)
    assert conf.held == 0 and conf.probability <= 1 / 7
    assert "credits ran out in 5/5 past days" in conf.reason


def test_the_credit_simulation_banks_at_most_a_day_and_starts_full() -> None:
    day = int(CREDIT_BANK_S / STEP)
    idle_then_busy = np.concatenate([np.zeros(5 * day), np.full(2 * day, 35.0)])  # 15 points over a 20 % baseline
    # The bank holds 20 x 24 h = 480 point-hours: the first busy day spends 360, the second runs it dry.
    assert credit_exhaustion(idle_then_busy, STEP, 1.0, 20.0) == (False, False, False, False, True)
    # Rescaled to a target with half the vCPUs (70 %: 50 points over), the first busy day runs it dry.
    assert credit_exhaustion(idle_then_busy, STEP, 2.0, 20.0) == (False, False, False, True, True)


def test_a_day_counts_as_breached_only_when_the_target_limit_really_was_exceeded() -> None:
    # The daily P95 grew 5x over what the days before said, but stayed at 40 % of the target against 80 %.
    learned = np.full(5, 8.0)
    realised = np.array([8.0, 40.0, 8.0, 8.0, 8.0])
    samples = WindowSamples(realised, learned)
    out = limit_outcome(LimitCheck("P95 CPU", 20.0, 80.0, samples, scale=1.0))
    assert out.breached == (False,) * 5
    on_half = limit_outcome(LimitCheck("P95 CPU", 40.0, 80.0, samples, scale=2.0))  # half the vCPUs: 80 %
    assert on_half.breached == (False,) * 5
    on_third = limit_outcome(LimitCheck("P95 CPU", 60.0, 80.0, samples, scale=3.0))  # a third: 120 %
    assert on_third.breached == (False, True, False, False, False)


def test_a_mean_over_the_week_varies_less_than_one_day() -> None:
    rng = np.random.default_rng(3)
    samples = WindowSamples(30.0 * np.exp(rng.normal(0.0, 0.2, 12)), np.full(12, 30.0))
    day = limit_outcome(LimitCheck("mean CPU", 30.0, 40.0, samples)).probability
    week = limit_outcome(LimitCheck("mean CPU", 30.0, 40.0, samples, averaged_windows=7)).probability
    assert day < week < 1.0


def test_the_forecast_error_counts_only_when_the_size_rests_on_the_forecast() -> None:
    cpu = series(25.0, noise=0.1)
    observed = stats_of(cpu, None, cpu_error=8.0)
    above = replace(observed, cpu_forecast_p95=observed.cpu_observed_p95 + 1.0)  # sized on the forecast
    below = replace(observed, cpu_forecast_p95=observed.cpu_observed_p95 - 1.0)  # sized on the observed P95
    assert "forecast error" in target_confidence(vm("f", D4.name), D4, D2, above, SETTINGS).reason
    assert "forecast error" not in target_confidence(vm("f", D4.name), D4, D2, below, SETTINGS).reason
