"""Organisations, the agreements between them and their joint operations, as the directory
lists them (docs/protocol.md 3.7).

Theory of operation: every agency belongs to one organisation (``AgencyRecord.org``:
INTERPOL for the General Secretariat and the NCBs, EUROPOL for Europol, ...). Inside one
organisation the labels, groups and kind rules of ``policy`` decide alone. A message that
crosses from one organisation to another must also be covered by an ``Agreement`` between
the two: the agreement holds one ``Flow`` per direction it allows, each stating the kinds,
the highest level, the caveats and the handling codes that may pass, and the agreement ends
at ``until_ms``. ``covering`` names the agreement that covers one crossing, or the reason
code of the refusal; the router stamps the agreement it applied.

A joint operation (``Operation``) is a task force with a lead, members, an end and a level:
its name is both a group (``@NAME``, its current members) and a caveat the directory grants
to its members while it runs. ``operation remove`` and ``operation close`` take the caveat
away at the next directory version; past ``until_ms`` (or once closed) the router refuses
any message under the operation's caveat or addressed to its group.

Everything here is data and pure functions of it: no I/O, no clock.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from i24net.core.errors import DirectoryError
from i24net.core.labels import ClassificationScale, Handling, HandlingCodes, Label
from i24net.core.wire import Fields

ORG_ID = re.compile(r"^[A-Z][A-Z0-9-]{0,31}\Z")
OPERATION_NAME = ORG_ID  # a group name (directory.GROUP_NAME): it is @NAME too
AGREEMENT_ID = re.compile(r"^[A-Z][A-Z0-9-]{0,63}\Z")
HANDLING_NAMES = tuple(h.value for h in Handling)
OPERATION_STATUSES = ("active", "closed")
MAX_AGREEMENTS = 256
MAX_OPERATIONS = 64  # each is a caveat, and a network defines at most 64 (labels.py)
MAX_OPERATION_MEMBERS = 4096
DEFAULT_OPERATION_MS = 30 * 86_400_000  # an exercise's operation without an end runs this long
# What withdraws data sent under an agreement outlives it: a notice cancelled, a deletion
# ordered, after the agreement has ended, still reach the holders it was sent to.
WITHDRAWAL_KINDS = frozenset({"notice-cancel", "deletion-order"})


def _check(ok: bool, message: str, reason: str = "directory.agreement") -> None:
    if not ok:
        raise DirectoryError(message, reason=reason)


@dataclass(frozen=True, slots=True)
class Flow:
    """What one organisation may send another under an agreement: one direction."""

    source: str
    target: str
    kinds: frozenset[str]
    max_level: str
    caveats: frozenset[str] = frozenset()
    handling: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        for name in ("kinds", "caveats", "handling"):
            value = getattr(self, name)
            if not isinstance(value, frozenset):
                object.__setattr__(self, name, frozenset(value))
        _check(bool(ORG_ID.match(self.source)) and bool(ORG_ID.match(self.target))
               and self.source != self.target,
               f"a flow goes from one organisation to another, not {self.source!r} -> "
               f"{self.target!r}")
        _check(bool(self.kinds), f"flow {self.source} -> {self.target} allows no kind")
        bad = self.handling - set(HANDLING_NAMES)
        _check(not bad, f"flow {self.source} -> {self.target}: unknown handling code(s) "
               f"{', '.join(sorted(bad))}")

    def refusal(self, scale: ClassificationScale, kind: str, label: Label,
                handling: HandlingCodes) -> tuple[str, str] | None:
        """(reason code, what is outside the flow) or None when the flow covers it."""
        if kind not in self.kinds:
            return "agreement.kind", f"a {kind} is not among {', '.join(sorted(self.kinds))}"
        if scale.rank(label.level) > scale.rank(self.max_level):
            return "agreement.level", f"{label.level} is above {self.max_level}"
        extra = label.caveats - self.caveats
        if extra:
            return "agreement.caveat", f"caveat {', '.join(sorted(extra))} is not shared"
        codes = {c.value for c in handling.codes} - self.handling
        if codes:
            honoured = ", ".join(sorted(self.handling)) or "none"
            return "agreement.handling", (f"handling code {', '.join(sorted(codes))} is not "
                                          f"honoured (honoured: {honoured})")
        return None

    def to_wire(self) -> dict[str, Any]:
        return {"from": self.source, "to": self.target, "kinds": sorted(self.kinds),
                "level": self.max_level, "caveats": sorted(self.caveats),
                "handling": sorted(self.handling)}

    @classmethod
    def from_wire(cls, obj: Any) -> Flow:
        f = Fields(obj, "agreement flow")
        flow = cls(f.text("from", max_len=32), f.text("to", max_len=32),
                   frozenset(f.text_list("kinds", max_items=32, max_len=32)),
                   f.text("level", max_len=32),
                   frozenset(f.text_list("caveats", max_items=64, max_len=32)),
                   frozenset(f.text_list("handling", max_items=4, max_len=2)))
        f.done()
        return flow


@dataclass(frozen=True, slots=True)
class Agreement:
    """A signed-off agreement between two organisations (a memorandum of understanding)."""

    id: str
    title: str
    parties: tuple[str, str]
    until_ms: int
    flows: tuple[Flow, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "flows", tuple(sorted(
            self.flows, key=lambda fl: (fl.source, fl.target))))
        _check(bool(AGREEMENT_ID.match(self.id)),
               f"invalid agreement id {self.id!r}: use e.g. INTERPOL-EUROPOL")
        _check(0 < len(self.title) <= 256, f"agreement {self.id}: a title of 1-256 characters")
        _check(len(self.parties) == 2 and self.parties[0] != self.parties[1]
               and all(ORG_ID.match(p) for p in self.parties),
               f"agreement {self.id}: two different organisations are its parties")
        _check(0 < len(self.flows) <= 2, f"agreement {self.id}: one flow per direction (1-2)")
        directions = {(fl.source, fl.target) for fl in self.flows}
        _check(len(directions) == len(self.flows),
               f"agreement {self.id}: two flows in the same direction")
        _check(all({fl.source, fl.target} == set(self.parties) for fl in self.flows),
               f"agreement {self.id}: a flow runs between organisations that are not its "
               "parties")

    def active(self, now_ms: int) -> bool:
        return now_ms < self.until_ms

    def flow(self, source: str, target: str) -> Flow | None:
        return next((fl for fl in self.flows if fl.source == source and fl.target == target),
                    None)

    def to_wire(self) -> dict[str, Any]:
        return {"id": self.id, "title": self.title, "parties": list(self.parties),
                "until": self.until_ms,
                "flows": [fl.to_wire() for fl in self.flows]}

    @classmethod
    def from_wire(cls, obj: Any) -> Agreement:
        f = Fields(obj, "agreement")
        aid = f.text("id", max_len=64)
        title = f.text("title")
        parties = f.text_list("parties", max_items=2, max_len=32)
        until = f.integer("until", lo=0)
        raw_flows = f.raw("flows")
        f.done()
        if not isinstance(raw_flows, list) or len(parties) != 2:
            raise DirectoryError(f"agreement {aid}: two parties and a list of flows",
                                 reason="directory.agreement")
        return cls(aid, title, (parties[0], parties[1]), until,
                   tuple(Flow.from_wire(x) for x in raw_flows))


@dataclass(frozen=True, slots=True)
class Operation:
    """A joint operation: its name is its group (``@NAME``) and its caveat."""

    name: str
    title: str
    lead: str
    members: tuple[str, ...]
    until_ms: int
    level: str
    status: str = "active"
    created_ms: int = 0
    closed_ms: int = 0
    removed: tuple[str, ...] = field(default=())  # members taken off while it ran

    def __post_init__(self) -> None:
        _check(bool(OPERATION_NAME.match(self.name)), f"invalid operation name {self.name!r}: "
               "upper-case letters, digits and '-', at most 32", "directory.operation")
        _check(self.status in OPERATION_STATUSES,
               f"operation {self.name}: status must be active or closed",
               "directory.operation")
        _check(0 < len(self.title) <= 256, f"operation {self.name}: a title of 1-256 "
               "characters", "directory.operation")
        _check(len(self.members) <= MAX_OPERATION_MEMBERS
               and len(set(self.members)) == len(self.members),
               f"operation {self.name}: members listed twice or more than "
               f"{MAX_OPERATION_MEMBERS}", "directory.operation")
        _check(self.status == "closed" or self.lead in self.members,
               f"operation {self.name}: its lead {self.lead} must be a member",
               "directory.operation")
        _check(not set(self.removed) & set(self.members),
               f"operation {self.name}: an agency is both a member and removed",
               "directory.operation")
        _check((self.status == "closed") == (self.closed_ms > 0),
               f"operation {self.name}: a closing time exactly when it is closed",
               "directory.operation")

    def running(self, now_ms: int) -> bool:
        return self.status == "active" and now_ms < self.until_ms

    def state(self, now_ms: int) -> str:
        """``active``, ``expired`` (past its end, not closed) or ``closed``."""
        if self.status == "closed":
            return "closed"
        return "active" if now_ms < self.until_ms else "expired"

    def to_wire(self) -> dict[str, Any]:
        return {"name": self.name, "title": self.title, "lead": self.lead,
                "members": sorted(self.members), "until": self.until_ms, "level": self.level,
                "status": self.status, "created": self.created_ms, "closed": self.closed_ms,
                "removed": sorted(self.removed)}

    @classmethod
    def from_wire(cls, obj: Any) -> Operation:
        f = Fields(obj, "operation")
        op = cls(f.text("name", max_len=32), f.text("title"), f.text("lead", max_len=32),
                 tuple(f.text_list("members", max_items=MAX_OPERATION_MEMBERS, max_len=32)),
                 f.integer("until", lo=0), f.text("level", max_len=32),
                 f.text("status", max_len=16), f.integer("created", lo=0),
                 f.integer("closed", lo=0),
                 tuple(f.text_list("removed", max_items=MAX_OPERATION_MEMBERS, max_len=32)))
        f.done()
        return op


def covering(agreements: Iterable[Agreement], scale: ClassificationScale, source: str,
             target: str, kind: str, label: Label, handling: HandlingCodes,
             now_ms: int, *, withdrawing: bool = False) -> tuple[str, str]:
    """Which agreement lets a message of ``kind``/``label``/``handling`` pass from
    organisation ``source`` to ``target`` at ``now_ms``.

    Returns ``("ok", agreement id)`` or ``(reason code, explanation)``: ``agreement.none``
    when no agreement between the two has a flow that way, ``agreement.expired`` when each
    that has one has ended, else the first term the message is outside of, in the order
    kind, level, caveats, handling, of the first running agreement. A withdrawal
    (``WITHDRAWAL_KINDS``) of a message the recipient was sent (``withdrawing``: the caller
    has checked that) within an ended agreement's terms still passes under it.
    """
    first: tuple[str, str] | None = None
    expired: Agreement | None = None
    for agr in agreements:
        flow = agr.flow(source, target)
        if flow is None:
            continue
        refused = flow.refusal(scale, kind, label, handling)
        if not agr.active(now_ms) and not (withdrawing and kind in WITHDRAWAL_KINDS
                                           and refused is None):
            expired = expired or agr
            continue
        if refused is None:
            return "ok", agr.id
        if first is None:
            first = (refused[0], f"under {agr.id} from {source} to {target}: {refused[1]}")
    if first is not None:
        return first
    if expired is not None:
        return "agreement.expired", (f"agreement {expired.id} between {source} and {target} "
                                     "has ended")
    return "agreement.none", f"no agreement lets {source} send to {target}"


def check_terms(agreements: Mapping[str, Agreement], operations: Mapping[str, Operation],
                scale: ClassificationScale, orgs: set[str], agencies: Mapping[str, Any],
                taken: set[str]) -> None:
    """The directory's own consistency rules for its agreements and operations: parties are
    organisations of the directory, levels and caveats are the scale's, kinds are message
    kinds, an operation's name is free (``taken``: groups, regions, derived groups) and is
    one of the scale's caveats, and its members are agencies of the directory."""
    from i24net.core.envelope import KINDS as MESSAGE_KINDS  # envelope imports the directory

    for aid, agr in agreements.items():
        _check(aid == agr.id, f"agreement listed as {aid!r} but named {agr.id!r}")
        for p in agr.parties:
            _check(p in orgs, f"agreement {aid}: no agency belongs to organisation {p}")
        for fl in agr.flows:
            _check(fl.max_level in scale.levels, f"agreement {aid}: unknown level "
                   f"{fl.max_level}")
            _check(fl.caveats <= scale.caveats, f"agreement {aid}: unknown caveat(s) "
                   f"{', '.join(sorted(fl.caveats - scale.caveats))}")
            _check(fl.kinds <= set(MESSAGE_KINDS), f"agreement {aid}: unknown kind(s) "
                   f"{', '.join(sorted(fl.kinds - set(MESSAGE_KINDS)))}")
    for name, op in operations.items():
        _check(name == op.name, f"operation listed as {name!r} but named {op.name!r}",
               "directory.operation")
        _check(name in scale.caveats, f"operation {name} is not one of the network's "
               "caveats", "directory.operation")
        _check(name not in taken, f"operation {name} clashes with a group or region",
               "directory.operation")
        _check(op.level in scale.levels, f"operation {name}: unknown level {op.level}",
               "directory.operation")
        for m in (*op.members, op.lead, *op.removed):
            _check(m in agencies, f"operation {name} names unknown agency {m}",
                   "directory.operation")
        granted = set(op.members) if op.status == "active" else set()
        holders = {a for a, rec in agencies.items() if name in rec.clearance.caveats}
        _check(holders == granted, f"operation {name}: its caveat is held by "
               f"{', '.join(sorted(holders - granted)) or 'no one else'} and missing from "
               f"{', '.join(sorted(granted - holders)) or 'no member'}: the directory grants "
               "it to the members of a running operation only", "directory.operation")
