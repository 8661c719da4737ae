"""Drill: clock skew of +-10 minutes. Agencies' clocks drift; an attacker also wants to
replay old traffic "within the tolerance".

Freshness (docs/protocol.md 4.7) accepts ``created <= now + skew`` and ``now <= expires +
skew``, with ``skew`` the directory's ``max_skew_ms``. With a 10-minute bound, a sender or a
receiver 10 minutes off in either direction gets no false refusal, at the router or at the
node; one millisecond beyond is refused; a replay after ``expires + skew`` is still refused.
The default bound is 5 minutes: a network that must tolerate 10 sets
``max_skew_seconds = 600`` in network.toml (the last test shows the default refusing).
"""

from __future__ import annotations

import dataclasses

import pytest
from attackkit import at_node, at_router, kinds, legit_message_flows
from netfixtures import MINUTE, Net, demo_directory, header

from i24net.core.envelope import Body
from i24net.core.node import MemoryNodeStore, NodeMachine

SKEW = 10 * MINUTE
TTL = 5 * MINUTE  # shorter than the skew: the hardest case for a slow sender's clock


def skewed_net() -> Net:
    d = dataclasses.replace(demo_directory().next_version(demo_directory().issued_ms),
                            max_skew_ms=SKEW)
    return Net(directory=d)


def submit_with_clock(net: Net, sender: str, to: str, offset: int) -> bytes:
    """``sender``'s node seals with a clock ``offset`` ms off the network's."""
    node = net.nodes[sender]
    h = header(sender, [to], d=node.directory, now=net.now + offset, ttl=TTL,
               rng=node.random_bytes, lab="OFFICIAL-USE")
    node.submit(h, Body("from a skewed clock"), net.now + offset)
    return h.id


@pytest.mark.parametrize("offset", [SKEW, -SKEW, SKEW // 2, -SKEW // 2],
                         ids=["+10min", "-10min", "+5min", "-5min"])
def test_skewed_sender_within_the_bound_is_not_refused(offset: int) -> None:
    net = skewed_net()
    mid = submit_with_clock(net, "NCB-FR", "NCB-DE", offset)
    net.pump()
    assert net.holders(mid) == {"NCB-DE"}
    assert not any(name.startswith("refuse.") for name in net.router.counters)
    assert not any(name.startswith("refuse.") for name in net.nodes["NCB-DE"].counters)
    assert net.router.counters["accept"] == 1
    legit_message_flows(net)


@pytest.mark.parametrize(("offset", "arrival"), [(SKEW, TTL), (-SKEW, 0)],
                         ids=["+10min-arriving-at-expiry", "-10min-arriving-at-once"])
def test_skewed_receiver_within_the_bound_is_not_refused(offset: int, arrival: int) -> None:
    """NCB-DE's clock is ``offset`` off: a fast clock sees a message that arrives at its
    expiry as expired for 10 minutes already; a slow one sees a fresh message as created
    10 minutes in the future. Both are exactly at the bound, and accepted."""
    net = skewed_net()
    mid = net.send("NCB-FR", ["NCB-DE"], ttl=TTL, lab="OFFICIAL-USE")
    net.fault = lambda topic, _: 0 if topic.endswith("/inbox/NCB-DE") else 1
    net.pump()
    frame = next(f for (a, _), (m, f) in net.router_store.log.items()
                 if a == "NCB-DE" and m == mid)
    events = at_node(net, "NCB-DE", frame, now=net.now + arrival + offset)
    assert kinds(events) == [("received", "")]
    assert net.nodes["NCB-DE"].counters == {"received": 1}
    # one millisecond further off, a node that has not stored it yet refuses it
    other = NodeMachine("NCB-DE", net.nodes["NCB-DE"].keys, net.directory, MemoryNodeStore(),
                        random_bytes=net.nodes["NCB-DE"].random_bytes)
    beyond = net.now + arrival + offset + (1 if offset > 0 else -1)
    events = other.handle(f"{net.directory.prefix}/inbox/NCB-DE", frame, beyond)
    assert kinds(events) == [("refused-in", "time.expired" if offset > 0 else "time.future")]


def test_beyond_the_bound_is_refused() -> None:
    net = skewed_net()
    ahead = submit_with_clock(net, "NCB-FR", "NCB-DE", SKEW + 1)
    behind = submit_with_clock(net, "NCB-FR", "NCB-DE", -(SKEW + TTL + 1))
    net.pump()
    outbox = net.store("NCB-FR").outbox
    assert (outbox[ahead].state, outbox[ahead].reason) == ("refused", "time.future")
    assert (outbox[behind].state, outbox[behind].reason) == ("refused", "time.expired")
    assert net.router.counters == {"refuse.time.future": 1, "refuse.time.expired": 1}
    legit_message_flows(net)


def test_stale_replay_of_a_skewed_message_is_still_refused() -> None:
    net = skewed_net()
    mid = submit_with_clock(net, "NCB-FR", "NCB-DE", SKEW)  # created 10 min "in the future"
    net.settle()
    raw = net.store("NCB-FR").outbox[mid].raw
    frame = next(f for (a, _), (m, f) in net.router_store.log.items()
                 if a == "NCB-DE" and m == mid)
    stale = net.now + SKEW + TTL + SKEW + 1  # past expires + skew
    net.router_store.prune(stale)
    net.advance(stale - net.now)
    assert kinds(at_router(net, "NCB-FR", raw)) == [("refuse", "time.expired")]
    assert net.router.counters["refuse.time.expired"] == 1
    fresh_node = NodeMachine("NCB-DE", net.nodes["NCB-DE"].keys, net.directory,
                             MemoryNodeStore(), random_bytes=net.nodes["NCB-DE"].random_bytes)
    events = fresh_node.handle(f"{net.directory.prefix}/inbox/NCB-DE", frame, net.now)
    assert kinds(events) == [("refused-in", "time.expired")]
    net.pump()
    legit_message_flows(net)


def test_default_five_minute_bound_refuses_a_ten_minute_skew() -> None:
    net = Net()
    assert net.directory.max_skew_ms == 5 * MINUTE
    mid = submit_with_clock(net, "NCB-FR", "NCB-DE", SKEW)
    net.pump()
    assert net.store("NCB-FR").outbox[mid].reason == "time.future"
    assert net.router.counters == {"refuse.time.future": 1}
