"""KEDA's ExternalScaler service: thin handlers over the trigger parser and the series engine.

Status codes: bad metadata -> INVALID_ARGUMENT (naming the key); stale data, an unreachable source, or no
observation yet -> UNAVAILABLE; a query that returns several series, none, or no number ->
FAILED_PRECONDITION.
Any error makes KEDA count a failed fetch, so its ``fallback`` engages. GetMetricSpec depends on the metadata
only, never on a model or a source (KEDA issue #8056).
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, NoReturn

import grpc
import structlog

from scaler_service._generated import externalscaler_pb2 as pb
from scaler_service._generated import externalscaler_pb2_grpc as pb_grpc
from scaler_service.decision import ServedValue
from scaler_service.engine import CapacityExceeded, NoData, SeriesEngine, Stale, SubscriptionKey
from scaler_service.metrics import ScalerMetrics
from scaler_service.sources.base import QueryError, SourceError, SourceUnavailable
from scaler_service.trigger import TriggerError, TriggerParser, TriggerSpec, metric_name

log = structlog.get_logger(__name__)

DEADLINE_MARGIN_S = 0.2
STREAM_POLL_S = 1.0


def _status_for(exc: Exception) -> tuple[grpc.StatusCode, str]:
    if isinstance(exc, TriggerError):
        return grpc.StatusCode.INVALID_ARGUMENT, f"invalid trigger metadata: {exc}"
    if isinstance(exc, CapacityExceeded):
        return grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc)
    if isinstance(exc, Stale):
        return grpc.StatusCode.UNAVAILABLE, f"stale data: {exc}"
    if isinstance(exc, SourceUnavailable):
        return grpc.StatusCode.UNAVAILABLE, f"data source unavailable: {exc}"
    if isinstance(exc, QueryError | NoData):
        return grpc.StatusCode.FAILED_PRECONDITION, f"query problem: {exc}"
    if isinstance(exc, SourceError):
        return grpc.StatusCode.UNAVAILABLE, f"data source error: {exc}"
    return grpc.StatusCode.INTERNAL, f"internal error: {type(exc).__name__}: {exc}"


@contextlib.contextmanager
def bound_scaled_object(namespace: str, name: str) -> Iterator[None]:
    """structlog context for the call: every log line of the handler names the ScaledObject.

    bind + reset by token: half the cost of ``structlog.contextvars.bound_contextvars`` on the hot path.
    """
    tokens = structlog.contextvars.bind_contextvars(namespace=namespace, name=name)
    try:
        yield
    finally:
        structlog.contextvars.reset_contextvars(**tokens)


def finite_non_negative(value: float) -> float:
    return value if math.isfinite(value) and value > 0 else 0.0


class ServicerCore:
    """What both gRPC servers share: parsing, serving, the responses, and how a refusal is counted and logged.

    The sync servicer (below) and the aio one (``aio_servicer.py``) only differ in how they wait and abort.
    """

    def __init__(
        self,
        *,
        parser: TriggerParser,
        engine: SeriesEngine,
        metrics: ScalerMetrics,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._parser = parser
        self._engine = engine
        self._metrics = metrics
        self._clock = clock
        # Pre-bound histogram children: labels() takes a lock and a dict lookup on every call.
        self._seconds = {m: metrics.rpc_seconds.labels(method=m) for m in ("GetMetricSpec", "GetMetrics", "IsActive")}

    def _spec(self, ref: Any) -> TriggerSpec:
        return self._parser.parse(dict(ref.scalerMetadata))

    def _refusal(self, method: str, exc: Exception) -> tuple[grpc.StatusCode, str]:
        """The status for ``exc``, counted and logged (the caller aborts with it)."""
        code, message = _status_for(exc)
        self._metrics.rpc_errors.labels(method=method, code=code.name).inc()
        if isinstance(exc, CapacityExceeded):
            self._metrics.series_refused.labels(reason=exc.setting.lstrip("-").replace("-", "_")).inc()
        if code is grpc.StatusCode.INTERNAL:
            log.exception("handler failed", method=method)
        else:
            log.info("request refused", method=method, code=code.name, reason=message)
        return code, message

    def _exhausted(self, method: str, message: str) -> tuple[grpc.StatusCode, str]:
        self._metrics.rpc_errors.labels(method=method, code="RESOURCE_EXHAUSTED").inc()
        log.info("request refused", method=method, code="RESOURCE_EXHAUSTED", reason=message)
        return grpc.StatusCode.RESOURCE_EXHAUSTED, message

    @staticmethod
    def _sub_key(ref: Any, spec: TriggerSpec) -> SubscriptionKey:
        return SubscriptionKey(ref.namespace, ref.name, metric_name(ref.namespace, ref.name, spec.query))

    @staticmethod
    def _max_wait(context: grpc.ServicerContext | grpc.aio.ServicerContext) -> float | None:
        """How long a brand-new series' first fetch may be waited for: within the call's deadline, at most 2 s."""
        remaining = context.time_remaining()
        return None if remaining is None else max(0.0, min(remaining - DEADLINE_MARGIN_S, 2.0))

    @staticmethod
    def _metric_spec_response(request: Any, spec: TriggerSpec) -> Any:
        name = metric_name(request.namespace, request.name, spec.query)
        return pb.GetMetricSpecResponse(
            metricSpecs=[pb.MetricSpec(metricName=name, targetSize=spec.target_size, targetSizeFloat=spec.threshold)]
        )

    @staticmethod
    def _metrics_response(request: Any, spec: TriggerSpec, served: ServedValue) -> Any:
        ref = request.scaledObjectRef
        value = finite_non_negative(served.value)
        name = request.metricName or metric_name(ref.namespace, ref.name, spec.query)
        return pb.GetMetricsResponse(
            metricValues=[pb.MetricValue(metricName=name, metricValue=round(value), metricValueFloat=value)]
        )

    @staticmethod
    def is_active(spec: TriggerSpec, served: ServedValue) -> bool:
        return finite_non_negative(served.value) > spec.activation_threshold


class ExternalScalerServicer(ServicerCore, pb_grpc.ExternalScalerServicer):  # type: ignore[misc]
    """For the sync server (``grpc_server: sync``): each call, and each open stream, holds a pool thread."""

    def __init__(
        self,
        *,
        parser: TriggerParser,
        engine: SeriesEngine,
        metrics: ScalerMetrics,
        max_streams: int = 8,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(parser=parser, engine=engine, metrics=metrics, clock=clock)
        self._shutdown = threading.Event()
        self._streams = threading.BoundedSemaphore(max(1, max_streams))
        self._max_streams = max_streams

    def shutdown(self) -> None:
        """End open streams (called on SIGTERM before the server stops)."""
        self._shutdown.set()

    # --- helpers ----------------------------------------------------------------------------------

    def _abort(self, context: grpc.ServicerContext, method: str, exc: Exception) -> NoReturn:
        context.abort(*self._refusal(method, exc))
        raise AssertionError("unreachable")  # context.abort raises

    def _served(self, spec: TriggerSpec, ref: Any, context: grpc.ServicerContext) -> ServedValue:
        return self._engine.serve(spec, self._sub_key(ref, spec), max_wait_s=self._max_wait(context))

    # --- RPCs -------------------------------------------------------------------------------------

    def GetMetricSpec(self, request: Any, context: grpc.ServicerContext) -> Any:
        started = self._clock()
        with bound_scaled_object(request.namespace, request.name):
            try:
                spec = self._spec(request)
            except TriggerError as exc:
                self._abort(context, "GetMetricSpec", exc)
            response = self._metric_spec_response(request, spec)
        self._seconds["GetMetricSpec"].observe(self._clock() - started)
        return response

    def GetMetrics(self, request: Any, context: grpc.ServicerContext) -> Any:
        started = self._clock()
        ref = request.scaledObjectRef
        with bound_scaled_object(ref.namespace, ref.name):
            try:
                spec = self._spec(ref)
                served = self._served(spec, ref, context)
            except Exception as exc:
                self._abort(context, "GetMetrics", exc)
            response = self._metrics_response(request, spec, served)
        self._seconds["GetMetrics"].observe(self._clock() - started)
        return response

    def IsActive(self, request: Any, context: grpc.ServicerContext) -> Any:
        started = self._clock()
        with bound_scaled_object(request.namespace, request.name):
            try:
                spec = self._spec(request)
                served = self._served(spec, request, context)
            except Exception as exc:
                self._abort(context, "IsActive", exc)
            response = pb.IsActiveResponse(result=self.is_active(spec, served))
        self._seconds["IsActive"].observe(self._clock() - started)
        return response

    def StreamIsActive(self, request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        with bound_scaled_object(request.namespace, request.name):
            try:
                spec = self._spec(request)
            except TriggerError as exc:
                self._abort(context, "StreamIsActive", exc)
            # Each open stream holds a handler thread of the sync server: capped so unary calls never starve.
            if not self._streams.acquire(blocking=False):
                context.abort(
                    *self._exhausted(
                        "StreamIsActive",
                        f"at most {self._max_streams} StreamIsActive streams are served at once by the sync "
                        "server; use --grpc-server aio, trigger type `external` (polling) or raise --grpc-workers",
                    )
                )
            self._metrics.open_streams.inc()
            try:
                try:
                    served = self._served(spec, request, context)
                except Exception as exc:
                    self._abort(context, "StreamIsActive", exc)
                active = self.is_active(spec, served)
                yield pb.IsActiveResponse(result=active)
                log.info("stream opened", active=active)
                while context.is_active() and not self._shutdown.wait(STREAM_POLL_S):
                    try:
                        served = self._served(spec, request, context)
                        now_active = self.is_active(spec, served)
                    except Exception as exc:
                        # Keep the stream: polling reports the error to KEDA; the stream resumes on recovery.
                        log.info("stream value unavailable", error=str(exc))
                        now_active = False
                    if now_active and not active:
                        log.info("stream: inactive -> active")
                        yield pb.IsActiveResponse(result=True)
                    active = now_active
                log.info("stream closed", shutdown=self._shutdown.is_set())
            finally:
                self._metrics.open_streams.dec()
                self._streams.release()


__all__ = ["ExternalScalerServicer", "ServicerCore", "bound_scaled_object", "finite_non_negative"]
