"""Capacity backtest on every bundled trace, against the bars of issue 5, plus the issue's crude predictor.

    .venv/bin/python -m loadtests.capacity_backtest [--traces nasa-http-1995,nyc-taxi] [--eval-days 7]
        [--refit-interval 6h] [--json out.json] [--plot-dir DIR]

For each trace (the last 7 days evaluated, everything before is history) and each bar configuration
(10-min pod start-up + 15-min lead; 3-min start-up + 10-min lead) it prints the comparison table, the
verdict and whether each bar is met. Models are fitted once per trace (the fits do not depend on the lead
or the start-up) through the service's own ``fit_serving_model`` and reused by both configurations.

Traces. NASA is 1-minute data. Taxi (30 min) and Azure (5 min) are linearly interpolated to 1 minute: the
sim runs minute by minute and demand between two samples is taken to move in a straight line. Taxi is also
run step-held (each 30-min value held for its 30 minutes, so demand jumps every half hour), the harsher
reading, for comparison. The model is
fitted on 1-minute history for NASA and on 5-minute means for taxi and Azure (a 1-minute Prophet fit of
14 days costs ~20 s and the backtest selection several times that; at 5 minutes the curve is still much finer
than the lead).

Sizing: the target value (= capacity per replica) is about the evaluation window's peak / 20, so the peak
needs ~20 replicas; min 2 replicas, max 100.

``crude_seasonal`` is the issue's deliberately crude predictor, a reference to beat, implemented here only:
at each poll, the demand one week earlier over the next 10 minutes, peak, scaled by the ratio of the last
hour's observed demand to the same hour a week earlier, and never below the observed value.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from forecasting.pipeline import FitConfig
from forecasting.series import WEEK_S
from scaler_service.backtest.fitcache import caching_fit
from scaler_service.backtest.hpa import HpaSettings
from scaler_service.backtest.report import format_table, make_verdict, peak_to_median, plot, to_json
from scaler_service.backtest.runner import BacktestConfig, BacktestReport, run_backtest
from scaler_service.backtest.strategies import (
    PredictiveRun,
    PredictiveSettings,
    headroom_search,
    predictive_metric,
    reactive_metric,
    service_fit_function,
)
from scaler_service.backtest.trace import MINUTE_S, DemandTrace, FloatArray, from_bundled
from scaler_service.trigger import parse_duration

CRUDE_PEAK_S = 600.0
CRUDE_SCALE_WINDOW_S = 3600.0


@dataclass(frozen=True, slots=True)
class TraceCase:
    name: str
    target_value: float
    fit_step_s: float
    min_replicas: int = 2
    max_replicas: int = 100
    upsample: str = "interpolate"

    @property
    def label(self) -> str:
        return self.name if self.upsample == "interpolate" else f"{self.name} (step-held)"


CASES = (
    TraceCase("nasa-http-1995", target_value=10.0, fit_step_s=60.0),
    TraceCase("nyc-taxi", target_value=1500.0, fit_step_s=300.0),
    TraceCase("nyc-taxi", target_value=1500.0, fit_step_s=300.0, upsample="hold"),
    TraceCase("azure-2019-cpu", target_value=400_000.0, fit_step_s=300.0),
)


@dataclass(frozen=True, slots=True)
class BarConfig:
    label: str
    pod_startup_s: float
    lead_s: float
    min_saving_vs_headroom: dict[str, float]
    """Trace -> required 1 - predictive / reactive_headroom replica-hours."""
    max_worst_shortfall_ratio: dict[str, float]
    """Trace -> required predictive / reactive worst shortfall (at most)."""


BARS = (
    BarConfig(
        "10-min pod start-up, 15-min lead",
        600.0,
        900.0,
        {"nasa-http-1995": 0.15, "nyc-taxi": 0.15},
        {},
    ),
    BarConfig(
        "3-min pod start-up, 10-min lead",
        180.0,
        600.0,
        {"nasa-http-1995": 0.08},
        {"nasa-http-1995": 0.40, "nyc-taxi": 0.40},
    ),
)
STATIC_SAVING = 0.40
"""Required 1 - predictive / static replica-hours on traces whose peak is at least twice the median."""


def crude_seasonal_metric(trace: DemandTrace, poll_times: FloatArray) -> FloatArray:
    """The issue's crude predictor: one-week seasonal naive scaled to the last hour, 10-min peak, max with
    the observed value. Uses complete minutes before each poll only."""
    values = trace.values
    week = round(WEEK_S / MINUTE_S)
    span = round(CRUDE_PEAK_S / MINUTE_S)
    hour = round(CRUDE_SCALE_WINDOW_S / MINUTE_S)
    csum = np.concatenate(([0.0], np.cumsum(values)))
    observed = trace.observed_at(poll_times)
    out = np.empty(len(poll_times), dtype=np.float64)
    for k, t in enumerate(poll_times.tolist()):
        now = math.floor((t - trace.start) / MINUTE_S + 1e-9)  # minute in progress; complete ones are < now
        lo = now - week
        if lo - hour < 0:
            out[k] = observed[k]
            continue
        recent = csum[now] - csum[now - hour]
        past = csum[lo] - csum[lo - hour]
        scale = recent / past if past > 0 else 1.0
        peak = float(values[lo : lo + span + 1].max()) * scale
        out[k] = max(float(observed[k]), peak)
    return out


@dataclass(frozen=True, slots=True)
class BarCheck:
    trace: str
    config: str
    what: str
    required: str
    measured: str
    met: bool


def check_bars(case: TraceCase, bar: BarConfig, report: BacktestReport) -> list[BarCheck]:
    o = report.outcomes
    pred = o["predictive"].metrics
    checks: list[BarCheck] = []
    need = bar.min_saving_vs_headroom.get(case.name)
    if need is not None:
        head = o["reactive_headroom"].metrics.replica_hours
        saving = 1 - pred.replica_hours / head if head > 0 else math.nan
        checks.append(
            BarCheck(
                case.label,
                bar.label,
                "replica-hours vs reactive_headroom",
                f">= {need:.0%} fewer",
                f"{saving:.1%} fewer",
                saving >= need,
            )
        )
    limit = bar.max_worst_shortfall_ratio.get(case.name)
    if limit is not None:
        react = o["reactive"].metrics.worst_shortfall
        ratio = pred.worst_shortfall / react if react > 0 else 0.0
        checks.append(
            BarCheck(
                case.label,
                bar.label,
                "worst shortfall vs reactive",
                f"<= {limit:.0%}",
                f"{ratio:.0%}",
                ratio <= limit,
            )
        )
    if peak_to_median(report) >= 2:
        static = o["static"].metrics.replica_hours
        saving = 1 - pred.replica_hours / static if static > 0 else math.nan
        checks.append(
            BarCheck(
                case.label,
                bar.label,
                "replica-hours vs static",
                f">= {STATIC_SAVING:.0%} fewer",
                f"{saving:.1%} fewer",
                saving >= STATIC_SAVING,
            )
        )
    return checks


def crude_comparison(report: BacktestReport) -> str:
    o = report.outcomes
    crude, pred, head = o["crude_seasonal"].metrics, o["predictive"].metrics, o["reactive_headroom"].metrics
    return (
        f"crude_seasonal for reference: {crude.replica_hours:.1f} replica-h, "
        f"{crude.underprovisioned_minutes:.0f} under-provisioned min, "
        f"worst shortfall {crude.worst_shortfall:.4g} "
        f"(predictive: {pred.replica_hours:.1f}, {pred.underprovisioned_minutes:.0f}, "
        f"{pred.worst_shortfall:.4g}; reactive_headroom at predictive's level: {head.replica_hours:.1f})"
    )


def equal_service_saving(report: BacktestReport, name: str) -> tuple[float, float]:
    """(1 - replica-hours of ``name`` / reactive with headroom at ``name``'s under-provisioning, headroom target)."""
    w = report.window
    hpa = report.config.hpa
    n_polls = (w.n_ticks - 1) // hpa.ticks_per_poll + 1
    polls = w.sim_start + hpa.keda_poll_s * np.arange(n_polls, dtype=np.float64)
    goal = report.outcomes[name].metrics.underprovisioned_minutes
    head = headroom_search(
        reactive_metric(report.trace, polls),
        report.demand_at_ticks,
        hpa,
        goal,
        start=w.sim_start,
        eval_from=w.eval_from_tick,
    )
    rh = report.outcomes[name].metrics.replica_hours
    return 1 - rh / head.metrics.replica_hours, head.target_value


def run_case(
    case: TraceCase,
    eval_days: float,
    refit_interval_s: float,
    plot_dir: Path | None,
    out: Callable[[str], None],
    model_cache: Path | None = None,
    quantile: float = PredictiveSettings().quantile,
) -> tuple[list[BarCheck], list[dict[str, Any]]]:
    trace = from_bundled(case.name, upsample=case.upsample)
    base_fit = service_fit_function(
        f"capacity-backtest:{case.name}",
        replace(FitConfig(), horizon_s=max(FitConfig().horizon_s, refit_interval_s + 3600.0)),
    )
    disk = None
    if model_cache is not None:
        hold = "-hold" if case.upsample == "hold" else ""
        disk = model_cache / f"{case.name}{hold}-step{case.fit_step_s:.0f}-refit{refit_interval_s:.0f}"
    fit, cache = caching_fit(base_fit, disk)
    checks: list[BarCheck] = []
    docs: list[dict[str, Any]] = []
    for bar in BARS:
        settings = PredictiveSettings(
            lead_s=bar.lead_s, refit_interval_s=refit_interval_s, fit_step_s=case.fit_step_s, quantile=quantile
        )
        config = BacktestConfig(
            hpa=HpaSettings(
                target_value=case.target_value,
                min_replicas=case.min_replicas,
                max_replicas=case.max_replicas,
                pod_startup_s=bar.pod_startup_s,
            ),
            predictive=settings,
            eval_days=eval_days,
        )

        def provide(tr: DemandTrace, polls: FloatArray, s: PredictiveSettings = settings) -> PredictiveRun:
            return predictive_metric(tr, polls, s, fit)

        def ungated(tr: DemandTrace, polls: FloatArray, s: PredictiveSettings = settings) -> FloatArray:
            return predictive_metric(tr, polls, replace(s, live_confidence=False), fit).values

        fits_before = len(cache)
        began = time.perf_counter()
        report = run_backtest(
            trace,
            config,
            provide,
            extra_metrics={"crude_seasonal": crude_seasonal_metric, "predictive_ungated": ungated},
        )
        verdict = make_verdict(report)
        out(f"\n=== {case.label}: {bar.label} (target {case.target_value:g} per replica) ===")
        out(format_table(report, verdict))
        out(crude_comparison(report))
        for name in ("crude_seasonal", "predictive_ungated"):
            saving, target = equal_service_saving(report, name)
            m = report.outcomes[name].metrics
            r = report.outcomes["reactive"].metrics
            ws = m.worst_shortfall / r.worst_shortfall if r.worst_shortfall > 0 else 0.0
            out(
                f"{name}: {saving:.1%} fewer replica-hours than reactive_headroom at its own under-provisioning "
                f"({m.underprovisioned_minutes:.0f} min, headroom target {target:.4g}); worst shortfall "
                f"{ws:.0%} of reactive's"
            )
        wall = time.perf_counter() - began
        out(f"(new fits this configuration: {len(cache) - fits_before}; wall {wall:.1f} s)")
        these = check_bars(case, bar, report)
        for c in these:
            status = "MET" if c.met else "NOT MET"
            out(f"bar: {c.what}: required {c.required}, measured {c.measured} -> {status}")
        checks.extend(these)
        doc = to_json(report, verdict)
        doc["configuration"] = bar.label
        doc["bars"] = [asdict(c) for c in these]
        docs.append(doc)
        if plot_dir is not None:
            plot_dir.mkdir(parents=True, exist_ok=True)
            hold = "-hold" if case.upsample == "hold" else ""
            slug = f"{case.name}{hold}-startup{bar.pod_startup_s / 60:.0f}m-lead{bar.lead_s / 60:.0f}m.png"
            plot(report, plot_dir / slug)
    return checks, docs


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--traces", default=",".join(c.name for c in CASES))
    p.add_argument("--eval-days", type=float, default=7.0)
    p.add_argument("--quantile", type=float, default=PredictiveSettings().quantile, help="predictQuantile")
    p.add_argument("--refit-interval", type=parse_duration, default=6 * 3600.0)
    p.add_argument("--json", type=Path, help="write every report as JSON here")
    p.add_argument("--plot-dir", type=Path, help="write one PNG per trace and configuration here")
    p.add_argument("--model-cache", type=Path, help="keep fitted models here (JSON) so reruns refit nothing")
    args = p.parse_args(argv)
    names = args.traces.split(",")
    wanted = [c for c in CASES if c.name in names or c.label in names]
    if not wanted:
        print(f"no known trace in {args.traces!r}; known: {', '.join(c.name for c in CASES)}", file=sys.stderr)
        return 2
    began = time.perf_counter()
    checks: list[BarCheck] = []
    docs: list[dict[str, Any]] = []
    for case in wanted:
        c, d = run_case(
            case,
            args.eval_days,
            args.refit_interval,
            args.plot_dir,
            lambda s: print(s, flush=True),
            args.model_cache,
            args.quantile,
        )
        checks.extend(c)
        docs.extend(d)
    print("\n=== bars ===")
    for check in checks:
        print(
            f"{'MET    ' if check.met else 'NOT MET'}  {check.trace:26s} {check.config:34s} "
            f"{check.what}: {check.measured} (required {check.required})"
        )
    print(f"total wall time {time.perf_counter() - began:.0f} s")
    if args.json is not None:
        args.json.write_text(json.dumps(docs, indent=2, allow_nan=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
