"""The backtest command line on real data: a bundled trace fitted by the service, records, bad input."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from forecasting.series import DAY_S
from scaler_service.backtest.cli import build_parser, run
from scaler_service.backtest.trace import from_bundled
from tests.support.prometheus import NASA_METRIC, StartPrometheus, nasa_series

STRATEGY_FIELDS = {
    "replica_hours",
    "underprovisioned_minutes",
    "unserved_demand",
    "worst_shortfall",
    "scaling_events",
}


def _run(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = run(build_parser().parse_args(argv), out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def test_bundled_trace_with_the_service_pipeline_json_and_plot(tmp_path: Path) -> None:
    png = tmp_path / "backtest.png"
    code, out, err = _run(
        [
            "--trace",
            "nyc-taxi",
            "--target-value",
            "500",
            "--min-replicas",
            "2",
            "--max-replicas",
            "100",
            "--lead-time",
            "10m",
            "--pod-startup",
            "3m",
            "--refit-interval",
            "24h",
            "--eval-days",
            "0.5",
            "--output",
            "json",
            "--plot",
            str(png),
        ]
    )
    assert code == 0, err
    doc = json.loads(out)
    assert set(doc["strategies"]) == {"reactive", "reactive_headroom", "predictive", "static"}
    for name, fig in doc["strategies"].items():
        assert set(fig) >= STRATEGY_FIELDS, name
        assert fig["replica_hours"] > 0
    assert doc["strategies"]["static"]["underprovisioned_minutes"] == 0
    # Headroom matched predictive's service level (or reactive already did better).
    goal = doc["strategies"]["predictive"]["underprovisioned_minutes"]
    assert doc["strategies"]["reactive_headroom"]["underprovisioned_minutes"] <= goal
    assert doc["predictive"]["fits"] >= 1 and doc["predictive"]["fit_failures"] == 0
    assert doc["window"]["evaluation_days"] == pytest.approx(0.5, abs=0.01)
    assert any("interpolated to 1 minute" in r for r in doc["repairs"])
    assert isinstance(doc["verdict"], str) and "replica-hours" in doc["verdict"]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    import matplotlib.image

    rgb = (matplotlib.image.imread(png)[..., :3] * 255).round().astype(int)
    assert rgb.shape[:2] == (1200, 1400)
    # Every strategy's bar in the cost and service summary is drawn in its colour.
    for colour in ((0xD9, 0x77, 0x06), (0x7C, 0x3A, 0xED), (0x25, 0x63, 0xEB), (0x6B, 0x72, 0x80)):
        assert (np.abs(rgb - np.array(colour)).sum(axis=-1) < 12).sum() > 500, colour


def test_records_mode_table(tmp_path: Path) -> None:
    nasa = from_bundled("nasa-http-1995")
    minutes = nasa.values[-3 * 1440 :]
    start = nasa.end - len(minutes) * 60.0
    # What a recorder would write: the observed rate of each minute at its end, and a "predictive" column that
    # is the peak of the next 10 minutes (an oracle: enough to check the plumbing and the comparison).
    ahead = np.array([minutes[i : i + 10].max() for i in range(len(minutes))])
    lines = ["timestamp,observed,served,predictive"]
    for i, (obs, pred) in enumerate(zip(minutes, ahead, strict=True)):
        lines.append(f"{start + 60 * (i + 1):.0f},{obs:g},{obs:g},{pred:g}")
    path = tmp_path / "default.api.s0-foresight.csv"
    path.write_text("\n".join(lines) + "\n")
    code, out, err = _run(["--records", str(path), "--target-value", "10", "--pod-startup", "1m", "--eval-days", "2"])
    assert code == 0, err
    for name in ("reactive", "reactive_headroom", "predictive", "static", "verdict:"):
        assert name in out
    assert "observe-mode records" in out


@pytest.mark.parametrize(
    ("rows", "argv_extra", "message"),
    [
        (["1700000040,5", "1700000040,6", "1700000100,7"], [], "appears more than once"),
        (["1700000040,5", "1700000100,-1", "1700000160,7"], [], "negative value"),
    ],
)
def test_bad_input_exits_2_with_a_clear_message(
    tmp_path: Path, rows: list[str], argv_extra: list[str], message: str
) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("timestamp,value\n" + "\n".join(rows) + "\n")
    code, out, err = _run(["--trace", str(path), "--target-value", "5", *argv_extra])
    assert code == 2
    assert message in err and out == ""


def test_source_must_be_given_once(tmp_path: Path) -> None:
    code, _, err = _run(["--target-value", "5"])
    assert code == 2 and "exactly one trace source" in err
    code, _, err = _run(["--trace", "nyc-taxi", "--records", "x.csv", "--target-value", "5"])
    assert code == 2 and "--trace, --records" in err


def test_too_short_a_trace_says_how_much_history_is_needed(tmp_path: Path) -> None:
    path = tmp_path / "short.csv"
    path.write_text("timestamp,value\n" + "\n".join(f"{1700000040 + 60 * i},{5 + i % 4}" for i in range(600)))
    code, _, err = _run(["--trace", str(path), "--target-value", "5"])
    assert code == 2 and "too short" in err and "2.0 days" in err


def test_module_entry_point_runs_on_its_own() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "scaler_service.backtest", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0
    assert "--target-value" in proc.stdout and "--records" in proc.stdout
    proc = subprocess.run(
        [sys.executable, "-m", "scaler_service.backtest", "--trace", "nyc-taxi", "--target-value", "0"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2 and "must be a number > 0" in proc.stderr
    # The scaler's own command line carries the same sub-command.
    proc = subprocess.run(
        [sys.executable, "-m", "scaler_service", "backtest", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0 and "--target-value" in proc.stdout


@pytest.mark.prometheus
def test_prometheus_query_as_the_trace(prometheus_factory: StartPrometheus) -> None:
    now = time.time()
    server = prometheus_factory(nasa_series(now=now, days=3.0))
    start = now - 3 * DAY_S
    code, out, err = _run(
        [
            "--prometheus-url",
            server.url,
            "--query",
            NASA_METRIC,
            "--start",
            f"{start:.0f}",
            "--end",
            f"{now:.0f}",
            "--step",
            "1m",
            "--target-value",
            "10",
            "--eval-days",
            "0.2",
            "--refit-interval",
            "24h",
            "--fit-step",
            "5m",
            "--output",
            "json",
        ]
    )
    assert code == 0, err
    doc = json.loads(out)
    assert set(doc["strategies"]) == {"reactive", "reactive_headroom", "predictive", "static"}
    assert doc["trace"]["name"] == "prometheus"
    assert doc["strategies"]["reactive"]["replica_hours"] > 0
    # A query that matches nothing is a clear error.
    code, _, err = _run(
        [
            "--prometheus-url",
            server.url,
            "--query",
            "no_such_metric",
            "--start",
            f"{start:.0f}",
            "--target-value",
            "10",
        ]
    )
    assert code == 2 and "returned no data" in err
