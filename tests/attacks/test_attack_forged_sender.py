"""Drill: a forged sender. Someone (an insider agency, or an outsider with stolen broker
credentials) sends a message that claims to come from NCB-FR.

The claim is the header's ``from``; only NCB-FR's Ed25519 key can sign for it, and the router
and every recipient verify that signature over the received bytes with the key the directory
lists (docs/protocol.md 7.2, docs/security.md 4.1). Covered elsewhere, not repeated: every
header field's tampering
(tests/core/test_envelope.py), the policy table (tests/core/test_policy.py).
"""

from __future__ import annotations

import pytest
from attackkit import at_node, at_router, counted, kinds, legit_message_flows, rogue_delivery
from netfixtures import Net, header, keys_for, kid, parsed, raw_header, seal_header

from i24net.core import frames as fr
from i24net.core.keys import AgencyKeys


def impostor(owner: str, claimed: str) -> AgencyKeys:
    """``owner``'s private keys presented as ``claimed``'s (what a forger has)."""
    kk = keys_for(owner)
    return AgencyKeys(claimed, kk.signing_seed, kk.encryption_secret)


def forged_by_de(to: list[str]) -> bytes:
    """NCB-DE signs a header that names NCB-FR as sender and NCB-FR's key id."""
    return seal_header(header("NCB-FR", to), signer=impostor("NCB-DE", "NCB-FR"))


@pytest.mark.parametrize("topic_of", ["NCB-FR", "NCB-DE"],
                         ids=["on-the-victims-topic", "on-the-forgers-topic"])
def test_envelope_signed_by_another_agency_is_refused(topic_of: str) -> None:
    net = Net()
    raw = forged_by_de(["NCB-US"])
    events = at_router(net, topic_of, raw)
    # the signature is checked before the topic: sig.invalid either way
    assert kinds(events) == [("refuse", "sig.invalid")]
    assert net.router.counters == {"refuse.sig.invalid": 1}
    net.pump()
    assert net.inbox("NCB-US") == set()
    # the refusal report went to the topic's owner, whose node never sent it: dropped there
    assert net.nodes[topic_of].counters == {"drop.report.unknown": 1}
    legit_message_flows(net)


def test_forger_naming_its_own_key_id_is_refused_as_unknown_key() -> None:
    net = Net()
    h = raw_header("NCB-FR", ["NCB-US"], ["NCB-US"], key_id=kid(keys_for("NCB-DE")))
    raw = seal_header(h, signer=impostor("NCB-DE", "NCB-FR"))
    assert kinds(at_router(net, "NCB-FR", raw)) == [("refuse", "sig.unknown-key")]
    assert net.router.counters == {"refuse.sig.unknown-key": 1}
    legit_message_flows(net)


def test_sender_the_directory_does_not_know_is_refused() -> None:
    net = Net()
    raw = seal_header(raw_header("NCB-XX", ["NCB-US"], ["NCB-US"]),
                      signer=keys_for("NCB-XX"))
    assert kinds(at_router(net, "NCB-XX", raw)) == [("refuse", "sender.unknown")]
    assert net.router.counters == {"refuse.sender.unknown": 1}
    (topic, report, _), = net.router.pop(net.now)  # the only output: the refusal report
    assert topic.endswith("/inbox/NCB-XX")
    assert fr.verify_report(fr.parse_frame(report), net.directory).reason == "sender.unknown"
    legit_message_flows(net)


def test_node_drops_a_forgery_even_when_the_router_stamped_it() -> None:
    """A mistaken (or compromised) router stamps the forgery: NCB-US re-verifies."""
    net = Net()
    events = at_node(net, "NCB-US", rogue_delivery(net, forged_by_de(["NCB-US"]), "NCB-US"))
    assert kinds(events) == [("drop", "sig.invalid")]
    assert net.nodes["NCB-US"].counters == {"drop.sig.invalid": 1}
    assert net.inbox("NCB-US") == set()
    assert net.nodes["NCB-US"].pending() == 0  # no receipt for a forgery
    legit_message_flows(net, "NCB-FR", "NCB-US")


def test_forged_receipt_does_not_complete_the_senders_message() -> None:
    """NCB-JP forges NCB-DE's 'delivered' receipt for a message NCB-DE never got."""
    net = Net()
    net.fault = lambda topic, payload: 0 if topic.endswith("/inbox/NCB-DE") else 1
    mid = net.send("NCB-FR", ["NCB-DE"])
    net.pump()
    env = parsed(net.store("NCB-FR").outbox[mid].raw)
    forged = fr.make_receipt(fr.Receipt(mid, env.digest, "NCB-FR", "NCB-DE", "delivered", "",
                                        net.now), impostor("NCB-JP", "NCB-DE"))
    # through the router (on NCB-DE's topic, or the forger's own) ...
    assert kinds(at_router(net, "NCB-DE", forged)) == [("drop", "sig.invalid")]
    assert kinds(at_router(net, "NCB-JP", forged)) == [("drop", "sig.invalid")]
    assert net.router.counters["drop.sig.invalid"] == 2
    # ... or straight onto the sender's inbox (an open broker)
    assert kinds(at_node(net, "NCB-FR", forged)) == [("drop", "sig.invalid")]
    assert net.nodes["NCB-FR"].counters["drop.sig.invalid"] == 1
    assert net.outbox_state("NCB-FR", mid) == "accepted"  # not delivered
    net.fault = None
    net.settle()  # the sender's retries reach NCB-DE for real
    assert net.outbox_state("NCB-FR", mid) == "delivered"
    assert counted(net.router.counters, "refuse.") == 0
    legit_message_flows(net)
