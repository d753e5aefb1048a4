"""``backtest --tune``: the command-line side of :mod:`scaler_service.backtest.tune`."""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from forecasting.pipeline import FitConfig
from scaler_service.backtest.fitcache import cache_directory, counting_fit
from scaler_service.backtest.forecast_table import ForecastTable
from scaler_service.backtest.hpa import HpaSettings
from scaler_service.backtest.scaledobject import DEFAULT_SCALER_ADDRESS, ObjectSettings
from scaler_service.backtest.strategies import PredictiveSettings, service_fit_function
from scaler_service.backtest.trace import DemandTrace
from scaler_service.backtest.tune import SCALE_UP_TOLERANCES, ServiceLevel, split_trace, tune
from scaler_service.backtest.tune_report import TuneReport, build_report, fit_summary, format_table, to_json


def share(text: str) -> float:
    """``1%`` or ``0.01``: a share in [0, 1)."""
    s = text.strip()
    try:
        value = float(s[:-1]) / 100 if s.endswith("%") else float(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a share: {text[:40]!r} (expected e.g. 1% or 0.01)") from None
    if not (math.isfinite(value) and 0 <= value < 1):
        raise argparse.ArgumentTypeError(f"must be a share in [0, 1) such as 1% or 0.01, got {text[:40]!r}")
    return value


def add_tune_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("tuning (--tune)")
    g.add_argument(
        "--tune",
        action="store_true",
        help="search the best predictive and reactive configuration on the earlier part of the trace, judge them "
        "on the held-back most recent stretch and write the winner's ScaledObject",
    )
    g.add_argument(
        "--max-underprovisioned",
        type=share,
        help="service level: share of minutes allowed under-provisioned (default 1%% unless --max-unserved)",
    )
    g.add_argument("--max-unserved", type=share, help="service level: share of demand allowed unserved")
    g.add_argument(
        "--tune-tolerance",
        action="store_true",
        help="also search the HPA's scale-up tolerance (0, 0.02, 0.05, 0.1; default 0.1) and write it to the "
        "ScaledObject's behavior.scaleUp.tolerance: needs Kubernetes with the HPAConfigurableTolerance feature "
        "gate (alpha in 1.33, off by default there)",
    )
    g.add_argument("--holdout-days", type=float, default=7.0, help="most recent days held back (default 7)")
    g.add_argument("--tune-days", type=float, default=14.0, help="days before them to tune on (default 14)")
    g.add_argument("--model-cache", type=Path, help="keep fitted models in this directory so reruns refit nothing")
    g.add_argument("--scaled-object", type=Path, metavar="YAML", help="also write the ScaledObject to this file")
    g.add_argument("--scaled-object-name", default="app", help="metadata.name of the ScaledObject (default app)")
    g.add_argument("--scale-target", help="the Deployment it scales (default: the ScaledObject's name)")
    g.add_argument("--scaler-address", default=DEFAULT_SCALER_ADDRESS, help="the trigger's scalerAddress")


def service_level(args: argparse.Namespace) -> ServiceLevel:
    if args.max_underprovisioned is None and args.max_unserved is None:
        return ServiceLevel(max_underprovisioned=0.01)
    return ServiceLevel(max_underprovisioned=args.max_underprovisioned, max_unserved=args.max_unserved)


def run_tuning(
    trace: DemandTrace,
    hpa: HpaSettings,
    predictive: PredictiveSettings,
    service: ServiceLevel,
    objects: ObjectSettings,
    *,
    holdout_days: float = 7.0,
    tune_days: float = 14.0,
    model_cache: Path | None = None,
    fit: Any = None,
    holidays: str | None = None,
    grid: Mapping[str, tuple[float, ...]] | None = None,
    tune_tolerance: bool = False,
) -> TuneReport:
    """The whole tuning run: split, fits once per refit time, search, held-back comparison. ``tune_tolerance``
    adds the scale-up tolerance to the search (``SCALE_UP_TOLERANCES`` unless ``grid`` names others)."""
    began = time.perf_counter()
    split = split_trace(trace, holdout_days=holdout_days, tune_days=tune_days)
    step = predictive.resolved_fit_step(trace)
    if fit is None:
        base = FitConfig()
        horizon = max(base.horizon_s, predictive.refit_interval_s + 3600.0 + 2 * step)
        fit = service_fit_function(
            f"backtest:{trace.name}", replace(base, horizon_s=horizon, holidays_country=holidays)
        )
    disk = None
    if model_cache is not None:
        extra = f"holidays={holidays}" if holidays else ""
        disk = cache_directory(
            model_cache, trace, fit_step_s=step, refit_interval_s=predictive.refit_interval_s, extra=extra
        )
    cached, counts = counting_fit(fit, disk)
    n_polls = (split.n_ticks - 1) // hpa.ticks_per_poll + 1
    polls = split.sim_start + hpa.keda_poll_s * np.arange(n_polls, dtype=np.float64)
    table = ForecastTable(trace, polls, predictive, cached)
    searched = {"scale_up_tolerances": SCALE_UP_TOLERANCES} if tune_tolerance else {}
    search = tune(trace, hpa, predictive, table, split, service, **{**searched, **(grid or {})})
    note = fit_summary(table, counts.fitted, counts.from_disk)
    return build_report(trace, hpa, search, table, objects, fit_note=note, began=began)


def run_tune(
    args: argparse.Namespace,
    trace: DemandTrace,
    hpa: HpaSettings,
    predictive: PredictiveSettings,
    out: TextIO,
) -> TuneReport:
    objects = ObjectSettings(
        name=args.scaled_object_name,
        target=args.scale_target,
        query=args.query,
        scaler_address=args.scaler_address,
    )
    report = run_tuning(
        trace,
        hpa,
        predictive,
        service_level(args),
        objects,
        holdout_days=args.holdout_days,
        tune_days=args.tune_days,
        model_cache=args.model_cache,
        holidays=args.holidays,
        tune_tolerance=args.tune_tolerance,
    )
    if args.scaled_object is not None:
        args.scaled_object.write_text(report.yaml)
    if args.plot:
        from scaler_service.backtest.tune_plot import plot_tuned

        plot_tuned(report, args.plot)
    if args.output == "json":
        doc = to_json(report)
        if args.plot:
            doc["plot"] = str(args.plot)
        json.dump(doc, out, indent=2, allow_nan=False)
        out.write("\n")
    else:
        out.write(format_table(report) + "\n")
        if args.scaled_object is not None:
            out.write(f"ScaledObject written to {args.scaled_object}\n")
        if args.plot:
            out.write(f"plot: {args.plot}\n")
    return report


__all__ = ["add_tune_arguments", "run_tune", "run_tuning", "service_level", "share"]
