"""``python -m scaler_service backtest``: what predictive scaling would have done on a trace.

Wired into ``scaler_service``'s command line through :func:`add_parser` and :func:`run`; also runs on its own
as ``python -m scaler_service.backtest``.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, TextIO

import numpy as np
from tqdm import tqdm

from forecasting.progress import progress_bar, wants_progress
from forecasting.series import DAY_S, PreparedSeries
from forecasting.serving import ServingModel
from scaler_service.backtest.hpa import HpaSettings
from scaler_service.backtest.report import format_table, make_verdict, plot, to_json
from scaler_service.backtest.runner import (
    BacktestConfig,
    PredictiveProvider,
    choose_window,
    model_provider,
    recorded_provider,
    run_backtest,
)
from scaler_service.backtest.strategies import FitFunction, PredictiveSettings, service_fit_function
from scaler_service.backtest.trace import (
    DemandTrace,
    FloatArray,
    TraceError,
    from_bundled,
    from_csv,
    from_prometheus,
    from_records,
)
from scaler_service.backtest.tune_cli import add_tune_arguments, run_tune
from scaler_service.trigger import parse_duration

DESCRIPTION = """\
Replay a demand trace minute by minute against four autoscaling strategies and compare cost and service:
reactive (KEDA + HPA on the observed value), reactive_headroom (the same with the threshold lowered until it
is under-provisioned as little as predictive), predictive (what this scaler would serve, with models refitted
on the data available at each moment) and static (sized for the peak). Prints a table and a verdict."""

EPILOG = """\
trace sources (exactly one):
  --trace FILE.csv             CSV with a header row and timestamp,value rows (ISO 8601 or epoch seconds)
  --trace NAME                 a bundled trace: nasa-http-1995, nyc-taxi, azure-2019-cpu
  --prometheus-url URL --query Q --start T [--end T] [--step 1m]
  --records FILE.csv           the scaler's observe-mode records (timestamp,observed,served,predictive):
                               replays 'observed' as demand and uses 'predictive' as the predictive metric

examples:
  python -m scaler_service backtest --trace nasa-http-1995 --target-value 20 --min-replicas 2
  python -m scaler_service backtest --trace demand.csv --target-value 50 --lead-time 15m --pod-startup 10m \\
      --output json --plot backtest.png
"""


def _duration(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _instant(text: str) -> float:
    s = text.strip()
    try:
        return float(s)
    except ValueError:
        pass
    try:
        dt = datetime.fromisoformat(s.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a time: {text!r} (expected ISO 8601 such as 1995-08-20T00:00Z or epoch seconds)"
        ) from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a number > 0, got {text!r}")
    return value


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text!r}")
    return value


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be in [0, 1], got {text!r}")
    return value


def configure_parser(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    src = p.add_argument_group("trace")
    src.add_argument("--trace", help="CSV file (timestamp,value) or bundled trace name")
    src.add_argument("--records", help="observe-mode records CSV (timestamp,observed,served,predictive)")
    src.add_argument("--prometheus-url", help="Prometheus base URL, e.g. http://prometheus:9090")
    src.add_argument("--query", help="PromQL returning one series (with --prometheus-url)")
    src.add_argument("--start", type=_instant, help="first time of the trace to load (ISO 8601 or epoch s)")
    src.add_argument("--end", type=_instant, help="last time of the trace to load (Prometheus: default now)")
    src.add_argument("--step", type=_duration, default=60.0, help="Prometheus query step (default 1m)")
    src.add_argument(
        "--upsample",
        choices=("interpolate", "hold"),
        default="interpolate",
        help="data coarser than 1 minute: interpolate linearly (default) or hold each value for its step",
    )

    cap = p.add_argument_group("capacity and HPA")
    cap.add_argument(
        "--target-value",
        type=_positive,
        required=True,
        help="the trigger threshold: the value one replica carries (HPA AverageValue target)",
    )
    cap.add_argument(
        "--capacity-per-replica",
        type=_positive,
        help="demand one ready replica can serve (default: the target value)",
    )
    cap.add_argument("--min-replicas", type=_count, default=1, help="default 1")
    cap.add_argument("--max-replicas", type=_count, default=100, help="default 100")
    cap.add_argument(
        "--pod-startup", type=_duration, default=180.0, help="time from scale-up to a ready pod (default 3m)"
    )
    cap.add_argument(
        "--hpa-behavior",
        choices=("policies", "legacy"),
        default="policies",
        help="policies: scale up by max(4 pods, 100%%) per 15 s (spec.behavior set, the documented defaults); "
        "legacy: an HPA without spec.behavior (Kubernetes' older rule, max(2x, 4) per sync)",
    )
    cap.add_argument(
        "--keda-poll",
        type=_duration,
        default=30.0,
        help="KEDA polling interval: how often the metric the HPA sees changes (default 30s)",
    )

    pred = p.add_argument_group("predictive")
    pred.add_argument(
        "--lead-time",
        type=_duration,
        default=600.0,
        help="predictHorizon: the forecast peak over this window is served (default 10m)",
    )
    pred.add_argument("--min-confidence", type=_fraction, default=0.8, help="minConfidence (default 0.8)")
    pred.add_argument(
        "--predict-quantile",
        type=_fraction,
        default=PredictiveSettings().quantile,
        help="predictQuantile: which forecast's peak is served (0.5 the point forecast, 0.9 its upper band)",
    )
    pred.add_argument(
        "--refit-interval",
        type=_duration,
        default=6 * 3600.0,
        help="refit the model this often in simulated time (default 6h; each fit costs seconds)",
    )
    pred.add_argument(
        "--fit-step",
        type=_duration,
        help="step of the history the model is fitted on (default: the trace's own step)",
    )
    pred.add_argument("--holidays", metavar="CC", help="country code whose public holidays the model uses")
    pred.add_argument(
        "--no-live-confidence",
        action="store_true",
        help="do not gate on the live forecast error (the service does)",
    )
    pred.add_argument(
        "--refit-on-drift",
        action="store_true",
        help="refit early when live accuracy drops, as the service does (more fits)",
    )

    ev = p.add_argument_group("evaluation and output")
    ev.add_argument(
        "--eval-days", type=_positive, default=7.0, help="evaluate the last N days of the trace (default 7)"
    )
    ev.add_argument("--eval-start", type=_instant, help="evaluate from this time to the end instead")
    ev.add_argument("--output", choices=("table", "json"), default="table")
    ev.add_argument("--plot", metavar="PNG", help="write demand vs ready capacity per strategy to this PNG")
    add_tune_arguments(p)
    return p


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``backtest`` sub-command to ``scaler_service``'s parser."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "backtest",
        help="compare reactive, predictive and static scaling on a trace",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    return configure_parser(p)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m scaler_service.backtest",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    return configure_parser(p)


class UsageError(ValueError):
    pass


def load_trace(args: argparse.Namespace) -> tuple[DemandTrace, PredictiveProvider | None, str]:
    """The demand trace and, in records mode, the recorded predictive metric."""
    chosen = [name for name in ("trace", "records", "prometheus_url") if getattr(args, name)]
    if len(chosen) != 1:
        raise UsageError(
            "give exactly one trace source: --trace FILE.csv|NAME, --records FILE.csv or "
            "--prometheus-url URL --query Q --start T"
            + (f" (got {', '.join('--' + c.replace('_', '-') for c in chosen)})" if chosen else "")
        )
    if args.records:
        trace, recorded = from_records(args.records, start=args.start, end=args.end)
        return trace, recorded_provider(recorded), "observe-mode records (the 'predictive' column)"
    if args.prometheus_url:
        if not args.query or args.start is None:
            raise UsageError("--prometheus-url needs --query and --start (and optionally --end, --step)")
        from scaler_service.sources.prometheus import PrometheusSource

        end = args.end if args.end is not None else time.time()
        source = PrometheusSource(args.prometheus_url)

        def fetch(query: str, start: float, stop: float, step: float) -> tuple[FloatArray, FloatArray]:
            samples = source.fetch_range(query, start, stop, step)
            return samples.timestamps, samples.values

        try:
            return (
                from_prometheus(fetch, args.query, start=args.start, end=end, step_s=args.step),
                None,
                "model",
            )
        finally:
            source.close()
    from forecasting.traces import TRACES

    if args.trace in TRACES:
        return from_bundled(args.trace, start=args.start, end=args.end, upsample=args.upsample), None, "model"
    return from_csv(args.trace, start=args.start, end=args.end, upsample=args.upsample), None, "model"


def build_config(args: argparse.Namespace, *, records: bool) -> BacktestConfig:
    hpa = HpaSettings(
        target_value=args.target_value,
        min_replicas=args.min_replicas,
        max_replicas=args.max_replicas,
        capacity_per_replica_value=args.capacity_per_replica,
        pod_startup_s=args.pod_startup,
        keda_poll_s=args.keda_poll,
        legacy_behavior=args.hpa_behavior == "legacy",
    )
    predictive = PredictiveSettings(
        lead_s=args.lead_time,
        min_confidence=args.min_confidence,
        quantile=args.predict_quantile,
        refit_interval_s=args.refit_interval,
        fit_step_s=args.fit_step,
        live_confidence=not args.no_live_confidence,
        refit_on_low_live_confidence=args.refit_on_drift,
    )
    return BacktestConfig(
        hpa=hpa,
        predictive=predictive,
        eval_days=args.eval_days,
        eval_start=args.eval_start,
        min_history_s=120.0 if records else 2 * DAY_S,
    )


def fit_function(args: argparse.Namespace, config: BacktestConfig, trace: DemandTrace) -> Any:
    from forecasting.pipeline import FitConfig

    step = config.predictive.resolved_fit_step(trace)
    base = FitConfig()
    horizon = max(base.horizon_s, config.predictive.refit_interval_s + config.predictive.lead_s + 2 * step)
    fit_config = replace(base, horizon_s=horizon, holidays_country=args.holidays)
    return service_fit_function(f"backtest:{trace.name}", fit_config)


def expected_fits(trace: DemandTrace, config: BacktestConfig) -> int:
    """Scheduled refits over the simulated window (refits the live accuracy asks for come on top)."""
    window = choose_window(trace, config)
    return max(1, math.ceil((window.eval_end - window.sim_start) / config.predictive.refit_interval_s))


def counting_fits(fit: FitFunction, bar: tqdm[Any]) -> FitFunction:
    """``fit`` that advances ``bar`` once per fit, failed or not, growing its total for unscheduled refits."""

    def counted(history: PreparedSeries, now: float, previous: ServingModel | None) -> ServingModel:
        try:
            return fit(history, now, previous)
        finally:
            if bar.total is not None and bar.n + 1 > bar.total:
                bar.total = bar.n + 1
            bar.update(1)

    return counted


def run(args: argparse.Namespace, *, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Run the backtest the parsed arguments describe; 0 on success, 2 on bad input."""
    out = out if out is not None else sys.stdout
    err = err if err is not None else sys.stderr
    # Each fit would print cmdstan's progress lines; the table says how many fits ran and how long they took.
    for noisy in ("cmdstanpy", "prophet"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    logging.getLogger("prophet.plot").setLevel(logging.CRITICAL)
    try:
        trace, recorded, source = load_trace(args)
        config = build_config(args, records=recorded is not None)
        if args.tune:
            if recorded is not None:
                raise UsageError("--tune refits models on the demand: give --trace or --prometheus-url, not --records")
            run_tune(args, trace, config.hpa, config.predictive, out)
            return 0
        bar = progress_bar(
            None if recorded is not None else expected_fits(trace, config),
            desc="backtest",
            unit="fits",
            enabled=recorded is None and wants_progress(err, machine_output=args.output == "json"),
            stream=err,
        )
        provider = (
            recorded
            if recorded is not None
            else model_provider(config.predictive, counting_fits(fit_function(args, config, trace), bar))
        )
        with bar:
            report = run_backtest(trace, config, provider, predictive_source=source)
    except (TraceError, UsageError, ValueError) as exc:
        print(f"error: {exc}", file=err)
        return 2
    except Exception as exc:
        from scaler_service.sources.base import SourceError, SourceUnavailable

        if isinstance(exc, SourceError):
            print(f"error: {exc}", file=err)
            return 3 if isinstance(exc, SourceUnavailable) else 2  # 3: Prometheus unreachable
        raise
    verdict = make_verdict(report)
    if args.plot:
        plot(report, args.plot)
    if args.output == "json":
        doc = to_json(report, verdict)
        if args.plot:
            doc["plot"] = str(args.plot)
        json.dump(doc, out, indent=2, allow_nan=False, default=_json_default)
        out.write("\n")
    else:
        out.write(format_table(report, verdict) + "\n")
        if args.plot:
            out.write(f"plot: {args.plot}\n")
    return 0


def _json_default(obj: object) -> object:
    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def main(argv: list[str] | None = None) -> int:
    return run(build_parser().parse_args(argv))


__all__ = ["add_parser", "build_parser", "configure_parser", "main", "run"]
