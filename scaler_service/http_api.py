"""The HTTP side port: /metrics (Prometheus text), /forecast (JSON per ScaledObject), /healthz."""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit

import structlog
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from scaler_service.decision import ServedValue
from scaler_service.engine import SeriesEngine, Subscription
from scaler_service.trigger import format_duration

log = structlog.get_logger(__name__)

HISTORY_SHOWN_S = 7200.0
CURVE_BEFORE_S = 3600.0
CURVE_AFTER_S = 3 * 3600.0


class StatusView(Protocol):
    def status(self, key: str) -> Any: ...


def _num(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else round(float(x), 6)


def forecast_view(
    engine: SeriesEngine,
    cache: StatusView,
    *,
    now: float,
    namespace: str | None = None,
    name: str | None = None,
) -> list[dict[str, Any]]:
    """One JSON object per ScaledObject trigger: recent history, curve, model, confidence and the why."""
    out: list[dict[str, Any]] = []
    for sub in sorted(engine.subscriptions(), key=lambda s: (s.key.namespace, s.key.name, s.key.metric)):
        if namespace is not None and sub.key.namespace != namespace:
            continue
        if name is not None and sub.key.name != name:
            continue
        out.append(_one(engine, cache, sub, now))
    return out


def _one(engine: SeriesEngine, cache: StatusView, sub: Subscription, now: float) -> dict[str, Any]:
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


class HttpServer:
    """A stdlib threading HTTP server in a background thread."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        registry: CollectorRegistry,
        engine: SeriesEngine,
        cache: StatusView,
        healthy: Callable[[], bool],
        clock: Callable[[], float] = time.time,
        detail: Callable[[], str] | None = None,
    ) -> None:
        registry_ = registry
        engine_ = engine
        cache_ = cache

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _send(self, code: int, body: bytes, content_type: str) -> None:
                self.send_response(code)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                url = urlsplit(self.path)
                try:
                    if url.path == "/metrics":
                        self._send(200, generate_latest(registry_), CONTENT_TYPE_LATEST)
                    elif url.path == "/healthz":
                        ok = healthy()
                        text = "ok\n" if ok else "shutting down\n"
                        if detail is not None:
                            text += detail() + "\n"
                        self._send(200 if ok else 503, text.encode(), "text/plain")
                    elif url.path == "/forecast":
                        q = parse_qs(url.query)
                        doc = forecast_view(
                            engine_,
                            cache_,
                            now=clock(),
                            namespace=q.get("namespace", [None])[0],
                            name=q.get("name", [None])[0],
                        )
                        body = json.dumps({"scaledObjects": doc}, separators=(",", ":"), allow_nan=False).encode()
                        self._send(200, body, "application/json")
                    else:
                        self._send(404, b"not found: try /metrics, /forecast or /healthz\n", "text/plain")
                except Exception as exc:
                    log.exception("http handler failed", path=url.path)
                    self._send(500, f"internal error: {exc}\n".encode(), "text/plain")

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="http", daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5.0)


__all__ = ["HttpServer", "forecast_view"]
