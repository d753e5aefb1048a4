"""Fixtures for the deployment tests: the project installed the way the image installs it, and a scaler started
from that install.

The install (wheel build + clean virtualenv, about a minute) happens once per test session; the scaler started
from it is shared by the install checks and the metric-name checks of the alerts and the dashboard.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

from scaler_service.client import ScalerClient, channel
from tests.support.prometheus import free_port

ROOT = Path(__file__).resolve().parents[2]
INSTALL_SCRIPT = ROOT / "scripts" / "install_venv.sh"

# The ScaledObjects registered on the installed scaler: one-minute data, predictive and observe modes.
NAMESPACE = "deploy-test"
OBJECTS = {
    "web": {"query": "nasa-http-1995", "threshold": "30", "queryStep": "1m", "historyTimeWindow": "7d"},
    "web-observe": {
        "query": "nasa-http-1995",
        "threshold": "30",
        "queryStep": "1m",
        "historyTimeWindow": "7d",
        "mode": "observe",
    },
}
FIT_TIMEOUT_S = 300.0
REGISTER_DEADLINE_S = 30.0
"""Deadline of the polls that register ScaledObjects: these tests check what is served, not latency (KEDA's 3 s is
the benchmarks' business), and a CI machine may be loaded."""


def build_context_sources() -> list[str]:
    """The repository paths the Dockerfile's build stage copies (its COPY lines without --from)."""
    sources: list[str] = []
    for line in (ROOT / "Dockerfile").read_text(encoding="utf-8").splitlines():
        words = line.split()
        if words[:1] == ["COPY"] and not any(w.startswith("--from") for w in words):
            sources += [w.rstrip("/") for w in words[1:-1]]
    return sources


@dataclass(frozen=True)
class Install:
    venv: Path
    wheel: Path

    def bin(self, name: str) -> Path:
        return self.venv / "bin" / name


@pytest.fixture(scope="session")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Install:
    """Copies what the Dockerfile copies into a clean folder and runs the image's install script on it."""
    work = tmp_path_factory.mktemp("install")
    src = work / "src"
    src.mkdir()
    for rel in build_context_sources():
        if rel.startswith("scripts/"):
            continue  # the install script itself, run from the repository below
        path = ROOT / rel
        if path.is_dir():
            shutil.copytree(path, src / rel, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(path, src / rel)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env["PYTHON"] = sys.executable  # a venv made from a venv's python is based on the base interpreter: clean
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    done = subprocess.run(
        ["sh", str(INSTALL_SCRIPT), str(src), str(work / "wheels"), str(work / "venv")],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, f"install failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    (wheel,) = (work / "wheels").glob("foresight-*.whl")
    return Install(venv=work / "venv", wheel=wheel)


@dataclass(frozen=True)
class RunningScaler:
    grpc_address: str
    http_url: str
    log: Path

    def get(self, path: str) -> str:
        with urllib.request.urlopen(self.http_url + path, timeout=10) as response:
            body: bytes = response.read()
            return body.decode()

    def forecast(self) -> list[dict[str, object]]:
        doc: list[dict[str, object]] = json.loads(self.get("/forecast"))["scaledObjects"]
        return doc


def fitted(scaler: RunningScaler) -> bool:
    try:
        views = scaler.forecast()
    except OSError:
        return False
    return any(v.get("model") for v in views)


@contextlib.contextmanager
def serving(
    proc: subprocess.Popen[bytes],
    scaler: RunningScaler,
    namespace: str,
    objects: Mapping[str, Mapping[str, str]],
    *,
    what: str,
) -> Iterator[RunningScaler]:
    """Waits for a started scaler's /healthz, registers ``objects`` as KEDA would, waits for a fit, polls them
    again (so per-object metrics have values) and stops the process afterwards."""
    client: ScalerClient | None = None
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, f"{what} exited:\n{scaler.log.read_text()[-3000:]}"
            try:
                scaler.get("/healthz")
                break
            except OSError:
                assert time.monotonic() < deadline, f"no /healthz within 60 s:\n{scaler.log.read_text()[-3000:]}"
                time.sleep(0.3)
        client = ScalerClient(channel(scaler.grpc_address))
        for name, metadata in objects.items():
            client.keda_poll(namespace, name, metadata, deadline_s=REGISTER_DEADLINE_S)
        deadline = time.monotonic() + FIT_TIMEOUT_S
        while not fitted(scaler):
            assert proc.poll() is None, f"{what} exited:\n{scaler.log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, (
                f"no fit within {FIT_TIMEOUT_S:.0f} s:\n{scaler.log.read_text()[-3000:]}"
            )
            time.sleep(1.0)
        for name, metadata in objects.items():
            client.keda_poll(namespace, name, metadata, deadline_s=REGISTER_DEADLINE_S)
        yield scaler
    finally:
        if client is not None:
            client.close()
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="session")
def installed_scaler(installed: Install, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningScaler]:
    """``foresight-scaler serve --source replay`` from the clean install, with ScaledObjects registered through
    the KEDA-like client and their first (one-minute data) fit landed."""
    work = tmp_path_factory.mktemp("scaler")
    grpc_port, http_port = free_port(), free_port()
    log = work / "scaler.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV", "FORESIGHT_"))}
    env["TMPDIR"] = str(work)  # as in the image: cmdstan's files go under TMPDIR
    with log.open("wb") as log_file:
        proc = subprocess.Popen(
            [
                str(installed.bin("foresight-scaler")),
                "serve",
                "--source",
                "replay",
                "--bind-address",
                "127.0.0.1",
                "--grpc-port",
                str(grpc_port),
                "--http-port",
                str(http_port),
                "--kube-annotations",
                "false",
            ],
            cwd=work,  # not the repository: imports must come from the install
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    scaler = RunningScaler(f"127.0.0.1:{grpc_port}", f"http://127.0.0.1:{http_port}", log)
    with serving(proc, scaler, NAMESPACE, OBJECTS, what="the installed scaler"):
        yield scaler
