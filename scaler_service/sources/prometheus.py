"""PrometheusSource: one series per PromQL query, read through prometheus-api-client.

Contract details (see :mod:`scaler_service.sources.base`):

- Exactly one series per query. No series is a valid answer (empty :class:`Samples`; ``fetch_latest``
  returns None): the engine decides what missing data means. Several series raise :class:`QueryError` naming
  how many and suggesting ``sum(...)`` or a more specific selector. A range that sees several label sets over
  time (a pod replaced mid-range, say) counts as several series.
- NaN: Prometheus can return ``"NaN"`` (e.g. ``0/0``). It is kept as NaN in :class:`Samples` and returned as
  the value by ``fetch_latest``; callers treat NaN as a missing value. ``±Inf`` are returned as they are.
- ``fetch_range`` splits [start, end] into chunks of at most ``max_points_per_query`` points (Prometheus
  refuses more than 11,000 points per series per query) and drops samples repeated at chunk boundaries.
- ``fetch_latest`` runs an instant query at ``now``. Prometheus reports the evaluation time as the sample time
  and only sees samples within its lookback delta (5 min by default): a series that stopped reporting
  returns None after that.
- Errors: connection refused, timeouts, HTTP 5xx/408/429 and answers that are not Prometheus JSON raise
  :class:`SourceUnavailable` (transient); any other HTTP 4xx (PromQL syntax error, too many points, wrong
  expression type) raises :class:`QueryError` carrying Prometheus's own message.
- Redirects are not followed: a trigger may only reach the addresses of the allowlist, and a redirect from
  one of them to anywhere else is answered as a :class:`QueryError` naming the status.
- Answers are bounded: a body (after decompression) larger than ``max_response_bytes`` is refused while it is
  read, before it is parsed, with a :class:`QueryError` (a query that broad is the query's problem: one series
  of 11,000 points is about 0.4 MB). The fetch deadline bounds the time; this bounds the memory.
- Thread-safe: each thread gets its own PrometheusConnect (and so its own ``requests.Session``).
"""

from __future__ import annotations

import ast
import json
import math
import re
import threading
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, NoReturn

import numpy as np
import requests
import urllib3.exceptions
from prometheus_api_client import PrometheusConnect
from prometheus_api_client.exceptions import PrometheusApiClientException
from urllib3.util.retry import Retry

from scaler_service.sources.base import QueryError, Samples, SourceUnavailable
from scaler_service.sources.prometheus_auth import PrometheusAuth

PROMETHEUS_MAX_POINTS = 11_000
"""Prometheus's own limit of points per series in one query_range."""

_STATUS_RE = re.compile(r"HTTP Status Code (\d+) \((.*)\)\s*$", re.DOTALL)
_TRANSIENT_STATUS = frozenset({408, 429})


DEFAULT_MAX_RESPONSE_BYTES = 16 * 2**20
_READ_CHUNK = 64 * 1024


class ResponseTooLarge(requests.RequestException):
    """An answer's body passed the size cap while it was read."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"answer larger than {limit / 2**20:g} MiB")
        self.limit = limit


class _BoundedSession(requests.Session):
    """A session that hands back a 3xx answer as it is instead of following its Location, and reads a body
    only up to ``max_bytes`` (decoded), so a huge answer is refused before it is held or parsed."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__()
        self.max_bytes = max_bytes

    def get_redirect_target(self, resp: requests.Response) -> str | None:
        return None

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        kwargs["stream"] = True
        response = super().send(request, **kwargs)
        try:
            declared = int(response.headers.get("Content-Length", "0") or 0)
        except ValueError:
            declared = 0
        body = bytearray()
        try:
            if declared > self.max_bytes:
                raise ResponseTooLarge(self.max_bytes)
            for chunk in response.iter_content(_READ_CHUNK):
                body += chunk
                if len(body) > self.max_bytes:
                    raise ResponseTooLarge(self.max_bytes)
        finally:
            response.close()
        response._content = bytes(body)  # the body as read; requests then serves .text/.json() from it
        return response


def _empty() -> Samples:
    return Samples(timestamps=np.empty(0, dtype=np.float64), values=np.empty(0, dtype=np.float64))


def _series_label(metric: Mapping[str, str]) -> str:
    name = metric.get("__name__", "")
    labels = ",".join(f'{k}="{v}"' for k, v in sorted(metric.items()) if k != "__name__")
    return f"{name}{{{labels}}}"


def _several_series(query: str, metrics: Sequence[Mapping[str, str]]) -> QueryError:
    shown = ", ".join(_series_label(m) for m in metrics[:3])
    more = f" and {len(metrics) - 3} more" if len(metrics) > 3 else ""
    return QueryError(
        f"query {query!r} returned {len(metrics)} series ({shown}{more}); exactly one is needed: "
        f"aggregate with sum(...) (or max/avg) or use a more specific label selector"
    )


def _parse_value(query: str, raw: object) -> float:
    try:
        return float(raw)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise QueryError(f"query {query!r} returned a value that is not a number: {raw!r}") from None


def _is_timeout(error: BaseException) -> bool:
    if isinstance(error, requests.Timeout | urllib3.exceptions.TimeoutError):
        return True
    # With a Retry adapter a timeout arrives as ConnectionError(MaxRetryError(reason=ReadTimeoutError)).
    # urllib3's NewConnectionError (connection refused) subclasses ConnectTimeoutError: not a timeout.
    reason = getattr(error.args[0], "reason", None) if error.args else None
    return isinstance(reason, urllib3.exceptions.TimeoutError) and not isinstance(
        reason, urllib3.exceptions.NewConnectionError
    )


class PrometheusSource:
    """Reads one series per PromQL query from the Prometheus at ``url``."""

    def __init__(
        self,
        url: str,
        *,
        timeout_s: float = 10.0,
        max_points_per_query: int = 10_000,
        retries: int = 1,
        headers: Mapping[str, str] | None = None,
        auth: PrometheusAuth | None = None,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"Prometheus address {url!r} must be an http:// or https:// URL")
        if not 1 <= max_points_per_query <= PROMETHEUS_MAX_POINTS:
            raise ValueError(
                f"max_points_per_query={max_points_per_query}: must be between 1 and {PROMETHEUS_MAX_POINTS}"
            )
        if timeout_s <= 0:
            raise ValueError(f"timeout_s={timeout_s}: must be > 0")
        if max_response_bytes < 1024:
            raise ValueError(f"max_response_bytes={max_response_bytes}: must be at least 1024")
        self.max_response_bytes = max_response_bytes
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s
        self.max_points_per_query = max_points_per_query
        self.retries = retries
        self._headers = dict(headers or {})
        self._auth = auth or PrometheusAuth()
        self._local = threading.local()
        self._clients: list[PrometheusConnect] = []
        self._clients_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"PrometheusSource({self.url!r})"

    def _client(self) -> PrometheusConnect:
        client: PrometheusConnect | None = getattr(self._local, "client", None)
        if client is None:
            # One quick retry on connection errors and gateway answers: the caller's loop does real backoff.
            retry = Retry(
                total=self.retries,
                backoff_factor=0.1,
                status_forcelist=(502, 503, 504),
                allowed_methods=None,
                raise_on_status=False,
            )
            session = _BoundedSession(self.max_response_bytes)
            session.verify = self._auth.verify()
            client = PrometheusConnect(
                url=self.url,
                headers=self._headers or None,
                retry=retry,
                timeout=self.timeout_s,
                session=session,
                auth=self._auth.requests_auth(),
            )
            self._local.client = client
            with self._clients_lock:
                self._clients.append(client)
        return client

    def close(self) -> None:
        with self._clients_lock:
            clients, self._clients = self._clients, []
        for client in clients:
            client.close()

    # --- errors ---------------------------------------------------------------------------------

    def _raise_for(self, query: str, error: Exception) -> NoReturn:
        if isinstance(error, PrometheusApiClientException):
            status, message = self._status_and_message(str(error))
            if status is not None and (status >= 500 or status in _TRANSIENT_STATUS):
                raise SourceUnavailable(f"Prometheus at {self.url} answered HTTP {status}: {message}") from error
            if status is not None and 300 <= status < 400:
                raise QueryError(
                    f"Prometheus at {self.url} answered with a redirect (HTTP {status}), which is not followed: "
                    "set prometheusAddress (and the allowlist) to the address that answers"
                ) from error
            raise QueryError(f"Prometheus at {self.url} refused query {query!r} (HTTP {status}): {message}") from error
        if _is_timeout(error):
            raise SourceUnavailable(
                f"Prometheus at {self.url} did not answer within {self.timeout_s} s: {error}"
            ) from error
        raise SourceUnavailable(f"Prometheus at {self.url} is unreachable: {error}") from error

    @staticmethod
    def _status_and_message(text: str) -> tuple[int | None, str]:
        match = _STATUS_RE.match(text)
        if match is None:
            return None, text
        status = int(match.group(1))
        body_repr = match.group(2)
        try:
            body = ast.literal_eval(body_repr)
            decoded = body.decode("utf-8", "replace") if isinstance(body, bytes) else str(body)
        except (ValueError, SyntaxError):
            decoded = body_repr
        try:
            answer = json.loads(decoded)
            if isinstance(answer, dict) and "error" in answer:
                kind = answer.get("errorType")
                return status, f"{kind}: {answer['error']}" if kind else str(answer["error"])
        except ValueError:
            pass
        return status, decoded.strip()[:500]

    def _call(self, query: str, function: str, **kwargs: Any) -> Any:
        client = self._client()
        try:
            return getattr(client, function)(query, **kwargs)
        except ValueError as error:  # the answer is not JSON: not a Prometheus API at this URL
            # (requests' JSONDecodeError is both a ValueError and a RequestException: this comes first)
            raise SourceUnavailable(
                f"{self.url} did not answer with Prometheus API JSON for {query!r}: {error}"
            ) from error
        except ResponseTooLarge as error:
            raise QueryError(
                f"Prometheus at {self.url} answered query {query[:80]!r} with more than "
                f"{self.max_response_bytes / 2**20:g} MiB, which is refused: narrow the query to one series "
                "(sum(...) or a more specific selector)"
            ) from error
        except (PrometheusApiClientException, requests.RequestException) as error:
            self._raise_for(query, error)

    # --- DataSource -----------------------------------------------------------------------------

    def fetch_range(self, query: str, start: float, end: float, step_s: float) -> Samples:
        if not (math.isfinite(start) and math.isfinite(end)) or end < start:
            raise ValueError(f"range [{start}, {end}] is empty or not finite")
        if not step_s > 0:
            raise ValueError(f"step_s={step_s}: must be > 0")
        chunk_span = (self.max_points_per_query - 1) * step_s
        timestamp_parts: list[np.ndarray[Any, np.dtype[np.float64]]] = []
        value_parts: list[np.ndarray[Any, np.dtype[np.float64]]] = []
        seen_series: dict[tuple[tuple[str, str], ...], Mapping[str, str]] = {}
        chunk_start = start
        while chunk_start <= end:
            chunk_end = min(chunk_start + chunk_span, end)
            result = self._call(
                query,
                "custom_query_range",
                start_time=datetime.fromtimestamp(chunk_start, tz=UTC),
                end_time=datetime.fromtimestamp(chunk_end, tz=UTC),
                step=repr(float(step_s)),
            )
            for series in self._as_list(query, result):
                metric = series.get("metric", {})
                seen_series.setdefault(tuple(sorted(metric.items())), metric)
                pairs = series.get("values", [])
                timestamp_parts.append(np.fromiter((float(p[0]) for p in pairs), np.float64, len(pairs)))
                value_parts.append(np.fromiter((_parse_value(query, p[1]) for p in pairs), np.float64, len(pairs)))
            chunk_start = chunk_start + chunk_span + step_s
        if len(seen_series) > 1:
            raise _several_series(query, list(seen_series.values()))
        if not timestamp_parts:
            return _empty()
        timestamps = np.concatenate(timestamp_parts)
        values = np.concatenate(value_parts)
        # Chunks are sorted and disjoint by construction, but rounding of chunk edges can repeat a sample.
        unique_timestamps, first_index = np.unique(timestamps, return_index=True)
        return Samples(timestamps=unique_timestamps, values=values[first_index])

    def fetch_latest(self, query: str, now: float) -> tuple[float, float] | None:
        result = self._call(query, "custom_query", params={"time": repr(float(now))})
        if isinstance(result, list) and len(result) == 2 and not isinstance(result[0], dict):
            # A scalar answer: [timestamp, "value"].
            return float(result[0]), _parse_value(query, result[1])
        series_list = self._as_list(query, result)
        if not series_list:
            return None
        if len(series_list) > 1:
            raise _several_series(query, [s.get("metric", {}) for s in series_list])
        only = series_list[0]
        if "value" in only:
            ts, raw = only["value"]
            return float(ts), _parse_value(query, raw)
        values = only.get("values") or []  # a range selector (x[5m]) gives a matrix: take its newest sample
        if not values:
            return None
        ts, raw = values[-1]
        return float(ts), _parse_value(query, raw)

    @staticmethod
    def _as_list(query: str, result: object) -> list[dict[str, Any]]:
        if not isinstance(result, list) or not all(isinstance(s, dict) for s in result):
            raise QueryError(
                f"query {query!r} returned {type(result).__name__} {str(result)[:100]!r}; "
                "expected an instant vector or scalar"
            )
        return result
