"""Exit codes of both command lines: 0 ok, 1 internal, 2 bad input, 3 a service unreachable, 4 a check failed."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from rightsizer.exit_codes import ExitCode, exit_code_for

ROOT = Path(__file__).resolve().parents[1]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # closed again when the block ends: nothing listens there


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(
    ("args", "code", "says"),
    [
        (["-m", "scaler_service", "query", "--metadata", "no-equals-sign"], 2, "error:"),
        (["-m", "scaler_service", "serve", "--log-level", "verbose"], 2, "debug, info, warning or error"),
        (["-m", "scaler_service", "demo", "--log-level", "verbose"], 2, "invalid choice: 'verbose'"),
        (["-m", "scaler_service", "backtest", "--trace", "no-such-trace"], 2, "error"),
        (["-m", "rightsizer", "recommend", "--inventory", "/nonexistent/vms.json"], 2, "rightsizer: error"),
        (["-m", "rightsizer", "--log-level", "verbose"], 2, "invalid choice: 'verbose'"),
    ],
)
def test_bad_input_exits_2_and_says_why(args: list[str], code: int, says: str) -> None:
    done = run(*args)
    assert done.returncode == code, (done.stdout[-500:], done.stderr[-2000:])
    assert says in done.stderr


def test_query_of_an_unreachable_scaler_exits_3() -> None:
    done = run(
        "-m", "scaler_service", "query", "--address", f"127.0.0.1:{_closed_port()}", "--deadline-s", "2",
        "--metadata", "query=nyc-taxi", "threshold=10",
    )  # fmt: skip
    assert done.returncode == ExitCode.UNREACHABLE, done.stderr[-2000:]
    assert "UNAVAILABLE" in done.stderr or "DEADLINE_EXCEEDED" in done.stderr


def test_rightsizer_maps_real_failures_to_codes() -> None:
    with pytest.raises(requests.ConnectionError) as unreachable:
        requests.get(f"http://127.0.0.1:{_closed_port()}/api/v1/query", timeout=5)
    assert exit_code_for(unreachable.value) is ExitCode.UNREACHABLE
    with pytest.raises(FileNotFoundError) as missing:
        open("/nonexistent/settings.yaml")  # noqa: SIM115
    assert exit_code_for(missing.value) is ExitCode.BAD_INPUT
    assert exit_code_for(ValueError("bad --shard")) is ExitCode.BAD_INPUT
    assert exit_code_for(KeyError("a bug")) is ExitCode.INTERNAL
