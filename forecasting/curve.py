"""A forecast curve on a regular grid: what serving reads.

Timestamps are epoch seconds (UTC) as floats throughout the library. A lookup of the peak over a lead
window is two integer computations and a slice ``max``; nothing here allocates per call beyond numpy's
scalar result.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]


class CurveRangeError(LookupError):
    """The asked window lies (partly) outside the curve: the model is too old or the window too long."""


@dataclass(frozen=True, slots=True)
class ForecastCurve:
    start: float
    """Epoch seconds of ``point[0]``."""
    step_s: float
    point: FloatArray
    lower: FloatArray
    upper: FloatArray

    def __post_init__(self) -> None:
        n = len(self.point)
        if len(self.lower) != n or len(self.upper) != n:
            raise ValueError("point, lower and upper must have the same length")
        if self.step_s <= 0:
            raise ValueError("step_s must be > 0")

    @property
    def end(self) -> float:
        """Epoch seconds of the last point."""
        return self.start + (len(self.point) - 1) * self.step_s

    def __len__(self) -> int:
        return len(self.point)

    def index_at(self, ts: float) -> int:
        """Index of the grid point at or just before ``ts``."""
        return math.floor((ts - self.start) / self.step_s)

    def covers(self, start: float, lead_s: float = 0.0) -> bool:
        return start >= self.start and start + lead_s <= self.end + self.step_s

    def window(self, start: float, lead_s: float) -> slice:
        """Slice of grid points in [start, start + lead_s] (the point at or before ``start`` included)."""
        i = math.floor((start - self.start) / self.step_s)
        j = math.floor((start + lead_s - self.start) / self.step_s) + 1
        if i < 0 or j > len(self.point):
            raise CurveRangeError(
                f"window [{start:.0f}, {start + lead_s:.0f}] is outside the curve [{self.start:.0f}, {self.end:.0f}]"
            )
        return slice(i, j)

    def peak(self, start: float, lead_s: float) -> float:
        """Largest point forecast over [start, start + lead_s]."""
        return float(self.point[self.window(start, lead_s)].max())

    def peak_upper(self, start: float, lead_s: float) -> float:
        """Largest upper-band value over [start, start + lead_s]."""
        return float(self.upper[self.window(start, lead_s)].max())

    def value_at(self, ts: float) -> float:
        i = self.index_at(ts)
        if i < 0 or i >= len(self.point):
            raise CurveRangeError(f"{ts:.0f} is outside the curve [{self.start:.0f}, {self.end:.0f}]")
        return float(self.point[i])

    def timestamps(self) -> FloatArray:
        return self.start + self.step_s * np.arange(len(self.point), dtype=np.float64)

    def slice_from(self, start: float) -> ForecastCurve:
        """The part of the curve from ``start`` on (grid point at or before ``start`` included)."""
        i = max(0, self.index_at(start))
        return ForecastCurve(
            start=self.start + i * self.step_s,
            step_s=self.step_s,
            point=self.point[i:],
            lower=self.lower[i:],
            upper=self.upper[i:],
        )

    @property
    def nbytes(self) -> int:
        return int(self.point.nbytes + self.lower.nbytes + self.upper.nbytes)
