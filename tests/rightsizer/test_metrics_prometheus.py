"""The Prometheus metrics path against a real Prometheus backfilled with real Bitbrains VM usage."""

from __future__ import annotations

import io
import json
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from prometheus_api_client import PrometheusConnect

from rightsizer.cli import main
from rightsizer.inputs import load_inventory, load_metrics_csv
from rightsizer.metrics import NoUsage, VmUsage, usage_from_samples
from rightsizer.settings import DAY_S, MetricsSettings
from rightsizer.sources.prometheus import usage_from_prometheus
from tests.support.prometheus import PrometheusServer, prometheus_servers, series

pytestmark = pytest.mark.prometheus

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "rightsizer" / "examples"
CPU_METRIC = "vm_cpu_utilisation_percent"
MEM_METRIC = "vm_memory_utilisation_percent"
SETTINGS = MetricsSettings(
    prometheus_url="set-per-test",
    size_without_memory=True,  # bb-27 has no memory series: sized on CPU alone here (the default skips it)
    cpu_query=CPU_METRIC + '{{instance="{vm}"}}',
    memory_query=MEM_METRIC + '{{instance="{vm}"}}',
)
VMS = ("bb-89", "bb-27", "bb-383")  # bb-27's memory was not measured in the source (zeros -> missing)


def _shifted(now: float) -> tuple[dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]], float]:
    """The real samples of VMS, moved in time so that they end about two minutes before ``now``."""
    raw = load_metrics_csv(EXAMPLES / "fleet-metrics.csv.gz")
    last = max(float(raw[v].timestamps.max()) for v in VMS)
    shift = float(np.floor((now - 120.0 - last) / 300.0) * 300.0)
    out = {}
    for v in VMS:
        r = raw[v]
        order = np.argsort(r.timestamps)
        out[v] = (r.timestamps[order] + shift, r.cpu_percent[order], r.memory_percent[order])
    return out, shift


Prom = tuple[PrometheusServer, float, dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]]


@pytest.fixture(scope="module")
def prom(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prom]:
    now = time.time()
    data, _ = _shifted(now)
    all_series = []
    for v, (ts, cpu, mem) in data.items():
        all_series.append(series(CPU_METRIC, ts, cpu, instance=v))
        if v == "bb-383":
            # A two-day hole in memory only: memory becomes unknown, CPU still sizes.
            hole = ts > ts[-1] - 3 * DAY_S
            hole &= ts < ts[-1] - 1 * DAY_S
            all_series.append(series(MEM_METRIC, ts[~hole], mem[~hole], instance=v))
        elif np.isfinite(mem).mean() > 0.9:
            keep = np.isfinite(mem)
            all_series.append(series(MEM_METRIC, ts[keep], mem[keep], instance=v))
    with prometheus_servers(lambda: tmp_path_factory.mktemp("prometheus")) as start:
        yield start(*all_series), now, data


def test_usage_from_real_prometheus_matches_the_samples(prom: Prom) -> None:
    server, now, data = prom
    client = PrometheusConnect(url=server.url, disable_ssl=True)
    vms = [vm for vm in load_inventory(EXAMPLES / "fleet-inventory.json") if vm.name in VMS]
    vms.append(replace(vms[0], id="ghost", name="ghost"))
    usage = usage_from_prometheus(client, vms, SETTINGS, now)
    by_name = {vm.name: usage[vm.id] for vm in vms}
    u89 = by_name["bb-89"]
    assert isinstance(u89, VmUsage) and u89.memory is not None
    assert u89.cpu.quality.completeness > 0.95
    ts, cpu, mem = data["bb-89"]
    direct = usage_from_samples("x", ts, cpu, mem, SETTINGS, now)
    assert isinstance(direct, VmUsage)
    p95_prom = np.nanquantile(u89.cpu.values, 0.95)
    p95_csv = np.nanquantile(direct.cpu.values, 0.95)
    assert p95_prom == pytest.approx(p95_csv, rel=0.05)
    u27 = by_name["bb-27"]
    assert isinstance(u27, VmUsage) and u27.memory is None and "memory" in u27.memory_note
    vm27 = next(vm for vm in vms if vm.name == "bb-27")
    strict = usage_from_prometheus(client, [vm27], replace(SETTINGS, size_without_memory=False), now)[vm27.id]
    assert isinstance(strict, NoUsage) and strict.reason.startswith("memory")
    assert strict.reason.endswith("not sized on CPU alone (metrics.size_without_memory is off)")
    # bb-383's memory is measured part of the week: sized on the measured samples (gaps left NaN), unless the
    # policy asks for more days of samples than it has, when it is memory unknown.
    u383 = by_name["bb-383"]
    assert isinstance(u383, VmUsage) and u383.memory is not None and u383.memory_measured_days is not None
    assert u383.memory_note.startswith("memory measured in ") and "sized on their max" in u383.memory_note
    assert np.isfinite(u383.memory.values).sum() * 300 / 86400 == pytest.approx(u383.memory_measured_days)
    vm383 = next(vm for vm in vms if vm.name == "bb-383")
    strict383 = usage_from_prometheus(client, [vm383], replace(SETTINGS, partial_memory_min_days=8.0), now)[vm383.id]
    assert isinstance(strict383, VmUsage) and strict383.memory is None
    assert strict383.memory_note.startswith("memory unknown: memory") and "< 95%" in strict383.memory_note
    ghost = by_name["ghost"]
    assert isinstance(ghost, NoUsage) and ghost.reason == "no metrics for this VM in the last 7 days"


def test_short_history_is_reported_in_days(prom: Prom) -> None:
    server, now, _ = prom
    client = PrometheusConnect(url=server.url, disable_ssl=True)
    vms = [vm for vm in load_inventory(EXAMPLES / "fleet-inventory.json") if vm.name == "bb-89"]
    # Ask for 30 days: the backfill holds about 14, so the VM is skipped with how much is there.
    usage = usage_from_prometheus(client, vms, replace(SETTINGS, lookback_days=30.0), now)
    reason = usage[vms[0].id]
    assert isinstance(reason, NoUsage)
    assert reason.reason.startswith("not enough data: 1") and reason.reason.endswith(" of 30 days")


def test_cli_recommends_from_prometheus(prom: Prom, tmp_path: Path) -> None:
    server, now, _ = prom
    inventory = json.loads((EXAMPLES / "fleet-inventory.json").read_text())
    inv = tmp_path / "inv.json"
    inv.write_text(json.dumps([v for v in inventory["vms"] if v["name"] in VMS]))
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        "metrics:\n"
        f"  prometheus_url: {server.url}\n"
        f"  cpu_query: '{CPU_METRIC}{{{{instance=\"{{vm}}\"}}}}'\n"
        f"  memory_query: '{MEM_METRIC}{{{{instance=\"{{vm}}\"}}}}'\n"
        "forecast:\n  method: seasonal-profile\n"
    )
    out = io.StringIO()
    assert (
        main(
            ["recommend", "--config", str(cfg), "--inventory", str(inv), "--output", "json", "--now", str(now)], out=out
        )
        == 0
    )
    recs = {r["vm"]: r for r in json.loads(out.getvalue())["recommendations"]}
    assert set(recs) == set(VMS)
    assert all("no metrics" not in r["reason"] for r in recs.values())
    assert recs["bb-89"]["action"] in ("resize", "shutdown", "none")
