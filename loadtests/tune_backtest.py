"""Tuning per workload on every bundled trace, against the tuning bars.

    .venv/bin/python -m loadtests.tune_backtest [--traces nasa-http-1995,nyc-taxi,azure-2019-cpu]
        [--model-cache DIR] [--json out.json] [--plot-dir DIR] [--yaml-dir DIR] [--tune-tolerance]

For each trace and each pod start-up (3 min and 10 min; the defaults reference starts from the capacity
backtest's leads, 10 and 15 min) it runs ``backtest --tune`` as the command line does: the last 7 days held
back, the 14 days before them tuned on, at most 1 % of minutes under-provisioned, scaling events capped at
1.5 x reactive's. Same sizing and fit steps as :mod:`loadtests.capacity_backtest` (NASA fitted on 1-minute
history, taxi and Azure on 5-minute means; the target is about the peak / 20), and no trace-specific
settings. Prints each comparison, verdict and ScaledObject, then the bars:

- NASA, 3-min start-up: tuned predictive >= 15 % fewer replica-hours than tuned reactive on the held-back
  stretch, at no more under-provisioned minutes;
- every trace and start-up: the winner's replica-hours <= tuned reactive's;
- every trace and start-up: the winner's scaling events <= 1.5 x reactive's (at the defaults) there.

Fits are the slow part (Prophet, 85 six-hourly refits over 21 days per trace); with ``--model-cache`` a rerun
reads them from disk, and both start-ups share them (a fit does not depend on the start-up).

``--tune-tolerance`` passes ``backtest --tune-tolerance`` on: the HPA's scale-up tolerance is searched too
(Kubernetes with the HPAConfigurableTolerance feature gate).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from loadtests.capacity_backtest import CASES, TraceCase
from scaler_service.backtest.hpa import HpaSettings
from scaler_service.backtest.scaledobject import ObjectSettings
from scaler_service.backtest.strategies import PredictiveSettings
from scaler_service.backtest.trace import from_bundled
from scaler_service.backtest.tune import EVENT_CAP_RATIO, ServiceLevel
from scaler_service.backtest.tune_cli import run_tuning
from scaler_service.backtest.tune_report import TuneReport, format_table, to_json

STARTUPS = ((180.0, 600.0), (600.0, 900.0))
"""(pod start-up, the defaults' predictHorizon) pairs."""
NASA_SAVING = 0.15
TRACES = ("nasa-http-1995", "nyc-taxi", "azure-2019-cpu")


@dataclass(frozen=True, slots=True)
class Bar:
    trace: str
    startup: str
    what: str
    required: str
    measured: str
    met: bool


def check(case: TraceCase, startup_s: float, report: TuneReport) -> list[Bar]:
    o = report.outcomes
    p, r = o["predictive_tuned"].metrics, o["reactive_tuned"].metrics
    w = o[f"{report.winner}_tuned"].metrics
    label = f"{startup_s / 60:.0f}-min start-up"
    bars: list[Bar] = []
    if case.name == "nasa-http-1995" and startup_s == 180.0:
        saving = 1 - p.replica_hours / r.replica_hours
        bars.append(
            Bar(
                case.name,
                label,
                "tuned predictive vs tuned reactive replica-hours, at no more under-provisioned minutes",
                f">= {NASA_SAVING:.0%} fewer, under-prov <= reactive's",
                f"{saving:.1%} fewer, under-prov {p.underprovisioned_minutes:.0f} vs "
                f"{r.underprovisioned_minutes:.0f} min",
                saving >= NASA_SAVING and p.underprovisioned_minutes <= r.underprovisioned_minutes,
            )
        )
    bars.append(
        Bar(
            case.name,
            label,
            f"winner ({report.winner}) replica-hours vs tuned reactive",
            "<=",
            f"{w.replica_hours:.1f} vs {r.replica_hours:.1f}",
            w.replica_hours <= r.replica_hours,
        )
    )
    bars.append(
        Bar(
            case.name,
            label,
            "winner scaling events vs reactive's",
            f"<= {EVENT_CAP_RATIO:g} x",
            f"{w.scaling_events} vs {o['reactive_default'].metrics.scaling_events} (cap {report.event_cap:.0f})",
            w.scaling_events <= report.event_cap,
        )
    )
    return bars


def hpa_for(case: TraceCase, startup_s: float) -> HpaSettings:
    """The HPA every tuning benchmark simulates for ``case`` at ``startup_s``."""
    return HpaSettings(
        target_value=case.target_value,
        min_replicas=case.min_replicas,
        max_replicas=case.max_replicas,
        pod_startup_s=startup_s,
    )


def select_runs(traces: str, startups: str) -> tuple[list[TraceCase], list[tuple[float, float]]] | None:
    """The bundled traces named in ``traces`` (comma-separated) and the (start-up, lead) pairs named in
    ``startups`` (``3m``, ``10m``); None, with the reason on stderr, when no trace is known. Also quiets the
    fitting libraries' logs."""
    for noisy in ("cmdstanpy", "prophet"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    names = traces.split(",")
    cases = [c for c in CASES if c.name in names and c.upsample == "interpolate"]
    if not cases:
        print(f"no known trace in {traces!r}; known: {', '.join(TRACES)}", file=sys.stderr)
        return None
    wanted = {s.strip() for s in startups.split(",")}
    return cases, [(s, lead) for s, lead in STARTUPS if f"{s / 60:.0f}m" in wanted]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--traces", default=",".join(TRACES))
    p.add_argument("--startups", default="3m,10m", help="which start-ups to run: 3m, 10m or both")
    p.add_argument("--model-cache", type=Path, help="keep fitted models here so reruns refit nothing")
    p.add_argument("--json", type=Path, help="write every report as JSON here")
    p.add_argument("--plot-dir", type=Path, help="write one PNG per trace and start-up here")
    p.add_argument("--yaml-dir", type=Path, help="write each ScaledObject here")
    p.add_argument(
        "--tune-tolerance",
        action="store_true",
        help="also search the HPA's scale-up tolerance (needs Kubernetes with HPAConfigurableTolerance)",
    )
    args = p.parse_args(argv)
    chosen = select_runs(args.traces, args.startups)
    if chosen is None:
        return 2
    cases, startups = chosen
    began = time.perf_counter()
    bars: list[Bar] = []
    docs: list[dict[str, Any]] = []
    rows: list[str] = []
    for case in cases:
        trace = from_bundled(case.name, upsample=case.upsample)
        for startup_s, lead_s in startups:
            hpa = hpa_for(case, startup_s)
            settings = PredictiveSettings(lead_s=lead_s, fit_step_s=case.fit_step_s)
            t0 = time.perf_counter()
            report = run_tuning(
                trace,
                hpa,
                settings,
                ServiceLevel(max_underprovisioned=0.01),
                ObjectSettings(name=case.name.replace(".", "-")),
                model_cache=args.model_cache,
                tune_tolerance=args.tune_tolerance,
            )
            wall = time.perf_counter() - t0
            print(f"\n=== {case.name}: {startup_s / 60:.0f}-min pod start-up (target {case.target_value:g}) ===")
            print(format_table(report))
            print(f"(wall {wall:.1f} s)", flush=True)
            these = check(case, startup_s, report)
            bars.extend(these)
            o = report.outcomes
            for label in ("reactive_default", "predictive_default", "reactive_tuned", "predictive_tuned"):
                m = o[label].metrics
                rows.append(
                    f"| {case.name} | {startup_s / 60:.0f} min | {label} | {m.replica_hours:.1f} | "
                    f"{m.underprovisioned_minutes:.0f} | {m.scaling_events} |"
                )
            rows.append(
                f"| {case.name} | {startup_s / 60:.0f} min | winner: {report.winner} | saving "
                f"{(report.saving or 0):.1%} vs reactive tuned | search {report.search.search_seconds:.0f} s | "
                f"run {report.run_seconds:.0f} s |"
            )
            doc = to_json(report)
            doc["pod_startup_s"] = startup_s
            doc["bars"] = [asdict(b) for b in these]
            docs.append(doc)
            slug = f"{case.name}-startup{startup_s / 60:.0f}m"
            if args.plot_dir is not None:
                from scaler_service.backtest.tune_plot import plot_tuned

                args.plot_dir.mkdir(parents=True, exist_ok=True)
                plot_tuned(report, args.plot_dir / f"{slug}.png")
            if args.yaml_dir is not None:
                args.yaml_dir.mkdir(parents=True, exist_ok=True)
                (args.yaml_dir / f"{slug}.yaml").write_text(report.yaml)
    print("\n=== held-back figures (replica-hours, under-provisioned minutes, scaling events) ===")
    print("| trace | start-up | configuration | replica-h | under-prov min | events |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        print(row)
    print("\n=== bars ===")
    for b in bars:
        status = "MET    " if b.met else "NOT MET"
        print(f"{status}  {b.trace:16s} {b.startup:16s} {b.what}: {b.measured} (required {b.required})")
    print(f"total wall time {time.perf_counter() - began:.0f} s")
    if args.json is not None:
        args.json.write_text(json.dumps(docs, indent=2, allow_nan=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
