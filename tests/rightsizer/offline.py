"""Small offline fleets (inventory JSON + metrics CSV) written to a temp dir, for the command-line tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

T0 = 1_372_636_800  # 2013-07-01T00:00:00Z: an old export, years before the wall clock
DAY = 86_400
STEP = 300
NEWEST = T0 + 8 * DAY - STEP  # the last sample written by metric_rows


def vm_entry(name: str, vm_id: str | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "id": vm_id or f"/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/{name}",
        "name": name,
        "resource_group": "rg",
        "size": "Standard_D4s_v5",
        "region": "westeurope",
        **extra,
    }


def metric_rows(key: str, cpu: float = 10.0, *, start: int = T0, days: int = 8) -> list[str]:
    return [f"{key},{t},{cpu + (t // STEP) % 3},30" for t in range(start, start + days * DAY, STEP)]


def write_inputs(tmp_path: Path, vms: list[dict[str, Any]], rows: list[str]) -> tuple[Path, Path]:
    inventory = tmp_path / "inventory.json"
    inventory.write_text(json.dumps(vms))
    metrics = tmp_path / "metrics.csv"
    metrics.write_text("vm,timestamp,cpu_percent,memory_percent\n" + "\n".join(rows) + "\n")
    return inventory, metrics
