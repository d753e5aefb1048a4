"""Observe mode's records: per ScaledObject per step, what was served and what predictive would have served.

Kept in memory (the last ``RECORDS_KEPT`` per ScaledObject, shown by /forecast) and, with ``--records-dir``,
appended to one CSV file per ScaledObject.
"""

from __future__ import annotations

import csv
import re
import threading
from pathlib import Path

import structlog

from scaler_service.engine.types import RECORDS_KEPT, SubscriptionKey

log = structlog.get_logger(__name__)

RECORDS_HEADER = ("timestamp", "observed", "served", "predictive")

Record = tuple[float, float, float, float]

_records_lock = threading.Lock()


def record_path(records_dir: Path, sub: SubscriptionKey) -> Path:
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{sub.namespace}.{sub.name}.{sub.metric}")
    return records_dir / f"{safe}.csv"


def append_record(records_dir: Path, sub: SubscriptionKey, row: Record) -> None:
    path = record_path(records_dir, sub)
    try:
        with _records_lock:
            records_dir.mkdir(parents=True, exist_ok=True)
            new = not path.exists() or path.stat().st_size == 0
            with path.open("a", newline="") as fh:
                writer = csv.writer(fh)
                if new:
                    writer.writerow(RECORDS_HEADER)
                writer.writerow([f"{row[0]:.0f}", f"{row[1]:.6g}", f"{row[2]:.6g}", f"{row[3]:.6g}"])
    except OSError as exc:
        log.warning("observe record not written", path=str(path), error=str(exc))


__all__ = ["RECORDS_HEADER", "RECORDS_KEPT", "Record", "append_record", "record_path"]
