"""Logging for the rightsizer's command line: structlog configured once, in ``main()``, JSON by default."""

from __future__ import annotations

import sys
from typing import Any

import structlog

from forecasting.log_setup import route_stdlib_logging


class _CurrentStderr:
    """Writes to whatever ``sys.stderr`` is at the time of writing, not at configuration: a test harness (or a
    daemon) that swaps stderr must not leave the loggers writing to a closed stream."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def configure_logging(level: str, fmt: str) -> None:
    import logging

    levels = {
        "debug": logging.DEBUG,
        "info": logging.INFO,
        "warning": logging.WARNING,
        "error": logging.ERROR,
    }
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())  # no escape codes in files and pipes
    )
    # Prophet's, cmdstanpy's and the Azure SDK's own lines in the same format (or silenced).
    route_stdlib_logging(renderer, levels[level], _CurrentStderr())  # type: ignore[arg-type]
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(levels[level]),
        logger_factory=structlog.PrintLoggerFactory(file=_CurrentStderr()),  # type: ignore[arg-type]
        cache_logger_on_first_use=True,
    )
