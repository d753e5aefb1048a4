"""One retry policy for every call to Azure (Resource Manager and the Azure Monitor metrics API).

- :func:`retry_after_seconds` reads how long the server asked us to wait: ``retry-after-ms`` /
  ``x-ms-retry-after-ms`` (milliseconds, Azure's own) or ``Retry-After`` in either of its HTTP forms,
  delta-seconds (``120``) or an HTTP-date (``Fri, 04 Dec 2026 19:30:00 GMT``, RFC 9110 section 10.2.3).
- :func:`classify` turns an azure-core exception into a transient or permanent :class:`AzureError`.
- :func:`call_with_retries` retries transient errors: ``Retry-After`` honoured up to a cap, exponential backoff
  otherwise, a bounded number of attempts, sleeps through an injectable ``sleep``.

The SDK clients are built with ``retry_total=0`` so that this is the only retry loop: azure-core's own policy
would sleep for whatever ``Retry-After`` says, without a cap and without a way for tests to observe it.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import structlog
from azure.core.exceptions import HttpResponseError, ServiceRequestError, ServiceResponseError

from rightsizer.azure.errors import (
    TRANSIENT_OPERATION_CODES,
    AzureError,
    CapacityError,
    NotFoundError,
    PermanentAzureError,
    TransientAzureError,
    is_capacity_code,
)
from rightsizer.bounded_http import ResponseTooLarge

T = TypeVar("T")

RESPONSE_TOO_LARGE = "ResponseTooLarge"
"""The error code of an answer refused for its size (``azure.max_response_mb``)."""

# Not cached on first use: a CLI test configuring structlog must not pin these loggers to its stream.
log = structlog.wrap_logger(None, logger_factory_args=(__name__,), cache_logger_on_first_use=False)

MAX_HEADER_CHARS = 64
"""A Retry-After value longer than this is not one of the two forms: ignored, not parsed."""


@dataclass(frozen=True, slots=True)
class RetrySettings:
    """Retries of transient errors: ``max_attempts`` calls in all, exponential backoff, ``Retry-After`` honoured
    up to ``max_delay_s`` (a longer ask is cut to it: a CronJob should not sleep for minutes)."""

    max_attempts: int = 5
    backoff_base_s: float = 1.0
    max_delay_s: float = 60.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {self.max_attempts}")
        if self.backoff_base_s < 0 or self.max_delay_s < 0:
            raise ValueError("backoff_base_s and max_delay_s must be >= 0")

    def delay(self, attempt: int, retry_after_s: float | None) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        wanted = retry_after_s if retry_after_s is not None else self.backoff_base_s * 2 ** (attempt - 1)
        return min(max(wanted, 0.0), self.max_delay_s)


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` value, or None when absent or in neither form.

    Delta-seconds must be a non-negative integer (``1.5``, ``-3`` and ``1e3`` are not the header's syntax, but a
    decimal is accepted, servers send them); an HTTP-date in the past means "now" (0).
    """
    if value is None:
        return None
    text = value.strip()
    if not text or len(text) > MAX_HEADER_CHARS:
        return None
    if text.isascii() and text.replace(".", "", 1).isdigit():
        seconds = float(text)
        return seconds if math.isfinite(seconds) else None
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # "-0000" parses naive; an HTTP-date is always GMT
        when = when.replace(tzinfo=dt.UTC)
    return max(0.0, when.timestamp() - now)


def retry_after_seconds(headers: Mapping[str, str] | None, now: float) -> float | None:
    """How long the response's headers ask us to wait: Azure's millisecond headers first, then Retry-After."""
    if not headers:
        return None
    lowered = {str(k).lower(): str(v) for k, v in headers.items()}
    for name in ("retry-after-ms", "x-ms-retry-after-ms"):
        raw = lowered.get(name)
        if raw is not None:
            text = raw.strip()
            if text.isascii() and text.isdigit() and len(text) <= 12:
                return int(text) / 1000.0
    return parse_retry_after(lowered.get("retry-after"), now)


def classify(operation: str, error: Exception, *, now: float | None = None) -> AzureError:
    """An SDK exception as a transient or permanent :class:`AzureError` (``now`` dates an HTTP-date Retry-After)."""
    if isinstance(error, AzureError):
        return error
    if isinstance(error, (ServiceRequestError, ServiceResponseError)):
        too_large = _too_large(error)
        if too_large is not None:  # the same call gets the same answer: not worth a retry
            return PermanentAzureError(
                operation,
                f"answer larger than {too_large.limit_bytes / 2**20:g} MiB (azure.max_response_mb), refused while it "
                "was read: list fewer resources per call (resource groups) or raise the cap",
                code=RESPONSE_TOO_LARGE,
            )
        return TransientAzureError(operation, str(error))
    if isinstance(error, HttpResponseError):
        status = int(error.status_code or 0)
        code = ""
        if error.error is not None and error.error.code:
            code = str(error.error.code)
        message = str(error.error.message) if error.error is not None and error.error.message else str(error)
        retry_after: float | None = None
        if error.response is not None:
            headers = getattr(error.response, "headers", None)
            retry_after = retry_after_seconds(headers, time.time() if now is None else now)
        failed_operation = status in (200, 201, 202, 204)
        if is_capacity_code(code):
            return CapacityError(operation, message, status=status, code=code)
        if status == 429 or status >= 500 or (failed_operation and code in TRANSIENT_OPERATION_CODES):
            return TransientAzureError(operation, message, status=status, code=code, retry_after_s=retry_after)
        if status == 404:
            return NotFoundError(operation, message, status=status, code=code)
        return PermanentAzureError(operation, message, status=status, code=code)
    return PermanentAzureError(operation, f"{type(error).__name__}: {error}")


def _too_large(error: BaseException) -> ResponseTooLarge | None:
    """The size cap's refusal behind an azure-core transport error, if that is what it is."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, ResponseTooLarge):
            return current
        seen.add(id(current))
        inner = getattr(current, "inner_exception", None)
        current = inner if isinstance(inner, BaseException) else (current.__cause__ or current.__context__)
    return None


def call_with_retries(
    operation: str,
    fn: Callable[[], T],
    *,
    retry: RetrySettings,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.time,
    **context: Any,
) -> T:
    """``fn()``; transient failures are retried per ``retry``; the last error is raised as an :class:`AzureError`."""
    attempt = 0
    while True:
        attempt += 1
        try:
            return fn()
        except Exception as raw:
            error = classify(operation, raw, now=clock())
            if not isinstance(error, TransientAzureError) or attempt >= retry.max_attempts:
                log.warning(
                    "azure.call_failed",
                    operation=operation,
                    attempt=attempt,
                    status=error.status,
                    code=error.code,
                    transient=isinstance(error, TransientAzureError),
                    **context,
                )
                raise error from raw
            delay = retry.delay(attempt, error.retry_after_s)
            log.info(
                "azure.retry",
                operation=operation,
                attempt=attempt,
                status=error.status,
                code=error.code,
                retry_after_s=error.retry_after_s,
                delay_s=delay,
                **context,
            )
            sleep(delay)
