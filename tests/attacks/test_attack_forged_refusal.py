"""Drill: cancelling someone else's message with a forged refusal. An attacker who holds
NCB-FR's broker password (an insider, a stolen config) cannot sign as NCB-FR, but can
publish on its submit topic: it sends garbage under the id of NCB-FR's real message, whose
own submission the broker lost. The router refuses the garbage (``sig.invalid``) and signs a
report of that refusal to NCB-FR, naming the garbage's digest.

Where it is caught (docs/protocol.md, reports): a node takes a report or a receipt as the
answer to its message only if it names that message's digest, so the forged refusal is
dropped (``report.digest``), the message stays queued, is retried on its schedule and
delivered.
"""

from __future__ import annotations

from attackkit import at_node, at_router, flip, join, kinds, split
from netfixtures import MINUTE, Net

from i24net.core.frames import REPORT, parse_frame


def test_a_refusal_of_garbage_under_a_real_id_does_not_cancel_the_message() -> None:
    net = Net()
    mid = net.send("NCB-FR", ["NCB-DE"])
    raw = net.store("NCB-FR").outbox[mid].raw
    assert net.nodes["NCB-FR"].pop(limit=10)  # the real submission, lost by the broker
    header, wraps, ciphertext, sig = split(raw)
    forged = join(header, wraps, ciphertext, flip(sig), like=raw)
    assert kinds(at_router(net, "NCB-FR", forged)) == [("refuse", "sig.invalid")]
    reports = [p for t, p, _ in net.router.pop(net.now, limit=10)
               if t.endswith("/inbox/NCB-FR") and parse_frame(p).magic == REPORT]
    assert len(reports) == 1  # the router did answer, about the forged bytes
    assert kinds(at_node(net, "NCB-FR", reports[0])) == [("drop", "report.digest")]
    entry = net.store("NCB-FR").outbox[mid]
    assert (entry.state, entry.reason) == ("queued", "")
    net.advance(MINUTE)  # the retry
    net.settle()
    assert net.outbox_state("NCB-FR", mid) == "delivered"
    assert net.holders(mid) == {"NCB-DE"}

