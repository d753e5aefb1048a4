"""Benchmark: ``rightsizer recommend`` on 1,000 VMs with 14 days of 5-minute metrics (4 million rows).

    .venv/bin/python loadtests/rightsizer_bench.py [--vms 1000] [--forecast seasonal-profile]

The fleet is the bundled 50 real Bitbrains VMs replicated 20 times with jitter (each replica: CPU and memory
scaled by a random factor in [0.8, 1.2], rotated by a random number of 5-minute steps, plus 1-point Gaussian
noise; HA groups renamed per replica), so the figures are for real-shaped, not real, data beyond the first 50.
The inventory and metrics CSV are written to a temp dir first (not timed); then the real CLI runs in a child
process over the whole 14 days (``metrics.lookback_days: 14``) and the child's wall time and peak RSS are
measured. Forecast method: ``seasonal-profile`` (cheap P95-oriented: lookback shape + upward daily trend, with a
2-day backtest) because fitting Prophet, or backtesting the library's candidates, for 2,000 series does not
fit in 60 s on 2 cores; ``--forecast library`` measures the product default instead.
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
from importlib import resources
from pathlib import Path

import numpy as np

from rightsizer.inputs import load_metrics_csv

BUDGET_S = 60.0
BUDGET_BYTES = 2**30


def build_fleet(out_dir: Path, n_vms: int, seed: int = 7) -> tuple[Path, Path, Path]:
    examples = Path(str(resources.files("rightsizer") / "examples"))
    doc = json.loads((examples / "fleet-inventory.json").read_text())
    base_vms = doc["vms"]
    raw = load_metrics_csv(examples / "fleet-metrics.csv.gz")
    rng = random.Random(seed)
    nrng = np.random.default_rng(seed)
    vms: list[dict[str, object]] = []
    lines = ["vm,timestamp,cpu_percent,memory_percent"]
    replicas = -(-n_vms // len(base_vms))
    for r in range(replicas):
        for base in base_vms:
            if len(vms) >= n_vms:
                break
            name = base["name"] if r == 0 else f"{base['name']}-r{r:02d}"
            entry = dict(base, id=base["id"] if r == 0 else f"{base['id']}-r{r:02d}", name=name)
            for key in ("group", "scale_set"):
                if key in entry and r:
                    entry[key] = f"{entry[key]}-r{r:02d}"
            vms.append(entry)
            u = raw[base["name"]]
            order = np.argsort(u.timestamps)
            ts, cpu, mem = u.timestamps[order], u.cpu_percent[order], u.memory_percent[order]
            if r:
                shift = rng.randrange(len(ts))
                factor = rng.uniform(0.8, 1.2)
                cpu = np.clip(np.roll(cpu, shift) * factor + nrng.normal(0, 1, len(cpu)), 0, 100)
                mem = np.clip(np.roll(mem, shift) * rng.uniform(0.8, 1.2), 0, 100)
            lines += [
                f"{name},{t:.0f},{c:.2f},{'' if np.isnan(m) else f'{m:.1f}'}"
                for t, c, m in zip(ts.tolist(), cpu.tolist(), mem.tolist(), strict=True)
            ]
    inv = out_dir / "inventory.json"
    inv.write_text(json.dumps({"as_of": doc["as_of"], "vms": vms}))
    metrics = out_dir / "metrics.csv.gz"
    metrics.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode(), 1))
    config = out_dir / "config.yaml"
    config.write_text("metrics:\n  lookback_days: 14\n")
    return inv, metrics, config


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--vms", type=int, default=1000)
    parser.add_argument("--forecast", default="library", choices=("library", "seasonal-profile", "none"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        inv, metrics, config = build_fleet(Path(tmp), args.vms)
        with gzip.open(metrics, "rt") as fh:
            rows = sum(1 for _ in fh) - 1
        print(
            f"fleet: {args.vms} VMs (50 real Bitbrains VMs replicated with jitter), {rows:,} metric rows, "
            f"{metrics.stat().st_size / 2**20:.1f} MiB gzipped CSV (built in {time.perf_counter() - t0:.1f} s)"
        )
        cmd = [
            sys.executable,
            "-m",
            "rightsizer",
            "recommend",
            "--inventory",
            str(inv),
            "--metrics",
            str(metrics),
            "--config",
            str(config),
            "--forecast",
            args.forecast,
            "--output",
            "json",
        ]
        start = time.perf_counter()
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        wall = time.perf_counter() - start
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
        if done.returncode != 0:
            raise SystemExit(f"rightsizer failed ({done.returncode}): {done.stderr[-2000:]}")
        doc = json.loads(done.stdout)
        totals = doc["totals"]
    print(
        f"recommend ({args.forecast} forecast, 14-day lookback): wall {wall:.1f} s (budget {BUDGET_S:.0f} s), "
        f"peak RSS {peak / 2**20:.0f} MiB (budget {BUDGET_BYTES / 2**20:.0f} MiB)"
    )
    print(
        f"decisions: {totals['by_decision']}; recommended savings ${totals['recommended_monthly_savings_usd']:,.2f}"
        "/month (hourly x 730, retail pay-as-you-go)"
    )
    verdict = "within" if wall <= BUDGET_S and peak <= BUDGET_BYTES else "OVER"
    print(f"{verdict} budget")


if __name__ == "__main__":
    main()
