"""The gRPC server of the scaler (ExternalScaler, health, reflection), aio or sync, with TLS and connection age.

``AioGrpc`` (the default) runs a ``grpc.aio`` server on its own event-loop thread: unary handlers are memory
reads run inline, and each open StreamIsActive stream is a coroutine, so thousands of streams cost no thread.
``SyncGrpc`` is the thread-pool server: each call and each open stream holds one of ``grpc_workers`` threads.
Both close client connections after ``max_connection_age`` (GOAWAY, then a grace for what is in flight), so
KEDA's grpc-go client, which re-resolves the headless Service only when a connection drops, spreads its calls
over replicas added since.
"""

from __future__ import annotations

import asyncio
import threading
from concurrent import futures
from pathlib import Path
from typing import Protocol

import grpc
import grpc.aio
import structlog
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from scaler_service._generated import externalscaler_pb2 as pb
from scaler_service._generated import externalscaler_pb2_grpc as pb_grpc
from scaler_service.aio_servicer import AsyncExternalScalerServicer
from scaler_service.engine import SeriesEngine
from scaler_service.metrics import ScalerMetrics
from scaler_service.servicer import ExternalScalerServicer, ServicerCore
from scaler_service.settings import Settings
from scaler_service.streams import ConnectionAges, StreamHub
from scaler_service.trigger import TriggerParser

log = structlog.get_logger(__name__)

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["ExternalScaler"].full_name
HEALTH_SERVICE_NAME = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name


def grpc_options(settings: Settings) -> list[tuple[str, int]]:
    # Calls that arrived but were not yet taken by the application: gRPC core cancels new calls beyond about
    # 1,000 of them, which a burst of stream opens (KEDA opening every ScaledObject's stream after a restart)
    # reaches at once. Room for every allowed stream plus the unary traffic.
    pending = max(3000, settings.max_streams + 2000)
    options = [
        ("grpc.so_reuseport", 0),
        ("grpc.server.max_pending_requests", pending),
        ("grpc.server.max_pending_requests_hard_limit", pending),
    ]
    if settings.max_connection_age > 0:
        options += [
            ("grpc.max_connection_age_ms", round(settings.max_connection_age * 1000)),
            ("grpc.max_connection_age_grace_ms", round(settings.max_connection_age_grace * 1000)),
        ]
    return options


def _read(path: Path) -> bytes:
    return path.read_bytes()


def server_credentials(settings: Settings) -> grpc.ServerCredentials | None:
    if settings.tls_cert is None or settings.tls_key is None:
        return None
    client_ca = None if settings.tls_client_ca is None else _read(settings.tls_client_ca)
    return grpc.ssl_server_credentials(
        [(_read(settings.tls_key), _read(settings.tls_cert))],
        root_certificates=client_ca,
        require_client_auth=client_ca is not None,
    )


def _bind(server: grpc.Server | grpc.aio.Server, settings: Settings) -> int:
    address = f"{settings.bind_address}:{settings.grpc_port}"
    credentials = server_credentials(settings)
    port: int = (
        server.add_insecure_port(address) if credentials is None else server.add_secure_port(address, credentials)
    )
    if port == 0:
        raise OSError(f"cannot bind gRPC to {address}")
    return port


def _reflect(server: grpc.Server | grpc.aio.Server) -> None:
    reflection.enable_server_reflection((SERVICE_NAME, HEALTH_SERVICE_NAME, reflection.SERVICE_NAME), server)


class GrpcServer(Protocol):
    port: int

    def start(self) -> None: ...

    def stop(self, grace_s: float) -> None:
        """NOT_SERVING in health, end streams cleanly, refuse new calls, let in-flight calls finish."""
        ...

    def open_streams(self) -> int: ...

    def connections_seen(self) -> int: ...


class SyncGrpc:
    def __init__(
        self, settings: Settings, *, parser: TriggerParser, engine: SeriesEngine, metrics: ScalerMetrics
    ) -> None:
        self._settings = settings
        self._servicer = ExternalScalerServicer(
            parser=parser, engine=engine, metrics=metrics, max_streams=max(1, settings.grpc_workers // 2)
        )
        self._health = health.HealthServicer()
        self._server: grpc.Server | None = None
        self.port = 0

    def start(self) -> None:
        s = self._settings
        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=s.grpc_workers, thread_name_prefix="grpc"),
            options=grpc_options(s),
        )
        pb_grpc.add_ExternalScalerServicer_to_server(self._servicer, server)  # type: ignore[no-untyped-call]
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        _reflect(server)
        self.port = _bind(server, s)
        server.start()
        self._server = server
        for name in ("", SERVICE_NAME):
            self._health.set(name, health_pb2.HealthCheckResponse.SERVING)

    def stop(self, grace_s: float) -> None:
        self._health.enter_graceful_shutdown()
        self._servicer.shutdown()
        if self._server is not None:
            self._server.stop(grace_s).wait(grace_s + 0.1)

    def open_streams(self) -> int:
        return 0  # counted in foresight_open_streams

    def connections_seen(self) -> int:
        return 0


class AioGrpc:
    """The aio server and its stream ticker, on one event loop in a thread of its own."""

    def __init__(
        self, settings: Settings, *, parser: TriggerParser, engine: SeriesEngine, metrics: ScalerMetrics
    ) -> None:
        self._settings = settings
        self._parser = parser
        self._engine = engine
        self._metrics = metrics
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: grpc.aio.Server | None = None
        self._health: health.aio.HealthServicer | None = None
        self._ticker: asyncio.Task[None] | None = None
        self.connections = ConnectionAges(settings.max_connection_age, settings.max_connection_age_grace)
        self.hub = StreamHub(engine, is_active=ServicerCore.is_active, max_streams=settings.max_streams)
        self.port = 0

    @staticmethod
    def _run_loop(loop: asyncio.AbstractEventLoop) -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    def start(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run_loop, args=(self._loop,), name="grpc-aio", daemon=True)
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(30.0)

    async def _start(self) -> None:
        s = self._settings
        server = grpc.aio.server(options=grpc_options(s))
        servicer = AsyncExternalScalerServicer(
            parser=self._parser, engine=self._engine, metrics=self._metrics, hub=self.hub, connections=self.connections
        )
        pb_grpc.add_ExternalScalerServicer_to_server(servicer, server)  # type: ignore[no-untyped-call]
        self._health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        _reflect(server)
        self.port = _bind(server, s)
        await server.start()
        self._server = server
        self._ticker = asyncio.get_running_loop().create_task(self.hub.run(on_tick=self.connections.prune))
        for name in ("", SERVICE_NAME):
            await self._health.set(name, health_pb2.HealthCheckResponse.SERVING)

    def stop(self, grace_s: float) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None or not thread.is_alive():
            return
        try:
            asyncio.run_coroutine_threadsafe(self._stop(grace_s), loop).result(grace_s + 0.5)
        except TimeoutError:
            log.warning("the gRPC server did not stop within its grace period", grace_s=grace_s)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(1.0)

    async def _stop(self, grace_s: float) -> None:
        if self._health is not None:
            await self._health.enter_graceful_shutdown()
        self.hub.end_all("server stopping")
        if self._server is not None:
            await self._server.stop(grace_s)
        if self._ticker is not None:
            self._ticker.cancel()
            await asyncio.gather(self._ticker, return_exceptions=True)

    def open_streams(self) -> int:
        return len(self.hub)

    def connections_seen(self) -> int:
        return self.connections.connections_seen


def grpc_server_for(
    settings: Settings, *, parser: TriggerParser, engine: SeriesEngine, metrics: ScalerMetrics
) -> GrpcServer:
    kind = AioGrpc if settings.grpc_server == "aio" else SyncGrpc
    return kind(settings, parser=parser, engine=engine, metrics=metrics)


__all__ = ["SERVICE_NAME", "AioGrpc", "GrpcServer", "SyncGrpc", "grpc_options", "grpc_server_for"]
