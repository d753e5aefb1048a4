"""The tuning run's picture: the four configurations over the tuning and held-back stretches, the held-back
stretch shaded, drawn by the backtest's own :func:`scaler_service.backtest.report.plot`."""

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
        window=Window(split.sim_start, split.tune_start, split.end, split.sim_start - report.trace.start),
        outcomes=outcomes,
        demand_at_ticks=report.demand_at_ticks,
        predictive_run=PredictiveRun(values=reactive.simulation.metric, reasons={}),
        predictive_source="model",
        headroom=headroom,
        run_seconds=report.run_seconds,
    )
    return plot(backtest, path, span=(split.holdout_start, split.end, "held back (figures in the titles)"))


__all__ = ["plot_tuned"]
