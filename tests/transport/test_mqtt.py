"""MqttTransport: unit checks without a broker, then behaviour against a real Mosquitto."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiomqtt
import paho.mqtt.client as paho
import pytest
from aiomqtt.message import Message

from i24net.core.errors import ConfigError, TransportError
from i24net.transport import Delivery, MqttTransport, Transport, backoff_delay
from i24net.transport.mqtt import MemberRotation

from .mosquitto_harness import MosquittoProcess, free_port

# -- without a broker ------------------------------------------------------------------------


def test_backoff_grows_to_the_cap_with_jitter_in_the_upper_half() -> None:
    rng = random.Random(7)
    ceilings = [min(5.0, 0.2 * 2**n) for n in range(10)]
    delays = [backoff_delay(n, minimum=0.2, maximum=5.0, rng=rng) for n in range(10)]
    for delay, ceiling in zip(delays, ceilings, strict=True):
        assert ceiling / 2 <= delay <= ceiling
    assert backoff_delay(10_000, minimum=0.2, maximum=5.0, rng=rng) <= 5.0


def test_backoff_is_reproducible_with_a_seeded_rng() -> None:
    def run(seed: int) -> list[float]:
        rng = random.Random(seed)
        return [backoff_delay(n, minimum=0.1, maximum=2.0, rng=rng) for n in range(8)]

    assert run(1) == run(1)
    assert run(1) != run(2)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"client_id": ""},
        {"client_id": "a", "max_inflight": 0},
        {"client_id": "a", "reconnect_min": 0},
        {"client_id": "a", "reconnect_min": 2.0, "reconnect_max": 1.0},
        {"client_id": "a", "keepalive": 0},
    ],
)
def test_bad_configuration_is_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        MqttTransport("127.0.0.1", 1883, **kwargs)  # type: ignore[arg-type]


def test_will_topic_is_validated_and_tuple_accepted() -> None:
    MqttTransport("127.0.0.1", 1883, client_id="a", will=("presence/a", b"offline", True))
    with pytest.raises(TransportError):
        MqttTransport("127.0.0.1", 1883, client_id="a", will=("presence/+", b"x", False))


def test_mqtt_transport_satisfies_the_protocol() -> None:
    assert isinstance(MqttTransport("127.0.0.1", 1883, client_id="a"), Transport)


async def test_publish_before_entering_is_an_error() -> None:
    transport = MqttTransport("127.0.0.1", 1883, client_id="a")
    with pytest.raises(TransportError) as info:
        await transport.publish("t", b"x")
    assert info.value.reason == "transport.closed"


async def test_nothing_listening_fails_with_connect_reason() -> None:
    transport = MqttTransport(
        "127.0.0.1", free_port(), client_id="a", connect_timeout=0.5, reconnect_max=0.2
    )
    with pytest.raises(TransportError) as info:
        async with transport:
            pass
    assert info.value.reason == "transport.connect"
    assert "Connection refused" in str(info.value)
    assert transport.last_error is not None
    assert not transport.is_connected


async def test_aiomqtt_iterator_yields_queued_messages_after_disconnect() -> None:
    """Pins the aiomqtt 2.5 behaviour that _drain relies on: messages paho already acked
    and left in the queue when the link died are still returned, not lost."""
    client = aiomqtt.Client("127.0.0.1", 1, identifier="drain")
    for index in range(3):
        client._queue.put_nowait(Message("t", b"%d" % index, 1, False, index + 1, None))
    client._disconnected.set_exception(aiomqtt.MqttCodeError(7, "Unexpected disconnection"))
    transport = MqttTransport("127.0.0.1", 1, client_id="drain")
    await transport._drain(client)
    assert [d.payload async for d in _until_empty(transport)] == [b"0", b"1", b"2"]
    with pytest.raises(aiomqtt.MqttError):  # and an empty queue reports the disconnect
        await anext(client.messages)


async def _until_empty(transport: MqttTransport) -> AsyncIterator[Delivery]:
    transport._incoming.close()
    async for delivery in transport.deliveries():
        yield delivery


# -- against Mosquitto -----------------------------------------------------------------------


def transport_for(broker: MosquittoProcess, client_id: str, **kwargs: object) -> MqttTransport:
    """A transport with quick reconnects, so restart tests stay short."""
    options: dict[str, object] = {
        "reconnect_min": 0.05,
        "reconnect_max": 0.5,
        "rng": random.Random(client_id),
        "keepalive": 5,
    }
    options.update(kwargs)
    return MqttTransport(broker.host, broker.port, client_id=client_id, **options)  # type: ignore[arg-type]


async def take(
    stream: AsyncIterator[Delivery], count: int, timeout: float = 10.0
) -> list[Delivery]:
    async with asyncio.timeout(timeout):
        return [await anext(stream) for _ in range(count)]


async def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


@pytest.mark.broker
@pytest.mark.timeout(60)
async def test_round_trip_and_retained(mosquitto: MosquittoProcess, prefix: str) -> None:
    async with (
        transport_for(mosquitto, f"{prefix}-sub") as sub,
        transport_for(mosquitto, f"{prefix}-pub") as pub,
    ):
        assert sub.is_connected and pub.is_connected
        await pub.publish(f"{prefix}/directory", b"dir-v1", retain=True)
        await sub.subscribe(f"{prefix}/inbox/+", f"{prefix}/directory")
        await pub.publish(f"{prefix}/inbox/FR", b"\x00\xffbinary")
        got = await take(sub.deliveries(), 2)
        assert got == [
            Delivery(f"{prefix}/directory", b"dir-v1"),
            Delivery(f"{prefix}/inbox/FR", b"\x00\xffbinary"),
        ]
        assert (pub.published, sub.received, sub.reconnects) == (2, 2, 0)
        assert sub.session_present is False


@pytest.mark.broker
@pytest.mark.timeout(60)
async def test_thousands_of_concurrent_publishes_complete(
    mosquitto: MosquittoProcess, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    """2,000 QoS 1 publishes of 1 KB gathered at once: without the in-flight bound aiomqtt
    warns per pending call and paho queues past its window until the acks time out."""
    caplog.set_level(logging.WARNING)
    count, max_inflight = 2000, 64
    async with (
        transport_for(mosquitto, f"{prefix}-sub") as sub,
        transport_for(mosquitto, f"{prefix}-pub", max_inflight=max_inflight) as pub,
    ):
        await sub.subscribe(f"{prefix}/bulk")
        payloads = [i.to_bytes(4, "big") + bytes(1020) for i in range(count)]
        async with asyncio.timeout(30):
            await asyncio.gather(*(pub.publish(f"{prefix}/bulk", p) for p in payloads))
        got = await take(sub.deliveries(), count, timeout=30)
        assert [int.from_bytes(d.payload[:4], "big") for d in got] == list(range(count))
        assert pub.published == count
        assert pub.peak_inflight == max_inflight
        assert pub.inflight == 0
    assert not [r for r in caplog.records if "pending" in r.getMessage()]


@pytest.mark.broker
@pytest.mark.timeout(60)
async def test_max_inflight_is_honoured(mosquitto: MosquittoProcess, prefix: str) -> None:
    async with transport_for(mosquitto, f"{prefix}-pub", max_inflight=4) as pub:
        seen: list[int] = []

        async def one(index: int) -> None:
            await pub.publish(f"{prefix}/w", b"%d" % index)
            seen.append(pub.inflight)

        await asyncio.gather(*(one(i) for i in range(200)))
        assert pub.peak_inflight == 4
        assert max(seen) <= 4


@pytest.mark.broker
@pytest.mark.timeout(60)
async def test_persistent_session_gets_queued_messages_on_reconnect(
    mosquitto: MosquittoProcess, prefix: str
) -> None:
    node_id = f"{prefix}-node"
    async with transport_for(mosquitto, node_id) as node:
        await node.subscribe(f"{prefix}/inbox/FR")
    # The node is gone; its session (clean_session=False) is not.
    async with transport_for(mosquitto, f"{prefix}-router") as router:
        for index in range(50):
            await router.publish(f"{prefix}/inbox/FR", b"%d" % index)
    async with transport_for(mosquitto, node_id) as node:
        assert node.session_present is True
        got = await take(node.deliveries(), 50)  # no subscribe call: the session kept it
        assert [d.payload for d in got] == [b"%d" % i for i in range(50)]


@pytest.mark.broker
@pytest.mark.timeout(60)
async def test_clean_session_loses_what_was_sent_while_away(
    mosquitto: MosquittoProcess, prefix: str
) -> None:
    async with transport_for(mosquitto, f"{prefix}-n", clean_session=True) as node:
        await node.subscribe(f"{prefix}/t")
    async with transport_for(mosquitto, f"{prefix}-p") as pub:
        await pub.publish(f"{prefix}/t", b"lost")
    async with (
        transport_for(mosquitto, f"{prefix}-n", clean_session=True) as node,
        transport_for(mosquitto, f"{prefix}-p2") as pub,
    ):
        assert node.session_present is False
        await node.subscribe(f"{prefix}/t")
        await pub.publish(f"{prefix}/t", b"fresh")
        assert await take(node.deliveries(), 1) == [Delivery(f"{prefix}/t", b"fresh")]


@pytest.mark.broker
@pytest.mark.timeout(60)
async def test_survives_broker_crash_and_restores_subscriptions(
    mosquitto: MosquittoProcess, prefix: str
) -> None:
    """SIGKILL without persistence: the broker forgets every session, so the transport must
    reconnect by itself and subscribe again."""
    async with (
        transport_for(mosquitto, f"{prefix}-sub") as sub,
        transport_for(mosquitto, f"{prefix}-pub") as pub,
    ):
        await sub.subscribe(f"{prefix}/after")
        mosquitto.kill()
        await wait_until(lambda: not sub.is_connected and not pub.is_connected)
        await asyncio.sleep(0.3)  # a few failed reconnect attempts
        mosquitto.start()
        await wait_until(lambda: sub.is_connected and pub.is_connected)
        assert sub.session_present is False
        await pub.publish(f"{prefix}/after", b"still here")
        assert await take(sub.deliveries(), 1) == [Delivery(f"{prefix}/after", b"still here")]
        assert sub.reconnects == 1 and pub.reconnects == 1


@pytest.mark.broker
@pytest.mark.timeout(60)
async def test_publish_waits_through_broker_restart_with_persistence(
    make_mosquitto: Callable[..., MosquittoProcess], prefix: str
) -> None:
    """A publish issued while the broker is down waits, then goes through; a persistent
    broker (saved on SIGTERM) keeps the subscriber's session across the restart."""
    broker = make_mosquitto(persistence=True)
    async with (
        transport_for(broker, f"{prefix}-sub") as sub,
        transport_for(broker, f"{prefix}-pub") as pub,
    ):
        await sub.subscribe(f"{prefix}/t")
        broker.stop()
        await wait_until(lambda: not pub.is_connected)
        pending = asyncio.create_task(pub.publish(f"{prefix}/t", b"during outage"))
        await asyncio.sleep(0.3)
        assert not pending.done()
        broker.start()
        await asyncio.wait_for(pending, 15)
        assert await take(sub.deliveries(), 1) == [Delivery(f"{prefix}/t", b"during outage")]
        await wait_until(lambda: sub.is_connected)
        assert sub.session_present is True


@pytest.mark.broker
@pytest.mark.timeout(60)
async def test_publish_timeout_while_broker_is_down(
    mosquitto: MosquittoProcess, prefix: str
) -> None:
    async with transport_for(mosquitto, f"{prefix}-pub", publish_timeout=0.3) as pub:
        mosquitto.kill()
        with pytest.raises(TransportError) as info:
            await pub.publish(f"{prefix}/t", b"x")
        assert info.value.reason == "transport.timeout"


@pytest.mark.broker
@pytest.mark.timeout(60)
async def test_refused_credentials_fail_fast(
    make_mosquitto: Callable[..., MosquittoProcess], prefix: str
) -> None:
    broker = make_mosquitto(anonymous=False)
    transport = transport_for(broker, f"{prefix}-anon")
    async with asyncio.timeout(5):
        with pytest.raises(TransportError) as info:
            await transport.__aenter__()
    assert info.value.reason == "transport.refused"
    assert "not authori" in str(info.value).lower()


@pytest.mark.broker
@pytest.mark.timeout(60)
async def test_clean_exit_suppresses_the_will_and_ends_deliveries(
    mosquitto: MosquittoProcess, prefix: str
) -> None:
    async with transport_for(mosquitto, f"{prefix}-dash") as dash:
        await dash.subscribe(f"{prefix}/presence/+")
        node = transport_for(
            mosquitto, f"{prefix}-FR", will=(f"{prefix}/presence/FR", b"offline", False)
        )
        async with node:
            await node.publish(f"{prefix}/presence/FR", b"online")
        assert [d.payload async for d in node.deliveries()] == []
        assert await take(dash.deliveries(), 1) == [Delivery(f"{prefix}/presence/FR", b"online")]
        await asyncio.sleep(0.2)
        assert len(dash._incoming) == 0  # no will after a clean DISCONNECT


@pytest.mark.broker
@pytest.mark.timeout(60)
async def test_subscribe_while_disconnected_applies_after_reconnect(
    mosquitto: MosquittoProcess, prefix: str
) -> None:
    async with (
        transport_for(mosquitto, f"{prefix}-sub") as sub,
        transport_for(mosquitto, f"{prefix}-pub") as pub,
    ):
        mosquitto.kill()
        await wait_until(lambda: not sub.is_connected)
        pending = asyncio.create_task(sub.subscribe(f"{prefix}/late"))
        await asyncio.sleep(0.2)
        assert not pending.done()
        mosquitto.start()
        await asyncio.wait_for(pending, 15)
        await wait_until(lambda: pub.is_connected)
        await pub.publish(f"{prefix}/late", b"x")
        assert await take(sub.deliveries(), 1) == [Delivery(f"{prefix}/late", b"x")]


def test_paho_constants_used_for_link_down_exist() -> None:
    # The retry decision reads these paho codes; fail loudly if a paho upgrade renames them.
    assert {paho.MQTT_ERR_NO_CONN, paho.MQTT_ERR_CONN_LOST} == {4, 7}


@pytest.mark.broker
@pytest.mark.timeout(60)
async def test_publishes_cut_off_by_a_broker_crash_are_resent(
    mosquitto: MosquittoProcess, prefix: str
) -> None:
    """Crash the broker while publishes wait for their PUBACK: they go again on the next
    link instead of failing or stalling until a timeout."""
    count = 600
    async with transport_for(mosquitto, f"{prefix}-pub", max_inflight=32) as pub:
        sending = asyncio.gather(*(pub.publish(f"{prefix}/t", b"%d" % i) for i in range(count)))
        await wait_until(lambda: pub.published >= 100)
        # Freeze first, so the window fills with publishes the broker never acknowledges
        # (a plain kill can land when every PUBACK is already in our socket buffer).
        mosquitto.freeze()
        await asyncio.sleep(0.2)
        assert pub.inflight == 32
        mosquitto.kill()
        await wait_until(lambda: not pub.is_connected)
        mosquitto.start()
        await asyncio.wait_for(sending, 30)
        assert pub.published == count
        assert pub.retried > 0


@pytest.mark.broker
@pytest.mark.timeout(60)
async def test_every_publish_arrives_at_least_once_across_a_broker_restart(
    make_mosquitto: Callable[..., MosquittoProcess], prefix: str
) -> None:
    """Stop a persistent broker in the middle of a burst and start it again: every message
    reaches the persistent subscriber at least once (a publish whose PUBACK was lost with
    the link is sent again, so duplicates are allowed)."""
    broker = make_mosquitto(persistence=True)
    count = 600
    async with (
        transport_for(broker, f"{prefix}-sub") as sub,
        transport_for(broker, f"{prefix}-pub", max_inflight=32) as pub,
    ):
        await sub.subscribe(f"{prefix}/t")
        sending = asyncio.gather(*(pub.publish(f"{prefix}/t", b"%d" % i) for i in range(count)))
        await wait_until(lambda: pub.published >= 100)
        broker.stop()  # SIGTERM: Mosquitto saves sessions and their queues
        await wait_until(lambda: not pub.is_connected)
        broker.start()
        await asyncio.wait_for(sending, 30)
        assert pub.published == count
        seen: set[int] = set()
        stream = sub.deliveries()
        async with asyncio.timeout(15):
            while len(seen) < count:
                seen.add(int((await anext(stream)).payload))
        assert seen == set(range(count))


# -- broker members: failing over between the members of a clustered broker -----------------

A, B, C = ("10.0.0.1", 1883), ("10.0.0.2", 1883), ("10.0.0.3", 1884)


def test_rotation_starts_at_start_and_wraps_round_robin() -> None:
    assert MemberRotation((A, B, C)).current == A
    assert MemberRotation((A, B, C), start=1).current == B
    assert MemberRotation((A, B, C), start=5).current == C
    assert MemberRotation((A, B, C), start=-1).current == C
    rotation = MemberRotation((A, B, C), start=2)
    seen = [rotation.current]
    for _ in range(4):
        rotation.failed(was_up=False)
        seen.append(rotation.current)
    assert seen == [C, A, B, C, A]


def test_rotation_waits_briefly_within_a_round_and_backs_off_after_each_full_round() -> None:
    rotation = MemberRotation((A, B, C))
    # The lost link is the round's first failure, so B and C are tried after the shortest
    # delay and A again after step 0; every later full round adds a step.
    steps = [rotation.failed(was_up=True)]
    steps += [rotation.failed(was_up=False) for _ in range(8)]
    assert steps == [0, 0, 0, 0, 0, 1, 0, 0, 2]
    assert rotation.failed(was_up=True) == 0 and rotation.failures == 1


def test_rotation_with_one_member_keeps_the_single_broker_backoff() -> None:
    """The steps are the ones the transport used before it knew about members: a lost link
    then failures 0, 1, 2, ...; the initial connection likewise from 0."""
    rotation = MemberRotation((A,))
    assert [rotation.failed(was_up=False) for _ in range(4)] == [0, 1, 2, 3]
    assert rotation.failed(was_up=True) == 0
    assert [rotation.failed(was_up=False) for _ in range(3)] == [1, 2, 3]
    assert rotation.current == A


def test_rotation_needs_a_member() -> None:
    with pytest.raises(ConfigError):
        MemberRotation(())


def test_addresses_start_and_reported_member() -> None:
    transport = MqttTransport(addresses=[A, list(B), C], start=4, client_id="a")  # type: ignore[list-item]
    assert transport.addresses == (A, B, C)
    assert (transport.host, transport.port) == B  # the first to try, before any link
    assert transport.failovers == 0
    single = MqttTransport("127.0.0.1", 1883, client_id="a")
    assert single.addresses == (("127.0.0.1", 1883),)


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"host": "127.0.0.1"},
        {"host": "127.0.0.1", "port": 1883, "addresses": [A]},
        {"addresses": []},
        {"addresses": "127.0.0.1:1883"},
        {"addresses": [("127.0.0.1",)]},
        {"addresses": [("", 1883)]},
        {"addresses": [("127.0.0.1", 0)]},
        {"addresses": [("127.0.0.1", 70000)]},
        {"addresses": [("127.0.0.1", "1883")]},
        {"addresses": [A], "start": "1"},
    ],
)
def test_bad_broker_addresses_are_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        MqttTransport(client_id="a", **kwargs)  # type: ignore[arg-type]


async def test_no_member_listening_names_them_all_and_rotates(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="i24net.transport.mqtt")
    members = [("127.0.0.1", free_port()), ("127.0.0.1", free_port())]
    transport = MqttTransport(
        addresses=members,
        client_id="a",
        connect_timeout=1.0,
        reconnect_min=0.05,
        reconnect_max=0.1,
        rng=random.Random(3),
    )
    with pytest.raises(TransportError) as info:
        async with transport:
            pass
    assert info.value.reason == "transport.connect"
    message = str(info.value)
    assert all(f"127.0.0.1:{port}" in message for _, port in members)
    assert "Connection refused" in message
    assert transport.failovers >= 4  # tried both, more than once, within the second
    attempted = [r.getMessage() for r in caplog.records if "failing over" in r.getMessage()]
    first, second = (f"127.0.0.1:{port}" for _, port in members)
    assert attempted[0].endswith(f"broker member {first} unreachable, failing over to {second}")
    assert attempted[1].endswith(f"broker member {second} unreachable, failing over to {first}")
    assert [r.levelno for r in caplog.records if "failing over" in r.getMessage()][:2] == [
        logging.INFO,
        logging.INFO,
    ]


def members_transport(
    brokers: list[MosquittoProcess] | list[tuple[str, int]], client_id: str, **kwargs: object
) -> MqttTransport:
    """A transport over several broker members, with the quick reconnects of transport_for."""
    options: dict[str, object] = {
        "reconnect_min": 0.05,
        "reconnect_max": 0.5,
        "rng": random.Random(client_id),
        "keepalive": 5,
    }
    options.update(kwargs)
    addresses = [b if isinstance(b, tuple) else (b.host, b.port) for b in brokers]
    return MqttTransport(addresses=addresses, client_id=client_id, **options)  # type: ignore[arg-type]


@pytest.mark.broker
@pytest.mark.timeout(60)
async def test_a_dead_member_is_skipped_for_a_live_one(
    mosquitto: MosquittoProcess, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="i24net.transport.mqtt")
    dead = ("127.0.0.1", free_port())
    async with (
        members_transport([dead, (mosquitto.host, mosquitto.port)], f"{prefix}-n") as node,
        transport_for(mosquitto, f"{prefix}-p") as peer,
    ):
        assert (node.host, node.port) == (mosquitto.host, mosquitto.port)
        assert (node.failovers, node.reconnects) == (1, 0)
        await node.subscribe(f"{prefix}/t")
        await peer.publish(f"{prefix}/t", b"via the live member")
        assert await take(node.deliveries(), 1) == [Delivery(f"{prefix}/t", b"via the live member")]
    assert any(
        r.levelno == logging.INFO
        and r.getMessage().endswith(
            f"broker member 127.0.0.1:{dead[1]} unreachable, "
            f"failing over to {mosquitto.host}:{mosquitto.port}"
        )
        for r in caplog.records
    )


@pytest.mark.broker
@pytest.mark.timeout(60)
async def test_fails_over_when_its_member_is_killed(
    make_mosquitto: Callable[..., MosquittoProcess], prefix: str
) -> None:
    """Separate Mosquittos stand in for a cluster that lost the session: on B the CONNACK
    says no session, so the node subscribes again; a publish made while the link is down
    waits for it and goes out on B."""
    first, second = make_mosquitto(), make_mosquitto()
    async with (
        members_transport([first, second], f"{prefix}-n") as node,
        transport_for(second, f"{prefix}-p") as peer,
    ):
        assert (node.host, node.port) == (first.host, first.port)
        await node.subscribe(f"{prefix}/t")
        killed = time.monotonic()
        first.kill()
        await wait_until(lambda: not node.is_connected, timeout=5)
        pending = asyncio.create_task(node.publish(f"{prefix}/t", b"during the outage"))
        await wait_until(lambda: node.is_connected, timeout=5)
        assert time.monotonic() - killed < 3.0
        await asyncio.wait_for(pending, 5)
        assert (node.host, node.port) == (second.host, second.port)
        assert (node.failovers, node.reconnects, node.session_present) == (1, 1, False)
        await peer.publish(f"{prefix}/t", b"from a peer on B")
        got = await take(node.deliveries(), 2)
        assert sorted(d.payload for d in got) == [b"during the outage", b"from a peer on B"]


@pytest.mark.broker
@pytest.mark.timeout(60)
async def test_start_picks_the_member_and_failover_wraps_to_the_first(
    make_mosquitto: Callable[..., MosquittoProcess], prefix: str
) -> None:
    brokers = [make_mosquitto() for _ in range(3)]
    async with members_transport(brokers, f"{prefix}-b", start=1) as on_b:
        assert on_b.port == brokers[1].port
    async with members_transport(brokers, f"{prefix}-c", start=5) as node:
        assert node.port == brokers[2].port
        await node.subscribe(f"{prefix}/t")
        brokers[2].kill()
        await wait_until(lambda: not node.is_connected, timeout=5)
        await wait_until(lambda: node.is_connected, timeout=5)
        assert node.port == brokers[0].port
        assert node.failovers == 1
        await node.publish(f"{prefix}/t", b"on A")  # the subscription came along
        assert await take(node.deliveries(), 1) == [Delivery(f"{prefix}/t", b"on A")]


@pytest.mark.broker
@pytest.mark.timeout(60)
async def test_publishes_cut_off_by_a_dying_member_finish_on_the_next(
    make_mosquitto: Callable[..., MosquittoProcess], prefix: str
) -> None:
    """The in-flight window across a failover: publishes that never got their PUBACK from
    the frozen, then killed, member are sent again to the other one."""
    count = 600
    first, second = make_mosquitto(), make_mosquitto()
    async with (
        members_transport([first, second], f"{prefix}-pub", max_inflight=32) as pub,
        transport_for(second, f"{prefix}-sub") as sub,
    ):
        await sub.subscribe(f"{prefix}/t")
        sending = asyncio.gather(*(pub.publish(f"{prefix}/t", b"%d" % i) for i in range(count)))
        await wait_until(lambda: pub.published >= 100)
        first.freeze()
        await asyncio.sleep(0.2)
        assert pub.inflight == 32
        acked_by_first = pub.published
        first.kill()
        await asyncio.wait_for(sending, 30)
        assert pub.published == count
        assert pub.retried > 0 and pub.failovers == 1
        assert pub.port == second.port
        # Everything the frozen member did not acknowledge reaches B, exactly once.
        got = await take(sub.deliveries(), count - acked_by_first, timeout=15)
        assert len({d.payload for d in got}) == len(got)
        await asyncio.sleep(0.2)
        assert len(sub._incoming) == 0


@pytest.mark.broker
@pytest.mark.timeout(60)
async def test_all_members_down_backs_off_then_takes_whichever_returns(
    make_mosquitto: Callable[..., MosquittoProcess], prefix: str
) -> None:
    first, second = make_mosquitto(), make_mosquitto()
    async with members_transport([first, second], f"{prefix}-n", reconnect_max=0.3) as node:
        first.kill()
        second.kill()
        await wait_until(lambda: not node.is_connected, timeout=5)
        await asyncio.sleep(1.0)  # several full rounds of failures
        rounds = node.failovers
        assert rounds >= 4
        pending = asyncio.create_task(node.publish(f"{prefix}/t", b"after the outage"))
        second.start()
        await asyncio.wait_for(pending, 10)
        assert (node.host, node.port) == (second.host, second.port)
        assert node.reconnects == 1


@pytest.mark.broker
@pytest.mark.timeout(60)
async def test_tls_applies_to_every_member(
    make_mosquitto: Callable[..., MosquittoProcess], prefix: str, tmp_path: Path
) -> None:
    from i24net.broker import generate_tls_files

    files = generate_tls_files(tmp_path / "tls", hosts=("127.0.0.1",))
    tls = (
        f"cafile {files.ca_cert}",
        f"certfile {files.server_cert}",
        f"keyfile {files.server_key}",
    )
    first, second = make_mosquitto(extra_config=tls), make_mosquitto(extra_config=tls)
    async with members_transport([first, second], f"{prefix}-n", tls_ca=str(files.ca_cert)) as node:
        await node.subscribe(f"{prefix}/t")
        first.kill()
        await wait_until(lambda: not node.is_connected, timeout=5)
        await node.publish(f"{prefix}/t", b"over TLS on B")
        assert node.port == second.port
        assert await take(node.deliveries(), 1) == [Delivery(f"{prefix}/t", b"over TLS on B")]


def test_server_unavailable_is_retried_and_other_refusals_are_not() -> None:
    """A cluster member that is starting answers "server unavailable" (3.1.1 code 3, paho's
    reason code 136): another member, or the same one later, will take the client. Bad
    credentials (4, 5, paho 134/135) are the caller's mistake and fail at once."""
    from aiomqtt.exceptions import MqttConnectError
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.reasoncodes import ReasonCode

    from i24net.transport.mqtt import _server_unavailable

    assert _server_unavailable(MqttConnectError(ReasonCode(PacketTypes.CONNACK, identifier=136)))
    assert _server_unavailable(MqttConnectError(3))
    for code in (134, 135):
        assert not _server_unavailable(
            MqttConnectError(ReasonCode(PacketTypes.CONNACK, identifier=code)))
    assert not _server_unavailable(MqttConnectError(5))
