"""The tuning run's picture: the four configurations (defaults and tuned) on the held-back stretch, marked as
such, drawn by the backtest's own :func:`scaler_service.backtest.report.plot`."""

from __future__ import annotations

from pathlib import Path

from scaler_service.backtest.report import plot
from scaler_service.backtest.runner import BacktestConfig, BacktestReport, StrategyOutcome, Window
from scaler_service.backtest.strategies import HeadroomResult, PredictiveRun
from scaler_service.backtest.tune_report import TuneReport


def plot_tuned(report: TuneReport, path: str | Path) -> Path:
    split = report.search.split
    outcomes = {
        label: StrategyOutcome(label, o.candidate.target_value, o.simulation, o.metrics)
        for label, o in report.outcomes.items()
    }
    reactive = report.outcomes["reactive_tuned"]
    headroom = HeadroomResult(
        reactive.candidate.target_value,
        reactive.simulation,
        reactive.metrics,
        reactive.metrics.underprovisioned_minutes,
        0.0,
        0,
        True,
        "tuned reactive",
    )
    backtest = BacktestReport(
        trace=report.trace,
        config=BacktestConfig(hpa=report.hpa),
        # The picture covers the held-back stretch only: its bars are the held-back figures, and its zooms
        # (the worst shortfall, a typical day) are taken there, shaded and named as held back.
        window=Window(split.sim_start, split.holdout_start, split.end, split.sim_start - report.trace.start),
        outcomes=outcomes,
        demand_at_ticks=report.demand_at_ticks,
        # The value the tuned predictive configuration served at each KEDA poll (what the picture draws).
        predictive_run=PredictiveRun(
            values=report.outcomes["predictive_tuned"].simulation.metric[:: report.hpa.ticks_per_poll], reasons={}
        ),
        predictive_source="model",
        headroom=headroom,
        run_seconds=report.run_seconds,
    )
    return plot(backtest, path, span=(split.holdout_start, split.end, "held back"))


__all__ = ["plot_tuned"]
