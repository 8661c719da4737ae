"""Fixtures for the simulator tests."""

from __future__ import annotations

import pytest

from i24net.sim import Simulation


@pytest.fixture
def demo() -> Simulation:
    """The 8-agency demo network, seed 7, default conditions."""
    return Simulation.from_preset("demo", seed=7)
