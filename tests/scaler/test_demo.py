"""The README's first command: the demo on the replay source, with real fits, through real gRPC."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_demo_prints_what_is_served_and_why() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "scaler_service", "demo", "--fit-timeout-s", "150"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert "2/2 fitted" in out, out
    for name in ("demo/web-frontend ", "demo/web-frontend-dry-run", "demo/taxi-dispatch"):
        assert name in out
    table = out.split("What the scaler serves now")[1].split("Why:")[0]
    assert "observe-mode" in table  # the dry-run object
    assert "none" not in table.split("model")[1]  # every row has a fitted model
    assert "python -m scaler_service query --address 127.0.0.1:" in out
