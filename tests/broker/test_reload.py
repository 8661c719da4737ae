"""A running broker takes new accounts without a restart: a removed (revoked) account is
disconnected at once and its next login refused; the others keep their connections.

Every engine through the ``Broker`` protocol's ``apply_accounts``. Embedded:
``EmbeddedBroker.reload`` in process, ``EmbeddedBrokerProcess.reload`` through SIGHUP; Mosquitto: files rewritten and SIGHUP (it checks every connected client again);
NATS: config rewritten and SIGHUP (nats-server closes the connections of users that are gone).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiomqtt import MqttError

from i24net.broker import (
    ROUTER_USERNAME,
    MosquittoBroker,
    NatsCluster,
    NatsLimits,
    start_broker,
)

from .support import (
    DE,
    FR,
    PREFIX,
    Endpoint,
    Network,
    connect,
    next_message,
    requires_mosquitto,
    requires_nats,
)

pytestmark = [pytest.mark.broker, pytest.mark.timeout(120)]

INBOX_DE = f"{PREFIX}/inbox/{DE}"
SUBMIT_FR = f"{PREFIX}/submit/{FR}"
WITHIN_S = 5.0


async def _revoke_and_check(endpoint: Endpoint, network: Network,
                            reload: Callable[[list[Any]], Awaitable[object]]) -> float:
    """DE and FR connected; ``reload`` without DE: DE's link is closed and its login refused
    within WITHIN_S, FR's link carries on. Returns the seconds it took."""
    remaining = [a for a in network.accounts if a.username != DE]
    async with (
        connect(endpoint, network, FR, clean_session=False) as fr,
        connect(endpoint, network, ROUTER_USERNAME, clean_session=True) as router,
    ):
        await router.subscribe(SUBMIT_FR, qos=1)
        de = connect(endpoint, network, DE, clean_session=False)
        await de.__aenter__()
        try:
            await de.subscribe(INBOX_DE, qos=1)
            started = time.monotonic()
            await reload(remaining)
            with pytest.raises(MqttError):  # the connection goes: a publish cannot complete
                async with asyncio.timeout(WITHIN_S):
                    while True:
                        await de.publish(f"{PREFIX}/submit/{DE}", b"still here?", qos=1,
                                         timeout=1)
                        await asyncio.sleep(0.05)
            dropped = time.monotonic() - started
        finally:
            try:
                await de.__aexit__(None, None, None)
            except MqttError:
                pass
        with pytest.raises(MqttError, match=r"(?i)not authori[sz]ed|bad user ?name or password"):
            async with connect(endpoint, network, DE):
                pytest.fail("a removed account could still log in")
        await fr.publish(SUBMIT_FR, b"FR still connected", qos=1, timeout=5)
        assert (await next_message(router)).payload == b"FR still connected"
    assert dropped < WITHIN_S
    return dropped


async def test_the_embedded_broker_reloads_in_process(network: Network, tmp_path: Path) -> None:
    async with start_broker("embedded", tmp_path / "e", network.accounts) as broker:
        await _revoke_and_check(Endpoint("embedded", broker.host, broker.port), network,
                                broker.apply_accounts)
        assert {a.username for a in broker.accounts} == {FR, ROUTER_USERNAME}


async def test_the_embedded_broker_process_reloads_on_sighup(network: Network,
                                                            tmp_path: Path) -> None:
    async with start_broker("embedded-process", tmp_path / "e", network.accounts) as broker:
        await _revoke_and_check(Endpoint("embedded", broker.host, broker.port), network,
                                broker.apply_accounts)


@requires_mosquitto
async def test_mosquitto_reload_disconnects_a_removed_account(network: Network,
                                                             tmp_path: Path) -> None:
    async with MosquittoBroker(tmp_path / "m", network.accounts) as broker:
        await _revoke_and_check(Endpoint("mosquitto", broker.host, broker.port), network,
                                broker.apply_accounts)


@requires_nats
async def test_nats_reload_disconnects_a_removed_account(network: Network,
                                                        tmp_path: Path) -> None:
    cluster = NatsCluster(tmp_path / "n", network.accounts, members=1, limits=NatsLimits())
    async with cluster:
        await _revoke_and_check(Endpoint("nats", cluster.host, cluster.port), network,
                                cluster.apply_accounts)
