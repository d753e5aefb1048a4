"""The alerts load in Prometheus and fire when they should (promtool's rule unit tests); the dashboard's queries
parse; the ServiceMonitor scrapes the scaler's Service."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import textwrap
from pathlib import Path

import pytest
import yaml

from tests.deploy.monitoring import (
    DASHBOARD,
    as_promql,
    dashboard,
    dashboard_queries,
    rule_groups,
    rules,
    write_rule_file,
)
from tests.deploy.render import one, render

PROMTOOL = os.environ.get("FORESIGHT_PROMTOOL", "/usr/bin/promtool")

needs_promtool = pytest.mark.skipif(
    shutil.which(PROMTOOL) is None, reason=f"{PROMTOOL} (Debian prometheus) not installed: ./test.sh installs it"
)


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PROMTOOL, *args], capture_output=True, text=True, check=False, timeout=120)


@needs_promtool
def test_promtool_checks_the_rules(tmp_path: Path) -> None:
    done = _promtool("check", "rules", str(write_rule_file(tmp_path / "rules.yaml", rule_groups())))
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(rules())} rules found" in done.stdout


def test_the_alerts_the_issue_lists_are_there_with_severity_and_text() -> None:
    by_name = {r["alert"]: r for r in rules()}
    assert {
        "ForesightForecastDegraded",
        "ForesightServingObserved",
        "ForesightDataStale",
        "ForesightPrometheusUnreachable",
        "ForesightFitFailures",
        "ForesightReplicaNotSharingWork",
        "RightsizerRollbacks",
        "RightsizerRunOverdue",
        "RightsizerComplianceChange",
    } <= set(by_name)
    for rule in by_name.values():
        assert rule["labels"]["severity"] in ("info", "warning", "critical")
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]
    assert by_name["ForesightServingObserved"]["for"] == "30m"


# promtool's rule unit tests: input series over time, the alerts expected at given instants.
UNIT_TESTS = """
tests:
  - interval: 1m
    input_series:
      - series: 'foresight_shared_store_up{pod="scaler-a"}'
        values: '1 1 0 0 0 0 0 0'
      - series: 'foresight_shared_store_up{pod="scaler-b"}'
        values: '1x8'
    alert_rule_test:
      - {eval_time: 3m, alertname: ForesightReplicaNotSharingWork, exp_alerts: []}
      - eval_time: 5m
        alertname: ForesightReplicaNotSharingWork
        exp_alerts:
          - exp_labels: {severity: warning, pod: scaler-a}

  - interval: 1m
    input_series:
      # One replica loses a claim now and then (a Redis restart), the other keeps losing them.
      - series: 'foresight_shared_store_leases_lost_total{pod="scaler-a"}'
        values: '0 1 1 1 1 1 1 1 1 1 1'
      - series: 'foresight_shared_store_leases_lost_total{pod="scaler-b"}'
        values: '0 1 2 3 4 5 6 7 8 9 10'
    alert_rule_test:
      - {eval_time: 2m, alertname: ForesightLeasesLost, exp_alerts: []}
      - eval_time: 5m
        alertname: ForesightLeasesLost
        exp_alerts:
          - exp_labels: {severity: warning, pod: scaler-b}

  - interval: 1m
    input_series:
      # The same ScaledObject seen by two replicas: no model yet for 40 minutes on one of them.
      - series: 'foresight_served_reason{namespace="shop",name="api",metric="m",series="s",reason="no-model",pod="a"}'
        values: '1x40'
      - series: 'foresight_served_reason{namespace="shop",name="web",metric="m",series="s",reason="no-model",pod="a"}'
        values: '1x10 _x30'
      - series: 'foresight_served_reason{namespace="shop",name="web",metric="m",series="s",reason="forecast",pod="a"}'
        values: '_x10 1x30'
    alert_rule_test:
      - {eval_time: 29m, alertname: ForesightServingObserved, exp_alerts: []}
      - eval_time: 31m
        alertname: ForesightServingObserved
        exp_alerts:
          - exp_labels: {severity: warning, namespace: shop, name: api, metric: m, reason: no-model}

  - interval: 1m
    input_series:
      - series: 'foresight_series_misses_over_20pct_last_hour{series="s1",pod="a"}'
        values: '0x10 1x10 2x10 3x20'
      - series: 'foresight_series_misses_over_20pct_last_hour{series="s2",pod="a"}'
        values: '0x10 1x10 2x30'
    alert_rule_test:
      - {eval_time: 33m, alertname: ForesightForecastDegraded, exp_alerts: []}
      - eval_time: 40m
        alertname: ForesightForecastDegraded
        exp_alerts:
          - exp_labels: {severity: warning, series: s1}

  - interval: 5m
    input_series:
      # The last success at t=0, pushed again every 5 minutes by the Pushgateway's scrape.
      - series: 'rightsizer_last_success_timestamp_seconds{job="foresight-rightsizer"}'
        values: '0x600'
      - series: 'rightsizer_compliance_changes_total{job="foresight-rightsizer"}'
        values: '0x12 1x12'
    alert_rule_test:
      - {eval_time: 47h, alertname: RightsizerRunOverdue, exp_alerts: []}
      - eval_time: 49h
        alertname: RightsizerRunOverdue
        exp_alerts: [{exp_labels: {severity: warning}}]
      - {eval_time: 55m, alertname: RightsizerComplianceChange, exp_alerts: []}
      - eval_time: 65m
        alertname: RightsizerComplianceChange
        exp_alerts: [{exp_labels: {severity: critical}}]

  - interval: 5m
    input_series:
      # A run that ended at 10m (pushed then) with 6 rollbacks; an hour later it no longer counts as recent.
      - series: 'rightsizer_rollbacks_total{job="foresight-rightsizer",reason="health"}'
        values: '_ _ 6x30'
      - series: 'push_time_seconds{job="foresight-rightsizer"}'
        values: '_ _ 600x30'
    alert_rule_test:
      - eval_time: 15m
        alertname: RightsizerRollbacks
        exp_alerts: [{exp_labels: {severity: critical}}]
      - {eval_time: 75m, alertname: RightsizerRollbacks, exp_alerts: []}

  - interval: 5m
    input_series:
      # Fits that hang past --fit-deadline are abandoned, not failed: they count as failures all the same.
      - series: 'foresight_fits_total{outcome="ok",pod="a"}'
        values: '0+2x30'
      - series: 'foresight_fits_total{outcome="abandoned",pod="a"}'
        values: '0+1x30'
    alert_rule_test:
      - eval_time: 75m
        alertname: ForesightFitFailures
        exp_alerts: [{exp_labels: {severity: warning}}]
"""


@needs_promtool
def test_promtool_rule_unit_tests_fire_the_alerts_when_they_should(tmp_path: Path) -> None:
    groups = rule_groups()
    for group in groups["groups"]:  # the tests are about when alerts fire; promtool check rules parses the text
        for rule in group["rules"]:
            rule.pop("annotations", None)
    write_rule_file(tmp_path / "rules.yaml", groups)
    tests = yaml.safe_load(textwrap.dedent(UNIT_TESTS))
    tests["rule_files"] = ["rules.yaml"]
    tests["evaluation_interval"] = "1m"
    (tmp_path / "tests.yaml").write_text(yaml.safe_dump(tests, sort_keys=False), encoding="utf-8")
    done = _promtool("test", "rules", str(tmp_path / "tests.yaml"))
    assert done.returncode == 0, done.stdout + done.stderr


@needs_promtool
def test_every_dashboard_query_is_valid_promql(tmp_path: Path) -> None:
    queries = dashboard_queries()
    assert len(queries) >= 20
    groups = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"dashboard:query_{i}", "expr": as_promql(expr)} for i, (_, expr) in enumerate(queries)
                ],
            }
        ]
    }
    done = _promtool("check", "rules", str(write_rule_file(tmp_path / "dashboard.yaml", groups)))
    assert done.returncode == 0, done.stdout + done.stderr


def test_dashboard_shows_what_a_platform_team_needs() -> None:
    doc = dashboard()
    assert doc["uid"] == "foresight"
    exprs = " ".join(expr for _, expr in dashboard_queries())
    for shown in (
        "foresight_series_observed",  # forecast vs actual
        "foresight_series_forecast",
        "foresight_served_value",  # served value per ScaledObject
        "foresight_subscriptions",  # mode and reason
        "foresight_served_reason",
        "foresight_series_model_confidence",  # confidence
        "foresight_series_live_confidence",
        "foresight_series_forecast_error",  # live error
        "foresight_fit_duration_seconds_bucket",  # fit durations and failures
        "foresight_fits_total",
        "foresight_rpc_duration_seconds_count",  # RPC rate and latency
        "foresight_rpc_duration_seconds_bucket",
        "rightsizer_savings_monthly",  # the rightsizer's savings
    ):
        assert shown in exprs, shown
    for panel in doc["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
    generated = one(render("monitoring"), "ConfigMap", "foresight-grafana-dashboard")
    assert generated["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(generated["data"][DASHBOARD.name]) == doc


def test_service_monitor_scrapes_the_scaler_service_metrics_port() -> None:
    monitor = one(render("monitoring"), "ServiceMonitor")
    service = one(render("base"), "Service")
    assert monitor["metadata"]["namespace"] == service["metadata"]["namespace"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
    assert endpoint["path"] == "/metrics"
    # The alert on a scaler that is down counts the ServiceMonitor's job, which jobLabel makes "foresight-scaler".
    assert service["metadata"]["labels"][monitor["spec"]["jobLabel"]] == "foresight-scaler"
    assert any('up{job="foresight-scaler"}' in r["expr"] for r in rules())
