"""The image's install, performed outside any container: wheel, clean virtualenv, entry points, a real fit.

Nothing here imports the project from the source tree: the installed console scripts run in a folder outside
the repository, so a package-data file missing from the wheel or an import that only resolves from the
checkout fails here.
"""

from __future__ import annotations

import json
import os
import subprocess
import tomllib
import zipfile
from pathlib import Path

from tests.deploy.conftest import NAMESPACE, ROOT, Install, RunningScaler, build_context_sources

PACKAGES = ("forecasting", "scaler_service", "rightsizer")


def _version() -> str:
    doc = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    version: str = doc["project"]["version"]
    return version


def _tracked_files(package: str) -> list[str]:
    out = subprocess.run(["git", "ls-files", package], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return [line for line in out.splitlines() if line]


def test_build_stage_copies_every_package_and_the_metadata() -> None:
    sources = set(build_context_sources())
    assert {"pyproject.toml", "README.md", *PACKAGES} <= sources
    ignore = (ROOT / ".dockerignore").read_text(encoding="utf-8")
    for rel in sources:
        assert f"!{rel}" in ignore or f"!{rel}/" in ignore, f".dockerignore keeps {rel} out of the build context"


def test_wheel_carries_every_data_file_the_packages_read(installed: Install) -> None:
    """Every tracked non-Python file of the packages is in the wheel, except provenance notes (DATA.md)."""
    with zipfile.ZipFile(installed.wheel) as wheel:
        names = set(wheel.namelist())
    assert installed.wheel.name.startswith(f"foresight-{_version()}-")
    missing = [
        f
        for package in PACKAGES
        for f in _tracked_files(package)
        if not f.endswith((".py", "DATA.md")) and f not in names
    ]
    assert missing == [], f"not in the wheel (add them to [tool.setuptools.package-data]): {missing}"


def test_both_entry_points_start_from_the_clean_install(installed: Install, tmp_path: Path) -> None:
    for script, words in (("foresight-scaler", "serve"), ("rightsizer", "recommend")):
        done = subprocess.run(
            [str(installed.bin(script)), "--help"], cwd=tmp_path, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stderr
        assert words in done.stdout
    site = subprocess.run(
        [str(installed.bin("python")), "-c", "import scaler_service, sys; print(scaler_service.__file__)"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
        env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
    ).stdout
    assert str(installed.venv) in site and str(ROOT) not in site


def test_rightsizer_dry_run_on_the_bundled_fleet_from_the_install(installed: Install, tmp_path: Path) -> None:
    done = subprocess.run(
        [str(installed.bin("rightsizer")), "recommend", "--output", "json"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env={**{k: v for k, v in os.environ.items() if k != "PYTHONPATH"}, "TMPDIR": str(tmp_path)},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    assert report["mode"] == "dry run", report["mode"]
    assert len(report["recommendations"]) == 50  # the bundled example fleet and the price catalogue came along


def test_installed_scaler_fits_one_minute_data_and_serves_it(installed_scaler: RunningScaler) -> None:
    """The replay source reads the bundled trace, Prophet's cmdstan binary runs, the model serves."""
    views = {v["name"]: v for v in installed_scaler.forecast() if v["namespace"] == NAMESPACE}
    assert set(views) == {"web", "web-observe"}
    web = views["web"]
    assert web["query_step"] == "1m"
    model = web["model"]
    assert isinstance(model, dict) and model["name"], web
    served = web["served"]
    assert isinstance(served, dict) and served["value"] is not None and served["value"] >= 0
    assert views["web-observe"]["mode"] == "observe"
