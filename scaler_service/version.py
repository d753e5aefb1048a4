"""The installed package's version: what `--version`, `/metrics` (`foresight_build_info`) and the image agree on."""

from __future__ import annotations

import importlib.metadata


def package_version() -> str:
    try:
        return importlib.metadata.version("foresight")
    except importlib.metadata.PackageNotFoundError:  # a source tree that was never installed
        return "0+unknown"


__all__ = ["package_version"]
