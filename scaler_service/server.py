"""Assembles and runs the scaler: gRPC (ExternalScaler, health, reflection), HTTP, the engine, the cache."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent import futures
from typing import Any

import grpc
import structlog
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import CollectorRegistry

from forecasting.cache import CacheSettings, FitOutcome, ModelCache
from scaler_service._generated import externalscaler_pb2 as pb
from scaler_service._generated import externalscaler_pb2_grpc as pb_grpc
from scaler_service.engine import EngineSettings, FitFactory, OptOutReader, SeriesEngine, default_fit_factory
from scaler_service.http_api import api_routes
from scaler_service.http_server import BoundedHttpServer
from scaler_service.metrics import EngineCollector, ScalerMetrics
from scaler_service.servicer import ExternalScalerServicer
from scaler_service.settings import Settings
from scaler_service.sources.base import DataSource
from scaler_service.trigger import TriggerParser

log = structlog.get_logger(__name__)

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["ExternalScaler"].full_name


def make_source_for(settings: Settings, clock: Callable[[], float] = time.time) -> Callable[[str], DataSource]:
    """One source per address, created on first use (the address was checked against the allowlist)."""
    lock = threading.Lock()
    sources: dict[str, DataSource] = {}

    def source_for(address: str) -> DataSource:
        with lock:
            source = sources.get(address)
            if source is None:
                if settings.source == "replay":
                    from scaler_service.sources.replay import ReplaySource

                    source = ReplaySource(clock=clock, replay_dir=settings.replay_dir)
                else:
                    from scaler_service.sources.prometheus import PrometheusSource

                    source = PrometheusSource(
                        address,
                        timeout_s=settings.prometheus_timeout_s,
                        max_points_per_query=settings.prometheus_max_points,
                    )
                sources[address] = source
            return source

    return source_for


def opt_out_from_cluster(settings: Settings) -> OptOutReader | None:
    """The opt-out annotation watcher (in a cluster: the service account; else a kubeconfig if there is one).

    None when disabled by settings. Outside a cluster with no kubeconfig the watcher is disabled and nobody
    is opted out (it says so in the log).
    """
    if not settings.kube_annotations:
        return None
    from scaler_service.kube import AnnotationWatcher

    try:
        return AnnotationWatcher.from_environment()
    except Exception as exc:
        log.warning("opt-out annotations not read: cannot configure the Kubernetes client", error=str(exc))
        return None


def _read(path: Any) -> bytes:
    with open(path, "rb") as fh:
        return fh.read()


class ScalerServer:
    """The whole service. ``start()`` binds the ports (0 = any free one); ``stop()`` shuts down gracefully."""

    def __init__(
        self,
        settings: Settings,
        *,
        registry: CollectorRegistry | None = None,
        source_for: Callable[[str], DataSource] | None = None,
        fit_factory: FitFactory | None = None,
        opt_out: OptOutReader | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self._clock = clock
        self._opt_out = opt_out
        self.registry = registry if registry is not None else CollectorRegistry()
        self.metrics = ScalerMetrics(self.registry)
        self.cache = ModelCache(
            CacheSettings(
                max_entries=settings.cache_max_entries,
                max_bytes=settings.cache_max_bytes,
                refit_interval_s=settings.refit_interval_s,
                max_concurrent_fits=settings.max_concurrent_fits,
                persist_dir=settings.persist_dir,
            ),
            clock=clock,
            on_fit=self._on_fit,
        )
        self.engine = SeriesEngine(
            source_for=source_for if source_for is not None else make_source_for(settings, clock),
            cache=self.cache,
            fit_factory=fit_factory
            if fit_factory is not None
            else default_fit_factory(clock, max_points_per_fit=settings.max_points_per_fit),
            settings=EngineSettings(
                fetch_interval_s=settings.fetch_interval_s,
                idle_drop_s=settings.idle_drop_s,
                subscription_idle_s=settings.subscription_idle,
                max_series=settings.max_series,
                max_subscriptions=settings.max_subscriptions,
                fetch_deadline_s=settings.fetch_deadline,
                fetch_workers=settings.fetch_workers,
                default_refit_interval_s=settings.refit_interval_s,
                records_dir=settings.records_dir,
                live_window_s=settings.live_window_s,
            ),
            opt_out=opt_out,
            clock=clock,
        )
        self.registry.register(
            EngineCollector(
                self.engine,
                self.cache,
                cache_bytes=lambda: int(self.cache.stats().bytes),
                clock=clock,
                max_subscriptions=settings.metrics_max_subscriptions,
            )
        )
        self.parser = TriggerParser(
            default_address=settings.default_address,
            allowed_addresses=settings.allowed_addresses,
            ignore_address=settings.source == "replay",
            max_points_per_fit=settings.max_points_per_fit,
        )
        self.servicer = ExternalScalerServicer(
            parser=self.parser,
            engine=self.engine,
            metrics=self.metrics,
            max_streams=max(1, settings.grpc_workers // 2),
        )
        self.health = health.HealthServicer()
        self._grpc: grpc.Server | None = None
        self._http: BoundedHttpServer | None = None
        self._serving = False
        self._stopped = threading.Event()
        self.grpc_port = 0
        self.http_port = 0

    def _on_fit(self, outcome: FitOutcome) -> None:
        self.metrics.fits.labels(outcome="ok" if outcome.ok else "failed").inc()
        self.metrics.fit_seconds.observe(outcome.duration_s)
        if outcome.ok:
            log.info(
                "model fitted",
                series=outcome.key,
                duration_s=round(outcome.duration_s, 3),
                model=None if outcome.model is None else outcome.model.name,
                confidence=None if outcome.model is None else round(outcome.model.confidence, 3),
            )
        else:
            log.warning("fit failed", series=outcome.key, error=outcome.error)

    def start(self) -> None:
        s = self.settings
        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=s.grpc_workers, thread_name_prefix="grpc"),
            options=[("grpc.so_reuseport", 0)],
        )
        pb_grpc.add_ExternalScalerServicer_to_server(self.servicer, server)  # type: ignore[no-untyped-call]
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        reflection.enable_server_reflection(
            (
                SERVICE_NAME,
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                reflection.SERVICE_NAME,
            ),
            server,
        )
        address = f"{s.bind_address}:{s.grpc_port}"
        if s.tls_cert is not None and s.tls_key is not None:
            client_ca = None if s.tls_client_ca is None else _read(s.tls_client_ca)
            credentials = grpc.ssl_server_credentials(
                [(_read(s.tls_key), _read(s.tls_cert))],
                root_certificates=client_ca,
                require_client_auth=client_ca is not None,
            )
            self.grpc_port = server.add_secure_port(address, credentials)
        else:
            self.grpc_port = server.add_insecure_port(address)
        if self.grpc_port == 0:
            raise OSError(f"cannot bind gRPC to {address}")
        self.cache.start()
        self.engine.start()
        server.start()
        self._grpc = server
        routes = api_routes(
            registry=self.registry,
            engine=self.engine,
            cache=self.cache,
            healthy=lambda: self._serving,
            clock=self._clock,
            max_points_per_fit=s.max_points_per_fit,
        )
        self._http = BoundedHttpServer(s.http_bind_address or s.bind_address, s.http_port, routes)
        self._http.start()
        self.http_port = self._http.port
        self._serving = True
        for name in ("", SERVICE_NAME):
            self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        log.info(
            "scaler serving",
            grpc_port=self.grpc_port,
            http_port=self.http_port,
            source=s.source,
            tls=s.tls_enabled,
            mutual_tls=s.tls_client_ca is not None,
        )

    def stop(self, grace_s: float | None = None) -> None:
        """Graceful: NOT_SERVING, end streams, refuse new calls, let in-flight calls finish, stop loops.

        Returns within about ``grace`` seconds whatever a fetch or a fit is doing: their threads are daemons,
        left behind when the grace period is over.
        """
        if self._stopped.is_set():
            return
        grace = self.settings.grace_period_s if grace_s is None else grace_s
        # The HTTP server and the process exit need a moment after the loops: keep it inside the grace period.
        deadline = time.monotonic() + grace - min(1.0, grace / 2)
        self._serving = False
        self.health.enter_graceful_shutdown()
        self.servicer.shutdown()
        if self._grpc is not None:
            remaining = max(0.0, deadline - time.monotonic())
            self._grpc.stop(remaining).wait(remaining + 0.1)
        self.engine.stop(timeout=max(0.0, deadline - time.monotonic()))
        self.cache.stop(timeout=max(0.0, deadline - time.monotonic()))
        stop_watcher = getattr(self._opt_out, "stop", None)
        if callable(stop_watcher):
            stop_watcher()
        if self._http is not None:
            self._http.stop()
        self._stopped.set()
        log.info("scaler stopped")

    def wait(self, timeout: float | None = None) -> bool:
        return self._stopped.wait(timeout)


__all__ = ["SERVICE_NAME", "ScalerServer", "make_source_for"]
