"""Fixtures shared by the rightsizer tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fakes.arm import FakeArm


@pytest.fixture
def fake_arm() -> Iterator[FakeArm]:
    """Our fake Azure Resource Manager on loopback (real HTTPS), for the real azure-mgmt-compute client."""
    with FakeArm() as arm:
        yield arm
