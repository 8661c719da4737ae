"""The router machine, driven directly: handle() frames in, pop() stamped frames out.

No asyncio and no broker: an in-memory store, the demo directory with fixed keys, and time
as an integer. Each test reads what the router publishes and verifies it the way a node
would (router signature, digest, recipient named).
"""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from netfixtures import (
    ROUTER,
    SECOND,
    T0,
    build,
    demo_directory,
    flip_signature,
    header,
    inbox_topic,
    keys_for,
    parsed,
    seal_header,
    submit_topic,
)

from i24net.core import frames as fr
from i24net.core import router as router_module
from i24net.core.errors import I24Error
from i24net.core.labels import Precedence
from i24net.core.router import CONTROL_PRIORITY, MemoryRouterStore, RouterEvent, RouterMachine

D = demo_directory()


def router(store: MemoryRouterStore | None = None) -> RouterMachine:
    return RouterMachine(D, ROUTER, store or MemoryRouterStore())


def agency_of(topic: str) -> str:
    return topic.rsplit("/", 1)[1]


def pop_all(r: RouterMachine, now: int = T0) -> list[tuple[str, fr.Frame]]:
    return [(agency_of(t), fr.parse_frame(p)) for t, p, _ in r.pop(now, limit=10_000)]


def deliveries(out: list[tuple[str, fr.Frame]]) -> list[tuple[str, fr.Stamp]]:
    return [(a, fr.verify_delivery(f, D, a)) for a, f in out if f.magic == fr.DELIVERY]


def reports(out: list[tuple[str, fr.Frame]]) -> list[tuple[str, fr.Report]]:
    return [(a, fr.verify_report(f, D)) for a, f in out if f.magic == fr.REPORT]


def submit(r: RouterMachine, raw: bytes, now: int = T0,
           agency: str | None = None) -> list[RouterEvent]:
    return r.handle(submit_topic(agency or parsed(raw).header.sender), raw, now)


def receipt_frame(raw_env: bytes, receiver: str, *, signer: str | None = None,
                  status: str = "delivered", digest: bytes | None = None) -> bytes:
    env = parsed(raw_env)
    rec = fr.Receipt(env.header.id, digest or env.digest, env.header.sender, receiver, status,
                     "", T0)
    return fr.make_receipt(rec, keys_for(signer or receiver))


# -- accept and refuse ------------------------------------------------------------------------

def test_accept_delivers_to_each_recipient_with_its_own_sequence() -> None:
    r = router()
    sent = [build("NCB-FR", ["@EU"]) for _ in range(3)]
    for raw in sent:
        events = submit(r, raw)
        assert [(e.kind, e.recipients) for e in events] == [("accept", ("EUROPOL", "NCB-DE"))]
    out = pop_all(r)
    got = deliveries(out)
    for agency in ("EUROPOL", "NCB-DE"):
        mine = [s for a, s in got if a == agency]
        assert [s.seqs[agency] for s in mine] == [1, 2, 3]
        assert [s.msg_id for s in mine] == [parsed(x).header.id for x in sent]
        assert all(s.recipients == (agency,) and s.sender == "NCB-FR" for s in mine)
    assert {a for a, _ in got} == {"EUROPOL", "NCB-DE"}
    # every delivery carries the exact bytes that were submitted
    for _, f in out:
        if f.magic == fr.DELIVERY:
            assert f.extra in sent
    reps = reports(out)
    assert [a for a, _ in reps] == ["NCB-FR"] * 3
    assert all(rep.accepted and rep.recipients == ("EUROPOL", "NCB-DE") for _, rep in reps)
    assert r.counters == {"accept": 3}
    assert r.pending() == 0


def test_refused_message_yields_only_a_refused_report() -> None:
    r = router()
    raw = build("NCB-FR", ["NCB-ZA"], lab="CONFIDENTIAL")
    events = submit(r, raw)
    assert [(e.kind, e.reason, e.recipients) for e in events] == [
        ("refuse", "clearance.recipient", ("NCB-ZA",))]
    out = pop_all(r)
    assert [a for a, _ in out] == ["NCB-FR"]
    (_, rep), = reports(out)
    assert not rep.accepted and rep.reason == "clearance.recipient"
    assert rep.msg_id == parsed(raw).header.id and rep.digest == parsed(raw).digest
    assert r.counters == {"refuse.clearance.recipient": 1}
    assert r.store.prior(parsed(raw).header.id) is None  # nothing recorded


def test_refused_report_goes_to_the_topic_it_came_from() -> None:
    r = router()
    raw = build("NCB-FR", ["NCB-DE"])
    events = submit(r, raw, agency="NCB-US")
    assert events[0].reason == "sender.topic"
    out = pop_all(r)
    assert [a for a, _ in out] == ["NCB-US"]
    assert not reports(out)[0][1].accepted


def test_flash_queued_after_routine_goes_first_with_the_lower_sequence() -> None:
    r = router()
    routine = build("NCB-FR", ["NCB-DE"], precedence=Precedence.ROUTINE)
    flash = build("NCB-FR", ["NCB-DE"], precedence=Precedence.FLASH)
    submit(r, routine)
    submit(r, flash)
    got = deliveries(pop_all(r))
    assert [(s.msg_id, s.seqs["NCB-DE"]) for _, s in got] == [
        (parsed(flash).header.id, 1), (parsed(routine).header.id, 2)]


def test_precedence_orders_the_whole_queue() -> None:
    r = router()
    ids = {}
    for p in (Precedence.ROUTINE, Precedence.PRIORITY, Precedence.IMMEDIATE, Precedence.FLASH):
        raw = build("NCB-FR", ["NCB-DE"], precedence=p)
        ids[parsed(raw).header.id] = p
        submit(r, raw)
    out = r.pop(T0, limit=100)
    prios = [prio for _, _, prio in out]
    assert prios == sorted(prios)
    order = [ids[fr.verify_delivery(f, D, "NCB-DE").msg_id]
             for f in (fr.parse_frame(p) for _, p, _ in out) if f.magic == fr.DELIVERY]
    assert order == sorted(ids.values())
    # reports are control traffic: never behind a ROUTINE delivery
    assert all(prio <= CONTROL_PRIORITY for t, p, prio in out
               if fr.peek_magic(p) == fr.REPORT)


def test_pop_respects_its_limit_and_sequences_follow_publishing_order() -> None:
    r = router()
    for _ in range(5):
        submit(r, build("NCB-FR", ["NCB-DE"]))
    first = r.pop(T0, limit=4)
    rest = r.pop(T0 + SECOND, limit=100)
    assert len(first) == 4 and len(rest) == 6
    seqs = [fr.verify_delivery(fr.parse_frame(p), D, "NCB-DE").seqs["NCB-DE"]
            for _, p, _ in first + rest if fr.peek_magic(p) == fr.DELIVERY]
    assert seqs == [1, 2, 3, 4, 5]


# -- duplicates and receipts ------------------------------------------------------------------

def test_duplicate_is_redelivered_only_to_recipients_without_a_receipt() -> None:
    r = router()
    raw = build("NCB-FR", ["@EU"])
    submit(r, raw)
    pop_all(r)
    receipt = receipt_frame(raw, "NCB-DE")
    events = r.handle(submit_topic("NCB-DE"), receipt, T0)
    assert [(e.kind, e.recipients) for e in events] == [("receipt", ("NCB-DE",))]
    pop_all(r)
    events = submit(r, raw, T0 + SECOND)
    assert [(e.kind, e.recipients) for e in events] == [("duplicate", ("EUROPOL",))]
    out = r.pop(T0 + SECOND)
    frames = [(agency_of(t), fr.parse_frame(p)) for t, p, _ in out]
    assert [(a, s.seqs[a]) for a, s in deliveries(frames)] == [("EUROPOL", 2)]
    assert [a for a, _ in reports(frames)] == ["NCB-FR"]
    # the retry says the sender still misses receipts: NCB-DE's is forwarded again
    assert [(t, p) for t, p, _ in out if fr.peek_magic(p) == fr.RECEIPT] == [
        (inbox_topic("NCB-FR"), receipt)]
    assert r.counters["duplicate"] == 1


def test_after_a_restart_receipted_recipients_are_asked_again() -> None:
    # the new process no longer holds NCB-DE's receipt frame, so it cannot re-forward it:
    # it re-delivers instead, and NCB-DE's node answers with a fresh receipt
    store = MemoryRouterStore()
    r = router(store)
    raw = build("NCB-FR", ["@EU"])
    submit(r, raw)
    pop_all(r)
    r.handle(submit_topic("NCB-DE"), receipt_frame(raw, "NCB-DE"), T0)
    r2 = router(store)
    events = submit(r2, raw, T0 + SECOND)
    assert [(e.kind, e.recipients) for e in events] == [("duplicate", ("EUROPOL", "NCB-DE"))]


def test_held_receipts_are_bounded_and_eviction_falls_back_to_redelivery(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(router_module, "MAX_HELD_RECEIPTS", 2)
    r = router()
    first, second = build("NCB-FR", ["@EU"]), build("NCB-FR", ["@EU"])
    for raw in (first, second):
        submit(r, raw)
    pop_all(r)
    for raw in (first, second):
        for a in ("EUROPOL", "NCB-DE"):
            r.handle(submit_topic(a), receipt_frame(raw, a), T0)
    pop_all(r)
    # the first message's frames were evicted: its retry asks the recipients again
    assert [e.recipients for e in submit(r, first)] == [("EUROPOL", "NCB-DE")]
    assert [e.recipients for e in submit(r, second)] == [()]


def test_duplicate_with_every_receipt_delivers_nothing_but_report_and_receipts() -> None:
    r = router()
    raw = build("NCB-FR", ["@EU"])
    submit(r, raw)
    pop_all(r)
    for a in ("NCB-DE", "EUROPOL"):
        r.handle(submit_topic(a), receipt_frame(raw, a), T0)
    pop_all(r)
    submit(r, raw)
    out = pop_all(r)
    assert deliveries(out) == []
    assert [(a, rep.accepted) for a, rep in reports(out)] == [("NCB-FR", True)]
    assert sorted(fr.verify_receipt(f, D).receiver for a, f in out if f.magic == fr.RECEIPT
                  and a == "NCB-FR") == ["EUROPOL", "NCB-DE"]


def test_same_id_with_different_bytes_is_a_replay() -> None:
    h = header("NCB-FR", ["NCB-DE"])
    first = seal_header(h)
    second = seal_header(dataclasses.replace(h, nonce=bytes(24)))
    r = router()
    submit(r, first)
    pop_all(r)
    events = submit(r, second)
    assert [(e.kind, e.reason) for e in events] == [("refuse", "replay.id")]
    assert deliveries(pop_all(r)) == []


def test_receipt_is_forwarded_unchanged_to_the_original_sender() -> None:
    r = router()
    raw = build("NCB-FR", ["@EU"])
    submit(r, raw)
    pop_all(r)
    frame = receipt_frame(raw, "EUROPOL", status="read")
    r.handle(submit_topic("EUROPOL"), frame, T0)
    out = r.pop(T0)
    assert [(t, p) for t, p, _ in out] == [(inbox_topic("NCB-FR"), frame)]
    assert r.store.receipted(parsed(raw).header.id) == {"EUROPOL"}


@pytest.mark.parametrize(("topic_of", "receiver", "signer", "reason"), [
    ("NCB-US", "NCB-US", "NCB-US", "receipt.unknown"),   # not a recipient
    ("NCB-US", "NCB-DE", "NCB-DE", "sender.topic"),      # a recipient's receipt, wrong topic
    ("NCB-DE", "NCB-DE", "NCB-FR", "sig.invalid"),       # forged by another agency
    ("NCB-FR", "NCB-FR", "NCB-FR", "receipt.unknown"),   # the sender is not a recipient
])
def test_receipts_that_are_not_forwarded(topic_of: str, receiver: str, signer: str,
                                         reason: str) -> None:
    r = router()
    raw = build("NCB-FR", ["@EU"])
    submit(r, raw)
    pop_all(r)
    events = r.handle(submit_topic(topic_of), receipt_frame(raw, receiver, signer=signer), T0)
    assert [(e.kind, e.reason) for e in events] == [("drop", reason)]
    assert r.pop(T0) == []
    assert r.store.receipted(parsed(raw).header.id) == set()


def test_receipt_from_a_revoked_recipient_is_not_forwarded() -> None:
    r = router()
    raw = build("NCB-FR", ["@EU"])
    submit(r, raw)
    pop_all(r)
    r.set_directory(D.revoke("NCB-DE", T0))
    events = r.handle(submit_topic("NCB-DE"), receipt_frame(raw, "NCB-DE"), T0)
    assert [(e.kind, e.reason) for e in events] == [("drop", "sender.revoked")]
    assert r.pop(T0) == []


def test_receipt_with_another_digest_or_for_an_unknown_message() -> None:
    r = router()
    raw = build("NCB-FR", ["@EU"])
    submit(r, raw)
    pop_all(r)
    bad_digest = receipt_frame(raw, "NCB-DE", digest=bytes(32))
    unknown = receipt_frame(build("NCB-FR", ["@EU"]), "NCB-DE")
    for frame in (bad_digest, unknown):
        events = r.handle(submit_topic("NCB-DE"), frame, T0)
        assert [(e.kind, e.reason) for e in events] == [("drop", "receipt.unknown")]
    assert r.pop(T0) == []


# -- gap requests ------------------------------------------------------------------------------

def test_gap_request_resends_the_logged_frames() -> None:
    r = router()
    for _ in range(3):
        submit(r, build("NCB-FR", ["NCB-DE"]))
    logged = {fr.verify_delivery(fr.parse_frame(p), D, "NCB-DE").seqs["NCB-DE"]: p
              for _, p, _ in r.pop(T0, limit=100) if fr.peek_magic(p) == fr.DELIVERY}
    gap = fr.make_gap(fr.GapRequest("NCB-DE", 2, 5, T0), keys_for("NCB-DE"))
    events = r.handle(submit_topic("NCB-DE"), gap, T0 + SECOND)
    assert [e.kind for e in events] == ["resend"]
    out = r.pop(T0 + SECOND)
    assert [(t, p) for t, p, _ in out] == [(inbox_topic("NCB-DE"), logged[2]),
                                           (inbox_topic("NCB-DE"), logged[3])]


def test_gap_request_for_someone_else_is_dropped() -> None:
    r = router()
    submit(r, build("NCB-FR", ["NCB-DE"]))
    r.pop(T0)
    gap = fr.make_gap(fr.GapRequest("NCB-DE", 1, 1, T0), keys_for("NCB-DE"))
    events = r.handle(submit_topic("NCB-FR"), gap, T0)  # NCB-FR replays NCB-DE's request
    assert [(e.kind, e.reason) for e in events] == [("drop", "sender.topic")]
    forged = fr.make_gap(fr.GapRequest("NCB-DE", 1, 1, T0), keys_for("NCB-FR"))
    events = r.handle(submit_topic("NCB-DE"), forged, T0)
    assert [(e.kind, e.reason) for e in events] == [("drop", "sig.invalid")]
    assert r.pop(T0) == []


# -- bad input ---------------------------------------------------------------------------------

def test_garbage_is_a_drop_event_and_the_router_keeps_working() -> None:
    r = router()
    for junk in (b"", b"\x00", b"hello", b"\x94\xa4i24e" + b"\xff" * 50,
                 flip_signature(build("NCB-FR", ["NCB-DE"]))[:-3],
                 fr.make_report(fr.Report(bytes(16), bytes(32), "NCB-FR", True, "ok", "", (),
                                          T0, b"12345678"), keys_for("NCB-FR"))):
        events = r.handle(submit_topic("NCB-FR"), junk, T0)
        assert [e.kind for e in events] == ["drop"], junk
        assert events[0].reason
    # each undecodable one is answered to its sender, by a report that names no message id
    answers = r.pop(T0)
    assert len(answers) == 6
    for topic, frame, _ in answers:
        rep = fr.verify_report(fr.parse_frame(frame), D)
        assert topic == inbox_topic("NCB-FR") and rep.msg_id == fr.NO_MESSAGE_ID
        assert not rep.accepted and rep.reason.startswith("wire.")
    raw = build("NCB-FR", ["NCB-DE"])
    assert [e.kind for e in submit(r, raw)] == ["accept"]
    assert len(deliveries(pop_all(r))) == 1
    assert sum(v for name, v in r.counters.items() if name.startswith("drop.")) == 6


def test_frames_on_topics_the_router_does_not_own_are_dropped() -> None:
    r = router()
    raw = build("NCB-FR", ["NCB-DE"])
    for topic in (inbox_topic("NCB-FR"), "i24/v1/submit/", "i24/v1/submit/NCB-FR/x",
                  "other/submit/NCB-FR"):
        events = r.handle(topic, raw, T0)
        assert [(e.kind, e.reason) for e in events] == [("drop", "topic.unexpected")]
    assert r.pop(T0) == []


def test_bad_signature_is_refused_with_a_report() -> None:
    r = router()
    events = submit(r, flip_signature(build("NCB-FR", ["NCB-DE"])))
    assert [(e.kind, e.reason) for e in events] == [("refuse", "sig.invalid")]
    (_, rep), = reports(pop_all(r))
    assert rep.reason == "sig.invalid"


@settings(max_examples=200, deadline=None)
@given(payload=st.binary(max_size=300), prefix=st.sampled_from(
    [b"", b"\x94\xa4i24e", b"\x95\xa4i24r", b"\x95\xa4i24g", b"\x94\xa4i24r"]))
def test_property_hostile_bytes_never_raise(payload: bytes, prefix: bytes) -> None:
    r = router()
    events = r.handle(submit_topic("NCB-FR"), prefix + payload, T0)
    assert [e.kind for e in events] in (["drop"], ["refuse"])
    for _, p, _ in r.pop(T0):
        assert fr.peek_magic(p) == fr.REPORT


# -- crash and directory -----------------------------------------------------------------------

def test_a_new_router_on_the_same_store_continues_sequences_and_redelivers() -> None:
    store = MemoryRouterStore()
    r = router(store)
    raw = build("NCB-FR", ["NCB-DE"])
    submit(r, build("NCB-FR", ["NCB-DE"]))
    pop_all(r)  # seq 1 went out
    submit(r, raw)  # accepted, recorded, but the process dies before publishing
    r2 = router(store)
    assert r2.pending() == 0
    events = submit(r2, raw, T0 + 5 * SECOND)  # the sender's retry
    assert [(e.kind, e.recipients) for e in events] == [("duplicate", ("NCB-DE",))]
    got = deliveries(pop_all(r2, T0 + 5 * SECOND))
    assert [(s.msg_id, s.seqs["NCB-DE"]) for _, s in got] == [(parsed(raw).header.id, 2)]


def test_set_directory_refuses_rollback() -> None:
    r = router()
    newer = D.next_version(T0)
    r.set_directory(newer)
    with pytest.raises(I24Error) as exc:
        r.set_directory(D)
    assert exc.value.reason == "directory.rollback"


def test_revocation_applies_from_the_next_directory() -> None:
    r = router()
    raw = build("NCB-FR", ["NCB-DE"])
    r.set_directory(D.revoke("NCB-FR", T0))
    events = submit(r, raw)
    assert [(e.kind, e.reason) for e in events] == [("refuse", "sender.revoked")]


def test_expired_messages_are_pruned_and_not_stamped() -> None:
    store = MemoryRouterStore()
    r = router(store)
    raw = build("NCB-FR", ["NCB-DE"], ttl=SECOND)
    submit(r, raw)
    assert store.prune(T0 + SECOND + D.max_skew_ms + 1) == 1
    out = pop_all(r)
    assert deliveries(out) == [] and len(reports(out)) == 1


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_property_bit_flipped_envelopes_are_never_accepted(data: st.DataObject) -> None:
    raw = build("NCB-FR", ["@EU"], lab=data.draw(st.sampled_from(["RESTRICTED", "SECRET"])))
    bad = bytearray(raw)
    for _ in range(data.draw(st.integers(1, 3))):
        bad[data.draw(st.integers(0, len(raw) - 1))] ^= 1 << data.draw(st.integers(0, 7))
    r = router()
    events = r.handle(submit_topic("NCB-FR"), bytes(bad), T0)
    if bytes(bad) != raw:
        assert [e.kind for e in events] in (["drop"], ["refuse"])
        assert deliveries(pop_all(r)) == []
