"""The alert rules and the dashboard of manifests/monitoring, as data for the tests."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import yaml

from tests.deploy.render import MANIFESTS, one, render

DASHBOARD = MANIFESTS / "monitoring" / "dashboards" / "foresight.json"
RATE_INTERVAL = "5m"

# Series Prometheus itself (or the Pushgateway) makes, which no service of ours exports.
PROMETHEUS_OWN = frozenset({"up", "push_time_seconds", "push_failure_time_seconds"})
_KEYWORDS = frozenset({"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right", "bool"})
_KEYWORDS |= {"offset", "inf", "nan"}
_OURS = re.compile(r"\b((?:foresight|rightsizer)_[a-zA-Z0-9_]+)\b")


def rule_groups() -> dict[str, Any]:
    """The PrometheusRule's spec: a plain Prometheus rule file (a copy: the rendered objects are cached)."""
    spec: dict[str, Any] = copy.deepcopy(one(render("monitoring"), "PrometheusRule")["spec"])
    return spec


def rules() -> list[dict[str, Any]]:
    return [rule for group in rule_groups()["groups"] for rule in group["rules"]]


def dashboard() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return doc


def dashboard_queries() -> list[tuple[str, str]]:
    """(where, PromQL) of every panel target and every query variable."""
    out: list[tuple[str, str]] = []
    for panel in dashboard()["panels"]:
        for target in panel.get("targets", []):
            out.append((f"panel {panel['title']!r}", target["expr"]))
    for variable in dashboard()["templating"]["list"]:
        if variable["type"] == "query":
            text = variable["query"]["query"]
            match = re.fullmatch(r"label_values\((\w+),\s*\w+\)", text)
            assert match, f"variable {variable['name']}: {text}"
            out.append((f"variable {variable['name']}", match.group(1)))
    return out


def as_promql(expr: str) -> str:
    """Grafana's variables replaced by what they expand to, so promtool can parse the query."""
    return expr.replace("$__rate_interval", RATE_INTERVAL).replace('"$series"', '".*"').replace('"$namespace"', '".*"')


def metric_names(expr: str) -> set[str]:
    """Our metric names in a PromQL expression (every name of ours starts with foresight_ or rightsizer_)."""
    return set(_OURS.findall(expr))


def selected_metrics(expr: str) -> set[str]:
    """Every metric name a PromQL expression selects: identifiers that are not functions, keywords, label names in
    matchers or grouping clauses, durations or strings."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # strings
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)  # label lists
    text = re.sub(r"\[[^\]]*\]", "", text)  # range durations
    names = set()
    for match in re.finditer(r"(?<![\w.])([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?", text):
        name, call = match.group(1), match.group(2)
        if not call and name.lower() not in _KEYWORDS:
            names.add(name)
    return names


def write_rule_file(path: Path, groups: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(groups, sort_keys=False), encoding="utf-8")
    return path
