"""KEDA's ExternalScaler service on the aio server: the same answers and status codes as the sync servicer.

A unary handler is a memory read and runs inline on the event loop. The one call that may wait, the first
request for a brand-new series, awaits its first fetch (polling the series' snapshot, bounded by the call's
deadline) instead of blocking the loop. Streams cost a coroutine each, and one ticker (``streams.StreamHub``)
re-evaluates them all.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, NoReturn

import grpc
import grpc.aio
import structlog

from scaler_service._generated import externalscaler_pb2 as pb
from scaler_service._generated import externalscaler_pb2_grpc as pb_grpc
from scaler_service.decision import ServedValue
from scaler_service.engine import SeriesEngine, SubscriptionKey
from scaler_service.metrics import ScalerMetrics
from scaler_service.servicer import ServicerCore, bound_scaled_object
from scaler_service.sources.base import SourceUnavailable
from scaler_service.streams import ConnectionAges, StreamHub, awaiting_first_fetch
from scaler_service.trigger import TriggerError, TriggerParser, TriggerSpec

log = structlog.get_logger(__name__)

FIRST_FETCH_MAX_WAIT_S = 2.0
"""Without a deadline, a first request waits this long for the series' first fetch (as the engine's default)."""
FIRST_FETCH_POLL_S = (0.001, 0.05)
"""The first fetch is watched from 1 ms, the pause doubling up to 50 ms: a fast source answers in a few ms."""


class AsyncExternalScalerServicer(ServicerCore, pb_grpc.ExternalScalerServicer):  # type: ignore[misc]
    def __init__(
        self,
        *,
        parser: TriggerParser,
        engine: SeriesEngine,
        metrics: ScalerMetrics,
        hub: StreamHub,
        connections: ConnectionAges,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(parser=parser, engine=engine, metrics=metrics, clock=clock)
        self._hub = hub
        self._connections = connections

    async def _abort(self, context: grpc.aio.ServicerContext[Any, Any], method: str, exc: Exception) -> NoReturn:
        await context.abort(*self._refusal(method, exc))
        raise AssertionError("unreachable")  # context.abort raises

    async def _served(self, spec: TriggerSpec, sub: SubscriptionKey, max_wait_s: float | None) -> ServedValue:
        try:
            return self._engine.serve(spec, sub, max_wait_s=0.0)
        except SourceUnavailable:
            if not awaiting_first_fetch(self._engine.snapshot_for(spec.series_key)):
                raise
        # A brand-new series (now registered: its first fetch runs on the fetch pool): wait for it without
        # blocking the loop, within the call's deadline.
        loop = asyncio.get_running_loop()
        until = loop.time() + (FIRST_FETCH_MAX_WAIT_S if max_wait_s is None else max_wait_s)
        pause, longest = FIRST_FETCH_POLL_S
        while awaiting_first_fetch(self._engine.snapshot_for(spec.series_key)) and loop.time() < until:
            await asyncio.sleep(min(pause, max(0.0, until - loop.time())))
            pause = min(2 * pause, longest)
        return self._engine.serve(spec, sub, max_wait_s=0.0)

    # --- RPCs -------------------------------------------------------------------------------------

    async def GetMetricSpec(self, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        started = self._clock()
        self._connections.seen(context.peer())
        with bound_scaled_object(request.namespace, request.name):
            try:
                spec = self._spec(request)
            except TriggerError as exc:
                await self._abort(context, "GetMetricSpec", exc)
            response = self._metric_spec_response(request, spec)
        self._seconds["GetMetricSpec"].observe(self._clock() - started)
        return response

    async def GetMetrics(self, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        started = self._clock()
        self._connections.seen(context.peer())
        ref = request.scaledObjectRef
        with bound_scaled_object(ref.namespace, ref.name):
            try:
                spec = self._spec(ref)
                served = await self._served(spec, self._sub_key(ref, spec), self._max_wait(context))
            except Exception as exc:
                await self._abort(context, "GetMetrics", exc)
            response = self._metrics_response(request, spec, served)
        self._seconds["GetMetrics"].observe(self._clock() - started)
        return response

    async def IsActive(self, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        started = self._clock()
        self._connections.seen(context.peer())
        with bound_scaled_object(request.namespace, request.name):
            try:
                spec = self._spec(request)
                served = await self._served(spec, self._sub_key(request, spec), self._max_wait(context))
            except Exception as exc:
                await self._abort(context, "IsActive", exc)
            response = pb.IsActiveResponse(result=self.is_active(spec, served))
        self._seconds["IsActive"].observe(self._clock() - started)
        return response

    async def StreamIsActive(self, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
        # Opening and closing are debug lines: at 10,000 streams recycled with their connections they would be
        # most of the log; transitions and refusals are info.
        with bound_scaled_object(request.namespace, request.name):
            try:
                spec = self._spec(request)
            except TriggerError as exc:
                await self._abort(context, "StreamIsActive", exc)
            sub = self._sub_key(request, spec)
            stream = self._hub.open(spec, sub, self._connections.stream_end(context.peer()))
            if stream is None and self._hub.closing:
                await context.abort(grpc.StatusCode.UNAVAILABLE, "the server is shutting down: reopen the stream")
            if stream is None:
                await context.abort(
                    *self._exhausted(
                        "StreamIsActive",
                        f"at most {self._hub.max_streams} StreamIsActive streams are served at once "
                        "(--max-streams); use trigger type `external` (polling) or more replicas",
                    )
                )
                raise AssertionError("unreachable")
            self._metrics.open_streams.inc()
            reason = "client gone"
            try:
                try:
                    served = await self._served(spec, sub, self._max_wait(context))
                except Exception as exc:
                    reason = "refused"
                    await self._abort(context, "StreamIsActive", exc)
                stream.active = self.is_active(spec, served)
                stream.snapshot = self._engine.snapshot_for(spec.series_key)
                stream.evaluated_at = self._clock()
                yield pb.IsActiveResponse(result=stream.active)
                log.debug("stream opened", active=stream.active)
                while await stream.next_true():
                    yield pb.IsActiveResponse(result=True)
                reason = stream.end_reason or reason
            finally:
                self._hub.close(stream)
                self._metrics.open_streams.dec()
                log.debug("stream closed", reason=reason)


__all__ = ["AsyncExternalScalerServicer"]
