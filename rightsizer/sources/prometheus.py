"""VM usage from Prometheus (``metrics.source: prometheus``): range queries per VM with the settings' templates.

TLS is verified (the system's CAs, or ``metrics.prometheus_ca_bundle``); authentication as real Prometheus
deployments require: a bearer token file (``metrics.prometheus_bearer_token_file``, e.g. a mounted
ServiceAccount token in front of an OAuth proxy) or basic auth (``metrics.prometheus_basic_auth_user`` with
``metrics.prometheus_basic_auth_password_file``). Secrets are read from files, never from the settings file.
Answers are bounded: a body larger than ``metrics.prometheus_max_response_mb`` (after decompression) is refused
while it is read, before it is parsed, and that VM is skipped with the reason; redirects are not followed.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import requests

from rightsizer.bounded_http import BoundedSession, ResponseTooLarge
from rightsizer.domain import VmInfo
from rightsizer.inputs import FloatArray
from rightsizer.metrics import NoUsage, Usage, apply_memory_policy, usage_from_samples
from rightsizer.quoting import cut
from rightsizer.settings import DAY_S, MetricsSettings, SettingsError


class PrometheusUnreachable(RuntimeError):
    """The first queries could not reach Prometheus (connection refused, TLS verification failed, ...)."""


MAX_SECRET_BYTES = 16_384
"""A token or password file longer than this is refused (it is not a token)."""


def _read_secret(path: str, what: str) -> str:
    try:
        with Path(path).open("rb") as fh:
            raw = fh.read(MAX_SECRET_BYTES + 1)
    except OSError as exc:
        raise SettingsError(f"{what}: cannot read {path}: {exc.strerror or exc}") from None
    if len(raw) > MAX_SECRET_BYTES:
        raise SettingsError(f"{what}: {path} is longer than {MAX_SECRET_BYTES} bytes; expected a token or password")
    try:
        text = raw.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise SettingsError(f"{what}: {path} is not UTF-8 text") from None
    if not text:
        raise SettingsError(f"{what}: {path} is empty")
    return text


def prometheus_client(settings: MetricsSettings) -> Any:
    """A ``PrometheusConnect`` for ``settings.prometheus_url`` with TLS verified and the configured credentials.

    Transient HTTP answers (429, 5xx) are retried twice with a short backoff; connection and TLS errors are not
    (a certificate that does not verify will not verify on the next try), nor are answers over the size cap."""
    from prometheus_api_client import PrometheusConnect
    from urllib3.util.retry import Retry

    if not settings.prometheus_url:
        raise SettingsError("metrics.source is prometheus but metrics.prometheus_url is not set")
    session = BoundedSession(int(settings.prometheus_max_response_mb * 2**20))
    session.verify = settings.prometheus_ca_bundle or True
    if settings.prometheus_ca_bundle and not Path(settings.prometheus_ca_bundle).is_file():
        raise SettingsError(f"metrics.prometheus_ca_bundle: {settings.prometheus_ca_bundle} is not a readable file")
    headers: dict[str, str] = {}
    auth: tuple[str, str] | None = None
    if settings.prometheus_bearer_token_file:
        token = _read_secret(settings.prometheus_bearer_token_file, "metrics.prometheus_bearer_token_file")
        headers["Authorization"] = f"Bearer {token}"
    if settings.prometheus_basic_auth_user:
        password = ""
        if settings.prometheus_basic_auth_password_file:
            password = _read_secret(
                settings.prometheus_basic_auth_password_file, "metrics.prometheus_basic_auth_password_file"
            )
        auth = (settings.prometheus_basic_auth_user, password)
    return PrometheusConnect(
        url=settings.prometheus_url,
        headers=headers or None,
        auth=auth,
        session=session,
        timeout=int(math.ceil(settings.timeout_s)),
        retry=Retry(
            total=2, connect=0, read=0, other=0, backoff_factor=0.5, status_forcelist=(429, 500, 502, 503, 504)
        ),
    )


class RangeQuery(Protocol):
    """The part of ``prometheus_api_client.PrometheusConnect`` used here."""

    def custom_query_range(self, query: str, start_time: Any, end_time: Any, step: str) -> list[dict[str, Any]]: ...


MAX_POINTS_PER_QUERY = 10_000
"""Prometheus refuses more than 11,000 points per series per range query; chunk below that."""


def _instance_of(vm: VmInfo, settings: MetricsSettings) -> str:
    return vm.tags.get(settings.instance_label_tag) or vm.name


def _query_samples(
    client: RangeQuery, query: str, start: float, end: float, step_s: float
) -> tuple[FloatArray, FloatArray]:
    from datetime import UTC, datetime

    ts_parts: list[FloatArray] = []
    val_parts: list[FloatArray] = []
    chunk_s = MAX_POINTS_PER_QUERY * step_s
    t0 = start
    while t0 <= end:
        t1 = min(end, t0 + chunk_s - step_s)
        result = client.custom_query_range(
            query,
            start_time=datetime.fromtimestamp(t0, UTC),
            end_time=datetime.fromtimestamp(t1, UTC),
            step=f"{int(step_s)}s",
        )
        if len(result) > 1:
            labels = "; ".join(cut(str(s.get("metric", {}))) for s in result[:3])
            raise ValueError(f"query returned {len(result)} series ({labels}); exactly one per VM is needed: {query}")
        if result:
            pairs = result[0].get("values", [])
            ts_parts.append(np.fromiter((float(p[0]) for p in pairs), dtype=np.float64, count=len(pairs)))
            val_parts.append(np.fromiter((float(p[1]) for p in pairs), dtype=np.float64, count=len(pairs)))
        t0 = t1 + step_s
    if not ts_parts:
        return np.empty(0), np.empty(0)
    return np.concatenate(ts_parts), np.concatenate(val_parts)


def usage_from_prometheus(
    client: RangeQuery, vms: Iterable[VmInfo], settings: MetricsSettings, now: float
) -> dict[str, Usage]:
    """Range-query CPU and memory per VM with the settings' templates (``{vm}`` = the VM's instance label)."""
    out: dict[str, Usage] = {}
    end = math.floor(now / settings.step_s) * settings.step_s
    start = end - settings.lookback_days * DAY_S + settings.step_s
    answered = False
    for vm in vms:
        instance = _instance_of(vm, settings)
        cpu_query, memory_query = settings.cpu_query.format(vm=instance), settings.memory_query.format(vm=instance)
        query = cpu_query
        try:
            ts, cpu = _query_samples(client, cpu_query, start, end, settings.step_s)
            query = memory_query
            mts, mem = _query_samples(client, memory_query, start, end, settings.step_s)
            answered = True
        except ResponseTooLarge as exc:  # Prometheus answered; asking again gets the same answer
            answered = True
            out[vm.id] = NoUsage(vm.id, _too_large_reason(query, exc))
            continue
        except requests.exceptions.ConnectionError as exc:  # includes SSLError: the server is not reachable as is
            if not answered:
                raise PrometheusUnreachable(f"Prometheus {settings.prometheus_url} unreachable: {exc}") from None
            out[vm.id] = NoUsage(vm.id, f"metrics query failed: {exc}")
            continue
        except (ValueError, OSError) as exc:
            out[vm.id] = NoUsage(vm.id, f"metrics query failed: {cut(str(exc))}")
            continue
        except Exception as exc:  # prometheus-api-client raises its own exception types for HTTP errors
            if not answered:  # refused before any answer (401, 403, 5xx): no VM will fare better
                raise PrometheusUnreachable(
                    f"Prometheus {settings.prometheus_url} refused the first query: {type(exc).__name__}: "
                    f"{cut(str(exc))}"
                ) from None
            out[vm.id] = NoUsage(vm.id, f"metrics query failed: {type(exc).__name__}: {cut(str(exc))}")
            continue
        memory = _align(ts, mts, mem)
        usage = usage_from_samples(vm.id, ts, cpu, memory, settings, now)
        out[vm.id] = apply_memory_policy(usage, allow_cpu_only=settings.size_without_memory)
    return out


def _too_large_reason(query: str, exc: ResponseTooLarge) -> str:
    return (
        f"metrics query failed: Prometheus answered {query[:80]!r} with more than {exc.limit_bytes / 2**20:g} MiB "
        "(metrics.prometheus_max_response_mb), which is refused: narrow the query to this VM's one series "
        "(a more specific label selector, or sum(...))"
    )


def _align(ts: FloatArray, other_ts: FloatArray, other_values: FloatArray) -> FloatArray:
    """``other_values`` at the timestamps ``ts`` (NaN where the other query had no point)."""
    out = np.full(len(ts), np.nan)
    if len(other_ts) == 0 or len(ts) == 0:
        return out
    index = {float(t): i for i, t in enumerate(other_ts)}
    for i, t in enumerate(ts):
        j = index.get(float(t))
        if j is not None:
            out[i] = other_values[j]
    return out
