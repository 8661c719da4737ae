"""Drill: a rogue router (a stolen router key, or GS staff abusing the router: RPD Art. 22(6)
says the GS secures the exchanges but must not access their content).

A router key can stamp anything, so nodes do not take a stamp as proof of anything but
routing: they re-verify the sender's signature, open the envelope only with their own key,
and re-check freshness, their clearance, the addressing and - for the kinds that change what
a node holds (``notice-cancel``, ``deletion-order``...) - that the sender is a notice
authority. Stamping forged, tampered, uncleared, expired, mis-addressed or revoked-sender
envelopes is drilled in the other modules (``rogue_delivery``); here: what only a router can
do - withdraw someone's data through an NCB, and send a sequence number that would make a
node enumerate 2**63 missing numbers.
"""

from __future__ import annotations

import time

import pytest
from attackkit import at_node, kinds, legit_message_flows, rogue_delivery
from netfixtures import ROUTER, Net, build, kid, parsed, stamp_delivery

from i24net.core import frames as fr
from i24net.core.lifecycle import install_lifecycle
from i24net.core.policy import AUTHORITY_KINDS, complete_addressing


@pytest.mark.parametrize("kind", sorted(AUTHORITY_KINDS))
def test_node_refuses_authority_kinds_from_a_non_authority_even_when_stamped(kind: str) -> None:
    """NCB-FR orders NCB-DE to delete NCB-US's diffusion; the router refuses
    (``kind.not-allowed``); a rogue router stamps it anyway; NCB-DE refuses it too."""
    net = Net()
    for node in net.nodes.values():
        install_lifecycle(node)  # the holder hook that would apply a withdrawal
    to = complete_addressing("diffusion", ["NCB-DE"], "NCB-US", net.directory)
    victim = net.send("NCB-US", to, kind="diffusion", lab="OFFICIAL-USE")
    net.settle()
    assert net.holders(victim) == {"NCB-DE", "GS-LYON"}
    order = build("NCB-FR", ["NCB-DE"], kind=kind, lab="OFFICIAL-USE", ref=victim,
                  now=net.now)
    assert net.router.handle(f"{net.directory.prefix}/submit/NCB-FR", order, net.now)[0] \
        .reason == "kind.not-allowed"
    events = at_node(net, "NCB-DE", rogue_delivery(net, order, "NCB-DE"))
    assert kinds(events) == [("refused-in", "kind.not-allowed")]
    assert net.nodes["NCB-DE"].counters["refuse.kind.not-allowed"] == 1
    item = net.store("NCB-DE").inbox[victim]
    assert item.state == "new"  # not cancelled, not deleted
    assert parsed(order).header.id not in net.inbox("NCB-DE")
    net.pump()
    legit_message_flows(net, lab="OFFICIAL-USE")


def test_the_genuine_authority_can_still_withdraw() -> None:
    net = Net()
    for node in net.nodes.values():
        install_lifecycle(node)
    to = complete_addressing("diffusion", ["NCB-DE"], "NCB-US", net.directory)
    victim = net.send("NCB-US", to, kind="diffusion", lab="OFFICIAL-USE")
    net.settle()
    order = net.send("GS-LYON", ["NCB-DE"], kind="deletion-order", lab="OFFICIAL-USE",
                     ref=victim)
    net.settle()
    assert order in net.inbox("NCB-DE")
    assert net.store("NCB-DE").inbox[victim].state == "deleted"


def test_a_huge_sequence_number_does_not_hang_the_node() -> None:
    """Before the fix, ``_track_seq`` enumerated every number up to the stamped one."""
    net = Net()
    de = net.nodes["NCB-DE"]
    raw = build("NCB-FR", ["NCB-DE"], now=net.now)
    started = time.perf_counter()
    events = at_node(net, "NCB-DE", stamp_delivery(raw, "NCB-DE", (1 << 63) - 1, now=net.now))
    assert time.perf_counter() - started < 1.0
    assert kinds(events) == [("received", "")]  # the stamp and envelope are genuine
    last, missing = de.store.seq_get(kid(ROUTER))
    assert last == (1 << 63) - 1 and len(missing) == fr.MAX_GAP
    # the gap request it sends asks for at most MAX_GAP numbers
    de.pop()
    net.advance(2_000)
    gaps = [e.detail.removeprefix("asked for ").split("-") for e in net.events("NCB-DE", "gap")]
    assert gaps and all(int(b) - int(a) < fr.MAX_GAP for a, b in gaps)
    legit_message_flows(net)
