"""The README's first command: the demo on the replay source, with real fits, through real gRPC."""

from __future__ import annotations

import re
import shlex
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_demo_prints_what_is_served_and_why_and_keeps_the_live_view_running() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "scaler_service", "demo", "--fit-timeout-s", "150", "--keep-running"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        lines: list[str] = []
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if "-m scaler_service query" in line:
                break
        out = "".join(lines)
        assert "2/2 fitted" in out, out
        for name in ("demo/web-frontend ", "demo/web-frontend-dry-run", "demo/taxi-dispatch"):
            assert name in out
        table = out.split("What the scaler serves now")[1].split("Why:")[0]
        assert "observe-mode" in table  # the dry-run object
        assert "none" not in table.split("model")[1]  # every row has a fitted model
        assert f"{shlex.quote(sys.executable)} -m scaler_service query --address 127.0.0.1:" in out
        live = re.search(r"Live view in a browser: (http://127\.0\.0\.1:\d+/) ", out)
        assert live, out
        with urllib.request.urlopen(live.group(1), timeout=10) as resp:
            page = resp.read().decode()
        assert resp.status == 200 and "demo/taxi-dispatch" in page and "<svg" in page
        # The printed command works as printed, and says why the value is served.
        command = next(line for line in out.splitlines() if "-m scaler_service query" in line)
        query = subprocess.run(shlex.split(command), cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert query.returncode == 0, query.stderr[-2000:]
        why = next(line for line in query.stdout.splitlines() if line.startswith("Why:"))
        assert "(mode predictive, model " in why and "confidence" in why, why
    finally:
        proc.send_signal(signal.SIGINT)
        _rest, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err[-3000:]


def test_demo_without_keep_running_prints_no_dead_links() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "scaler_service", "demo", "--fit-timeout-s", "0"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    # Only the fixed ports of the suggested --keep-running rerun, never the free ports of this finished run.
    assert set(re.findall(r"127\.0\.0\.1:(\d+)/", out)) == {"8080"}, out
    assert set(re.findall(r"--address 127\.0\.0\.1:(\d+)", out)) == {"9090"}, out
    assert (
        f"{shlex.quote(sys.executable)} -m scaler_service demo --keep-running --grpc-port 9090 --http-port 8080" in out
    )
