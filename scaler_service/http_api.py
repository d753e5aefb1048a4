"""The routes of the HTTP side port: /metrics (Prometheus text), /forecast (JSON per ScaledObject), /healthz.

``/forecast`` is filtered (``namespace``, ``name``) and paginated: ``limit`` (default 50, at most 500) items
per page in (namespace, name, metric) order, and ``next``, a cursor to pass as ``cursor`` for the following
page (null on the last one), so its size and time are bounded however many ScaledObjects there are.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import time
from collections.abc import Callable
from typing import Any, Protocol
from urllib.parse import urlencode

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from scaler_service.decision import ServedValue
from scaler_service.engine import SeriesEngine, Subscription
from scaler_service.fit_resolution import DEFAULT_MAX_POINTS_PER_FIT, FitTooCoarse, fit_resolution
from scaler_service.http_server import Request, Response, Routes, text
from scaler_service.trigger import format_duration
from scaler_service.web import page as web_page

DEFAULT_PAGE = 50
MAX_PAGE = 500
HISTORY_SHOWN_S = 7200.0
CURVE_BEFORE_S = 3600.0
CURVE_AFTER_S = 3 * 3600.0


class StatusView(Protocol):
    def status(self, key: str) -> Any: ...


def _num(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else round(float(x), 6)


class BadRequest(ValueError):
    """A query parameter is not what it should be (the message says what is accepted)."""


def _sort_key(sub: Subscription) -> tuple[str, str, str]:
    return (sub.key.namespace, sub.key.name, sub.key.metric)


def encode_cursor(key: tuple[str, str, str]) -> str:
    return base64.urlsafe_b64encode(json.dumps(list(key), separators=(",", ":")).encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[str, str, str]:
    try:
        raw = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (ValueError, binascii.Error):
        raise BadRequest("cursor: not a cursor returned as `next` by /forecast") from None
    if not (isinstance(raw, list) and len(raw) == 3 and all(isinstance(x, str) for x in raw)):
        raise BadRequest("cursor: not a cursor returned as `next` by /forecast")
    return raw[0], raw[1], raw[2]


def parse_limit(raw: str | None) -> int:
    if raw is None:
        return DEFAULT_PAGE
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 6) or not 1 <= int(raw) <= MAX_PAGE:
        raise BadRequest(f"limit: must be a whole number from 1 to {MAX_PAGE}")
    return int(raw)


def forecast_page(
    engine: SeriesEngine,
    cache: StatusView,
    *,
    now: float,
    namespace: str | None = None,
    name: str | None = None,
    limit: int = DEFAULT_PAGE,
    after: tuple[str, str, str] | None = None,
    max_points_per_fit: int = DEFAULT_MAX_POINTS_PER_FIT,
) -> dict[str, Any]:
    """One page of :func:`forecast_view`: ``scaledObjects``, ``total`` (matching the filter), ``next``."""
    matching = sorted(
        (
            s
            for s in engine.subscriptions()
            if (namespace is None or s.key.namespace == namespace) and (name is None or s.key.name == name)
        ),
        key=_sort_key,
    )
    start = 0
    if after is not None:
        start = next((i for i, s in enumerate(matching) if _sort_key(s) > after), len(matching))
    page = matching[start : start + limit]
    more = start + limit < len(matching)
    return {
        "scaledObjects": [_one(engine, cache, sub, now, max_points_per_fit) for sub in page],
        "total": len(matching),
        "limit": limit,
        "next": encode_cursor(_sort_key(page[-1])) if more and page else None,
    }


def forecast_view(
    engine: SeriesEngine,
    cache: StatusView,
    *,
    now: float,
    namespace: str | None = None,
    name: str | None = None,
    max_points_per_fit: int = DEFAULT_MAX_POINTS_PER_FIT,
) -> list[dict[str, Any]]:
    """One JSON object per ScaledObject trigger: recent history, curve, model, confidence and the why (all of
    them: for code in the process; the HTTP route serves pages of it)."""
    return [
        _one(engine, cache, sub, now, max_points_per_fit)
        for sub in sorted(engine.subscriptions(), key=_sort_key)
        if (namespace is None or sub.key.namespace == namespace) and (name is None or sub.key.name == name)
    ]


def _fit_view(history_s: float, step_s: float, max_points: int) -> dict[str, Any]:
    try:
        r = fit_resolution(history_s, step_s, max_points)
    except FitTooCoarse as exc:
        return {"refused": str(exc)}
    view: dict[str, Any] = {"step": format_duration(r.step_s), "points": r.points, "coarsened": r.coarsened}
    if r.coarsened:
        view["why"] = (
            f"history read every {format_duration(r.step_s)} instead of every queryStep "
            f"to stay within {max_points} points per fit"
        )
    return view


def _one(
    engine: SeriesEngine, cache: StatusView, sub: Subscription, now: float, max_points_per_fit: int
) -> dict[str, Any]:
    spec = sub.spec
    key = spec.series_key
    snap = engine.snapshot_for(key)
    series_id = key.id
    doc: dict[str, Any] = {
        "namespace": sub.key.namespace,
        "name": sub.key.name,
        "metric": sub.key.metric,
        "series": series_id,
        "query": spec.query,
        "mode": spec.mode.value,
        "threshold": spec.threshold,
        "activation_threshold": spec.activation_threshold,
        "predict_horizon": format_duration(spec.predict_horizon_s),
        "query_step": format_duration(spec.query_step_s),
        "fit": _fit_view(spec.history_window_s, spec.query_step_s, max_points_per_fit),
    }
    decision = engine.preview(sub)
    if isinstance(decision, ServedValue):
        doc["served"] = {
            "value": _num(decision.value),
            "predictive_value": _num(decision.predictive_value),
            "observed": _num(decision.observed),
            "reason": decision.reason.value,
            "why": decision.detail,
            "confidence": _num(decision.confidence),
            "replicas_wanted": math.ceil(decision.value / spec.threshold) if decision.value > 0 else 0,
            "active": decision.value > spec.activation_threshold,
        }
    else:
        doc["served"] = {"error": f"{type(decision).__name__}: {decision}"}
    status = cache.status(series_id)
    if status is not None:
        doc["fitting"] = {
            "fitting": bool(getattr(status, "fitting", False)),
            "last_error": getattr(status, "last_error", None),
            "last_fit_duration_s": _num(getattr(status, "last_fit_duration_s", None)),
            "next_refit_at": _num(getattr(status, "next_refit_at", None)),
            "consecutive_failures": getattr(status, "consecutive_failures", 0),
        }
    if snap is None:
        return doc
    doc["latest"] = None if snap.latest is None else {"timestamp": snap.latest[0], "value": _num(snap.latest[1])}
    doc["fetch_error"] = None if snap.error is None else str(snap.error)
    doc["live"] = {
        "compared": snap.live.compared,
        "wmape": _num(snap.live.wmape),
        "overshoot": _num(snap.live.overshoot),
        "gate_confidence": _num(snap.live.gate_confidence),
        "misses_over_20pct": snap.live.misses_over_20,
        "confidence": _num(snap.live.confidence),
    }
    doc["anchor_factor"] = _num(snap.factor)
    doc["recent_peak_30m"] = _num(snap.recent_peak)
    if snap.recent_start is not None:
        step = spec.query_step_s
        points = [
            [snap.recent_start + i * step, _num(v)]
            for i, v in enumerate(snap.recent.tolist())
            if snap.recent_start + i * step >= now - HISTORY_SHOWN_S
        ]
        doc["history"] = points
    if snap.model is not None:
        m = snap.model
        doc["model"] = {
            "name": m.name,
            "generation": engine.model_generation(key),
            "confidence": _num(m.confidence),
            "over_forecast_confidence": _num(m.over_forecast_confidence),
            "fitted_at": m.fitted_at,
            "age_s": round(now - m.fitted_at, 1),
            "trained_until": m.trained_until,
            "accuracy": {k: _num(v) for k, v in m.accuracy.items()},
            "candidates": {k: _num(v) for k, v in m.candidates.items()},
        }
        curve = m.curve
        lo = max(0, curve.index_at(now - CURVE_BEFORE_S))
        hi = min(len(curve), curve.index_at(now + CURVE_AFTER_S) + 1)
        ts = curve.timestamps()
        doc["curve"] = [
            [
                float(ts[i]),
                _num(curve.point[i] * snap.factor),
                _num(curve.lower[i] * snap.factor),
                _num(curve.upper[i] * snap.factor),
            ]
            for i in range(lo, hi)
        ]
    else:
        doc["model"] = None
    doc["breakers"] = [
        {
            "latency_query": q,
            "slo": slo,
            "open": b.open,
            "latency": _num(b.latency),
            "error": b.error,
            "events": [{"at": e.at, "opened": e.opened, "latency": e.latency} for e in b.events],
        }
        for (q, slo), b in snap.breakers.items()
    ]
    doc["observe_records"] = len(engine.records(sub.key))
    return doc


def api_routes(
    *,
    registry: CollectorRegistry,
    engine: SeriesEngine,
    cache: StatusView,
    healthy: Callable[[], bool],
    clock: Callable[[], float] = time.time,
    max_points_per_fit: int = DEFAULT_MAX_POINTS_PER_FIT,
    detail: Callable[[], str] | None = None,
) -> dict[str, Callable[[Request], Response]]:
    """The side port's routes (see :mod:`scaler_service.http_server` for the table's form)."""

    def metrics(_: Request) -> Response:
        return Response(200, generate_latest(registry), CONTENT_TYPE_LATEST)

    def healthz(_: Request) -> Response:
        ok = healthy()
        body = "ok\n" if ok else "shutting down\n"
        if detail is not None:
            body += detail() + "\n"  # e.g. whether the shared store is reachable
        return text(200 if ok else 503, body)

    def forecast(request: Request) -> Response:
        q = request.query
        try:
            limit = parse_limit(q.get("limit"))
            after = None if not q.get("cursor") else decode_cursor(q["cursor"])
        except BadRequest as exc:
            return text(400, f"{exc}\n")
        doc = forecast_page(
            engine,
            cache,
            now=clock(),
            namespace=q.get("namespace") or None,
            name=q.get("name") or None,
            limit=limit,
            after=after,
            max_points_per_fit=max_points_per_fit,
        )
        body = json.dumps(doc, separators=(",", ":"), allow_nan=False).encode()
        return Response(200, body, "application/json")

    def live_view(request: Request) -> Response:
        page = web_page.respond(engine, cache, forecast_view, request.path, urlencode(request.query), now=clock())
        if page is None:
            return text(404, "not found: try /, /metrics, /forecast or /healthz\n")
        return Response(page.status, page.body, page.content_type, dict(page.headers))

    return {
        "/metrics": metrics,
        "/healthz": healthz,
        "/forecast": forecast,
        "/": live_view,
        web_page.OBJECT_PREFIX + "*": live_view,
    }


__all__ = ["DEFAULT_PAGE", "MAX_PAGE", "Routes", "api_routes", "forecast_page", "forecast_view"]
