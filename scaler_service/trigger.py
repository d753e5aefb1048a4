"""Trigger metadata, parsed and validated once at the edge into a frozen :class:`TriggerSpec`.

KEDA sends every trigger ``metadata`` key as a string on every call. The parser turns one distinct metadata
map into a spec once and caches it; every error names the key and the accepted form, and the servicer maps
it to ``INVALID_ARGUMENT``.

Metadata is written by whoever writes a ScaledObject, so sizes are checked before anything else (at most
:data:`MAX_METADATA_KEYS` keys, :data:`MAX_KEY_BYTES` per key, :data:`MAX_VALUE_BYTES` per value), errors
quote at most :data:`QUOTED_CHARS` characters of a value, numbers are plain ASCII decimals in a stated
range, and the parse cache is bounded in bytes (a refused map is cached as a short message, never as an
exception with its traceback).
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
from scaler_service.fit_resolution import FitTooCoarse, fit_resolution
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
# ASCII digits only: Python's \d (and float()) also take Arabic-Indic and full-width digits.
_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h|d|w|y)", re.ASCII)
_DURATION_FULL = re.compile(r"^(?:[0-9]+(?:\.[0-9]+)?(?:ms|s|m|h|d|w|y))+$", re.ASCII)
_DURATION_MAX_CHARS = 32
_NUMBER = re.compile(r"^[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)$", re.ASCII)
_NUMBER_MAX_CHARS = 32
_METRIC_NAME_MAX = 63

MAX_METADATA_KEYS = 64
MAX_KEY_BYTES = 256
MAX_VALUE_BYTES = 4096
QUOTED_CHARS = 40
"""Errors quote at most this many characters of caller input."""
MAX_NUMBER = 1e12
"""Largest threshold, activation threshold or latency SLO accepted."""
MIN_THRESHOLD = 1e-6
DEFAULT_PARSE_CACHE_BYTES = 32 * 2**20
_ENTRY_OVERHEAD_BYTES = 600
"""Approximate bytes of one parse-cache entry beyond its strings (tuple, spec, dict slot)."""
MAX_UNKNOWN_KEYS_REMEMBERED = 256


def quoted(text: str, limit: int = QUOTED_CHARS) -> str:
    """``repr`` of at most ``limit`` characters of caller input, marked when cut."""
    return repr(text) if len(text) <= limit else repr(text[:limit]) + f"... ({len(text)} chars)"


class TriggerError(ValueError):
    """Invalid trigger metadata. ``key`` is the metadata key at fault."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key


def parse_duration(text: str) -> float:
    """Seconds of a Prometheus/Go style duration (``30s``, ``10m``, ``1h30m``, ``14d``, ``2w``)."""
    s = text.strip()
    if len(s) > _DURATION_MAX_CHARS or not _DURATION_FULL.match(s):
        raise ValueError(f"not {DURATION_FORM}: {quoted(text)}")
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


def _number(key: str, raw: str, *, form: str, low: float, high: float, low_open: bool = False) -> float:
    """A plain ASCII decimal (``12``, ``0.5``, ``-3``; no exponent, no ``_``, no other digits) in range."""
    text = raw.strip()
    if len(text) > _NUMBER_MAX_CHARS or not _NUMBER.match(text):
        raise TriggerError(key, f"must be {form} written as a plain decimal like 12 or 0.5, got {quoted(raw)}")
    value = float(text)
    if not (math.isfinite(value) and (value > low if low_open else value >= low) and value <= high):
        raise TriggerError(key, f"must be {form}, got {quoted(raw)}")
    return value


def _duration(key: str, raw: str, *, low: float, high: float) -> float:
    try:
        seconds = parse_duration(raw)
    except ValueError:
        raise TriggerError(key, f"must be {DURATION_FORM}, got {quoted(raw)}") from None
    if not low <= seconds <= high:
        raise TriggerError(
            key,
            f"must be {DURATION_FORM} between {format_duration(low)} and {format_duration(high)}, got {quoted(raw)}",
        )
    return seconds


def _check_sizes(metadata: Mapping[str, str]) -> None:
    """Refuse oversized metadata before it is hashed, cached, parsed or logged."""
    if len(metadata) > MAX_METADATA_KEYS:
        raise TriggerError("metadata", f"has {len(metadata)} keys; at most {MAX_METADATA_KEYS} are accepted")
    for key, value in metadata.items():
        if len(key) > MAX_KEY_BYTES or len(key.encode("utf-8", "surrogatepass")) > MAX_KEY_BYTES:
            raise TriggerError(quoted(key), f"key is longer than {MAX_KEY_BYTES} bytes")
        if len(value) > MAX_VALUE_BYTES or len(value.encode("utf-8", "surrogatepass")) > MAX_VALUE_BYTES:
            raise TriggerError(key, f"value is longer than {MAX_VALUE_BYTES} bytes ({len(value)} characters)")


class TriggerParser:
    """Parses metadata maps into specs, cached by the metadata items: one parse per distinct map."""

    def __init__(
        self,
        *,
        default_address: str,
        allowed_addresses: frozenset[str],
        ignore_address: bool = False,
        max_cached: int = 50_000,
        max_cached_bytes: int = DEFAULT_PARSE_CACHE_BYTES,
        max_points_per_fit: int | None = None,
    ) -> None:
        self._default_address = default_address
        self._allowed = allowed_addresses
        self._ignore_address = ignore_address
        self._max_cached = max_cached
        self._max_cached_bytes = max_cached_bytes
        self._max_points_per_fit = max_points_per_fit
        # A refused map is cached as (key, message): an exception would keep its traceback and frames alive.
        self._cache: OrderedDict[tuple[tuple[str, str], ...], tuple[TriggerSpec | tuple[str, str], int]] = OrderedDict()
        self._cached_bytes = 0
        self._lock = threading.Lock()
        self._warned_keys: set[str] = set()
        self._unknown_keys_dropped = 0
        self._countries = frozenset(holidays.list_supported_countries())
        self.parses = 0
        """How many parses ran (not cache hits): lets tests check the caching."""

    @property
    def cached_bytes(self) -> int:
        """Approximate bytes held by the parse cache (bounded by ``max_cached_bytes``)."""
        return self._cached_bytes

    def parse(self, metadata: Mapping[str, str]) -> TriggerSpec:
        _check_sizes(metadata)  # before anything is hashed, cached or logged
        items = tuple(sorted(metadata.items()))
        with self._lock:
            entry = self._cache.get(items)
            if entry is not None:
                self._cache.move_to_end(items)
        if entry is None:
            hit: TriggerSpec | tuple[str, str]
            try:
                hit = self._parse(metadata)
            except TriggerError as exc:
                hit = (exc.key, str(exc)[len(exc.key) + 2 :])
            size = _ENTRY_OVERHEAD_BYTES + sum(len(k) + len(v) for k, v in items)
            if isinstance(hit, tuple):
                size += len(hit[0]) + len(hit[1])
            with self._lock:
                self.parses += 1
                old = self._cache.pop(items, None)
                if old is not None:
                    self._cached_bytes -= old[1]
                self._cache[items] = (hit, size)
                self._cached_bytes += size
                while self._cache and (
                    len(self._cache) > self._max_cached or self._cached_bytes > self._max_cached_bytes
                ):
                    _, (_, evicted) = self._cache.popitem(last=False)
                    self._cached_bytes -= evicted
        else:
            hit = entry[0]
        if isinstance(hit, tuple):
            raise TriggerError(*hit)
        return hit

    def _warn_unknown(self, keys: list[str]) -> None:
        """Each unknown key is logged once; at most MAX_UNKNOWN_KEYS_REMEMBERED are remembered (then one line
        says that further ones are not logged)."""
        new: list[str] = []
        first_drop = False
        with self._lock:
            for key in keys:
                short = key[:QUOTED_CHARS]
                if short in self._warned_keys:
                    continue
                if len(self._warned_keys) >= MAX_UNKNOWN_KEYS_REMEMBERED:
                    first_drop = self._unknown_keys_dropped == 0
                    self._unknown_keys_dropped += 1
                    continue
                self._warned_keys.add(short)
                new.append(short)
        for key in new:
            log.warning("unknown trigger metadata key ignored", key=key, known=sorted(KNOWN_KEYS))
        if first_drop:
            log.warning(
                "many unknown trigger metadata keys: further ones are ignored without a log line",
                remembered=MAX_UNKNOWN_KEYS_REMEMBERED,
            )

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
                # The allowlist is not listed back: it maps the cluster's monitoring to whoever asks.
                raise TriggerError(
                    "prometheusAddress",
                    f"{quoted(raw_address)} is not in this server's allowlist of Prometheus addresses; "
                    "ask the operator to add it with --prometheus-allowlist",
                )

        raw = get("threshold")
        if raw is None:
            raise TriggerError("threshold", "is required: a number > 0 (the value one replica should carry)")
        threshold = _number(
            "threshold", raw, form="a number > 0 (from 0.000001 to 1000000000000)", low=MIN_THRESHOLD, high=MAX_NUMBER
        )

        raw = get("activationThreshold")
        activation = (
            0.0
            if raw is None
            else _number(
                "activationThreshold", raw, form="a number >= 0 (at most 1000000000000)", low=0.0, high=MAX_NUMBER
            )
        )

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
        if self._max_points_per_fit is not None:
            try:
                fit_resolution(history, step, self._max_points_per_fit)
            except FitTooCoarse as exc:
                raise TriggerError("historyTimeWindow", str(exc)) from None

        raw = get("mode")
        if raw is None:
            mode = Mode.PREDICTIVE
        else:
            try:
                mode = Mode(raw.strip().lower())
            except ValueError:
                raise TriggerError("mode", f"must be one of predictive, observe, reactive, got {quoted(raw)}") from None

        raw = get("refitInterval")
        refit = None if raw is None else _duration("refitInterval", raw, low=MIN_REFIT_INTERVAL_S, high=30 * 86_400.0)

        raw = get("holidays")
        country = None
        if raw is not None:
            country = raw.strip().upper()
            if country not in self._countries:
                raise TriggerError(
                    "holidays",
                    f"must be a country code known to the `holidays` package (e.g. US, DE, FR), got {quoted(raw)}",
                )

        raw = get("minConfidence")
        min_conf = (
            DEFAULT_MIN_CONFIDENCE
            if raw is None
            else _number("minConfidence", raw, form="a number in [0, 1]", low=0.0, high=1.0)
        )

        raw = get("predictQuantile")
        form = "a number in [0.5, 0.99] (0.5: the point forecast; 0.9: its 90th percentile)"
        quantile = (
            DEFAULT_PREDICT_QUANTILE if raw is None else _number("predictQuantile", raw, form=form, low=0.5, high=0.99)
        )

        latency_query = get("latencyQuery")
        raw_slo = get("latencySLO")
        if (latency_query is None) != (raw_slo is None):
            missing = "latencySLO" if raw_slo is None else "latencyQuery"
            raise TriggerError(missing, "latencyQuery and latencySLO go together: give both or neither")
        slo = None
        if raw_slo is not None:
            slo = _number(
                "latencySLO",
                raw_slo,
                form="a number > 0 (at most 1000000000000, in the unit of latencyQuery)",
                low=0.0,
                high=MAX_NUMBER,
                low_open=True,
            )

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
    "quoted",
]
