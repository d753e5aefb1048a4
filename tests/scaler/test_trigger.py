"""Trigger metadata parsing: defaults, accepted forms, and an error naming the key for every bad input."""

from __future__ import annotations

import re

import pytest
from structlog.testing import capture_logs

from scaler_service.decision import Mode
from scaler_service.trigger import (
    SeriesKey,
    TriggerError,
    TriggerParser,
    metric_name,
    parse_duration,
)

DEFAULT = "http://prometheus:9090"
OTHER = "http://other-prometheus:9090"


def parser() -> TriggerParser:
    return TriggerParser(default_address=DEFAULT, allowed_addresses=frozenset({DEFAULT, OTHER}))


def test_defaults() -> None:
    spec = parser().parse({"query": "sum(rate(x[2m]))", "threshold": "50", "scalerAddress": "s:9090"})
    assert spec.query == "sum(rate(x[2m]))"
    assert spec.prometheus_address == DEFAULT
    assert spec.threshold == 50.0
    assert spec.activation_threshold == 0.0
    assert spec.predict_horizon_s == 600.0
    assert spec.history_window_s == 14 * 86400.0
    assert spec.query_step_s == 60.0
    assert spec.mode is Mode.PREDICTIVE
    assert spec.min_confidence == 0.8
    assert spec.predict_quantile == 0.9
    assert spec.refit_interval_s is None
    assert spec.holidays_country is None
    assert spec.latency_query is None and spec.latency_slo is None
    assert spec.target_size == 50


def test_every_key() -> None:
    spec = parser().parse(
        {
            "query": "q",
            "prometheusAddress": OTHER + "/",
            "threshold": "2.5",
            "activationThreshold": "1",
            "predictHorizon": "1h30m",
            "historyTimeWindow": "2w",
            "queryStep": "5m",
            "mode": "Observe",
            "refitInterval": "6h",
            "holidays": "us",
            "minConfidence": "0.5",
            "predictQuantile": "0.5",
            "latencyQuery": "histogram_quantile(0.99, x)",
            "latencySLO": "0.25",
            "enableTLS": "true",
            "unsafeSsl": "false",
        }
    )
    assert spec.prometheus_address == OTHER
    assert (spec.threshold, spec.activation_threshold) == (2.5, 1.0)
    assert spec.predict_horizon_s == 5400.0
    assert spec.history_window_s == 14 * 86400.0
    assert spec.query_step_s == 300.0
    assert spec.mode is Mode.OBSERVE
    assert spec.refit_interval_s == 6 * 3600.0
    assert spec.holidays_country == "US"
    assert spec.min_confidence == 0.5
    assert spec.predict_quantile == 0.5
    assert spec.latency_query == "histogram_quantile(0.99, x)"
    assert spec.latency_slo == 0.25
    assert spec.target_size == 2  # round(2.5) is 2 (banker's), never 0


def test_from_env_keys_arrive_resolved() -> None:
    spec = parser().parse({"query": "q", "thresholdFromEnv": "7", "modeFromEnv": "reactive"})
    assert spec.threshold == 7.0
    assert spec.mode is Mode.REACTIVE
    # the plain key wins over its FromEnv twin
    assert parser().parse({"query": "q", "threshold": "3", "thresholdFromEnv": "7"}).threshold == 3.0


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30s", 30),
        ("10m", 600),
        ("1h30m", 5400),
        ("14d", 14 * 86400),
        ("2w", 14 * 86400),
        ("1.5h", 5400),
        ("500ms", 0.5),
    ],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "10", "m", "10 m", "-5m", "1x", "10m30", "P1D"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError, match="duration like"):
        parse_duration(text)


BASE = {"query": "q", "threshold": "10"}


@pytest.mark.parametrize(
    ("change", "key", "message"),
    [
        ({"query": None}, "query", "is required"),
        ({"query": "  "}, "query", "is required"),
        ({"threshold": None}, "threshold", "is required"),
        ({"threshold": "abc"}, "threshold", "must be a number > 0.*got 'abc'"),
        ({"threshold": "0"}, "threshold", "must be a number > 0"),
        ({"threshold": "-3"}, "threshold", "must be a number > 0"),
        ({"threshold": "nan"}, "threshold", "must be a number > 0"),
        ({"threshold": "inf"}, "threshold", "must be a number > 0"),
        ({"activationThreshold": "-1"}, "activationThreshold", "must be a number >= 0"),
        ({"activationThreshold": "x"}, "activationThreshold", "must be a number >= 0"),
        ({"predictHorizon": "10"}, "predictHorizon", "duration like 30s, 10m"),
        ({"predictHorizon": "2d"}, "predictHorizon", "between"),
        ({"historyTimeWindow": "1d"}, "historyTimeWindow", "between 2d"),
        ({"historyTimeWindow": "abc"}, "historyTimeWindow", "duration like"),
        ({"queryStep": "0s"}, "queryStep", "between"),
        ({"queryStep": "5 minutes"}, "queryStep", "duration like"),
        ({"mode": "aggressive"}, "mode", "must be one of predictive, observe, reactive"),
        ({"refitInterval": "10s"}, "refitInterval", "between 1m"),
        ({"holidays": "XX"}, "holidays", "country code"),
        ({"minConfidence": "1.5"}, "minConfidence", r"in \[0, 1\]"),
        ({"minConfidence": "high"}, "minConfidence", r"in \[0, 1\]"),
        ({"predictQuantile": "0.3"}, "predictQuantile", r"in \[0\.5, 0\.99\]"),
        ({"predictQuantile": "p90"}, "predictQuantile", r"in \[0\.5, 0\.99\]"),
        ({"latencyQuery": "lat"}, "latencySLO", "give both or neither"),
        ({"latencySLO": "0.2"}, "latencyQuery", "give both or neither"),
        ({"latencyQuery": "lat", "latencySLO": "0"}, "latencySLO", "must be a number > 0"),
        (
            {"prometheusAddress": "http://evil.example:9090"},
            "prometheusAddress",
            "not in this server's allowlist",
        ),
    ],
)
def test_bad_metadata_names_the_key(change: dict[str, str | None], key: str, message: str) -> None:
    metadata = {**BASE, **{k: v for k, v in change.items() if v is not None}}
    for k, v in change.items():
        if v is None:
            metadata.pop(k, None)
    with pytest.raises(TriggerError) as info:
        parser().parse(metadata)
    assert info.value.key == key
    assert str(info.value).startswith(f"{key}: ")
    assert re.search(message, str(info.value)), str(info.value)


def test_unknown_keys_are_not_fatal() -> None:
    p = parser()
    spec = p.parse({**BASE, "apiKey": "x", "someTypo": "1"})
    assert spec.threshold == 10.0


def test_parse_once_per_distinct_metadata() -> None:
    p = parser()
    a = p.parse(dict(BASE))
    b = p.parse(dict(reversed(list(BASE.items()))))
    assert a is b
    assert p.parses == 1
    with pytest.raises(TriggerError):
        p.parse({"query": "q", "threshold": "x"})
    with pytest.raises(TriggerError):
        p.parse({"query": "q", "threshold": "x"})
    assert p.parses == 2
    p.parse({**BASE, "threshold": "11"})
    assert p.parses == 3


def test_series_identity_is_address_query_step() -> None:
    p = parser()
    a = p.parse({**BASE, "threshold": "1", "mode": "observe"})
    b = p.parse({**BASE, "threshold": "2", "minConfidence": "0.1"})
    c = p.parse({**BASE, "queryStep": "5m"})
    assert a.series_key == b.series_key == SeriesKey(DEFAULT, "q", 60.0)
    assert a.series_key.id == b.series_key.id
    assert c.series_key.id != a.series_key.id


def test_metric_names() -> None:
    n = metric_name("shop", "Checkout_API.v2", "sum(rate(x[2m]))")
    assert re.fullmatch(r"[a-z0-9-]{1,63}", n)
    assert n.startswith("foresight-checkout-api-v2-")
    assert n == metric_name("shop", "Checkout_API.v2", "sum(rate(x[2m]))")  # stable
    assert n != metric_name("shop", "Checkout_API.v2", "other")  # unique per trigger
    assert n != metric_name("other-ns", "Checkout_API.v2", "sum(rate(x[2m]))")
    long = metric_name("ns", "a" * 300, "q")
    assert len(long) <= 63 and re.fullmatch(r"[a-z0-9-]+", long)
    assert re.fullmatch(r"foresight-[0-9a-f]{10}", metric_name("ns", "___", "q"))


def test_unknown_keys_are_logged_once_per_key() -> None:
    import structlog

    p = parser()
    with structlog.testing.capture_logs() as logs:
        p.parse({**BASE, "apiKey": "x"})
        p.parse({**BASE, "apiKey": "y"})
        p.parse({**BASE, "apiKey": "z", "someTypo": "1"})
    warned = [e["key"] for e in logs if e["event"] == "unknown trigger metadata key ignored"]
    assert warned == ["apiKey", "someTypo"]


# --- hostile metadata: sizes, numbers, the parse cache, unknown keys ---------------------------------------

BASE_OK = {"query": "q", "threshold": "10"}


@pytest.mark.parametrize(
    "raw",
    ["1e-320", "1e3", "\u0661\u0662", "\uff11\uff12", "1_000", "nan", "inf", "-inf", "0x10", "0.0000001", "1" * 40],
)
def test_numbers_are_plain_ascii_decimals_in_range(raw: str) -> None:
    with pytest.raises(TriggerError) as info:
        parser().parse({**BASE_OK, "threshold": raw})
    assert info.value.key == "threshold"


@pytest.mark.parametrize("raw", ["12", "0.5", " 12 ", "+3", "12.", ".5", "1000000000000"])
def test_plain_decimals_are_accepted(raw: str) -> None:
    assert parser().parse({**BASE_OK, "threshold": raw}).threshold == float(raw)


@pytest.mark.parametrize("raw", ["\u0663m", "\uff13m", "1_0m", "1e3s"])
def test_durations_take_ascii_digits_only(raw: str) -> None:
    with pytest.raises(TriggerError) as info:
        parser().parse({**BASE_OK, "queryStep": raw})
    assert info.value.key == "queryStep"


def test_oversized_metadata_is_refused_first_naming_the_key_with_a_short_quote() -> None:
    with pytest.raises(TriggerError) as info:
        parser().parse({**BASE_OK, "threshold": "1" * 2**20})
    assert info.value.key == "threshold" and "longer than 4096 bytes" in str(info.value)
    assert len(str(info.value)) < 200
    long_key = "k" * 300
    with pytest.raises(TriggerError) as info:
        parser().parse({**BASE_OK, long_key: "x"})
    assert "longer than 256 bytes" in str(info.value) and len(str(info.value)) < 200
    with pytest.raises(TriggerError) as info:
        parser().parse({**BASE_OK, **{f"k{i}": "x" for i in range(100)}})
    assert info.value.key == "metadata" and "at most 64" in str(info.value)
    # A value within the size limit but wrong is quoted by a short prefix only.
    with pytest.raises(TriggerError) as info:
        parser().parse({**BASE_OK, "mode": "m" * 4000})
    assert len(str(info.value)) < 200


def test_the_parse_cache_is_bounded_in_bytes() -> None:
    p = TriggerParser(default_address=DEFAULT, allowed_addresses=frozenset({DEFAULT}), max_cached_bytes=2**20)
    for i in range(1000):
        with pytest.raises(TriggerError):
            p.parse({"query": f"q{i}" + "x" * 4000, "threshold": "ten"})
        p.parse({"query": f"ok{i}" + "y" * 4000, "threshold": "10"})
    assert 0 < p.cached_bytes <= 2**20
    # A refusal served from the cache is as specific as the first one.
    with pytest.raises(TriggerError) as info:
        p.parse({"query": "q999" + "x" * 4000, "threshold": "ten"})
    assert info.value.key == "threshold"


def test_unknown_keys_are_logged_once_each_and_in_bounded_number() -> None:
    p = parser()
    with capture_logs() as logs:
        for i in range(2000):
            p.parse({**BASE_OK, f"unknownKey{i}": "x"})
        p.parse({**BASE_OK, "unknownKey1": "x", "typo": "y"})
    lines = [entry for entry in logs if "unknown" in entry["event"]]
    assert 256 <= len(lines) <= 258
    assert all(len(entry.get("key", "")) <= 40 for entry in lines)


def test_the_allowlist_is_not_listed_back() -> None:
    with pytest.raises(TriggerError) as info:
        parser().parse({**BASE_OK, "prometheusAddress": "http://evil.example:9090"})
    assert OTHER not in str(info.value) and DEFAULT not in str(info.value)
