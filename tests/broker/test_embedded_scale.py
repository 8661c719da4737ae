"""The embedded broker at network scale: 1,000 agencies log in, subscribe and receive at once.

Logins cost one fast digest each (not argon2 on amqtt's event loop), and neither a message nor
a CONNECT walks every account's subscription, so this runs in seconds; the bound below only
keeps a regression from hanging the suite.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
from collections.abc import Iterator
from pathlib import Path

import aiomqtt
import pytest
from aiomqtt import MqttError

from i24net.broker import ROUTER_USERNAME, EmbeddedBroker, accounts_for, generate_password

from .support import HOST, PREFIX

pytestmark = [pytest.mark.broker, pytest.mark.slow, pytest.mark.timeout(180)]

AGENCY_COUNT = 1000
AGENCIES = tuple(f"A{n:04d}" for n in range(1, AGENCY_COUNT + 1))
# Per-operation timeout of each client: generous, as 1,000 CONNECTs queue at one broker.
CLIENT_TIMEOUT = 60.0
SCENARIO_TIMEOUT = 120.0


@contextlib.contextmanager
def open_files_for(sockets: int) -> Iterator[None]:
    """Room for ``sockets`` descriptors (both ends of every connection live in this process)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = sockets + 256
    if soft != resource.RLIM_INFINITY and soft < needed:
        if hard != resource.RLIM_INFINITY and hard < needed:
            pytest.skip(f"needs {needed} open files; the hard limit is {hard} (ulimit -Hn)")
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def client(port: int, username: str, password: str, identifier: str) -> aiomqtt.Client:
    return aiomqtt.Client(
        HOST,
        port,
        username=username,
        password=password,
        identifier=identifier,
        timeout=CLIENT_TIMEOUT,
    )


async def first_message(agency: aiomqtt.Client) -> aiomqtt.Message:
    async for message in agency.messages:
        return message
    raise AssertionError("the message stream ended before any message")


async def test_a_thousand_agencies_log_in_subscribe_and_receive(tmp_path: Path) -> None:
    passwords = {name: generate_password(os.urandom) for name in (*AGENCIES, ROUTER_USERNAME)}
    accounts = accounts_for(AGENCIES, passwords, PREFIX)
    with open_files_for(2 * (AGENCY_COUNT + 2)):
        async with (
            asyncio.timeout(SCENARIO_TIMEOUT),
            EmbeddedBroker(accounts, tmp_path / "broker") as broker,
            contextlib.AsyncExitStack() as stack,
        ):
            clients: dict[str, aiomqtt.Client] = {}

            async def join(agency: str) -> None:
                connection = client(broker.port, agency, passwords[agency], agency)
                await connection.__aenter__()
                stack.push_async_exit(connection)
                clients[agency] = connection
                await connection.subscribe(f"{PREFIX}/inbox/{agency}", qos=1)

            # All at once, as a network's nodes do when it starts.
            await asyncio.gather(*(join(agency) for agency in AGENCIES))
            assert len(clients) == AGENCY_COUNT

            # A wrong password is refused, even with a connected agency's own client id, and
            # the refusal leaves that agency's session alone (its message still arrives).
            with pytest.raises(MqttError):
                async with client(broker.port, AGENCIES[0], "wrong-password", AGENCIES[0]):
                    pytest.fail("a wrong password was accepted")

            router = await stack.enter_async_context(
                client(broker.port, ROUTER_USERNAME, passwords[ROUTER_USERNAME], ROUTER_USERNAME)
            )
            receivers = {
                agency: asyncio.create_task(first_message(connection))
                for agency, connection in clients.items()
            }
            for agency in AGENCIES:
                await router.publish(f"{PREFIX}/inbox/{agency}", agency.encode(), qos=1)
            received = dict(zip(receivers, await asyncio.gather(*receivers.values()), strict=True))

    assert {
        agency: (str(message.topic), message.payload) for agency, message in received.items()
    } == {agency: (f"{PREFIX}/inbox/{agency}", agency.encode()) for agency in AGENCIES}
