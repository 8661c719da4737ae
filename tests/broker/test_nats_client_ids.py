"""NATS does not bind client ids to accounts, so i24net's clients there use ids nobody else
can compute.

nats-server 2.9.10 keys MQTT sessions by client id within the NATS account, and every broker
account is a user of the same account: any login presenting a connected client id takes that
session over and closes its holder ("Replacing old client ... since both have the same client
ID"). It checks the new login's permissions again, so the intruder reads nothing, but it can
keep the router off the broker. ``runtime.make_transport`` therefore tags every client id on
the nats engine with a digest of the account's password (``unguessable_client_id``): an
agency presenting the router's documented id (``i24-router``, ``i24-router:shard-1of2``)
reaches a session nobody uses, and the router's link stays up.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from i24net.broker import (
    ROUTER_USERNAME,
    NatsCluster,
    client_id_allowed,
    unguessable_client_id,
)
from i24net.config.home import Home
from i24net.config.presets import preset_toml
from i24net.shell.runtime import make_transport
from i24net.transport.mqtt import MqttTransport

from .support import FR, PREFIX, Endpoint, Network, connect, next_message, requires_nats

# each test runs a NATS cluster; one worker runs them in turn (make test: --dist loadgroup)
pytestmark = pytest.mark.xdist_group("nats")

INBOX_FR = f"{PREFIX}/inbox/{FR}"


def test_the_tag_belongs_to_the_account_and_needs_its_password() -> None:
    tagged = unguessable_client_id(f"{ROUTER_USERNAME}:shard-1of2", "password-one")
    assert client_id_allowed(ROUTER_USERNAME, tagged)
    assert tagged.startswith(f"{ROUTER_USERNAME}:shard-1of2:") and len(tagged.rsplit(":")[-1]) == 16
    assert tagged == unguessable_client_id(f"{ROUTER_USERNAME}:shard-1of2", "password-one")
    assert tagged != unguessable_client_id(f"{ROUTER_USERNAME}:shard-1of2", "password-two")


@pytest.mark.parametrize("engine", ["embedded", "mosquitto", "nats"])
def test_make_transport_tags_client_ids_on_nats_only(tmp_path: Path, engine: str) -> None:
    home = Home(tmp_path / "home")
    home.init(preset_toml("demo"))
    (home.broker_dir / "endpoint.json").write_text(json.dumps(
        {"engine": engine, "host": "127.0.0.1", "port": 1883, "tls_ca": None}))
    transport = make_transport(home, ROUTER_USERNAME, client_suffix="shard-1of2")
    expected = f"{ROUTER_USERNAME}:shard-1of2"
    if engine == "nats":
        expected = unguessable_client_id(expected, home.broker_passwords()[ROUTER_USERNAME])
    assert transport.client_id == expected


@pytest.mark.broker
@requires_nats
@pytest.mark.timeout(120)
async def test_an_agency_cannot_knock_the_tagged_router_off(network: Network,
                                                           tmp_path: Path) -> None:
    async with NatsCluster(tmp_path / "n", network.accounts, members=1) as cluster:
        where = Endpoint("nats", cluster.host, cluster.port)
        router_id = unguessable_client_id(ROUTER_USERNAME, network.passwords[ROUTER_USERNAME])
        router = MqttTransport(cluster.host, cluster.port, client_id=router_id,
                               username=ROUTER_USERNAME,
                               password=network.passwords[ROUTER_USERNAME])
        async with router:
            await router.subscribe(f"{PREFIX}/submit/+")
            for stolen in (ROUTER_USERNAME, f"{ROUTER_USERNAME}:shard-1of2"):
                async with connect(where, network, FR, identifier=stolen, clean_session=False):
                    await asyncio.sleep(0.5)
            async with connect(where, network, FR, clean_session=True) as fr:
                await fr.subscribe(INBOX_FR, qos=1)
                await fr.publish(f"{PREFIX}/submit/{FR}", b"to the router", qos=1)
                delivery = await anext(aiter(router.deliveries()))
                assert delivery.payload == b"to the router"
                await router.publish(INBOX_FR, b"router still connected")
                assert (await next_message(fr)).payload == b"router still connected"
            assert router.link_losses == 0 and router.is_connected
