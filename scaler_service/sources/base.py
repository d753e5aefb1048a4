"""The data-source contract the scaler reads series through (Prometheus, replay of a bundled trace)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]


class SourceError(Exception):
    """Base of every data-source failure."""


class SourceUnavailable(SourceError):
    """Transient: the source did not answer (connection refused, timeout, 5xx). Retry with backoff."""


class QueryError(SourceError):
    """Permanent for this query: it is malformed, returns several series, or a value is not a number."""


@dataclass(frozen=True, slots=True)
class Samples:
    """Raw samples of one series, sorted by time, timestamps in epoch seconds. May contain NaN."""

    timestamps: FloatArray
    values: FloatArray

    def __len__(self) -> int:
        return len(self.timestamps)


class DataSource(Protocol):
    """Reads one series per query. Implementations must be safe to call from several threads."""

    def fetch_range(self, query: str, start: float, end: float, step_s: float) -> Samples:
        """Samples of ``query`` over [start, end] at ``step_s``. An empty result is a valid answer (no data)."""
        ...

    def fetch_latest(self, query: str, now: float) -> tuple[float, float] | None:
        """(timestamp, value) of the newest sample at or before ``now``, or None when there is none."""
        ...
