"""Router shards, driven directly: two router machines, one per shard, and the demo nodes.

Frames travel by topic as the broker would move them: ``submit/<A>`` to the shard that owns
A, ``route/<k>`` to shard k, ``inbox/<A>`` to A's node. In the demo network with two shards,
shard 1 routes GS-LYON, NCB-BR, NCB-US and NCB-ZA, and shard 2 EUROPOL, NCB-DE, NCB-FR and
NCB-JP (``shard_of`` is a fixed hash, checked below).
"""

from __future__ import annotations

import dataclasses
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from netfixtures import T0, Rng, demo_directory, header, keys_for

from i24net.core import frames as fr
from i24net.core import keys as k
from i24net.core.envelope import Body, Envelope
from i24net.core.errors import ConfigError
from i24net.core.node import MemoryNodeStore, NodeMachine
from i24net.core.router import MemoryRouterStore, RouterEvent, RouterMachine
from i24net.core.shards import Shard, route_index, route_topic, router_key_name, shard_of

R1, R2 = keys_for("i24-router"), keys_for("i24-router-2")
D = dataclasses.replace(demo_directory(), router_keys=(R1.verify_key, R2.verify_key))
PREFIX = D.prefix


def test_the_demo_agencies_split_over_two_shards() -> None:
    split = {a: shard_of(a, 2) for a in sorted(D.agencies)}
    assert split == {"EUROPOL": 2, "GS-LYON": 1, "NCB-BR": 1, "NCB-DE": 2, "NCB-FR": 2,
                     "NCB-JP": 2, "NCB-US": 1, "NCB-ZA": 1}


def test_shard_of_spreads_many_agencies_evenly_and_one_shard_owns_everything() -> None:
    agencies = [f"NCB-{i:03d}" for i in range(3000)]
    for count in (2, 3, 8):
        load = Counter(shard_of(a, count) for a in agencies)
        assert set(load) == set(range(1, count + 1))
        assert max(load.values()) < 1.15 * 3000 / count
    assert {shard_of(a, 1) for a in agencies} == {1}


@pytest.mark.parametrize("text", ["1/2", "2/2", " 3/8 "])
def test_shard_parse(text: str) -> None:
    s = Shard.parse(text)
    assert f"{s.index}/{s.count}" == text.strip()


@pytest.mark.parametrize("text", ["0/2", "3/2", "1/0", "1", "a/b", "1/65", "-1/2", ""])
def test_shard_parse_refuses_what_is_not_k_of_k(text: str) -> None:
    with pytest.raises(ConfigError) as err:
        Shard.parse(text)
    assert err.value.reason == "config.shard"


def test_route_topics_and_key_names() -> None:
    assert route_topic("i24/v1", 2) == "i24/v1/route/2"
    assert route_index("i24/v1", "i24/v1/route/2") == 2
    assert route_index("i24/v1", "i24/v1/route/x") is None
    assert route_index("i24/v1", "i24/v1/submit/2") is None
    assert router_key_name(1) == "i24-router" and router_key_name(3) == "i24-router-3"


class ShardedNet:
    """Two shards and the demo nodes on an in-memory wire (FIFO, like one broker)."""

    def __init__(self) -> None:
        self.stores = {1: MemoryRouterStore(), 2: MemoryRouterStore()}
        self.routers = {i: self._router(i) for i in (1, 2)}
        self.nodes = {a: NodeMachine(a, keys_for(a), D, MemoryNodeStore(),
                                     random_bytes=Rng(f"node-{a}")) for a in D.agencies}
        self.wire: list[tuple[str, bytes]] = []
        self.events: dict[int, list[RouterEvent]] = {1: [], 2: []}
        self.now = T0

    def _router(self, i: int) -> RouterMachine:
        return RouterMachine(D, (R1, R2)[i - 1], self.stores[i], shard=Shard(i, 2))

    def take_over(self, i: int) -> None:
        """Shard i served by another process: a new machine on the shard's own state."""
        self.routers[i] = self._router(i)

    def send(self, sender: str, to: list[str], subject: str = "s") -> bytes:
        node = self.nodes[sender]
        h = header(sender, to, d=D, now=self.now, rng=node.random_bytes)
        node.submit(h, Body(subject, "text"), self.now)
        return h.id

    def pump(self, limit: int = 10_000) -> None:
        for _ in range(limit):
            for node in self.nodes.values():
                self.wire += [(t, p) for t, p, _ in node.pop(limit=10_000)]
            for r in self.routers.values():
                self.wire += [(t, p) for t, p, _ in r.pop(self.now, limit=10_000)]
            if not self.wire:
                return
            topic, payload = self.wire.pop(0)
            self.deliver(topic, payload)
        raise AssertionError("the wire did not settle")

    def deliver(self, topic: str, payload: bytes) -> None:
        head, _, tail = topic.rpartition("/")
        if head.endswith("/to"):  # submit/<A>/to/<k>: straight to shard k
            self.events[int(tail)] += self.routers[int(tail)].handle(topic, payload, self.now)
        elif head.endswith("/submit"):
            i = shard_of(tail, 2)
            self.events[i] += self.routers[i].handle(topic, payload, self.now)
        elif head.endswith("/route"):
            self.events[int(tail)] += self.routers[int(tail)].handle(topic, payload, self.now)
        else:
            self.nodes[tail].handle(topic, payload, self.now)


def test_a_message_across_shards_is_delivered_and_its_receipt_reaches_the_sender() -> None:
    net = ShardedNet()
    mid = net.send("NCB-US", ["NCB-FR"])  # shard 1 -> a recipient routed by shard 2
    net.pump()
    assert net.nodes["NCB-FR"].store.inbox_has(mid)
    entry = net.nodes["NCB-US"].store.outbox_get(mid)
    assert entry is not None and entry.state == "delivered"
    assert entry.receipts == {"NCB-FR": "delivered"}
    # shard 1 holds the message and recorded the receipt, which NCB-FR sent straight to it
    # on submit/NCB-FR/to/1; shard 2 saw nothing of this message
    assert net.stores[1].prior(mid) is not None and net.stores[1].receipted(mid) == {"NCB-FR"}
    assert net.stores[2].prior(mid) is None
    assert net.events[2] == []


def test_a_receipt_on_the_plain_submit_topic_is_passed_on_to_the_senders_shard() -> None:
    """A node with a directory that lists one router key publishes its receipts on its own
    submit topic; the shard that reads it forwards them over the route topic."""
    net = ShardedNet()
    mid = net.send("NCB-US", ["NCB-FR"])
    net.pump()
    env = Envelope.parse(net.nodes["NCB-US"].store.outbox_get(mid).raw)  # type: ignore[union-attr]
    rec = fr.make_receipt(fr.Receipt(mid, env.digest, "NCB-US", "NCB-FR", "read", "", T0),
                          keys_for("NCB-FR"))
    events = net.routers[2].handle(f"{PREFIX}/submit/NCB-FR", rec, T0)
    assert [e.kind for e in events] == ["forward"]
    assert "receipt to shard 1" in events[0].detail
    (topic, payload, _), = net.routers[2].pop(T0)
    assert topic == route_topic(PREFIX, 1)
    assert [e.kind for e in net.routers[1].handle(topic, payload, T0)] == ["receipt"]


def test_what_a_node_sends_to_a_shard_and_what_the_shard_refuses_there() -> None:
    net = ShardedNet()
    mid = net.send("NCB-US", ["NCB-FR"])
    net.pump()
    env = Envelope.parse(net.nodes["NCB-US"].store.outbox_get(mid).raw)  # type: ignore[union-attr]
    rec = fr.make_receipt(fr.Receipt(mid, env.digest, "NCB-US", "NCB-FR", "read", "", T0),
                          keys_for("NCB-FR"))
    # another agency's receipt on NCB-DE's shard topic: the topic names the publisher
    events = net.routers[1].handle(f"{PREFIX}/submit/NCB-DE/to/1", rec, T0)
    assert [(e.kind, e.reason) for e in events] == [("drop", "sender.topic")]
    # an envelope belongs on the agency's own submit topic, not on a shard topic
    net.send("NCB-FR", ["NCB-US"])
    (_, raw, _), = net.nodes["NCB-FR"].pop()
    events = net.routers[1].handle(f"{PREFIX}/submit/NCB-FR/to/1", raw, T0)
    assert [(e.kind, e.reason) for e in events] == [("drop", "wire.magic")]
    # a shard topic of another shard is not this shard's
    events = net.routers[1].handle(f"{PREFIX}/submit/NCB-FR/to/2", rec, T0)
    assert [(e.kind, e.reason) for e in events] == [("drop", "shard.misrouted")]


def test_each_shard_numbers_its_own_stream_and_per_sender_order_holds() -> None:
    net = ShardedNet()
    ids = [net.send("NCB-US", ["NCB-FR"], f"us-{i}") for i in range(5)]
    ids2 = [net.send("NCB-DE", ["NCB-FR"], f"de-{i}") for i in range(3)]
    seen: list[tuple[bytes, bytes, int]] = []
    node = net.nodes["NCB-FR"]
    real = node.handle

    def spy(topic: str, payload: bytes, now: int) -> list:  # type: ignore[type-arg]
        frame = fr.parse_frame(payload)
        if frame.magic == fr.DELIVERY:
            stamp = fr.verify_delivery(frame, D, "NCB-FR")
            seen.append((stamp.router_kid, stamp.msg_id, stamp.seqs["NCB-FR"]))
        return real(topic, payload, now)

    node.handle = spy  # type: ignore[method-assign]
    net.pump()
    by_us = [(m, s) for kid, m, s in seen if kid == k.key_id(R1.verify_key)]
    by_de = [(m, s) for kid, m, s in seen if kid == k.key_id(R2.verify_key)]
    assert by_us == list(zip(ids, range(1, 6), strict=True))
    assert by_de == list(zip(ids2, range(1, 4), strict=True))
    assert node.counters.get("gap", 0) == 0


def test_a_submission_on_another_shards_topic_is_dropped() -> None:
    net = ShardedNet()
    net.send("NCB-FR", ["NCB-US"])
    (topic, payload, _), = net.nodes["NCB-FR"].pop()
    events = net.routers[1].handle(topic, payload, T0)
    assert [(e.kind, e.reason) for e in events] == [("drop", "shard.foreign")]
    assert net.routers[1].pending() == 0


def test_a_routed_frame_for_another_shard_is_misrouted() -> None:
    net = ShardedNet()
    mid = net.send("NCB-US", ["NCB-FR"])
    net.pump()
    # the receipt NCB-FR signed, replayed on shard 2's own route topic
    env = Envelope.parse(net.nodes["NCB-US"].store.outbox_get(mid).raw)  # type: ignore[union-attr]
    rec = fr.Receipt(mid, env.digest, "NCB-US", "NCB-FR", "delivered", "", T0)
    raw = fr.make_receipt(rec, keys_for("NCB-FR"))
    events = net.routers[2].handle(route_topic(PREFIX, 2), raw, T0)
    assert [(e.kind, e.reason) for e in events] == [("drop", "shard.misrouted")]
    events = net.routers[1].handle(route_topic(PREFIX, 2), raw, T0)
    assert [(e.kind, e.reason) for e in events] == [("drop", "shard.misrouted")]


def test_a_gap_request_reaches_the_shard_that_numbered_the_stream() -> None:
    net = ShardedNet()
    net.send("NCB-US", ["NCB-FR"])
    net.pump()
    kid1 = k.key_id(R1.verify_key)
    gap = fr.make_gap(fr.GapRequest("NCB-FR", 1, 1, T0, kid1), keys_for("NCB-FR"))
    # NCB-FR publishes on its own submit topic, which shard 2 reads
    events = net.routers[2].handle(f"{PREFIX}/submit/NCB-FR", gap, T0)
    assert [e.kind for e in events] == ["forward"]
    (topic, payload, _), = net.routers[2].pop(T0)
    assert topic == route_topic(PREFIX, 1)
    events = net.routers[1].handle(topic, payload, T0)
    assert [e.kind for e in events] == ["resend"]
    (topic, payload, _), = net.routers[1].pop(T0)
    assert topic == f"{PREFIX}/inbox/NCB-FR"
    stamp = fr.verify_delivery(fr.parse_frame(payload), D, "NCB-FR")
    assert stamp.router_kid == kid1 and stamp.seqs == {"NCB-FR": 1}


def test_a_gap_request_for_a_router_key_not_listed_is_dropped() -> None:
    net = ShardedNet()
    gap = fr.make_gap(fr.GapRequest("NCB-FR", 1, 1, T0, b"\x01" * k.KEY_ID_SIZE),
                      keys_for("NCB-FR"))
    events = net.routers[2].handle(f"{PREFIX}/submit/NCB-FR", gap, T0)
    assert [(e.kind, e.reason) for e in events] == [("drop", "gap.unknown-router")]


def test_a_gap_request_without_a_stream_is_answered_by_the_receiving_shard() -> None:
    gap = fr.GapRequest("NCB-FR", 1, 2, T0)
    assert fr.GapRequest.from_doc(fr.parse_frame(fr.make_gap(gap, keys_for("NCB-FR"))).doc) \
        == gap
    net = ShardedNet()
    events = net.routers[2].handle(f"{PREFIX}/submit/NCB-FR",
                                   fr.make_gap(gap, keys_for("NCB-FR")), T0)
    assert [e.kind for e in events] == ["resend"]


def test_a_taken_over_shard_continues_its_stream_and_repairs_by_retry() -> None:
    net = ShardedNet()
    first = net.send("NCB-US", ["NCB-FR"], "before")
    net.pump()
    # shard 1's router dies with a message taken off the broker but not acted on
    lost = net.send("NCB-US", ["NCB-FR"], "in flight")
    assert len(net.nodes["NCB-US"].pop()) == 1  # taken off the wire, never handled
    net.take_over(1)
    net.pump()
    assert not net.nodes["NCB-FR"].store.inbox_has(lost)
    # the sender's retry reaches the new server of shard 1, which continues at seq 2
    net.now += 10 * 60_000
    net.nodes["NCB-US"].handle_timer(net.now)
    net.pump()
    assert net.nodes["NCB-FR"].store.inbox_has(first)
    assert net.nodes["NCB-FR"].store.inbox_has(lost)
    assert net.nodes["NCB-US"].store.outbox_get(lost).state == "delivered"  # type: ignore[union-attr]
    assert net.stores[1].next_seq("NCB-FR") == 3


def test_subscriptions_cover_exactly_the_shards_agencies() -> None:
    net = ShardedNet()
    one = net.routers[1].submit_filters()
    two = net.routers[2].submit_filters()
    assert one[-1] == f"{PREFIX}/submit/+/to/1" and two[-1] == f"{PREFIX}/submit/+/to/2"
    assert {f.rsplit("/", 1)[1] for f in one[:-1]} == {"GS-LYON", "NCB-BR", "NCB-US",
                                                       "NCB-ZA"}
    assert {f.rsplit("/", 1)[1] for f in two[:-1]} == {"EUROPOL", "NCB-DE", "NCB-FR",
                                                       "NCB-JP"}
    single = RouterMachine(D, R1, MemoryRouterStore())
    assert single.submit_filters() == [f"{PREFIX}/submit/+"]
    assert single.route_topic == route_topic(PREFIX, 1)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.sampled_from(sorted(D.agencies)), min_size=2, max_size=4, unique=True))
def test_property_any_sender_and_recipients_settle_across_shards(group: list[str]) -> None:
    """Whatever shards the sender and recipients fall in, the message ends delivered to
    every recipient with every receipt back, or refused and held by no one."""
    net = ShardedNet()
    sender, *to = group
    mid = net.send(sender, to)
    net.pump()
    entry = net.nodes[sender].store.outbox_get(mid)
    assert entry is not None and entry.state in ("delivered", "refused")
    held = {a for a in D.agencies if net.nodes[a].store.inbox_has(mid)}
    if entry.state == "delivered":
        assert held == set(entry.recipients) == set(entry.receipts)
    else:
        assert held == set()


def test_a_nodes_gap_request_goes_to_the_shard_of_the_stream() -> None:
    net = ShardedNet()
    node = net.nodes["NCB-FR"]
    for router_keys, index in ((R1, 1), (R2, 2)):
        kid = k.key_id(router_keys.verify_key)
        # three messages to NCB-FR through shard index; the first two deliveries are lost,
        # so 1 and 2 are missing from the shard's stream when 3 arrives
        sender = next(a for a in sorted(D.agencies)
                      if a != "NCB-FR" and shard_of(a, 2) == index)
        for n in range(3):
            net.send(sender, ["NCB-FR"], subject=f"m{n}")
        for topic, payload, _ in net.nodes[sender].pop(limit=100):
            net.routers[index].handle(topic, payload, T0)
        to_fr = [(t, p) for t, p, _ in net.routers[index].pop(T0, limit=100)
                 if t == f"{PREFIX}/inbox/NCB-FR"]
        assert len(to_fr) == 3
        node.handle(*to_fr[2], T0)
        node.pop()  # its receipt
        node.handle_timer(T0 + 60_000)
        (topic, payload, _), = node.pop()
        assert topic == f"{PREFIX}/submit/NCB-FR/to/{index}"
        gap = fr.GapRequest.from_doc(fr.parse_frame(payload).doc)
        assert (gap.router_kid, gap.first, gap.last) == (kid, 1, 2)
        events = net.routers[index].handle(topic, payload, T0)
        assert [e.kind for e in events] == ["resend"]
