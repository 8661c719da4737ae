"""The node machine, driven directly: submit / handle / handle_timer in, pop out.

Deliveries are stamped by hand with the router key from the fixtures (or with the wrong key,
or not at all), so each test controls exactly what reaches the node, including what a
mistaken router should never have accepted.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from netfixtures import (
    HOUR,
    ROGUE_ROUTER,
    ROUTER,
    SECOND,
    T0,
    Rng,
    build,
    demo_directory,
    flip_signature,
    header,
    inbox_topic,
    keys_for,
    kid,
    parsed,
    raw_header,
    seal_header,
    stamp_delivery,
    submit_topic,
)

from i24net.core import frames as fr
from i24net.core.envelope import Body
from i24net.core.errors import I24Error
from i24net.core.keys import AgencyKeys
from i24net.core.labels import Precedence
from i24net.core.node import (
    GAP_GRACE_MS,
    MAX_RETRIES_PER_TICK,
    RETRY_MAX_MS,
    RETRY_MIN_MS,
    SEND_WINDOW,
    SENDING_KEY_MS,
    MemoryNodeStore,
    NodeEvent,
    NodeMachine,
)

D = demo_directory()


def node(agency: str) -> NodeMachine:
    return NodeMachine(agency, keys_for(agency), D, MemoryNodeStore(),
                       random_bytes=Rng(f"test-node-{agency}"))


def store(n: NodeMachine) -> MemoryNodeStore:
    assert isinstance(n.store, MemoryNodeStore)
    return n.store


def deliver(n: NodeMachine, frame: bytes, now: int = T0) -> list[NodeEvent]:
    return n.handle(inbox_topic(n.agency), frame, now)


def receipts_out(n: NodeMachine) -> list[fr.Receipt]:
    out = []
    for topic, payload, _ in n.pop(limit=1000):
        assert topic == submit_topic(n.agency)
        f = fr.parse_frame(payload)
        assert f.magic == fr.RECEIPT
        out.append(fr.verify_receipt(f, D))
    return out


def kinds(events: list[NodeEvent]) -> list[tuple[str, str]]:
    return [(e.kind, e.reason) for e in events]


# -- sending ----------------------------------------------------------------------------------

def sent_by_fr(n: NodeMachine, to: list[str], now: int = T0, **kw: object) -> bytes:
    h = header("NCB-FR", to, now=now, rng=n.random_bytes, **kw)  # type: ignore[arg-type]
    raw, ev = n.submit(h, Body("wanted: J. Doe", "details"), now)
    assert ev.kind == "submit" and ev.msg_id == h.id_hex
    return raw


def test_submit_persists_then_queues_the_sealed_envelope() -> None:
    n = node("NCB-FR")
    raw = sent_by_fr(n, ["@EU"], precedence=Precedence.IMMEDIATE)
    env = parsed(raw)
    entry = store(n).outbox[env.header.id]
    assert (entry.state, entry.recipients, entry.raw, entry.subject) == (
        "queued", ("EUROPOL", "NCB-DE"), raw, "wanted: J. Doe")
    assert n.pop() == [(submit_topic("NCB-FR"), raw, int(Precedence.IMMEDIATE))]
    assert n.pop() == []


def test_submit_without_send_leaves_it_due_for_the_running_node() -> None:
    """What ``i24net publish`` does from its own process: sealed and stored, due at once,
    never sent (attempt 0); the node's next timer sends it as attempt 1."""
    cli = node("NCB-FR")
    h = header("NCB-FR", ["NCB-DE"], rng=cli.random_bytes)
    raw, _ = cli.submit(h, Body("queued", "by the CLI"), T0, send=False)
    entry = store(cli).outbox[h.id]
    assert (entry.attempts, entry.next_ms, entry.state) == (0, 0, "queued")
    assert cli.pop() == []  # nothing goes from the process that queued it
    daemon = NodeMachine("NCB-FR", cli.keys, cli.directory, cli.store,
                         random_bytes=cli.random_bytes)
    daemon.outbox_changed()
    daemon.handle_timer(T0)
    assert daemon.pop() == [(submit_topic("NCB-FR"), raw, int(h.precedence))]
    assert store(daemon).outbox[h.id].attempts == 1


def _report(raw: bytes, *, accepted: bool = True, reason: str = "ok",
            signer: AgencyKeys = ROUTER, at: int = T0) -> bytes:
    env = parsed(raw)
    rep = fr.Report(env.header.id, env.digest, env.header.sender, accepted, reason, "m",
                    env.header.recipients if accepted else (), at, kid(signer))
    return fr.make_report(rep, signer)


def _receipt(raw: bytes, receiver: str, status: str = "delivered") -> bytes:
    env = parsed(raw)
    rec = fr.Receipt(env.header.id, env.digest, env.header.sender, receiver, status, "", T0)
    return fr.make_receipt(rec, keys_for(receiver))


def test_reports_and_receipts_drive_the_outbox_to_delivered() -> None:
    n = node("NCB-FR")
    raw = sent_by_fr(n, ["@EU"])
    mid = parsed(raw).header.id
    assert kinds(deliver(n, _report(raw, at=T0 + 40))) == [("accepted", "")]
    assert store(n).outbox[mid].state == "accepted"
    assert store(n).outbox[mid].decided_ms == T0 + 40
    assert kinds(deliver(n, _receipt(raw, "NCB-DE"))) == [("receipt", "")]
    assert store(n).outbox[mid].state == "accepted"
    events = deliver(n, _receipt(raw, "EUROPOL"))
    assert [e.kind for e in events] == ["receipt", "delivered"]
    entry = store(n).outbox[mid]
    assert entry.state == "delivered"
    assert entry.receipts == {"NCB-DE": "delivered", "EUROPOL": "delivered"}
    assert deliver(n, _receipt(raw, "EUROPOL")) == []  # repeated receipt: nothing new
    assert n.handle_timer(T0 + HOUR // 2) == []  # delivered: never retried
    assert n.pop() and not n.pop()


def test_a_read_receipt_upgrades_and_a_late_delivered_one_does_not_downgrade() -> None:
    n = node("NCB-FR")
    raw = sent_by_fr(n, ["@EU"])
    mid = parsed(raw).header.id
    deliver(n, _receipt(raw, "NCB-DE"))
    assert [e.detail for e in deliver(n, _receipt(raw, "NCB-DE", "read"))] == ["read"]
    assert store(n).outbox[mid].receipts == {"NCB-DE": "read"}
    assert deliver(n, _receipt(raw, "NCB-DE")) == []  # e.g. re-sent after a retry
    assert deliver(n, _receipt(raw, "NCB-DE", "read")) == []
    assert store(n).outbox[mid].receipts == {"NCB-DE": "read"}
    assert store(n).outbox[mid].state == "queued"


def test_receipts_before_the_report_still_deliver() -> None:
    n = node("NCB-FR")
    raw = sent_by_fr(n, ["NCB-DE"])
    deliver(n, _receipt(raw, "NCB-DE"))
    assert store(n).outbox[parsed(raw).header.id].state == "delivered"
    assert deliver(n, _report(raw)) == []  # a late report changes nothing
    assert store(n).outbox[parsed(raw).header.id].state == "delivered"


def test_refused_report_ends_the_entry() -> None:
    n = node("NCB-FR")
    raw = sent_by_fr(n, ["NCB-DE"])
    n.pop()
    assert store(n).outbox[parsed(raw).header.id].decided_ms == 0
    events = deliver(n, _report(raw, accepted=False, reason="clearance.recipient",
                                at=T0 + 250))
    assert kinds(events) == [("refused", "clearance.recipient")]
    entry = store(n).outbox[parsed(raw).header.id]
    assert (entry.state, entry.reason) == ("refused", "clearance.recipient")
    assert entry.decided_ms == T0 + 250  # the router's time, signed in its report
    assert n.handle_timer(T0 + HOUR // 2) == []
    assert n.pop() == []


def test_a_refusal_of_other_bytes_under_the_same_id_cancels_nothing() -> None:
    """Someone holding NCB-FR's broker password submits garbage under the id of NCB-FR's
    real message; the router signs a refusal of *those* bytes (their digest). NCB-FR must
    not take it for the answer to its own message: it keeps retrying, and the router's
    answer to the real bytes still counts."""
    n = node("NCB-FR")
    raw = sent_by_fr(n, ["NCB-DE"])
    mid = parsed(raw).header.id
    forged = fr.Report(mid, bytes(32), "NCB-FR", False, "sig.invalid", "forged", (), T0,
                       kid(ROUTER))
    events = deliver(n, fr.make_report(forged, ROUTER))
    assert kinds(events) == [("drop", "report.digest")]
    entry = store(n).outbox[mid]
    assert (entry.state, entry.reason, entry.decided_ms) == ("queued", "", 0)
    assert n.handle_timer(T0 + HOUR // 2)  # still retried
    receipt = fr.Receipt(mid, bytes(32), "NCB-FR", "NCB-DE", "delivered", "", T0)
    events = deliver(n, fr.make_receipt(receipt, keys_for("NCB-DE")))
    assert kinds(events) == [("drop", "receipt.digest")]
    assert store(n).outbox[mid].receipts == {}
    assert kinds(deliver(n, _report(raw))) == [("accepted", "")]  # the real answer counts


@pytest.mark.parametrize("frame", ["rogue-report", "foreign-report", "foreign-receipt",
                                   "receipt-from-non-recipient"])
def test_reports_and_receipts_that_are_dropped(frame: str) -> None:
    n = node("NCB-FR")
    raw = sent_by_fr(n, ["NCB-DE"])
    other = build("NCB-US", ["NCB-DE"])
    payload = {
        "rogue-report": lambda: _report(raw, signer=ROGUE_ROUTER),
        "foreign-report": lambda: _report(other),
        "foreign-receipt": lambda: _receipt(other, "NCB-DE"),
        "receipt-from-non-recipient": lambda: _receipt(raw, "NCB-JP"),
    }[frame]()
    assert [e.kind for e in deliver(n, payload)] == ["drop"]
    assert store(n).outbox[parsed(raw).header.id].state == "queued"


# -- receiving --------------------------------------------------------------------------------

def test_valid_delivery_reaches_the_inbox_and_is_receipted() -> None:
    n = node("NCB-DE")
    raw = build("NCB-FR", ["@EU"], lab="RESTRICTED//EU")
    events = deliver(n, stamp_delivery(raw, "NCB-DE", 1), T0 + SECOND)
    assert [e.kind for e in events] == ["received"]
    assert events[0].latency_ms == SECOND
    item = store(n).inbox[parsed(raw).header.id]
    assert (item.sender, item.subject, item.label, item.state) == (
        "NCB-FR", "subject", "RESTRICTED//EU", "new")
    (rec,) = receipts_out(n)
    assert (rec.receiver, rec.sender, rec.status, rec.digest) == (
        "NCB-DE", "NCB-FR", "delivered", parsed(raw).digest)


def test_same_delivery_twice_is_one_inbox_item_and_two_receipts() -> None:
    n = node("NCB-DE")
    raw = build("NCB-FR", ["NCB-DE"])
    frame = stamp_delivery(raw, "NCB-DE", 1)
    assert [e.kind for e in deliver(n, frame)] == ["received"]
    assert [e.kind for e in deliver(n, frame)] == ["duplicate"]
    # the router's re-delivery of a retry carries a new sequence number: still one item
    assert [e.kind for e in deliver(n, stamp_delivery(raw, "NCB-DE", 2))] == ["duplicate"]
    assert list(store(n).inbox) == [parsed(raw).header.id]
    assert [r.status for r in receipts_out(n)] == ["delivered"] * 3


@pytest.mark.parametrize(("how", "reason"), [
    ("agency-signed-stamp", "sig.unknown-key"),      # NCB-FR plays router
    ("agency-key-router-kid", "sig.invalid"),        # ... and names the router's key
    ("rogue-router", "sig.unknown-key"),             # a router the directory does not list
    ("raw-envelope", "wire.magic"),                  # published straight on the inbox
    ("stamp-for-another", "stamp.recipient"),
    ("wrong-digest", "stamp.digest"),
])
def test_delivery_without_a_valid_stamp_is_dropped(how: str, reason: str) -> None:
    n = node("NCB-DE")
    raw = build("NCB-FR", ["NCB-DE"])
    frame = {
        "agency-signed-stamp": lambda: stamp_delivery(raw, "NCB-DE", 1,
                                                      signer=keys_for("NCB-FR")),
        "agency-key-router-kid": lambda: stamp_delivery(raw, "NCB-DE", 1,
                                                        signer=keys_for("NCB-FR"),
                                                        kid_of=ROUTER),
        "rogue-router": lambda: stamp_delivery(raw, "NCB-DE", 1, signer=ROGUE_ROUTER),
        "raw-envelope": lambda: raw,
        "stamp-for-another": lambda: stamp_delivery(raw, "EUROPOL", 1),
        "wrong-digest": lambda: stamp_delivery(raw, "NCB-DE", 1, digest=bytes(32)),
    }[how]()
    events = deliver(n, frame)
    assert kinds(events) == [("drop", reason)]
    assert store(n).inbox == {}
    assert n.pop() == []  # no receipt: nothing to acknowledge
    assert n.counters == {f"drop.{reason}": 1}
    # and the node still works
    assert [e.kind for e in deliver(n, stamp_delivery(raw, "NCB-DE", 1))] == ["received"]


def test_stamped_envelope_with_a_bad_sender_signature_is_dropped() -> None:
    n = node("NCB-DE")
    raw = flip_signature(build("NCB-FR", ["NCB-DE"]))
    assert kinds(deliver(n, stamp_delivery(raw, "NCB-DE", 1))) == [("drop", "sig.invalid")]
    assert store(n).inbox == {} and n.pop() == []


def test_stamp_and_envelope_must_agree() -> None:
    n = node("NCB-DE")
    raw = build("NCB-FR", ["NCB-DE"])
    env = parsed(raw)
    st_ = fr.Stamp(env.header.id, env.digest, "NCB-US", ("NCB-DE",), {"NCB-DE": 1}, T0, 1,
                   kid(ROUTER))
    events = deliver(n, fr.make_delivery(st_, raw, ROUTER))
    assert kinds(events) == [("drop", "stamp.mismatch")]
    assert store(n).inbox == {}


def test_router_stamping_a_message_not_addressed_to_me() -> None:
    n = node("NCB-US")
    raw = build("NCB-FR", ["NCB-DE"])
    events = deliver(n, stamp_delivery(raw, "NCB-US", 1))
    assert kinds(events) == [("drop", "not-recipient")]
    assert store(n).inbox == {}


def test_node_recheck_refuses_a_label_it_is_not_cleared_for() -> None:
    # the router should have refused this; the node does not take its word for it
    n = node("NCB-ZA")
    raw = build("NCB-FR", ["NCB-ZA"], lab="CONFIDENTIAL")
    events = deliver(n, stamp_delivery(raw, "NCB-ZA", 1))
    assert kinds(events) == [("refused-in", "clearance.recipient")]
    assert store(n).inbox == {}
    (rec,) = receipts_out(n)
    assert (rec.status, rec.reason, rec.receiver) == ("refused", "clearance.recipient",
                                                      "NCB-ZA")


def test_node_recheck_refuses_a_missing_caveat() -> None:
    n = node("NCB-US")  # CONFIDENTIAL without EU
    raw = build("NCB-FR", ["NCB-US"], lab="RESTRICTED//EU")
    assert kinds(deliver(n, stamp_delivery(raw, "NCB-US", 1))) == [
        ("refused-in", "clearance.recipient")]
    assert store(n).inbox == {}


def test_node_recheck_refuses_expired_and_future_messages() -> None:
    n = node("NCB-DE")
    old = build("NCB-FR", ["NCB-DE"], ttl=HOUR)
    late = T0 + HOUR + D.max_skew_ms + 1
    assert kinds(deliver(n, stamp_delivery(old, "NCB-DE", 1), late)) == [
        ("refused-in", "time.expired")]
    early = build("NCB-FR", ["NCB-DE"], now=T0 + D.max_skew_ms + 1)
    assert kinds(deliver(n, stamp_delivery(early, "NCB-DE", 2), T0)) == [
        ("refused-in", "time.future")]
    assert store(n).inbox == {}
    assert [r.status for r in receipts_out(n)] == ["refused", "refused"]


def test_node_recheck_refuses_a_recipient_list_the_directory_does_not_give() -> None:
    n = node("NCB-US")
    h = raw_header("NCB-FR", ["EUROPOL", "NCB-DE", "NCB-US"], ["@EU"])
    raw = seal_header(h)
    assert kinds(deliver(n, stamp_delivery(raw, "NCB-US", 1))) == [
        ("refused-in", "addressing.mismatch")]
    assert store(n).inbox == {}


def test_wrong_topic_and_hostile_frames_are_dropped() -> None:
    n = node("NCB-DE")
    raw = build("NCB-FR", ["NCB-DE"])
    assert kinds(n.handle(inbox_topic("NCB-US"), stamp_delivery(raw, "NCB-DE", 1), T0)) == [
        ("drop", "topic.unexpected")]
    gap = fr.make_gap(fr.GapRequest("NCB-DE", 1, 1, T0), ROUTER)
    assert kinds(deliver(n, gap)) == [("drop", "wire.magic")]
    assert store(n).inbox == {}


@settings(max_examples=200, deadline=None)
@given(payload=st.binary(max_size=300), prefix=st.sampled_from(
    [b"", b"\x95\xa4i24d\x01", b"\x94\xa4i24s\x01", b"\x94\xa4i24r\x01"]))
def test_property_hostile_bytes_are_only_ever_dropped(payload: bytes, prefix: bytes) -> None:
    n = node("NCB-DE")
    events = deliver(n, prefix + payload)
    assert [e.kind for e in events] == ["drop"]
    assert store(n).inbox == {} and n.pop() == []


# -- timers -----------------------------------------------------------------------------------

def test_handle_timer_retries_with_backoff_then_expires() -> None:
    n = node("NCB-FR")
    n.retry_jitter = 0.0  # exact schedule; jitter has its own test
    ttl = 200 * SECOND
    raw = sent_by_fr(n, ["NCB-DE"], ttl=ttl)
    mid = parsed(raw).header.id
    n.pop()
    retries = []
    t = T0
    while t <= T0 + ttl + SECOND:
        for e in n.handle_timer(t):
            if e.kind == "retry":
                retries.append(t - T0)
                assert n.pop() == [(submit_topic("NCB-FR"), raw, int(Precedence.ROUTINE))]
            else:
                assert (e.kind, e.reason) == ("expired", "time.expired")
                assert t - T0 > ttl
        t += 500
    assert n.pop() == []
    expected, at, attempt = [], RETRY_MIN_MS, 1
    while at <= ttl:
        expected.append(at)
        at += min(RETRY_MAX_MS, RETRY_MIN_MS << min(attempt, 5))
        attempt += 1
    assert retries == expected == [2_000, 6_000, 14_000, 30_000, 62_000, 122_000, 182_000]
    entry = store(n).outbox[mid]
    assert (entry.state, entry.reason) == ("expired", "time.expired")
    assert n.handle_timer(T0 + 10 * ttl) == []


def test_accepted_but_unreceipted_entries_keep_retrying() -> None:
    n = node("NCB-FR")
    raw = sent_by_fr(n, ["@EU"])
    deliver(n, _report(raw))
    deliver(n, _receipt(raw, "NCB-DE"))
    n.pop()
    assert [e.kind for e in n.handle_timer(T0 + RETRY_MIN_MS)] == ["retry"]
    assert [p for _, p, _ in n.pop()] == [raw]


def _seq(n: NodeMachine, seq: int, now: int) -> None:
    raw = build("NCB-FR", ["NCB-DE"], now=now)
    assert [e.kind for e in deliver(n, stamp_delivery(raw, "NCB-DE", seq), now)] == ["received"]
    n.pop()


def test_a_gap_is_requested_after_the_grace_period() -> None:
    n = node("NCB-DE")
    _seq(n, 1, T0)
    _seq(n, 3, T0)
    assert n.handle_timer(T0 + GAP_GRACE_MS - 1) == []
    assert n.pop() == []
    events = n.handle_timer(T0 + GAP_GRACE_MS)
    assert [e.kind for e in events] == ["gap"]
    (topic, payload, _), = n.pop()
    assert topic == submit_topic("NCB-DE")
    gap = fr.verify_gap(fr.parse_frame(payload), D)
    assert (gap.agency, gap.first, gap.last) == ("NCB-DE", 2, 2)
    # still missing: asked again, but not in a tight loop
    assert n.handle_timer(T0 + GAP_GRACE_MS + 1) == []
    assert [e.kind for e in n.handle_timer(T0 + 5 * GAP_GRACE_MS)] == ["gap"]


def test_a_gap_filled_in_time_asks_for_nothing() -> None:
    n = node("NCB-DE")
    _seq(n, 1, T0)
    _seq(n, 4, T0)
    _seq(n, 2, T0 + 100)
    _seq(n, 3, T0 + 200)
    assert n.handle_timer(T0 + 10 * GAP_GRACE_MS) == []
    assert n.pop() == []


def test_gap_request_covers_every_missing_number() -> None:
    n = node("NCB-DE")
    _seq(n, 2, T0)
    _seq(n, 5, T0)
    n.handle_timer(T0 + GAP_GRACE_MS)
    (_, payload, _), = n.pop()
    gap = fr.verify_gap(fr.parse_frame(payload), D)
    assert (gap.first, gap.last) == (1, 4)


def test_keys_must_match_the_agency() -> None:
    with pytest.raises(I24Error):
        NodeMachine("NCB-DE", keys_for("NCB-FR"), D, MemoryNodeStore(),
                    random_bytes=Rng("x"))


def test_set_directory_refuses_rollback() -> None:
    n = node("NCB-DE")
    n.set_directory(D.next_version(T0))
    with pytest.raises(I24Error) as exc:
        n.set_directory(D)
    assert exc.value.reason == "directory.rollback"


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_property_router_stamped_hostile_envelopes_never_reach_the_inbox(
        data: st.DataObject) -> None:
    """Even a (mistaken) router's valid stamp over bad envelope bytes opens nothing."""
    raw = build("NCB-FR", ["NCB-DE"])
    env = parsed(raw)
    if data.draw(st.booleans()):
        bad = bytearray(raw)
        for _ in range(data.draw(st.integers(1, 3))):
            bad[data.draw(st.integers(0, len(raw) - 1))] ^= 1 << data.draw(st.integers(0, 7))
        payload = bytes(bad)
    else:
        payload = data.draw(st.binary(max_size=400))
    if payload == raw:
        return
    st_ = fr.Stamp(env.header.id, hashlib.sha256(payload).digest(), "NCB-FR", ("NCB-DE",),
                   {"NCB-DE": 1}, T0, 1, kid(ROUTER))
    n = node("NCB-DE")
    events = deliver(n, fr.make_delivery(st_, payload, ROUTER))
    assert [e.kind for e in events] in (["drop"], ["refused-in"])
    assert store(n).inbox == {}


def test_retry_delays_are_jittered_and_bounded_per_tick() -> None:
    n = node("NCB-FR")
    ids = [parsed(sent_by_fr(n, ["NCB-DE"])).header.id for _ in range(100)]
    n.pop()
    events = n.handle_timer(T0 + 2 * SECOND)
    assert sum(e.kind == "retry" for e in events) == MAX_RETRIES_PER_TICK
    due = sorted(store(n).outbox[i].next_ms for i in ids if store(n).outbox[i].attempts > 1)
    assert len(due) == MAX_RETRIES_PER_TICK and len(set(due)) > 10  # spread, not one wave
    base = 2 * SECOND + (RETRY_MIN_MS << 1)
    assert all(base * 0.5 - 1 <= d - T0 <= base * 1.5 + 1 for d in due)
    assert sum(e.kind == "retry" for e in n.handle_timer(T0 + 2 * SECOND + 200)) == MAX_RETRIES_PER_TICK


def test_new_messages_wait_for_the_send_window() -> None:
    """Entries written by `i24net publish` (attempts 0) go out only while fewer than
    SEND_WINDOW sent messages await the router's answer."""
    n = node("NCB-FR")
    for _ in range(SEND_WINDOW):
        sent_by_fr(n, ["NCB-DE"])  # sent now, unanswered
    n.pop()
    late = parsed(sent_by_fr(n, ["NCB-DE"])).header.id
    n.pop()
    entry = store(n).outbox[late]
    store(n).outbox_put(replace(entry, attempts=0, next_ms=0))  # as publish leaves it
    events = n.handle_timer(T0 + 100)
    assert not any(e.msg_id == late.hex() for e in events)  # held back by the window


# -- deadlines: what a driver sleeps until --------------------------------------------------

def test_a_fresh_machine_is_due_at_once_then_idle() -> None:
    """The first handle_timer picks up what was stored while no driver ran; after it, a machine
    with nothing to do has no deadline at all (its driver sleeps until a frame comes)."""
    n = node("NCB-DE")
    assert n.next_timer() == 0
    assert n.handle_timer(T0) == []
    assert n.next_timer() is None


def test_the_deadline_follows_the_retry_schedule_and_expiry() -> None:
    n = node("NCB-FR")
    n.retry_jitter = 0.0
    n.handle_timer(T0)
    ttl = 200 * SECOND
    raw = sent_by_fr(n, ["NCB-DE"], ttl=ttl)
    n.pop()
    assert n.next_timer() == T0 + RETRY_MIN_MS
    t = T0
    seen = []
    while (due := n.next_timer()) is not None:
        assert due > t  # never a deadline in the past after handle_timer: no busy loop
        t = due
        seen += [e.kind for e in n.handle_timer(t)]
        n.pop()
    # the last deadline replaces the sending key an hour after it first sealed
    assert seen.count("retry") == 7 and seen[-2:] == ["expired", "key"]
    assert t == T0 + SENDING_KEY_MS > parsed(raw).header.expires_ms + 1


def test_a_retry_budget_left_over_is_due_at_once() -> None:
    n = node("NCB-FR")
    n.handle_timer(T0)
    for _ in range(MAX_RETRIES_PER_TICK + 5):
        sent_by_fr(n, ["NCB-DE"])
    n.pop()
    t = T0 + 3 * RETRY_MIN_MS
    assert sum(e.kind == "retry" for e in n.handle_timer(t)) == MAX_RETRIES_PER_TICK
    assert n.next_timer() == t  # the other 5 go on the next call, not in 2 s


def test_a_report_wakes_what_waits_for_the_send_window() -> None:
    n = node("NCB-FR")
    n.handle_timer(T0)
    first = [sent_by_fr(n, ["NCB-DE"]) for _ in range(SEND_WINDOW)]
    n.pop()
    late = parsed(sent_by_fr(n, ["NCB-DE"])).header.id
    n.pop()
    store(n).outbox_put(replace(store(n).outbox[late], attempts=0, next_ms=0))
    n.outbox_changed()
    assert n.next_timer() == 0
    assert n.handle_timer(T0 + 100) == []  # the window is full: held back
    held = n.next_timer()
    assert held is not None and held > T0 + 100
    deliver(n, _report(first[0]))  # one answer frees a place
    assert n.next_timer() == 0
    assert [e.kind for e in n.handle_timer(T0 + 200)] == ["retry"]
    assert store(n).outbox[late].attempts == 1


def test_a_gap_brings_the_deadline_forward() -> None:
    n = node("NCB-DE")
    n.handle_timer(T0)
    _seq(n, 1, T0)
    assert n.next_timer() is None
    _seq(n, 3, T0)
    assert n.next_timer() == T0 + GAP_GRACE_MS
