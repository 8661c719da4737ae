"""The information-flow checker: did anything reach anyone it should not have, or get lost?

Theory of operation: the checker reads a finished ``History`` and the directory versions
issued during the run, and re-derives, from the events alone, what the router and the nodes
were supposed to enforce. It shares no code with the routing policy beyond the label
relation (``scale.dominates``), so a mistake in one is caught by the other. Each rule that
fails yields a ``Violation`` with a sentence a person can act on; a clean run yields none.

The rules, per delivery (``deliver`` event) unless said otherwise:

``unknown-message``   the delivered message was never sent in this run
``unaddressed``       the recipient is not in the message's signed recipient list
``not-accepted``      the router never accepted the message (or not for this recipient)
``clearance``         the recipient's clearance, in the directory version it held then (and
                      in the router's version when it accepted), does not dominate the label
``label-downgrade``   an onward message carries a lower label than the message it refers to
``handling-dropped``  an onward message drops a handling code of its source
``h2-without-release`` H2 data reached someone beyond the source's audience without the
                      source's release naming them (checked one hop at a time, as the router
                      does: the source is the sender of the message referred to)
``tlp-red-forward``   TLP:RED data reached someone beyond the source's audience
``revoked-sender``    the router accepted, or a node delivered, a message from a sender the
                      directory in force there had revoked
``stale-key``         the router accepted a message signed with a key its directory no
                      longer listed for the sender (a stolen key after rotation)
``duplicate-delivery`` a recipient received the same message twice
``mandatory-copy``    a diffusion's copy for the notice authority could not be read there (a
                      wrap that does not open, or opens to a key the envelope does not commit
                      to): the sender evaded the record; the authority refused it
                      (``copy.unreadable``) and the violation names the sender
``lost``              an accepted message never reached a recipient although nothing
                      explains it (see below)

No loss: for every message the router accepted and every accepted recipient that has no
``deliver``, the checker looks for an explanation - the recipient refused or dropped it on
its own checks, the message expired, the recipient, the sender, the router or the broker
was down or cut off at the end of the run, a party was revoked, or the message was still in
flight (everyone reachable for less than ``grace`` seconds before the end). Explained cases
are listed as ``Undelivered``; unexplained ones are ``lost`` violations.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from i24net.core.directory import Directory
from i24net.core.labels import Label
from i24net.sim import history as hs

DEFAULT_GRACE_S = 120.0  # retries back off to 60 s; a gap request repeats every 6 s


@dataclass(frozen=True, slots=True)
class Violation:
    rule: str
    t: float
    msg_id: str
    agency: str
    text: str

    def __str__(self) -> str:
        return f"[{self.rule}] t={self.t:g}s {self.text}"


@dataclass(frozen=True, slots=True)
class Undelivered:
    """An accepted message that did not reach a recipient, and why (``reason`` code)."""

    msg_id: str
    recipient: str
    reason: str  # refused-in | dropped-in | expired | unreachable | revoked | in-flight
    text: str


@dataclass
class FlowReport:
    violations: list[Violation] = field(default_factory=list)
    undelivered: list[Undelivered] = field(default_factory=list)
    checked: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.violations

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok, "checked": dict(self.checked),
            "violations": [{"rule": v.rule, "t": v.t, "msg_id": v.msg_id,
                            "agency": v.agency, "text": v.text} for v in self.violations],
            "undelivered": [{"msg_id": u.msg_id, "recipient": u.recipient,
                             "reason": u.reason, "text": u.text} for u in self.undelivered],
        }


class _Timeline:
    """Who was reachable over the run, from the ``inject`` events."""

    def __init__(self, history: hs.History) -> None:
        self.partitioned: set[str] = set()
        self.down: set[str] = set()  # agencies, "router", "broker"
        self.back_at: dict[str, float] = {}  # when each party last became reachable
        for e in history.events:
            if isinstance(e, hs.Inject):
                self._inject(e)

    def _inject(self, e: hs.Inject) -> None:
        if e.action == "partition":
            self.partitioned.update(e.target.split(","))
        elif e.action == "heal":
            healed = set(self.partitioned) if e.target == "*" else set(e.target.split(","))
            for a in healed & self.partitioned:
                self.back_at[a] = e.t
            self.partitioned -= healed
        elif e.action == "crash" and e.target not in self.down:
            self.down.add(e.target)
        elif e.action == "restart" and e.target in self.down:
            self.down.discard(e.target)
            self.back_at[e.target] = e.t

    def unreachable(self, who: str) -> str:
        if who in self.down:
            return "down"
        if who in self.partitioned:
            return "partitioned"
        return ""


def check_flow(history: hs.History, *, directories: Mapping[int, Directory] | None = None,
               grace: float = DEFAULT_GRACE_S, no_loss: bool = True) -> list[Violation]:
    """The violations in ``history`` (expect none); see the module docstring."""
    return flow_report(history, directories=directories, grace=grace,
                       no_loss=no_loss).violations


def flow_report(history: hs.History, *, directories: Mapping[int, Directory] | None = None,
                grace: float = DEFAULT_GRACE_S, no_loss: bool = True) -> FlowReport:
    """Violations, explained non-deliveries and what was checked."""
    dirs = dict(directories if directories is not None else history.directories)
    if 1 not in dirs:
        raise ValueError("the flow checker needs the run's directory versions: pass "
                         "directories= (a History loaded from JSON does not carry them)")
    rep = FlowReport()
    tl = _Timeline(history)
    sends: dict[str, hs.Send] = {}
    accepts: dict[str, hs.Accept] = {}
    delivered: dict[tuple[str, str], hs.Deliver] = {}

    def violate(rule: str, t: float, msg_id: str, agency: str, text: str) -> None:
        rep.violations.append(Violation(rule, t, msg_id, agency, text))

    def directory(serial: int) -> Directory:
        d: Directory | None = dirs.get(serial)
        if d is None:
            raise ValueError(f"directory version {serial} is missing")
        return d

    # The version each component holds, in event order: an event recorded after a
    # ``directory`` event happened after that install, even within the same microsecond.
    held: dict[str, int] = defaultdict(lambda: 1)
    for e in history.events:
        if isinstance(e, hs.DirectoryInstalled):
            held[e.who] = max(held[e.who], e.serial)
        elif isinstance(e, hs.Send):
            sends.setdefault(e.msg_id, e)
        elif isinstance(e, hs.Accept):
            accepts.setdefault(e.msg_id, e)
            _check_accept(e, sends.get(e.msg_id), directory(held["router"]), violate)
        elif isinstance(e, hs.RefuseIn) and e.reason == "copy.unreadable":
            violate("mandatory-copy", e.t, e.msg_id, e.sender,
                    f"{e.recipient} could not read its copy of diffusion {e.msg_id[:12]} "
                    f"from {e.sender}: the diffusion went unrecorded")
        elif isinstance(e, hs.Deliver):
            key = (e.msg_id, e.recipient)
            if key in delivered:
                violate("duplicate-delivery", e.t, e.msg_id, e.recipient,
                        f"{e.recipient} received message {e.msg_id[:12]} a second time "
                        f"(first at {delivered[key].t:g}s)")
            delivered[key] = e
            _check_delivery(e, sends, accepts.get(e.msg_id),
                            directory(max(held[e.recipient], e.serial)), directory, violate)
    rep.checked = {"messages": len(sends), "accepted": len(accepts),
                   "deliveries": len(delivered)}
    if no_loss:
        _check_loss(history, sends, accepts, delivered, tl, dirs, grace, rep)
    return rep


def _check_accept(a: hs.Accept, s: hs.Send | None, d: Directory, violate: Any) -> None:
    rec = d.agencies.get(a.sender)
    if rec is None or not rec.active:
        violate("revoked-sender", a.t, a.msg_id, a.sender,
                f"the router accepted message {a.msg_id[:12]} from {a.sender}, which "
                f"directory version {d.serial} in force at the router "
                f"{'revokes' if rec else 'does not list'}")
    elif s is not None and s.key_id and s.key_id != rec.key_id.hex():
        violate("stale-key", a.t, a.msg_id, a.sender,
                f"the router accepted message {a.msg_id[:12]} signed with key {s.key_id} "
                f"of {a.sender}, which directory version {d.serial} no longer lists")


def _check_delivery(e: hs.Deliver, sends: Mapping[str, hs.Send], a: hs.Accept | None,
                    node_dir: Directory, directory: Any, violate: Any) -> None:
    s = sends.get(e.msg_id)
    if s is None:
        violate("unknown-message", e.t, e.msg_id, e.recipient,
                f"{e.recipient} received message {e.msg_id[:12]}, which nobody sent")
        return
    who = f"{e.recipient} received {s.kind} {e.msg_id[:12]} from {s.sender}"
    if e.recipient not in s.recipients:
        violate("unaddressed", e.t, e.msg_id, e.recipient,
                f"{who} but is not among its signed recipients "
                f"({', '.join(s.recipients[:8])})")
    if e.sender != s.sender:
        violate("unaddressed", e.t, e.msg_id, e.recipient,
                f"{who} but the delivery names {e.sender} as sender")
    if a is None or a.t > e.t:
        violate("not-accepted", e.t, e.msg_id, e.recipient,
                f"{who} but the router never accepted it")
    elif e.recipient not in a.recipients:
        violate("not-accepted", e.t, e.msg_id, e.recipient,
                f"{who} but the router accepted it only for {', '.join(a.recipients[:8])}")
    label = Label.parse(s.label)
    for d, where in ((node_dir, "its own"), (directory(a.serial) if a else None, "the router's")):
        if d is None:
            continue
        rec = d.agencies.get(e.recipient)
        if rec is None or not d.scale.dominates(rec.clearance, label):
            clearance = rec.clearance.marking if rec else "nothing (unknown)"
            violate("clearance", e.t, e.msg_id, e.recipient,
                    f"{who} labelled {s.label} but is cleared for {clearance} in {where} "
                    f"directory version {d.serial}")
            break
    srec = node_dir.agencies.get(s.sender)
    if srec is None or not srec.active:
        violate("revoked-sender", e.t, e.msg_id, e.recipient,
                f"{who} although directory version {node_dir.serial} held by "
                f"{e.recipient} revokes {s.sender}")
    if s.ref:
        _check_onward(e, s, sends.get(s.ref), node_dir, violate)


def _check_onward(e: hs.Deliver, s: hs.Send, src: hs.Send | None, d: Directory,
                  violate: Any) -> None:
    if src is None or src.sender == s.sender:
        return  # a reference to one's own message, or to something not in this run
    who = f"{e.recipient} received {s.kind} {s.msg_id[:12]} from {s.sender}, onward from " \
          f"{src.sender}'s {src.msg_id[:12]},"
    if not d.scale.dominates(Label.parse(s.label), Label.parse(src.label)):
        violate("label-downgrade", e.t, s.msg_id, e.recipient,
                f"{who} labelled {s.label}, below the source's {src.label}")
    missing = sorted(set(src.handling) - set(s.handling))
    if missing:
        violate("handling-dropped", e.t, s.msg_id, e.recipient,
                f"{who} without the source's handling code(s) {', '.join(missing)}")
    if e.recipient in src.recipients or e.recipient == src.sender:
        return  # within the source's own audience: not a dissemination
    if src.tlp == "RED":
        violate("tlp-red-forward", e.t, s.msg_id, e.recipient,
                f"{who} but the source is TLP:RED and {e.recipient} was not among its "
                "recipients")
    if "H2" in src.handling and not (
            s.release_source == src.sender and s.release_for == src.msg_id
            and e.recipient in s.release_allowed):
        violate("h2-without-release", e.t, s.msg_id, e.recipient,
                f"{who} but the source is H2 and no release from {src.sender} names "
                f"{e.recipient}")


def _check_loss(history: hs.History, sends: Mapping[str, hs.Send],
                accepts: Mapping[str, hs.Accept],
                delivered: Mapping[tuple[str, str], hs.Deliver], tl: _Timeline,
                dirs: Mapping[int, Directory], grace: float, rep: FlowReport) -> None:
    end = history.end
    refused_in: dict[tuple[str, str], str] = {}
    dropped_in: dict[tuple[str, str], str] = {}
    expired: set[str] = set()
    for e in history.events:
        if isinstance(e, hs.RefuseIn):
            refused_in.setdefault((e.msg_id, e.recipient), e.reason)
        elif isinstance(e, hs.Drop) and e.msg_id and e.where == e.agency:
            dropped_in[(e.msg_id, e.where)] = e.reason
        elif isinstance(e, hs.Expired):
            expired.add(e.msg_id)
    final = dirs[max(dirs)]
    for msg_id, a in accepts.items():
        s = sends.get(msg_id)
        for r in a.recipients:
            if (msg_id, r) in delivered:
                continue
            why = _explain(msg_id, r, s, a, end, tl, final, refused_in, dropped_in,
                           expired, grace)
            if why is None:
                rep.violations.append(Violation(
                    "lost", end, msg_id, r,
                    f"message {msg_id[:12]} from {a.sender}, accepted at {a.t:g}s, never "
                    f"reached {r}, although everyone was reachable for the last "
                    f"{end - _since(tl, r, a):g}s of the run"))
            else:
                rep.undelivered.append(Undelivered(msg_id, r, why[0], why[1]))


def _since(tl: _Timeline, r: str, a: hs.Accept) -> float:
    return max([a.t, *(tl.back_at.get(p, 0.0) for p in (r, a.sender, "router", "broker"))])


def _explain(msg_id: str, r: str, s: hs.Send | None, a: hs.Accept, end: float,
             tl: _Timeline, final: Directory, refused_in: Mapping[tuple[str, str], str],
             dropped_in: Mapping[tuple[str, str], str], expired: set[str],
             grace: float) -> tuple[str, str] | None:
    if (msg_id, r) in refused_in:
        return "refused-in", f"{r} refused it: {refused_in[(msg_id, r)]}"
    if (msg_id, r) in dropped_in:
        return "dropped-in", f"{r} dropped it: {dropped_in[(msg_id, r)]}"
    if msg_id in expired or (s is not None and s.ttl and s.t + s.ttl <= end):
        return "expired", "the message expired before it reached " + r
    for party, role in ((r, "the recipient"), (a.sender, "the sender"),
                        ("router", "the router"), ("broker", "the broker")):
        state = tl.unreachable(party)
        if state:
            return "unreachable", f"{role} ({party}) was {state} at the end of the run"
    for party, role in ((r, "the recipient"), (a.sender, "the sender")):
        rec = final.agencies.get(party)
        if rec is not None and not rec.active:
            return "revoked", f"{role} ({party}) was revoked"
    since = _since(tl, r, a)
    if end - since < grace:
        return "in-flight", (f"still in flight: every party reachable only for the last "
                             f"{end - since:g}s of the run")
    return None


def compromise_report(history: hs.History) -> list[dict[str, Any]]:
    """Per compromised agency: when its key was stolen, when a directory version revoking or
    rotating it reached the router, and what the attacker got through before and after."""
    out = []
    stolen: dict[str, float] = {}
    for e in history.events:
        if isinstance(e, hs.Inject) and e.action == "compromise":
            stolen.setdefault(e.target, e.t)
    for agency, t_c in sorted(stolen.items()):
        t_fix = None
        for e in history.events:
            if isinstance(e, hs.Inject) and e.action in ("revoke", "rotate") \
                    and e.target == agency and e.t >= t_c:
                t_fix = e.t
                break
        forged = {e.msg_id for e in history.events
                  if isinstance(e, hs.Send) and e.origin == "attacker" and e.sender == agency}
        acc = [e for e in history.events if isinstance(e, hs.Accept) and e.msg_id in forged]
        refused = [e for e in history.events
                   if isinstance(e, hs.Refuse) and e.msg_id in forged]
        deliveries = [e for e in history.events
                      if isinstance(e, hs.Deliver) and e.msg_id in forged]
        out.append({
            "agency": agency, "stolen_at": t_c, "fixed_at": t_fix,
            "time_to_fix": None if t_fix is None else round(t_fix - t_c, 6),
            "forged": len(forged),
            "accepted_before_fix": sum(1 for e in acc if t_fix is None or e.t < t_fix),
            "accepted_after_fix": sum(1 for e in acc if t_fix is not None and e.t >= t_fix),
            "refused": dict(sorted(_count(e.reason for e in refused).items())),
            "deliveries": len(deliveries),
        })
    return out


def _count(items: Any) -> dict[str, int]:
    c: dict[str, int] = {}
    for i in items:
        c[i] = c.get(i, 0) + 1
    return c
