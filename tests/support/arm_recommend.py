"""``rightsizer recommend`` over the fake ARM server's subscription, with real metrics of the example fleet."""

from __future__ import annotations

import gzip
import io
import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from rightsizer.azure import ComputeGateway
from rightsizer.cli import build_parser, run_recommend
from tests.fakes.arm import FakeArm

EXAMPLES = Path(__file__).resolve().parents[2] / "rightsizer" / "examples"


def recommend_over_arm(
    arm: FakeArm, tmp_path: Path, vms_with_metrics: Iterable[str], gateway: Callable[[], ComputeGateway]
) -> dict[str, Any]:
    """The JSON answer of ``recommend --config`` listing the fake's subscription, with the example fleet's metrics
    of ``vms_with_metrics`` (the rest have none), at 2013-07-15; the run must exit 0."""
    names = tuple(vms_with_metrics)
    with gzip.open(EXAMPLES / "fleet-metrics.csv.gz", "rt") as fh:
        lines = [line for line in fh if line.startswith(("vm,", *(f"{n}," for n in names)))]
    metrics = tmp_path / "m.csv"
    metrics.write_text("".join(lines))
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"azure:\n  subscriptions: ['{arm.subscription}']\nforecast:\n  method: seasonal-profile\n")
    args = build_parser().parse_args(
        ["recommend", "--config", str(cfg), "--metrics", str(metrics), "--output", "json", "--now", "2013-07-15"]
    )
    out = io.StringIO()
    assert run_recommend(args, out, gateway_factory=gateway) == 0
    doc: dict[str, Any] = json.loads(out.getvalue())
    return doc
