"""notices: the lifecycle table (every legal and every illegal move), Article 3, numbering,
the GS register and the holder's idempotent view."""

from __future__ import annotations

import ast
import dataclasses
import itertools
from collections import deque
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from i24net.core import notices as nt
from i24net.core.errors import ConfigError, StateError, WireFormatError
from i24net.core.notices import (
    RETENTION_MS,
    TRANSITIONS,
    HoldingEvent,
    HoldingState,
    Notice,
    NoticeColour,
    NoticeEvent,
    NoticeHolding,
    NoticeRegistry,
    NoticeState,
)

S, E = NoticeState, NoticeEvent
GS = "GS-LYON"
T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
DAY = 24 * 3600 * 1000
RID = "a1" * 16
RED_FIELDS = {"subject": "Jean Dupont", "offence": "fraud", "warrant": "TJ-PARIS-2026-0042"}

# The lifecycle as the brief states it, written out independently of the module.
EXPECTED = {
    (S.REQUESTED, E.SUBMIT_FOR_REVIEW): S.UNDER_REVIEW,
    (S.REQUESTED, E.CANCEL): S.CANCELLED,
    (S.UNDER_REVIEW, E.APPROVE): S.PUBLISHED,
    (S.UNDER_REVIEW, E.REFUSE): S.REFUSED,
    (S.UNDER_REVIEW, E.CANCEL): S.CANCELLED,
    (S.PUBLISHED, E.UPDATE): S.UPDATED,
    (S.PUBLISHED, E.CANCEL): S.CANCELLED,
    (S.PUBLISHED, E.EXPIRE): S.EXPIRED,
    (S.PUBLISHED, E.RENEW): S.PUBLISHED,
    (S.UPDATED, E.UPDATE): S.UPDATED,
    (S.UPDATED, E.CANCEL): S.CANCELLED,
    (S.UPDATED, E.EXPIRE): S.EXPIRED,
    (S.UPDATED, E.RENEW): S.UPDATED,
}
LEGAL = sorted(((s, e, t) for (s, e), t in EXPECTED.items()), key=lambda x: (x[0].value,
                                                                             x[1].value))
ILLEGAL = [(s, e) for s in NoticeState for e in NoticeEvent if e not in TRANSITIONS[s]]


def _id(value: object) -> str:
    return value.name if isinstance(value, (NoticeState, NoticeEvent)) else str(value)


def fresh(colour: NoticeColour = NoticeColour.RED, fields: dict[str, str] | None = None,
          request_id: str = RID) -> Notice:
    return nt.request(request_id=request_id, requester="NCB-FR", colour=colour,
                      fields=RED_FIELDS if fields is None else fields, now_ms=T0)


def notice_in(state: NoticeState) -> Notice:
    """A notice brought to ``state`` through legal moves only."""
    n = fresh()
    path = {
        S.REQUESTED: [],
        S.UNDER_REVIEW: [E.SUBMIT_FOR_REVIEW],
        S.PUBLISHED: [E.SUBMIT_FOR_REVIEW, E.APPROVE],
        S.REFUSED: [E.SUBMIT_FOR_REVIEW, E.REFUSE],
        S.UPDATED: [E.SUBMIT_FOR_REVIEW, E.APPROVE, E.UPDATE],
        S.CANCELLED: [E.SUBMIT_FOR_REVIEW, E.APPROVE, E.CANCEL],
        S.EXPIRED: [E.SUBMIT_FOR_REVIEW, E.APPROVE, E.EXPIRE],
    }[state]
    for ev in path:
        n = step(n, ev)
    assert n.state is state
    return n


def step(n: Notice, ev: NoticeEvent) -> Notice:
    """Apply ``ev`` with whatever that event needs (a number, a due time, a change)."""
    now = T0 + DAY
    if ev is E.EXPIRE and n.expires_ms is not None:
        now = n.expires_ms
    return nt.apply(n, ev, actor=GS, now_ms=now,
                    number="A-1/01-2026" if ev is E.APPROVE else None,
                    changes={"subject": "Jean Dupont alias JD"} if ev is E.UPDATE else None)


# -- the table ----------------------------------------------------------------------------


def test_table_is_exactly_the_specified_lifecycle() -> None:
    actual = {(s, e): t for s, moves in TRANSITIONS.items() for e, t in moves.items()}
    assert actual == EXPECTED
    assert set(TRANSITIONS) == set(NoticeState)


def test_terminal_and_in_force_states() -> None:
    assert set(nt.TERMINAL_STATES) == {S.REFUSED, S.CANCELLED, S.EXPIRED}
    assert set(nt.IN_FORCE_STATES) == {S.PUBLISHED, S.UPDATED}


def test_every_state_is_reachable_from_a_request() -> None:
    seen, todo = {S.REQUESTED}, deque([S.REQUESTED])
    while todo:
        for t in TRANSITIONS[todo.popleft()].values():
            if t not in seen:
                seen.add(t)
                todo.append(t)
    assert seen == set(NoticeState)


@pytest.mark.parametrize(("state", "event", "target"), LEGAL, ids=_id)
def test_every_legal_transition(state: NoticeState, event: NoticeEvent,
                                target: NoticeState) -> None:
    before = notice_in(state)
    after = step(before, event)
    assert after.state is target
    assert after.history[-1].event is event and after.history[-1].actor == GS
    assert len(after.history) == len(before.history) + 1
    assert before.state is state  # values, not mutation


@pytest.mark.parametrize(("state", "event"), ILLEGAL, ids=_id)
def test_every_illegal_transition_names_event_notice_and_state(state: NoticeState,
                                                               event: NoticeEvent) -> None:
    n = notice_in(state)
    with pytest.raises(StateError) as info:
        step(n, event)
    assert info.value.reason == "notice.illegal-transition"
    msg = str(info.value)
    assert event.name in msg and state.name in msg and n.name in msg


def test_illegal_count_is_the_complement_of_the_table() -> None:
    assert len(ILLEGAL) + len(LEGAL) == len(NoticeState) * len(NoticeEvent)


def test_notice_values_are_frozen() -> None:
    n = fresh()
    with pytest.raises(dataclasses.FrozenInstanceError):
        n.state = S.PUBLISHED  # type: ignore[misc]


# -- guards inside apply ------------------------------------------------------------------


def test_approve_sets_number_publication_and_five_year_expiry() -> None:
    n = notice_in(S.PUBLISHED)
    assert n.number == "A-1/01-2026"
    assert n.published_ms == T0 + DAY
    assert n.expires_ms == T0 + DAY + RETENTION_MS
    assert RETENTION_MS == 5 * 365 * 24 * 3600 * 1000


def test_approve_without_a_number_is_refused() -> None:
    with pytest.raises(StateError) as info:
        nt.apply(notice_in(S.UNDER_REVIEW), E.APPROVE, actor=GS, now_ms=T0)
    assert info.value.reason == "notice.number-missing"


def test_expire_before_due_is_refused() -> None:
    n = notice_in(S.PUBLISHED)
    assert n.expires_ms is not None
    with pytest.raises(StateError) as info:
        nt.apply(n, E.EXPIRE, actor=GS, now_ms=n.expires_ms - 1)
    assert info.value.reason == "notice.not-due"
    assert nt.apply(n, E.EXPIRE, actor=GS, now_ms=n.expires_ms).state is S.EXPIRED


def test_refuse_keeps_the_reason_or_the_screens_finding() -> None:
    n = notice_in(S.UNDER_REVIEW)
    assert nt.apply(n, E.REFUSE, actor=GS, now_ms=T0, reason="notice.duplicate-person"
                    ).reason == "notice.duplicate-person"
    assert nt.apply(n, E.REFUSE, actor=GS, now_ms=T0).reason == "notice.refused"
    flagged = nt.apply(fresh(fields={**RED_FIELDS, "offence": "desertion"}),
                       E.SUBMIT_FOR_REVIEW, actor=GS, now_ms=T0)
    assert nt.apply(flagged, E.REFUSE, actor=GS, now_ms=T0).reason == "article3.military"


def test_changes_only_with_update() -> None:
    with pytest.raises(StateError):
        nt.apply(notice_in(S.PUBLISHED), E.RENEW, actor=GS, now_ms=T0,
                 changes={"subject": "x"})


def test_notice_refuses_inconsistent_or_malformed_values() -> None:
    with pytest.raises(StateError):
        dataclasses.replace(fresh(), number="A-1/01-2026")  # a number before publication
    with pytest.raises(StateError):
        dataclasses.replace(fresh(), state=S.PUBLISHED)  # published without a number
    with pytest.raises(WireFormatError):
        fresh(request_id="XYZ")
    with pytest.raises(WireFormatError):
        fresh(fields={**RED_FIELDS, "nickname": "JD"})  # unknown field
    with pytest.raises(WireFormatError):
        fresh(fields={**RED_FIELDS, "subject": "x" * (nt.MAX_FIELD + 1)})
    with pytest.raises(WireFormatError):
        nt.apply(notice_in(S.UNDER_REVIEW), E.REFUSE, actor=GS, now_ms=T0,
                 reason="Not A Code")


# -- colours, Article 3, colour rules -----------------------------------------------------


def test_colours_and_purposes() -> None:
    assert [c.value for c in NoticeColour] == [
        "RED", "YELLOW", "BLUE", "BLACK", "GREEN", "ORANGE", "PURPLE", "SILVER", "UN-SPECIAL"]
    for c in NoticeColour:
        assert c.purpose and "\n" not in c.purpose
    assert "arrest" in NoticeColour.RED.purpose and "extradition" in NoticeColour.RED.purpose
    assert NoticeColour.parse(" un_special ") is NoticeColour.UN_SPECIAL
    assert NoticeColour.parse("red") is NoticeColour.RED
    with pytest.raises(ConfigError):
        NoticeColour.parse("PINK")


ARTICLE3_TABLE = [
    ("political", "article3.political"),
    ("treason", "article3.political"),
    ("espionage", "article3.political"),
    ("military", "article3.military"),
    ("desertion", "article3.military"),
    ("religious", "article3.religious"),
    ("blasphemy", "article3.religious"),
    ("racial", "article3.racial"),
    ("homicide", None),
    ("drug-trafficking", None),
    ("fraud", None),
    ("terrorism", None),
    ("cybercrime", None),
    ("trafficking-in-persons", None),
    ("money-laundering", None),
    ("organised-crime", None),
    ("sexual-offences", None),
    ("theft", None),
    ("  Political ", "article3.political"),  # normalised
    ("FRAUD", None),
    ("jaywalking", "notice.unknown-category"),
    ("", "notice.unknown-category"),
]


@pytest.mark.parametrize(("category", "expected"), ARTICLE3_TABLE)
def test_article3_screen(category: str, expected: str | None) -> None:
    assert nt.article3_screen(category) == expected


def test_every_category_is_documented_and_screened() -> None:
    for category, text in nt.OFFENCE_CATEGORIES.items():
        assert text
        assert nt.article3_screen(category) == nt.ARTICLE3_REASONS.get(category)
    assert set(nt.ARTICLE3_REASONS) <= set(nt.OFFENCE_CATEGORIES)
    assert {r.partition(".")[2] for r in nt.ARTICLE3_REASONS.values()} == {
        "political", "military", "religious", "racial"}


@pytest.mark.parametrize("missing", ["subject", "offence", "warrant"])
def test_red_needs_subject_offence_and_warrant(missing: str) -> None:
    problems = nt.validate_request(NoticeColour.RED, {**RED_FIELDS, missing: "  "})
    assert len(problems) == 1 and repr(missing) in problems[0]
    assert nt.validate_request(NoticeColour.RED, RED_FIELDS) == []
    assert len(nt.validate_request(NoticeColour.RED, {})) == 3


def test_yellow_needs_the_missing_persons_name() -> None:
    [problem] = nt.validate_request(NoticeColour.YELLOW, {})
    assert "missing person" in problem
    assert nt.validate_request(NoticeColour.YELLOW, {"subject": "Anna K."}) == []


@pytest.mark.parametrize("colour", [c for c in NoticeColour
                                    if c not in (NoticeColour.RED, NoticeColour.YELLOW)])
def test_other_colours_need_a_subject(colour: NoticeColour) -> None:
    assert len(nt.validate_request(colour, {})) == 1
    assert nt.validate_request(colour, {"subject": "x"}) == []


def test_screen_request_order_completeness_then_article3() -> None:
    assert nt.screen_request(NoticeColour.RED, {"offence": "political"}) == "notice.incomplete"
    assert nt.screen_request(NoticeColour.BLUE, {"subject": "x"}) is None
    assert nt.screen_request(NoticeColour.BLUE, {"subject": "x", "offence": "racial"}) \
        == "article3.racial"


# -- numbers ------------------------------------------------------------------------------


def test_number_format_and_parse() -> None:
    assert nt.format_number(123, 11, 2026) == "A-123/11-2026"
    assert nt.format_number(1, 1, 2026) == "A-1/01-2026"
    assert nt.parse_number("A-123/11-2026") == (123, 11, 2026)
    for bad in ("A-0/01-2026", "A-1/13-2026", "A-1/1-2026", "B-1/01-2026", "A-01/01-2026"):
        with pytest.raises(WireFormatError):
            nt.parse_number(bad)


def test_month_year_boundaries_are_utc() -> None:
    assert nt.month_year(T0 - 1) == (12, 2025)
    assert nt.month_year(T0) == (1, 2026)


def publish(reg: NoticeRegistry, rid: str, now: int, colour: NoticeColour = NoticeColour.RED,
            fields: dict[str, str] | None = None) -> Notice:
    reg.request(request_id=rid, requester="NCB-FR", colour=colour,
                fields=RED_FIELDS if fields is None else fields, now_ms=now)
    return reg.review(rid, approve=True, actor=GS, now_ms=now)


def test_sequence_runs_per_year() -> None:
    reg = NoticeRegistry(GS)
    jan, mar, dec = T0, T0 + 60 * DAY, T0 + 364 * DAY
    next_year = T0 + 365 * DAY  # 2027-01-01
    numbers = [publish(reg, f"{i:02x}", t).number
               for i, t in enumerate([jan, mar, dec, next_year, next_year + DAY])]
    assert numbers == ["A-1/01-2026", "A-2/03-2026", "A-3/12-2026", "A-1/01-2027",
                       "A-2/01-2027"]
    assert reg.by_number("A-3/12-2026").request_id == "02"


# -- the register -------------------------------------------------------------------------


def test_request_review_publish_send_cancel_reaches_every_holder() -> None:
    reg = NoticeRegistry(GS)
    n = reg.request(request_id=RID, requester="NCB-FR", colour=NoticeColour.RED,
                    fields=RED_FIELDS, now_ms=T0)
    assert n.state is S.REQUESTED and n.number is None
    n = reg.review(RID, approve=True, actor=GS, now_ms=T0 + 1000)
    assert (n.state, n.number) == (S.PUBLISHED, "A-1/01-2026")
    assert [h.event for h in n.history] == [E.SUBMIT_FOR_REVIEW, E.APPROVE]
    reg.record_sent(RID, ["NCB-DE", "NCB-IT"])
    assert reg.record_sent(RID, ["NCB-ES"]) == {"NCB-DE", "NCB-IT", "NCB-ES"}
    cancelled, tell = reg.cancel(RID, actor=GS, now_ms=T0 + DAY, reason="notice.arrested")
    assert cancelled.state is S.CANCELLED and cancelled.reason == "notice.arrested"
    assert tell == {"NCB-DE", "NCB-IT", "NCB-ES"}
    assert reg.get(RID) == cancelled and reg.in_force() == []


def test_political_request_is_refused_with_article3_reason() -> None:
    reg = NoticeRegistry(GS)
    reg.request(request_id=RID, requester="NCB-XX", colour=NoticeColour.RED,
                fields={**RED_FIELDS, "offence": "political"}, now_ms=T0)
    n = reg.review(RID, approve=False, actor=GS, now_ms=T0)
    assert (n.state, n.reason, n.number) == (S.REFUSED, "article3.political", None)


@pytest.mark.parametrize("category", sorted(nt.ARTICLE3_REASONS))
def test_approving_a_flagged_request_raises_and_changes_nothing(category: str) -> None:
    reg = NoticeRegistry(GS)
    before = reg.request(request_id=RID, requester="NCB-XX", colour=NoticeColour.RED,
                         fields={**RED_FIELDS, "offence": category}, now_ms=T0)
    with pytest.raises(StateError) as info:
        reg.review(RID, approve=True, actor=GS, now_ms=T0)
    assert info.value.reason == nt.ARTICLE3_REASONS[category]
    assert "Article 3" in str(info.value)
    assert reg.get(RID) == before  # not even moved to review
    # no number was used up by the failed approval
    assert publish(reg, "bb", T0).number == "A-1/01-2026"


@pytest.mark.parametrize(("fields", "reason"), [
    ({"subject": "X", "offence": "fraud"}, "notice.incomplete"),
    ({**RED_FIELDS, "offence": "jaywalking"}, "notice.unknown-category"),
])
def test_incomplete_or_unknown_requests_can_only_be_refused(fields: dict[str, str],
                                                            reason: str) -> None:
    reg = NoticeRegistry(GS)
    reg.request(request_id=RID, requester="NCB-FR", colour=NoticeColour.RED, fields=fields,
                now_ms=T0)
    with pytest.raises(StateError) as info:
        reg.review(RID, approve=True, actor=GS, now_ms=T0)
    assert info.value.reason == reason
    assert reg.review(RID, approve=False, actor=GS, now_ms=T0).reason == reason


def test_only_the_notice_authority_reviews_updates_renews_cancels() -> None:
    reg = NoticeRegistry(GS)
    reg.request(request_id=RID, requester="NCB-FR", colour=NoticeColour.RED,
                fields=RED_FIELDS, now_ms=T0)
    for actor in ("NCB-FR", "NCB-DE"):
        with pytest.raises(StateError) as info:
            reg.review(RID, approve=True, actor=actor, now_ms=T0)
        assert info.value.reason == "notice.not-authority" and info.value.agency == actor
    reg.review(RID, approve=True, actor=GS, now_ms=T0)
    for call in (lambda: reg.update(RID, {"subject": "y"}, actor="NCB-FR", now_ms=T0),
                 lambda: reg.renew(RID, actor="NCB-FR", now_ms=T0),
                 lambda: reg.cancel(RID, actor="NCB-FR", now_ms=T0)):
        with pytest.raises(StateError) as info:
            call()
        assert info.value.reason == "notice.not-authority"
    assert reg.get(RID).state is S.PUBLISHED


@pytest.mark.parametrize("submitted", [False, True])
def test_requester_may_withdraw_its_undecided_request(submitted: bool) -> None:
    reg = NoticeRegistry(GS)
    reg.request(request_id=RID, requester="NCB-FR", colour=NoticeColour.BLUE,
                fields={"subject": "x"}, now_ms=T0)
    if submitted:
        assert reg.submit_for_review(RID, actor="NCB-FR", now_ms=T0).state is S.UNDER_REVIEW
    with pytest.raises(StateError) as info:
        reg.cancel(RID, actor="NCB-DE", now_ms=T0)  # someone else's request
    assert info.value.reason == "notice.not-authority"
    n, tell = reg.cancel(RID, actor="NCB-FR", now_ms=T0 + 1, reason="notice.withdrawn")
    assert (n.state, n.reason, tell) == (S.CANCELLED, "notice.withdrawn", frozenset())


def test_duplicate_and_unknown_requests() -> None:
    reg = NoticeRegistry(GS)
    publish(reg, RID, T0)
    with pytest.raises(StateError) as info:
        reg.request(request_id=RID, requester="NCB-FR", colour=NoticeColour.RED,
                    fields=RED_FIELDS, now_ms=T0)
    assert info.value.reason == "notice.duplicate"
    with pytest.raises(StateError) as info:
        reg.get("ff")
    assert info.value.reason == "notice.unknown"
    with pytest.raises(StateError):
        reg.by_number("A-9/01-2026")
    assert len(reg) == 1 and RID in reg and [n.request_id for n in reg] == [RID]


def test_update_counts_rescreens_and_tells_holders() -> None:
    reg = NoticeRegistry(GS)
    publish(reg, RID, T0)
    reg.record_sent(RID, ["NCB-DE"])
    n, tell = reg.update(RID, {"subject": "Jean Dupont alias JD"}, actor=GS, now_ms=T0 + 1)
    assert (n.state, n.updates, n.subject, tell) == (S.UPDATED, 1, "Jean Dupont alias JD",
                                                     {"NCB-DE"})
    n, _ = reg.update(RID, {"warrant": "TJ-PARIS-2026-0043"}, actor=GS, now_ms=T0 + 2)
    assert (n.state, n.updates, n.number) == (S.UPDATED, 2, "A-1/01-2026")
    with pytest.raises(StateError) as info:
        reg.update(RID, {"offence": "religious"}, actor=GS, now_ms=T0 + 3)
    assert info.value.reason == "article3.religious"
    with pytest.raises(StateError) as info:
        reg.update(RID, {"warrant": ""}, actor=GS, now_ms=T0 + 3)
    assert info.value.reason == "notice.incomplete"
    assert reg.get(RID) == n


def test_cannot_send_what_is_not_in_force() -> None:
    reg = NoticeRegistry(GS)
    reg.request(request_id=RID, requester="NCB-FR", colour=NoticeColour.RED,
                fields=RED_FIELDS, now_ms=T0)
    with pytest.raises(StateError) as info:
        reg.record_sent(RID, ["NCB-DE"])
    assert info.value.reason == "notice.not-in-force"


# -- expiry and renewal -------------------------------------------------------------------


def test_expiry_after_five_years() -> None:
    reg = NoticeRegistry(GS)
    n = publish(reg, RID, T0)
    publish(reg, "bb", T0 + DAY)
    assert reg.next_expiry() == T0 + RETENTION_MS
    assert reg.expire_due(T0 + RETENTION_MS - 1) == []
    [expired] = reg.expire_due(T0 + RETENTION_MS)
    assert (expired.request_id, expired.state, expired.number) == (RID, S.EXPIRED, n.number)
    assert expired.history[-1].actor == GS
    assert reg.expire_due(T0 + RETENTION_MS) == []  # already done
    assert reg.next_expiry() == T0 + DAY + RETENTION_MS
    assert [x.request_id for x in reg.expire_due(T0 + 10 * RETENTION_MS)] == ["bb"]
    assert reg.next_expiry() is None


def test_renew_restarts_the_five_years() -> None:
    reg = NoticeRegistry(GS)
    publish(reg, RID, T0)
    reg.record_sent(RID, ["NCB-DE"])
    renewed_at = T0 + 4 * 365 * DAY
    n, tell = reg.renew(RID, actor=GS, now_ms=renewed_at)
    assert (n.state, n.expires_ms, tell) == (S.PUBLISHED, renewed_at + RETENTION_MS,
                                             {"NCB-DE"})
    assert reg.expire_due(T0 + RETENTION_MS) == []
    assert [x.state for x in reg.expire_due(renewed_at + RETENTION_MS)] == [S.EXPIRED]
    with pytest.raises(StateError):
        reg.renew(RID, actor=GS, now_ms=renewed_at + RETENTION_MS + 1)  # expired is terminal


# -- the holder's view --------------------------------------------------------------------

HS, HE = HoldingState, HoldingEvent
HOLDING_PAIRS = list(itertools.product(HoldingState, HoldingEvent))


def test_holding_table_is_total() -> None:
    assert set(nt.HOLDING_TRANSITIONS) == set(HoldingState)
    for moves in nt.HOLDING_TRANSITIONS.values():
        assert set(moves) == set(HoldingEvent)


@pytest.mark.parametrize(("state", "event"), HOLDING_PAIRS, ids=_id)
def test_holding_events_are_idempotent(state: HoldingState, event: HoldingEvent) -> None:
    once = nt.HOLDING_TRANSITIONS[state][event]
    assert nt.HOLDING_TRANSITIONS[once][event] is once
    h = NoticeHolding(RID, state=state)
    assert h.receive(event).receive(event) == h.receive(event)


def test_cancelled_absorbs_everything() -> None:
    assert set(nt.HOLDING_TRANSITIONS[HS.CANCELLED].values()) == {HS.CANCELLED}


def test_same_cancel_twice_is_fine() -> None:
    h = NoticeHolding(RID).receive(HE.PUBLISH, number="A-1/01-2026", expires_ms=T0)
    assert h.in_force
    once = h.receive(HE.CANCEL)
    assert once.state is HS.CANCELLED and not once.in_force
    assert once.receive(HE.CANCEL) == once


def test_cancel_before_publish_is_remembered() -> None:
    h = NoticeHolding(RID).receive(HE.CANCEL, number="A-1/01-2026")
    assert h.state is HS.CANCELLED
    late = h.receive(HE.PUBLISH, number="A-1/01-2026", expires_ms=T0 + RETENTION_MS)
    assert late.state is HS.CANCELLED and not late.in_force


def test_update_before_publish_and_stale_messages_do_not_roll_back() -> None:
    h = NoticeHolding(RID).receive(HE.UPDATE, version=2, expires_ms=T0 + 2)
    h = h.receive(HE.PUBLISH, version=0, expires_ms=T0)  # the late original
    assert (h.state, h.version, h.expires_ms) == (HS.UPDATED, 2, T0 + 2)
    h = h.receive(HE.UPDATE, version=1, expires_ms=T0 + 1)  # a stale update
    assert (h.version, h.expires_ms) == (2, T0 + 2)


def test_holding_expires_on_the_local_clock() -> None:
    h = NoticeHolding(RID).receive(HE.PUBLISH, expires_ms=T0 + 10)
    assert h.expire_if_due(T0 + 9) == h
    gone = h.expire_if_due(T0 + 10)
    assert gone.state is HS.EXPIRED
    assert gone.receive(HE.PUBLISH).state is HS.EXPIRED
    assert gone.receive(HE.CANCEL).state is HS.CANCELLED
    assert NoticeHolding(RID).expire_if_due(T0).state is HS.NOT_HELD


@given(versions=st.lists(st.integers(0, 20), max_size=6), with_cancel=st.booleans(),
       data=st.data())
def test_any_delivery_order_ends_in_the_same_holding(versions: list[int], with_cancel: bool,
                                                     data: st.DataObject) -> None:
    msgs: list[tuple[HoldingEvent, int]] = [(HE.PUBLISH, 0)]
    msgs += [(HE.UPDATE, v) for v in versions]
    if with_cancel:
        msgs.append((HE.CANCEL, 0))
    order = data.draw(st.permutations(msgs))
    dupes = data.draw(st.lists(st.sampled_from(msgs), max_size=3))  # redelivered copies
    h = NoticeHolding(RID)
    for ev, v in [*order, *dupes]:
        h = h.receive(ev, version=v, expires_ms=T0 + v)
    if with_cancel:
        assert h.state is HS.CANCELLED
    else:
        assert h.state is (HS.UPDATED if versions else HS.IN_FORCE)
        assert h.version == max(versions, default=0)
        assert h.expires_ms == T0 + max(versions, default=0)


# -- the sans-IO rule ---------------------------------------------------------------------

FORBIDDEN = {"asyncio", "sqlite3", "rich", "time", "random", "os", "socket", "aiomqtt"}


@pytest.mark.parametrize("module", [nt.__file__])
def test_module_is_sans_io(module: str) -> None:
    tree = ast.parse(Path(module).read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert not imported & FORBIDDEN
