"""Drill: garbage on every topic. An outsider on an open broker (or a broker gone wrong)
publishes random bytes, and valid frames, on every topic name it can think of: other
agencies' topics, the directory and presence topics, malformed topic names, wildcards.

The router acts only on ``<prefix>/submit/<AGENCY>`` and a node only on its own inbox; the
rest is dropped as ``topic.unexpected`` and counted (``drop.topic``). Random bytes on the
topics they do own are dropped or, if they happen to parse, refused - never acted on. The
broker ACLs (tests/broker/test_isolation.py, test_attack_broker.py) make this the second
line of defence, not the first.
"""

from __future__ import annotations

import random

import pytest
from attackkit import counted, legit_message_flows
from netfixtures import DEMO_AGENCIES, Net, build, stamp_delivery

PREFIX = "i24/v1"
FOREIGN_TOPICS = [
    f"{PREFIX}/directory", f"{PREFIX}/presence/NCB-FR", f"{PREFIX}/inbox/NCB-FR",
    f"{PREFIX}/submit/", f"{PREFIX}/submit/NCB-FR/extra", f"{PREFIX}/submit",
    "other/v1/submit/NCB-FR", f"{PREFIX}/#", "#", "+", "$SYS/broker",
    "", "/", f"/{PREFIX}/submit/NCB-FR", f"{PREFIX.upper()}/submit/NCB-FR", "x" * 65_535,
]
# Shaped like a submit topic but naming no agency that signed the envelope (a broker refuses
# to route the wildcard and NUL ones at all): the router refuses the envelope.
ODD_SUBMIT_TOPICS = [f"{PREFIX}/submit/{a}" for a in
                     ("+", "#", "NCB-FR\x00", "NCB-FR ", "ncb-fr", "NCB-XX", "\u00e9")]


def junk(rng: random.Random, n: int) -> list[bytes]:
    magics = [b"", b"\x94\xa4i24e\x01", b"\x95\xa4i24d\x02", b"\x94\xa4i24s\x02",
              b"\x94\xa4i24r\x02", b"\x94\xa4i24g\x02", b"\x92", b"\xdc\xff\xff"]
    return [rng.choice(magics) + rng.randbytes(rng.randrange(0, 400)) for _ in range(n)]


def test_router_ignores_every_topic_it_does_not_own() -> None:
    net = Net()
    raw = build("NCB-FR", ["NCB-DE"])
    for topic in FOREIGN_TOPICS:
        events = net.router.handle(topic, raw, net.now)
        assert [(e.kind, e.reason) for e in events] == [("drop", "topic.unexpected")], topic
    assert net.router.counters == {"drop.topic": len(FOREIGN_TOPICS)}
    assert net.router.pop(net.now) == []
    for topic in ODD_SUBMIT_TOPICS:
        events = net.router.handle(topic, raw, net.now)
        assert [(e.kind, e.reason) for e in events] == [("refuse", "sender.topic")], topic
    assert net.router.counters["refuse.sender.topic"] == len(ODD_SUBMIT_TOPICS)
    assert "accept" not in net.router.counters
    net.router.pop(net.now, limit=100)  # refusal reports to those (unowned) inboxes
    legit_message_flows(net)


def test_nodes_ignore_every_topic_but_their_inbox() -> None:
    net = Net()
    raw = build("NCB-FR", ["NCB-DE"])
    delivery = stamp_delivery(raw, "NCB-DE", 1)
    topics = [*FOREIGN_TOPICS, f"{PREFIX}/submit/NCB-DE", f"{PREFIX}/inbox/NCB-US",
              f"{PREFIX}/inbox/NCB-DE/x", f"{PREFIX}/inbox/+"]
    for topic in topics:
        events = net.nodes["NCB-DE"].handle(topic, delivery, net.now)
        assert [(e.kind, e.reason) for e in events] == [("drop", "topic.unexpected")], topic
    assert net.nodes["NCB-DE"].counters == {"drop.topic": len(topics)}
    assert net.inbox("NCB-DE") == set() and net.nodes["NCB-DE"].pending() == 0
    legit_message_flows(net)


@pytest.mark.parametrize("seed", range(3))
def test_random_bytes_on_every_owned_topic_are_never_acted_on(seed: int) -> None:
    rng = random.Random(seed)
    net = Net()
    sent = 0
    events = 0
    for agency in DEMO_AGENCIES:
        for payload in junk(rng, 40):
            r = net.router.handle(f"{PREFIX}/submit/{agency}", payload, net.now)
            n = net.nodes[agency].handle(f"{PREFIX}/inbox/{agency}", payload, net.now)
            # no event: a drop beyond the audit bound of the agency's window
            assert [e.kind for e in r] in ([], ["drop"], ["refuse"]), payload[:20]
            assert [e.kind for e in n] == ["drop"], payload[:20]
            sent += 1
            events += len(r)
    r_counted = counted(net.router.counters, "drop.") + counted(net.router.counters, "refuse.")
    assert r_counted == sent
    summaries = net.router.close_drop_windows(net.now)
    assert events + sum(e.count for e in summaries) == sent
    assert sum(counted(n.counters, "drop.") for n in net.nodes.values()) == sent
    assert not any(net.inbox(a) for a in DEMO_AGENCIES)
    # only refusal reports may come out (for bytes that happened to parse as an envelope)
    from i24net.core import frames as fr
    assert all(fr.peek_magic(p) == fr.REPORT for _, p, _ in net.router.pop(net.now, 10_000))
    net.wire.clear()
    for a in ("NCB-DE", "NCB-US", "GS-LYON"):
        legit_message_flows(net, "NCB-FR", a)
