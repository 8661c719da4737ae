"""Drill: expired messages. A broker (or an attacker who recorded traffic) holds a message
back and releases it after its expiry, or a sender asks for a lifetime longer than its kind
allows so that the router must remember the id for years.

Router: ``time.expired`` past ``expires + max_skew_ms``, ``time.ttl`` beyond 30 days (5 years
for notices). Node: ``time.expired`` in a refused receipt, whatever the router stamped.
"""

from __future__ import annotations

from attackkit import at_node, at_router, kinds, legit_message_flows, rogue_delivery
from netfixtures import DAY, HOUR, MINUTE, Net, build

from i24net.core import frames as fr
from i24net.core.policy import MESSAGE_TTL_MS


def test_message_released_after_expiry_is_refused_by_the_router() -> None:
    net = Net()
    raw = build("NCB-FR", ["NCB-DE"], now=net.now, ttl=10 * MINUTE)
    net.advance(10 * MINUTE + net.directory.max_skew_ms + 1)
    assert kinds(at_router(net, "NCB-FR", raw)) == [("refuse", "time.expired")]
    assert net.router.counters == {"refuse.time.expired": 1}
    net.pump()
    assert net.inbox("NCB-DE") == set()
    legit_message_flows(net)


def test_lifetime_beyond_what_the_kind_allows_is_refused() -> None:
    net = Net()
    raw = build("NCB-FR", ["NCB-DE"], now=net.now, ttl=MESSAGE_TTL_MS + 1)
    assert kinds(at_router(net, "NCB-FR", raw)) == [("refuse", "time.ttl")]
    assert net.router.counters == {"refuse.time.ttl": 1}
    legit_message_flows(net)


def test_node_refuses_an_expired_delivery_whatever_the_router_stamped() -> None:
    net = Net()
    raw = build("NCB-FR", ["NCB-DE"], now=net.now, ttl=HOUR)
    net.advance(DAY)
    events = at_node(net, "NCB-DE", rogue_delivery(net, raw, "NCB-DE"))
    assert kinds(events) == [("refused-in", "time.expired")]
    assert net.nodes["NCB-DE"].counters == {"refuse.time.expired": 1}
    (_, receipt, _), = net.nodes["NCB-DE"].pop()
    rec = fr.verify_receipt(fr.parse_frame(receipt), net.directory)
    assert (rec.status, rec.reason) == ("refused", "time.expired")
    assert net.inbox("NCB-DE") == set()
    legit_message_flows(net)


def test_sender_gives_up_at_expiry_when_the_router_never_answers() -> None:
    """The network drops everything NCB-FR sends: its outbox expires the entry."""
    net = Net()
    net.fault = lambda topic, _: 0 if topic.endswith("/submit/NCB-FR") else 1
    mid = net.send("NCB-FR", ["NCB-DE"], ttl=10 * MINUTE)
    net.settle()
    entry = net.store("NCB-FR").outbox[mid]
    assert (entry.state, entry.reason) == ("expired", "time.expired")
    assert net.nodes["NCB-FR"].counters["expired"] == 1
    net.fault = None
    legit_message_flows(net)
