"""Running an exercise in virtual time on ``i24net.sim``.

Theory of operation: the exercise is translated once, before the run, into the
simulator's script: conditions become ``sim.conditions`` calls (a link rule's ``end``
resets the link, a filter's ``end`` removes it), each inject becomes the matching
``Simulation`` call at its time, keeping the ``Sent`` handle of every message so its id
can be matched to its exercise name once the run has sent it. The run then advances in
small steps of virtual time (for the progress bar) to the exercise's duration, and the
``History`` is reduced to ``Observations``; the simulator's information-flow checker
supplies the violations. Same exercise, same seed: same history, same JSON.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from i24net.core.errors import I24Error
from i24net.exercise import model as m
from i24net.exercise.observe import (
    ATTACKER,
    FLOOD,
    INJECT,
    LIFECYCLE,
    SETTLE_S,
    DropObs,
    InjectObs,
    MessageObs,
    NoticeObs,
    Observations,
)
from i24net.exercise.result import Result

Progress = Callable[[float, float, str], None]
# The progress bar advances in this many steps of virtual time; each step is one
# ``Simulation.run(until=...)`` call, which costs nothing when nothing is due.
STEPS = 200


@dataclass(slots=True)
class _Handle:
    inject: m.Inject
    sent: Any  # i24net.sim.Sent
    name: str
    origin: str


SETTLE_STEP_S = 5.0


def _pending(history: Any) -> set[str]:
    """Ids of the messages submitted (the attacker's aside) that have no final outcome yet:
    neither every receipt in (``delivered``), nor refused, nor expired."""
    from i24net.sim import history as hs

    sent: set[str] = set()
    final: set[str] = set()
    for e in history.events:
        if isinstance(e, hs.Send):
            if e.origin != "attacker":
                sent.add(e.msg_id)
        elif isinstance(e, hs.Delivered | hs.Refuse | hs.Expired):
            final.add(e.msg_id)
    return sent - final


class VirtualRun:
    def __init__(self, exercise: m.Exercise, *, progress: Progress | None = None) -> None:
        self.ex = exercise
        self.progress = progress or (lambda now, total, text: None)
        self.handles: list[_Handle] = []
        self.requests: dict[str, _Handle] = {}  # notice-request name -> its handle
        self.messages: dict[str, _Handle] = {}  # message name -> its first handle
        self.setup_errors: dict[int, str] = {}  # inject index -> why it could not be scripted

    # -- building ---------------------------------------------------------------------------
    def build(self) -> Any:
        from i24net.sim import Simulation

        net, seed = self.ex.network, self.ex.seed
        kw: dict[str, Any] = {"seed": seed, "auto_review": net.review == "auto"}
        # the network.toml the source stands for (a preset, a file, a synthetic network),
        # with the drill's own [network.retention]
        sim = Simulation.from_toml(net.toml_text(), **kw)
        self._conditions(sim)
        for inj in sorted(self.ex.injects, key=lambda i: (i.at, i.index)):
            try:
                self._script(sim, inj)
            except (ValueError, I24Error) as exc:
                # checked against the network already; what is left is the simulator's own
                # refusal (e.g. a label its scale rejects): the inject is reported as failed
                self.setup_errors[inj.index] = getattr(exc, "message", None) or str(exc)
        return sim

    def _conditions(self, sim: Any) -> None:
        c = self.ex.conditions
        sim.conditions.latency(c.latency_ms, c.jitter_ms, c.loss)
        if c.router is not None:
            sim.conditions.router(**{k: getattr(c.router, k) for k in (
                "envelope_ms", "control_ms", "stamp_ms", "relay_ms")
                if getattr(c.router, k) is not None})
        if c.broker_queue_limit is not None:
            sim.conditions.broker(queue_limit=c.broker_queue_limit)
        for rule in c.links:
            if rule.between:
                a, b = rule.between
                sim.conditions.filter(sender=a, recipient=b, delay_ms=rule.latency_ms or 0.0,
                                      jitter_ms=rule.jitter_ms or 0.0, drop=rule.loss or 0.0,
                                      direction="down", at=rule.start, until=rule.end,
                                      name=f"link-{rule.index}")
                continue
            who = rule.agency or rule.group
            sim.conditions.link(who, latency_ms=rule.latency_ms, jitter_ms=rule.jitter_ms,
                                loss=rule.loss, at=rule.start)
            if rule.end is not None:
                sim.conditions.reset_link(who, at=rule.end)
        for f in c.filters:
            sim.conditions.filter(
                precedence=f.precedence, label=f.label, caveat=f.caveat, kind=f.kind,
                sender=f.sender, recipient=f.to, addressing=f.to_group,
                direction=f.direction, drop=f.probability if f.action == "drop" else 0.0,
                delay_ms=f.delay_ms if f.action == "delay" else 0.0,
                jitter_ms=f.jitter_ms if f.action == "delay" else 0.0,
                at=f.start, until=f.end, name=f"filter-{f.index}")

    def _keep(self, inj: m.Inject, sent: Any, name: str, origin: str) -> None:
        h = _Handle(inj, sent, name, origin)
        self.handles.append(h)
        if name and name not in self.messages:
            self.messages[name] = h

    def _script(self, sim: Any, inj: m.Inject) -> None:
        at = inj.at
        if isinstance(inj, m.Send):
            for n in range(inj.repeat):
                h3 = (inj.text or "see text") if "H3" in inj.handling else ""
                sent = sim.send(at + n * inj.every, inj.sender, list(inj.to), kind=inj.kind,
                                label=inj.label, precedence=inj.precedence,
                                subject=inj.subject or (inj.name or inj.kind) +
                                (f" #{n + 1}" if inj.repeat > 1 else ""),
                                text=inj.text, data=dict(inj.data or {}),
                                handling=list(inj.handling), h3_text=h3,
                                ttl=inj.ttl_hours * 3600)
                self._keep(inj, sent, inj.name, FLOOD if inj.repeat > 1 else INJECT)
        elif isinstance(inj, m.NoticeRequest):
            sent = sim.send(at, inj.sender, [sim.notice_authority()], kind="notice-request",
                            label=inj.label, precedence=inj.precedence,
                            subject=inj.subject or f"{inj.colour} Notice request: "
                            f"{inj.person}", text=inj.text or f"Wanted: {inj.offence}.",
                            data={"colour": inj.colour, "subject": inj.person,
                                  "offence": inj.offence, "warrant": inj.warrant})
            self._keep(inj, sent, inj.name, INJECT)
            if inj.name:
                self.requests[inj.name] = self.handles[-1]
        elif isinstance(inj, m.Review):
            sim.review(at, self.requests[inj.notice].sent,
                       approve=inj.decision == "approve", reason=inj.reason)
        elif isinstance(inj, m.Cancel):
            req = self.requests[inj.notice]
            requester = req.inject.sender  # type: ignore[attr-defined]
            by = inj.by or requester
            if by == sim.notice_authority():
                sim.authority_cancel(at, req.sent, reason=inj.reason)
            else:
                sent = sim.cancel_notice(at, by, req.sent, reason=inj.reason)
                self._keep(inj, sent, "", INJECT)
        elif isinstance(inj, m.Forward):
            of = self.messages[inj.message].sent
            sent = sim.forward(at, inj.sender, of, list(inj.to), release=inj.release,
                               label=inj.label, handling=inj.handling,
                               precedence=inj.precedence, subject=inj.subject or None,
                               text=inj.text or None)
            self._keep(inj, sent, inj.name, INJECT)
        elif isinstance(inj, m.Partition):
            sim.partition(at, list(inj.agencies))
        elif isinstance(inj, m.Heal):
            sim.heal(at, list(inj.agencies) or None)
        elif isinstance(inj, m.Crash):
            sim.crash(at, inj.who)
        elif isinstance(inj, m.Restart):
            sim.restart(at, inj.who)
        elif isinstance(inj, m.Compromise):
            sim.compromise(at, inj.agency)
            for n in range(inj.count):
                sent = sim.forge(at + n * inj.every, inj.agency, list(inj.to), kind=inj.kind,
                                 label=inj.label, precedence=inj.precedence,
                                 subject=inj.subject, text="Forged with a stolen key.")
                self._keep(inj, sent, inj.name, ATTACKER)
        elif isinstance(inj, m.Revoke):
            sim.revoke(at, inj.agency)
        elif isinstance(inj, m.Rotate):
            sim.rotate(at, inj.agency)
        elif isinstance(inj, m.RotatePrekeys):
            sim.rotate_prekeys(at, list(inj.agencies) or None)
        elif isinstance(inj, m.Skew):
            sim.skew(at, inj.agency, inj.seconds)
        elif isinstance(inj, m.OperationCreate):
            sim.create_operation(at, inj.operation, inj.lead, list(inj.members),
                                 until=inj.until, level=inj.level, title=inj.title)
        elif isinstance(inj, m.OperationAdd):
            sim.change_operation(at, inj.operation, add=list(inj.agencies))
        elif isinstance(inj, m.OperationRemove):
            sim.change_operation(at, inj.operation, remove=list(inj.agencies))
        elif isinstance(inj, m.OperationClose):
            sim.close_operation(at, inj.operation)
        elif isinstance(inj, m.AgreementExpire):
            sim.end_agreement(at, inj.agreement)
        else:  # pragma: no cover - every action in model.INJECTS is handled above
            raise m.ExerciseError(f"no virtual form for action {inj.action!r}")

    # -- running ----------------------------------------------------------------------------
    def run(self) -> Result:
        wall = time.monotonic()
        total = self.ex.duration
        self.progress(0.0, total, "building the network")
        sim = self.build()
        history = sim.history
        for k in range(1, STEPS + 1):
            t = total * k / STEPS
            history = sim.run(until=t)
            self.progress(t, total, f"{len(history)} events")
        # Settle before judging: past the planned end, run on until every message is final
        # (all its receipts in, refused, or expired) or the settle timeout passes.
        t = total
        while (pending := _pending(history)) and t < total + SETTLE_S:
            t = min(t + SETTLE_STEP_S, total + SETTLE_S)
            history = sim.run(until=t)
        obs = self.observe(sim, history)
        obs.duration = round(t, 3)  # judged here: the planned end, or later if it settled
        obs.pending = sorted(_pending(history))
        result = Result.build(self.ex, "virtual", self.ex.seed, obs,
                              wall_seconds=time.monotonic() - wall)
        result.extra["settle"] = {"planned_s": total, "ended_s": round(t, 3),
                                  "pending": len(pending), "timeout_s": SETTLE_S}
        return result

    # -- observing --------------------------------------------------------------------------
    def observe(self, sim: Any, history: Any) -> Observations:
        from i24net.sim import history as hs
        from i24net.sim.flowcheck import flow_report

        d0 = history.directories[min(history.directories)]
        groups = {f"@{g}": tuple(d0.expand([f"@{g}"], "")) for g in d0.group_names()}
        obs = Observations(duration=round(self.ex.duration, 3),
                           agencies=tuple(sorted(sim.agencies)), groups=groups)
        names = {h.sent.msg_id: (h.name, h.origin) for h in self.handles if h.sent.msg_id}
        obs.unsent = [(h.name, float(h.sent.at), f"{h.sent.error}: {h.sent.detail}")
                      for h in self.handles
                      if h.origin in (INJECT, FLOOD) and h.sent.error and not h.sent.msg_id]
        msgs: dict[str, MessageObs] = {}
        notice_of: dict[str, str] = {}  # notice message id -> exercise name of the request
        by_request = {h.sent.msg_id: name for name, h in self.requests.items()
                      if h.sent.msg_id}
        for name, h in self.requests.items():
            req = h.inject
            obs.notices[name] = NoticeObs(name, req.sender, req.at,  # type: ignore[attr-defined]
                                          request_id=h.sent.msg_id or "")
        for inj in self.ex.injects:
            if isinstance(inj, m.Cancel) and inj.notice in obs.notices:
                obs.notices[inj.notice].cancel_at = inj.at
        for e in history.events:
            if isinstance(e, hs.Send):
                name, origin = names.get(e.msg_id, ("", LIFECYCLE))
                if e.origin == "attacker":
                    origin = ATTACKER
                msgs[e.msg_id] = MessageObs(
                    id=e.msg_id, sender=e.sender, kind=e.kind, label=e.label,
                    precedence=e.precedence, recipients=tuple(e.recipients), sent=e.t,
                    name=name, origin=origin, ref=e.ref)
            elif isinstance(e, hs.Accept):
                msg = msgs.get(e.msg_id)
                if msg is not None and (msg.decided is None or msg.state == "refused"):
                    msg.decided, msg.state, msg.reason = e.t, "accepted", ""
            elif isinstance(e, hs.Refuse):
                msg = msgs.get(e.msg_id)
                if msg is not None and msg.decided is None:
                    msg.decided, msg.state, msg.reason = e.t, "refused", e.reason
            elif isinstance(e, hs.Deliver):
                msg = msgs.get(e.msg_id)
                if msg is not None:
                    msg.delivered.setdefault(e.recipient, e.t)
                    nm = notice_of.get(e.msg_id)
                    if nm is not None:
                        obs.notices[nm].holders.setdefault(e.recipient, e.t)
            elif isinstance(e, hs.RefuseIn):
                msg = msgs.get(e.msg_id)
                if msg is not None:
                    msg.refused_by.setdefault(e.recipient, e.reason)
            elif isinstance(e, hs.Purged):
                msg = msgs.get(e.msg_id)
                if msg is not None:
                    msg.purged.setdefault(e.holder, e.t)
            elif isinstance(e, hs.Delivered):
                msg = msgs.get(e.msg_id)
                if msg is not None and msg.state != "refused":
                    msg.state = "delivered"
            elif isinstance(e, hs.Expired):
                msg = msgs.get(e.msg_id)
                if msg is not None and msg.state not in ("delivered", "refused"):
                    msg.state = "expired"
            elif isinstance(e, hs.Drop):
                where = e.where if e.where in ("link", "broker", "router") else "node"
                obs.drops.append(DropObs(e.t, e.agency or e.where, f"{where}:{e.reason}",
                                         e.msg_id))
            elif isinstance(e, hs.NoticePublished):
                nm = by_request.get(e.request_id)
                if nm is not None:
                    n = obs.notices[nm]
                    n.decision, n.decided, n.number, n.notice_id = \
                        "published", e.t, e.number, e.msg_id
                    notice_of[e.msg_id] = nm  # its send event follows: audience below
            elif isinstance(e, hs.NoticeRefused):
                nm = by_request.get(e.request_id)
                if nm is not None:
                    n = obs.notices[nm]
                    n.decision, n.decided, n.reason = "refused", e.t, e.reason
            elif isinstance(e, hs.Desk) and e.what == "notice-review":
                nm = by_request.get(e.msg_id)
                if nm is not None and not obs.notices[nm].decision:
                    obs.notices[nm].decision = "under-review"
            elif isinstance(e, hs.Withdrawn) and e.state == "cancelled":
                nm = notice_of.get(e.msg_id)
                if nm is not None:
                    obs.notices[nm].cancelled.setdefault(e.holder, e.t)
            elif isinstance(e, hs.Exposure):
                obs.exposure.setdefault(e.agency, (
                    frozenset(e.readable), dict(zip(e.unreadable, e.reasons, strict=True))))
            elif isinstance(e, hs.Inject):
                if e.action == "compromise":
                    obs.compromised.setdefault(e.target, e.t)
                elif e.action == "revoke" and not e.detail.startswith("failed"):
                    obs.revoked.setdefault(e.target, e.t)
        for n in obs.notices.values():
            if n.notice_id in msgs:
                n.audience = msgs[n.notice_id].recipients
        obs.messages = list(msgs.values())
        obs.injects = self._played(history)
        report = flow_report(history)
        obs.flowcheck_ran = True
        # A message the exercise's own filter keeps dropping on the recipient's (or the
        # sender's) link is explained by the drill, as a partition is; the checker does not
        # know filters yet, so its "lost" verdict is set aside for exactly those.
        filtered = {(e.msg_id, e.agency) for e in history.events if isinstance(e, hs.Drop)
                    and e.where == "link" and e.reason.startswith("filter:")}
        obs.violations = [
            {"rule": v.rule, "t": v.t, "msg_id": v.msg_id, "agency": v.agency, "text": v.text}
            for v in report.violations
            if not (v.rule == "lost" and ({(v.msg_id, v.agency)} | {
                (v.msg_id, msgs[v.msg_id].sender) if v.msg_id in msgs else ("", "")})
                & filtered)]
        return obs

    def _played(self, history: Any) -> list[InjectObs]:
        """Each exercise inject as played: failed if its message could not be built or
        the simulator recorded a failure for it."""
        from i24net.sim import history as hs

        errors: dict[float, list[str]] = {}
        for e in history.events:
            if isinstance(e, hs.Desk) and e.what.endswith("-error"):
                errors.setdefault(e.t, []).append(f"{e.what}: {e.detail or e.reason}")
            elif isinstance(e, hs.Inject) and e.detail.startswith("failed"):
                errors.setdefault(e.t, []).append(f"{e.action}: {e.detail}")
        by_inject: dict[int, list[_Handle]] = {}
        for h in self.handles:
            by_inject.setdefault(h.inject.index, []).append(h)
        out = []
        for inj in sorted(self.ex.injects, key=lambda i: (i.at, i.index)):
            problem = self.setup_errors.get(inj.index, "")
            for h in by_inject.get(inj.index, []):
                if h.sent.error and not problem:
                    problem = f"{h.sent.error}: {h.sent.detail}"
            if not problem and inj.action in ("review", "cancel", "revoke", *(
                    c.action for c in m.COOPERATION_INJECTS)):
                problem = "; ".join(errors.get(inj.at, []))
            out.append(InjectObs(inj.at, inj.index, inj.action, inj.describe(),
                                 not problem, problem))
        return out


def run_virtual(exercise: m.Exercise, *, progress: Progress | None = None) -> Result:
    return VirtualRun(exercise, progress=progress).run()
