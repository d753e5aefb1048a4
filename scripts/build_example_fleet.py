"""Regenerate rightsizer/examples/ (inventory JSON + metrics CSV.gz) from the Bitbrains GWA-T-12 "Rnd" extract
(see rightsizer/examples/DATA.md for where it comes from).

Usage: .venv/bin/python scripts/build_example_fleet.py --source-dir DIR
(DIR holds bitbrains_rnd_vms_meta.csv and bitbrains_rnd_vm_usage_5min.csv.gz)

Each Bitbrains VM is mapped to the cheapest westeurope Linux size among the Dsv5, Dlsv5, Esv5 and Fsv2
series with at least its cores and memory (the closest Azure size that can hold what it was provisioned).
Utilisation is re-expressed as a percentage of that size: CPU% = cpu_usage_pct x cores / vCPUs, memory% =
mem_usage_kb / size memory. ``mem_usage_kb == 0`` is treated as "not measured" (empty memory_percent).
Tags are assigned deterministically (seeded) to show every gate. Only this script reads the source extract;
the product reads the files it writes.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import io
import json
import random
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path

from rightsizer.catalogue import load_catalogue

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "rightsizer" / "examples"
REGION = "westeurope"
SERIES = ("Dsv5", "Dlsv5", "Esv5", "Fsv2")
AS_OF = "2013-07-15T00:00:00Z"
SEED = 20130701


def pick_size(cores: int, mem_gib: float) -> str:
    catalogue = load_catalogue()
    best: tuple[float, str] | None = None
    for spec, price in catalogue.priced_sizes(REGION):
        fits = spec.series in SERIES and spec.vcpus >= cores and spec.memory_gib >= mem_gib - 0.05
        if fits and (best is None or price < best[0]):
            best = (price, spec.name)
    if best is None:
        raise SystemExit(f"no size for {cores} cores / {mem_gib:.1f} GiB")
    return best[1]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--source-dir", type=Path, required=True, help="folder with the Bitbrains extract")
    args = parser.parse_args()
    catalogue = load_catalogue()
    rng = random.Random(SEED)

    meta = list(csv.DictReader((args.source_dir / "bitbrains_rnd_vms_meta.csv").open()))
    vms: list[dict[str, str]] = []
    spec_of: dict[str, tuple[int, float, int, float]] = {}
    for i, m in enumerate(meta):
        cores = int(m["cpu_cores"])
        mem_gib = int(m["mem_capacity_kb"]) / 1024**2
        size = pick_size(cores, mem_gib)
        spec = catalogue.size(size)
        assert spec is not None
        num = m["vm_id"].rsplit("_", 1)[1]
        name = f"bb-{num}"
        spec_of[m["vm_id"]] = (cores, mem_gib, spec.vcpus, spec.memory_gib)
        vms.append({"index": str(i), "name": name, "size": size, "bitbrains": m["vm_id"]})

    # Tags: deterministic roles so the example shows every gate.
    order = list(range(len(vms)))
    rng.shuffle(order)
    roles = {
        "user-facing": order[0:10],
        "opt-out": order[10:12],
        "pci-dss": order[12:13],
        "hipaa": order[13:14],
        "tier-0": order[14:16],
        "tier-1": order[16:17],
        "database": order[17:20],
    }
    groups = {"web-avset": order[0:3], "api-avset": order[20:22], "batch-pool": order[22:25]}
    inventory = []
    for v in vms:
        i = int(v["index"])
        tags = {
            "env": "prod" if i % 3 else "staging",
            "team": ("payments", "search", "platform", "data")[i % 4],
            "source": f"bitbrains-gwa-t-12-rnd/{v['bitbrains']}",
        }
        if i in roles["user-facing"]:
            tags["user-facing"] = "true"
        if i in roles["opt-out"]:
            tags["finops.ai/optimization-enabled"] = "false"
        if i in roles["pci-dss"]:
            tags["pci-dss"] = "true"
        if i in roles["hipaa"]:
            tags["compliance"] = "hipaa"
        if i in roles["tier-0"]:
            tags["criticality"] = "tier-0"
        if i in roles["tier-1"]:
            tags["criticality"] = "tier-1"
        if i in roles["database"]:
            tags["role"] = "database"
        entry: dict[str, object] = {
            "id": f"/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg-example/providers/"
            f"Microsoft.Compute/virtualMachines/{v['name']}",
            "name": v["name"],
            "resource_group": "rg-example",
            "size": v["size"],
            "region": REGION,
            "os": "linux",
            "priority": "Regular",
            "tags": tags,
        }
        for group, members in groups.items():
            if i in members:
                if group.endswith("pool"):
                    entry["scale_set"] = group
                else:
                    entry["group"] = group
        inventory.append(entry)

    # Metrics, re-expressed on the chosen size.
    by_vm = {v["bitbrains"]: v["name"] for v in vms}
    rows: dict[str, list[tuple[int, float, float | None]]] = defaultdict(list)
    with gzip.open(args.source_dir / "bitbrains_rnd_vm_usage_5min.csv.gz", "rt") as fh:
        for r in csv.DictReader(fh):
            cores, _, vcpus, mem_gib = spec_of[r["vm_id"]]
            cpu = float(r["cpu_usage_pct"]) * cores / vcpus
            mem_kb = int(r["mem_usage_kb"])
            mem = None if mem_kb == 0 else 100.0 * mem_kb / (mem_gib * 1024**2)
            rows[by_vm[r["vm_id"]]].append((int(r["timestamp"]), cpu, mem))
    text = io.StringIO()
    w = csv.writer(text, lineterminator="\n")
    w.writerow(["vm", "timestamp", "cpu_percent", "memory_percent"])
    for name in sorted(rows):
        for ts, cpu, mem in sorted(rows[name]):
            w.writerow([name, ts, f"{cpu:.2f}", "" if mem is None else f"{mem:.1f}"])
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "fleet-metrics.csv.gz").write_bytes(gzip.compress(text.getvalue().encode(), 9, mtime=0))
    doc = {
        "as_of": AS_OF,
        "note": "50 real VMs of the Bitbrains GWA-T-12 Rnd trace (July 2013) on Azure sizes; see DATA.md",
        "vms": inventory,
    }
    (OUT / "fleet-inventory.json").write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {len(inventory)} VMs, {sum(len(r) for r in rows.values())} metric rows to {OUT}")
    print("as of", datetime.fromisoformat(AS_OF.replace("Z", "+00:00")).astimezone(UTC))


if __name__ == "__main__":
    main()
