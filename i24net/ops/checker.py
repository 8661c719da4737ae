"""The soak checker: one verdict over one outside history.

Theory of operation: a soak (chaos, the cluster soak, the reliability tests, a live exercise)
records what its clients did and saw in a history kept outside the system under test
(``i24net.ops.history`` writes it, durably). ``check`` reads nothing else: not the daemons'
audit logs, not their stores. It classifies every submitted message into exactly one class:

- ``delivered``: handed once to the application of each of its recipients, and nowhere else;
- ``duplicated``: handed more than once to some recipient's application;
- ``misdelivered``: handed to an agency that is not among its recipients, or handed to
  anyone although the router refused it or the scenario expected it refused (a recipient
  not cleared for it);
- ``refused``: its sender was told it was refused, with a reason; *expected* when the
  scenario said so for that message (``expect`` ``refused`` or ``refused:<reason>``) or
  allowed that reason for every message, *unexpected* otherwise;
- ``expired``: its sender was told it expired;
- ``lost``: its sender was told it was delivered, but some recipient's application never
  saw it;
- ``pending``: nothing final yet when the history ended, and not seen by every recipient.

Deliveries of ids never submitted are counted as ``unexpected``. The verdict passes only if
every message is in a class its scenario allows (by default ``delivered``, or what its
``expect`` says), nothing is unexpected, at least one message was submitted, and the history
is whole: every line a complete record, a ``begin`` first and an ``end`` last whose counts
match the records before it.

History records (one JSON object a line; ``id`` is the message id in hex, ``t`` Unix ms):

- ``{"op": "begin", "scenario": S, "t": T}``
- ``{"op": "submit", "id": I, "sender": A, "to": [B, ...], "t": T, "expect": E}``: written
  (and fsync'd) after the submit returned, before the message counts as acknowledged; ``to``
  is the concrete recipients; ``expect`` is ``delivered`` (the default), ``refused``,
  ``refused:<reason>``, ``expired``, or ``any`` (delivered, refused, expired or pending:
  the scenario judges the message itself);
- ``{"op": "deliver", "id": I, "agency": B, "seq": N, "t": T}``: the application consumer of
  agency B saw the message handed over (``seq``: the position in B's hand-over log);
- ``{"op": "outcome", "id": I, "state": S, "reason": R, "t": T}``: what the sender was last
  told (``delivered``, ``refused``, ``expired``, or a state that is not final);
- ``{"op": "end", "t": T, "submitted": N, "delivered": N}``: the counts of submit and
  deliver records before it.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from i24net.core.units import percentile

__all__ = ["CLASSES", "Allowance", "Verdict", "check", "parse_history"]

CLASSES = ("delivered", "duplicated", "misdelivered", "refused", "expired", "lost",
           "pending")
EXPECTATIONS = ("delivered", "refused", "expired", "any")  # "refused:<reason>" too
# "any": the scenario judges this message's fate itself (a live exercise's expectations);
# the checker still fails it if it is duplicated, misdelivered or lost
ANY_ALLOWS = frozenset({"delivered", "refused", "expired", "pending"})
SHOWN = 5  # ids quoted per failure


@dataclass(frozen=True)
class Allowance:
    """What a scenario allows beyond each message's own ``expect``.

    ``classes``: classes allowed for any message (``pending`` for a run judged before it
    settles, ``expired`` for short time-to-live); ``refusals``: refusal reasons allowed for
    any message.
    """

    classes: frozenset[str] = frozenset()
    refusals: frozenset[str] = frozenset()


@dataclass
class Verdict:
    """The checker's answer: ``ok``, the counts by class, and the failures in words."""

    submitted: int = 0
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(CLASSES, 0))
    refused_expected: int = 0
    refused_unexpected: int = 0
    refusal_reasons: dict[str, int] = field(default_factory=dict)
    unexpected: int = 0  # deliveries of ids never submitted
    deliveries: int = 0
    ids: dict[str, list[str]] = field(default_factory=dict)  # class -> message ids
    # p50, p99, max of submit -> handed over to its last recipient, over delivered messages
    latency_ms: dict[str, float] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures

    def summary(self) -> dict[str, Any]:
        """Plain data for a JSON report."""
        return {"ok": self.ok, "submitted": self.submitted, **self.counts,
                "refused_expected": self.refused_expected,
                "refused_unexpected": self.refused_unexpected,
                "refusal_reasons": dict(sorted(self.refusal_reasons.items())),
                "unexpected": self.unexpected, "deliveries": self.deliveries,
                "latency_ms": self.latency_ms, "failures": list(self.failures),
                "ids": {k: v[:50] for k, v in sorted(self.ids.items()) if v}}


def parse_history(data: bytes) -> tuple[list[dict[str, Any]], list[str]]:
    """The records of a history file, and what is wrong with it as a whole (empty if
    nothing). A damaged line stops the reading there: what follows cannot be trusted."""
    records: list[dict[str, Any]] = []
    problems: list[str] = []
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    elif lines:
        problems.append(f"history truncated: line {len(lines)} is incomplete (no newline)")
        lines.pop()
    for n, line in enumerate(lines, 1):
        try:
            record = json.loads(line)
        except ValueError:
            problems.append(f"history truncated: line {n} is not a complete record")
            break
        if not isinstance(record, dict) or not isinstance(record.get("op"), str):
            problems.append(f"history damaged: line {n} is not a history record")
            break
        records.append(record)
    return records, problems


def _wholeness(records: list[Mapping[str, Any]]) -> list[str]:
    if not records or records[0].get("op") != "begin":
        return ["history truncated: it does not start with a begin record"]
    if records[-1].get("op") != "end":
        return ["history truncated: it has no end record (the recorder stopped before the "
                "run ended, or the file was cut)"]
    end = records[-1]
    ops = Counter(r.get("op") for r in records)
    problems = []
    for key, op in (("submitted", "submit"), ("delivered", "deliver")):
        if end.get(key) != ops[op]:
            problems.append(f"history truncated: the end record counts {end.get(key)} "
                            f"{op} records, the history holds {ops[op]}")
    if ops["begin"] != 1 or ops["end"] != 1:
        problems.append("history damaged: more than one begin or end record")
    return problems


def check(records: Iterable[Mapping[str, Any]], allow: Allowance = Allowance(), *,
          problems: Iterable[str] = ()) -> Verdict:
    """Classify every submitted message of ``records`` and judge the run; ``problems``
    are those ``parse_history`` found (each one fails the verdict)."""
    records = list(records)
    v = Verdict(failures=list(problems))
    v.failures += _wholeness(records)
    submits: dict[str, Mapping[str, Any]] = {}
    seen: dict[str, Counter[str]] = {}
    first_seen: dict[str, dict[str, int]] = {}  # id -> agency -> first hand-over
    outcomes: dict[str, Mapping[str, Any]] = {}
    for r in records:
        op = r.get("op")
        if op == "submit":
            if r["id"] in submits:
                v.failures.append(f"history damaged: message {r['id']} submitted twice")
            expect = str(r.get("expect", "delivered"))
            if expect not in EXPECTATIONS and not expect.startswith("refused:"):
                v.failures.append(f"history damaged: message {r['id']} has the unknown "
                                  f"expectation {expect!r}")
            submits[r["id"]] = r
        elif op == "deliver":
            v.deliveries += 1
            seen.setdefault(r["id"], Counter())[r["agency"]] += 1
            at = first_seen.setdefault(r["id"], {})
            at[r["agency"]] = min(at.get(r["agency"], r["t"]), r["t"])
        elif op == "outcome":
            outcomes[r["id"]] = r
    v.submitted = len(submits)
    v.ids = {c: [] for c in (*CLASSES, "refused_unexpected", "unexpected")}
    unexpected_reasons: Counter[str] = Counter()
    latencies: list[float] = []
    for mid, s in submits.items():
        outcome = outcomes.get(mid)
        cls = _classify(s, seen.get(mid, Counter()), outcome)
        reason = str(outcome.get("reason", "")) if cls == "refused" and outcome else ""
        v.counts[cls] += 1
        v.ids[cls].append(mid)
        if cls == "refused":
            v.refusal_reasons[reason] = v.refusal_reasons.get(reason, 0) + 1
            if _allowed(s, cls, reason, allow):
                v.refused_expected += 1
            else:
                v.refused_unexpected += 1
                v.ids["refused_unexpected"].append(mid)
                unexpected_reasons[reason or "(no reason)"] += 1
        if cls == "delivered" and mid in first_seen:
            latencies.append(max(first_seen[mid].values()) - s["t"])
    v.unexpected = sum(1 for mid in seen if mid not in submits)
    v.ids["unexpected"] = sorted(mid for mid in seen if mid not in submits)
    if latencies:
        v.latency_ms = {"p50": percentile(latencies, 50), "p99": percentile(latencies, 99),
                        "max": max(latencies)}
    _judge(v, submits, allow, unexpected_reasons)
    return v


def _classify(s: Mapping[str, Any], seen: Counter[str],
              outcome: Mapping[str, Any] | None) -> str:
    recipients = set(s["to"])
    state = outcome.get("state", "") if outcome else ""
    expect = str(s.get("expect", "delivered"))
    if any(a not in recipients for a in seen) or (seen and expect.startswith("refused")) \
            or (seen and state == "refused"):
        return "misdelivered"
    if any(n > 1 for n in seen.values()):
        return "duplicated"
    if state == "refused":
        return "refused"
    if state == "expired":
        return "expired"
    if set(seen) == recipients:
        return "delivered"
    if state == "delivered":
        return "lost"
    return "pending"


def _allowed(s: Mapping[str, Any], cls: str, reason: str, allow: Allowance) -> bool:
    expect = str(s.get("expect", "delivered"))
    if cls in allow.classes or (cls == "refused" and reason in allow.refusals):
        return True
    if expect == "any":
        return cls in ANY_ALLOWS
    if cls == "refused":
        return expect == "refused" or expect == f"refused:{reason}"
    return cls == expect


def _judge(v: Verdict, submits: Mapping[str, Mapping[str, Any]], allow: Allowance,
           unexpected_reasons: Counter[str]) -> None:
    def shown(ids: list[str]) -> str:
        more = f", and {len(ids) - SHOWN} more" if len(ids) > SHOWN else ""
        return ", ".join(ids[:SHOWN]) + more

    if not submits:
        v.failures.append("nothing submitted: the history has no submit records")
    for cls in CLASSES:
        if cls == "refused":
            continue
        bad = [m for m in v.ids[cls] if not _allowed(submits[m], cls, "", allow)]
        if bad:
            v.failures.append(f"{cls}: {len(bad)} message(s) ({shown(bad)})")
    if v.refused_unexpected:
        expected = Counter(str(submits[m].get("expect", "delivered"))
                           for m in v.ids["refused_unexpected"])
        v.failures.append(
            f"refused (unexpected): {v.refused_unexpected} message(s), by reason "
            f"{', '.join(f'{r} {n}' for r, n in sorted(unexpected_reasons.items()))}; "
            f"expected {', '.join(f'{e} {n}' for e, n in sorted(expected.items()))} "
            f"({shown(v.ids['refused_unexpected'])})")
    if v.unexpected:
        v.failures.append(f"unexpected: {v.unexpected} message(s) delivered but never "
                          f"submitted ({shown(v.ids['unexpected'])})")
