"""Fixtures for the core tests: the fixed in-memory network (see ``fixednet``)."""

from __future__ import annotations

import pytest
from fixednet import FixedNet, FixedRandom, build_net


@pytest.fixture(scope="session")
def net() -> FixedNet:
    """The 12-agency network at directory version 1. Immutable values: safe to share."""
    return build_net()


@pytest.fixture
def rng() -> FixedRandom:
    return FixedRandom("test")
