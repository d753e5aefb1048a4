"""How much could a better forecast buy? The tuning search fed hindsight instead of the service's forecast.

    .venv/bin/python -m loadtests.tune_ceiling [--traces nasa-http-1995,...] [--startups 3m,10m]
        [--model-cache DIR] [--json out.json]

For each trace and pod start-up it runs the same split, service level, search and held-back evaluation as
``backtest --tune`` (and :mod:`loadtests.tune_backtest`), with the predictive metric replaced by one that knows
part of the future. Each row is the predictive configuration tuned on the tuning stretch with that metric,
judged on the held-back stretch against the same tuned reactive configuration:

- ``forecast (service)``: the service's own forecasts (only with ``--model-cache`` holding the fitted models,
  or when a fit is acceptable: minutes to tens of minutes per trace). This is ``backtest --tune``'s row.
- ``hindsight level, W min``: a forecaster that knows the future **level** exactly, the centred W-minute mean
  of the actual demand, but not the minute-to-minute noise around it. Its quantiles are that level plus the
  normal quantile times the noise model ``sigma = c * level ** p`` (the service's own form,
  ``forecasting.backtest.noise_from_errors``), fitted on the minutes before the held-back stretch. The search
  tunes ``predictQuantile``, ``predictHorizon``, the window and the threshold as for the service's forecast.
  No level forecast can do better than a perfect one with the same noise band, so this is the ceiling for
  forecasts of the level; W = 5 minutes already knows part of the bursts.
- ``hindsight, every minute``: the actual demand of every coming minute (the peak over ``predictHorizon``):
  the ceiling for any forecast at all under this HPA.

Both hindsight metrics are never below the observed value, like the service's. They read the held-back
stretch's demand, which is the point: they measure what a forecast could buy there, not a configuration to
use. The search itself still reads only the tuning stretch.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from statistics import NormalDist

import numpy as np

from forecasting.backtest import NoiseModel, noise_from_errors
from loadtests.tune_backtest import hpa_for, select_runs
from scaler_service.backtest.forecast_table import MetricTable
from scaler_service.backtest.hpa import HpaSettings
from scaler_service.backtest.scaledobject import ObjectSettings
from scaler_service.backtest.strategies import PredictiveSettings, reactive_metric
from scaler_service.backtest.trace import MINUTE_S, DemandTrace, FloatArray, from_bundled
from scaler_service.backtest.tune import LEADS_S, ServiceLevel, TuneSplit, split_trace, tune
from scaler_service.backtest.tune_cli import run_tuning
from scaler_service.backtest.tune_report import HoldoutOutcome, evaluate_holdout

LEVEL_WINDOWS_MIN = (60, 15, 5)
HINDSIGHT_LEADS_S = (60.0, 180.0, *LEADS_S)
"""A hindsight metric that knows every minute is best read over short horizons too."""


def centred_mean(values: FloatArray, width: int) -> FloatArray:
    """The mean of the ``width`` minutes centred on each minute (edges padded with the edge value)."""
    half = width // 2
    padded = np.concatenate([np.full(half, values[0]), values, np.full(width - 1 - half, values[-1])])
    kernel = np.full(width, 1.0 / width)
    return np.asarray(np.convolve(padded, kernel, mode="valid"), dtype=np.float64)


class HindsightTable:
    """A :class:`~scaler_service.backtest.forecast_table.MetricTable` whose forecast is the actual future:
    the level ``level`` (one value per minute of the trace) plus ``noise`` read at the asked quantile, or the
    demand itself when ``noise`` is None and ``level`` is the demand."""

    def __init__(self, trace: DemandTrace, polls: FloatArray, level: FloatArray, noise: NoiseModel | None) -> None:
        began = time.perf_counter()
        raw = reactive_metric(trace, polls)
        with np.errstate(invalid="ignore"):
            self.observed: FloatArray = np.where(np.isfinite(raw) & (raw > 0), raw, 0.0)
        self._first = np.floor((polls - trace.start) / MINUTE_S).astype(np.int64)
        self._level = level
        self._sigma = noise.sigma(level) if noise is not None else np.zeros_like(level)
        self._values: dict[tuple[float, float], FloatArray] = {}
        self.seconds = time.perf_counter() - began

    def metric(self, lead_s: float, quantile: float, min_confidence: float) -> FloatArray:
        key = (lead_s, quantile)
        if key not in self._values:
            began = time.perf_counter()
            z = NormalDist().inv_cdf(quantile) if quantile > 0.5 else 0.0
            band = self._level + z * self._sigma
            n = int(lead_s // MINUTE_S) + 1
            padded = np.concatenate([band, np.full(n, band[-1])])
            peaks = np.lib.stride_tricks.sliding_window_view(padded, n).max(axis=1)[self._first]
            self._values[key] = np.maximum(peaks, self.observed)
            self.seconds += time.perf_counter() - began
        return self._values[key]

    @property
    def passes(self) -> int:
        return len(self._values)


def level_noise(trace: DemandTrace, level: FloatArray, split: TuneSplit) -> NoiseModel | None:
    """The noise of the demand around ``level``, fitted on the minutes before the held-back stretch."""
    before = int((split.holdout_start - trace.start) // MINUTE_S)
    return noise_from_errors(level[:before], np.abs(trace.values[:before] - level[:before]))


@dataclass(frozen=True, slots=True)
class Row:
    trace: str
    startup_min: float
    metric: str
    replica_hours: float
    underprovisioned_minutes: float
    scaling_events: int
    saving_vs_reactive_tuned: float
    settings: str


def hindsight_outcome(
    trace: DemandTrace, hpa: HpaSettings, base: PredictiveSettings, table: MetricTable, split: TuneSplit
) -> dict[str, HoldoutOutcome]:
    search = tune(trace, hpa, base, table, split, ServiceLevel(max_underprovisioned=0.01), leads_s=HINDSIGHT_LEADS_S)
    outcomes, _ = evaluate_holdout(trace, hpa, search, table)
    return outcomes


def row(
    trace: str, startup_s: float, label: str, tuned: HoldoutOutcome, reactive: HoldoutOutcome, hpa: HpaSettings
) -> Row:
    p, r = tuned.metrics, reactive.metrics
    return Row(
        trace,
        startup_s / 60,
        label,
        round(p.replica_hours, 1),
        p.underprovisioned_minutes,
        p.scaling_events,
        round(1 - p.replica_hours / r.replica_hours, 4),
        tuned.candidate.describe(hpa.target_value),
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--traces", default="nasa-http-1995")
    p.add_argument("--startups", default="3m,10m")
    p.add_argument("--model-cache", type=Path, help="add the service's forecast row, its models read from here")
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    chosen = select_runs(args.traces, args.startups)
    if chosen is None:
        return 2
    cases, startups = chosen
    began = time.perf_counter()
    rows: list[Row] = []
    for case in cases:
        trace = from_bundled(case.name, upsample=case.upsample)
        for startup_s, lead_s in startups:
            t0 = time.perf_counter()
            hpa = hpa_for(case, startup_s)
            base = PredictiveSettings(lead_s=lead_s, fit_step_s=case.fit_step_s)
            split = split_trace(trace)
            n_polls = (split.n_ticks - 1) // hpa.ticks_per_poll + 1
            polls = split.sim_start + hpa.keda_poll_s * np.arange(n_polls, dtype=np.float64)
            exact = hindsight_outcome(trace, hpa, base, HindsightTable(trace, polls, trace.values, None), split)
            reactive = exact["reactive_tuned"]
            rows.append(row(case.name, startup_s, "reactive, tuned (baseline)", reactive, reactive, hpa))
            if args.model_cache is not None:
                report = run_tuning(
                    trace,
                    hpa,
                    base,
                    ServiceLevel(max_underprovisioned=0.01),
                    ObjectSettings(name="ceiling"),
                    model_cache=args.model_cache,
                )
                rows.append(
                    row(case.name, startup_s, "forecast (service)", report.outcomes["predictive_tuned"], reactive, hpa)
                )
            for width in LEVEL_WINDOWS_MIN:
                level = centred_mean(trace.values, width)
                noise = level_noise(trace, level, split)
                table = HindsightTable(trace, polls, level, noise)
                found = hindsight_outcome(trace, hpa, base, table, split)["predictive_tuned"]
                shape = f"sigma = {noise.c:.3g} x level^{noise.p:.2f}" if noise else "no noise model"
                rows.append(row(case.name, startup_s, f"hindsight level, {width} min ({shape})", found, reactive, hpa))
            rows.append(row(case.name, startup_s, "hindsight, every minute", exact["predictive_tuned"], reactive, hpa))
            print(f"{case.name} at {startup_s / 60:.0f}-min start-up: {time.perf_counter() - t0:.0f} s", flush=True)
    print(
        "\n| trace | start-up | predictive metric | replica-h | under-prov min | events | vs reactive tuned | tuned |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r.trace} | {r.startup_min:.0f} min | {r.metric} | {r.replica_hours:.1f} | "
            f"{r.underprovisioned_minutes:.0f} | {r.scaling_events} | {r.saving_vs_reactive_tuned:.1%} fewer | "
            f"{r.settings} |"
        )
    print(f"total wall time {time.perf_counter() - began:.0f} s")
    if args.json is not None:
        args.json.write_text(json.dumps([asdict(r) for r in rows], indent=2, allow_nan=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
