"""One backtest: choose the window, compute each strategy's metric, run the HPA emulation, compare."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

from forecasting.series import DAY_S, format_duration, format_instant
from scaler_service.backtest.hpa import TICK_S, HpaSettings, Simulation, simulate, static_simulation
from scaler_service.backtest.metrics import LeadStats, StrategyMetrics, evaluate, lead_gained
from scaler_service.backtest.strategies import (
    FitFunction,
    HeadroomResult,
    PredictiveRun,
    PredictiveSettings,
    headroom_search,
    predictive_metric,
    reactive_metric,
    static_replicas,
)
from scaler_service.backtest.trace import MINUTE_S, DemandTrace, FloatArray, RecordedPredictive, TraceError

MIN_HISTORY_S = 2 * DAY_S
"""The forecasting library refuses less (``PreparationPolicy.min_history_s``)."""
WEEKLY_HISTORY_S = 14 * DAY_S
MIN_EVAL_S = 3600.0

STRATEGIES = ("reactive", "reactive_headroom", "predictive", "static")

PredictiveProvider = Callable[[DemandTrace, FloatArray], PredictiveRun]
"""(trace, poll times) -> the predictive strategy's metric at each poll."""


@dataclass(frozen=True, slots=True)
class BacktestConfig:
    hpa: HpaSettings
    predictive: PredictiveSettings = field(default_factory=PredictiveSettings)
    eval_days: float = 7.0
    eval_start: float | None = None
    """Evaluate from here to the end of the trace (overrides ``eval_days``)."""
    settle_s: float = 3600.0
    """Simulated before the evaluation window (not counted) so every strategy starts from its own state."""
    min_history_s: float = MIN_HISTORY_S
    """History needed before the simulation starts (the first fit's)."""

    def __post_init__(self) -> None:
        if not self.eval_days > 0:
            raise ValueError(f"evaluation window must be > 0 days, got {self.eval_days}")
        if self.settle_s < 0:
            raise ValueError(f"settle time must be >= 0 s, got {self.settle_s}")


@dataclass(frozen=True, slots=True)
class Window:
    sim_start: float
    eval_start: float
    eval_end: float
    history_s: float
    """Data before the simulation start: what the first fit sees."""
    note: str | None = None

    @property
    def eval_from_tick(self) -> int:
        return round((self.eval_start - self.sim_start) / TICK_S)

    @property
    def n_ticks(self) -> int:
        return round((self.eval_end - self.sim_start) / TICK_S)


def choose_window(trace: DemandTrace, config: BacktestConfig) -> Window:
    """Evaluation window at the end of the trace, with enough history before it for the first fit."""
    end = math.floor(trace.end / MINUTE_S) * MINUTE_S
    earliest_sim = trace.start + max(config.min_history_s, 2 * MINUTE_S)
    earliest_eval = math.ceil((earliest_sim + config.settle_s) / MINUTE_S) * MINUTE_S
    note = None
    if config.eval_start is not None:
        eval_start = math.ceil(config.eval_start / MINUTE_S) * MINUTE_S
        if eval_start < earliest_eval:
            raise TraceError(
                f"evaluation start {format_instant(eval_start)} leaves "
                f"{format_duration(max(0.0, eval_start - config.settle_s - trace.start))} of history before "
                "it; "
                f"{format_duration(config.min_history_s)} are needed for the first fit (plus "
                f"{format_duration(config.settle_s)} of settling): start at {format_instant(earliest_eval)} "
                "or later"
            )
    else:
        eval_start = math.floor((end - config.eval_days * DAY_S) / MINUTE_S) * MINUTE_S
        if eval_start < earliest_eval:
            eval_start = earliest_eval
            note = (
                f"the trace holds {format_duration(trace.end - trace.start)}: the first "
                f"{format_duration(config.min_history_s + config.settle_s)} are history for the first fit, "
                f"so the evaluation window is the {format_duration(end - eval_start)} from "
                f"{format_instant(eval_start)}"
            )
    if end - eval_start < MIN_EVAL_S:
        raise TraceError(
            f"trace [{format_instant(trace.start)}, {format_instant(trace.end)}] is too short: after "
            f"{format_duration(config.min_history_s)} of history and {format_duration(config.settle_s)} of "
            f"settling less than {format_duration(MIN_EVAL_S)} is left to evaluate"
        )
    sim_start = eval_start - config.settle_s
    return Window(sim_start, eval_start, end, sim_start - trace.start, note)


@dataclass(frozen=True, slots=True)
class StrategyOutcome:
    name: str
    target_value: float | None
    simulation: Simulation
    metrics: StrategyMetrics
    lead: LeadStats | None = None
    notes: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class BacktestReport:
    trace: DemandTrace
    config: BacktestConfig
    window: Window
    outcomes: Mapping[str, StrategyOutcome]
    demand_at_ticks: FloatArray
    predictive_run: PredictiveRun
    predictive_source: str
    headroom: HeadroomResult
    run_seconds: float
    notes: tuple[str, ...] = field(default_factory=tuple)

    def ticks(self) -> FloatArray:
        return self.window.sim_start + TICK_S * np.arange(len(self.demand_at_ticks), dtype=np.float64)


def recorded_provider(recorded: RecordedPredictive) -> PredictiveProvider:
    def provide(trace: DemandTrace, poll_times: FloatArray) -> PredictiveRun:
        return PredictiveRun(values=recorded.at(poll_times), reasons={"recorded": len(poll_times)})

    return provide


def model_provider(settings: PredictiveSettings, fit: FitFunction) -> PredictiveProvider:
    def provide(trace: DemandTrace, poll_times: FloatArray) -> PredictiveRun:
        return predictive_metric(trace, poll_times, settings, fit)

    return provide


def run_backtest(
    trace: DemandTrace,
    config: BacktestConfig,
    predictive: PredictiveProvider,
    *,
    predictive_source: str = "model",
    extra_metrics: Mapping[str, Callable[[DemandTrace, FloatArray], FloatArray]] | None = None,
) -> BacktestReport:
    """Every strategy over the same window, with the same capacity per replica and bounds."""
    began = time.perf_counter()
    window = choose_window(trace, config)
    n_ticks = window.n_ticks
    tpp = config.hpa.ticks_per_poll
    n_polls = (n_ticks - 1) // tpp + 1
    poll_times = window.sim_start + config.hpa.keda_poll_s * np.arange(n_polls, dtype=np.float64)
    ticks = window.sim_start + TICK_S * np.arange(n_ticks, dtype=np.float64)
    demand = trace.demand_at(ticks)
    eval_from = window.eval_from_tick
    hpa = config.hpa

    observed = reactive_metric(trace, poll_times)
    reactive_sim = simulate(observed, hpa, start=window.sim_start, n_ticks=n_ticks)
    reactive = StrategyOutcome(
        "reactive",
        hpa.target_value,
        reactive_sim,
        evaluate("reactive", reactive_sim, demand, eval_from=eval_from),
    )

    run = predictive(trace, poll_times)
    predictive_sim = simulate(run.values, hpa, start=window.sim_start, n_ticks=n_ticks)
    predictive_outcome = StrategyOutcome(
        "predictive",
        hpa.target_value,
        predictive_sim,
        evaluate("predictive", predictive_sim, demand, eval_from=eval_from),
        lead_gained(
            demand,
            reactive_sim.capacity,
            predictive_sim.capacity,
            lead_s=config.predictive.lead_s,
            eval_from=eval_from,
        ),
    )

    headroom = headroom_search(
        observed,
        demand,
        hpa,
        predictive_outcome.metrics.underprovisioned_minutes,
        start=window.sim_start,
        eval_from=eval_from,
    )
    headroom_outcome = StrategyOutcome(
        "reactive_headroom",
        headroom.target_value,
        headroom.simulation,
        evaluate("reactive_headroom", headroom.simulation, demand, eval_from=eval_from),
        lead_gained(
            demand,
            reactive_sim.capacity,
            headroom.simulation.capacity,
            lead_s=config.predictive.lead_s,
            eval_from=eval_from,
        ),
        (headroom.note,),
    )

    static_count = static_replicas(demand[eval_from:], hpa)
    static_sim = static_simulation(
        static_count, start=window.sim_start, n_ticks=n_ticks, capacity_per_replica=hpa.capacity_per_replica
    )
    static_outcome = StrategyOutcome(
        "static",
        None,
        static_sim,
        evaluate("static", static_sim, demand, eval_from=eval_from),
        notes=(f"{static_count} replicas: ceil(peak demand of the window / capacity per replica), within bounds",),
    )

    outcomes: dict[str, StrategyOutcome] = {
        "reactive": reactive,
        "reactive_headroom": headroom_outcome,
        "predictive": predictive_outcome,
        "static": static_outcome,
    }
    for name, metric_fn in (extra_metrics or {}).items():
        values = metric_fn(trace, poll_times)
        sim = simulate(values, hpa, start=window.sim_start, n_ticks=n_ticks)
        outcomes[name] = StrategyOutcome(
            name,
            hpa.target_value,
            sim,
            evaluate(name, sim, demand, eval_from=eval_from),
            lead_gained(
                demand,
                reactive_sim.capacity,
                sim.capacity,
                lead_s=config.predictive.lead_s,
                eval_from=eval_from,
            ),
        )

    notes: list[str] = []
    if window.note:
        notes.append(window.note)
    if predictive_source == "model":
        weekly = "yes" if window.history_s >= WEEKLY_HISTORY_S else "no"
        notes.append(
            f"history before the first fit: {format_duration(window.history_s)} "
            f"(>= 14 days for weekly seasonality: {weekly})"
        )
    return BacktestReport(
        trace=trace,
        config=config,
        window=window,
        outcomes=outcomes,
        demand_at_ticks=demand,
        predictive_run=run,
        predictive_source=predictive_source,
        headroom=headroom,
        run_seconds=time.perf_counter() - began,
        notes=tuple(notes),
    )


__all__ = [
    "STRATEGIES",
    "BacktestConfig",
    "BacktestReport",
    "PredictiveProvider",
    "StrategyOutcome",
    "Window",
    "choose_window",
    "model_provider",
    "recorded_provider",
    "run_backtest",
]
