"""Drill: sending to an uncleared recipient (no read up), or above one's own clearance.

NCB-ZA is cleared OFFICIAL-USE; NCB-US holds CONFIDENTIAL without the EU caveat. The router
refuses the whole message, naming who is not cleared (``clearance.recipient``); a node
re-checks its own clearance whatever the router stamped (tests/core/test_node.py covers
that re-check; here it runs end to end). A sender may not label above its own clearance
(``clearance.sender``).
"""

from __future__ import annotations

import pytest
from attackkit import at_node, kinds, legit_message_flows, rogue_delivery
from netfixtures import Net, build

from i24net.core import frames as fr


@pytest.mark.parametrize(("to", "lab", "uncleared"), [
    (["NCB-ZA"], "CONFIDENTIAL", ("NCB-ZA",)),
    (["NCB-DE", "NCB-US"], "RESTRICTED//EU", ("NCB-US",)),       # the caveat is missing
    (["@ALL"], "CONFIDENTIAL", ("NCB-BR", "NCB-JP", "NCB-ZA")),  # a group hides nobody
])
def test_uncleared_recipient_is_refused_and_nothing_is_delivered(
        to: list[str], lab: str, uncleared: tuple[str, ...]) -> None:
    net = Net()
    mid = net.send("NCB-FR", to, lab=lab)
    net.pump()
    entry = net.store("NCB-FR").outbox[mid]
    assert (entry.state, entry.reason) == ("refused", "clearance.recipient")
    assert net.router.counters == {"refuse.clearance.recipient": 1}
    (refusal,) = [e for e in net.router_events if e.kind == "refuse"]
    assert refusal.recipients == uncleared
    assert net.holders(mid) == set()  # not even the cleared ones: all or nothing
    legit_message_flows(net)


def test_uncleared_node_refuses_what_a_router_stamped_anyway() -> None:
    net = Net()
    raw = build("NCB-FR", ["NCB-ZA"], lab="CONFIDENTIAL")
    events = at_node(net, "NCB-ZA", rogue_delivery(net, raw, "NCB-ZA"))
    assert kinds(events) == [("refused-in", "clearance.recipient")]
    assert net.nodes["NCB-ZA"].counters == {"refuse.clearance.recipient": 1}
    assert net.inbox("NCB-ZA") == set()
    (_, receipt, _), = net.nodes["NCB-ZA"].pop()
    rec = fr.verify_receipt(fr.parse_frame(receipt), net.directory)
    assert (rec.status, rec.reason) == ("refused", "clearance.recipient")
    legit_message_flows(net, "NCB-FR", "NCB-ZA")


def test_sender_labelling_above_its_clearance_is_refused() -> None:
    net = Net()
    mid = net.send("NCB-ZA", ["GS-LYON"], lab="CONFIDENTIAL")
    net.pump()
    assert net.store("NCB-ZA").outbox[mid].reason == "clearance.sender"
    assert net.router.counters == {"refuse.clearance.sender": 1}
    assert net.holders(mid) == set()
    legit_message_flows(net, "NCB-ZA", "GS-LYON")
