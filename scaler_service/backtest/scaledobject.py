"""A ready KEDA ScaledObject for a tuned configuration: trigger metadata and the HPA ``behavior`` block.

Written as YAML text by hand (a fixed shape; strings quoted as JSON strings, which YAML reads as
double-quoted scalars), so the product needs no YAML library. The comment lines at the top state the figures
the configuration rests on. The tests validate the output against KEDA's ScaledObject CRD and parse its
trigger metadata with the scaler's own parser.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from scaler_service.backtest.hpa import DEFAULT_TOLERANCE, HpaSettings, PolicyKind, ScalingPolicy
from scaler_service.backtest.tune import Candidate

DEFAULT_SCALER_ADDRESS = "foresight-scaler.keda:9090"
PLACEHOLDER_QUERY = 'sum(rate(http_requests_total{service="app"}[2m]))'
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


@dataclass(frozen=True, slots=True)
class ObjectSettings:
    name: str = "app"
    """The ScaledObject's name and (unless ``target``) its Deployment's."""
    target: str | None = None
    query: str | None = None
    """The trigger's PromQL; None writes a placeholder and says so in a comment."""
    scaler_address: str = DEFAULT_SCALER_ADDRESS

    def __post_init__(self) -> None:
        for what, value in (("name", self.name), ("target", self.target)):
            if value is not None and (len(value) > 63 or not _NAME.match(value)):
                raise ValueError(
                    f"ScaledObject {what} must be a DNS-1123 label (lower-case letters, digits, '-', at most 63 "
                    f"characters), got {value[:40]!r}"
                )


def _duration(seconds: float) -> str:
    s = round(seconds)
    if s % 3600 == 0 and s:
        return f"{s // 3600}h"
    if s % 60 == 0 and s:
        return f"{s // 60}m"
    return f"{s}s"


def _number(x: float) -> str:
    return f"{x:.6g}"


def _quantity(x: float) -> str:
    """A Kubernetes quantity string in plain decimals (``0.02``, ``0``), as ``behavior.*.tolerance`` takes it."""
    text = f"{x:.6f}".rstrip("0").rstrip(".")
    return text or "0"


TOLERANCE_NOTE = (
    "behavior.scaleUp.tolerance needs Kubernetes with the HPAConfigurableTolerance feature gate (alpha in 1.33); "
    "where it is off, the HPA keeps its default 10 % band, which this configuration was not tuned for."
)


def trigger_metadata(candidate: Candidate, settings: ObjectSettings) -> dict[str, str]:
    meta = {
        "scalerAddress": settings.scaler_address,
        "query": settings.query or PLACEHOLDER_QUERY,
        "threshold": _number(candidate.target_value),
        "mode": candidate.strategy,
    }
    if candidate.strategy == "predictive":
        meta["predictHorizon"] = _duration(candidate.lead_s)
        meta["predictQuantile"] = _number(candidate.quantile)
        meta["minConfidence"] = _number(candidate.min_confidence)
    return meta


def _policies(policies: tuple[ScalingPolicy, ...]) -> list[dict[str, Any]]:
    return [
        {
            "type": "Pods" if p.kind is PolicyKind.PODS else "Percent",
            "value": p.value,
            "periodSeconds": round(p.period_s),
        }
        for p in policies
    ]


def scaled_object(
    candidate: Candidate, hpa: HpaSettings, settings: ObjectSettings, comments: list[str]
) -> dict[str, Any]:
    """The ScaledObject as a plain document (what :func:`to_yaml` writes)."""
    tuned = candidate.hpa(hpa)
    scale_up: dict[str, Any] = {
        "stabilizationWindowSeconds": round(tuned.scale_up_stabilization_s),
        "selectPolicy": "Max",
        "policies": _policies(tuned.scale_up_policies),
    }
    if tuned.scale_up_tolerance != DEFAULT_TOLERANCE:
        # Only when tuned: an unset field is the cluster's default and needs no feature gate.
        scale_up["tolerance"] = _quantity(tuned.scale_up_tolerance)
    return {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": {"name": settings.name},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": settings.target or settings.name},
            "pollingInterval": round(hpa.keda_poll_s),
            "minReplicaCount": hpa.min_replicas,
            "maxReplicaCount": hpa.max_replicas,
            "advanced": {
                "horizontalPodAutoscalerConfig": {
                    "behavior": {
                        "scaleDown": {
                            "stabilizationWindowSeconds": round(tuned.scale_down_stabilization_s),
                            "policies": _policies(tuned.scale_down_policies),
                        },
                        "scaleUp": scale_up,
                    }
                }
            },
            "triggers": [{"type": "external", "metadata": trigger_metadata(candidate, settings)}],
        },
    }


def _emit(value: Any, indent: int, lines: list[str], prefix: str) -> None:
    pad = " " * indent
    if isinstance(value, dict):
        if prefix:
            lines.append(prefix.rstrip())
        for k, v in value.items():
            if isinstance(v, dict | list):
                _emit(v, indent + (2 if prefix else 0), lines, f"{pad}{'  ' if prefix else ''}{k}:")
            else:
                lines.append(f"{pad}{'  ' if prefix else ''}{k}: {_scalar(v)}")
    elif isinstance(value, list):
        lines.append(prefix)
        inner = indent + 2
        for item in value:
            sub: list[str] = []
            _emit(item, 0, sub, "")
            for i, line in enumerate(sub):
                lines.append(" " * inner + ("- " if i == 0 else "  ") + line)


def _scalar(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    return json.dumps(str(v))


def to_yaml(document: dict[str, Any], comments: list[str]) -> str:
    lines = [f"# {c}" if c else "#" for c in comments]
    _emit(document, 0, lines, "")
    return "\n".join(lines) + "\n"


__all__ = ["DEFAULT_SCALER_ADDRESS", "TOLERANCE_NOTE", "ObjectSettings", "scaled_object", "to_yaml", "trigger_metadata"]
