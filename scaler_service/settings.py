"""The one typed settings object of the scaler service, built from CLI flags, FORESIGHT_* variables and YAML.

Precedence (highest first): command-line flag, environment variable, config file, default. Every field is
documented in ``python -m scaler_service serve --help`` (the flags: :mod:`scaler_service.settings_flags`) and
in docs/scaler.md.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from scaler_service.sources.prometheus_auth import PrometheusAuth

ENV_PREFIX = "FORESIGHT_"
REPLAY_ADDRESS = "replay"
"""The address every trigger resolves to under the replay source (``prometheusAddress`` is ignored there)."""


class SettingsError(ValueError):
    """A setting has a bad value; the message names the setting and the accepted form."""


@dataclass(frozen=True, slots=True)
class Settings:
    grpc_port: int = 9090
    http_port: int = 8080
    bind_address: str = "0.0.0.0"
    http_bind_address: str | None = None
    """Interface of the HTTP port (/metrics, /forecast, /healthz); none: the same as bind_address. Use
    127.0.0.1 (and a port-forward) to keep /forecast, which shows every trigger's query, inside the pod."""
    source: str = "prometheus"
    """``prometheus`` or ``replay``."""
    prometheus_url: str = "http://prometheus-operated.monitoring:9090"
    """Default Prometheus address, used when a trigger gives no ``prometheusAddress``."""
    prometheus_allowlist: tuple[str, ...] = ()
    """Further Prometheus addresses a trigger may name (the default address is always allowed)."""
    prometheus_timeout_s: float = 10.0
    prometheus_max_points: int = 11_000
    prometheus_max_response_mb: float = 16.0
    """Largest Prometheus answer read (MiB, after decompression); a larger one is refused while it is read. One
    series of 11,000 points is about 0.4 MB."""
    prometheus_bearer_token_file: Path | None = None
    """A file holding the bearer token sent to Prometheus (re-read when it changes, e.g. a projected token)."""
    prometheus_basic_auth_user: str | None = None
    prometheus_basic_auth_password_file: Path | None = None
    prometheus_ca_bundle: Path | None = None
    """PEM CAs to verify https:// Prometheus addresses with (else the system's CAs)."""
    replay_dir: Path | None = None
    """With the replay source: the directory whose CSV files triggers may name (none: bundled traces only)."""
    records_dir: Path | None = None
    """Where observe-mode records are appended as CSV (none: in memory only)."""
    persist_dir: Path | None = None
    """Where fitted models are persisted so a restart serves at once (none: not persisted)."""
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_client_ca: Path | None = None
    """When set, clients must present a certificate signed by this CA (mutual TLS)."""
    log_format: str = "json"
    log_level: str = "info"
    grpc_workers: int = 8
    """Handler threads. More is slower under load: on 2 cores with 64 concurrent KEDA callers, 8 threads gave
    4,200-4,400 RPC/s at p99 23 ms; 12 and 16 threads 2,700-3,200 RPC/s at p99 33-92 ms (GIL contention).
    Used by the sync gRPC server only (``grpc_server: sync``), where each open StreamIsActive stream holds one
    and at most half of them serve streams."""
    grace_period_s: float = 10.0
    grpc_server: str = "aio"
    """``aio`` (one event loop: handlers are memory reads run inline, a stream costs no thread) or ``sync``
    (a thread pool of ``grpc_workers``: each open stream holds a thread, at most half of them serve streams)."""
    max_streams: int = 20_000
    """Open StreamIsActive streams served at once (aio); beyond it a stream is refused with RESOURCE_EXHAUSTED."""
    max_connection_age: float = 300.0
    """A client connection is closed (GOAWAY) after about this long, so KEDA's client re-resolves the headless
    Service and new replicas get traffic; 0 disables it."""
    max_connection_age_grace: float = 30.0
    """After the GOAWAY, in-flight calls get this long before the connection is closed; open streams are ended
    cleanly before it runs out (KEDA reopens them)."""
    fetch_workers: int = 4
    """Threads fetching latest values and latency series for all series."""
    fetch_interval_s: float | None = None
    """Seconds between latest-value fetches of a series; none: the series' queryStep."""
    idle_drop_s: float = 1200.0
    """A series nobody asked about for this long is dropped (2 x max(polling, 10 min))."""
    subscription_idle: float = 600.0
    """A ScaledObject trigger not polled for this long leaves /forecast and /metrics (a duration: 10m)."""
    max_series: int = 10_000
    """Distinct series (address, query, step) followed at once; one more is refused with RESOURCE_EXHAUSTED.
    Measured 25 KiB per warm series at queryStep 5m (loadtests/scaler_bench.py) and 95 KiB at queryStep 1s
    (2 h of recent points): 10,000 series take under 1 GiB beside the model cache's cache_max_bytes (512 MiB),
    within the manifest's 2 GiB limit."""
    max_subscriptions: int = 20_000
    """ScaledObject triggers followed at once; one more is refused with RESOURCE_EXHAUSTED."""
    fetch_deadline: float = 30.0
    """A fetch still running after this long is abandoned and its series reported unavailable (a duration)."""
    max_points_per_fit: int = 20_160
    metrics_max_subscriptions: int = 250
    """Per-ScaledObject (and their series') gauges on /metrics for at most this many triggers; all are in
    /forecast and counted by foresight_subscriptions."""
    """Points one fit reads; a longer history is read on a coarser step (14 days at 1 minute by default)."""
    refit_interval_s: float = 3600.0
    live_window_s: float = 600.0
    """Live forecast-vs-actual compares means over windows this long (as the backtest's confidence does)."""
    max_concurrent_fits: int = 2
    fit_deadline: float = 900.0
    """A fit still running after this long is abandoned (a duration): its worker is replaced, the series' fit
    counts as failed and is retried with backoff while the last good model serves; a late result is dropped.
    Fits take seconds, a large Prophet fit a few minutes."""
    cache_max_entries: int = 10_000
    cache_max_bytes: int = 512 * 2**20
    kube_annotations: bool = True
    """Read the opt-out annotation through the Kubernetes API when running in a cluster."""
    kube_resync: float = 600.0
    """The opt-out reader watches the Kubernetes API and re-lists this often to heal missed events."""
    store: str = "memory"
    """``memory`` (one replica) or ``redis://HOST[:PORT][/DB]`` / ``rediss://...``: replicas share work through it."""
    redis_password_file: Path | None = None
    """File whose first line is the Redis password (else FORESIGHT_REDIS_PASSWORD, else none)."""
    redis_outage_grace: float = 600.0
    """Seconds a replica works alone (serving its mirror, fetching for itself) while Redis is unreachable."""
    lease: float | None = None
    """Seconds a claim on a fetch or a fit lasts without renewal (a dead replica's work moves on after it);
    none: 3 x the Prometheus timeout, between 5 s and 60 s."""

    def prometheus_auth(self) -> PrometheusAuth:
        return PrometheusAuth(
            bearer_token_file=self.prometheus_bearer_token_file,
            basic_auth_user=self.prometheus_basic_auth_user,
            basic_auth_password_file=self.prometheus_basic_auth_password_file,
            ca_bundle=self.prometheus_ca_bundle,
        )

    def __post_init__(self) -> None:
        if self.source not in ("prometheus", "replay"):
            raise SettingsError(f"source: must be 'prometheus' or 'replay', got {self.source!r}")
        if self.log_format not in ("json", "console"):
            raise SettingsError(f"log_format: must be 'json' or 'console', got {self.log_format!r}")
        if self.log_level.lower() not in ("debug", "info", "warning", "error"):
            raise SettingsError(f"log_level: must be debug, info, warning or error, got {self.log_level!r}")
        try:
            self.prometheus_auth()
        except ValueError as exc:
            raise SettingsError(str(exc)) from exc
        for name in ("grpc_port", "http_port"):
            port = getattr(self, name)
            if not 0 <= port <= 65535:
                raise SettingsError(f"{name}: must be a port number in [0, 65535], got {port}")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise SettingsError("tls_cert and tls_key: give both or neither")
        if self.tls_client_ca is not None and self.tls_cert is None:
            raise SettingsError("tls_client_ca: needs tls_cert and tls_key (mutual TLS is on top of TLS)")
        if self.store != "memory":
            from scaler_service.store.address import RedisConfigError, parse_store_url

            try:
                parse_store_url(self.store)
            except RedisConfigError as exc:
                raise SettingsError(f"store: must be 'memory' or a Redis address: {exc}") from None
        if not self.redis_outage_grace >= 0:
            raise SettingsError(f"redis_outage_grace: must be a duration >= 0, got {self.redis_outage_grace}")
        if self.lease is not None and not 0.2 <= self.lease <= 3600:
            raise SettingsError(f"lease: must be between 200ms and 1h, got {self.lease}s")
        if self.grpc_workers < 1 or self.fetch_workers < 1 or self.max_concurrent_fits < 1:
            raise SettingsError("grpc_workers, fetch_workers and max_concurrent_fits: must be >= 1")
        if self.grpc_server not in ("aio", "sync"):
            raise SettingsError(f"grpc_server: must be 'aio' or 'sync', got {self.grpc_server!r}")
        if self.max_streams < 0:
            raise SettingsError(f"max_streams: must be >= 0 (0 refuses every stream), got {self.max_streams}")
        if self.max_connection_age < 0 or self.max_connection_age_grace < 0:
            raise SettingsError("max_connection_age and max_connection_age_grace: must be durations >= 0")
        if 0 < self.max_connection_age < 1:
            raise SettingsError(f"max_connection_age: must be 0 (off) or >= 1s, got {self.max_connection_age:g}s")
        if self.max_connection_age > 0 and self.max_connection_age_grace < 1:
            raise SettingsError(
                "max_connection_age_grace: must be >= 1s (in-flight calls and streams need time to end), "
                f"got {self.max_connection_age_grace:g}s"
            )
        if self.metrics_max_subscriptions < 0:
            raise SettingsError(f"metrics_max_subscriptions: must be >= 0, got {self.metrics_max_subscriptions}")
        if not 0.01 <= self.prometheus_max_response_mb <= 1024:
            raise SettingsError(
                f"prometheus_max_response_mb: must be between 0.01 and 1024 MiB, got {self.prometheus_max_response_mb}"
            )
        for name in ("max_series", "max_subscriptions", "max_points_per_fit"):
            if getattr(self, name) < 1:
                raise SettingsError(f"{name}: must be >= 1, got {getattr(self, name)}")
        for name in ("subscription_idle", "fetch_deadline", "fit_deadline", "kube_resync"):
            if not getattr(self, name) > 0:
                raise SettingsError(f"{name}: must be a duration > 0, got {getattr(self, name)} s")

    @property
    def default_address(self) -> str:
        return REPLAY_ADDRESS if self.source == "replay" else normalise_address(self.prometheus_url)

    @property
    def allowed_addresses(self) -> frozenset[str]:
        if self.source == "replay":
            return frozenset({REPLAY_ADDRESS})
        return frozenset({self.default_address, *(normalise_address(a) for a in self.prometheus_allowlist)})

    @property
    def lease_s(self) -> float:
        if self.lease is not None:
            return self.lease
        return min(60.0, max(5.0, 3 * self.prometheus_timeout_s))

    @property
    def tls_enabled(self) -> bool:
        return self.tls_cert is not None


def normalise_address(address: str) -> str:
    return address.strip().rstrip("/")


# --- building from flags, environment and file ------------------------------------------------------------

_FIELDS = {f.name: f for f in dataclasses.fields(Settings)}
_DURATION_FIELDS = frozenset(
    {
        "subscription_idle",
        "fetch_deadline",
        "fit_deadline",
        "redis_outage_grace",
        "lease",
        "max_connection_age",
        "max_connection_age_grace",
        "kube_resync",
    }
)
"""Fields given as durations (``30s``, ``10m``, ``1h30m``) or plain seconds."""


def _seconds(raw: Any) -> float:
    from scaler_service.trigger import parse_duration

    if isinstance(raw, int | float) and not isinstance(raw, bool):
        return float(raw)
    text = str(raw).strip()
    try:
        return float(text)
    except ValueError:
        return parse_duration(text)


def _convert(name: str, raw: Any) -> Any:
    """Convert a raw value (string from env/CLI, or YAML scalar/list) to the field's type."""
    kind = str(_FIELDS[name].type)
    try:
        if raw is None:
            return None
        if name in _DURATION_FIELDS or name.endswith("_s"):
            # Every seconds field takes the trigger metadata's durations too (refit_interval_s: 1h), one parser.
            return _seconds(raw)
        if kind == "int":
            return int(raw)
        if kind in ("float", "float | None"):
            return float(raw)
        if kind == "bool":
            if isinstance(raw, bool):
                return raw
            text = str(raw).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off"):
                return False
            raise ValueError(f"not a boolean: {raw!r}")
        if kind == "Path | None":
            return Path(str(raw)) if str(raw) else None
        if kind == "tuple[str, ...]":
            items = raw if isinstance(raw, list | tuple) else str(raw).split(",")
            return tuple(str(i).strip() for i in items if str(i).strip())
        return str(raw)
    except ValueError as exc:
        if name in _DURATION_FIELDS or name.endswith("_s"):
            kind = "seconds or a duration (30s, 10m, 1h30m)"
        raise SettingsError(f"{name}: cannot use {str(raw)[:40]!r} ({exc}); expected {kind}") from exc


def settings_from_sources(cli: Mapping[str, Any], env: Mapping[str, str], config_file: Path | None = None) -> Settings:
    """Merge defaults < config file < environment < CLI (CLI values of None mean "not given")."""
    values: dict[str, Any] = {}
    if config_file is not None:
        try:
            doc = yaml.safe_load(config_file.read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise SettingsError(f"config file {config_file}: {exc}") from exc
        if not isinstance(doc, dict):
            raise SettingsError(f"config file {config_file}: must be a mapping of setting: value")
        for key, raw in doc.items():
            name = str(key).replace("-", "_")
            if name not in _FIELDS:
                raise SettingsError(f"config file {config_file}: unknown setting {key!r} (known: {sorted(_FIELDS)})")
            values[name] = _convert(name, raw)
    for name in _FIELDS:
        env_name = ENV_PREFIX + name.upper()
        if env_name in env:
            values[name] = _convert(name, env[env_name])
    for name, raw in cli.items():
        if name in _FIELDS and raw is not None:
            values[name] = _convert(name, raw)
    return Settings(**values)


__all__ = [
    "ENV_PREFIX",
    "REPLAY_ADDRESS",
    "Settings",
    "SettingsError",
    "normalise_address",
    "settings_from_sources",
]
