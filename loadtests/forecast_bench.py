"""Forecasting library benchmark: fit time, lookup time, memory per cached model, accuracy table.

    .venv/bin/python -m loadtests.forecast_bench [--only fit,lookup,memory,accuracy] [--refit-hours 6]

Prints figures with the machine they ran on. Accuracy uses rolling origins with 14-day training windows over
every bundled trace (clean stretches only): each expensive model is refitted every ``--refit-hours`` and
re-anchored at every forecast origin (every 10 min), as the scaler serves it. "chosen" is the model the
pipeline's own rule picks, per evaluation day, from the two days before it (no peeking).
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import resource
import statistics
import time
import timeit
import tracemalloc
import warnings
from typing import Any

import numpy as np

from forecasting.backtest import BacktestResult, BacktestSettings, rolling_origin
from forecasting.models.memo import SharedFits
from forecasting.models.prophet_model import ProphetForecaster
from forecasting.pipeline import FitConfig, choose_model, fit_serving_model, make_forecaster
from forecasting.series import DAY_S, PreparedSeries
from forecasting.serving import ServingModel
from forecasting.traces import clean_segments, load_trace

LEADS = (600.0, 1800.0, 3600.0)
MODELS = (
    "prophet+anchor",
    "prophet",
    "prophet_snaive+anchor",
    "seasonal_naive_1w+anchor",
    "seasonal_naive_1w",
    "seasonal_naive_1d",
    "persistence",
)
BASELINES = ("seasonal_naive_1w", "seasonal_naive_1d", "persistence")


def machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"


def nasa(days: float, step_s: float) -> PreparedSeries:
    start, _ = clean_segments("nasa-http-1995", min_days=days)[0]
    series = load_trace("nasa-http-1995", start=start, end=start + days * DAY_S - 60)
    return series if step_s == series.step_s else series.resample(step_s)


def bench_fit(runs: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    forecaster = ProphetForecaster()
    for label, days, step in (("14d@5min", 14, 300.0), ("30d@5min", 27, 300.0), ("14d@1min", 14, 60.0)):
        series = nasa(days, step) if days <= 27 else nasa(27, step)
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            forecaster.fit(series)
            times.append(time.perf_counter() - t0)
        out[label] = {"points": len(series), "median_s": statistics.median(times), "runs": times}
    # NASA's longest clean stretch is 27.6 days; the "30 d" row uses 27 days of it.
    return out


def bench_lookup() -> dict[str, float]:
    series = nasa(15, 60.0)
    model = fit_serving_model(
        "nasa",
        series,
        FitConfig(backtest_eval_s=DAY_S, backtest_refit_every_s=DAY_S),
        clock=lambda: series.end,
    )
    now = series.end + 123.0
    factor = 1.07
    n = 200_000
    peak_s = timeit.timeit(lambda: model.peak(now, 600.0, factor), number=n) / n
    obs = series.values[-60:]
    anchor_s = timeit.timeit(lambda: model.anchor_factor(series.end - 59 * 60, obs), number=20_000) / 20_000
    return {"peak_lookup_us": peak_s * 1e6, "anchor_factor_us": anchor_s * 1e6}


def bench_memory(copies: int) -> dict[str, Any]:
    """Bytes held per cached model: Python allocations (tracemalloc) and resident memory, over many copies."""
    series = nasa(27, 300.0)
    model = fit_serving_model(
        "nasa", series, FitConfig(backtest_eval_s=DAY_S, backtest_refit_every_s=DAY_S), clock=lambda: series.end
    )
    doc = json.dumps(model.to_json())
    gc.collect()
    before_rss = _rss_bytes()
    tracemalloc.start()
    held = [ServingModel.from_json({**json.loads(doc), "key": f"k{i}"}) for i in range(copies)]
    gc.collect()
    allocated, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    after_rss = _rss_bytes()
    return {
        "models": float(len(held)),
        "model": model.name,
        "traced_per_model_bytes": allocated / copies,
        "rss_per_model_bytes": (after_rss - before_rss) / copies,
        "nbytes_estimate": float(model.nbytes),
        "json_bytes": float(len(doc)),
    }


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def accuracy(trace: str, refit_hours: float, max_eval_days: float, models: tuple[str, ...]) -> dict[str, Any]:
    config = FitConfig()
    rows: dict[str, list[BacktestResult]] = {m: [] for m in models}
    for start, end in clean_segments(trace, min_days=16):
        series = load_trace(trace, start=start, end=end)
        settings = BacktestSettings(
            leads_s=LEADS,
            eval_s=min(max_eval_days * DAY_S, series.span_s - 14 * DAY_S - 2 * 3600),
            refit_every_s=refit_hours * 3600,
            origin_every_s=max(600.0, series.step_s),
        )
        shared = SharedFits(ProphetForecaster(config.prophet))  # one Prophet fit per origin for all its variants
        results = rolling_origin(series, [make_forecaster(m, config, prophet=shared) for m in models], settings)
        for m in models:
            rows[m].append(results[m])
    table: dict[str, Any] = {}
    for m in models:
        table[m] = {_lead(h): _pooled_mase(rows[m], j) for j, h in enumerate(LEADS)}
    table["chosen"] = _chosen(rows, config)
    step = load_trace(trace, check=False).step_s
    for name in table:
        for h in LEADS:
            if h < step:
                table[name][_lead(h)] = float("nan")
    return table


def _lead(h: float) -> str:
    return f"{int(h // 60)}m"


def _pooled_mase(results: list[BacktestResult], j: int) -> float:
    errs = np.concatenate([r.abs_errors[:, j] / r.scale for r in results])
    return float(np.nanmean(errs))


def _chosen(rows: dict[str, list[BacktestResult]], config: FitConfig) -> dict[str, float]:
    """Per evaluation day, the model the pipeline would pick from the two days before it."""
    picked_errors: list[list[np.ndarray]] = [[] for _ in LEADS]
    sel = LEADS.index(config.selection_lead_s)
    for seg in range(len(next(iter(rows.values())))):
        times = next(iter(rows.values()))[seg].origin_times
        day0 = times[0]
        for d in range(2, int((times[-1] - day0) // DAY_S) + 1):
            lo, hi = day0 + d * DAY_S, day0 + (d + 1) * DAY_S
            past = (times >= lo - 2 * DAY_S) & (times < lo)
            today = (times >= lo) & (times < hi)
            scores = {}
            for m, results in rows.items():
                r = results[seg]
                scores[m] = float(np.nanmean(r.abs_errors[past, sel])) / r.scale
            fake = {m: _Score(s) for m, s in scores.items()}
            choice = choose_model(fake, config.selection_lead_s, config.selection_margin)  # type: ignore[arg-type]
            r = rows[choice][seg]
            for j in range(len(LEADS)):
                picked_errors[j].append(r.abs_errors[today, j] / r.scale)
    return {
        _lead(h): float(np.nanmean(np.concatenate(picked_errors[j]))) if picked_errors[j] else float("nan")
        for j, h in enumerate(LEADS)
    }


class _Score:
    def __init__(self, mase: float) -> None:
        self._mase = mase

    def mase(self, lead_s: float) -> float:
        return self._mase


def main() -> None:
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--only", default="fit,lookup,memory,accuracy")
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--refit-hours", type=float, default=6.0)
    p.add_argument("--max-eval-days", type=float, default=21.0)
    p.add_argument("--traces", default="nasa-http-1995,nyc-taxi,azure-2019-cpu")
    p.add_argument("--models", default=",".join(MODELS))
    args = p.parse_args()
    parts = set(args.only.split(","))
    print(f"machine: {machine()}")
    if "fit" in parts:
        for label, r in bench_fit(args.runs).items():
            runs = ", ".join(f"{x:.2f}" for x in r["runs"])
            print(f"prophet fit {label} ({r['points']} points): median {r['median_s']:.3f} s  [{runs}]")
    if "lookup" in parts:
        r = bench_lookup()
        print(
            f"peak lookup over a 10-min lead: {r['peak_lookup_us']:.2f} us; anchor factor (60 obs): "
            f"{r['anchor_factor_us']:.2f} us"
        )
    if "memory" in parts:
        r = bench_memory(2000)
        print(
            f"memory per cached model ({r['model']}, 27 d @ 5 min history, curve 1 d @ 5 min): "
            f"{r['traced_per_model_bytes'] / 1024:.1f} KiB allocated, {r['rss_per_model_bytes'] / 1024:.1f} KiB RSS "
            f"(nbytes estimate {r['nbytes_estimate'] / 1024:.1f} KiB, JSON {r['json_bytes'] / 1024:.1f} KiB)"
        )
    if "accuracy" in parts:
        models = tuple(args.models.split(","))
        print(
            f"\naccuracy: MASE by lead, 14-day rolling training windows, refit every {args.refit_hours:g} h, "
            f"re-anchored every 10 min, up to {args.max_eval_days:g} evaluation days per clean stretch"
        )
        for trace in args.traces.split(","):
            t0 = time.perf_counter()
            table = accuracy(trace, args.refit_hours, args.max_eval_days, models)
            print(f"\n{trace}  ({time.perf_counter() - t0:.0f} s)")
            print(f"  {'model':26s} {'10m':>7s} {'30m':>7s} {'60m':>7s}")
            for name, row in table.items():
                print(f"  {name:26s} " + " ".join(_fmt(row[_lead(h)]) for h in LEADS))
            best_base = min(table[b]["30m"] for b in BASELINES if b in table)
            chosen = table["chosen"]["30m"]
            print(f"  chosen vs best baseline at 30m: {100 * (chosen / best_base - 1):+.1f}%")


def _fmt(x: float) -> str:
    return f"{x:7.3f}" if math.isfinite(x) else "    n/a"


if __name__ == "__main__":
    main()
