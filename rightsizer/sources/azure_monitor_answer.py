"""Reading one Azure Monitor getBatch answer: the streamed body (bounded), and each resource's series or
per-metric error, as arrays per VM.

Answer shape (api-version 2024-02-01): ``{"values": [{"resourceid", "value": [{"name": {"value"}, "errorCode",
"errorMessage", "timeseries": [{"data": [{"timeStamp", "average"}, ...]}]}]}]}``; a point without ``average`` has
no value.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np

from rightsizer.azure.errors import PermanentAzureError
from rightsizer.inputs import FloatArray
from rightsizer.quoting import cut

CPU_METRIC = "Percentage CPU"
MEMORY_METRIC = "Available Memory Bytes"
AGGREGATION = "average"


@dataclass
class Samples:
    """What the answers said about one VM: its series (one piece per time window) or its errors."""

    timestamps: list[FloatArray] = field(default_factory=list)
    cpu: list[FloatArray] = field(default_factory=list)
    memory_ts: list[FloatArray] = field(default_factory=list)
    memory: list[FloatArray] = field(default_factory=list)
    error: str | None = None
    memory_error: str | None = None


def epoch(text: Any) -> float:
    if not isinstance(text, str):
        return math.nan
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return math.nan
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


class TimeStamps:
    """Time stamp texts -> epoch seconds, parsed once per call: every series of an answer is on the same grid, so
    after the first series a list comparison (in C) replaces 4,000 parses."""

    def __init__(self) -> None:
        self._texts: list[Any] = []
        self._epochs: FloatArray = np.empty(0)

    def epochs(self, texts: list[Any]) -> FloatArray:
        if texts != self._texts:
            self._texts = texts
            self._epochs = np.array([epoch(t) for t in texts], dtype=np.float64)
        return self._epochs


def series_arrays(points: list[Any], stamps: TimeStamps) -> tuple[FloatArray, FloatArray] | None:
    """A series' points (``{"timeStamp": ..., "average": ...}``; no ``average`` = no value) as two arrays."""
    if not all(type(p) is dict for p in points):
        return None
    ts = stamps.epochs([p.get("timeStamp") for p in points])
    raw = [p.get(AGGREGATION) for p in points]
    try:
        values = np.array(raw, dtype=np.float64)  # None (no value) becomes NaN
    except (TypeError, ValueError):
        values = np.array([v if type(v) in (int, float) else math.nan for v in raw], dtype=np.float64)
    return ts, values


class StreamedBody:
    """The client's ``cls`` hook for a streamed answer: reads the body up to ``max_bytes`` and hands the client an
    empty result to convert (the body is decoded by the source, one answer at a time)."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.raw = bytearray()

    def __call__(self, pipeline_response: Any, body: Iterable[bytes], headers: Any) -> dict[str, list[Any]]:
        self.raw = bytearray()
        try:
            for chunk in body:
                self.raw += chunk
                if len(self.raw) > self.max_bytes:
                    raise PermanentAzureError(
                        "metrics.query_resources",
                        f"answer larger than {self.max_bytes / 1e6:g} MB (azure_monitor.max_response_mb): "
                        "fewer resources or points per call are needed",
                    )
        finally:
            pipeline_response.http_response.close()
        return {"values": []}


def resource_of(item: Mapping[str, Any]) -> str | None:
    rid = item.get("resourceid")
    if isinstance(rid, str):
        return rid.lower()
    for metric in item.get("value") or ():
        mid = metric.get("id") if isinstance(metric, Mapping) else None
        if isinstance(mid, str) and "/providers/microsoft.insights/metrics/" in mid.lower():
            return mid.lower().split("/providers/microsoft.insights/metrics/")[0]
    return None


def collect(doc: Any, samples: Mapping[str, Samples]) -> None:
    """Adds a decoded answer's series (or per-metric errors) to the samples of the VMs they belong to."""
    stamps = TimeStamps()
    values = doc.get("values") if isinstance(doc, Mapping) else None
    for item in values or ():
        if not isinstance(item, Mapping):
            continue
        rid = resource_of(item)
        target = samples.get(rid) if rid is not None else None
        if target is None:
            continue
        for metric in item.get("value") or ():
            if not isinstance(metric, Mapping):
                continue
            name = metric.get("name")
            name_text = name.get("value") if isinstance(name, Mapping) else name
            code = metric.get("errorCode")
            if code not in (None, "Success"):
                problem = cut(f"{code}: {metric.get('errorMessage') or 'no message'}")
                if name_text == CPU_METRIC:
                    target.error = problem
                elif name_text == MEMORY_METRIC:
                    target.memory_error = problem
                continue
            series = metric.get("timeseries") or []
            points = series[0].get("data") if series and isinstance(series[0], Mapping) else None
            arrays = series_arrays(points, stamps) if isinstance(points, list) and points else None
            if arrays is None:
                continue
            ts, vs = arrays
            if name_text == CPU_METRIC:
                target.timestamps.append(ts)
                target.cpu.append(vs)
            elif name_text == MEMORY_METRIC:
                target.memory_ts.append(ts)
                target.memory.append(vs)
