"""Drill: a revoked or rotated key. NCB-BR's keys were stolen; the GS issues directory
version 2 revoking NCB-BR, and version 3 rotating NCB-FR's key. The thief keeps using the
old keys (and an old directory of its own).

From the version that revokes it, a revoked agency is neither a sender (``sender.revoked``)
nor a recipient (``recipient.revoked`` by name; groups leave it out), and its receipts are
dropped; an old signing key is ``sig.unknown-key`` (docs/protocol.md 7.2). Nodes apply the same rule
to what a router stamped.
"""

from __future__ import annotations

from attackkit import at_node, at_router, kinds, legit_message_flows, rogue_delivery
from netfixtures import T0, Net, build, keys_for, parsed

from i24net.core import frames as fr
from i24net.core.directory import Directory
from i24net.core.node import NodeMachine


def adopt(net: Net, d: Directory) -> None:
    net.directory = d
    net.router.set_directory(d)
    for node in net.nodes.values():
        node.set_directory(d)


def test_revoked_sender_recipient_and_receipts() -> None:
    net = Net()
    v1 = net.directory
    before = net.send("NCB-FR", ["NCB-BR"])  # sent and accepted before the revocation
    held: list[bytes] = []

    def hold_br(topic: str, payload: bytes) -> int:
        if topic.endswith("/submit/NCB-BR"):
            held.append(payload)
            return 0
        return 1

    net.fault = hold_br
    net.pump()  # NCB-BR got it; its receipt is held back
    receipt = [p for p in held if fr.peek_magic(p) == fr.RECEIPT]
    net.fault = None
    adopt(net, v1.revoke("NCB-BR", T0))

    # the thief (NCB-BR's keys, directory version 1) sends
    thief = build("NCB-BR", ["NCB-DE"], d=v1, lab="OFFICIAL-USE")
    assert kinds(at_router(net, "NCB-BR", thief)) == [("refuse", "sender.revoked")]
    # its receipt for the earlier message is not forwarded
    assert kinds(at_router(net, "NCB-BR", receipt[0])) == [("drop", "sender.revoked")]
    assert net.router.counters["refuse.sender.revoked"] == 1
    assert net.router.counters["drop.sender.revoked"] == 1
    # a router that stamped the thief's message anyway: the node refuses it too
    assert kinds(at_node(net, "NCB-DE", rogue_delivery(net, thief, "NCB-DE"))) == [
        ("drop", "sender.revoked")]
    assert net.nodes["NCB-DE"].counters["drop.sender.revoked"] == 1
    # nobody sends to the revoked agency any more
    named = net.send("NCB-FR", ["NCB-BR", "NCB-US"])
    group = net.send("NCB-FR", ["@AMERICAS"])
    net.settle()
    assert net.store("NCB-FR").outbox[named].reason == "recipient.revoked"
    assert net.holders(named) == set()
    assert net.holders(group) == {"NCB-US"}  # the group expands without NCB-BR
    assert net.outbox_state("NCB-FR", before) != "delivered"  # NCB-BR's receipt never came
    legit_message_flows(net)


def test_old_key_after_rotation_is_unknown() -> None:
    net = Net()
    old = build("NCB-FR", ["NCB-DE"])  # signed with the key about to be replaced
    new_fr = keys_for("NCB-FR", 1)
    v2 = net.directory.rotate("NCB-FR", new_fr.public(), T0)
    adopt(net, v2)
    assert kinds(at_router(net, "NCB-FR", old)) == [("refuse", "sig.unknown-key")]
    assert net.router.counters == {"refuse.sig.unknown-key": 1}
    assert kinds(at_node(net, "NCB-DE", rogue_delivery(net, old, "NCB-DE"))) == [
        ("drop", "sig.unknown-key")]
    assert net.nodes["NCB-DE"].counters == {"drop.sig.unknown-key": 1}
    assert net.inbox("NCB-DE") == set()
    # NCB-FR's node restarts with its new keys on the same store and works
    node = net.nodes["NCB-FR"]
    net.nodes["NCB-FR"] = NodeMachine("NCB-FR", new_fr, v2, node.store,
                                      random_bytes=node.random_bytes)
    mid = legit_message_flows(net)
    assert parsed(net.store("NCB-FR").outbox[mid].raw).header.key_id \
        == v2.agency("NCB-FR").key_id
