"""The after-action result: expectations judged, figures computed, JSON written.

Theory of operation: ``Result.build`` judges the expectations over the ``Observations`` and
derives every figure the reports show (latency by precedence, refusals by reason,
deliveries per agency, a timeline). ``to_dict`` is the JSON report; it holds no wall-clock
time, no absolute path and no iteration-order accident (every mapping is sorted, every
float rounded to the millisecond), so a virtual run gives identical bytes for a seed.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from i24net.core.labels import Label, Precedence
from i24net.core.units import percentile
from i24net.exercise import model as m
from i24net.exercise.expect import Outcome, judge
from i24net.exercise.observe import ATTACKER, Observations

PRECEDENCES = tuple(p.name for p in Precedence)
TARGETS = {p.name: float(p.target_seconds) for p in Precedence}
# A timeline longer than this lists the first messages and counts the rest: a flood of
# 100,000 would otherwise make the JSON and the HTML report unreadable.
MAX_TIMELINE_MESSAGES = 2_000


def _r(x: float | None) -> float | None:
    return None if x is None else round(float(x), 3)


@dataclass(slots=True)
class Result:
    exercise: m.Exercise
    mode: str
    seed: int
    obs: Observations
    outcomes: list[Outcome]
    wall_seconds: float = 0.0  # how long the run took; not in the JSON (not reproducible)
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def build(cls, exercise: m.Exercise, mode: str, seed: int, obs: Observations,
              wall_seconds: float = 0.0) -> Result:
        return cls(exercise, mode, seed, obs, judge(exercise.expectations, obs), wall_seconds)

    # -- verdict --------------------------------------------------------------------------
    @property
    def passed(self) -> bool:
        return all(o.passed for o in self.outcomes)

    @property
    def failed(self) -> list[Outcome]:
        return [o for o in self.outcomes if not o.passed]

    # -- figures --------------------------------------------------------------------------
    def latencies(self) -> dict[str, list[float]]:
        """Delivery latencies (seconds) by precedence, for every delivery made."""
        out: dict[str, list[float]] = {p: [] for p in PRECEDENCES}
        for msg in self.obs.messages:
            for r in sorted(msg.delivered):
                out[msg.precedence].append(msg.delivered[r] - msg.sent)
        return out

    def latency_by_precedence(self) -> dict[str, dict[str, Any]]:
        out = {}
        for p, values in self.latencies().items():
            values = sorted(values)
            row: dict[str, Any] = {"count": len(values), "target_s": TARGETS[p]}
            if values:
                row.update(p50_s=_r(percentile(values, 50)), p95_s=_r(percentile(values, 95)),
                           max_s=_r(values[-1]),
                           within_target=sum(1 for v in values if v <= TARGETS[p]))
            out[p] = row
        return out

    def refusals(self) -> dict[str, int]:
        c: Counter[str] = Counter()
        for msg in self.obs.messages:
            if msg.state == "refused":
                c[msg.reason] += 1
            for reason in msg.refused_by.values():
                c[f"{reason} (at recipient)"] += 1
        for n in self.obs.notices.values():
            if n.decision == "refused":
                c[f"{n.reason} (GS review)"] += 1
        return dict(sorted(c.items()))

    def drops(self) -> dict[str, int]:
        return dict(sorted(Counter(d.reason for d in self.obs.drops).items()))

    def per_agency(self) -> dict[str, dict[str, int]]:
        rows = {a: {"sent": 0, "delivered": 0, "refused": 0, "pending": 0}
                for a in self.obs.agencies}
        for msg in self.obs.messages:
            if msg.sender in rows and msg.origin != ATTACKER:
                rows[msg.sender]["sent"] += 1
                if msg.state == "refused":
                    rows[msg.sender]["refused"] += 1
            for r in msg.recipients:
                if r not in rows:
                    continue
                if r in msg.delivered:
                    rows[r]["delivered"] += 1
                elif msg.accepted and r not in msg.refused_by:
                    rows[r]["pending"] += 1
        return dict(sorted(rows.items()))

    def summary(self) -> dict[str, Any]:
        msgs = self.obs.messages
        return {
            "expectations": len(self.outcomes),
            "met": sum(o.passed for o in self.outcomes),
            "failed": len(self.failed),
            "injects": len(self.obs.injects),
            "messages": len(msgs),
            "accepted": sum(1 for x in msgs if x.accepted),
            "refused": sum(1 for x in msgs if x.state == "refused"),
            "deliveries": sum(len(x.delivered) for x in msgs),
            "deliveries_expected": sum(len(x.recipients) for x in msgs if x.accepted),
            "dropped_frames": len(self.obs.drops),
            "flowcheck_violations": len(self.obs.violations),
        }

    def timeline(self) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        for i in self.obs.injects:
            row = {"t": _r(i.t), "type": "inject", "index": i.index, "action": i.action,
                   "text": i.text}
            if not i.ok:
                row["error"] = i.detail
            rows.append(row)
        ordered = sorted(self.obs.messages, key=lambda x: (x.sent, x.id))
        for msg in ordered[:MAX_TIMELINE_MESSAGES]:
            last = max(msg.delivered.values(), default=None)
            rows.append({"t": _r(msg.sent), "type": "message", "name": msg.name,
                         "origin": msg.origin, "sender": msg.sender, "kind": msg.kind,
                         "label": msg.label, "precedence": msg.precedence,
                         "recipients": len(msg.recipients), "delivered": len(msg.delivered),
                         "state": msg.state, "reason": msg.reason,
                         "last_delivery_t": _r(last)})
        if len(ordered) > MAX_TIMELINE_MESSAGES:
            rows.append({"t": _r(ordered[MAX_TIMELINE_MESSAGES].sent), "type": "note",
                         "text": f"{len(ordered) - MAX_TIMELINE_MESSAGES} more messages "
                         "not listed"})
        rows.sort(key=lambda r: (r["t"], r["type"] != "inject", r.get("index", 0)))
        return rows

    def notices(self) -> dict[str, dict[str, Any]]:
        out = {}
        for name, n in sorted(self.obs.notices.items()):
            ttw = None
            if n.cancel_at is not None and n.cancelled:
                ttw = max(n.cancelled.values()) - n.cancel_at
            out[name] = {"requester": n.requester, "requested_t": _r(n.requested),
                         "decision": n.decision, "reason": n.reason, "number": n.number,
                         "decided_t": _r(n.decided), "audience": len(n.audience),
                         "holders": len(n.holders), "cancel_t": _r(n.cancel_at),
                         "withdrawn": len(n.cancelled), "time_to_withdraw_s": _r(ttw)}
        return out

    def operations(self) -> dict[str, dict[str, Any]]:
        """The joint debriefing of each operation the exercise ran: its lead, who was in it
        and when, and its traffic (messages under its caveat or addressed to its group) by
        sender: sent, refused, deliveries and their latency, refusals by reason."""
        out: dict[str, dict[str, Any]] = {}
        for inj in sorted(self.exercise.injects, key=lambda i: (i.at, i.index)):
            if isinstance(inj, m.OperationCreate):
                out[inj.operation] = {
                    "title": inj.title or inj.operation, "lead": inj.lead,
                    "created_t": _r(inj.at), "members": sorted({inj.lead, *inj.members}),
                    "joined": {}, "removed": {}, "closed_t": None}
            elif isinstance(inj, m.OperationAdd | m.OperationRemove) and inj.operation in out:
                key = "joined" if isinstance(inj, m.OperationAdd) else "removed"
                for a in inj.agencies:
                    out[inj.operation][key].setdefault(a, _r(inj.at))
            elif isinstance(inj, m.OperationClose) and inj.operation in out:
                out[inj.operation]["closed_t"] = _r(inj.at)
        if not out:
            return out
        named = self.exercise.named()
        for name, op in out.items():
            senders: dict[str, dict[str, Any]] = {}
            refusals: Counter[str] = Counter()
            latencies: list[float] = []
            for msg in self.obs.messages:
                sent_by = named.get(msg.name)
                to = getattr(sent_by, "to", ()) if msg.origin != ATTACKER else ()
                if name not in Label.parse(msg.label).caveats and f"@{name}" not in to:
                    continue
                row = senders.setdefault(msg.sender, {"sent": 0, "refused": 0,
                                                      "deliveries": 0, "latencies": []})
                row["sent"] += 1
                if msg.state == "refused":
                    row["refused"] += 1
                    refusals[msg.reason] += 1
                for r in sorted(msg.delivered):
                    row["deliveries"] += 1
                    row["latencies"].append(msg.delivered[r] - msg.sent)
                    latencies.append(msg.delivered[r] - msg.sent)
            for row in senders.values():
                values = sorted(row.pop("latencies"))
                row["p50_s"] = _r(percentile(values, 50)) if values else None
                row["max_s"] = _r(values[-1]) if values else None
            values = sorted(latencies)
            op.update(
                messages=sum(r["sent"] for r in senders.values()),
                by_sender=dict(sorted(senders.items())),
                refusals=dict(sorted(refusals.items())),
                deliveries=len(values),
                p50_s=_r(percentile(values, 50)) if values else None,
                max_s=_r(values[-1]) if values else None)
        return out

    # -- output ---------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        ex = self.exercise
        return {
            "exercise": {"name": ex.name, "description": ex.description,
                         "file": Path(ex.source).name if ex.source else "",
                         "network": ex.network.describe() if not ex.network.spec
                         else f"spec {ex.network.spec.name}",
                         "agencies": len(self.obs.agencies), "seed": self.seed,
                         "mode": self.mode, "duration_s": _r(ex.duration),
                         "ended_s": _r(self.obs.duration)},
            "passed": self.passed,
            "summary": self.summary(),
            "expectations": [
                {"index": o.index, "kind": o.kind, "description": o.description,
                 "passed": o.passed, "detail": o.detail, "measured_s": _r(o.measured)}
                for o in self.outcomes],
            "latency_by_precedence": self.latency_by_precedence(),
            "refusals": self.refusals(),
            "drops": self.drops(),
            "per_agency": self.per_agency(),
            "notices": self.notices(),
            "operations": self.operations(),
            "flowcheck": {"ran": self.obs.flowcheck_ran,
                          "violations": [plain_text(v) for v in self.obs.violations]},
            "timeline": self.timeline(),
            **{k: plain_text(v) for k, v in sorted(self.extra.items())},
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def plain_text(v: Any) -> Any:
    """A JSON-safe, sorted copy (violations come from the checker as dicts)."""
    if isinstance(v, dict):
        return {str(k): plain_text(x) for k, x in sorted(v.items(), key=lambda kv: str(kv[0]))}
    if isinstance(v, list | tuple | set | frozenset):
        items = [plain_text(x) for x in v]
        return sorted(items, key=str) if isinstance(v, set | frozenset) else items
    if isinstance(v, bytes):
        return v.hex()
    if isinstance(v, float):
        return round(v, 3)
    if v is None or isinstance(v, bool | int | str):
        return v
    return str(v)
