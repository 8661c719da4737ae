"""Events are types: one class per event, each with its own audit name, and the names are
exactly those the audit chain has always recorded.

The audit chain, ``audit verify``, the audit viewers and the simulator's history read the
``event`` names, so the set below is fixed: a renamed or a new name is a format change and
must show up here first. The producers are checked two ways: no code anywhere builds a bare
``NodeEvent`` or ``RouterEvent`` (every event is built as its type), every type is produced
somewhere, and a run of the machines over a small network yields nothing but those types.
"""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import pytest
from netfixtures import Net, header

from i24net.core import events as ev
from i24net.core.envelope import Body
from i24net.core.lifecycle import install_lifecycle
from i24net.core.policy import complete_addressing

GS = "GS-LYON"
PACKAGE = Path(__file__).resolve().parents[2] / "i24net"

NODE_AUDIT_NAMES = {
    "submit", "accepted", "refused", "deferred", "receipt", "delivered", "received",
    "duplicate", "refused-in", "drop", "retry", "expired", "gap", "key", "violation",
    "directory", "cancelled", "deleted", "updated", "notice-published", "notice-refused",
    "notice-review", "notice-duplicate", "notice-cancelled", "notice-cancel-refused",
    "deletion-ordered", "desk-error", "purged"}
ROUTER_AUDIT_NAMES = {"accept", "refuse", "duplicate", "receipt", "resend", "forward", "drop",
                      "drop-summary", "directory"}


def event_types(base: type) -> list[type]:
    """The events of one side: every class of ``events`` under ``base`` that names an event
    (read from the module: ``__subclasses__`` would also list the classes that
    ``dataclass(slots=True)`` replaced)."""
    return [t for t in vars(ev).values()
            if isinstance(t, type) and issubclass(t, base) and "kind" in vars(t)]


NODE_TYPES = event_types(ev.NodeEvent)
ROUTER_TYPES = event_types(ev.RouterEvent)


@pytest.mark.parametrize(("types", "names"), [(NODE_TYPES, NODE_AUDIT_NAMES),
                                              (ROUTER_TYPES, ROUTER_AUDIT_NAMES)],
                         ids=["node", "router"])
def test_each_type_has_its_own_audit_name_and_the_names_are_todays(
        types: list[type], names: set[str]) -> None:
    audit = [t.kind for t in types]  # type: ignore[attr-defined]
    assert len(audit) == len(set(audit)), sorted(audit)
    assert set(audit) == names


def test_every_type_is_a_frozen_value_defined_once() -> None:
    everything = NODE_TYPES + ROUTER_TYPES
    assert len({t.__name__ for t in everything}) == len(everything)
    for t in everything:
        assert t.__module__ == ev.__name__ and dataclasses.is_dataclass(t)
        with pytest.raises(dataclasses.FrozenInstanceError):
            t().msg_id = "x"
    assert ev.Received(latency_ms=5) == ev.Received(latency_ms=5) != ev.Delivered()


def test_withdrawals_name_the_inbox_state_they_set() -> None:
    changes = event_types(ev.ItemChanged)
    assert {(t.kind, t.state) for t in changes} == {  # type: ignore[attr-defined]
        ("cancelled", "cancelled"), ("deleted", "deleted"), ("updated", "updated")}


def test_router_audit_details_keep_their_fields() -> None:
    """What ``audit show`` and ``audit verify`` read from a router entry, per type."""
    accept = ev.Accepted("ab", "NCB-FR", "ok", ("NCB-DE", "EUROPOL"))
    assert accept.audit_details() == {"from": "NCB-FR", "to": ["NCB-DE", "EUROPOL"], "n": 2}
    drop = ev.FrameDropped(sender="NCB-FR", reason="wire.magic", digest="00ff",
                           source="NCB-FR")
    assert drop.audit_details() == {"from": "NCB-FR", "to": [], "n": 0, "digest": "00ff",
                                    "source": "NCB-FR"}
    assert drop.count == 1
    summary = ev.DropSummary(sender="NCB-FR", source="NCB-FR", count=7,
                             reasons=(("wire.magic", 5), ("wire.truncated", 2)),
                             since_ms=10, until_ms=20)
    assert summary.audit_details() == {
        "from": "NCB-FR", "to": [], "n": 0, "source": "NCB-FR", "count": 7,
        "reasons": ["wire.magic", "wire.truncated"], "counts": [5, 2], "since_ms": 10,
        "until_ms": 20}


# -- producers ------------------------------------------------------------------------------

def _modules() -> list[tuple[Path, ast.AST]]:
    return [(p, ast.parse(p.read_text(encoding="utf-8"), filename=str(p)))
            for p in sorted(PACKAGE.rglob("*.py"))]


def test_no_code_builds_an_event_without_its_type() -> None:
    bare = []
    for path, tree in _modules():
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) \
                    and node.func.id in ("NodeEvent", "RouterEvent"):
                bare.append(f"{path.relative_to(PACKAGE)}:{node.lineno}")
    assert bare == []


def test_every_type_has_a_producer() -> None:
    used: set[str] = set()
    for path, tree in _modules():
        if path.name == "events.py" and path.parent.name == "core":
            continue
        used |= {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    missing = {t.__name__ for t in NODE_TYPES + ROUTER_TYPES} - used
    assert missing == set()


def test_a_run_of_the_machines_yields_only_event_types() -> None:
    """Messages, a refusal, a duplicate (every frame sent twice), garbage, and the notice
    lifecycle from request to cancellation: every event is one of the types."""
    net = Net(fault=lambda topic, payload: 2)  # every frame arrives twice
    desk = None
    for node in net.nodes.values():
        desk = install_lifecycle(node) or desk
    assert desk is not None
    net.send("NCB-FR", ["NCB-DE"])
    net.send("NCB-FR", ["NCB-US"], lab="CONFIDENTIAL//EU")  # NCB-US is not cleared for it
    to = complete_addressing("diffusion", ["NCB-DE"], "NCB-US", net.directory)
    net.send("NCB-US", to, kind="diffusion", lab="OFFICIAL-USE")
    fr_node = net.nodes["NCB-FR"]
    request = header("NCB-FR", [GS], kind="notice-request", now=net.now,
                     rng=fr_node.random_bytes)
    fr_node.submit(request, Body("RED notice request", "text", {
        "colour": "RED", "subject": "John DOE", "offence": "homicide", "warrant": "W-1"}),
        net.now)
    net.settle()
    gs = net.nodes[GS]
    net.node_events[GS] += desk.cancel(gs, request.id_hex, net.now)
    net.node_events["NCB-DE"] += net.nodes["NCB-DE"].handle(
        f"{net.directory.prefix}/inbox/NCB-DE", b"garbage", net.now)
    net.router_events += net.router.handle(f"{net.directory.prefix}/submit/NCB-DE",
                                           b"garbage", net.now)
    net.settle()
    node_events = [e for events in net.node_events.values() for e in events]
    assert {type(e) for e in node_events} <= set(NODE_TYPES)
    assert {type(e) for e in net.router_events} <= set(ROUTER_TYPES)
    assert {ev.Submitted, ev.SubmissionAccepted, ev.SubmissionRefused, ev.ReceiptIn,
            ev.Delivered, ev.Received, ev.DuplicateDelivery, ev.Dropped, ev.NoticePublished,
            ev.NoticeCancelled, ev.ItemCancelled} <= {type(e) for e in node_events}
    assert {ev.Accepted, ev.Refused, ev.DuplicateSubmission, ev.ReceiptForwarded,
            ev.FrameDropped} <= {type(e) for e in net.router_events}
