"""Progress of long work (backtest fits, a fleet's VMs) on a terminal, and nothing anywhere else.

A thin choice over tqdm: the bar goes to stderr and only when stderr is a terminal and the caller's output
is meant for people (not JSON or CSV), so logs, pipes and CronJob output never carry carriage-return noise.
The bar disappears when the work is done, leaving the terminal to the result.
"""

from __future__ import annotations

import sys
from typing import Any, TextIO

from tqdm import tqdm


def wants_progress(stream: TextIO | None = None, *, machine_output: bool = False) -> bool:
    """True when ``stream`` (stderr by default) is a terminal and the output is not for a program."""
    stream = sys.stderr if stream is None else stream
    isatty = getattr(stream, "isatty", None)
    return not machine_output and callable(isatty) and bool(isatty())


def progress_bar(total: int | None, *, desc: str, unit: str, enabled: bool, stream: TextIO | None = None) -> tqdm[Any]:
    """A bar counting ``unit`` up to ``total`` with the time left; a no-op object when not ``enabled``."""
    return tqdm(
        total=total,
        desc=desc,
        unit=unit,
        file=sys.stderr if stream is None else stream,
        disable=not enabled,
        leave=False,
        dynamic_ncols=True,
        mininterval=0.5,
        bar_format="{desc}: {n_fmt}/{total_fmt} {unit} [{elapsed}<{remaining}] {bar}",
    )


__all__ = ["progress_bar", "wants_progress"]
