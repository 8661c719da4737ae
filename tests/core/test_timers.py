"""The machines' timers as drivers use them: ``next_timer`` says when, ``handle_timer`` acts.

A driver (a daemon, the simulator) sleeps until ``next_timer()`` and then calls
``handle_timer(now)``; it never reads a machine's private schedules. So the earliest of
everything a machine waits for must show in ``next_timer`` - an outbox retry or expiry, a
gap request, a sending key to replace, a drop window to close - never later than the work
(a driver would then sleep through it), and ``handle_timer`` at that time must do the work.
"""

from __future__ import annotations

from dataclasses import replace

from netfixtures import (
    ROUTER,
    SECOND,
    T0,
    Rng,
    build,
    demo_directory,
    header,
    keys_for,
    kid,
    parsed,
    stamp_delivery,
)

from i24net.core import events as ev
from i24net.core import frames as fr
from i24net.core.envelope import Body
from i24net.core.node import (
    GAP_GRACE_MS,
    RETRY_MIN_MS,
    SENDING_KEY_MS,
    MemoryNodeStore,
    NodeMachine,
    OutboxState,
)
from i24net.core.router import AuditBound, MemoryRouterStore, RouterMachine

D = demo_directory()


def node(agency: str) -> NodeMachine:
    n = NodeMachine(agency, keys_for(agency), D, MemoryNodeStore(),
                    random_bytes=Rng(f"timers-{agency}"))
    n.retry_jitter = 0.0  # retries exactly RETRY_MIN_MS after the send
    assert n.handle_timer(T0) == [] and n.next_timer() is None  # the start-up pick-up
    return n


def inbox(n: NodeMachine) -> str:
    return f"{D.prefix}/inbox/{n.agency}"


def send(n: NodeMachine, to: str, now: int = T0) -> bytes:
    h = header(n.agency, [to], now=now, rng=n.random_bytes)
    raw, _ = n.submit(h, Body("subject", "text"), now)
    n.pop()
    return raw


def report(raw: bytes, *, accepted: bool, at: int = T0) -> bytes:
    env = parsed(raw)
    h = env.header
    rep = fr.Report(h.id, env.digest, h.sender, accepted, "ok" if accepted else "policy.x",
                    "m", h.recipients if accepted else (), at, kid(ROUTER))
    return fr.make_report(rep, ROUTER)


def receipt(raw: bytes, receiver: str) -> bytes:
    env = parsed(raw)
    rec = fr.Receipt(env.header.id, env.digest, env.header.sender, receiver, "delivered", "",
                     T0)
    return fr.make_receipt(rec, keys_for(receiver))


def delivery(n: NodeMachine, seq: int) -> None:
    raw = build("NCB-FR", [n.agency], now=T0)
    assert [type(e) for e in n.handle(inbox(n), stamp_delivery(raw, n.agency, seq), T0)] \
        == [ev.Received]
    n.pop()


def kinds(events: list[ev.NodeEvent] | list[ev.RouterEvent]) -> list[type]:
    return [type(e) for e in events]


# -- the node -------------------------------------------------------------------------------

def test_an_outbox_deadline_is_the_timer_and_handle_timer_retries_at_it() -> None:
    n = node("NCB-FR")
    raw = send(n, "NCB-DE")
    assert n.next_timer() == T0 + RETRY_MIN_MS
    assert n.handle_timer(T0 + RETRY_MIN_MS - 1) == []  # early: nothing due, nothing done
    assert kinds(n.handle_timer(T0 + RETRY_MIN_MS)) == [ev.Retried]
    assert [p for _, p, _ in n.pop()] == [raw]
    assert n.next_timer() == T0 + RETRY_MIN_MS + 2 * RETRY_MIN_MS  # backed off


def test_a_gap_before_the_outbox_deadline_comes_first() -> None:
    n = node("NCB-DE")
    send(n, "NCB-FR")  # its retry is due at T0 + RETRY_MIN_MS
    delivery(n, 1)
    delivery(n, 3)  # 2 is missing: asked for after the grace period
    assert GAP_GRACE_MS < RETRY_MIN_MS
    assert n.next_timer() == T0 + GAP_GRACE_MS
    assert kinds(n.handle_timer(T0 + GAP_GRACE_MS)) == [ev.SequenceGap]
    (_, payload, _), = n.pop()
    gap = fr.verify_gap(fr.parse_frame(payload), D)
    assert (gap.first, gap.last) == (2, 2)
    assert n.next_timer() == T0 + RETRY_MIN_MS  # then the outbox again
    assert kinds(n.handle_timer(T0 + RETRY_MIN_MS)) == [ev.Retried]


def test_a_key_rotation_is_the_timer_once_the_outbox_is_done() -> None:
    n = node("NCB-FR")
    raw = send(n, "NCB-DE")
    n.handle(inbox(n), report(raw, accepted=True), T0)
    assert kinds(n.handle(inbox(n), receipt(raw, "NCB-DE"), T0)) == [ev.ReceiptIn,
                                                                       ev.Delivered]
    # Finished before its retry: the timer may still say the retry (early, never late);
    # the next handle_timer finds nothing to do and puts the key's time instead.
    due = n.next_timer()
    assert due is not None and due <= T0 + RETRY_MIN_MS
    assert n.handle_timer(due) == []
    assert n.next_timer() == T0 + SENDING_KEY_MS  # the sending key first sealed at T0
    before = n.keys.sending_public
    assert n.handle_timer(T0 + SENDING_KEY_MS - 1) == []
    assert kinds(n.handle_timer(T0 + SENDING_KEY_MS)) == [ev.KeyChanged]
    assert n.keys.sending_public != before
    assert n.next_timer() is None  # a new sending key waits for its first seal


def test_the_earliest_of_all_three_is_reported() -> None:
    n = node("NCB-DE")
    send(n, "NCB-FR")
    delivery(n, 2)  # 1 missing
    timers = {"outbox": T0 + RETRY_MIN_MS, "gap": T0 + GAP_GRACE_MS,
              "key": T0 + SENDING_KEY_MS}
    assert n.next_timer() == min(timers.values())


def test_a_refused_message_accepted_late_is_retried_again() -> None:
    """A refused entry is final and leaves the timer; a late report that the router
    accepted it after all (a retry it accepted) makes it active again, and the timer must
    come back with it, or a driver that sleeps on ``next_timer`` would never retry it."""
    n = node("NCB-FR")
    raw = send(n, "NCB-DE")
    assert kinds(n.handle(inbox(n), report(raw, accepted=False), T0)) \
        == [ev.SubmissionRefused]
    n.handle_timer(T0 + 1)
    assert n.next_timer() == T0 + SENDING_KEY_MS  # nothing left in the outbox
    assert kinds(n.handle(inbox(n), report(raw, accepted=True, at=T0 + 2), T0 + 2)) \
        == [ev.SubmissionAccepted]
    entry = n.store.outbox_get(parsed(raw).header.id)
    assert entry is not None and entry.state == OutboxState.ACCEPTED
    assert n.next_timer() == entry.next_ms == T0 + RETRY_MIN_MS
    assert kinds(n.handle_timer(entry.next_ms)) == [ev.Retried]


def test_outbox_states_keep_their_stored_names() -> None:
    n = node("NCB-FR")
    raw = send(n, "NCB-DE")
    entry = n.store.outbox_get(parsed(raw).header.id)
    assert entry is not None
    assert entry.state == "queued" and f"{entry.state}" == "queued"
    assert replace(entry, state="delivered").state is OutboxState.DELIVERED  # type: ignore[arg-type]


# -- the router -----------------------------------------------------------------------------

def test_a_drop_window_is_the_routers_timer_and_handle_timer_sums_it_up() -> None:
    bound = AuditBound(per_window=1, window_ms=10 * SECOND)
    r = RouterMachine(D, ROUTER, MemoryRouterStore(), audit_bound=bound)
    topic = f"{D.prefix}/submit/NCB-FR"
    assert r.next_timer() is None
    assert kinds(r.handle(topic, b"junk", T0)) == [ev.FrameDropped]
    assert r.next_timer() == T0 + bound.window_ms
    assert r.handle(topic, b"junk", T0 + 1) == []  # beyond the bound: only counted
    assert r.handle_timer(T0 + bound.window_ms - 1) == []
    (summary,) = r.handle_timer(T0 + bound.window_ms)
    assert isinstance(summary, ev.DropSummary) and summary.count == 1
    assert r.next_timer() is None


def test_closing_every_drop_window_before_stopping() -> None:
    r = RouterMachine(D, ROUTER, MemoryRouterStore(),
                      audit_bound=AuditBound(per_window=0, window_ms=60 * SECOND))
    r.handle(f"{D.prefix}/submit/NCB-FR", b"junk", T0)
    assert r.handle_timer(T0 + 1) == []  # the window has not ended
    assert kinds(r.close_drop_windows(T0 + 1)) == [ev.DropSummary]
    assert r.next_timer() is None
