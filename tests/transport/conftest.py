"""Fixtures for the transport tests: a private Mosquitto per broker test, on 127.0.0.1.

Broker tests are marked ``broker``; without a Mosquitto binary they are skipped with the
reason. Every test also gets a unique topic prefix, so the same tests could share a broker.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from .mosquitto_harness import MosquittoProcess, find_mosquitto


@pytest.fixture
def mosquitto_binary() -> str:
    binary = find_mosquitto()
    if binary is None:
        pytest.skip(
            "mosquitto is not installed (apt-get install mosquitto, or set I24NET_MOSQUITTO)"
        )
    return binary


@pytest.fixture
def mosquitto(mosquitto_binary: str, tmp_path: Path) -> Iterator[MosquittoProcess]:
    """A running, anonymous, non-persistent Mosquitto on a free 127.0.0.1 port."""
    broker = MosquittoProcess(mosquitto_binary, tmp_path)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def make_mosquitto(
    mosquitto_binary: str, tmp_path: Path
) -> Iterator[Callable[..., MosquittoProcess]]:
    """Build brokers with other settings; every one built is stopped after the test."""
    started: list[MosquittoProcess] = []

    def build(
        *, persistence: bool = False, anonymous: bool = True, extra_config: tuple[str, ...] = ()
    ) -> MosquittoProcess:
        workdir = tmp_path / f"broker{len(started)}"
        workdir.mkdir()
        broker = MosquittoProcess(
            mosquitto_binary,
            workdir,
            persistence=persistence,
            anonymous=anonymous,
            extra_config=extra_config,
        )
        started.append(broker)
        broker.start()
        return broker

    try:
        yield build
    finally:
        for broker in started:
            broker.stop()


@pytest.fixture
def prefix() -> str:
    """A topic prefix no other test uses."""
    return f"test/{uuid.uuid4().hex[:12]}"
