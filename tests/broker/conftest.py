"""Fixtures for the broker tests: a network's accounts and a private broker per test.

Every broker here is started by the test that uses it, on a free 127.0.0.1 port, with its
files in ``tmp_path``, and stopped afterwards, so tests never share sessions or retained
messages. ``broker`` runs each test against both engines; the Mosquitto variant is skipped
(with the reason) where ``mosquitto`` is not installed.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from i24net.broker import ROUTER_USERNAME, accounts_for, generate_password, start_broker

from .support import AGENCIES, PREFIX, Endpoint, Network, requires_mosquitto


@pytest.fixture
def network() -> Network:
    passwords = {name: generate_password(os.urandom) for name in (*AGENCIES, ROUTER_USERNAME)}
    return Network(tuple(accounts_for(AGENCIES, passwords, PREFIX)), passwords)


@pytest.fixture(
    params=["embedded", pytest.param("mosquitto", marks=requires_mosquitto)],
)
async def broker(
    request: pytest.FixtureRequest, network: Network, tmp_path: Path
) -> AsyncIterator[Endpoint]:
    """A running broker of each engine for ``network``'s accounts."""
    engine: str = request.param
    async with start_broker(engine, tmp_path / engine, network.accounts) as running:
        yield Endpoint(engine, running.host, running.port)
