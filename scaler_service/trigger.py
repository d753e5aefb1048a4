"""Trigger metadata, parsed and validated once at the edge into a frozen :class:`TriggerSpec`.

KEDA sends every trigger ``metadata`` key as a string on every call. The parser turns one distinct metadata
map into a spec once and caches it; every error names the key and the accepted form, and the servicer maps
it to ``INVALID_ARGUMENT``.
"""

from __future__ import annotations

import functools
import hashlib
import math
import re
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass

import holidays
import structlog

from scaler_service.decision import DEFAULT_PREDICT_QUANTILE, Mode
from scaler_service.settings import normalise_address

log = structlog.get_logger(__name__)

DEFAULT_PREDICT_HORIZON_S = 600.0
DEFAULT_HISTORY_WINDOW_S = 14 * 86_400.0
DEFAULT_QUERY_STEP_S = 60.0
DEFAULT_MIN_CONFIDENCE = 0.8
MIN_HISTORY_WINDOW_S = 2 * 86_400.0
"""The shortest history a model is fitted on (forecasting's preparation policy refuses less)."""
MAX_PREDICT_HORIZON_S = 12 * 3600.0
"""Fitted curves reach one day ahead and are refitted hourly: a longer horizon could not be served."""
MIN_QUERY_STEP_S = 1.0
MAX_QUERY_STEP_S = 86_400.0
MIN_REFIT_INTERVAL_S = 60.0

KNOWN_KEYS = frozenset(
    {
        "query",
        "prometheusAddress",
        "threshold",
        "activationThreshold",
        "predictHorizon",
        "historyTimeWindow",
        "queryStep",
        "mode",
        "refitInterval",
        "holidays",
        "minConfidence",
        "predictQuantile",
        "latencyQuery",
        "latencySLO",
    }
)
KEDA_KEYS = frozenset({"scalerAddress", "enableTLS", "unsafeSsl", "caCert", "tlsClientCert", "tlsClientKey"})
"""Keys KEDA itself reads; accepted and ignored."""

DURATION_FORM = "a duration like 30s, 10m, 1h30m, 14d or 2w"
_DURATION_UNITS = {
    "ms": 0.001,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
    "d": 86_400.0,
    "w": 7 * 86_400.0,
    "y": 365 * 86_400.0,
}
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w|y)")
_DURATION_FULL = re.compile(r"^(?:\d+(?:\.\d+)?(?:ms|s|m|h|d|w|y))+$")
_METRIC_NAME_MAX = 63


class TriggerError(ValueError):
    """Invalid trigger metadata. ``key`` is the metadata key at fault."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key


def parse_duration(text: str) -> float:
    """Seconds of a Prometheus/Go style duration (``30s``, ``10m``, ``1h30m``, ``14d``, ``2w``)."""
    s = text.strip()
    if not _DURATION_FULL.match(s):
        raise ValueError(f"not {DURATION_FORM}: {text!r}")
    return sum(float(n) * _DURATION_UNITS[u] for n, u in _DURATION_PART.findall(s))


def format_duration(seconds: float) -> str:
    """Inverse of :func:`parse_duration` for whole seconds (used in messages and /forecast)."""
    s = round(seconds)
    if s == 0:
        return "0s"
    parts = []
    for unit, size in (("d", 86_400), ("h", 3600), ("m", 60), ("s", 1)):
        n, s = divmod(s, size)
        if n:
            parts.append(f"{n}{unit}")
    return "".join(parts)


@dataclass(frozen=True, slots=True)
class SeriesKey:
    """The identity of a series: ScaledObjects with the same address, query and step share it."""

    address: str
    query: str
    step_s: float

    @property
    def id(self) -> str:
        """Stable string key (model cache key, persistence file name, /metrics label)."""
        digest = hashlib.sha256(f"{self.address}\x00{self.query}\x00{self.step_s:g}".encode()).hexdigest()
        return f"s-{digest[:16]}"


@dataclass(frozen=True, slots=True)
class TriggerSpec:
    query: str
    prometheus_address: str
    threshold: float
    activation_threshold: float = 0.0
    predict_horizon_s: float = DEFAULT_PREDICT_HORIZON_S
    history_window_s: float = DEFAULT_HISTORY_WINDOW_S
    query_step_s: float = DEFAULT_QUERY_STEP_S
    mode: Mode = Mode.PREDICTIVE
    refit_interval_s: float | None = None
    holidays_country: str | None = None
    min_confidence: float = DEFAULT_MIN_CONFIDENCE
    predict_quantile: float = DEFAULT_PREDICT_QUANTILE
    latency_query: str | None = None
    latency_slo: float | None = None

    @property
    def series_key(self) -> SeriesKey:
        return SeriesKey(self.prometheus_address, self.query, self.query_step_s)

    @property
    def latency_key(self) -> SeriesKey | None:
        if self.latency_query is None:
            return None
        return SeriesKey(self.prometheus_address, self.latency_query, self.query_step_s)

    @property
    def target_size(self) -> int:
        """KEDA's deprecated int64 target: never 0, because a target <= 0 makes Kubernetes reject the HPA."""
        return max(1, round(self.threshold))


@functools.lru_cache(maxsize=65_536)
def metric_name(namespace: str, name: str, query: str) -> str:
    """Lowercase ``[a-z0-9-]`` name, unique per trigger and stable across restarts and replicas."""
    digest = hashlib.sha256(f"{namespace}\x00{name}\x00{query}".encode()).hexdigest()[:10]
    readable = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    prefix = "foresight-"
    room = _METRIC_NAME_MAX - len(prefix) - len(digest) - 1
    readable = readable[:room].strip("-")
    return f"{prefix}{readable}-{digest}" if readable else f"{prefix}{digest}"


def _number(key: str, raw: str, *, form: str) -> float:
    try:
        value = float(raw.strip())
    except ValueError:
        raise TriggerError(key, f"must be {form}, got {raw!r}") from None
    if not math.isfinite(value):
        raise TriggerError(key, f"must be {form}, got {raw!r}")
    return value


def _duration(key: str, raw: str, *, low: float, high: float) -> float:
    try:
        seconds = parse_duration(raw)
    except ValueError:
        raise TriggerError(key, f"must be {DURATION_FORM}, got {raw!r}") from None
    if not low <= seconds <= high:
        raise TriggerError(
            key,
            f"must be {DURATION_FORM} between {format_duration(low)} and {format_duration(high)}, got {raw!r}",
        )
    return seconds


class TriggerParser:
    """Parses metadata maps into specs, cached by the metadata items: one parse per distinct map."""

    def __init__(
        self,
        *,
        default_address: str,
        allowed_addresses: frozenset[str],
        ignore_address: bool = False,
        max_cached: int = 50_000,
    ) -> None:
        self._default_address = default_address
        self._allowed = allowed_addresses
        self._ignore_address = ignore_address
        self._max_cached = max_cached
        self._cache: OrderedDict[tuple[tuple[str, str], ...], TriggerSpec | TriggerError] = OrderedDict()
        self._lock = threading.Lock()
        self._warned_keys: set[str] = set()
        self._countries = frozenset(holidays.list_supported_countries())
        self.parses = 0
        """How many parses ran (not cache hits): lets tests check the caching."""

    def parse(self, metadata: Mapping[str, str]) -> TriggerSpec:
        items = tuple(sorted(metadata.items()))
        with self._lock:
            hit = self._cache.get(items)
            if hit is not None:
                self._cache.move_to_end(items)
        if hit is None:
            try:
                hit = self._parse(metadata)
            except TriggerError as exc:
                hit = exc
            with self._lock:
                self.parses += 1
                self._cache[items] = hit
                if len(self._cache) > self._max_cached:
                    self._cache.popitem(last=False)
        if isinstance(hit, TriggerError):
            raise hit
        return hit

    def _warn_unknown(self, keys: list[str]) -> None:
        with self._lock:
            new = [k for k in keys if k not in self._warned_keys]
            self._warned_keys.update(new)
        for key in new:
            log.warning("unknown trigger metadata key ignored", key=key, known=sorted(KNOWN_KEYS))

    def _parse(self, metadata: Mapping[str, str]) -> TriggerSpec:
        def get(key: str) -> str | None:
            # KEDA passes `<key>FromEnv` with the variable resolved; the plain key wins when both exist.
            value = metadata.get(key)
            if value is None:
                value = metadata.get(key + "FromEnv")
            if value is None or value.strip() == "":
                return None
            return value

        unknown = [
            k
            for k in metadata
            if k not in KNOWN_KEYS
            and k not in KEDA_KEYS
            and not (
                k.endswith("FromEnv") and (k[: -len("FromEnv")] in KNOWN_KEYS or k[: -len("FromEnv")] in KEDA_KEYS)
            )
        ]
        if unknown:
            self._warn_unknown(sorted(unknown))

        query = get("query")
        if query is None:
            raise TriggerError(
                "query",
                "is required: a PromQL expression returning one series (or, with the replay "
                "source, a bundled trace name or a CSV path)",
            )
        query = query.strip()

        raw_address = get("prometheusAddress")
        if self._ignore_address or raw_address is None:
            address = self._default_address
        else:
            address = normalise_address(raw_address)
            if address not in self._allowed:
                raise TriggerError(
                    "prometheusAddress",
                    f"{raw_address!r} is not in this server's allowlist "
                    f"(allowed: {', '.join(sorted(self._allowed))}); "
                    "add it with --prometheus-allowlist",
                )

        raw = get("threshold")
        if raw is None:
            raise TriggerError("threshold", "is required: a number > 0 (the value one replica should carry)")
        threshold = _number("threshold", raw, form="a number > 0")
        if threshold <= 0:
            raise TriggerError("threshold", f"must be a number > 0, got {raw!r}")

        raw = get("activationThreshold")
        activation = 0.0 if raw is None else _number("activationThreshold", raw, form="a number >= 0")
        if activation < 0:
            raise TriggerError("activationThreshold", f"must be a number >= 0, got {raw!r}")

        raw = get("queryStep")
        step = (
            DEFAULT_QUERY_STEP_S
            if raw is None
            else _duration("queryStep", raw, low=MIN_QUERY_STEP_S, high=MAX_QUERY_STEP_S)
        )

        raw = get("predictHorizon")
        horizon = (
            DEFAULT_PREDICT_HORIZON_S
            if raw is None
            else _duration("predictHorizon", raw, low=1.0, high=MAX_PREDICT_HORIZON_S)
        )

        raw = get("historyTimeWindow")
        history = (
            DEFAULT_HISTORY_WINDOW_S
            if raw is None
            else _duration("historyTimeWindow", raw, low=MIN_HISTORY_WINDOW_S, high=400 * 86_400.0)
        )
        if history < 10 * step:
            raise TriggerError("historyTimeWindow", f"must span at least 10 queryStep ({format_duration(10 * step)})")

        raw = get("mode")
        if raw is None:
            mode = Mode.PREDICTIVE
        else:
            try:
                mode = Mode(raw.strip().lower())
            except ValueError:
                raise TriggerError("mode", f"must be one of predictive, observe, reactive, got {raw!r}") from None

        raw = get("refitInterval")
        refit = None if raw is None else _duration("refitInterval", raw, low=MIN_REFIT_INTERVAL_S, high=30 * 86_400.0)

        raw = get("holidays")
        country = None
        if raw is not None:
            country = raw.strip().upper()
            if country not in self._countries:
                raise TriggerError(
                    "holidays",
                    f"must be a country code known to the `holidays` package (e.g. US, DE, FR), got {raw!r}",
                )

        raw = get("minConfidence")
        min_conf = DEFAULT_MIN_CONFIDENCE if raw is None else _number("minConfidence", raw, form="a number in [0, 1]")
        if not 0.0 <= min_conf <= 1.0:
            raise TriggerError("minConfidence", f"must be a number in [0, 1], got {raw!r}")

        raw = get("predictQuantile")
        form = "a number in [0.5, 0.99] (0.5: the point forecast; 0.9: its 90th percentile)"
        quantile = DEFAULT_PREDICT_QUANTILE if raw is None else _number("predictQuantile", raw, form=form)
        if not 0.5 <= quantile <= 0.99:
            raise TriggerError("predictQuantile", f"must be {form}, got {raw!r}")

        latency_query = get("latencyQuery")
        raw_slo = get("latencySLO")
        if (latency_query is None) != (raw_slo is None):
            missing = "latencySLO" if raw_slo is None else "latencyQuery"
            raise TriggerError(missing, "latencyQuery and latencySLO go together: give both or neither")
        slo = None
        if raw_slo is not None:
            slo = _number("latencySLO", raw_slo, form="a number > 0 (in the unit of latencyQuery)")
            if slo <= 0:
                raise TriggerError("latencySLO", f"must be a number > 0 (in the unit of latencyQuery), got {raw_slo!r}")

        return TriggerSpec(
            query=query,
            prometheus_address=address,
            threshold=threshold,
            activation_threshold=activation,
            predict_horizon_s=horizon,
            history_window_s=history,
            query_step_s=step,
            mode=mode,
            refit_interval_s=refit,
            holidays_country=country,
            min_confidence=min_conf,
            predict_quantile=quantile,
            latency_query=None if latency_query is None else latency_query.strip(),
            latency_slo=slo,
        )


__all__ = [
    "KEDA_KEYS",
    "KNOWN_KEYS",
    "SeriesKey",
    "TriggerError",
    "TriggerParser",
    "TriggerSpec",
    "format_duration",
    "metric_name",
    "parse_duration",
]
