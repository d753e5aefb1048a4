"""Third-party log lines (Prophet, cmdstanpy, the Azure SDK...) in the application's structlog format.

Libraries log through the standard ``logging`` module in their own plain-text formats; a JSON log pipeline
cannot parse those lines. :func:`route_stdlib_logging` gives the root logger one handler that renders records
with the same structlog renderer as the application's own lines, and quiets the two lines the fitting stack
prints that mean nothing to an operator: Prophet's "Importing plotly failed" (plotting is not used) and
cmdstanpy's per-fit "Chain [1] start processing" progress.
"""

from __future__ import annotations

import logging
from typing import Any, TextIO

import structlog


def route_stdlib_logging(renderer: Any, level: int, stream: TextIO) -> None:
    """Render every ``logging`` record at ``level`` or above with ``renderer`` on ``stream``."""
    handler = logging.StreamHandler(stream)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processor=renderer,
            foreign_pre_chain=[
                structlog.stdlib.add_log_level,
                structlog.stdlib.add_logger_name,
                structlog.processors.TimeStamper(fmt="iso", utc=True),
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Importing prophet logs this at ERROR when plotly is absent; we never plot with Prophet.
    logging.getLogger("prophet.plot").setLevel(logging.CRITICAL)
    # cmdstanpy adds its own plain-text handler unless one is found up the tree (the root's, above), and
    # logs two INFO lines per fit.
    cmdstanpy = logging.getLogger("cmdstanpy")
    cmdstanpy.handlers[:] = []
    cmdstanpy.propagate = True
    cmdstanpy.setLevel(max(level, logging.WARNING))


__all__ = ["route_stdlib_logging"]
