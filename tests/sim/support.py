"""Helpers shared by the simulator tests."""

from __future__ import annotations

from i24net.sim import Deliver, History, flow_report


def assert_clean(history: History) -> None:
    """No information-flow violation, and nothing left undelivered."""
    rep = flow_report(history)
    assert [str(v) for v in rep.violations] == []
    assert [(u.msg_id[:8], u.recipient, u.text) for u in rep.undelivered] == []


def deliveries(history: History, msg_id: str | None) -> list[tuple[str, float]]:
    """(recipient, t) of every delivery of one message, in order."""
    return [(e.recipient, e.t) for e in history.of(Deliver) if e.msg_id == msg_id]
