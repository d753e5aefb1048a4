"""The ``serve`` command line's flags: one per :class:`~scaler_service.settings.Settings` field, each also read
from ``FORESIGHT_<FIELD>`` in the environment and from the config file."""

from __future__ import annotations

import argparse
import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path

from scaler_service.settings import ENV_PREFIX, Settings, settings_from_sources


def add_settings_arguments(parser: argparse.ArgumentParser) -> None:
    """The serve flags; each maps to a Settings field and to FORESIGHT_<FIELD> in the environment."""
    d = Settings()

    def env(name: str) -> str:
        return f"(env {ENV_PREFIX}{name.upper()})"

    parser.add_argument("--config", type=Path, help="YAML file of settings (keys as the flags, with _ or -)")
    parser.add_argument(
        "--grpc-port", type=int, help=f"gRPC port, 0 for any free one [{d.grpc_port}] {env('grpc_port')}"
    )
    parser.add_argument(
        "--http-port",
        type=int,
        help=f"HTTP port for /metrics, /forecast, /healthz [{d.http_port}] {env('http_port')}",
    )
    parser.add_argument(
        "--bind-address", help=f"interface gRPC (and HTTP) listen on [{d.bind_address}] {env('bind_address')}"
    )
    parser.add_argument(
        "--http-bind-address",
        help=f"interface of the HTTP port (default: --bind-address) {env('http_bind_address')}",
    )
    parser.add_argument(
        "--source",
        choices=["prometheus", "replay"],
        help=f"where series come from [{d.source}] {env('source')}",
    )
    parser.add_argument(
        "--prometheus-url", help=f"default Prometheus address [{d.prometheus_url}] {env('prometheus_url')}"
    )
    parser.add_argument(
        "--prometheus-allowlist",
        help=f"comma-separated further Prometheus addresses triggers may name {env('prometheus_allowlist')}",
    )
    parser.add_argument(
        "--prometheus-timeout-s",
        help=f"Prometheus request timeout [{d.prometheus_timeout_s}] {env('prometheus_timeout_s')}",
    )
    parser.add_argument(
        "--prometheus-max-points",
        type=int,
        help=f"points per range query; longer ranges are chunked [{d.prometheus_max_points}] "
        f"{env('prometheus_max_points')}",
    )
    parser.add_argument(
        "--prometheus-max-response-mb",
        help=f"largest Prometheus answer read, MiB after decompression; larger ones are refused "
        f"[{d.prometheus_max_response_mb:g}] {env('prometheus_max_response_mb')}",
    )
    parser.add_argument(
        "--prometheus-bearer-token-file",
        help=f"file with a bearer token for Prometheus (re-read on change) {env('prometheus_bearer_token_file')}",
    )
    parser.add_argument(
        "--prometheus-basic-auth-user", help=f"basic auth user for Prometheus {env('prometheus_basic_auth_user')}"
    )
    parser.add_argument(
        "--prometheus-basic-auth-password-file",
        help=f"file with the basic auth password {env('prometheus_basic_auth_password_file')}",
    )
    parser.add_argument(
        "--prometheus-ca-bundle",
        help=f"PEM CA bundle to verify https:// Prometheus with [system CAs] {env('prometheus_ca_bundle')}",
    )
    parser.add_argument(
        "--replay-dir",
        help=f"replay source: CSV files triggers may name, confined to this directory (default: bundled traces "
        f"only) {env('replay_dir')}",
    )
    parser.add_argument("--records-dir", help=f"append observe-mode records as CSV here {env('records_dir')}")
    parser.add_argument("--persist-dir", help=f"persist fitted models here {env('persist_dir')}")
    parser.add_argument("--tls-cert", help=f"server certificate (PEM) {env('tls_cert')}")
    parser.add_argument("--tls-key", help=f"server private key (PEM) {env('tls_key')}")
    parser.add_argument(
        "--tls-client-ca",
        help=f"CA (PEM) client certificates must chain to: mutual TLS {env('tls_client_ca')}",
    )
    parser.add_argument("--log-format", choices=["json", "console"], help=f"[{d.log_format}] {env('log_format')}")
    parser.add_argument("--log-level", help=f"[{d.log_level}] {env('log_level')}")
    parser.add_argument(
        "--grpc-workers", type=int, help=f"gRPC handler threads [{d.grpc_workers}] {env('grpc_workers')}"
    )
    parser.add_argument(
        "--grace-period-s",
        help=f"seconds in-flight calls get on shutdown [{d.grace_period_s}] {env('grace_period_s')}",
    )
    parser.add_argument(
        "--grpc-server",
        choices=["aio", "sync"],
        help=f"gRPC server: aio (one event loop, thousands of streams) or sync (a thread per call and per stream) "
        f"[{d.grpc_server}] {env('grpc_server')}",
    )
    parser.add_argument(
        "--max-streams",
        type=int,
        help=f"open StreamIsActive streams served at once, beyond: RESOURCE_EXHAUSTED (aio) [{d.max_streams}] "
        f"{env('max_streams')}",
    )
    parser.add_argument(
        "--max-connection-age",
        help="close client connections (GOAWAY) after about this long so KEDA re-resolves the Service and new "
        f"replicas get traffic; 0 = never [5m] {env('max_connection_age')}",
    )
    parser.add_argument(
        "--max-connection-age-grace",
        help="after the GOAWAY, time in-flight calls get before the connection closes; streams end before it "
        f"[30s] {env('max_connection_age_grace')}",
    )
    parser.add_argument("--fetch-workers", type=int, help=f"fetch threads [{d.fetch_workers}] {env('fetch_workers')}")
    parser.add_argument(
        "--fetch-interval-s",
        help=f"seconds between latest-value fetches (default: the trigger's queryStep) {env('fetch_interval_s')}",
    )
    parser.add_argument(
        "--idle-drop-s",
        help=f"drop series not asked about for this long [{d.idle_drop_s}] {env('idle_drop_s')}",
    )
    parser.add_argument(
        "--subscription-idle",
        help=f"forget a ScaledObject trigger not polled for this long [10m] {env('subscription_idle')}",
    )
    parser.add_argument(
        "--max-series",
        type=int,
        help=f"distinct series followed at once; more are refused [{d.max_series}] {env('max_series')}",
    )
    parser.add_argument(
        "--max-subscriptions",
        type=int,
        help=f"ScaledObject triggers followed at once [{d.max_subscriptions}] {env('max_subscriptions')}",
    )
    parser.add_argument(
        "--fetch-deadline",
        help=f"abandon a fetch running longer than this [30s] {env('fetch_deadline')}",
    )
    parser.add_argument(
        "--max-points-per-fit",
        type=int,
        help=f"points one fit reads; longer histories are read on a coarser step [{d.max_points_per_fit}] "
        f"{env('max_points_per_fit')}",
    )
    parser.add_argument(
        "--metrics-max-subscriptions",
        type=int,
        help=f"per-ScaledObject gauges on /metrics for at most this many triggers "
        f"[{d.metrics_max_subscriptions}] {env('metrics_max_subscriptions')}",
    )
    parser.add_argument(
        "--refit-interval-s",
        help=f"default refit interval [{d.refit_interval_s}] {env('refit_interval_s')}",
    )
    parser.add_argument(
        "--live-window-s",
        help=f"window of the live forecast-vs-actual comparison [{d.live_window_s}] {env('live_window_s')}",
    )
    parser.add_argument(
        "--max-concurrent-fits",
        type=int,
        help=f"fits running at once [{d.max_concurrent_fits}] {env('max_concurrent_fits')}",
    )
    parser.add_argument(
        "--fit-deadline",
        help=f"abandon a fit running longer than this; it is retried with backoff [15m] {env('fit_deadline')}",
    )
    parser.add_argument(
        "--cache-max-entries",
        type=int,
        help=f"models kept in memory [{d.cache_max_entries}] {env('cache_max_entries')}",
    )
    parser.add_argument(
        "--cache-max-bytes",
        type=int,
        help=f"bytes of models kept in memory [{d.cache_max_bytes}] {env('cache_max_bytes')}",
    )
    parser.add_argument(
        "--store",
        help=f"where replicas share models and work: memory (one replica) or redis://HOST[:PORT][/DB], "
        f"rediss://... [{d.store}] {env('store')}",
    )
    parser.add_argument(
        "--redis-password-file",
        help=f"file holding the Redis password (else env FORESIGHT_REDIS_PASSWORD) {env('redis_password_file')}",
    )
    parser.add_argument(
        "--redis-outage-grace",
        help=f"how long replicas work alone while Redis is unreachable [10m] {env('redis_outage_grace')}",
    )
    parser.add_argument(
        "--lease",
        help=f"how long a claim on a fetch or fit lasts unrenewed [3 x the Prometheus timeout, 5s-60s] {env('lease')}",
    )
    parser.add_argument(
        "--kube-annotations",
        choices=["true", "false"],
        help=f"read the opt-out annotation from the Kubernetes API in a cluster [true] {env('kube_annotations')}",
    )
    parser.add_argument(
        "--kube-resync",
        help=f"re-list the opt-out annotations this often; watched changes arrive between [10m] {env('kube_resync')}",
    )


def settings_from_args(args: argparse.Namespace, env: Mapping[str, str] | None = None) -> Settings:
    cli = {f.name: getattr(args, f.name, None) for f in dataclasses.fields(Settings)}
    return settings_from_sources(cli, os.environ if env is None else env, getattr(args, "config", None))


__all__ = ["add_settings_arguments", "settings_from_args"]
