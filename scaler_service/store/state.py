"""The shared state of one series: what the replica that fetched it last hands to the next one and to mirrors.

Everything a fetch changes (recent observations, forecast-vs-actual pairs, the latency breakers, the failure
count) travels as one small JSON document, so whichever replica claims the next fetch continues from exactly
where the previous one stopped, and every replica rebuilds the same serving snapshot from it. Decoding checks
types and bounds: the store is ours, but a document from an older build or a damaged key must not crash a
replica (it is ignored with a warning and the replica keeps its own state).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

STATE_FORMAT = "foresight.series-state"
STATE_VERSION = 1
MAX_POINTS = 4096
"""More observations or pairs than this in one document is a damaged document, not a series."""
MAX_TEXT = 2048


class StateFormatError(ValueError):
    """A stored series state cannot be read by this build."""


@dataclass(frozen=True, slots=True)
class SharedBreaker:
    query: str
    slo: float
    open: bool = False
    latency: float | None = None
    latency_ts: float | None = None
    since: float | None = None
    error: str | None = None
    events: tuple[tuple[float, bool, float], ...] = ()
    """(at, opened, latency) of recent openings and closings."""


@dataclass(frozen=True, slots=True)
class SeriesState:
    """One series after a fetch. ``error_kind`` is ``unavailable`` or ``query`` (the source error's class)."""

    last_fetch_at: float | None = None
    latest: tuple[float, float] | None = None
    obs: Mapping[int, float] = field(default_factory=dict)
    """Recent observations by grid index (timestamp // step)."""
    seeded: bool = False
    compared: Mapping[int, tuple[float, float]] = field(default_factory=dict)
    """(forecast, actual) by grid index, judged with the model of ``model_generation``."""
    model_generation: int = 0
    failures: int = 0
    error_kind: str | None = None
    error: str | None = None
    error_since: float | None = None
    last_refit_request: float | None = None
    breakers: tuple[SharedBreaker, ...] = ()


def _num(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def encode_state(state: SeriesState) -> str:
    obs = sorted(state.obs.items())
    compared = sorted(state.compared.items())
    doc: dict[str, Any] = {
        "format": STATE_FORMAT,
        "version": STATE_VERSION,
        "last_fetch_at": state.last_fetch_at,
        "latest": None if state.latest is None else [state.latest[0], _num(state.latest[1])],
        "obs_i": [i for i, _ in obs],
        "obs_v": [_num(v) for _, v in obs],
        "seeded": state.seeded,
        "cmp_i": [i for i, _ in compared],
        "cmp_f": [f for _, (f, _a) in compared],
        "cmp_a": [a for _, (_f, a) in compared],
        "model_generation": state.model_generation,
        "failures": state.failures,
        "error_kind": state.error_kind,
        "error": None if state.error is None else state.error[:MAX_TEXT],
        "error_since": state.error_since,
        "last_refit_request": _num(state.last_refit_request),
        "breakers": [
            {
                "query": b.query,
                "slo": b.slo,
                "open": b.open,
                "latency": _num(b.latency),
                "latency_ts": b.latency_ts,
                "since": b.since,
                "error": b.error,
                "events": [list(e) for e in b.events],
            }
            for b in state.breakers
        ],
    }
    return json.dumps(doc, separators=(",", ":"))


def _opt_float(doc: Mapping[str, Any], key: str) -> float | None:
    value = doc.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise StateFormatError(f"{key}: expected a number or null, got {type(value).__name__}")
    return float(value)


def _list(doc: Mapping[str, Any], key: str) -> list[Any]:
    value = doc.get(key, [])
    if not isinstance(value, list):
        raise StateFormatError(f"{key}: expected a list, got {type(value).__name__}")
    if len(value) > MAX_POINTS:
        raise StateFormatError(f"{key}: {len(value)} items, more than {MAX_POINTS}")
    return value


def _floats(values: list[Any], key: str) -> list[float]:
    out: list[float] = []
    for v in values:
        if v is None:
            out.append(math.nan)
        elif isinstance(v, int | float) and not isinstance(v, bool):
            out.append(float(v))
        else:
            raise StateFormatError(f"{key}: expected numbers, got {type(v).__name__}")
    return out


def _ints(values: list[Any], key: str) -> list[int]:
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        raise StateFormatError(f"{key}: expected integers")
    return [int(v) for v in values]


def _text(value: Any, key: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise StateFormatError(f"{key}: expected a string or null")
    return value[:MAX_TEXT]


def decode_state(text: str | bytes) -> SeriesState:
    try:
        doc = json.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise StateFormatError(f"not JSON: {exc}") from None
    if not isinstance(doc, dict) or doc.get("format") != STATE_FORMAT:
        raise StateFormatError("not a foresight series state")
    if doc.get("version") != STATE_VERSION:
        raise StateFormatError(f"series state version {doc.get('version')!r}; this build reads {STATE_VERSION}")
    latest_raw = doc.get("latest")
    latest: tuple[float, float] | None = None
    if latest_raw is not None:
        if not isinstance(latest_raw, list) or len(latest_raw) != 2:
            raise StateFormatError("latest: expected [timestamp, value] or null")
        ts, value = _floats(latest_raw, "latest")
        latest = (ts, value)
    obs_i = _ints(_list(doc, "obs_i"), "obs_i")
    obs_v = _floats(_list(doc, "obs_v"), "obs_v")
    cmp_i = _ints(_list(doc, "cmp_i"), "cmp_i")
    cmp_f = _floats(_list(doc, "cmp_f"), "cmp_f")
    cmp_a = _floats(_list(doc, "cmp_a"), "cmp_a")
    if len(obs_i) != len(obs_v) or not len(cmp_i) == len(cmp_f) == len(cmp_a):
        raise StateFormatError("observation or comparison lists differ in length")
    breakers: list[SharedBreaker] = []
    for raw in _list(doc, "breakers"):
        if not isinstance(raw, dict) or not isinstance(raw.get("query"), str):
            raise StateFormatError("breakers: expected objects with a query")
        slo = _opt_float(raw, "slo")
        if slo is None:
            raise StateFormatError("breakers: slo missing")
        events: list[tuple[float, bool, float]] = []
        for e in _list(raw, "events")[-20:]:
            if not isinstance(e, list) or len(e) != 3:
                raise StateFormatError("breakers.events: expected [at, opened, latency]")
            at, latency = _floats([e[0], e[2]], "breakers.events")
            events.append((at, bool(e[1]), latency))
        breakers.append(
            SharedBreaker(
                query=raw["query"][:MAX_TEXT],
                slo=slo,
                open=bool(raw.get("open", False)),
                latency=_opt_float(raw, "latency"),
                latency_ts=_opt_float(raw, "latency_ts"),
                since=_opt_float(raw, "since"),
                error=_text(raw.get("error"), "breakers.error"),
                events=tuple(events),
            )
        )
    generation = doc.get("model_generation", 0)
    failures = doc.get("failures", 0)
    if not isinstance(generation, int) or not isinstance(failures, int):
        raise StateFormatError("model_generation and failures: expected integers")
    kind = _text(doc.get("error_kind"), "error_kind")
    if kind not in (None, "unavailable", "query"):
        raise StateFormatError(f"error_kind: {kind!r} is not unavailable or query")
    return SeriesState(
        last_fetch_at=_opt_float(doc, "last_fetch_at"),
        latest=latest,
        obs=dict(zip(obs_i, obs_v, strict=True)),
        seeded=bool(doc.get("seeded", False)),
        compared={i: (f, a) for i, f, a in zip(cmp_i, cmp_f, cmp_a, strict=True)},
        model_generation=generation,
        failures=failures,
        error_kind=kind,
        error=_text(doc.get("error"), "error"),
        error_since=_opt_float(doc, "error_since"),
        last_refit_request=_opt_float(doc, "last_refit_request"),
        breakers=tuple(breakers),
    )


__all__ = ["SeriesState", "SharedBreaker", "StateFormatError", "decode_state", "encode_state"]
