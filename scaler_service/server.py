"""Assembles and runs the scaler: gRPC (ExternalScaler, health, reflection), HTTP, the engine, the cache."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable

import structlog
from prometheus_client import CollectorRegistry

from forecasting.cache import CacheSettings, FitOutcome, ModelCache
from scaler_service.engine import EngineSettings, FitFactory, OptOutReader, SeriesEngine, default_fit_factory
from scaler_service.grpc_runtime import SERVICE_NAME, AioGrpc, GrpcServer, grpc_server_for
from scaler_service.http_api import api_routes
from scaler_service.http_server import BoundedHttpServer
from scaler_service.metrics import EngineCollector, GrpcConnectionsCollector, ScalerMetrics
from scaler_service.settings import Settings
from scaler_service.sources.base import DataSource
from scaler_service.store.base import SharedStore
from scaler_service.store.memory import MemoryStore
from scaler_service.trigger import TriggerParser

log = structlog.get_logger(__name__)


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
                        auth=settings.prometheus_auth(),
                        max_response_bytes=int(settings.prometheus_max_response_mb * 2**20),
                    )
                sources[address] = source
            return source

    return source_for


def make_store(settings: Settings, clock: Callable[[], float] = time.time) -> SharedStore:
    """The store ``--store`` names: in memory (one replica), or Redis shared by every replica."""
    if settings.store == "memory":
        return MemoryStore()
    from scaler_service.store.address import parse_store_url, read_password
    from scaler_service.store.redis_store import RedisStore

    address = parse_store_url(settings.store)
    password = read_password(settings.redis_password_file, os.environ.get("FORESIGHT_REDIS_PASSWORD"))
    store = RedisStore(
        address,
        password=password,
        lease_s=settings.lease_s,
        outage_grace_s=settings.redis_outage_grace,
        clock=clock,
    )
    if store.ping():
        log.info("shared store reachable", store=address.url, lease_s=settings.lease_s)
    if settings.persist_dir is not None:
        log.warning("--persist-dir ignored: models are kept in the shared store", store=address.url)
    return store


def opt_out_from_cluster(settings: Settings) -> OptOutReader | None:
    """The opt-out annotation watcher (in a cluster: the service account; else a kubeconfig if there is one).

    None when disabled by settings. Outside a cluster with no kubeconfig the watcher is disabled and nobody
    is opted out (it says so in the log).
    """
    if not settings.kube_annotations:
        return None
    from scaler_service.kube import AnnotationWatcher

    try:
        return AnnotationWatcher.from_environment(resync_s=settings.kube_resync)
    except Exception as exc:
        log.warning("opt-out annotations not read: cannot configure the Kubernetes client", error=str(exc))
        return None


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
        self.store = make_store(settings, clock)
        self.cache = ModelCache(
            CacheSettings(
                max_entries=settings.cache_max_entries,
                max_bytes=settings.cache_max_bytes,
                refit_interval_s=settings.refit_interval_s,
                max_concurrent_fits=settings.max_concurrent_fits,
                fit_deadline_s=settings.fit_deadline,
                persist_dir=settings.persist_dir,
            ),
            clock=clock,
            on_fit=self._on_fit,
            store=self.store if self.store.shared else None,
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
            store=self.store,
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
        self.grpc: GrpcServer = grpc_server_for(settings, parser=self.parser, engine=self.engine, metrics=self.metrics)
        if isinstance(self.grpc, AioGrpc):
            self.registry.register(GrpcConnectionsCollector(self.grpc.connections_seen))
        self._http: BoundedHttpServer | None = None
        self._serving = False
        self._stopped = threading.Event()
        self.grpc_port = 0
        self.http_port = 0

    def _on_fit(self, outcome: FitOutcome) -> None:
        self.metrics.fits.labels(outcome="ok" if outcome.ok else "abandoned" if outcome.abandoned else "failed").inc()
        if not outcome.abandoned:  # its duration is only how long it ran before it was given up
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
        self.cache.start()
        self.engine.start()
        self.grpc.start()
        self.grpc_port = self.grpc.port
        routes = api_routes(
            registry=self.registry,
            engine=self.engine,
            cache=self.cache,
            healthy=lambda: self._serving,
            clock=self._clock,
            max_points_per_fit=s.max_points_per_fit,
            detail=(lambda: self.store.describe(self._clock())) if self.store.shared else None,
        )
        self._http = BoundedHttpServer(s.http_bind_address or s.bind_address, s.http_port, routes)
        self._http.start()
        self.http_port = self._http.port
        self._serving = True
        log.info(
            "scaler serving",
            grpc_port=self.grpc_port,
            http_port=self.http_port,
            source=s.source,
            tls=s.tls_enabled,
            mutual_tls=s.tls_client_ca is not None,
            grpc_server=s.grpc_server,
            max_streams=s.max_streams if s.grpc_server == "aio" else max(1, s.grpc_workers // 2),
            max_connection_age=s.max_connection_age,
            max_connection_age_grace=s.max_connection_age_grace,
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
        self.grpc.stop(max(0.0, deadline - time.monotonic()))
        self.engine.stop(timeout=max(0.0, deadline - time.monotonic()))
        self.cache.stop(timeout=max(0.0, deadline - time.monotonic()))
        self.store.close()
        stop_watcher = getattr(self._opt_out, "stop", None)
        if callable(stop_watcher):
            stop_watcher()
        if self._http is not None:
            self._http.stop()
        self._stopped.set()
        log.info("scaler stopped")

    def wait(self, timeout: float | None = None) -> bool:
        return self._stopped.wait(timeout)


__all__ = ["SERVICE_NAME", "ScalerServer", "make_source_for", "make_store"]
