"""Every metric an alert or a dashboard panel reads is one the services really export.

The names are read from the services themselves, not from a list: a scaler started from the source tree
(`python -m scaler_service serve --source replay`, sharing work through a real redis-server so the shared-store
metric exists, with ScaledObjects registered through the KEDA-like client and a fit landed) and its `/metrics`; and
what the rightsizer pushes to a real Pushgateway (Debian's prometheus-pushgateway) and writes to its metrics file
after a dry run on the bundled fleet (`rightsizer recommend --pushgateway URL`, as the CronJob runs it). A name that
is missing fails with the list of missing names.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.deploy.conftest import OBJECTS, RunningScaler, serving
from tests.deploy.monitoring import PROMETHEUS_OWN, dashboard_queries, metric_names, rules, selected_metrics
from tests.deploy.render import ROOT
from tests.support.prometheus import free_port
from tests.support.pushgateway import BINARY as PUSHGATEWAY_BINARY
from tests.support.pushgateway import Pushgateway, metric_families

REDIS_SERVER = os.environ.get("FORESIGHT_REDIS_SERVER", "/usr/bin/redis-server")
FIT_TIMEOUT_S = 300.0
# A cheap fit (5 days at 5 minutes): only the names matter here, the install test fits one-minute data.
METRICS_OBJECTS = {
    name: {**metadata, "queryStep": "5m", "historyTimeWindow": "5d"} for name, metadata in OBJECTS.items()
}


_SUFFIXES = {
    "counter": ("_total",),
    "histogram": ("_bucket", "_count", "_sum"),
    "gaugehistogram": ("_bucket", "_gcount", "_gsum"),
    "summary": ("_count", "_sum"),
    "info": ("_info",),
}


def exported_names(exposition: str) -> set[str]:
    """The sample names a Prometheus text exposition declares: every family (``# TYPE``), with the suffixes its type
    gives its samples (``x_total``, ``x_bucket``, ...), whether or not a labelled family has a series yet (a
    counter of rollbacks has none until the first rollback)."""
    names: set[str] = set()
    for family in text_string_to_metric_families(exposition):
        names.add(family.name)
        names.update(family.name + suffix for suffix in _SUFFIXES.get(family.type, ()))
        names.update(sample.name for sample in family.samples)
    return names


def _used_names() -> dict[str, list[str]]:
    """Metric name -> where it is used (alerts and dashboard)."""
    used: dict[str, list[str]] = {}
    for rule in rules():
        for name in metric_names(rule["expr"]):
            used.setdefault(name, []).append(f"alert {rule['alert']}")
    for where, expr in dashboard_queries():
        for name in metric_names(expr):
            used.setdefault(name, []).append(f"dashboard {where}")
    return used


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    if shutil.which(REDIS_SERVER) is None:
        pytest.skip(f"{REDIS_SERVER} (Debian redis-server) not installed: ./test.sh installs it")
    work = tmp_path_factory.mktemp("redis")
    password = work / "password"
    password.write_text("deploy-test-password\n", encoding="utf-8")
    port = free_port()
    command = [REDIS_SERVER, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    command += ["--dir", str(work), "--requirepass", "deploy-test-password"]
    proc = subprocess.Popen(
        command,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(0.3)
        assert proc.poll() is None, "redis-server exited"
        yield f"redis://127.0.0.1:{port}/0", password
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture(scope="module")
def scaler_from_source(
    redis_url: tuple[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningScaler]:
    url, password_file = redis_url
    work = tmp_path_factory.mktemp("scaler-source")
    grpc_port, http_port = free_port(), free_port()
    log = work / "scaler.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("FORESIGHT_")}
    env.update(TMPDIR=str(work), PYTHONPATH=str(ROOT))
    command = [sys.executable, "-m", "scaler_service", "serve", "--source", "replay", "--bind-address", "127.0.0.1"]
    command += ["--grpc-port", str(grpc_port), "--http-port", str(http_port), "--kube-annotations", "false"]
    command += [f"--store={url}", f"--redis-password-file={password_file}"]  # as manifests/overlays/ha does
    with log.open("wb") as log_file:
        proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log_file, stderr=subprocess.STDOUT)
    scaler = RunningScaler(f"127.0.0.1:{grpc_port}", f"http://127.0.0.1:{http_port}", log)
    with serving(proc, scaler, "metrics-test", METRICS_OBJECTS, what="the scaler"):
        yield scaler


@pytest.fixture(scope="module")
def rightsizer_names(tmp_path_factory: pytest.TempPathFactory) -> Iterator[set[str]]:
    """Names the rightsizer exports after a dry run on the bundled fleet, as the CronJob runs it: what a real
    Pushgateway then serves for job foresight-rightsizer, and the families its metrics file declares (a labelled
    counter such as rollbacks has no series, so nothing in the gateway, until the first rollback)."""
    if shutil.which(PUSHGATEWAY_BINARY) is None:
        pytest.skip(f"{PUSHGATEWAY_BINARY} not installed (scripts/setup.sh --with-test-tools installs it)")
    work = tmp_path_factory.mktemp("rightsizer-metrics")
    config = work / "config.yaml"  # as the CronJob's: decisions recorded in an audit log
    config.write_text(f"dry_run: true\naudit_log: {work / 'audit.jsonl'}\n", encoding="utf-8")
    textfile = work / "rightsizer.prom"
    gateway = Pushgateway(work)
    try:
        command = [sys.executable, "-m", "rightsizer", "recommend", "--output", "json", f"--config={config}"]
        done = subprocess.run(
            [*command, f"--pushgateway={gateway.url}", f"--metrics-textfile={textfile}"],
            cwd=work,
            env={**os.environ, "PYTHONPATH": str(ROOT), "TMPDIR": str(work)},
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        pushed = {
            sample.name
            for family in metric_families(gateway.url).values()
            for sample in family.samples
            if sample.labels.get("job") == "foresight-rightsizer"  # the job the alerts select
        }
        assert "push_time_seconds" in pushed and "rightsizer_vms_seen" in pushed, sorted(pushed)
        yield pushed | exported_names(textfile.read_text(encoding="utf-8"))
    finally:
        gateway.stop()


def test_every_metric_the_alerts_and_dashboard_read_is_exported(
    scaler_from_source: RunningScaler, rightsizer_names: set[str]
) -> None:
    exported = exported_names(scaler_from_source.get("/metrics")) | rightsizer_names
    used = _used_names()
    assert len(used) >= 25
    missing = {name: where for name, where in sorted(used.items()) if name not in exported}
    assert missing == {}, "used by alerts or the dashboard but exported by no service:\n" + "\n".join(
        f"  {name}: {', '.join(where)}" for name, where in missing.items()
    )


def test_every_series_read_is_ours_or_prometheus_own() -> None:
    """Every metric a query selects has our prefix (so the test above judges it) or is Prometheus' own `up` or
    the Pushgateway's push timestamps: a misspelt prefix cannot slip past."""
    queries = [(f"alert {r['alert']}", r["expr"]) for r in rules()] + dashboard_queries()
    for where, expr in queries:
        selected = selected_metrics(expr)
        assert selected, f"{where} reads no metric: {expr}"
        strangers = {n for n in selected if n not in PROMETHEUS_OWN and not metric_names(n)}
        assert strangers == set(), f"{where}: {strangers}"
