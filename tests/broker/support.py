"""What the broker tests share: the test network, skip markers and MQTT client helpers."""

from __future__ import annotations

import asyncio
import shutil
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import aiomqtt
import pytest

from i24net.broker import BrokerAccount

HOST = "127.0.0.1"
FR, DE = "NCB-FR", "NCB-DE"
AGENCIES = (FR, DE)
PREFIX = "i24/v1"
# Long enough for a broker on a loaded CI machine to route a message that it should not.
QUIET_WINDOW = 0.5
# Generous ceiling for a message that must arrive; a pass takes milliseconds.
ARRIVAL_TIMEOUT = 5.0


def _mosquitto_binary() -> str | None:
    return shutil.which("mosquitto") or (
        "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None
    )


MOSQUITTO = _mosquitto_binary()
requires_mosquitto = pytest.mark.skipif(
    MOSQUITTO is None,
    reason="mosquitto is not installed (Debian: apt-get install mosquitto mosquitto-clients)",
)
requires_mosquitto_clients = pytest.mark.skipif(
    shutil.which("mosquitto_pub") is None or shutil.which("mosquitto_sub") is None,
    reason="mosquitto_pub/mosquitto_sub are not installed (Debian: mosquitto-clients)",
)


@dataclass(frozen=True, slots=True)
class Network:
    """The accounts of a two-agency network and their plaintext passwords."""

    accounts: tuple[BrokerAccount, ...]
    passwords: Mapping[str, str]

    def account(self, username: str) -> BrokerAccount:
        return next(a for a in self.accounts if a.username == username)


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where a test's broker listens, and which engine it is."""

    engine: str
    host: str
    port: int


def connect(
    endpoint: Endpoint,
    network: Network | None,
    username: str | None,
    *,
    password: str | None = None,
    identifier: str | None = None,
    clean_session: bool | None = None,
    timeout: float = ARRIVAL_TIMEOUT,
    tls_context: ssl.SSLContext | None = None,
) -> aiomqtt.Client:
    """An aiomqtt client for ``username`` (its network password unless ``password`` is
    given); the client id defaults to the username, as the embedded broker requires.
    ``timeout`` bounds the login and each acknowledged operation."""
    if password is None and username is not None and network is not None:
        password = network.passwords[username]
    return aiomqtt.Client(
        endpoint.host,
        endpoint.port,
        username=username,
        password=password,
        identifier=identifier if identifier is not None else username,
        clean_session=clean_session,
        timeout=timeout,
        tls_context=tls_context,
    )


async def next_message(client: aiomqtt.Client, timeout: float = ARRIVAL_TIMEOUT) -> aiomqtt.Message:
    """The next message for ``client``; fails the test if none comes within ``timeout``."""
    try:
        async with asyncio.timeout(timeout):
            return await anext(aiter(client.messages))
    except TimeoutError:
        pytest.fail(f"no message arrived within {timeout} s")


async def messages_within(
    client: aiomqtt.Client, seconds: float = QUIET_WINDOW
) -> list[aiomqtt.Message]:
    """Every message that arrives for ``client`` during the next ``seconds``."""
    received: list[aiomqtt.Message] = []
    try:
        async with asyncio.timeout(seconds):
            async for message in client.messages:
                received.append(message)
    except TimeoutError:
        pass
    return received


def _nats_server_binary() -> str | None:
    return shutil.which("nats-server") or (
        "/usr/sbin/nats-server" if Path("/usr/sbin/nats-server").exists() else None
    )


NATS_SERVER = _nats_server_binary()
requires_nats = pytest.mark.skipif(
    NATS_SERVER is None,
    reason="nats-server is not installed (Debian: apt-get install nats-server)",
)
