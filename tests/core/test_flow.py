"""End to end in memory: one router and a node per demo agency, frames pumped by hand.

The wire is a list; the fault hook drops or duplicates chosen frames; the clock moves only
when a test advances it, so retries, gap requests and expiry fire exactly when asked. These
are the delivery guarantees of docs/protocol.md 8: nothing accepted is lost, exactly once to the
application, and nothing reaches an agency the router did not accept.
"""

from __future__ import annotations

from collections.abc import Callable

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from netfixtures import DEMO_AGENCIES, HOUR, SECOND, Net, inbox_topic, parsed

from i24net.core import frames as fr
from i24net.core.errors import I24Error
from i24net.core.labels import Precedence
from i24net.core.node import GAP_GRACE_MS, RETRY_MIN_MS


def drop_first(match: Callable[[str, bytes], bool], times: int = 1) -> Callable[[str, bytes],
                                                                               int]:
    """A fault hook that drops the first ``times`` frames for which ``match`` is true."""
    left = [times]

    def fault(topic: str, payload: bytes) -> int:
        if left[0] and match(topic, payload):
            left[0] -= 1
            return 0
        return 1

    return fault


def is_delivery_to(agency: str) -> Callable[[str, bytes], bool]:
    return lambda t, p: t == inbox_topic(agency) and fr.peek_magic(p) == fr.DELIVERY


def test_eu_message_reaches_exactly_europol_and_ncb_de_with_receipts() -> None:
    net = Net()
    mid = net.send("NCB-FR", ["@EU"], lab="RESTRICTED//EU", subject="EU alert")
    net.pump()
    assert net.holders(mid) == {"EUROPOL", "NCB-DE"}
    assert net.store("NCB-DE").inbox[mid].subject == "EU alert"
    assert net.outbox_state("NCB-FR", mid) == "delivered"
    entry = net.store("NCB-FR").outbox[mid]
    assert entry.receipts == {"EUROPOL": "delivered", "NCB-DE": "delivered"}
    assert [e.kind for e in net.events("NCB-FR", "delivered")] == ["delivered"]
    assert [e.kind for e in net.router_events] == ["accept", "receipt", "receipt"]


def test_refused_for_clearance_never_reaches_ncb_za() -> None:
    net = Net()
    mid = net.send("NCB-FR", ["NCB-ZA", "NCB-DE"], lab="CONFIDENTIAL")
    net.settle()
    assert net.holders(mid) == set()
    assert net.outbox_state("NCB-FR", mid) == "refused"
    assert net.store("NCB-FR").outbox[mid].reason == "clearance.recipient"
    assert net.events("NCB-ZA", "drop") == [] and net.node_events["NCB-ZA"] == []
    assert net.router.counters == {"refuse.clearance.recipient": 1}


def test_a_lost_delivery_is_repaired_by_the_senders_retry() -> None:
    net = Net(fault=drop_first(is_delivery_to("NCB-DE")))
    mid = net.send("NCB-FR", ["@EU"])
    net.pump()
    assert net.holders(mid) == {"EUROPOL"}
    assert net.outbox_state("NCB-FR", mid) == "accepted"
    net.advance(RETRY_MIN_MS)
    assert net.holders(mid) == {"EUROPOL", "NCB-DE"}
    assert net.outbox_state("NCB-FR", mid) == "delivered"
    # EUROPOL had receipted: the retry was re-delivered to NCB-DE only
    assert [(e.kind, e.recipients) for e in net.router_events if e.kind == "duplicate"] == [
        ("duplicate", ("NCB-DE",))]
    assert net.events("EUROPOL", "duplicate") == []
    assert len(net.events("NCB-DE", "received")) == 1


def test_a_lost_sequence_number_is_recovered_by_a_gap_request() -> None:
    # the sender's first retry is 2 s away, the gap grace only 1.5 s: the gap request wins
    net = Net(fault=drop_first(is_delivery_to("NCB-DE")))
    first = net.send("NCB-FR", ["NCB-DE"])
    second = net.send("NCB-US", ["NCB-DE"])
    net.pump()
    assert net.inbox("NCB-DE") == {second}
    net.advance(1_600)
    assert [e.kind for e in net.events("NCB-DE", "gap")] == ["gap"]
    assert net.inbox("NCB-DE") == {first, second}
    assert [e.kind for e in net.router_events if e.kind in ("resend", "duplicate")] == [
        "resend"]


def test_router_crash_loses_its_queue_and_retries_repair_it() -> None:
    net = Net()
    mid = net.send("NCB-FR", ["@G7-LIAISON"], lab="RESTRICTED")
    for _, payload, _ in net.nodes["NCB-FR"].pop():  # the router takes the submission...
        net.router_events += net.router.handle("i24/v1/submit/NCB-FR", payload, net.now)
    assert net.router.pending() > 0
    net.crash_router()  # ...and dies before publishing anything
    net.pump()
    assert net.holders(mid) == set()
    net.settle()
    assert net.holders(mid) == {"NCB-DE", "NCB-US", "NCB-JP"}
    assert net.outbox_state("NCB-FR", mid) == "delivered"
    for a in ("NCB-DE", "NCB-US", "NCB-JP"):
        assert len(net.events(a, "received")) == 1


def test_router_crash_after_some_receipts() -> None:
    # NCB-DE receipts before the crash; the new router cannot re-forward that receipt, so
    # it asks NCB-DE again: a duplicate there, still one inbox item
    net = Net(fault=drop_first(lambda t, p: t.startswith("i24/v1/inbox/NCB-") and t not in (
        inbox_topic("NCB-DE"), inbox_topic("NCB-FR")), times=2))
    mid = net.send("NCB-FR", ["@G7-LIAISON"])
    net.pump()
    assert net.holders(mid) == {"NCB-DE"}
    net.crash_router()
    net.settle()
    assert net.holders(mid) == {"NCB-DE", "NCB-US", "NCB-JP"}
    assert len(net.events("NCB-DE", "received")) == 1
    assert net.outbox_state("NCB-FR", mid) == "delivered"


def test_a_lost_report_and_lost_receipts_still_end_delivered() -> None:
    # the router's report and both forwarded receipts are lost on the way to NCB-FR: its
    # retry tells the router it still misses receipts, and the router forwards them again
    fault = drop_first(lambda t, _p: t == inbox_topic("NCB-FR"), times=3)
    net = Net(fault=fault)
    mid = net.send("NCB-FR", ["@EU"])
    net.pump()
    assert net.holders(mid) == {"EUROPOL", "NCB-DE"}
    assert net.outbox_state("NCB-FR", mid) == "queued"
    net.settle()
    assert net.outbox_state("NCB-FR", mid) == "delivered"
    assert net.holders(mid) == {"EUROPOL", "NCB-DE"}
    # answered from the router's receipts, without bothering the recipients again
    assert net.events("EUROPOL", "duplicate") == net.events("NCB-DE", "duplicate") == []


def test_flash_overtakes_routine_end_to_end() -> None:
    net = Net()
    routine = [net.send("NCB-FR", ["NCB-DE"]) for _ in range(3)]
    flash = net.send("NCB-US", ["NCB-DE"], precedence=Precedence.FLASH)
    net.pump()
    received = [e.msg_id for e in net.events("NCB-DE", "received")]
    assert received[0] == flash.hex()
    assert received[1:] == [m.hex() for m in routine]


def test_expired_message_is_marked_expired_not_delivered() -> None:
    net = Net(fault=lambda t, p: 0 if t == "i24/v1/submit/NCB-FR" else 1)
    mid = net.send("NCB-FR", ["NCB-DE"], ttl=30 * SECOND)
    net.settle()
    assert net.outbox_state("NCB-FR", mid) == "expired"
    assert net.holders(mid) == set()


# -- random sends, drops and duplicates ---------------------------------------------------------

SENDERS = ("GS-LYON", "EUROPOL", "NCB-FR", "NCB-DE", "NCB-US", "NCB-BR", "NCB-JP", "NCB-ZA")
ADDRESSES = ("@ALL", "@NCB", "@EU", "@G7-LIAISON", "@EUROPE", "@AMERICAS", *DEMO_AGENCIES)
LABELS = ("UNCLASSIFIED", "UNCLASSIFIED", "OFFICIAL-USE", "RESTRICTED", "RESTRICTED",
          "RESTRICTED//EU", "CONFIDENTIAL", "SECRET")

sends = st.lists(
    st.tuples(st.sampled_from(SENDERS),
              st.lists(st.sampled_from(ADDRESSES), min_size=1, max_size=3, unique=True),
              st.sampled_from(LABELS),
              st.sampled_from(tuple(Precedence)),
              st.sampled_from((0, 0, 100, 500, 1_000, 3_000))),
    min_size=1, max_size=10)
# how many copies of each frame, in order: 0 drops it, 2 duplicates it; once the list is
# used up every frame goes through, so the retries can finish the job
faults = st.lists(st.sampled_from((0, 0, 1, 1, 1, 1, 2)), max_size=300)


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(plan=sends, faults=faults)
def test_property_exactly_once_despite_drops_and_duplicates(
        plan: list[tuple[str, list[str], str, Precedence, int]], faults: list[int]) -> None:
    it = iter(faults)
    net = Net(fault=lambda _t, _p: next(it, 1))
    sent = {}
    for sender, to, lab, prec, gap in plan:
        to = [a for a in to if a != sender] or ["@ALL"]
        try:
            mid = net.send(sender, to, lab=lab, precedence=prec)
        except I24Error as exc:  # e.g. @EU from NCB-DE when... the addressing names nobody
            assert exc.reason == "addressing.empty"
            continue
        sent[mid] = sender
        net.pump()
        net.advance(gap)
    net.settle(step=5 * SECOND, limit=3 * HOUR)
    for _ in range(3):  # let the gap timers fire too: their resends must change nothing
        net.advance(4 * GAP_GRACE_MS)
    d = net.directory
    for mid, sender in sent.items():
        entry = net.store(sender).outbox[mid]
        env_h = parsed(entry.raw).header
        accepted = entry.state == "delivered"
        if accepted:
            expected = set(d.expand(env_h.addressing, env_h.sender))
            assert net.holders(mid) == expected, (mid.hex(), entry)
            for a in expected:
                assert len([e for e in net.events(a, "received") if e.msg_id == mid.hex()]) \
                    == 1
        else:
            assert entry.state == "refused", entry
            assert net.holders(mid) == set()
    # nothing in any inbox that was not sent, and no agency saw a message twice
    for a in net.nodes:
        for e in net.events(a, "received"):
            assert bytes.fromhex(e.msg_id) in sent
        ids = [e.msg_id for e in net.events(a, "received")]
        assert len(ids) == len(set(ids))
