"""Progress bars on long work: on a terminal (a real pseudo-terminal here) and never in pipes, JSON or CSV."""

from __future__ import annotations

import fcntl
import os
import pty
import select
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BACKTEST = [
    "-m", "scaler_service", "backtest", "--trace", "nyc-taxi", "--target-value", "500", "--refit-interval", "4h",
    "--eval-days", "0.5",
]  # fmt: skip


def run_with_stderr_on(terminal: bool, args: list[str]) -> tuple[int, str, str]:
    """Runs ``python args`` with stderr on a pseudo-terminal (``terminal``) or a pipe; returns code, out, err."""
    if not terminal:
        done = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=300)
        return done.returncode, done.stdout, done.stderr
    master, slave = pty.openpty()
    # A terminal 120 columns wide (a fresh pseudo-terminal reports 0 x 0, where tqdm draws nothing).
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    proc = subprocess.Popen(
        [sys.executable, *args], cwd=ROOT, stdout=subprocess.PIPE, stderr=slave, stdin=subprocess.DEVNULL
    )
    os.close(slave)
    chunks: list[bytes] = []
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.5)
        if ready:
            try:
                data = os.read(master, 65536)
            except OSError:  # the child closed the terminal (EIO)
                break
            if not data:
                break
            chunks.append(data)
        elif proc.poll() is not None:
            break
    os.close(master)
    assert proc.stdout is not None
    out = proc.stdout.read().decode()
    proc.wait(timeout=30)
    return proc.returncode, out, b"".join(chunks).decode(errors="replace")


def test_backtest_shows_fits_done_of_total_and_time_left_on_a_terminal() -> None:
    code, out, err = run_with_stderr_on(True, BACKTEST)
    assert code == 0, err[-2000:]
    assert "backtest: " in err and " fits [" in err, err[-2000:]
    assert "<" in err.split("fits [", 1)[1]  # elapsed<remaining
    assert "Predictive" in out or "predictive" in out
    assert "\r" not in out  # the table itself is clean


def test_backtest_shows_no_progress_in_a_pipe_or_as_json() -> None:
    code, _, err = run_with_stderr_on(False, BACKTEST)
    assert code == 0 and " fits [" not in err and "\r" not in err
    code, out, err = run_with_stderr_on(True, [*BACKTEST, "--output", "json"])
    assert code == 0 and " fits [" not in err and out.lstrip().startswith("{")


def test_rightsizer_shows_vms_done_of_total_on_a_terminal_only_for_the_table() -> None:
    code, out, err = run_with_stderr_on(True, ["-m", "rightsizer"])
    assert code == 0, err[-2000:]
    assert "\r" not in out  # the table on stdout stays clean
    assert "forecast and size: " in err and " VMs [" in err, err[-2000:]
    for output in ("json", "csv"):
        code, _, err = run_with_stderr_on(True, ["-m", "rightsizer", "recommend", "--output", output])
        assert code == 0 and " VMs [" not in err, err[-2000:]
    code, _, err = run_with_stderr_on(False, ["-m", "rightsizer"])
    assert code == 0 and " VMs [" not in err
