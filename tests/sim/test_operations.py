"""Joint operations and agreements in virtual time: a member removed from an operation
receives nothing more under its caveat, a closed operation routes nothing, and an ended
agreement stops what crossed between the two organisations; the flow checker stays clean."""

from __future__ import annotations

from i24net.config.presets import AGREEMENT_ID, preset_toml
from i24net.sim import Deliver, History, NoticePublished, Refuse, Simulation

from .support import assert_clean

OP = "RESTRICTED//TRIDENT"


def _delivered(h: History, msg_id: str | None) -> set[str]:
    return {e.recipient for e in h.of(Deliver) if e.msg_id == msg_id}


def _refused(h: History, msg_id: str | None) -> str | None:
    return next((e.reason for e in h.of(Refuse) if e.msg_id == msg_id), None)


def test_a_removed_member_receives_nothing_more_under_the_operation() -> None:
    sim = Simulation.from_toml(preset_toml("demo"), seed=4)
    sim.create_operation(1.0, "TRIDENT", "NCB-FR", ["NCB-DE", "NCB-US", "EUROPOL"],
                         until=600.0, title="Trafficking network")
    before = sim.send(2.0, "NCB-FR", ["@TRIDENT"], label=OP, subject="before")
    sim.change_operation(5.0, "TRIDENT", remove=["NCB-US"])
    after = sim.send(6.0, "NCB-FR", ["@TRIDENT"], label=OP, subject="after")
    direct = sim.send(7.0, "NCB-FR", ["NCB-US"], label=OP, subject="direct")
    sim.close_operation(10.0, "TRIDENT")
    closed = sim.send(11.0, "NCB-FR", ["NCB-DE"], label=OP, subject="closed")
    h = sim.run(until=60.0)
    assert _delivered(h, before.msg_id) == {"NCB-DE", "NCB-US", "EUROPOL"}
    assert _delivered(h, after.msg_id) == {"NCB-DE", "EUROPOL"}
    assert _refused(h, direct.msg_id) == "clearance.recipient"
    assert _refused(h, closed.msg_id) == "operation.closed"
    us = {i.subject for i in sim.inbox("NCB-US")}
    assert "before" in us and not us & {"after", "direct", "closed"}
    assert_clean(h)


def test_an_operation_past_its_end_routes_nothing() -> None:
    sim = Simulation.from_toml(preset_toml("demo"), seed=4)
    sim.create_operation(1.0, "TRIDENT", "NCB-FR", ["NCB-DE"], until=20.0)
    inside = sim.send(5.0, "NCB-FR", ["NCB-DE"], label=OP, subject="inside")
    late = sim.send(25.0, "NCB-FR", ["@TRIDENT"], subject="late")
    h = sim.run(until=60.0)
    assert _delivered(h, inside.msg_id) == {"NCB-DE"}
    assert _refused(h, late.msg_id) == "operation.expired"
    assert_clean(h)


def test_an_ended_agreement_stops_what_crossed_under_it() -> None:
    sim = Simulation.from_toml(preset_toml("demo"), seed=4)
    first = sim.send(1.0, "NCB-FR", ["EUROPOL", "NCB-DE"], label="RESTRICTED", subject="a")
    sim.end_agreement(5.0, AGREEMENT_ID)
    second = sim.send(6.0, "NCB-FR", ["EUROPOL", "NCB-DE"], label="RESTRICTED", subject="b")
    inside = sim.send(7.0, "NCB-FR", ["NCB-DE"], label="RESTRICTED", subject="c")
    reply = sim.send(8.0, "EUROPOL", ["NCB-FR"], label="RESTRICTED", subject="d")
    h = sim.run(until=60.0)
    assert _delivered(h, first.msg_id) == {"EUROPOL", "NCB-DE"}
    assert _refused(h, second.msg_id) == "agreement.expired"
    assert _refused(h, reply.msg_id) == "agreement.expired"
    assert _delivered(h, inside.msg_id) == {"NCB-DE"}
    [item] = [i for i in sim.inbox("EUROPOL") if i.subject == "a"]
    assert item.agreement == AGREEMENT_ID
    assert_clean(h)


def test_a_notice_goes_only_where_an_agreement_lets_it_and_its_withdrawal_outlives_it(
        ) -> None:
    sim = Simulation.from_toml(preset_toml("demo"), seed=4)
    # H3 is not honoured by the INTERPOL-Europol agreement: Europol is left out, the
    # others get the notice (the router would refuse the whole message otherwise)
    restricted = sim.notice_request(1.0, "NCB-FR", subject="A. ROE", offence="fraud",
                                    warrant="FR-1", handling=["H3"],
                                    h3_text="not for use in court")
    plain = sim.notice_request(2.0, "NCB-DE", subject="B. ROE", offence="fraud",
                               warrant="DE-1")
    sim.end_agreement(30.0, AGREEMENT_ID)
    sim.cancel_notice(40.0, "NCB-DE", plain, reason="notice.arrested")
    h = sim.run(until=120.0)
    published = {e.request_id: e.msg_id for e in h.of(NoticePublished)}
    assert set(published) == {restricted.msg_id, plain.msg_id}
    assert "EUROPOL" not in sim.messages[published[restricted.msg_id]].recipients
    assert len(sim.messages[published[restricted.msg_id]].recipients) == 6
    assert "EUROPOL" in sim.messages[published[plain.msg_id]].recipients
    # the agreement ended, but the cancellation of what was sent under it still reaches
    # Europol
    assert "EUROPOL" in h.withdrawals(published[plain.msg_id])
    [item] = [i for i in sim.inbox("EUROPOL") if i.kind == "notice"]
    assert item.state == "cancelled"
    assert_clean(h)
