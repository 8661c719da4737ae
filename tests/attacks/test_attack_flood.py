"""Drill: one agency floods the router. NCB-BR (compromised, or just broken) submits 5,000
messages in one second; NCB-FR's message in the middle of it must still go out promptly.

The router keeps a token bucket per sender (``router.RateLimit``: 200 messages at once, then
100 a second, configurable). Beyond it an envelope is refused with ``rate.limited`` before its
signature is checked, its report says so and goes behind every delivery
(``LIMITED_PRIORITY``), and the sender's node keeps the message and retries it later
(backpressure, not loss). So a flooder can put at most ``capacity`` messages (plus the
refill) ahead of anyone else's in the router's queue.

``rate.limited`` is not a decision of ``policy.decide`` (it is router state, not a property
of one message): its refused and accepted cases are here, and tests/core/test_policy.py
lists it as coming from elsewhere.
"""

from __future__ import annotations

import functools

import pytest
from attackkit import kinds, legit_message_flows
from netfixtures import (
    ROUTER,
    SECOND,
    T0,
    Net,
    build,
    demo_directory,
    inbox_topic,
    keys_for,
    parsed,
    submit_topic,
)

from i24net.core import frames as fr
from i24net.core.errors import ConfigError
from i24net.core.labels import Precedence
from i24net.core.policy import REASONS, TRANSIENT_REASONS
from i24net.core.router import (
    DEFAULT_RATE_LIMIT,
    LIMITED_PRIORITY,
    MemoryRouterStore,
    RateLimit,
    RouterMachine,
)

D = demo_directory()
FLOOD = 5_000
FLOOD_MS = 1_000  # the flood arrives over one virtual second: 5 envelopes per ms
PUBLISH_PER_MS = 2  # the router's publishing capacity in the latency model: 2,000 frames/s


@functools.cache
def flood() -> tuple[bytes, ...]:
    """NCB-BR's 5,000 distinct ROUTINE messages to NCB-JP (sealed once per test run)."""
    return tuple(build("NCB-BR", ["NCB-JP"], lab="OFFICIAL-USE") for _ in range(FLOOD))


def router(limit: RateLimit | None = DEFAULT_RATE_LIMIT) -> RouterMachine:
    return RouterMachine(D, ROUTER, MemoryRouterStore(), rate_limit=limit)


def reports_to(out: list[tuple[str, bytes, int]], agency: str) -> list[fr.Report]:
    return [fr.verify_report(fr.parse_frame(p), D) for t, p, _ in out
            if t == inbox_topic(agency) and fr.peek_magic(p) == fr.REPORT]


# -- the bucket ---------------------------------------------------------------------------------

def test_default_limit() -> None:
    assert (DEFAULT_RATE_LIMIT.capacity, DEFAULT_RATE_LIMIT.per_second) == (200, 100)
    assert "rate.limited" in REASONS and "rate.limited" in TRANSIENT_REASONS
    assert router().rate_limit == DEFAULT_RATE_LIMIT


def test_a_burst_beyond_the_bucket_is_refused_rate_limited() -> None:
    r = router()
    events = [e for raw in flood()[:250] for e in r.handle(submit_topic("NCB-BR"), raw, T0)]
    assert [e.kind for e in events] == ["accept"] * 200 + ["refuse"] * 50
    assert {e.reason for e in events[200:]} == {"rate.limited"}
    assert events[200].recipients == ("NCB-BR",)  # the agency at fault
    assert r.counters == {"accept": 200, "refuse.rate.limited": 50}
    out = list(r.drain(T0))
    reps = reports_to(out, "NCB-BR")
    assert [rep.accepted for rep in reps].count(False) == 50
    refused = [rep for rep in reps if not rep.accepted]
    assert {rep.reason for rep in refused} == {"rate.limited"}
    assert "retries later" in refused[0].message
    assert {rep.msg_id for rep in refused} == {parsed(x).header.id for x in flood()[200:250]}
    # the refusals were the last thing published: behind every delivery
    assert all(prio == LIMITED_PRIORITY for t, p, prio in out[-50:])
    assert r.store.prior(parsed(flood()[200]).header.id) is None  # nothing recorded


def test_the_bucket_refills_at_its_rate_and_no_further() -> None:
    """The accepted counterpart: after a pause the sender is admitted again."""
    r = router(RateLimit(capacity=3, per_second=2))
    send = [raw for raw in flood()[:20]]
    outcome = [e.kind for raw in send[:4] for e in r.handle(submit_topic("NCB-BR"), raw, T0)]
    assert outcome == ["accept"] * 3 + ["refuse"]
    at = T0 + SECOND  # two tokens back
    outcome = [e.kind for raw in send[4:7] for e in r.handle(submit_topic("NCB-BR"), raw, at)]
    assert outcome == ["accept", "accept", "refuse"]
    at += 60 * SECOND  # a long pause fills the bucket to its capacity, not beyond
    outcome = [e.kind for raw in send[7:11] for e in r.handle(submit_topic("NCB-BR"), raw, at)]
    assert outcome == ["accept"] * 3 + ["refuse"]
    # a retry of a refused message is admitted once tokens are back
    assert kinds(r.handle(submit_topic("NCB-BR"), send[3], at + SECOND)) == [("accept", "ok")]


def test_buckets_are_per_sender_and_keyed_by_topic() -> None:
    r = router(RateLimit(capacity=2, per_second=0))
    for raw in flood()[:3]:
        r.handle(submit_topic("NCB-BR"), raw, T0)
    assert r.counters["refuse.rate.limited"] == 1
    assert kinds(r.handle(submit_topic("NCB-FR"), build("NCB-FR", ["NCB-DE"]), T0)) == [
        ("accept", "ok")]
    # NCB-BR's bucket is spent whatever it submits, even a message signed by someone else
    events = r.handle(submit_topic("NCB-BR"), build("NCB-FR", ["NCB-DE"]), T0)
    assert kinds(events) == [("refuse", "rate.limited")]


def test_gap_requests_take_tokens_receipts_do_not() -> None:
    r = router(RateLimit(capacity=1, per_second=0))
    raw = build("NCB-FR", ["NCB-DE"])
    assert kinds(r.handle(submit_topic("NCB-FR"), raw, T0)) == [("accept", "ok")]
    r.drain(T0)
    list(r.drain(T0))
    gap = fr.make_gap(fr.GapRequest("NCB-DE", 1, 1, T0), keys_for("NCB-DE"))
    assert kinds(r.handle(submit_topic("NCB-DE"), gap, T0)) == [("resend", "")]
    assert kinds(r.handle(submit_topic("NCB-DE"), gap, T0)) == [("drop", "rate.limited")]
    assert r.counters["drop.rate.limited"] == 1
    env = parsed(raw)
    receipt = fr.make_receipt(fr.Receipt(env.header.id, env.digest, "NCB-FR", "NCB-DE",
                                         "delivered", "", T0), keys_for("NCB-DE"))
    assert kinds(r.handle(submit_topic("NCB-DE"), receipt, T0)) == [("receipt", "delivered")]


def test_topics_of_unknown_agencies_share_one_bucket() -> None:
    """Bounded memory: an open broker lets anyone invent submit topics."""
    r = router(RateLimit(capacity=5, per_second=0))
    raw = flood()[0]
    for i in range(50):
        r.handle(submit_topic(f"NCB-X{i}"), raw, T0)
    assert r.rate_buckets == {""}
    assert r.counters["refuse.rate.limited"] == 45
    assert r.counters["refuse.sender.topic"] == 5


def test_configuration() -> None:
    for bad in ({"capacity": 0}, {"per_second": -1}):
        with pytest.raises(ConfigError):
            RateLimit(**bad)  # type: ignore[arg-type]
    r = router(None)  # no limit at all
    for raw in flood()[:300]:
        r.handle(submit_topic("NCB-BR"), raw, T0)
    assert r.counters == {"accept": 300}


# -- the flood ----------------------------------------------------------------------------------

def simulate(limit: RateLimit | None) -> dict[str, object]:
    """NCB-BR's 5,000 envelopes arrive over one second (5 per ms) and NCB-FR's one halfway;
    each ms the router handles what arrived, then publishes at most PUBLISH_PER_MS frames
    (a publisher of 2,000 frames/s, below the flood's 10,000 frames/s unlimited). Returns
    when NCB-FR's delivery and report left, and what happened to NCB-BR's flood."""
    r = router(limit)
    probe = build("NCB-FR", ["NCB-DE"], lab="OFFICIAL-USE", precedence=Precedence.ROUTINE)
    probe_at = FLOOD_MS // 2
    per_ms = FLOOD // FLOOD_MS
    published: list[tuple[int, str, bytes]] = []
    ms = 0
    delivered_at = reported_at = None
    while delivered_at is None or reported_at is None or ms < FLOOD_MS:
        now = T0 + ms
        for raw in flood()[ms * per_ms:(ms + 1) * per_ms]:
            r.handle(submit_topic("NCB-BR"), raw, now)
        if ms == probe_at:
            assert kinds(r.handle(submit_topic("NCB-FR"), probe, now)) == [("accept", "ok")]
            # queue position: frames that will leave before the probe's delivery (lower
            # priority value, or the same and queued earlier), minus the probe's own report
            ahead = r.pending(int(Precedence.ROUTINE)) - 2
        for topic, payload, _ in r.pop(now, limit=PUBLISH_PER_MS):
            published.append((ms, topic, payload))
            if topic == inbox_topic("NCB-DE"):
                delivered_at = ms
            elif topic == inbox_topic("NCB-FR"):
                reported_at = ms
        ms += 1
        assert ms < 60_000, "the probe never left the router"
    return {"delivery_ms": delivered_at - probe_at, "report_ms": reported_at - probe_at,
            "queued_ahead": ahead, "counters": dict(r.counters)}


@pytest.mark.timeout(120)
def test_flood_of_5000_does_not_delay_another_agencys_message() -> None:
    limited = simulate(DEFAULT_RATE_LIMIT)
    unlimited = simulate(None)
    print(f"\nflood: NCB-FR's delivery {limited['delivery_ms']} ms after arrival with the "
          f"limit ({limited['queued_ahead']} frames queued ahead of it), "
          f"{unlimited['delivery_ms']} ms without ({unlimited['queued_ahead']} ahead)")
    # with the limit the probe leaves at once; without it, it waits behind the flood
    assert limited["delivery_ms"] <= 5 and limited["report_ms"] <= 5  # type: ignore[operator]
    assert unlimited["delivery_ms"] >= 1_000  # type: ignore[operator]
    assert limited["queued_ahead"] <= 2 * (200 + 100)  # type: ignore[operator]
    assert unlimited["queued_ahead"] >= 4_000  # type: ignore[operator]
    # beyond the bucket (200 at once, then 100/s over the flood's second) NCB-BR is refused
    counters = limited["counters"]
    assert isinstance(counters, dict)
    accepted = counters["accept"] - 1  # minus the probe
    assert 200 <= accepted <= 200 + 100 + 1
    assert counters["refuse.rate.limited"] == FLOOD - accepted
    assert set(counters) == {"accept", "refuse.rate.limited"}


def test_flooding_node_backs_off_and_everything_arrives_once() -> None:
    """End to end: NCB-BR's node submits 600 at once; NCB-FR's message goes through in the
    same round; NCB-BR's refused messages stay queued and arrive later, each exactly once."""
    net = Net()
    br = net.nodes["NCB-BR"]
    sent = [net.send("NCB-BR", ["NCB-JP"], lab="OFFICIAL-USE") for _ in range(600)]
    probe = net.send("NCB-FR", ["NCB-DE"], lab="OFFICIAL-USE")
    net.pump()
    assert net.holders(probe) == {"NCB-DE"}
    assert net.outbox_state("NCB-FR", probe) == "delivered"
    assert net.router.counters["refuse.rate.limited"] == 400
    assert br.counters["deferred.rate.limited"] == 400
    assert [e.reason for e in net.events("NCB-BR", "deferred")] == ["rate.limited"] * 400
    states = [net.outbox_state("NCB-BR", m) for m in sent]
    assert states.count("delivered") == 200 and "refused" not in states
    net.settle()
    assert all(net.outbox_state("NCB-BR", m) == "delivered" for m in sent)
    assert net.inbox("NCB-JP") == set(sent)
    assert len(net.events("NCB-JP", "received")) == 600  # once each
    legit_message_flows(net)


def test_a_late_rate_limited_report_does_not_undo_an_acceptance() -> None:
    """A retry refused for rate after the first attempt was accepted: still accepted."""
    net = Net()
    net.fault = lambda topic, _: 0 if topic.endswith("/inbox/NCB-JP") else 1  # no receipts
    mid = net.send("NCB-BR", ["NCB-JP"], lab="OFFICIAL-USE")
    net.pump()
    assert net.outbox_state("NCB-BR", mid) == "accepted"
    net.router.set_rate_limit(RateLimit(capacity=1, per_second=0))
    net.router.handle(submit_topic("NCB-BR"), flood()[0], net.now)  # spends the token
    net.advance(3 * SECOND)  # NCB-BR retries; the router refuses it for rate
    assert net.nodes["NCB-BR"].counters["deferred.rate.limited"] == 1
    assert net.outbox_state("NCB-BR", mid) == "accepted"
