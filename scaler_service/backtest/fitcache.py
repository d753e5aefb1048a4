"""Fitted models kept by the simulated time of their fit, in memory and optionally on disk.

A fit at simulated time ``now`` sees only the history that had ended by ``now`` (``predictive_metric`` cuts
it), so the model it produces depends on the trace before ``now``, the fit settings and the previous model,
and on nothing a backtest varies afterwards (the lead, the quantile, the confidence gate, the HPA). Every run
over the same trace and fit settings can therefore share the models: the tuning search fits once per refit
time and every candidate reuses them; a rerun with a disk cache fits nothing.

The disk layout is one ``<epoch seconds>.json`` (``ServingModel.to_json``) per fit in a directory that the
caller names after what the fits depend on (:func:`cache_directory`).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from forecasting.series import PreparedSeries
from forecasting.serving import ServingModel
from scaler_service.backtest.strategies import FitFunction
from scaler_service.backtest.trace import DemandTrace


@dataclass(slots=True)
class FitCache:
    """Counts what was fitted and what was reused, for the run-time note."""

    memory: dict[float, ServingModel] = field(default_factory=dict)
    fitted: int = 0
    from_disk: int = 0
    reused: int = 0


def caching_fit(fit: FitFunction, disk: Path | None = None) -> tuple[FitFunction, dict[float, ServingModel]]:
    """The same fits for every configuration of a trace: keyed by the simulated time of the fit.

    With ``disk``, models are also kept as ``ServingModel.to_json`` files there, so a rerun refits nothing.
    """
    wrapped, cache = counting_fit(fit, disk)
    return wrapped, cache.memory


def counting_fit(fit: FitFunction, disk: Path | None = None) -> tuple[FitFunction, FitCache]:
    """:func:`caching_fit` that also reports how many models were fitted, read from disk or reused."""
    cache = FitCache()

    def cached(history: PreparedSeries, now: float, previous: ServingModel | None) -> ServingModel:
        if now in cache.memory:
            cache.reused += 1
            return cache.memory[now]
        path = disk / f"{now:.0f}.json" if disk is not None else None
        if path is not None and path.is_file():
            model = ServingModel.from_json(json.loads(path.read_text()))
            cache.from_disk += 1
        else:
            model = fit(history, now, previous)
            cache.fitted += 1
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_suffix(".tmp")
                tmp.write_text(json.dumps(model.to_json()))
                tmp.replace(path)
        cache.memory[now] = model
        return model

    return cached, cache


def cache_directory(
    root: Path, trace: DemandTrace, *, fit_step_s: float, refit_interval_s: float, extra: str = ""
) -> Path:
    """A directory under ``root`` named after the trace's content and the fit settings the models depend on."""
    digest = hashlib.sha256()
    digest.update(f"{trace.start:.0f}:{len(trace.values)}:{extra}".encode())
    digest.update(trace.values.tobytes())
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", trace.name)[:40].strip("-.") or "trace"
    return root / f"{slug}-{digest.hexdigest()[:12]}-step{fit_step_s:.0f}-refit{refit_interval_s:.0f}"


__all__ = ["FitCache", "cache_directory", "caching_fit", "counting_fit"]
