"""Tuning per workload: fits reused, no peeking at the held-back stretch, the event cap, the ScaledObject."""

from __future__ import annotations

import argparse
import io
from dataclasses import replace
from pathlib import Path

import jsonschema
import numpy as np
import pytest
import yaml

from forecasting.series import DAY_S
from scaler_service.backtest.cli import build_parser, run
from scaler_service.backtest.fitcache import FitCache, counting_fit
from scaler_service.backtest.forecast_table import ForecastTable
from scaler_service.backtest.hpa import HpaSettings
from scaler_service.backtest.metrics import shortfall_causes
from scaler_service.backtest.scaledobject import ObjectSettings, scaled_object, to_yaml
from scaler_service.backtest.strategies import PredictiveSettings, predictive_metric
from scaler_service.backtest.trace import DemandTrace, TraceError
from scaler_service.backtest.tune import (
    THRESHOLD_WIDTH_FRACTION,
    WINDOWS_S,
    Scored,
    ServiceLevel,
    TuneSearch,
    split_trace,
    tune,
)
from scaler_service.backtest.tune_cli import run_tuning, share
from scaler_service.backtest.tune_report import TuneReport, to_json
from scaler_service.trigger import TriggerParser
from tests.backtest.helpers import seasonal_naive_fit
from tests.backtest.tune_helpers import daily_trace, with_holdout_replaced

CRD = Path(__file__).resolve().parents[2] / "manifests" / "crds" / "keda.sh_scaledobjects.yaml"
HPA = HpaSettings(target_value=10.0, min_replicas=2, max_replicas=60, pod_startup_s=180.0)
PRED = PredictiveSettings(fit_step_s=300.0)  # 5-minute buckets: the live score runs 5 times less often
ONE_PCT = ServiceLevel(0.01)
SMALL: dict[str, tuple[float, ...]] = {
    "leads_s": (300.0, 900.0),
    "quantiles": (0.5, 0.9),
    "min_confidences": (0.0, 0.9),
    "windows_s": (60.0, 300.0),
}


def _fit() -> object:
    return seasonal_naive_fit(season_s=DAY_S)


def _search(
    trace: DemandTrace, service: ServiceLevel = ONE_PCT, **grid: tuple[float, ...]
) -> tuple[TuneSearch, ForecastTable, FitCache]:
    split = split_trace(trace, holdout_days=1, tune_days=2)
    n_polls = (split.n_ticks - 1) // HPA.ticks_per_poll + 1
    polls = split.sim_start + HPA.keda_poll_s * np.arange(n_polls, dtype=np.float64)
    fit, counts = counting_fit(_fit())  # type: ignore[arg-type]
    table = ForecastTable(trace, polls, PRED, fit)
    return tune(trace, HPA, PRED, table, split, service, **{**SMALL, **grid}), table, counts


def _tuned(trace: DemandTrace, objects: ObjectSettings | None = None, *, tune_tolerance: bool = False) -> TuneReport:
    return run_tuning(
        trace,
        HPA,
        PRED,
        ONE_PCT,
        objects or ObjectSettings(),
        holdout_days=1,
        tune_days=2,
        fit=_fit(),
        grid=SMALL,
        tune_tolerance=tune_tolerance,
    )


def test_split_holds_back_the_most_recent_days_and_tunes_on_the_days_before() -> None:
    trace = daily_trace(30)
    split = split_trace(trace)
    assert split.end - split.holdout_start == 7 * DAY_S
    assert split.holdout_start - split.tune_start == 14 * DAY_S
    assert split.tune_start - split.sim_start == 3600.0
    assert "recommended" not in split.describe()
    assert "recommended 7 days" in split_trace(trace, holdout_days=1).describe()
    short = daily_trace(11)
    s = split_trace(short)
    assert s.tune_start - short.start == 2 * DAY_S + 3600.0  # the first fit's history, then settling
    with pytest.raises(TraceError, match="too short to tune"):
        split_trace(daily_trace(9))


def test_forecast_table_serves_exactly_what_the_service_would() -> None:
    trace = daily_trace(5)
    polls = trace.start + 2 * DAY_S + 30.0 * np.arange(4000, dtype=np.float64)
    fit, counts = counting_fit(_fit())  # type: ignore[arg-type]
    table = ForecastTable(trace, polls, PRED, fit)
    fits_once = counts.fitted
    for lead, q, minc in ((300.0, 0.5, 0.0), (900.0, 0.9, 0.8), (1800.0, 0.99, 0.97), (420.0, 0.75, 0.5)):
        settings = replace(PRED, lead_s=lead, quantile=q, min_confidence=minc)
        expected = predictive_metric(trace, polls, settings, _fit()).values  # type: ignore[arg-type]
        np.testing.assert_array_equal(table.metric(lead, q, minc), expected)
    assert counts.fitted == fits_once  # the table never refits


def test_fits_once_per_refit_time_for_the_whole_search() -> None:
    search, table, counts = _search(daily_trace(5))
    refits = len(table.run.fits)
    assert counts.fitted == refits and counts.reused == 0
    assert search.tried_predictive > 10 and table.passes >= 3


def test_changing_only_the_held_back_stretch_changes_nothing_chosen() -> None:
    trace = daily_trace(5, seed=3)
    split = split_trace(trace, holdout_days=1, tune_days=2)
    # The held-back day is nothing like the past: three times the demand, with bursts.
    rng = np.random.default_rng(9)
    wild = 3 * trace.values[-1440:] + rng.uniform(0, 400, 1440) * (rng.random(1440) < 0.05)
    other = with_holdout_replaced(trace, split.holdout_start, wild)
    a, b = _tuned(trace), _tuned(other)
    assert a.search.reactive.candidate == b.search.reactive.candidate
    assert a.search.predictive.candidate == b.search.predictive.candidate
    assert [s.metrics for s in a.search.tried] == [s.metrics for s in b.search.tried]
    assert a.search.event_cap == b.search.event_cap
    # ... while the held-back figures do see the change.
    assert a.outcomes["reactive_tuned"].metrics != b.outcomes["reactive_tuned"].metrics


def test_no_chosen_configuration_exceeds_the_event_cap() -> None:
    # Noisy demand: a short scale-down window follows every wobble down (cheap, but it flaps).
    trace = daily_trace(5, seed=5, noise=0.25)
    # A loose service level: every window meets it, and the shortest is the cheapest.
    search, _, _ = _search(trace, ServiceLevel(0.5), windows_s=(0.0, 60.0, 300.0, 600.0))
    cap = search.event_cap
    assert cap == 1.5 * search.reactive_default.metrics.scaling_events
    for chosen in (search.reactive, search.predictive):
        assert chosen.feasible
        assert chosen.metrics.scaling_events <= cap
    # The cap did bite: a cheaper candidate meeting the service level was refused for flapping.
    refused = [
        s
        for s in search.tried
        if s.excess == 0
        and s.metrics.scaling_events > cap
        and s.metrics.replica_hours < search.reactive.metrics.replica_hours
    ]
    assert refused


def test_every_candidate_is_judged_at_its_own_largest_threshold_for_both_strategies() -> None:
    # A tight service level: at the stated threshold no candidate meets it, so each needs headroom.
    search, _, _ = _search(daily_trace(5, seed=4), ServiceLevel(0.002))
    threshold = HPA.target_value
    width = THRESHOLD_WIDTH_FRACTION * threshold + 1e-9
    groups: dict[tuple[str, float, float, float, float], list[Scored]] = {}
    for s in search.tried:
        c = s.candidate
        groups.setdefault((c.strategy, c.scale_down_s, c.lead_s, c.quantile, c.min_confidence), []).append(s)
    assert {k[0] for k in groups} == {"reactive", "predictive"}
    assert sum(k[0] == "predictive" for k in groups) >= 5
    judged = 0
    for key, group in groups.items():
        if key[0] == "reactive" and key[1] == 300.0 and len(group) == 1:
            continue  # the default, simulated for the event cap only
        met = [s.candidate.target_value for s in group if s.excess == 0]
        if not met:
            continue
        best = max(met)
        assert best < threshold
        # The next threshold up that was tried, no further than the bisection's width, misses the service level.
        above = [s for s in group if best < s.candidate.target_value <= best + width]
        assert above and all(s.excess > 0 for s in above), key
        judged += 1
    assert judged >= 5
    for chosen in (search.reactive, search.predictive):
        assert chosen.excess == 0
        assert chosen.candidate.target_value < threshold


def test_a_bursty_workload_gets_a_scale_down_window_of_up_to_an_hour() -> None:
    # One minute in twenty at 1.5-2.5 x the demand: following each burst down and up again flaps and misses the
    # next burst; holding the recent peak (a long scale-down window) is the cheapest way to the service level.
    trace = daily_trace(5, seed=3)
    rng = np.random.default_rng(3)
    n = len(trace.values)
    bursty = replace(trace, values=trace.values * np.where(rng.random(n) < 0.05, rng.uniform(1.5, 2.5, n), 1.0))
    search, _, _ = _search(bursty, windows_s=WINDOWS_S)
    assert max(WINDOWS_S) == 3600.0  # the HPA's limit (KEDA's CRD: at most one hour)
    chosen = search.reactive
    assert chosen.feasible and chosen.candidate.scale_down_s > 600.0
    shorter = [
        s for s in search.tried if s.candidate.strategy == "reactive" and s.candidate.scale_down_s <= 600 and s.feasible
    ]
    assert shorter and min(s.metrics.replica_hours for s in shorter) > chosen.metrics.replica_hours


def _crd_schema() -> dict:  # type: ignore[type-arg]
    crd = yaml.safe_load(CRD.read_text(encoding="utf-8"))
    version = next(v for v in crd["spec"]["versions"] if v["name"] == "v1alpha1")
    return version["schema"]["openAPIV3Schema"]  # type: ignore[no-any-return]


def _parse_trigger(metadata: dict[str, str]):  # type: ignore[no-untyped-def]
    parser = TriggerParser(default_address="foresight-scaler.keda:9090", allowed_addresses=frozenset())
    return parser.parse(metadata)


def test_scaled_object_yaml_validates_against_kedas_crd_and_the_scalers_parser() -> None:
    objects = ObjectSettings(
        name="checkout", target="checkout-api", query='sum(rate(http_requests_total{job="x"}[2m]))'
    )
    report = _tuned(daily_trace(5, seed=1), objects)
    doc = yaml.safe_load(report.yaml)
    assert doc == report.scaled_object
    jsonschema.validate(doc, _crd_schema())
    assert report.yaml.startswith("# Tuned by")
    assert "replica-hours" in report.yaml.split("apiVersion")[0]
    spec = doc["spec"]
    assert spec["scaleTargetRef"]["name"] == "checkout-api"
    behavior = spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    winner = report.outcomes[f"{report.winner}_tuned"].candidate
    assert behavior["scaleDown"]["stabilizationWindowSeconds"] == round(winner.scale_down_s)
    meta = spec["triggers"][0]["metadata"]
    assert all(isinstance(v, str) for v in meta.values())
    parsed = _parse_trigger(meta)
    assert parsed.mode.value == report.winner
    assert parsed.threshold == pytest.approx(winner.target_value, rel=1e-5)
    if report.winner == "predictive":
        assert parsed.predict_horizon_s == winner.lead_s
    else:
        assert "predictHorizon" not in meta
    # A tuned scale-up tolerance is written as a quantity string KEDA's CRD takes; a bare number is refused.
    assert "tolerance" not in behavior["scaleUp"]
    with_tolerance = scaled_object(replace(winner, scale_up_tolerance=0.02), HPA, objects, [])
    jsonschema.validate(with_tolerance, _crd_schema())
    scale_up = with_tolerance["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]["scaleUp"]
    assert scale_up["tolerance"] == "0.02"
    assert yaml.safe_load(to_yaml(with_tolerance, [])) == with_tolerance
    for bad in (0.02, "2 %", "-0.x"):
        scale_up["tolerance"] = bad
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(with_tolerance, _crd_schema())


def test_reactive_winner_writes_the_reactive_configuration_and_says_so() -> None:
    # White noise around a level: nothing to forecast, so the forecast cannot beat a lower threshold.
    trace = daily_trace(5, seed=2)
    noise = np.random.default_rng(4).normal(0, 0.1, len(trace.values))
    report = _tuned(replace(trace, values=100.0 * (1 + noise)))
    if report.winner == "reactive":
        meta = report.scaled_object["spec"]["triggers"][0]["metadata"]
        assert meta["mode"] == "reactive" and "predictHorizon" not in meta
        assert report.verdict.startswith("Use reactive scaling")
        assert "predictive does not pay off" in report.verdict
        jsonschema.validate(report.scaled_object, _crd_schema())
    r = report.outcomes["reactive_tuned"].metrics.replica_hours
    w = report.outcomes[f"{report.winner}_tuned"].metrics.replica_hours
    assert w <= r


def test_service_level_is_a_share_or_a_percentage() -> None:
    assert share("1%") == pytest.approx(0.01)
    assert share("0.005") == pytest.approx(0.005)
    for bad in ("1", "150%", "-1%", "abc", "nan"):
        with pytest.raises(argparse.ArgumentTypeError):
            share(bad)
    with pytest.raises(ValueError, match="state a service level"):
        ServiceLevel(None, None)


def test_tune_refuses_records_which_hold_no_demand_to_refit_on(tmp_path: Path) -> None:
    records = tmp_path / "r.csv"
    rows = ["timestamp,observed,served,predictive"]
    rows += [f"{1_700_000_000 + 60 * i},{10 + i % 7},{11},{12}" for i in range(5000)]
    records.write_text("\n".join(rows) + "\n")
    out, err = io.StringIO(), io.StringIO()
    args = build_parser().parse_args(["--records", str(records), "--target-value", "5", "--tune"])
    assert run(args, out=out, err=err) == 2
    assert "--tune" in err.getvalue() and "--records" in err.getvalue()


def test_plot_marks_the_held_back_stretch(tmp_path: Path) -> None:
    from scaler_service.backtest.tune_plot import plot_tuned

    report = _tuned(daily_trace(5, seed=1))
    out = plot_tuned(report, tmp_path / "tune.png")
    assert out.stat().st_size > 10_000


def _scale_up(report: TuneReport) -> dict:  # type: ignore[type-arg]
    return report.scaled_object["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]["scaleUp"]  # type: ignore[no-any-return]


def test_tolerance_search_lowers_the_band_where_the_shortfalls_sit() -> None:
    # A smooth daily shape: demand creeps a little above capacity, inside the HPA's 10 % band, where no metric
    # makes it scale; without a lower tolerance only headroom (a lower threshold) covers it.
    trace = daily_trace(5, seed=3, noise=0.0)
    plain = _tuned(trace)
    split = plain.search.split
    for label in ("reactive_default", "predictive_default"):
        causes = shortfall_causes(
            plain.outcomes[label].simulation, plain.demand_at_ticks, tolerance=0.1, eval_from=split.holdout_from_tick
        )
        assert causes is not None and causes.tolerance_share >= 0.75, label

    # Without --tune-tolerance the tolerance is never changed and the ScaledObject does not set it.
    assert {s.candidate.scale_up_tolerance for s in plain.search.tried} == {0.1}
    assert "tolerance" not in _scale_up(plain) and "tolerance:" not in plain.yaml
    assert "HPAConfigurableTolerance" not in plain.yaml

    tuned = _tuned(trace, tune_tolerance=True)
    assert {s.candidate.scale_up_tolerance for s in tuned.search.tried} == {0.0, 0.02, 0.05, 0.1}
    for chosen, before in (
        (tuned.search.reactive, plain.search.reactive),
        (tuned.search.predictive, plain.search.predictive),
    ):
        assert chosen.feasible and before.feasible
        assert chosen.candidate.scale_up_tolerance < 0.1
        # Less headroom for the same service level: fewer replica-hours on the tuning stretch.
        assert chosen.candidate.target_value > before.candidate.target_value
        assert chosen.metrics.replica_hours < before.metrics.replica_hours
    # ... and on the held-back day, still at the service level.
    for label in ("reactive_tuned", "predictive_tuned"):
        assert tuned.outcomes[label].excess == 0
        assert tuned.outcomes[label].metrics.replica_hours < plain.outcomes[label].metrics.replica_hours

    winner = tuned.outcomes[f"{tuned.winner}_tuned"].candidate
    assert winner.scale_up_tolerance < 0.1
    assert _scale_up(tuned)["tolerance"] == f"{winner.scale_up_tolerance:g}"
    assert yaml.safe_load(tuned.yaml) == tuned.scaled_object
    jsonschema.validate(tuned.scaled_object, _crd_schema())
    assert "HPAConfigurableTolerance" in tuned.yaml.split("apiVersion")[0]
    assert f"scale-up tolerance {winner.scale_up_tolerance:g}" in tuned.verdict
    assert (
        to_json(tuned)["holdout"][f"{tuned.winner}_tuned"]["settings"]["scale_up_tolerance"]
        == winner.scale_up_tolerance
    )
    assert "scale-up tolerance" not in plain.verdict


def test_tune_tolerance_flag() -> None:
    base = ["--trace", "nasa-http-1995", "--target-value", "10", "--tune"]
    assert build_parser().parse_args(base).tune_tolerance is False
    assert build_parser().parse_args([*base, "--tune-tolerance"]).tune_tolerance is True
    assert "HPAConfigurableTolerance" in build_parser().format_help()
