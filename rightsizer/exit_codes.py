"""The rightsizer's exit codes, one per kind of failure, so a CronJob's alert can say what went wrong.

0 ok, 1 internal error (a bug: the traceback is logged), 2 bad input (arguments, config, files),
3 a service unreachable (Azure, Prometheus, the pushgateway), 4 a check failed (``audit verify``).
"""

from __future__ import annotations

import urllib.error
from enum import IntEnum

import requests

from rightsizer.azure.errors import AzureError, TransientAzureError


class ExitCode(IntEnum):
    OK = 0
    INTERNAL = 1
    BAD_INPUT = 2
    UNREACHABLE = 3
    CHECK_FAILED = 4


_UNREACHABLE: tuple[type[BaseException], ...] = (
    TransientAzureError,
    requests.ConnectionError,
    requests.Timeout,
    urllib.error.URLError,
    ConnectionError,
    TimeoutError,
)


def _azure_core_unreachable() -> tuple[type[BaseException], ...]:
    try:
        from azure.core.exceptions import ServiceRequestError, ServiceResponseError
    except ImportError:  # azure-core comes with azure-mgmt-compute; without it no Azure call was made
        return ()
    return (ServiceRequestError, ServiceResponseError)


def exit_code_for(error: BaseException) -> ExitCode:
    """What a failure that reached the command line means for the exit code."""
    if isinstance(error, _UNREACHABLE + _azure_core_unreachable()):
        return ExitCode.UNREACHABLE
    if isinstance(error, AzureError):  # a permanent 4xx: what was asked of Azure is wrong
        return ExitCode.BAD_INPUT
    if isinstance(error, ValueError | FileNotFoundError | IsADirectoryError | PermissionError | NotADirectoryError):
        return ExitCode.BAD_INPUT
    return ExitCode.INTERNAL


__all__ = ["ExitCode", "exit_code_for"]
