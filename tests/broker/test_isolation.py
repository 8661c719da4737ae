"""Broker isolation (docs/protocol.md 6.2, docs/security.md 4.6) on both engines, through a real
MQTT client (aiomqtt).

Negative checks carry a positive control sent right after the forbidden one on the same
path: the test waits for the control message, so "nothing arrived" means the broker refused
the forbidden message, not that it was slow.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import pytest
from aiomqtt import MqttError

from i24net.broker import ROUTER_USERNAME

from .support import (
    DE,
    FR,
    PREFIX,
    QUIET_WINDOW,
    Endpoint,
    Network,
    connect,
    messages_within,
    next_message,
)

pytestmark = [pytest.mark.broker, pytest.mark.timeout(30)]

INBOX_FR = f"{PREFIX}/inbox/{FR}"
INBOX_DE = f"{PREFIX}/inbox/{DE}"
SUBMIT_FR = f"{PREFIX}/submit/{FR}"
SUBMIT_DE = f"{PREFIX}/submit/{DE}"
DIRECTORY = f"{PREFIX}/directory"
SUBACK_FAILURE = 0x80


async def test_router_delivers_to_an_agency_inbox(broker: Endpoint, network: Network) -> None:
    async with (
        connect(broker, network, FR) as fr,
        connect(broker, network, ROUTER_USERNAME) as router,
    ):
        await fr.subscribe(INBOX_FR, qos=1)
        await router.publish(INBOX_FR, b"diffusion-1", qos=1)
        message = await next_message(fr)
    assert (str(message.topic), message.payload, message.qos) == (INBOX_FR, b"diffusion-1", 1)


async def test_agency_submits_and_router_receives(broker: Endpoint, network: Network) -> None:
    async with (
        connect(broker, network, ROUTER_USERNAME) as router,
        connect(broker, network, DE) as de,
    ):
        await router.subscribe(f"{PREFIX}/submit/+", qos=1)
        await de.publish(SUBMIT_DE, b"request", qos=1)
        message = await next_message(router)
    assert (str(message.topic), message.payload) == (SUBMIT_DE, b"request")


async def test_agency_cannot_read_another_agencys_inbox(broker: Endpoint, network: Network) -> None:
    async with (
        connect(broker, network, DE) as de,
        connect(broker, network, ROUTER_USERNAME) as router,
    ):
        granted = await de.subscribe(INBOX_FR, qos=1)
        if broker.engine == "embedded":
            # amqtt refuses the subscription itself; Mosquitto grants it and checks the read
            # ACL on every delivery instead, so only the outcome below is common to both.
            assert [code if isinstance(code, int) else code.value for code in granted] == [
                SUBACK_FAILURE
            ]
        await de.subscribe(INBOX_DE, qos=1)
        await router.publish(INBOX_FR, b"for FR only", qos=1)
        await router.publish(INBOX_DE, b"control", qos=1)
        first = await next_message(de)
        later = await messages_within(de)
    assert [first.payload, *(m.payload for m in later)] == [b"control"]


@pytest.mark.parametrize("wildcard", [f"{PREFIX}/inbox/+", f"{PREFIX}/#", "#"])
async def test_agency_wildcards_reach_no_foreign_topic(
    broker: Endpoint, network: Network, wildcard: str
) -> None:
    async with (
        connect(broker, network, DE) as de,
        connect(broker, network, ROUTER_USERNAME) as router,
    ):
        await de.subscribe(wildcard, qos=1)
        await de.subscribe(INBOX_DE, qos=1)
        await router.publish(INBOX_FR, b"for FR only", qos=1)
        await router.publish(INBOX_DE, b"control", qos=1)
        first = await next_message(de)
        later = await messages_within(de)
    # A granted wildcard may deliver the control twice (once per matching subscription),
    # but never FR's message.
    assert {first.payload, *(m.payload for m in later)} == {b"control"}


async def test_agency_cannot_publish_into_another_agencys_submit_topic(
    broker: Endpoint, network: Network
) -> None:
    async with (
        connect(broker, network, ROUTER_USERNAME) as router,
        connect(broker, network, DE) as de,
    ):
        await router.subscribe(f"{PREFIX}/submit/+", qos=1)
        await de.publish(SUBMIT_FR, b"forged as FR", qos=1)
        await de.publish(SUBMIT_DE, b"control", qos=1)
        first = await next_message(router)
        later = await messages_within(router)
    assert [(str(m.topic), m.payload) for m in [first, *later]] == [(SUBMIT_DE, b"control")]


async def test_agency_cannot_write_an_inbox_or_the_directory(
    broker: Endpoint, network: Network
) -> None:
    async with connect(broker, network, FR) as fr, connect(broker, network, DE) as de:
        await fr.subscribe(INBOX_FR, qos=1)
        await fr.subscribe(DIRECTORY, qos=1)
        await fr.subscribe(f"{PREFIX}/presence/+", qos=1)
        await de.publish(INBOX_FR, b"impersonating the router", qos=1)
        await de.publish(DIRECTORY, b"forged directory", qos=1)
        await de.publish(f"{PREFIX}/presence/{FR}", b"FR is offline (a lie)", qos=1)
        await de.publish(f"{PREFIX}/presence/{DE}", b"online", qos=1)
        first = await next_message(fr)
        later = await messages_within(fr)
    assert [(str(m.topic), m.payload) for m in [first, *later]] == [
        (f"{PREFIX}/presence/{DE}", b"online")
    ]


async def test_every_agency_reads_the_retained_directory(
    broker: Endpoint, network: Network
) -> None:
    async with connect(broker, network, ROUTER_USERNAME) as router:
        await router.publish(DIRECTORY, b"directory v7", qos=1, retain=True)
    async with connect(broker, network, DE) as de:
        await de.subscribe(DIRECTORY, qos=1)
        message = await next_message(de)
    assert (message.payload, message.retain) == (b"directory v7", True)


async def test_retained_messages_reach_only_accounts_allowed_to_read_them(
    broker: Endpoint, network: Network
) -> None:
    # amqtt 0.12 sends a connecting client every retained message that matches anyone's
    # subscription; the embedded broker must not let FR's retained inbox message reach DE.
    async with (
        connect(broker, network, FR, clean_session=False) as fr,
        connect(broker, network, ROUTER_USERNAME) as router,
    ):
        await fr.subscribe(INBOX_FR, qos=1)
        await router.publish(INBOX_FR, b"retained for FR", qos=1, retain=True)
        assert (await next_message(fr)).payload == b"retained for FR"
        async with connect(broker, network, DE) as de:
            await de.subscribe(INBOX_DE, qos=1)
            await router.publish(INBOX_DE, b"control", qos=1)
            first = await next_message(de)
            later = await messages_within(de)
    assert [first.payload, *(m.payload for m in later)] == [b"control"]


@pytest.mark.parametrize(
    "credentials",
    [
        pytest.param({"username": FR, "password": "wrong-password"}, id="wrong-password"),
        pytest.param({"username": None, "password": None}, id="anonymous"),
        pytest.param({"username": "NCB-XX", "password": "whatever-123"}, id="unknown-user"),
        pytest.param({"username": FR, "password": ""}, id="empty-password"),
    ],
)
async def test_bad_credentials_are_refused(
    broker: Endpoint, network: Network, credentials: dict[str, str | None]
) -> None:
    client = connect(
        broker,
        None,
        credentials["username"],
        password=credentials["password"],
        identifier=credentials["username"] or "anonymous-client",
    )
    with pytest.raises(MqttError, match=r"(?i)not authori[sz]ed|bad user ?name or password"):
        async with client:
            pytest.fail("the broker accepted the connection")


async def test_unauthenticated_client_cannot_disturb_a_persistent_session(
    broker: Endpoint, network: Network
) -> None:
    """amqtt 0.12 resolves (and for a clean session deletes) the session of a CONNECT's
    client id before checking the password; the embedded broker authenticates first."""
    async with connect(broker, network, FR, clean_session=False) as fr:
        await fr.subscribe(INBOX_FR, qos=1)
    async with connect(broker, network, ROUTER_USERNAME) as router:
        await router.publish(INBOX_FR, b"queued before", qos=1)
        for clean_session in (False, True):
            intruder = connect(broker, None, None, identifier=FR, clean_session=clean_session)
            with pytest.raises(MqttError):
                async with intruder:
                    pytest.fail("an anonymous client was accepted")
        await router.publish(INBOX_FR, b"queued after", qos=1)
    async with connect(broker, network, FR, clean_session=False) as fr:
        first = await next_message(fr)
        later = await messages_within(fr)
    assert [first.payload, *(m.payload for m in later)] == [b"queued before", b"queued after"]


async def test_another_account_cannot_take_over_a_session_by_client_id(
    broker: Endpoint, network: Network
) -> None:
    """DE presenting FR's client id is refused on both engines (the embedded broker's
    ClientIdBindingPlugin, Mosquitto's i24net guard plugin): FR's queued inbox stays FR's."""
    async with connect(broker, network, FR, clean_session=False) as fr:
        await fr.subscribe(INBOX_FR, qos=1)
    async with connect(broker, network, ROUTER_USERNAME) as router:
        await router.publish(INBOX_FR, b"queued for FR", qos=1)
    for clean_session in (False, True):
        impostor = connect(broker, network, DE, identifier=FR, clean_session=clean_session)
        with pytest.raises(MqttError, match=r"(?i)not authori[sz]ed"):
            async with impostor:
                pytest.fail("DE was accepted with FR's client id")
    async with connect(broker, network, FR, clean_session=False) as fr:
        assert (await next_message(fr)).payload == b"queued for FR"


@pytest.mark.parametrize("stolen", [ROUTER_USERNAME, f"{ROUTER_USERNAME}:shard-1of2"])
async def test_an_agency_cannot_knock_the_router_off_with_its_client_id(
    broker: Endpoint, network: Network, stolen: str
) -> None:
    """Without a binding, a broker closes the connection that holds a client id when another
    login presents it: an agency could keep the router off the broker. Both engines refuse
    the agency's login, and the router's connection carries on."""
    async with connect(broker, network, ROUTER_USERNAME, identifier=stolen,
                       clean_session=False) as router:
        await router.subscribe(SUBMIT_FR, qos=1)
        for clean_session in (False, True):
            with pytest.raises(MqttError, match=r"(?i)not authori[sz]ed"):
                async with connect(broker, network, DE, identifier=stolen,
                                   clean_session=clean_session):
                    pytest.fail("an agency was accepted with the router's client id")
        async with connect(broker, network, FR) as fr:
            await fr.publish(SUBMIT_FR, b"after the attempt", qos=1)
        assert (await next_message(router)).payload == b"after the attempt"
        await router.publish(INBOX_FR, b"router still connected", qos=1, timeout=5)


async def test_a_session_taken_over_by_its_own_account_keeps_receiving(
    broker: Endpoint, network: Network
) -> None:
    """A second connection with the same account and client id takes the session over (a
    restarted node whose old link the broker has not noticed yet): it must receive what
    arrives next. amqtt 0.12 ended the old connection as a normal disconnect, marking the
    session, the new connection's, disconnected: it received nothing."""
    async with connect(broker, network, FR, identifier=f"{FR}:node", clean_session=False) as old:
        await old.subscribe(INBOX_FR, qos=1)
        new = connect(broker, network, FR, identifier=f"{FR}:node", clean_session=False)
        async with new, connect(broker, network, ROUTER_USERNAME) as router:
            await asyncio.sleep(QUIET_WINDOW)  # the broker closes the old link meanwhile
            await router.publish(INBOX_FR, b"after the takeover", qos=1)
            assert (await next_message(new)).payload == b"after the takeover"
            assert await messages_within(new) == []
            with pytest.raises(MqttError):  # the old link is gone
                await old.publish(f"{PREFIX}/submit/{FR}", b"x", qos=1, timeout=2)


async def test_bound_client_ids_allow_a_suffix(broker: Endpoint, network: Network) -> None:
    async with (
        connect(broker, network, FR, identifier=f"{FR}:node-1") as fr,
        connect(
            broker, network, ROUTER_USERNAME, identifier=f"{ROUTER_USERNAME}:shard-0"
        ) as router,
    ):
        await fr.subscribe(INBOX_FR, qos=1)
        await router.publish(INBOX_FR, b"hello", qos=1)
        assert (await next_message(fr)).payload == b"hello"


async def test_logins_are_fast(broker: Endpoint, network: Network) -> None:
    """amqtt checks passwords synchronously on its event loop; with argon2's default cost
    (~0.2 s each) ten logins would take seconds and stall every connected client."""
    started = time.perf_counter()
    async with contextlib.AsyncExitStack() as stack:
        for i in range(10):
            await stack.enter_async_context(connect(broker, network, FR, identifier=f"{FR}:{i}"))
        elapsed = time.perf_counter() - started
    assert elapsed < 2.0
