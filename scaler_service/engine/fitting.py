"""The fit functions the model cache runs: read the history through the source, fit with forecasting's pipeline."""

from __future__ import annotations

import time
from collections.abc import Callable

import structlog

from forecasting.serving import ServingModel
from scaler_service.engine.types import NoData
from scaler_service.fit_resolution import DEFAULT_MAX_POINTS_PER_FIT, FitTooCoarse, fit_resolution
from scaler_service.sources.base import DataSource, QueryError
from scaler_service.trigger import SeriesKey, TriggerSpec, format_duration

log = structlog.get_logger(__name__)

FitFunction = Callable[[str, ServingModel | None], ServingModel]
FitFactory = Callable[[SeriesKey, TriggerSpec, DataSource], FitFunction]


def default_fit_factory(
    clock: Callable[[], float] = time.time,
    *,
    max_points_per_fit: int = DEFAULT_MAX_POINTS_PER_FIT,
) -> FitFactory:
    """Fit functions that read the history through the source and fit with forecasting's pipeline.

    The history is read at :func:`scaler_service.fit_resolution.fit_resolution`'s step: at most
    ``max_points_per_fit`` points per fit, whatever queryStep and historyTimeWindow say.
    """

    def factory(key: SeriesKey, spec: TriggerSpec, source: DataSource) -> FitFunction:
        too_coarse: str | None = None
        resolution = None
        try:
            resolution = fit_resolution(spec.history_window_s, key.step_s, max_points_per_fit)
        except FitTooCoarse as exc:
            too_coarse = str(exc)
        else:
            if resolution.coarsened:
                log.info(
                    "history read on a coarser step than queryStep: within --max-points-per-fit",
                    series=key.id,
                    query_step_s=key.step_s,
                    fit_step_s=resolution.step_s,
                    points=resolution.points,
                    max_points_per_fit=max_points_per_fit,
                )

        def fit(cache_key: str, previous: ServingModel | None) -> ServingModel:
            from forecasting.pipeline import FitConfig, fit_serving_model
            from forecasting.series import prepare_recent

            if resolution is None:
                raise QueryError(too_coarse or "no fit resolution")
            step = resolution.step_s
            end = clock()
            samples = source.fetch_range(key.query, end - spec.history_window_s, end, step)
            if len(samples) == 0:
                raise NoData(
                    f"query {key.query!r} returned no history over the last {format_duration(spec.history_window_s)}"
                )
            history = prepare_recent(samples.timestamps, samples.values, step, end=end)
            config = FitConfig(holidays_country=spec.holidays_country, training_window_s=spec.history_window_s)
            return fit_serving_model(cache_key, history, config, previous=previous, clock=clock)

        return fit

    return factory


__all__ = ["FitFactory", "FitFunction", "default_fit_factory"]
