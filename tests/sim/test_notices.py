"""The notice lifecycle in virtual time: request, review, publication, cancellation,
Article 3 refusal, deletion orders - through the real GS desk on the GS node."""

from __future__ import annotations

from i24net.sim import NoticeCancelled, NoticePublished, NoticeRefused, Simulation, Withdrawn
from i24net.sim.history import Desk

from .support import assert_clean


def test_red_notice_published_then_cancelled_at_every_holder(demo: Simulation) -> None:
    req = demo.notice_request(1.0, "NCB-FR", colour="RED", subject="John DOE",
                              offence="homicide", warrant="FR-2026-0417")
    demo.partition(50.0, ["NCB-JP"])  # one holder is cut off when the cancellation goes
    cancel = demo.cancel_notice(60.0, "NCB-FR", req, reason="notice.arrested")
    demo.heal(90.0, ["NCB-JP"])
    h = demo.run(until=400)
    [pub] = h.of(NoticePublished)
    assert (pub.request_id, pub.requester, pub.number) == (req.msg_id, "NCB-FR",
                                                           "A-1/01-2026")
    holders = demo.messages[pub.msg_id].recipients
    assert len(holders) == 7  # everyone but the GS is cleared for OFFICIAL-USE
    [gone] = h.of(NoticeCancelled)
    assert (gone.msg_id, gone.by, gone.reason) == (pub.msg_id, "NCB-FR", "notice.arrested")
    withdrawn = {e.holder: e.t for e in h.of(Withdrawn) if e.msg_id == pub.msg_id}
    assert withdrawn == h.withdrawals(pub.msg_id) and h.notice(req.msg_id or "") == pub
    assert sorted(h.deliveries(pub.msg_id)) == sorted(holders)
    assert sorted(withdrawn) == sorted(holders)
    assert withdrawn["NCB-JP"] >= 90.0 > max(t for a, t in withdrawn.items() if a != "NCB-JP")
    for a in holders:
        [item] = [i for i in demo.inbox(a) if i.kind == "notice"]
        assert item.state == "cancelled"
    assert demo.state(cancel) == "delivered"
    assert_clean(h)


def test_article3_refusal(demo: Simulation) -> None:
    demo.notice_request(1.0, "NCB-BR", subject="R. ROE", offence="political",
                        warrant="BR-2026-9", label="RESTRICTED")
    h = demo.run(until=60)
    [refused] = h.of(NoticeRefused)
    assert (refused.requester, refused.reason) == ("NCB-BR", "article3.political")
    assert h.of(NoticePublished) == []
    [decision] = [i for i in demo.inbox("NCB-BR") if i.kind == "notice-decision"]
    assert decision.data["reason"] == "article3.political"
    assert_clean(h)


def test_manual_review_and_deletion_order() -> None:
    sim = Simulation.from_preset("demo", seed=4, auto_review=False)
    req = sim.notice_request(1.0, "NCB-DE", colour="YELLOW", subject="Missing child")
    sim.review(30.0, req, approve=True)
    dif = sim.send(2.0, "NCB-US", ["NCB-BR", "NCB-JP"], kind="diffusion",
                   label="RESTRICTED", subject="Wanted: suspect in a political case")
    sim.order_deletion(40.0, dif, reason="article3.political")
    sim.review(50.0, req, approve=True)  # already decided: recorded, not raised
    h = sim.run(until=200)
    assert [e.what for e in h.of(Desk)] == ["notice-review", "deletion-ordered",
                                           "approve-error"]
    [pub] = h.of(NoticePublished)
    assert pub.t == 30.0 and pub.request_id == req.msg_id
    deleted = sorted(e.holder for e in h.of(Withdrawn) if e.state == "deleted")
    assert deleted == ["NCB-BR", "NCB-JP", "NCB-US"]  # the sender is told too
    assert_clean(h)


def test_the_authority_cancels_a_notice_itself(demo: Simulation) -> None:
    """``authority_cancel``: the GS withdraws a published notice on its own; a request that
    was never sent, or a GS that is down, is recorded as a ``cancel-error``, never raised."""
    req = demo.notice_request(1.0, "NCB-FR", colour="RED", subject="John DOE",
                              offence="homicide", warrant="FR-2026-0417")
    demo.authority_cancel(30.0, req, reason="notice.arrested")
    demo.crash(40.0, "GS-LYON")
    demo.authority_cancel(45.0, req)
    demo.restart(50.0, "GS-LYON")
    h = demo.run(until=120)
    [pub] = h.of(NoticePublished)
    [gone] = h.of(NoticeCancelled)
    assert (gone.msg_id, gone.by, gone.reason) == (pub.msg_id, "GS-LYON", "notice.arrested")
    holders = demo.messages[pub.msg_id].recipients
    assert sorted(h.withdrawals(pub.msg_id)) == sorted(holders)
    assert [(e.t, e.what, e.reason) for e in h.of(Desk)] == [(45.0, "cancel-error",
                                                             "node.down")]
    assert_clean(h)
