"""Capacity backtest: replay a demand trace against KEDA + HPA fed reactively, predictively (exactly what the
scaler serves) and statically, and compare cost and service level. See ``docs/backtest.md``."""

from scaler_service.backtest.hpa import HpaSettings, Simulation, simulate
from scaler_service.backtest.metrics import LeadStats, StrategyMetrics, evaluate, lead_gained
from scaler_service.backtest.runner import BacktestConfig, BacktestReport, run_backtest
from scaler_service.backtest.strategies import PredictiveSettings, headroom_search, predictive_metric
from scaler_service.backtest.trace import DemandTrace, TraceError

__all__ = [
    "BacktestConfig",
    "BacktestReport",
    "DemandTrace",
    "HpaSettings",
    "LeadStats",
    "PredictiveSettings",
    "Simulation",
    "StrategyMetrics",
    "TraceError",
    "evaluate",
    "headroom_search",
    "lead_gained",
    "predictive_metric",
    "run_backtest",
    "simulate",
]
