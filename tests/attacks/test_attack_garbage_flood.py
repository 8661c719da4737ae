"""Drill: a flood of garbage at the router, and what it leaves in the audit log.

An agency (its broker account stolen, or a node gone wrong) publishes thousands of frames
that do not decode on its submit topic; an outsider on an open broker publishes on topics
the router does not own. Every such frame is dropped and counted. Recorded one by one, each
would also be an audit entry and a log line (about 310 bytes): the flood would fill the audit
log without bound. ``router.AuditBound`` records the first drops of each source per window in
full and sums up the rest in one ``drop-summary`` entry per source and window, so the log
grows with time and the number of sources, not with the flood; the counts still add up to
every frame dropped.

An undecodable submission is answered: its audit entry names the sender (the agency of the
submit topic, which the broker binds to the account) and the SHA-256 of the bytes, and the
sender gets a router-signed report naming the reason under the all-zero message id
(``frames.NO_MESSAGE_ID``, protocol 5.3). These reports are bounded like the entries. The
sender's node finds no outbox entry for such a report and drops it (``report.unknown``):
the report still tells whoever runs the node, and no real message is affected.
"""

from __future__ import annotations

import hashlib
import random

import pytest
from attackkit import counted, legit_message_flows
from netfixtures import DEMO_AGENCIES, SECOND, Net, build, inbox_topic, submit_topic

from i24net.core import audit as au
from i24net.core import frames as fr
from i24net.core.errors import ConfigError
from i24net.core.events import DropSummary, RouterEvent
from i24net.core.router import (
    DEFAULT_AUDIT_BOUND,
    OTHER_TOPICS,
    UNLISTED,
    AuditBound,
)

PER_WINDOW, WINDOW = DEFAULT_AUDIT_BOUND.per_window, DEFAULT_AUDIT_BOUND.window_ms


def garbage(rng: random.Random, n: int) -> list[bytes]:
    """Frames that do not decode: random bytes, envelope and frame prefixes with junk after."""
    heads = [b"", b"\x94\xa4i24e\x02", b"\x94\xa4i24r\x02", b"\x94\xa4i24g\x02",
             b"\x94\xa4i24s\x02", b"\x92", b"\xc1"]
    return [rng.choice(heads) + rng.randbytes(rng.randrange(1, 200)) for _ in range(n)]


def audit(events: list[RouterEvent], chain: au.AuditChain, now: int) -> list[bytes]:
    """Record ``events`` as the router daemon does, one entry each; the lines written."""
    lines = []
    for ev in events:
        entry = chain.append(ev.kind, at_ms=now, actor="router", msg_id=ev.msg_id,
                             reason=ev.reason, details=ev.audit_details())
        lines.append(chain.encode_line(entry) + b"\n")
    return lines


def counts_in(lines: list[bytes]) -> int:
    """How many dropped frames the audit lines account for, read back from the lines."""
    total = 0
    for line in lines:
        e = au.parse_line(line)
        d = e.details_map()
        if e.event == "drop":
            total += 1
        elif e.event == DropSummary.kind:
            assert d["count"] == sum(d["counts"])  # type: ignore[arg-type]
            total += d["count"]  # type: ignore[operator]
    return total


def test_ten_thousand_undecodable_submissions_leave_a_bounded_audit_log() -> None:
    net = Net()
    rng = random.Random(7)
    chain = au.AuditChain()
    lines: list[bytes] = []
    n = 10_000
    start = net.now
    for i, payload in enumerate(garbage(rng, n)):
        now = start + i * 10  # 100 a second for 100 s: two windows of 60 s
        lines += audit(net.router.handle(submit_topic("NCB-FR"), payload, now), chain, now)
    end = start + n * 10
    lines += audit(net.router.close_drop_windows(end), chain, end)
    assert counted(net.router.counters, "drop.") == n  # every frame is still counted
    windows = 2
    assert len(lines) <= windows * (PER_WINDOW + 1)
    assert counts_in(lines) == n
    assert sum(map(len, lines)) < 64 * 1024  # against ~3 MB one entry each
    assert au.verify_lines(lines).ok
    summaries = [au.parse_line(x) for x in lines if b'"drop-summary"' in x]
    assert len(summaries) == windows
    for s in summaries:
        d = s.details_map()
        assert d["from"] == "NCB-FR" and d["source"] == "NCB-FR"
        assert all(str(r).startswith("wire.") for r in d["reasons"])  # type: ignore[union-attr]
        assert d["since_ms"] <= d["until_ms"]  # type: ignore[operator]
    # the answers are bounded the same way: one report per drop recorded in full
    answers = net.router.pop(end, limit=100_000)
    assert len(answers) == windows * PER_WINDOW
    assert {t for t, _, _ in answers} == {inbox_topic("NCB-FR")}
    net.now = end
    legit_message_flows(net)


def test_a_flood_from_every_kind_of_source_stays_bounded_per_source() -> None:
    """Every agency, unlisted agencies' topics and topics the router does not own flood at
    once; the entries are bounded per source, and one source's flood does not use up
    another's entries."""
    net = Net()
    rng = random.Random(11)
    chain = au.AuditChain()
    lines: list[bytes] = []
    sent = 0
    for payload in garbage(rng, 2_000):
        for topic in (*(submit_topic(a) for a in DEMO_AGENCIES),
                      submit_topic(f"XX-{rng.randrange(10**6)}"),  # unlisted, every time new
                      f"i24/v1/elsewhere/{rng.randrange(10**6)}"):  # not the router's
            lines += audit(net.router.handle(topic, payload, net.now), chain, net.now)
            sent += 1
    lines += audit(net.router.close_drop_windows(net.now), chain, net.now)
    sources = len(DEMO_AGENCIES) + 2
    assert len(lines) == sources * (PER_WINDOW + 1)
    assert counts_in(lines) == sent
    full = [au.parse_line(x).details_map() for x in lines if b'"event":"drop"' in x]
    by_source: dict[str, int] = {}
    for d in full:
        by_source[str(d["source"])] = by_source.get(str(d["source"]), 0) + 1
    assert by_source == {**{a: PER_WINDOW for a in DEMO_AGENCIES}, UNLISTED: PER_WINDOW,
                         OTHER_TOPICS: PER_WINDOW}
    # only listed agencies get answers; unlisted names and foreign topics get none
    answers = net.router.pop(net.now, limit=100_000)
    assert sorted(t for t, _, _ in answers) == sorted(
        inbox_topic(a) for a in DEMO_AGENCIES for _ in range(PER_WINDOW))


def test_a_window_closes_by_time_and_a_new_one_records_again() -> None:
    net = Net()
    topic = submit_topic("NCB-DE")
    recorded = [len(net.router.handle(topic, b"junk", net.now)) for _ in range(PER_WINDOW + 5)]
    assert recorded == [1] * PER_WINDOW + [0] * 5
    assert net.router.handle_timer(net.now + WINDOW - 1) == []  # still open
    # the next frame after the window's end brings the summary first, then its own drop
    events = net.router.handle(topic, b"junk", net.now + WINDOW)
    assert [(e.kind, e.count) for e in events] == [(DropSummary.kind, 5), ("drop", 1)]
    summary = events[0]
    assert summary.sender == "NCB-DE" and summary.reasons == (("wire.magic", 5),)
    assert (summary.since_ms, summary.until_ms) == (net.now, net.now)
    # a window without drops beyond the bound closes without a summary
    assert net.router.handle_timer(net.now + 3 * WINDOW) == []
    assert net.router.close_drop_windows(net.now + 4 * WINDOW) == []


def test_legitimate_traffic_is_never_summarised() -> None:
    """Only drops are bounded: accepted and refused envelopes, receipts and resends are
    recorded one by one whatever the garbage around them."""
    net = Net()
    for _ in range(3 * PER_WINDOW):
        net.router.handle(submit_topic("NCB-FR"), b"\xc1", net.now)
    for _ in range(3):
        legit_message_flows(net)
    assert net.router.close_drop_windows(net.now)[0].count == 2 * PER_WINDOW


@pytest.mark.parametrize(("bound", "recorded"), [(AuditBound(per_window=0), 0),
                                                 (AuditBound(per_window=3), 3), (None, 50)])
def test_the_bound_is_configurable_and_can_be_off(bound: AuditBound | None,
                                                  recorded: int) -> None:
    net = Net()
    net.router.audit_bound = bound
    events = [e for _ in range(50) for e in net.router.handle(submit_topic("NCB-FR"), b"x",
                                                              net.now)]
    summaries = net.router.close_drop_windows(net.now)
    assert len(events) == recorded
    assert len(events) + sum(e.count for e in summaries) == 50
    assert len(net.router.pop(net.now, limit=100)) == recorded  # answers follow the records


@pytest.mark.parametrize("kw", [{"per_window": -1}, {"window_ms": 0}])
def test_a_nonsensical_bound_is_refused(kw: dict[str, int]) -> None:
    with pytest.raises(ConfigError) as info:
        AuditBound(**kw)
    assert info.value.reason == "config.audit-bound"


# -- the answer to an undecodable submission -------------------------------------------------

def test_a_raw_forged_submission_is_audited_with_sender_and_digest_and_answered() -> None:
    net = Net()
    # a real message of NCB-FR's, in its outbox and accepted
    mid = net.send("NCB-FR", ["NCB-DE"], subject="real")
    net.settle()
    real = net.store("NCB-FR").outbox[mid]
    assert real.state == "delivered"
    # then bytes that start like an envelope carrying that id but do not decode
    forged = b"\x94\xa4i24e\x02\xc4\x20" + mid + bytes(15)
    events = net.router.handle(submit_topic("NCB-FR"), forged, net.now)
    assert [(e.kind, e.sender) for e in events] == [("drop", "NCB-FR")]
    drop = events[0]
    digest = hashlib.sha256(forged).digest()
    assert drop.digest == digest.hex() and drop.reason.startswith("wire.")
    entry = au.AuditChain().append(drop.kind, at_ms=net.now, actor="router",
                                   msg_id=drop.msg_id, reason=drop.reason,
                                   details=drop.audit_details())
    assert entry.msg_id == ""  # no message id can be trusted from bytes that do not decode
    assert entry.details_map()["from"] == "NCB-FR"
    assert entry.details_map()["digest"] == digest.hex()
    # the sender gets a signed refusal naming the reason, under the all-zero id
    ((topic, frame, prio),) = net.router.pop(net.now)
    assert topic == inbox_topic("NCB-FR") and prio == 4  # behind every delivery
    rep = fr.verify_report(fr.parse_frame(frame), net.directory)  # router-signed
    assert rep.msg_id == fr.NO_MESSAGE_ID == bytes(16)
    assert (rep.digest, rep.sender, rep.accepted, rep.reason, rep.recipients) == (
        digest, "NCB-FR", False, drop.reason, ())
    assert digest.hex() in rep.message and "could not decode" in rep.message
    # the node matches reports by id and digest: none of its entries is this one
    node_events = net.nodes["NCB-FR"].handle(inbox_topic("NCB-FR"), frame, net.now)
    assert [(e.kind, e.reason) for e in node_events] == [("drop", "report.unknown")]
    assert net.store("NCB-FR").outbox[mid] == real  # the real message is untouched
    legit_message_flows(net)


def test_the_all_zero_id_cannot_match_a_real_message_even_with_that_id() -> None:
    """Even a message whose id happens to be all zeros is not answered by such a report:
    the node also requires the digest of its own envelope bytes."""
    net = Net()
    raw = build("NCB-FR", ["NCB-DE"], now=net.now)
    node = net.nodes["NCB-FR"]
    from dataclasses import replace

    from i24net.core.node import OutboxEntry
    node.store.outbox_put(replace(OutboxEntry(fr.NO_MESSAGE_ID, raw, "message", 3,
                                              ("NCB-DE",), net.now, net.now + 3_600_000)))
    net.router.handle(submit_topic("NCB-FR"), b"\x94\xa4i24e\x02garbage", net.now)
    ((_, frame, _),) = net.router.pop(net.now)
    events = node.handle(inbox_topic("NCB-FR"), frame, net.now)
    assert [(e.kind, e.reason) for e in events] == [("drop", "report.digest")]
    assert node.store.outbox_get(fr.NO_MESSAGE_ID).state == "queued"


def test_frames_that_decode_but_do_not_verify_are_bounded_but_not_answered() -> None:
    """A receipt signed by someone else decodes: it is dropped (sender.topic or sig.invalid)
    and bounded like any drop, but only undecodable bytes get a report."""
    net = Net()
    raw = build("NCB-FR", ["NCB-DE"], now=net.now)
    from netfixtures import keys_for, parsed
    e = parsed(raw)
    receipt = fr.make_receipt(fr.Receipt(e.header.id, e.digest, "NCB-FR", "NCB-DE",
                                         "delivered", "", net.now), keys_for("NCB-DE"))
    for _ in range(PER_WINDOW + 10):
        net.router.handle(submit_topic("NCB-US"), receipt, net.now)
    assert net.router.pop(net.now) == []
    (summary,) = net.router.handle_timer(net.now + WINDOW)
    assert summary.reasons == (("sender.topic", 10),) and summary.sender == "NCB-US"


def test_answers_wait_behind_deliveries() -> None:
    net = Net()
    for _ in range(5):
        net.router.handle(submit_topic("NCB-FR"), b"\xc1", net.now)
    net.router.handle(submit_topic("NCB-FR"), build("NCB-FR", ["NCB-DE"], now=net.now),
                      net.now + SECOND)
    kinds = [fr.peek_magic(p) for _, p, _ in net.router.pop(net.now + SECOND, limit=100)]
    assert kinds == [fr.REPORT, fr.DELIVERY, *[fr.REPORT] * 5]  # acceptance, delivery, answers
