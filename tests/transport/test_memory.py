"""The in-memory broker (synchronous core) and the asyncio transport over it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Literal

import pytest

from i24net.core.errors import TransportError
from i24net.transport import Delivery, MemoryBroker, MemoryTransport, Transport, Will


async def take(stream: AsyncIterator[Delivery], count: int, timeout: float = 2.0) -> list[Delivery]:
    """The next ``count`` deliveries, failing the test if they do not come in time."""
    async with asyncio.timeout(timeout):
        return [await anext(stream) for _ in range(count)]


async def nothing_more(transport: MemoryTransport) -> None:
    """Assert that nothing else is waiting (the memory broker delivers synchronously)."""
    await asyncio.sleep(0)
    assert len(transport._incoming) == 0


# -- the synchronous core, no asyncio -------------------------------------------------------


def test_core_routes_without_sinks_and_returns_deliveries() -> None:
    broker = MemoryBroker()
    broker.connect("a")
    broker.connect("b")
    broker.subscribe("a", "t/+")
    broker.subscribe("b", "t/#", "t/x")  # two matching filters: still one copy
    routed = broker.publish("c", "t/x", b"1")
    assert routed == [("a", Delivery("t/x", b"1")), ("b", Delivery("t/x", b"1"))]
    assert broker.publish("c", "other", b"2") == []
    assert broker.accepted == 2


def test_core_queues_for_offline_persistent_session_in_order() -> None:
    broker = MemoryBroker()
    broker.connect("a", clean_session=False)
    broker.subscribe("a", "q/#")
    broker.disconnect("a")
    for index in range(5):
        assert broker.publish("p", f"q/{index}", bytes([index])) == []
    assert broker.queued("a") == 5
    result = broker.connect("a", clean_session=False)
    assert result.session_present is True
    assert [d.payload for d in result.queued] == [bytes([i]) for i in range(5)]
    assert broker.queued("a") == 0
    assert broker.subscriptions("a") == ("q/#",)


def test_core_forgets_clean_session_on_disconnect() -> None:
    broker = MemoryBroker()
    broker.connect("a", clean_session=True)
    broker.subscribe("a", "q/#")
    broker.disconnect("a")
    assert not broker.has_session("a")
    assert broker.publish("p", "q/1", b"x") == []
    result = broker.connect("a", clean_session=True)
    assert result.session_present is False
    assert result.queued == ()


def test_core_clean_session_connect_discards_old_persistent_session() -> None:
    broker = MemoryBroker()
    broker.connect("a")
    broker.subscribe("a", "q")
    broker.disconnect("a")
    broker.publish("p", "q", b"lost")
    result = broker.connect("a", clean_session=True)
    assert result == result.__class__(session_present=False, queued=())
    assert broker.subscriptions("a") == ()


def test_core_overflowing_offline_queue_drops_like_mosquitto() -> None:
    broker = MemoryBroker(max_queued_messages=3)
    broker.connect("a")
    broker.subscribe("a", "q")
    broker.disconnect("a")
    for index in range(5):
        broker.publish("p", "q", bytes([index]))
    assert broker.overflowed == 2
    assert [d.payload for d in broker.connect("a").queued] == [b"\x00", b"\x01", b"\x02"]


def test_core_retained_replace_clear_and_send_on_subscribe() -> None:
    broker = MemoryBroker()
    broker.publish("gs", "i24/v1/directory", b"v1", retain=True)
    broker.publish("gs", "i24/v1/directory", b"v2", retain=True)
    broker.publish("gs", "i24/v1/other", b"o", retain=True)
    broker.connect("n")
    assert broker.subscribe("n", "i24/v1/directory") == [Delivery("i24/v1/directory", b"v2")]
    # Re-subscribing resends retained messages, as MQTT 3.1.1 requires.
    assert broker.subscribe("n", "i24/v1/+") == [
        Delivery("i24/v1/directory", b"v2"),
        Delivery("i24/v1/other", b"o"),
    ]
    broker.publish("gs", "i24/v1/directory", b"", retain=True)
    assert broker.retained("i24/v1/directory") is None
    assert broker.subscribe("n", "i24/v1/directory") == []


def test_core_dollar_topics_stay_out_of_hash() -> None:
    broker = MemoryBroker()
    broker.connect("n")
    broker.subscribe("n", "#")
    assert broker.publish("broker", "$SYS/uptime", b"1") == []
    broker.subscribe("n", "$SYS/#")
    assert broker.publish("broker", "$SYS/uptime", b"2") == [("n", Delivery("$SYS/uptime", b"2"))]


def agency_acl(client_id: str, action: Literal["publish", "subscribe"], topic: str) -> bool:
    """The broker ACL shape (docs/protocol.md 6.2): publish only to your submit topic, read only
    your inbox."""
    if client_id == "router":
        return True
    if action == "publish":
        return topic == f"i24/v1/submit/{client_id}"
    return topic == f"i24/v1/inbox/{client_id}"


def test_core_acl_denied_publish_is_dropped_silently() -> None:
    broker = MemoryBroker(acl=agency_acl)
    broker.connect("router")
    broker.subscribe("router", "i24/v1/submit/+")
    assert broker.publish("FR", "i24/v1/submit/DE", b"forged") == []
    assert broker.publish("FR", "i24/v1/submit/FR", b"ok") == [
        ("router", Delivery("i24/v1/submit/FR", b"ok"))
    ]
    assert broker.denied == 1
    assert broker.accepted == 1


def test_core_acl_denied_subscription_delivers_nothing() -> None:
    broker = MemoryBroker(acl=agency_acl)
    broker.connect("FR")
    broker.publish("router", "i24/v1/inbox/DE", b"retained", retain=True)
    assert broker.subscribe("FR", "i24/v1/inbox/DE", "i24/v1/inbox/+") == []
    assert broker.subscriptions("FR") == ()
    broker.subscribe("FR", "i24/v1/inbox/FR")
    assert broker.publish("router", "i24/v1/inbox/DE", b"x") == []
    assert broker.publish("router", "i24/v1/inbox/FR", b"y") == [
        ("FR", Delivery("i24/v1/inbox/FR", b"y"))
    ]


def test_core_acl_rechecks_the_concrete_topic_at_delivery() -> None:
    def read_only_public(client_id: str, action: str, topic: str) -> bool:
        return action == "publish" or topic in ("pub/#", "pub/ok")

    broker = MemoryBroker(acl=read_only_public)
    broker.connect("n")
    broker.subscribe("n", "pub/#")  # the filter itself is allowed
    assert broker.publish("x", "pub/secret", b"s") == []
    assert broker.publish("x", "pub/ok", b"o") == [("n", Delivery("pub/ok", b"o"))]


def test_core_will_on_link_loss_only() -> None:
    broker = MemoryBroker()
    broker.connect("dash")
    broker.subscribe("dash", "presence/#")
    broker.connect("FR", will=Will("presence/FR", b"offline", retain=True))
    assert broker.disconnect("FR", graceful=True) == []
    broker.connect("FR", will=Will("presence/FR", b"offline", retain=True))
    assert broker.disconnect("FR", graceful=False) == [
        ("dash", Delivery("presence/FR", b"offline"))
    ]
    assert broker.retained("presence/FR") == b"offline"


def test_core_takeover_closes_old_link_and_publishes_its_will() -> None:
    broker = MemoryBroker()
    seen: list[Delivery] = []
    broker.connect("dash", sink=seen.append)
    broker.subscribe("dash", "presence/#")
    kicked: list[str] = []
    broker.connect(
        "FR", will=Will("presence/FR", b"gone"), on_takeover=lambda: kicked.append("old")
    )
    result = broker.connect("FR")
    assert kicked == ["old"]
    assert seen == [Delivery("presence/FR", b"gone")]
    assert result.session_present is True
    assert broker.is_online("FR")


def test_core_refuses_subscribe_when_offline_and_bad_topics() -> None:
    broker = MemoryBroker()
    with pytest.raises(TransportError) as info:
        broker.subscribe("ghost", "a")
    assert info.value.reason == "transport.disconnected"
    broker.connect("a")
    with pytest.raises(TransportError):
        broker.subscribe("a", "a/#/b")
    with pytest.raises(TransportError):
        broker.publish("a", "a/+", b"")


# -- the asyncio transport ------------------------------------------------------------------


def test_memory_transport_satisfies_the_protocol() -> None:
    assert isinstance(MemoryTransport(MemoryBroker(), "a"), Transport)


async def test_a_fenced_transport_publishes_nothing() -> None:
    broker = MemoryBroker()
    allowed = [True]
    async with MemoryTransport(broker, "sub") as sub, MemoryTransport(broker, "pub") as pub:
        pub.guard = lambda: allowed[0]
        await sub.subscribe("i24/v1/inbox/FR")
        await pub.publish("i24/v1/inbox/FR", b"while-leased")
        allowed[0] = False
        with pytest.raises(TransportError) as info:
            await pub.publish("i24/v1/inbox/FR", b"after-the-lease")
        assert info.value.reason == "transport.fenced"
        first = await asyncio.wait_for(anext(aiter(sub.deliveries())), 2)
        assert first.payload == b"while-leased"
        assert pub.published == 1


async def test_publish_subscribe_round_trip() -> None:
    broker = MemoryBroker()
    async with MemoryTransport(broker, "sub") as sub, MemoryTransport(broker, "pub") as pub:
        await sub.subscribe("i24/v1/inbox/FR")
        await pub.publish("i24/v1/inbox/FR", b"hello")
        await pub.publish("i24/v1/inbox/DE", b"not for FR")
        assert await take(sub.deliveries(), 1) == [Delivery("i24/v1/inbox/FR", b"hello")]
        await nothing_more(sub)
        assert (pub.published, sub.received) == (2, 1)


async def test_wildcards_and_dollar_topics() -> None:
    broker = MemoryBroker()
    async with MemoryTransport(broker, "sub") as sub, MemoryTransport(broker, "pub") as pub:
        await sub.subscribe("a/+/c", "b/#")
        for topic in ["a/x/c", "a/x/y/c", "b", "b/1/2", "$SYS/b", "c"]:
            await pub.publish(topic, topic.encode())
        got = await take(sub.deliveries(), 3)
        assert [d.topic for d in got] == ["a/x/c", "b", "b/1/2"]
        await nothing_more(sub)


async def test_retained_message_reaches_late_subscriber() -> None:
    broker = MemoryBroker()
    async with MemoryTransport(broker, "gs") as gs:
        await gs.publish("i24/v1/directory", b"dir-v7", retain=True)
    async with MemoryTransport(broker, "late") as late:
        await late.subscribe("i24/v1/directory")
        assert await take(late.deliveries(), 1) == [Delivery("i24/v1/directory", b"dir-v7")]


async def test_acl_denied_publish_and_subscribe() -> None:
    broker = MemoryBroker(acl=agency_acl)
    async with (
        MemoryTransport(broker, "router") as router,
        MemoryTransport(broker, "FR") as fr,
        MemoryTransport(broker, "DE") as de,
    ):
        await router.subscribe("i24/v1/submit/+")
        await de.subscribe("i24/v1/inbox/FR")  # snooping: granted, delivers nothing
        await fr.subscribe("i24/v1/inbox/FR")
        await fr.publish("i24/v1/inbox/DE", b"forged")  # acknowledged, dropped
        await fr.publish("i24/v1/submit/FR", b"genuine")
        await router.publish("i24/v1/inbox/FR", b"for FR")
        assert await take(router.deliveries(), 1) == [Delivery("i24/v1/submit/FR", b"genuine")]
        assert await take(fr.deliveries(), 1) == [Delivery("i24/v1/inbox/FR", b"for FR")]
        await nothing_more(de)
        await nothing_more(router)
        assert broker.denied == 2


async def test_persistent_session_queues_across_disconnect() -> None:
    broker = MemoryBroker()
    async with MemoryTransport(broker, "node") as node, MemoryTransport(broker, "pub") as pub:
        await node.subscribe("inbox")
        node.disconnect()
        assert not node.is_connected
        for index in range(10):
            await pub.publish("inbox", b"%d" % index)
        assert broker.queued("node") == 10
        await nothing_more(node)
        node.reconnect()
        assert node.is_connected and node.reconnects == 1
        await pub.publish("inbox", b"after")
        got = await take(node.deliveries(), 11)
        assert [d.payload for d in got] == [b"%d" % i for i in range(10)] + [b"after"]


async def test_clean_session_restores_subscriptions_but_loses_messages() -> None:
    broker = MemoryBroker()
    async with (
        MemoryTransport(broker, "node", clean_session=True) as node,
        MemoryTransport(broker, "pub") as pub,
    ):
        await node.subscribe("inbox")
        node.disconnect()
        await pub.publish("inbox", b"while away")  # no session: gone
        node.reconnect()
        assert broker.subscriptions("node") == ("inbox",)
        await pub.publish("inbox", b"back")
        assert await take(node.deliveries(), 1) == [Delivery("inbox", b"back")]
        await nothing_more(node)


async def test_publish_waits_for_the_link_then_goes_through() -> None:
    broker = MemoryBroker()
    async with MemoryTransport(broker, "sub") as sub, MemoryTransport(broker, "pub") as pub:
        await sub.subscribe("t")
        pub.disconnect()
        pending = asyncio.create_task(pub.publish("t", b"late"))
        await asyncio.sleep(0.01)
        assert not pending.done()
        pub.reconnect()
        await asyncio.wait_for(pending, 1)
        assert await take(sub.deliveries(), 1) == [Delivery("t", b"late")]


async def test_publish_timeout_while_disconnected() -> None:
    broker = MemoryBroker()
    async with MemoryTransport(broker, "pub", publish_timeout=0.05) as pub:
        pub.disconnect()
        with pytest.raises(TransportError) as info:
            await pub.publish("t", b"x")
        assert info.value.reason == "transport.timeout"


async def test_waiting_publish_fails_when_transport_closes() -> None:
    broker = MemoryBroker()
    transport = MemoryTransport(broker, "pub")
    async with transport:
        transport.disconnect()
        pending = asyncio.create_task(transport.publish("t", b"x"))
        await asyncio.sleep(0.01)
    with pytest.raises(TransportError) as info:
        await pending
    assert info.value.reason == "transport.closed"


async def test_ordering_preserved_per_publisher() -> None:
    broker = MemoryBroker()
    publishers = [MemoryTransport(broker, f"p{i}") for i in range(3)]
    async with MemoryTransport(broker, "sub") as sub:
        await sub.subscribe("seq/+")
        for publisher in publishers:
            await publisher.__aenter__()

        async def run(index: int, publisher: MemoryTransport) -> None:
            for seq in range(200):
                await publisher.publish(f"seq/p{index}", seq.to_bytes(2, "big"))

        await asyncio.gather(*(run(i, p) for i, p in enumerate(publishers)))
        got = await take(sub.deliveries(), 600)
        for index in range(3):
            sequence = [int.from_bytes(d.payload, "big") for d in got if d.topic == f"seq/p{index}"]
            assert sequence == list(range(200))
        # The publishers really interleaved, so the order is not trivially guaranteed.
        assert [d.topic for d in got[:3]] != ["seq/p0"] * 3
        for publisher in publishers:
            await publisher.__aexit__(None, None, None)


async def test_will_published_on_link_loss_not_on_clean_exit() -> None:
    broker = MemoryBroker()
    async with MemoryTransport(broker, "dash") as dash:
        await dash.subscribe("presence/+")
        async with MemoryTransport(broker, "FR", will=Will("presence/FR", b"offline")) as fr:
            fr.disconnect()
            fr.reconnect()
        assert await take(dash.deliveries(), 1) == [Delivery("presence/FR", b"offline")]
        await nothing_more(dash)


async def test_deliveries_end_after_close_once_drained() -> None:
    broker = MemoryBroker()
    transport = MemoryTransport(broker, "n")
    async with transport, MemoryTransport(broker, "p") as pub:
        await transport.subscribe("t")
        await pub.publish("t", b"1")
        await pub.publish("t", b"2")
    assert [d.payload async for d in transport.deliveries()] == [b"1", b"2"]


async def test_takeover_disconnects_the_older_transport() -> None:
    broker = MemoryBroker()
    async with MemoryTransport(broker, "FR") as old, MemoryTransport(broker, "FR") as new:
        assert new.is_connected
        assert not old.is_connected
        assert broker.is_online("FR")


async def test_transport_is_single_use_and_reconnect_needs_open() -> None:
    broker = MemoryBroker()
    transport = MemoryTransport(broker, "n")
    with pytest.raises(TransportError):
        transport.reconnect()
    async with transport:
        pass
    with pytest.raises(TransportError) as info:
        await transport.__aenter__()
    assert info.value.reason == "transport.reused"
