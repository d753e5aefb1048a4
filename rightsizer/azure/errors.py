"""Errors at the Azure HTTP boundary, split the kopf way: transient (retry later) vs permanent (don't).

- :class:`TransientAzureError`: 429, 5xx, connection resets and timeouts, and long-running operations that end
  with an internal error. Retried with backoff (``Retry-After`` honoured, bounded) by the gateway.
- :class:`PermanentAzureError`: every other 4xx and failed operation. :class:`CapacityError` is the permanent
  kind that means "no capacity for this (size, zone, priority) now" (``AllocationFailed``, ``SkuNotAvailable``,
  quota): the Spot logic remembers it for a while and tries another offering.
"""

from __future__ import annotations

CAPACITY_ERROR_CODES = frozenset(
    {
        "AllocationFailed",
        "ZonalAllocationFailed",
        "OverconstrainedAllocationRequest",
        "OverconstrainedZonalAllocationRequest",
        "SkuNotAvailable",
        "LowPriorityCores",
        "QuotaExceeded",
        "OperationNotAllowedQuota",
        "SpotQuotaExceeded",
    }
)
"""ARM error codes that mean no capacity or quota for the requested offering."""

TRANSIENT_OPERATION_CODES = frozenset({"InternalExecutionError", "InternalServerError", "RetryableError"})


class AzureError(Exception):
    """A call to Azure failed. ``status`` is the HTTP status (0 for connection errors or failed operations)."""

    def __init__(
        self,
        operation: str,
        message: str,
        *,
        status: int = 0,
        code: str = "",
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(f"{operation}: {code or status or 'error'}: {message}")
        self.operation = operation
        self.message = message
        self.status = status
        self.code = code
        self.retry_after_s = retry_after_s


class TransientAzureError(AzureError):
    """Worth retrying: throttling (429), server errors (5xx), connection problems."""


class PermanentAzureError(AzureError):
    """Not worth retrying as is: the request is wrong, not allowed, or the resource is missing."""


class NotFoundError(PermanentAzureError):
    pass


class CapacityError(PermanentAzureError):
    """No capacity or quota for the requested size/zone/priority (``AllocationFailed``, ``SkuNotAvailable``, quota)."""


def is_capacity_code(code: str) -> bool:
    return code in CAPACITY_ERROR_CODES or "quota" in code.lower()
