"""Retry-After in both of its HTTP forms, and Azure's millisecond headers (one parser for every Azure client)."""

from __future__ import annotations

import email.utils

import pytest

from rightsizer.azure.retry import RetrySettings, parse_retry_after, retry_after_seconds

NOW = 1_796_000_000.0


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("120", 120.0),
        (" 7 ", 7.0),
        ("0", 0.0),
        ("2.5", 2.5),
        (email.utils.formatdate(NOW + 90, usegmt=True), 90.0),
        (email.utils.formatdate(NOW - 90, usegmt=True), 0.0),  # a date in the past: now
        ("Fri, 04 Dec 2026 19:30:00 -0000", max(0.0, 1796412600.0 - NOW)),
        (None, None),
        ("", None),
        ("-5", None),
        ("soon", None),
        ("1e3", None),
        ("٣", None),  # Arabic-Indic digit: not the header's syntax
        ("9" * 100, None),  # absurdly long: not parsed
    ],
)
def test_parse_retry_after(value: str | None, expected: float | None) -> None:
    got = parse_retry_after(value, NOW)
    assert got == (None if expected is None else pytest.approx(expected))


def test_millisecond_headers_win_over_retry_after() -> None:
    assert retry_after_seconds({"Retry-After": "10", "x-ms-retry-after-ms": "1500"}, NOW) == 1.5
    assert retry_after_seconds({"retry-after-ms": "250"}, NOW) == 0.25
    assert retry_after_seconds({"Retry-After": email.utils.formatdate(NOW + 3, usegmt=True)}, NOW) == 3.0
    assert retry_after_seconds({}, NOW) is None
    assert retry_after_seconds({"x-ms-retry-after-ms": "lots"}, NOW) is None


def test_delay_is_capped_and_backs_off_without_a_hint() -> None:
    retry = RetrySettings(backoff_base_s=0.5, max_delay_s=30)
    assert [retry.delay(a, None) for a in (1, 2, 3)] == [0.5, 1.0, 2.0]
    assert retry.delay(1, 3600.0) == 30.0
    assert retry.delay(1, 4.0) == 4.0
