"""Drill: replays. An attacker who recorded traffic (the broker, anyone on the path without
TLS, an insider recipient) plays it back: the same message id with other content, the very
same bytes later, a delivery replayed to a node, and after the receiving node restarted.

Where each is caught (docs/protocol.md 13.4): the router refuses an id it routed with a
different digest (``replay.id``) and treats the same bytes as a retry; nodes de-duplicate by
id in their durable inbox, so the application sees a message once, across restarts; after
expiry everything is ``time.expired``.
"""

from __future__ import annotations

import dataclasses

from attackkit import at_node, at_router, counted, kinds, legit_message_flows
from netfixtures import HOUR, MINUTE, Net, keys_for, parsed

from i24net.core import frames as fr
from i24net.core.envelope import Body, make_header
from i24net.core.labels import Label
from i24net.core.node import MemoryNodeStore, NodeMachine
from i24net.core.wire import pack


def delivered(net: Net, sender: str = "NCB-FR", to: str = "NCB-DE",
              **kw: object) -> tuple[bytes, bytes]:
    """A message sent and receipted normally: (message id, envelope bytes)."""
    mid = net.send(sender, [to], **kw)  # type: ignore[arg-type]
    net.settle()
    assert net.outbox_state(sender, mid) == "delivered"
    return mid, net.store(sender).outbox[mid].raw


def captured_delivery(net: Net, raw: bytes, to: str = "NCB-DE") -> bytes:
    """The delivery frame the router published for ``raw`` (what a broker recorded)."""
    mid = parsed(raw).header.id
    found = [f for (a, _), (m, f) in net.router_store.log.items() if a == to and m == mid]
    assert found
    return found[0]


def test_same_id_with_another_body_is_refused_replay_id() -> None:
    """NCB-DE (an insider recipient) reuses NCB-FR's message id for its own message."""
    net = Net()
    mid, _ = delivered(net)
    de = net.nodes["NCB-DE"]
    h = make_header(net.directory, sender="NCB-DE", addressing=["NCB-US"], kind="message",
                    label=Label("RESTRICTED"), now_ms=net.now, ttl_ms=HOUR,
                    random_bytes=de.random_bytes)
    de.submit(dataclasses.replace(h, id=mid), Body("same id, other content"), net.now)
    net.pump()
    assert net.router.counters["refuse.replay.id"] == 1
    entry = net.store("NCB-DE").outbox[mid]
    assert (entry.state, entry.reason) == ("refused", "replay.id")  # the report said so
    assert net.inbox("NCB-US") == set()
    legit_message_flows(net)


def test_same_bytes_later_are_not_delivered_twice() -> None:
    net = Net()
    mid, raw = delivered(net)
    frame = captured_delivery(net, raw)
    received = len(net.events("NCB-DE", "received"))
    net.advance(10 * MINUTE)
    # the envelope replayed on the sender's topic: a retry to the router, nothing re-sent
    # to NCB-DE (its receipt is held), the held receipt goes back to NCB-FR
    assert kinds(at_router(net, "NCB-FR", raw)) == [("duplicate", "ok")]
    assert net.router.counters["duplicate"] == 1
    net.pump()
    # the recorded delivery frame replayed onto NCB-DE's inbox
    assert kinds(at_node(net, "NCB-DE", frame)) == [("duplicate", "")]
    assert net.nodes["NCB-DE"].counters["duplicate"] == 1
    net.pump()
    assert net.inbox("NCB-DE") == {mid}
    assert len(net.events("NCB-DE", "received")) == received  # once to the application
    assert net.outbox_state("NCB-FR", mid) == "delivered"
    legit_message_flows(net)


def test_after_a_router_restart_the_replay_is_redelivered_and_deduped() -> None:
    net = Net()
    mid, raw = delivered(net)
    net.crash_router()  # held receipt frames are gone: the router asks NCB-DE again
    assert kinds(at_router(net, "NCB-FR", raw)) == [("duplicate", "ok")]
    net.pump()
    assert net.nodes["NCB-DE"].counters["duplicate"] == 1
    assert len(net.events("NCB-DE", "received")) == 1
    assert net.inbox("NCB-DE") == {mid}
    legit_message_flows(net)


def test_replayed_delivery_after_the_receiver_restarts_is_deduped() -> None:
    """A new NodeMachine over the same durable store: the inbox remembers the id."""
    net = Net()
    mid, raw = delivered(net)
    frame = captured_delivery(net, raw)
    old = net.nodes["NCB-DE"]
    restarted = NodeMachine("NCB-DE", keys_for("NCB-DE"), net.directory, old.store,
                            random_bytes=old.random_bytes)
    net.nodes["NCB-DE"] = restarted
    assert kinds(at_node(net, "NCB-DE", frame)) == [("duplicate", "")]
    assert restarted.counters == {"duplicate": 1}
    (_, receipt, _), = restarted.pop()  # it still answers with a receipt
    assert fr.verify_receipt(fr.parse_frame(receipt), net.directory).status == "delivered"
    assert net.inbox("NCB-DE") == {mid}
    assert len(net.events("NCB-DE", "received")) == 1
    legit_message_flows(net)


def test_stale_replays_are_refused_as_expired() -> None:
    net = Net()
    mid, raw = delivered(net, ttl=HOUR)
    frame = captured_delivery(net, raw)
    late = net.now + HOUR + net.directory.max_skew_ms + 1
    net.router_store.prune(late)  # the router forgets the id once it cannot be fresh
    net.advance(late - net.now)
    assert kinds(at_router(net, "NCB-FR", raw)) == [("refuse", "time.expired")]
    assert net.router.counters["refuse.time.expired"] == 1
    # a node that lost its inbox (rebuilt from nothing) is not fooled by the old delivery
    blank = NodeMachine("NCB-DE", keys_for("NCB-DE"), net.directory, MemoryNodeStore(),
                        random_bytes=net.nodes["NCB-DE"].random_bytes)
    events = blank.handle(f"{net.directory.prefix}/inbox/NCB-DE", frame, net.now)
    assert kinds(events) == [("refused-in", "time.expired")]
    assert blank.counters == {"refuse.time.expired": 1}
    assert blank.store.inbox_get(mid) is None
    net.pump()
    legit_message_flows(net)
    assert counted(net.router.counters, "refuse.") == 1


def test_replayed_delivery_stamped_for_another_envelope_is_dropped() -> None:
    """A recorded stamp glued to other envelope bytes (the stamp pins the digest)."""
    net = Net()
    _, raw = delivered(net)
    _, other = delivered(net)
    env = parsed(raw)
    f = fr.parse_frame(captured_delivery(net, raw))
    swapped = pack([f.magic, fr.FRAME_VERSION, f.doc, f.signature, other])
    assert kinds(at_node(net, "NCB-DE", swapped)) == [("drop", "stamp.digest")]
    assert net.nodes["NCB-DE"].counters["drop.stamp.digest"] == 1
    assert env.header.id in net.inbox("NCB-DE")
    legit_message_flows(net)
