"""One version everywhere: the package, both command lines' --version, the images the manifests deploy."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["version"]


@pytest.mark.parametrize(("module", "prog"), [("scaler_service", "foresight-scaler"), ("rightsizer", "rightsizer")])
def test_version_flag_prints_the_package_version(module: str, prog: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", module, "--version"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"{prog} {VERSION}"


def test_manifests_deploy_the_package_version() -> None:
    images = [
        (path.relative_to(ROOT), m.group(1))
        for path in sorted((ROOT / "manifests").rglob("*.y*ml"))
        for m in re.finditer(r"^\s*-?\s*image:\s*['\"]?([^\s'\"]+)", path.read_text(encoding="utf-8"), re.M)
    ]
    ours = [(path, image) for path, image in images if "foresight" in image.rsplit("/", 1)[-1]]
    assert ours, "no manifest deploys a foresight image"
    wrong = [(str(path), image) for path, image in ours if not image.endswith(f":{VERSION}")]
    assert not wrong, f"image tags that are not the package version {VERSION}: {wrong}"


def test_licence_is_the_one_pyproject_declares() -> None:
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["license"]
    assert declared == "Apache-2.0"
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert "Apache License" in text and "Version 2.0, January 2004" in text and "END OF TERMS AND CONDITIONS" in text


def test_changelog_names_the_version() -> None:
    assert f"## [{VERSION}]" in (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
