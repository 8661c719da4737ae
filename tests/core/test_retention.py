"""Retention per kind: a recipient's node erases a body when its kind's period ends (the
id, sender, kind and dates stay, so a late copy is recognised), says so with a ``Purged``
event, and sleeps until the next one is due; kinds without a rule are kept."""

from __future__ import annotations

from dataclasses import replace

import pytest
from netfixtures import DAY, Net

from i24net.core import frames as fr
from i24net.core.errors import I24Error
from i24net.core.events import Purged
from i24net.core.lifecycle import install_lifecycle

RETENTION = {"alert": 90 * DAY, "message": 2 * DAY}


def _net() -> Net:
    net = Net()
    for node in net.nodes.values():
        node.set_retention(RETENTION)
    return net


def test_a_body_is_erased_when_its_kinds_retention_ends() -> None:
    net = _net()
    alert = net.send("NCB-FR", ["NCB-DE"], kind="alert", subject="armed suspect")
    net.settle()
    de = net.nodes["NCB-DE"]
    held = net.store("NCB-DE").inbox[alert]
    assert held.subject == "armed suspect" and held.erased_ms == 0
    due = held.received_ms + 90 * DAY
    net.advance(0)  # the first timer call reads what the store holds
    assert de.next_timer() == due  # nothing else to do: it sleeps until then
    net.advance(due - net.now - 1)
    assert net.store("NCB-DE").inbox[alert].subject == "armed suspect"
    net.advance(1)
    gone = net.store("NCB-DE").inbox[alert]
    assert (gone.subject, gone.text, gone.data, gone.state, gone.erased_ms) == (
        "", "", {}, "purged", net.now)
    assert (gone.sender, gone.kind, gone.received_ms) == ("NCB-FR", "alert", held.received_ms)
    (event,) = [e for e in net.node_events["NCB-DE"] if isinstance(e, Purged)]
    assert (event.msg_id, event.peer, event.reason) == (alert.hex(), "NCB-FR",
                                                        "retention.expired")
    assert event.detail == "alert kept 90 day(s)"
    assert de.counters["purged"] == 1 and de.next_timer() is None


def test_each_kind_keeps_its_own_period_and_kinds_without_a_rule_stay() -> None:
    net = _net()
    message = net.send("NCB-FR", ["NCB-DE"], subject="m")
    alert = net.send("NCB-FR", ["NCB-DE"], kind="alert", subject="a")
    net.settle()
    net.advance(2 * DAY)
    inbox = net.store("NCB-DE").inbox
    assert inbox[message].state == "purged" and inbox[alert].state == "new"
    for node in net.nodes.values():
        node.set_retention({"alert": 90 * DAY})
    other = net.send("NCB-FR", ["NCB-DE"], subject="kept")
    net.settle()
    net.advance(30 * DAY)
    assert net.store("NCB-DE").inbox[other].subject == "kept"  # no rule for messages now


def test_a_renewed_item_is_kept_until_its_renewal() -> None:
    net = _net()
    alert = net.send("NCB-FR", ["NCB-DE"], kind="alert")
    net.settle()
    store = net.store("NCB-DE")
    item = store.inbox[alert]
    # renewed from outside the node (i24net audit renew): the node's timer, due at the
    # kind's 90 days, finds nothing due then and looks again at the renewal
    store.inbox[alert] = replace(item, keep_until_ms=item.received_ms + 120 * DAY)
    net.advance(100 * DAY)
    assert store.inbox[alert].state == "new"
    net.advance(20 * DAY)
    assert store.inbox[alert].state == "purged"


def test_the_sender_keeps_its_own_copy_and_retention_is_per_recipient() -> None:
    net = _net()
    net.nodes["NCB-US"].set_retention({})
    alert = net.send("NCB-FR", ["NCB-DE", "NCB-US"], kind="alert")
    net.settle()
    net.advance(91 * DAY)
    assert net.store("NCB-DE").inbox[alert].state == "purged"
    assert net.store("NCB-US").inbox[alert].state == "new"
    assert net.store("NCB-FR").outbox[alert].state == "delivered"


def test_retention_periods_must_be_positive() -> None:
    net = Net()
    with pytest.raises(I24Error) as info:
        net.nodes["NCB-DE"].set_retention({"alert": 0})
    assert info.value.reason == "config.retention"


# -- deletion orders from the source -------------------------------------------------------


def _lifecycle_net() -> Net:
    net = Net()
    for node in net.nodes.values():
        install_lifecycle(node)
    return net


def _deletion(net: Net, sender: str, to: list[str], ref: bytes) -> bytes:
    return net.send(sender, to, kind="deletion-order", ref=ref, subject="delete it")


def test_the_source_orders_its_own_message_deleted_at_its_recipients() -> None:
    net = _lifecycle_net()
    mid = net.send("NCB-FR", ["NCB-DE", "NCB-US"], subject="sent in error")
    net.settle()
    order = _deletion(net, "NCB-FR", ["NCB-DE", "NCB-US"], mid)
    net.settle()
    assert net.outbox_state("NCB-FR", order) == "delivered"
    for a in ("NCB-DE", "NCB-US"):
        item = net.store(a).inbox[mid]
        assert (item.state, item.subject, item.text, item.data) == ("deleted", "", "", {})
        assert item.erased_ms == net.now


def test_only_the_source_or_the_authority_may_order_a_deletion() -> None:
    net = _lifecycle_net()
    mid = net.send("NCB-FR", ["NCB-DE", "NCB-US"], subject="not yours")
    net.settle()
    stranger = _deletion(net, "NCB-US", ["NCB-DE"], mid)  # a recipient, not the source
    beyond = _deletion(net, "NCB-FR", ["NCB-ZA"], mid)  # not one of its recipients
    net.settle()
    for order in (stranger, beyond):
        sender = "NCB-US" if order == stranger else "NCB-FR"
        entry = net.store(sender).outbox[order]
        assert (entry.state, entry.reason) == ("refused", "kind.not-allowed")
    assert net.store("NCB-DE").inbox[mid].state == "new"
    assert net.store("NCB-DE").inbox[mid].subject == "not yours"


def test_an_order_that_overtakes_the_item_applies_when_the_item_arrives() -> None:
    """The item's first delivery to a node is lost, its deletion order arrives first: the
    node remembers the order and erases the item when the sender's retry brings it."""
    net = _lifecycle_net()
    mid = net.send("NCB-FR", ["NCB-DE"], subject="late")
    lost: list[bytes] = []

    def lose_the_first_copy(topic: str, payload: bytes) -> int:
        if topic.endswith("/inbox/NCB-DE") and not lost:
            frame = fr.parse_frame(payload)
            if frame.magic == fr.DELIVERY and fr.Stamp.from_doc(frame.doc).msg_id == mid:
                lost.append(payload)
                return 0
        return 1

    net.fault = lose_the_first_copy
    net.pump()
    assert lost and mid not in net.store("NCB-DE").inbox
    order = _deletion(net, "NCB-FR", ["NCB-DE"], mid)
    net.pump()
    assert net.outbox_state("NCB-FR", order) == "delivered"
    net.settle()  # NCB-FR retries the message; it arrives after its deletion order
    item = net.store("NCB-DE").inbox[mid]
    assert (item.state, item.subject) == ("deleted", "")
