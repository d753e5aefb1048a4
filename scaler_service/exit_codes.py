"""The scaler command line's exit codes (the same scheme as the rightsizer's).

0 ok, 1 internal error, 2 bad input (arguments, config, files, trigger metadata the scaler refused),
3 a service unreachable (the scaler for ``query``, Prometheus for ``backtest``), 4 a check failed.
"""

from __future__ import annotations

from enum import IntEnum

import grpc


class ExitCode(IntEnum):
    OK = 0
    INTERNAL = 1
    BAD_INPUT = 2
    UNREACHABLE = 3
    CHECK_FAILED = 4


def for_rpc_status(code: grpc.StatusCode) -> ExitCode:
    """A failed call to the scaler: unreachable or too slow (3), refused input (2), anything else (1)."""
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        return ExitCode.UNREACHABLE
    if code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.NOT_FOUND):
        return ExitCode.BAD_INPUT
    return ExitCode.INTERNAL


__all__ = ["ExitCode", "for_rpc_status"]
