"""Open StreamIsActive streams of the aio server: one shared ticker for all of them, and when each must end.

KEDA's ``external-push`` opens one stream per ScaledObject and acts on ``true`` only (each resets the cooldown
clock), so a stream sends the current state, then only inactive -> active transitions. Thousands of streams
cost no thread: each is a coroutine waiting on its own event, and one ticker re-evaluates them on the event
loop. Evaluating is a memory read, and it is skipped when nothing can have changed: a stream is re-evaluated
when its series' snapshot changed (a fetch landed: seen within one tick) or every ``reevaluate_s`` (the
forecast moves with the clock, and a refitted model is picked up), which keeps the series followed too.

Connections are closed after ``max_connection_age`` (a GOAWAY, then ``grace`` for what is in flight). A stream
would be cut by that close, so each stream ends cleanly (status OK) before its connection's earliest possible
close; KEDA reopens it, on a new connection once the GOAWAY came.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import structlog

from scaler_service.decision import ServedValue
from scaler_service.engine import SeriesEngine, SeriesSnapshot, SubscriptionKey
from scaler_service.trigger import SeriesKey, TriggerSpec

log = structlog.get_logger(__name__)

TICK_S = 1.0
REEVALUATE_S = 30.0
"""At most this long between evaluations of a stream whose series did not change: the forecast moves with the
clock at its step (minutes) and a refitted model lands hourly, so KEDA's own polling interval (30 s) is soon
enough; a new observation is seen within one tick."""
CHUNK = 256
"""Streams evaluated between two yields to the event loop: unary calls wait at most one chunk."""
AGE_JITTER = 0.1
"""gRPC core spreads each connection's max age by +-10 %."""


def awaiting_first_fetch(snapshot: SeriesSnapshot | None) -> bool:
    """True while a series is unknown or its first fetch has not answered yet (then ``serve`` has nothing)."""
    return snapshot is None or (snapshot.latest is None and snapshot.error is None and snapshot.last_fetch_at is None)


class ConnectionAges:
    """When each client connection (by peer address) was first seen, to end its streams before it closes.

    ``seen`` is called on every call: one dict lookup. A peer not seen for longer than a connection can live is
    forgotten (``prune``); a peer address reused after that counts as a new connection.
    """

    def __init__(self, max_age_s: float, grace_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_age_s = max_age_s
        self.grace_s = grace_s
        self._clock = clock
        self._first: dict[str, float] = {}
        self._lifetime = (1 + AGE_JITTER) * max_age_s + grace_s
        self.connections_seen = 0

    def seen(self, peer: str) -> float:
        first = self._first.get(peer)
        if first is None or (self.max_age_s > 0 and self._clock() - first > self._lifetime):
            first = self._clock()
            self._first[peer] = first
            self.connections_seen += 1
        return first

    def stream_end(self, peer: str) -> float | None:
        """When a stream opened now on ``peer`` ends: before the connection's earliest possible close.

        The GOAWAY comes between 0.9 and 1.1 x max age, the close ``grace`` later. A stream opened before
        0.9 x max age ends then (the connection still works: KEDA may reopen on it or on a new one); one opened
        later ends within the earliest grace, and one opened later still before the latest close.
        """
        if self.max_age_s <= 0:
            return None
        first = self.seen(peer)
        now = self._clock()
        earliest_goaway = first + (1 - AGE_JITTER) * self.max_age_s
        for end in (
            earliest_goaway,
            earliest_goaway + 0.8 * self.grace_s,
            first + (1 + AGE_JITTER) * self.max_age_s + 0.8 * self.grace_s,
        ):
            if end > now + 0.5:
                return end
        return now + 0.5

    def prune(self) -> None:
        if self.max_age_s <= 0:
            return
        horizon = self._clock() - self._lifetime - 60.0
        for peer in [p for p, first in self._first.items() if first < horizon]:
            del self._first[peer]

    def __len__(self) -> int:
        return len(self._first)


@dataclass(eq=False, slots=True)
class OpenStream:
    spec: TriggerSpec
    sub_key: SubscriptionKey
    ends_at: float | None
    active: bool = False
    snapshot: SeriesSnapshot | None = None
    evaluated_at: float = -1e18
    unavailable: bool = False
    send_true: bool = False
    end_reason: str | None = None
    wake: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def series_key(self) -> SeriesKey:
        return self.spec.series_key

    def end(self, reason: str) -> None:
        if self.end_reason is None:
            self.end_reason = reason
        self.wake.set()

    async def next_true(self) -> bool:
        """Waits for the next inactive -> active transition (True) or the end of the stream (False)."""
        while True:
            await self.wake.wait()
            self.wake.clear()
            if self.end_reason is not None:
                return False
            if self.send_true:
                self.send_true = False
                return True


class StreamHub:
    """All open streams of one server and the ticker that re-evaluates them (runs on the server's loop)."""

    def __init__(
        self,
        engine: SeriesEngine,
        *,
        is_active: Callable[[TriggerSpec, ServedValue], bool],
        max_streams: int,
        tick_s: float = TICK_S,
        reevaluate_s: float = REEVALUATE_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._engine = engine
        self._is_active = is_active
        self.max_streams = max_streams
        self._tick_s = tick_s
        self._reevaluate_s = reevaluate_s
        self._clock = clock
        self._streams: dict[int, OpenStream] = {}
        self._ids = itertools.count()
        self._closing = False
        self.evaluations = 0

    def __len__(self) -> int:
        return len(self._streams)

    @property
    def closing(self) -> bool:
        return self._closing

    def open(self, spec: TriggerSpec, sub_key: SubscriptionKey, ends_at: float | None) -> OpenStream | None:
        """A slot for a new stream, or None when ``max_streams`` are open (or the server is stopping)."""
        if self._closing or len(self._streams) >= self.max_streams:
            return None
        stream = OpenStream(spec=spec, sub_key=sub_key, ends_at=ends_at)
        self._streams[id(stream)] = stream
        return stream

    def close(self, stream: OpenStream) -> None:
        self._streams.pop(id(stream), None)

    def end_all(self, reason: str) -> None:
        """Ends every open stream cleanly and refuses new ones (shutdown)."""
        self._closing = True
        for stream in list(self._streams.values()):
            stream.end(reason)

    def evaluate(self, stream: OpenStream, now: float) -> None:
        """Re-read what the stream's subscription serves; flag an inactive -> active transition."""
        self.evaluations += 1
        try:
            served = self._engine.serve(stream.spec, stream.sub_key, max_wait_s=0.0)
            active = self._is_active(stream.spec, served)
            if stream.unavailable:
                stream.unavailable = False
                log.info("stream value available again", namespace=stream.sub_key.namespace, name=stream.sub_key.name)
        except Exception as exc:
            # Keep the stream: polling reports the error to KEDA; the stream resumes on recovery.
            if not stream.unavailable:
                stream.unavailable = True
                log.info(
                    "stream value unavailable",
                    namespace=stream.sub_key.namespace,
                    name=stream.sub_key.name,
                    error=str(exc)[:200],
                )
            active = False
        if active and not stream.active:
            log.info("stream: inactive -> active", namespace=stream.sub_key.namespace, name=stream.sub_key.name)
            stream.send_true = True
            stream.wake.set()
        stream.active = active
        stream.snapshot = self._engine.snapshot_for(stream.series_key)
        stream.evaluated_at = now

    async def tick(self) -> None:
        now = self._clock()
        for i, stream in enumerate(list(self._streams.values())):
            if i and i % CHUNK == 0:
                await asyncio.sleep(0)
                now = self._clock()
            if stream.end_reason is not None:
                continue
            if stream.ends_at is not None and now >= stream.ends_at:
                stream.end("connection max age")
                continue
            if (
                now - stream.evaluated_at >= self._reevaluate_s
                or self._engine.snapshot_for(stream.series_key) is not stream.snapshot
            ):
                self.evaluate(stream, now)

    async def run(self, on_tick: Callable[[], None] | None = None) -> None:
        """The ticker: until cancelled."""
        while True:
            started = self._clock()
            try:
                await self.tick()
                if on_tick is not None:
                    on_tick()
            except Exception:
                log.exception("stream ticker failed; it keeps running")
            await asyncio.sleep(max(0.05, self._tick_s - (self._clock() - started)))


__all__ = ["ConnectionAges", "OpenStream", "StreamHub", "awaiting_first_fetch"]
