"""Fixtures shared by the rightsizer tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import structlog

from tests.fakes.arm import FakeArm


@pytest.fixture
def fake_arm() -> Iterator[FakeArm]:
    """Our fake Azure Resource Manager on loopback (real HTTPS), for the real azure-mgmt-compute client."""
    with FakeArm() as arm:
        yield arm


@pytest.fixture(autouse=True)
def _default_structlog() -> Iterator[None]:
    # A CLI main() configures structlog for the process (its own renderer and level); later tests, here and in
    # other folders, must start from structlog's defaults again.
    structlog.reset_defaults()
    yield
    structlog.reset_defaults()
