"""The statistics a VM is sized on, computed once per VM from its usage (pure, ``now`` given).

Statistic per resource = max(observed P95 over the lookback, forecast P95 over the next week); memory uses
P95 or max (``thresholds.memory_statistic``) and is None when unknown. Memory measured in part only
(:attr:`rightsizer.metrics.VmUsage.memory_measured_days`) is sized on the max of its measured samples (the
unmeasured time may hold the peaks a P95 would leave out) times ``1 + 1/days`` (the fewer days of samples,
the wider: the Kubernetes VPA's confidence multiplier for a short history), with no forecast: a model
fitted across long unmeasured stretches would be guessing. Alongside: the forecasts' errors in points and
the walk-forward evidence the confidence is estimated from (:mod:`rightsizer.decide.confidence`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from rightsizer.decide.confidence import UsageEvidence, usage_evidence
from rightsizer.decide.forecast import forecast_p95
from rightsizer.metrics import VmUsage
from rightsizer.settings import Settings


@dataclass(frozen=True, slots=True)
class UsageStats:
    cpu_observed_p95: float
    cpu_forecast_p95: float | None
    cpu_mean: float
    memory_observed: float | None
    """Observed P95 or max of memory percent (per settings); None when memory is unknown."""
    memory_forecast_p95: float | None
    completeness: float
    accuracy: float
    method: str
    notes: tuple[str, ...] = ()
    cpu_forecast_error: float = 0.0
    """The CPU forecast's backtest error in percentage points (0 without a forecast)."""
    memory_forecast_error: float = 0.0
    memory_widening: float = 1.0
    """The factor the memory statistic was widened by for a record measured in part (1: fully measured)."""
    memory_partial_note: str = ""
    """For memory measured in part only: how much was measured and how it is sized, for the row's reason."""
    evidence: UsageEvidence | None = None
    """Walk-forward samples of the VM's history the confidence is estimated from (None: no history)."""

    @property
    def cpu(self) -> float:
        """The CPU statistic sized on."""
        return max(self.cpu_observed_p95, self.cpu_forecast_p95 or 0.0)

    @property
    def memory(self) -> float | None:
        if self.memory_observed is None:
            return None
        return max(self.memory_observed, self.memory_forecast_p95 or 0.0)

    def as_dict(self) -> dict[str, float]:
        out = {
            "cpu_observed_p95": self.cpu_observed_p95,
            "cpu_stat": self.cpu,
            "cpu_mean": self.cpu_mean,
            "completeness": self.completeness,
            "forecast_accuracy": self.accuracy,
        }
        if self.cpu_forecast_p95 is not None:
            out["cpu_forecast_p95"] = self.cpu_forecast_p95
        if self.memory_observed is not None:
            out["memory_observed"] = self.memory_observed
            out["memory_stat"] = self.memory or 0.0
        if self.memory_forecast_p95 is not None:
            out["memory_forecast_p95"] = self.memory_forecast_p95
        if self.memory_widening != 1.0:
            out["memory_widening"] = self.memory_widening
        return {k: round(v, 4) for k, v in out.items()}


def _quantile(values: np.ndarray, q: float) -> float:
    finite = values[np.isfinite(values)]
    return float(np.quantile(finite, q)) if len(finite) else math.nan


def usage_stats(usage: VmUsage, now: float, settings: Settings) -> UsageStats:
    cpu_values = usage.cpu.values
    cpu_fc = forecast_p95(f"{usage.vm}/cpu", usage.cpu, now, settings.forecast)
    notes = [n for n in (cpu_fc.note, usage.memory_note) if n]
    accuracy = cpu_fc.accuracy
    mem_obs = mem_fc_p95 = None
    mem_error = 0.0
    measured_days = usage.memory_measured_days
    partial = usage.memory is not None and measured_days is not None
    q = 1.0 if partial or settings.thresholds.memory_statistic == "max" else 0.95
    widening = 1.0 + 1.0 / measured_days if partial and measured_days is not None else 1.0
    if partial and usage.memory is not None:
        mem_obs = _quantile(usage.memory.values, q) * widening
    elif usage.memory is not None:
        mem_obs = _quantile(usage.memory.values, q)
        mem_fc = forecast_p95(f"{usage.vm}/memory", usage.memory, now, settings.forecast)
        mem_fc_p95 = mem_fc.p95
        mem_error = mem_fc.error_points
        accuracy = min(accuracy, mem_fc.accuracy)
        if mem_fc.note and mem_fc.note not in notes:
            notes.append(mem_fc.note)
    finite_cpu = cpu_values[np.isfinite(cpu_values)]
    return UsageStats(
        cpu_observed_p95=_quantile(cpu_values, 0.95),
        cpu_forecast_p95=cpu_fc.p95,
        cpu_mean=float(finite_cpu.mean()) if len(finite_cpu) else math.nan,
        memory_observed=mem_obs,
        memory_forecast_p95=mem_fc_p95,
        completeness=usage.completeness,
        accuracy=accuracy,
        method=cpu_fc.method,
        notes=tuple(notes),
        cpu_forecast_error=cpu_fc.error_points,
        memory_forecast_error=mem_error,
        memory_widening=widening,
        memory_partial_note=usage.memory_note if partial else "",
        evidence=usage_evidence(
            cpu_values,
            None if usage.memory is None else usage.memory.values,
            usage.cpu.step_s,
            memory_quantile=q,
            memory_sparse=partial,
        ),
    )
