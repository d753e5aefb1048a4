"""The latency circuit breaker: opens when a latency query exceeds its SLO by 20 %, closes when back under it.

:func:`next_breaker_state` is the pure decision (``now`` passed in); :func:`watch_latency` reads the latency
queries of one series through its source and applies it.
"""

from __future__ import annotations

import math
from dataclasses import replace

import structlog

from scaler_service.engine.types import BreakerEvent, BreakerState
from scaler_service.sources.base import DataSource, SourceError

log = structlog.get_logger(__name__)

BREAKER_OPEN_RATIO = 1.2
"""The breaker opens when latency exceeds the SLO by 20 % and closes when it is back under the SLO."""
EVENTS_KEPT = 20


def next_breaker_state(
    state: BreakerState, reading: tuple[float, float] | str | None, slo: float, now: float
) -> tuple[BreakerState, BreakerEvent | None]:
    """The breaker after one reading: ``(timestamp, latency)``, None (no value) or an error message."""
    if isinstance(reading, str):
        return replace(state, error=reading), None
    if reading is None or not math.isfinite(reading[1]):
        return replace(state, error="latency query returned no value"), None
    ts, latency = reading
    new = replace(state, latency=latency, latency_ts=ts, error=None)
    if not state.open and latency > BREAKER_OPEN_RATIO * slo:
        event = BreakerEvent(at=now, opened=True, latency=latency, slo=slo)
        return replace(new, open=True, since=now, events=(*state.events[-(EVENTS_KEPT - 1) :], event)), event
    if state.open and latency < slo:
        event = BreakerEvent(at=now, opened=False, latency=latency, slo=slo)
        return replace(new, open=False, since=now, events=(*state.events[-(EVENTS_KEPT - 1) :], event)), event
    return new, None


def watch_latency(
    series_id: str, source: DataSource, watches: dict[tuple[str, float], BreakerState], now: float
) -> tuple[bool, int]:
    """Read every latency query of a series and update ``watches`` in place: (anything changed, events)."""
    changed = False
    events = 0
    for (query, slo), state in list(watches.items()):
        reading: tuple[float, float] | str | None
        try:
            reading = source.fetch_latest(query, now)
        except SourceError as exc:
            reading = str(exc)
        new, event = next_breaker_state(state, reading, slo, now)
        if event is not None:
            events += 1
            if event.opened:
                log.warning(
                    "circuit breaker opened: latency above 1.2 x SLO, serving the recent peak",
                    series=series_id,
                    latency_query=query,
                    latency=event.latency,
                    slo=slo,
                )
            else:
                log.info(
                    "circuit breaker closed: latency back under the SLO",
                    series=series_id,
                    latency_query=query,
                    latency=event.latency,
                    slo=slo,
                )
        if new != state:
            watches[(query, slo)] = new
            changed = True
    return changed, events


__all__ = ["BREAKER_OPEN_RATIO", "next_breaker_state", "watch_latency"]
