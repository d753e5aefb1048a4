"""``python -m loadtests.replica_runner serve ...``: the scaler with a cheap fit, for benchmarks at 10,000 series.

Everything is the product (settings, store, engine, cache, gRPC, HTTP) except the fit function: a seasonal naive
forecast (yesterday at the same time, level-anchored: one of forecasting's baselines, about 1 ms) instead of the
Prophet-based selection (about 1 s), because 10,000 real fits per refit round would take hours on 2 cores.
The benchmark measures coordination and serving, which do not depend on what a fit costs.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence

from forecasting.serving import ServingModel
from scaler_service.__main__ import configure_logging, run_until_signalled
from scaler_service.engine import FitFactory, NoData
from scaler_service.settings import SettingsError
from scaler_service.settings_flags import add_settings_arguments, settings_from_args
from scaler_service.sources.base import DataSource
from scaler_service.trigger import SeriesKey, TriggerSpec

CHEAP_CANDIDATES = ("seasonal_naive_1d+anchor",)


def cheap_fit_factory(clock: Callable[[], float] = time.time) -> FitFactory:
    def factory(
        key: SeriesKey, spec: TriggerSpec, source: DataSource
    ) -> Callable[[str, ServingModel | None], ServingModel]:
        def fit(cache_key: str, previous: ServingModel | None) -> ServingModel:
            from forecasting.pipeline import FitConfig, fit_serving_model
            from forecasting.series import prepare_recent

            end = clock()
            samples = source.fetch_range(key.query, end - spec.history_window_s, end, key.step_s)
            if len(samples) == 0:
                raise NoData(f"query {key.query!r} returned no history")
            history = prepare_recent(samples.timestamps, samples.values, key.step_s, end=end)
            config = FitConfig(candidates=CHEAP_CANDIDATES, training_window_s=spec.history_window_s)
            return fit_serving_model(cache_key, history, config, previous=previous, clock=clock)

        return fit

    return factory


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtests.replica_runner")
    sub = parser.add_subparsers(dest="command", required=True)
    add_settings_arguments(sub.add_parser("serve"))
    args = parser.parse_args(argv)
    try:
        settings = settings_from_args(args)
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_format, settings.log_level)
    from scaler_service.server import ScalerServer

    run_until_signalled(ScalerServer(settings, fit_factory=cheap_fit_factory()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
