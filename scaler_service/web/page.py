"""The live view on the HTTP port: ``/`` lists the ScaledObjects, ``/scaledobjects/<ns>/<name>`` shows one.

Plain server-rendered HTML and SVG built from the same view as ``/forecast`` (:func:`forecast_view`): no
JavaScript, no CDN, nothing to build. Names, queries and error texts come from ScaledObjects (anyone who can
create one in the cluster), so every string is HTML-escaped, and the Content-Security-Policy allows nothing
but the page's own stylesheet (by hash) and links back to this server.
"""

from __future__ import annotations

import base64
import hashlib
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from html import escape
from typing import Any, Protocol
from urllib.parse import parse_qs, quote, unquote, urlencode

from scaler_service.engine import SeriesEngine, Subscription
from scaler_service.trigger import format_duration, parse_duration
from scaler_service.web import svg

DEFAULT_LIMIT = 20
MAX_LIMIT = 100
MAX_NAME_CHARS = 253
"""A Kubernetes name or namespace is at most 253 characters; longer filters are refused, not truncated."""
MAX_QUERY_SHOWN = 300
MAX_NAMESPACE_LINKS = 40
REFRESH_S = 30
HISTORY_SHOWN_S = 7200.0
OBJECT_PREFIX = "/scaledobjects/"

STYLE = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;background:#f6f7f9;color:#111827}
header{background:#111827;color:#f9fafb;padding:10px 24px;display:flex;gap:24px;align-items:baseline}
header a{color:#f9fafb;text-decoration:none;font-weight:600;font-size:16px}
header span{color:#9ca3af;font-size:12px}
main{padding:16px 24px;max-width:1400px}
form{margin:0 0 12px 0}
input{font:inherit;padding:3px 6px}
.card{background:#fff;border:1px solid #e5e7eb;border-radius:6px;padding:12px 16px;margin:0 0 14px 0}
.card h2{font-size:16px;margin:0 0 6px 0}
.card h2 a{color:#1d4ed8;text-decoration:none}
.trigger{display:flex;gap:18px;flex-wrap:wrap;align-items:flex-start;margin-top:8px}
.facts{min-width:300px;max-width:560px;flex:1}
.facts dl{display:grid;grid-template-columns:max-content 1fr;gap:2px 12px;margin:0}
.facts dt{color:#6b7280}
.facts dd{margin:0;overflow-wrap:anywhere}
.big{font-size:22px;font-weight:650}
.why{color:#374151;margin:6px 0 0 0;overflow-wrap:anywhere}
.badge{display:inline-block;padding:0 7px;border-radius:9px;font-size:12px;background:#e5e7eb}
.badge.forecast{background:#dbeafe;color:#1e3a8a}
.badge.warn{background:#fef3c7;color:#78350f}
.badge.error{background:#fee2e2;color:#7f1d1d}
.muted{color:#6b7280}
.nav{display:flex;gap:16px;margin:8px 0 16px 0}
.ns a{margin-right:10px}
svg.chart{background:#fff;max-width:100%;height:auto}
svg .tick{font-size:11px;fill:#4b5563}
svg .axis{font-size:11px;fill:#374151;font-weight:600}
svg .legend{font-size:11px;fill:#1f2933}
svg .ref{font-size:10px;fill:#6b7280}
table{border-collapse:collapse}
td,th{padding:2px 10px 2px 0;text-align:left}
code{font-size:12px;background:#f3f4f6;padding:1px 4px;border-radius:3px}
""".strip()

_STYLE_HASH = base64.b64encode(hashlib.sha256(STYLE.encode()).digest()).decode()
CONTENT_SECURITY_POLICY = (
    f"default-src 'none'; style-src 'sha256-{_STYLE_HASH}'; img-src 'self'; form-action 'self'; "
    "base-uri 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS: tuple[tuple[str, str], ...] = (
    ("Content-Security-Policy", CONTENT_SECURITY_POLICY),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
    ("X-Frame-Options", "DENY"),
    ("Cache-Control", "no-store"),
)


class StatusView(Protocol):
    def status(self, key: str) -> Any: ...


class ForecastView(Protocol):
    def __call__(
        self, engine: SeriesEngine, cache: StatusView, *, now: float, namespace: str | None, name: str | None
    ) -> list[dict[str, Any]]: ...


@dataclass(frozen=True, slots=True)
class WebResponse:
    status: int
    body: bytes
    content_type: str = "text/html; charset=utf-8"
    headers: tuple[tuple[str, str], ...] = SECURITY_HEADERS


class BadRequest(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class ListQuery:
    namespace: str | None = None
    limit: int = DEFAULT_LIMIT
    offset: int = 0


def _short(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def parse_list_query(raw: str) -> ListQuery:
    """``?namespace=&limit=&offset=``, each bounded; anything else is refused with what is accepted."""
    try:
        q = parse_qs(raw, keep_blank_values=True, max_num_fields=8)
    except ValueError as exc:
        raise BadRequest("too many query parameters: accepted are namespace, limit and offset") from exc
    unknown = sorted(set(q) - {"namespace", "limit", "offset"})
    if unknown:
        raise BadRequest(f"unknown parameter {_short(unknown[0])!r}: accepted are namespace, limit and offset")
    namespace = q.get("namespace", [""])[-1].strip() or None
    if namespace is not None and len(namespace) > MAX_NAME_CHARS:
        raise BadRequest(f"namespace is longer than {MAX_NAME_CHARS} characters: {_short(namespace)!r}")

    def integer(name: str, default: int, lo: int, hi: int) -> int:
        text = q.get(name, [""])[-1].strip()
        if not text:
            return default
        if not text.isdigit() or len(text) > 9:
            raise BadRequest(f"{name} must be a whole number from {lo} to {hi}, not {_short(text)!r}")
        value = int(text)
        if not lo <= value <= hi:
            raise BadRequest(f"{name} must be a whole number from {lo} to {hi}, not {value}")
        return value

    return ListQuery(
        namespace=namespace,
        limit=integer("limit", DEFAULT_LIMIT, 1, MAX_LIMIT),
        offset=integer("offset", 0, 0, 10**9),
    )


def respond(
    engine: SeriesEngine, cache: StatusView, view: ForecastView, path: str, query: str, *, now: float
) -> WebResponse | None:
    """The page for ``path``, or None when the path is not the live view's (the caller answers 404)."""
    try:
        if path == "/":
            return WebResponse(200, _index(engine, cache, view, parse_list_query(query), now).encode())
        if path.startswith(OBJECT_PREFIX):
            parts = path[len(OBJECT_PREFIX) :].split("/")
            if len(parts) != 2 or not all(parts):
                raise BadRequest("the address of a ScaledObject is /scaledobjects/<namespace>/<name>")
            namespace, name = (unquote(p, errors="strict") for p in parts)
            if max(len(namespace), len(name)) > MAX_NAME_CHARS:
                raise BadRequest(f"namespace and name are at most {MAX_NAME_CHARS} characters")
            docs = view(engine, cache, now=now, namespace=namespace, name=name)
            if not docs:
                body = _layout(
                    "not found",
                    f"<p>No ScaledObject <b>{escape(namespace)}/{escape(name)}</b> polls this scaler now "
                    '(or it stopped polling and was dropped). <a href="/">All ScaledObjects</a></p>',
                    now,
                )
                return WebResponse(404, body.encode())
            specs = _specs(engine, namespace, name)
            return WebResponse(200, _detail(engine, docs, specs, now).encode())
    except (BadRequest, UnicodeDecodeError) as exc:
        body = _layout("bad request", f'<p class="badge error">{escape(str(exc))}</p><p><a href="/">back</a></p>', now)
        return WebResponse(400, body.encode())
    return None


def _specs(engine: SeriesEngine, namespace: str, name: str) -> dict[str, Subscription]:
    return {s.key.metric: s for s in engine.subscriptions() if s.key.namespace == namespace and s.key.name == name}


def object_href(namespace: str, name: str) -> str:
    return f"{OBJECT_PREFIX}{quote(namespace, safe='')}/{quote(name, safe='')}"


def _layout(title: str, body: str, now: float, *, refresh: bool = False) -> str:
    refresh_tag = f'<meta http-equiv="refresh" content="{REFRESH_S}">' if refresh else ""
    stamp = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(now))
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"{refresh_tag}<title>{escape(title)} - Foresight</title><style>{STYLE}</style></head><body>"
        f'<header><a href="/">Foresight scaler</a><span>live view - {escape(stamp)}'
        f"{f' - refreshes every {REFRESH_S} s' if refresh else ''}</span>"
        '<span><a href="/forecast">JSON</a> &nbsp; <a href="/metrics">metrics</a></span></header>'
        f"<main>{body}</main></body></html>"
    )


def _index(engine: SeriesEngine, cache: StatusView, view: ForecastView, q: ListQuery, now: float) -> str:
    subs = engine.subscriptions()
    namespaces = sorted({s.key.namespace for s in subs})
    objects = sorted({(s.key.namespace, s.key.name) for s in subs if q.namespace in (None, s.key.namespace)})
    page = objects[q.offset : q.offset + q.limit]
    parts = [
        '<form method="get" action="/"><label>Namespace <input name="namespace" maxlength="253" '
        f'value="{escape(q.namespace or "")}"></label> <input type="submit" value="Filter"> '
        f'<input type="hidden" name="limit" value="{q.limit}"></form>'
    ]
    if namespaces:
        links = " ".join(
            f'<a href="/?{escape(urlencode({"namespace": ns}))}">{escape(ns)}</a>'
            for ns in namespaces[:MAX_NAMESPACE_LINKS]
        )
        more = f" (+{len(namespaces) - MAX_NAMESPACE_LINKS} more)" if len(namespaces) > MAX_NAMESPACE_LINKS else ""
        parts.append(f'<p class="ns muted">Namespaces: <a href="/">all</a> {links}{more}</p>')
    shown = f"{q.offset + 1}-{q.offset + len(page)} of {len(objects)}" if page else f"0 of {len(objects)}"
    parts.append(
        f"<p>{len(objects)} ScaledObject{'s' if len(objects) != 1 else ''}"
        f"{f' in namespace <b>{escape(q.namespace)}</b>' if q.namespace else ''} poll this scaler; "
        f"showing {shown}.</p>"
    )
    if not objects:
        parts.append(
            '<p class="muted">Nothing to show yet: a ScaledObject appears here after KEDA first calls the '
            "scaler for it.</p>"
        )
    for namespace, name in page:
        docs = view(engine, cache, now=now, namespace=namespace, name=name)
        specs = _specs(engine, namespace, name)
        href = object_href(namespace, name)
        parts.append(f'<section class="card"><h2><a href="{escape(href)}">{escape(namespace)}/{escape(name)}</a></h2>')
        for doc in docs:
            parts.append(_trigger(doc, specs.get(doc["metric"]), now, width=620, height=210))
        parts.append("</section>")
    parts.append(_pager(q, len(objects)))
    return _layout("ScaledObjects", "".join(parts), now, refresh=True)


def _pager(q: ListQuery, total: int) -> str:
    def link(offset: int, text: str) -> str:
        params: dict[str, Any] = {"limit": q.limit, "offset": offset}
        if q.namespace:
            params["namespace"] = q.namespace
        return f'<a href="/?{escape(urlencode(params))}">{escape(text)}</a>'

    nav = []
    if q.offset > 0:
        nav.append(link(max(0, q.offset - q.limit), "previous page"))
    if q.offset + q.limit < total:
        nav.append(link(q.offset + q.limit, "next page"))
    return f'<div class="nav">{" ".join(nav)}</div>' if nav else ""


def _num(v: Any, digits: int = 3) -> str:
    if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v):
        return svg.format_number(round(float(v), digits))
    return "-"


def _pct(v: Any) -> str:
    return f"{100 * v:.0f} %" if isinstance(v, int | float) and math.isfinite(v) else "-"


def _reason_badge(reason: str) -> str:
    kind = "forecast" if reason == "forecast" else "warn"
    return f'<span class="badge {kind}">{escape(reason)}</span>'


def _facts(doc: Mapping[str, Any], sub: Subscription | None) -> str:
    served = doc.get("served") or {}
    model = doc.get("model") or {}
    live = doc.get("live") or {}
    fitting = doc.get("fitting") or {}
    query = str(doc.get("query", ""))
    rows: list[tuple[str, str]] = []
    if "error" in served:
        head = f'<span class="badge error">{escape(str(served["error"]))}</span>'
    else:
        head = (
            f'<span class="big">{escape(_num(served.get("value")))}</span> served '
            f"({escape(str(served.get('replicas_wanted', '-')))} replicas at {escape(_num(doc.get('threshold')))} "
            f"each) {_reason_badge(str(served.get('reason', '')))}"
        )
        rows.append(("observed now", _num(served.get("observed"))))
        rows.append(("forecast peak", f"{_num(served.get('predictive_value'))} over the next {doc['predict_horizon']}"))
    gate = "-"
    if sub is not None:
        live_gate = live.get("gate_confidence")
        gate_value = live_gate if live_gate is not None else model.get("over_forecast_confidence")
        which = "live" if live_gate is not None else "backtest"
        gate = f"{which} {_num(gate_value, 2)} vs minConfidence {_num(sub.spec.min_confidence, 2)}"
    rows += [
        ("mode", str(doc.get("mode", "-"))),
        ("model", f"{model.get('name', 'none')} (confidence {_num(model.get('confidence'), 2)})" if model else "none"),
        ("gate", gate),
        (
            "live error",
            f"WMAPE {_pct(live.get('wmape'))}, over-forecast {_pct(live.get('overshoot'))} "
            f"({live.get('compared', 0)} windows compared)"
            if live
            else "-",
        ),
        ("query", f"<code>{escape(_short(query, MAX_QUERY_SHOWN))}</code>"),
    ]
    if fitting.get("last_error"):
        rows.append(
            ("last fit error", f'<span class="badge error">{escape(_short(str(fitting["last_error"]), 300))}</span>')
        )
    if doc.get("fetch_error"):
        rows.append(("fetch error", f'<span class="badge error">{escape(_short(str(doc["fetch_error"]), 300))}</span>'))
    dl = "".join(
        f"<dt>{escape(k)}</dt><dd>{v if k in {'query', 'last fit error', 'fetch error'} else escape(v)}</dd>"
        for k, v in rows
    )
    why = served.get("why")
    why_html = f'<p class="why">Why: {escape(str(why))}</p>' if why else ""
    return f'<div class="facts"><div>{head}</div>{why_html}<dl>{dl}</dl></div>'


def _chart(
    doc: Mapping[str, Any],
    now: float,
    curve: Sequence[Sequence[Any]],
    width: int,
    height: int,
    *,
    ahead_s: float | None = None,
) -> str:
    """History, forecast and band, the value served now over its horizon, and one replica's worth."""
    history = [(float(t), v) for t, v in doc.get("history") or []]
    if ahead_s is not None:
        curve = [c for c in curve if float(c[0]) <= now + ahead_s]
    served = doc.get("served") or {}
    horizon_s = _horizon_s(doc)
    lines = [svg.Series("observed", history, svg.HISTORY_COLOUR)]
    bands = []
    if curve:
        lines.append(svg.Series("forecast", [(float(c[0]), c[1]) for c in curve], svg.FORECAST_COLOUR, dashed=True))
        bands.append(svg.Band("forecast band", [(float(c[0]), c[2], c[3]) for c in curve]))
    value = served.get("value")
    threshold = doc.get("threshold")
    return svg.render(
        svg.Chart(
            width=width,
            height=height,
            lines=lines,
            bands=bands,
            served=(now, now + horizon_s, float(value)) if isinstance(value, int | float) else None,
            now=now,
            reference=("threshold: 1 replica", float(threshold)) if isinstance(threshold, int | float) else None,
            y_label=f"{_short(str(doc.get('query', '')), 40)} (per replica: {_num(threshold)})",
            title=f"{doc.get('namespace')}/{doc.get('name')}",
        )
    )


def _horizon_s(doc: Mapping[str, Any]) -> float:
    try:
        return parse_duration(str(doc.get("predict_horizon", "0s")))
    except ValueError:
        return 0.0


def _trigger(doc: Mapping[str, Any], sub: Subscription | None, now: float, *, width: int, height: int) -> str:
    # The list looks ahead a few horizons (at least 1 h, at most the 3 h the view holds): enough to see what comes.
    ahead_s = min(3 * 3600.0, max(3600.0, 6 * _horizon_s(doc)))
    chart = _chart(doc, now, doc.get("curve") or [], width, height, ahead_s=ahead_s)
    metric = escape(str(doc.get("metric", "")))
    return f'<div class="trigger">{chart}{_facts(doc, sub)}</div><p class="muted">metric {metric}</p>'


def _full_curve(engine: SeriesEngine, sub: Subscription | None, doc: Mapping[str, Any], now: float) -> list[list[Any]]:
    """The model's curve from the start of the shown history to its end (the list shows 1 h back and 3 h
    ahead), scaled by the live anchoring factor."""
    if sub is None:
        return list(doc.get("curve") or [])
    snap = engine.snapshot_for(sub.spec.series_key)
    if snap is None or snap.model is None:
        return list(doc.get("curve") or [])
    curve = snap.model.curve
    ts = curve.timestamps()
    f = snap.factor
    first = max(0, curve.index_at(now - HISTORY_SHOWN_S))
    stride = max(1, (len(ts) - first) // 1500)  # a long curve on a fine grid: at most ~1500 points drawn
    return [
        [float(ts[i]), float(curve.point[i] * f), float(curve.lower[i] * f), float(curve.upper[i] * f)]
        for i in range(first, len(ts), stride)
    ]


def _error_bars(doc: Mapping[str, Any], curve: Sequence[Sequence[Any]]) -> list[tuple[float, float | None]]:
    """Forecast minus observation at each observed step after the model's training data ended: the live
    (out-of-sample) error. Before that the curve is the model's in-sample fit, which says little."""
    trained_until = (doc.get("model") or {}).get("trained_until")
    if not isinstance(trained_until, int | float):
        return []
    by_t = {float(c[0]): c[1] for c in curve}
    out: list[tuple[float, float | None]] = []
    for t, v in doc.get("history") or []:
        f = by_t.get(float(t))
        if t > trained_until and f is not None and v is not None and math.isfinite(f) and math.isfinite(v):
            out.append((float(t), float(f) - float(v)))
    return out


def _clock(t: Any) -> str:
    return time.strftime("%H:%M UTC", time.gmtime(float(t))) if isinstance(t, int | float) else "-"


def _detail(engine: SeriesEngine, docs: list[dict[str, Any]], specs: Mapping[str, Subscription], now: float) -> str:
    first = docs[0]
    title = f"{first['namespace']}/{first['name']}"
    parts = [f'<p><a href="/">all ScaledObjects</a></p><section class="card"><h2>{escape(title)}</h2>']
    for doc in docs:
        sub = specs.get(doc["metric"])
        curve = _full_curve(engine, sub, doc, now)
        ahead_s = max(3600.0, 6 * _horizon_s(doc))
        parts.append(f"<h3>Now: the last 2 h and the next {escape(format_duration(ahead_s))}</h3>")
        parts.append(f'<div class="trigger">{_chart(doc, now, curve, 1100, 330, ahead_s=ahead_s)}</div>')
        parts.append(f'<div class="trigger">{_facts(doc, sub)}</div>')
        parts.append("<h3>The whole forecast of the current model</h3>")
        parts.append(f'<div class="trigger">{_chart(doc, now, curve, 1100, 260)}</div>')
        bars = _error_bars(doc, curve)
        trained = _clock((doc.get("model") or {}).get("trained_until"))
        if bars:
            parts.append(
                f"<h3>Live error: forecast minus observed since the model's data ended ({escape(trained)})</h3>"
                '<div class="trigger">'
                + svg.render(
                    svg.Chart(
                        width=1100,
                        height=190,
                        bars=bars,
                        now=now,
                        y_label="forecast - observed (metric units)",
                        title="recent error",
                    )
                )
                + "</div>"
            )
        else:
            parts.append(
                f'<p class="muted">No live error to show yet: the model was trained on data up to {escape(trained)} '
                "and nothing was observed since on its grid.</p>"
            )
        model = doc.get("model") or {}
        if model.get("candidates"):
            rows = "".join(
                f"<tr><td>{escape(str(k))}</td><td>{escape(_num(v))}</td></tr>"
                for k, v in sorted(model["candidates"].items())
            )
            parts.append(f"<h3>Candidate models (backtest score, lower is better)</h3><table>{rows}</table>")
        if model.get("accuracy"):
            rows = "".join(
                f"<tr><td>{escape(str(k))}</td><td>{escape(_num(v))}</td></tr>"
                for k, v in sorted(model["accuracy"].items())
            )
            parts.append(f"<h3>Backtest accuracy of the chosen model</h3><table>{rows}</table>")
    parts.append("</section>")
    return _layout(title, "".join(parts), now, refresh=True)


__all__ = ["CONTENT_SECURITY_POLICY", "WebResponse", "parse_list_query", "respond"]
