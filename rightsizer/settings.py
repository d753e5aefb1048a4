"""One typed settings object for the rightsizer, loaded from a YAML/JSON file and passed explicitly.

Every field has a safe default: ``Settings()`` is a dry run with Advisor-like thresholds.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_type_hints

import yaml

from rightsizer.act.settings import ActSettings
from rightsizer.files import FileProblem, read_text

DAY_S = 86_400.0

DEFAULT_CPU_QUERY = '100 - avg by (instance) (rate(node_cpu_seconds_total{{mode="idle",instance="{vm}"}}[5m])) * 100'
DEFAULT_MEMORY_QUERY = (
    '100 * (1 - node_memory_MemAvailable_bytes{{instance="{vm}"}} / node_memory_MemTotal_bytes{{instance="{vm}"}})'
)


class SettingsError(ValueError):
    """A settings file or value that is not accepted; the message names the field and the accepted form."""


@dataclass(frozen=True, slots=True)
class Thresholds:
    cpu_p95_max_percent: float = 80.0
    """P95 CPU the *new* size may reach (Advisor: 80 % for non-user-facing workloads)."""
    cpu_p95_max_percent_user_facing: float = 40.0
    """Stricter bound for VMs tagged user-facing (Advisor: 40 %)."""
    memory_max_percent: float = 70.0
    """Memory statistic on the new size (30 % headroom)."""
    memory_statistic: str = "p95"
    """``p95`` or ``max`` of memory utilisation."""
    idle_cpu_p95_percent: float = 3.0
    """Below this P95 CPU a VM is recommended for shutdown (never applied)."""
    min_saving_fraction: float = 0.10
    """Minimum-change rule: a resize must cut the hourly price by at least this fraction."""
    resize_cooldown_days: float = 7.0
    """Minimum-change rule: no new resize within this many days of the last one (``previous-size`` tag)."""
    offer_burstable: bool = True


@dataclass(frozen=True, slots=True)
class Gates:
    min_confidence: float = 0.8
    min_monthly_savings_usd: float = 50.0
    finops_lead_above_usd: float = 100.0
    """Savings at or above this need a FinOps lead's approval."""
    executive_above_usd: float = 1000.0
    """Savings above this need an executive's approval."""
    approval_ttl_days: float = 7.0
    recommendation_ttl_days: float = 14.0
    min_pool_instances: int = 2
    approval_criticality: tuple[str, ...] = ("tier-0", "tier-1")
    database_roles: tuple[str, ...] = ("database", "db")


METRICS_SOURCES = ("azure-monitor", "prometheus")
MIN_RESPONSE_MB = 0.01
MAX_RESPONSE_MB = 1024.0
"""Bounds of ``metrics.prometheus_max_response_mb`` and ``azure.max_response_mb``; the upper one is half the
CronJob's 2 GiB memory limit, since a parsed answer takes several times its size."""


@dataclass(frozen=True, slots=True)
class MetricsSettings:
    source: str | None = None
    """Live source of VM usage: ``azure-monitor`` (platform metrics, no agent needed; the default) or
    ``prometheus``. Unset with only ``prometheus_url`` given means Prometheus (settings written before Azure
    Monitor was a source keep working). Offline files (``--metrics``) override it."""
    lookback_days: float = 7.0
    step_s: float = 300.0
    min_completeness: float = 0.95
    partial_memory_min_days: float = 1.0
    """Memory measured in less than ``min_completeness`` of the lookback is still sized on when its samples add
    up to at least this many days: on the measured samples only, the statistic widened by ``1 + 1/days`` (as the
    Kubernetes VPA widens the bounds of a short history), with no forecast. Below it memory is unknown (the
    target keeps at least the current memory). Set it above ``lookback_days`` to treat any incomplete memory
    record as unknown."""
    size_without_memory: bool = False
    """A VM whose memory is unknown (no memory metric) is sized on CPU alone, keeping at least its current memory,
    only when true; otherwise it is skipped with "memory unknown" as the reason. Applies to the live sources."""
    prometheus_url: str | None = None
    prometheus_ca_bundle: str | None = None
    """PEM file of the CA(s) that signed Prometheus' certificate; the system's CAs when unset. TLS is always
    verified."""
    prometheus_bearer_token_file: str | None = None
    """File holding a bearer token (re-read each run, as a mounted Secret rotates)."""
    prometheus_basic_auth_user: str | None = None
    prometheus_basic_auth_password_file: str | None = None
    cpu_query: str = DEFAULT_CPU_QUERY
    """Template: ``{vm}`` is replaced by the VM's metrics instance (name by default)."""
    memory_query: str = DEFAULT_MEMORY_QUERY
    instance_label_tag: str = "prometheus-instance"
    """VM tag naming its Prometheus instance label when it differs from the VM name."""
    timeout_s: float = 30.0
    prometheus_max_response_mb: float = 16.0
    """An answer larger than this many MiB (after decompression) is refused while it is read, and that VM is
    skipped: an answer holds at most 10,000 points of one VM's series, under 1 MiB, so a bigger one is a query
    that selects too much (or a Prometheus that misbehaves), not data to hold in memory."""


AZURE_MONITOR_GRAINS_S = (60.0, 300.0, 900.0, 1800.0, 3600.0, 21600.0, 43200.0, 86400.0)


@dataclass(frozen=True, slots=True)
class AzureMonitorSettings:
    """The Azure Monitor metrics source (``metrics.source: azure-monitor``)."""

    endpoint: str = "https://{region}.metrics.monitor.azure.com"
    """Regional endpoint of the metrics data plane; ``{region}`` is each VM's region (sovereign clouds:
    ``https://{region}.metrics.monitor.azure.cn``, with ``audience`` to match)."""
    audience: str = "https://metrics.monitor.azure.com"
    concurrency: int = 4
    """Batch calls in flight at once (the service throttles per subscription: keep it small)."""
    batch_size: int = 50
    """Resources per call (the service's maximum is 50)."""
    granularity_s: float = 0.0
    """Time grain asked of the service; 0 means ``metrics.step_s``. One of 60, 300, 900, 1800, 3600, ... s."""
    max_points_per_call: int = 8640
    """Points per series per call (the API does not page): a longer lookback is split in time."""
    max_attempts: int = 5
    """Calls per batch in all when throttled (429) or failing with 5xx/connection errors."""
    backoff_base_s: float = 1.0
    max_retry_delay_s: float = 60.0
    """Longest wait honoured from a Retry-After (a longer ask is cut to it)."""
    timeout_s: float = 60.0
    max_response_mb: float = 128.0
    """A call's answer larger than this is refused (that batch is skipped) rather than held in memory; 50 VMs x
    8,640 points x 2 metrics are about 50 MB."""


@dataclass(frozen=True, slots=True)
class ForecastSettings:
    method: str = "library"
    """``library`` (forecasting.pipeline.fit_serving_model's model choice), ``seasonal-profile`` (cheap
    P95-oriented weekly/daily profile, for large fleets), or ``none`` (observed only)."""
    horizon_days: float = 7.0
    profile_quantile: float = 0.95
    workers: int = 2
    """Forecast fits in parallel (Prophet fits run mostly in a cmdstan subprocess, so threads help)."""
    library_candidates: tuple[str, ...] = (
        "seasonal_naive_1w+anchor",
        "seasonal_naive_1w",
        "seasonal_naive_1d+anchor",
        "seasonal_naive_1d",
    )
    """Candidates the library backtests and chooses from. The default is the library's cheap seasonal models
    (weekly ones only once 14 days of history exist): ~0.03 s per series. An empty list means the library's
    full list including Prophet (~1.5 s per series on 7 days at 5 min, too slow for large fleets)."""


@dataclass(frozen=True, slots=True)
class PriceSettings:
    refresh: bool = False
    """Refresh from the Azure Retail Prices API (needs internet); the last good copy stays in cache_dir."""
    api_url: str = "https://prices.azure.com/api/retail/prices"
    cache_dir: str | None = None
    timeout_s: float = 30.0


@dataclass(frozen=True, slots=True)
class AzureSettings:
    subscriptions: tuple[str, ...] = ()
    resource_groups: tuple[str, ...] = ()
    """Empty: every resource group of each subscription."""
    max_response_mb: float = 64.0
    """An answer of Azure Resource Manager (a page of the VM or scale set listing, one resource) larger than this
    many MiB is refused while it is read, and the call fails as permanent: a page of VMs with their instance
    views is well under 10 MiB, so a bigger one is not an inventory to hold in memory."""


@dataclass(frozen=True, slots=True)
class Settings:
    dry_run: bool = True
    thresholds: Thresholds = field(default_factory=Thresholds)
    gates: Gates = field(default_factory=Gates)
    metrics: MetricsSettings = field(default_factory=MetricsSettings)
    azure_monitor: AzureMonitorSettings = field(default_factory=AzureMonitorSettings)
    forecast: ForecastSettings = field(default_factory=ForecastSettings)
    prices: PriceSettings = field(default_factory=PriceSettings)
    azure: AzureSettings = field(default_factory=AzureSettings)
    audit_log: str | None = None
    act: ActSettings = field(default_factory=ActSettings)
    """The acting side's settings (section ``act:`` of the file; its module owns the fields and their checks)."""

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)


_SECTIONS: dict[str, type[Any]] = {
    "thresholds": Thresholds,
    "gates": Gates,
    "metrics": MetricsSettings,
    "azure_monitor": AzureMonitorSettings,
    "forecast": ForecastSettings,
    "prices": PriceSettings,
    "azure": AzureSettings,
}
_CHOICES = {
    ("thresholds", "memory_statistic"): ("p95", "max"),
    ("forecast", "method"): ("library", "seasonal-profile", "none"),
    ("metrics", "source"): METRICS_SOURCES,
}


def _coerce(section: str, name: str, hint: Any, value: Any) -> Any:
    where = f"{section}.{name}" if section else name
    text = str(hint)
    if text.startswith("tuple"):
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list):
            raise SettingsError(f"{where}: expected a list of strings, got {value!r}")
        return tuple(str(v) for v in value)
    if "bool" in text and "str" not in text:
        if not isinstance(value, bool):
            raise SettingsError(f"{where}: expected true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int | float) or not float(value).is_integer():
            raise SettingsError(f"{where}: expected a whole number, got {value!r}")
        return int(value)
    if "float" in text or "int" in text:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise SettingsError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if "str" in text:
        if value is None and "None" in text:
            return None
        if not isinstance(value, str):
            raise SettingsError(f"{where}: expected a string, got {value!r}")
        choices = _CHOICES.get((section, name))
        if choices and value not in choices:
            raise SettingsError(f"{where}: {value!r} is not one of {', '.join(choices)}")
        return value
    return value


def _build(section: str, cls: type[Any], doc: Mapping[str, Any]) -> Any:
    hints = get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(doc) - names)
    if unknown:
        raise SettingsError(
            f"{section or 'settings'}: unknown key(s) {', '.join(unknown)}; accepted: {', '.join(sorted(names))}"
        )
    return cls(**{k: _coerce(section, k, hints[k], v) for k, v in doc.items()})


def settings_from_mapping(doc: Mapping[str, Any]) -> Settings:
    top: dict[str, Any] = {}
    for key, value in doc.items():
        if key in _SECTIONS:
            if not isinstance(value, Mapping):
                raise SettingsError(f"{key}: expected a mapping of settings, got {value!r}")
            top[key] = _build(key, _SECTIONS[key], value)
        elif key == "act":
            top[key] = _act_settings(value)
        elif key in ("dry_run", "audit_log"):
            top[key] = _coerce("", key, get_type_hints(Settings)[key], value)
        else:
            accepted = sorted([*_SECTIONS, "act", "dry_run", "audit_log"])
            raise SettingsError(f"unknown settings key {key!r}; accepted: {', '.join(accepted)}")
    if "act" not in top:
        top["act"] = _act_settings({})
    settings = Settings(**top)
    validate(settings)
    return settings


def _act_settings(value: Any) -> ActSettings:
    try:
        return ActSettings.from_mapping(value or {})
    except ValueError as exc:
        raise SettingsError(str(exc)) from exc


def validate(settings: Settings) -> None:
    t, g, m = settings.thresholds, settings.gates, settings.metrics
    for name, v in (
        ("thresholds.cpu_p95_max_percent", t.cpu_p95_max_percent),
        ("thresholds.cpu_p95_max_percent_user_facing", t.cpu_p95_max_percent_user_facing),
        ("thresholds.memory_max_percent", t.memory_max_percent),
    ):
        if not 0 < v <= 100:
            raise SettingsError(f"{name}: {v} is outside (0, 100] percent")
    if not 0 <= g.min_confidence <= 1:
        raise SettingsError(f"gates.min_confidence: {g.min_confidence} is outside [0, 1]")
    if g.finops_lead_above_usd > g.executive_above_usd:
        raise SettingsError("gates.finops_lead_above_usd must not exceed gates.executive_above_usd")
    if m.lookback_days <= 0 or m.step_s <= 0:
        raise SettingsError("metrics.lookback_days and metrics.step_s must be > 0")
    if not 0 < m.min_completeness <= 1:
        raise SettingsError(f"metrics.min_completeness: {m.min_completeness} is outside (0, 1]")
    if not 0 < m.partial_memory_min_days <= 366:
        raise SettingsError(f"metrics.partial_memory_min_days: {m.partial_memory_min_days} is outside (0, 366] days")
    for name, cap in (
        ("metrics.prometheus_max_response_mb", m.prometheus_max_response_mb),
        ("azure.max_response_mb", settings.azure.max_response_mb),
    ):
        if not MIN_RESPONSE_MB <= cap <= MAX_RESPONSE_MB:
            raise SettingsError(f"{name}: {cap:g} is outside [{MIN_RESPONSE_MB:g}, {MAX_RESPONSE_MB:g}] MiB")
    if m.prometheus_basic_auth_password_file and not m.prometheus_basic_auth_user:
        raise SettingsError("metrics.prometheus_basic_auth_password_file needs metrics.prometheus_basic_auth_user")
    if m.prometheus_bearer_token_file and m.prometheus_basic_auth_user:
        raise SettingsError("metrics: use either a bearer token file or basic auth for Prometheus, not both")
    _validate_azure_monitor(settings.azure_monitor, m)


def _validate_azure_monitor(a: AzureMonitorSettings, m: MetricsSettings) -> None:
    if not a.endpoint.startswith("https://"):
        raise SettingsError(f"azure_monitor.endpoint: {a.endpoint[:80]!r} must be an https:// URL")
    if not 1 <= a.concurrency <= 64:
        raise SettingsError(f"azure_monitor.concurrency: {a.concurrency} is outside 1-64")
    if not 1 <= a.batch_size <= 50:
        raise SettingsError(f"azure_monitor.batch_size: {a.batch_size} is outside 1-50 (the service's maximum)")
    grain = a.granularity_s or m.step_s
    live = m.source or ("prometheus" if m.prometheus_url else "azure-monitor")
    if live == "azure-monitor" and grain not in AZURE_MONITOR_GRAINS_S:
        accepted = ", ".join(f"{g:g}" for g in AZURE_MONITOR_GRAINS_S)
        what = "azure_monitor.granularity_s" if a.granularity_s else "metrics.step_s"
        raise SettingsError(f"{what}: {grain:g} s is not an Azure Monitor time grain; accepted: {accepted}")
    if a.max_points_per_call < 1 or a.max_attempts < 1:
        raise SettingsError("azure_monitor.max_points_per_call and azure_monitor.max_attempts must be >= 1")
    if a.backoff_base_s < 0 or a.max_retry_delay_s < 0 or a.timeout_s <= 0 or a.max_response_mb <= 0:
        raise SettingsError(
            "azure_monitor: backoff_base_s and max_retry_delay_s must be >= 0, timeout_s and max_response_mb > 0"
        )


MAX_SETTINGS_BYTES = 1024 * 1024


class _NoAliasLoader(yaml.SafeLoader):
    """YAML without aliases: ``*name`` references let a few lines expand into gigabytes ("billion laughs")."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
            raise yaml.composer.ComposerError(None, None, "aliases (*name) are not accepted in settings", mark)
        return super().compose_node(parent, index)


def load_settings(path: Path | None) -> Settings:
    """Settings from a YAML or JSON file (JSON is YAML); defaults when ``path`` is None. The file is bounded
    (a regular file of at most 1 MiB, UTF-8) and YAML aliases are refused."""
    if path is None:
        return settings_from_mapping({})
    try:
        text = read_text(path, "settings file", max_bytes=MAX_SETTINGS_BYTES)
    except FileProblem as exc:
        raise SettingsError(str(exc)) from None
    try:
        doc = json.loads(text) if path.suffix == ".json" else yaml.load(text, Loader=_NoAliasLoader)
    except RecursionError:
        raise SettingsError(f"{path}: nested too deeply") from None
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        one_line = " ".join(str(exc).split())[:300]
        raise SettingsError(f"{path}: not valid {'JSON' if path.suffix == '.json' else 'YAML'}: {one_line}") from None
    if doc is None:
        doc = {}
    if not isinstance(doc, Mapping):
        raise SettingsError(f"{path}: expected a mapping at the top level")
    return settings_from_mapping(doc)
