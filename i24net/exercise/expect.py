"""Judging expectations against what a run observed.

Theory of operation: one pure function per expectation kind, from the expectation and the
``Observations`` to an ``Outcome`` (met or not, a one-line detail a person can act on, and
the measured figure when there is one: the slowest delivery, the time-to-withdraw, the time
to revoke). ``JUDGES`` maps each expectation class to its function, as data.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from i24net.core.labels import Precedence
from i24net.core.units import duration
from i24net.exercise import model as m
from i24net.exercise.observe import ATTACKER, MessageObs, Observations


@dataclass(frozen=True, slots=True)
class Outcome:
    index: int
    kind: str
    description: str
    passed: bool
    detail: str
    measured: float | None = None  # seconds
    line: int = 0


def _fmt(s: float | None) -> str:
    """A time in a verdict's detail: precise, since it is read against a limit."""
    return duration(s, precise=True)


def _deadline(within: float | str | None, msg: MessageObs) -> float | None:
    if within == "target":
        return float(Precedence[msg.precedence].target_seconds)
    return within if isinstance(within, float | int) else None


def _none_sent(name: str) -> tuple[bool, str, float | None]:
    return False, f"no message named {name!r} was sent (did its inject fail?)", None


def delivered(e: m.Delivered, obs: Observations) -> tuple[bool, str, float | None]:
    msgs = obs.named(e.message)
    if not msgs:
        return _none_sent(e.message)
    missing: list[str] = []
    late: list[str] = []
    slowest: float | None = None
    total = 0
    for msg in msgs:
        wanted = obs.expand(e.to, msg.recipients + tuple(e.to)) if e.to else msg.recipients
        limit = _deadline(e.within, msg)
        for r in wanted:
            total += 1
            lat = msg.latency(r)
            if lat is None:
                why = msg.refused_by.get(r) or (f"refused: {msg.reason}" if msg.state ==
                                                "refused" else "not delivered")
                missing.append(f"{r} ({why})")
                continue
            slowest = lat if slowest is None else max(slowest, lat)
            if limit is not None and lat > limit + 1e-9:
                late.append(f"{r} after {_fmt(lat)}")
    copies = f" ({len(msgs)} copies)" if len(msgs) > 1 else ""
    if missing:
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        return False, f"{total - len(missing)}/{total} delivered{copies}; missing: " \
            f"{', '.join(missing[:3])}{more}", slowest
    if late:
        more = f" and {len(late) - 3} more" if len(late) > 3 else ""
        return False, f"late: {', '.join(late[:3])}{more}", slowest
    return True, f"{total}/{total} delivered{copies}, slowest {_fmt(slowest)}", slowest


def refused(e: m.Refused, obs: Observations) -> tuple[bool, str, float | None]:
    notice = obs.notices.get(e.message)
    if notice is not None and not any(msg.state == "refused" for msg in obs.named(e.message)):
        if notice.decision != "refused":
            return False, f"the GS's decision: {notice.decision or 'none yet'}", None
        if e.reason and notice.reason != e.reason:
            return False, f"refused by the GS for {notice.reason}, not {e.reason}", None
        took = None if notice.decided is None else notice.decided - notice.requested
        return True, f"refused by the GS: {notice.reason} after {_fmt(took)}", took
    msgs = obs.named(e.message)
    if not msgs:
        return _none_sent(e.message)
    reasons: Counter[str] = Counter()
    for msg in msgs:
        if msg.state == "refused":
            reasons[msg.reason] += 1
        elif msg.refused_by:
            reasons.update(msg.refused_by.values())
        else:
            return False, f"{msg.state}, not refused" + (
                f" (delivered to {len(msg.delivered)})" if msg.delivered else ""), None
    if e.reason and set(reasons) != {e.reason}:
        return False, "refused for " + ", ".join(sorted(reasons)) + f", not {e.reason}", None
    took = max((msg.decided - msg.sent for msg in msgs if msg.decided is not None),
               default=None)
    return True, "refused: " + ", ".join(f"{r}" + (f" x{n}" if n > 1 else "")
                                         for r, n in sorted(reasons.items())), took


def dropped(e: m.Dropped, obs: Observations) -> tuple[bool, str, float | None]:
    msgs = obs.named(e.message)
    if not msgs:
        return _none_sent(e.message)
    reached: list[str] = []
    for msg in msgs:
        if msg.state == "refused":
            return False, f"refused by the router ({msg.reason}), not dropped", None
        wanted = obs.expand(e.to, msg.recipients) if e.to else msg.recipients
        reached += [r for r in wanted if r in msg.delivered]
    if reached:
        return False, f"reached {', '.join(sorted(set(reached))[:5])}", None
    ids = {msg.id for msg in msgs}
    why = Counter(d.reason for d in obs.drops if d.msg_id in ids)
    how = (": " + ", ".join(sorted(why))) if why else ""
    return True, f"never delivered{how}", None


def purged(e: m.Purged, obs: Observations) -> tuple[bool, str, float | None]:
    """Every listed recipient that got the message erased its body at the end of its
    retention period; reports the longest it was held."""
    msgs = obs.named(e.message)
    if not msgs:
        return _none_sent(e.message)
    held: list[str] = []
    kept: list[float] = []
    for msg in msgs:
        wanted = obs.expand(e.to, msg.recipients) if e.to else tuple(msg.delivered)
        if not wanted:
            return False, f"{msg.state}: no recipient got it, so none could erase it", None
        for r in wanted:
            if r in msg.purged:
                kept.append(msg.purged[r] - msg.delivered.get(r, msg.sent))
            else:
                held.append(r if r in msg.delivered else f"{r} (never delivered)")
    if held:
        return False, f"still held by {', '.join(sorted(set(held))[:5])}", None
    longest = max(kept, default=None)
    return True, f"erased by {len(kept)} recipient(s), held {_fmt(longest)} at most", longest


def no_loss(e: m.NoLoss, obs: Observations) -> tuple[bool, str, float | None]:
    """Every message the exercise asked for, accepted or not, has a final outcome other than
    loss: each recipient got it (or refused it on its own checks), or the router refused it,
    or it expired. Lost: a planned message the runner could not even submit (its sender was
    down), one that never reached a decision, and an accepted one a recipient never got."""
    lost: list[str] = []
    late: list[str] = []
    checked = 0
    slowest: float | None = None
    for name, at, why in obs.unsent:
        if name and name in e.ignore:
            continue
        checked += 1
        lost.append(f"{name or 'message'} planned at {_fmt(at)} never submitted ({why})")
    for msg in obs.messages:
        if msg.origin == ATTACKER or (msg.name and msg.name in e.ignore):
            continue
        label = f"{msg.name or msg.kind} {msg.id[:8]}"
        if msg.state in ("refused", "expired"):
            checked += 1  # a decision (the router's, or the sender's lifetime), not a loss
            continue
        if not msg.accepted:
            checked += 1
            lost.append(f"{label} never accepted or refused by the router"
                        + (" (still pending at the end)" if msg.id in obs.pending else ""))
            continue
        limit = _deadline(e.within, msg)
        for r in msg.recipients:
            if r in msg.refused_by:
                continue  # a recipient's own refusal is a decision, not a loss
            checked += 1
            lat = msg.latency(r)
            if lat is None:
                lost.append(f"{label} -> {r}" + (" (still pending at the end)"
                                                  if msg.id in obs.pending else ""))
                continue
            slowest = lat if slowest is None else max(slowest, lat)
            if limit is not None and lat > limit + 1e-9:
                late.append(f"{msg.name or msg.kind} -> {r} after {_fmt(lat)}")
    if lost:
        more = f" and {len(lost) - 3} more" if len(lost) > 3 else ""
        return False, f"{len(lost)} of {checked} lost: {', '.join(lost[:3])}{more}", slowest
    if late:
        more = f" and {len(late) - 3} more" if len(late) > 3 else ""
        return False, f"{len(late)} late: {', '.join(late[:3])}{more}", slowest
    return True, f"{checked}/{checked} messages and deliveries final, none lost, slowest " \
        f"{_fmt(slowest)}", slowest


def cancelled_everywhere(e: m.CancelledEverywhere,
                         obs: Observations) -> tuple[bool, str, float | None]:
    n = obs.notices.get(e.notice)
    if n is None or n.decision != "published":
        return False, f"notice {e.notice} was never published" + (
            f" ({n.decision}: {n.reason})" if n and n.decision else ""), None
    if n.cancel_at is None:
        return False, "the cancellation was never sent", None
    everyone = sorted(set(n.holders) | set(n.audience))
    # a holder revoked before the cancellation can be told nothing: it is cut off already
    gone = [h for h in everyone if obs.revoked.get(h, float("inf")) <= n.cancel_at
            and h not in n.cancelled]
    holders = [h for h in everyone if h not in gone]
    missing = [h for h in holders if h not in n.cancelled]
    if missing:
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        return False, f"still held at {', '.join(missing[:5])}{more} " \
            f"({len(holders) - len(missing)}/{len(holders)} withdrawn)", None
    ttw = max(n.cancelled[h] for h in holders) - n.cancel_at if holders else 0.0
    if e.within is not None and ttw > e.within + 1e-9:
        return False, f"time-to-withdraw {_fmt(ttw)}, over {_fmt(e.within)}", ttw
    skipped = f" ({len(gone)} revoked holder(s) not counted)" if gone else ""
    return True, f"{n.number or 'notice'} withdrawn from {len(holders)} holders, " \
        f"time-to-withdraw {_fmt(ttw)}{skipped}", ttw


def published(e: m.Published, obs: Observations) -> tuple[bool, str, float | None]:
    n = obs.notices.get(e.notice)
    if n is None or n.decision != "published":
        what = f"{n.decision}: {n.reason}" if n and n.decision else "no decision"
        return False, f"not published ({what})", None
    if not n.audience:
        return False, f"published as {n.number or '?'} but sent to nobody", None
    missing = [a for a in n.audience if a not in n.holders]
    if missing:
        return False, f"{len(n.audience) - len(missing)}/{len(n.audience)} hold it; " \
            f"missing {', '.join(missing[:5])}", None
    took = max(n.holders.values(), default=n.decided or n.requested) - n.requested
    if e.within is not None and took > e.within + 1e-9:
        return False, f"the last holder had it after {_fmt(took)}, over {_fmt(e.within)}", \
            took
    return True, f"{n.number} held by {len(n.audience)} agencies {_fmt(took)} after the " \
        "request", took


def nothing_after_revocation(e: m.NothingAfterRevocation,
                             obs: Observations) -> tuple[bool, str, float | None]:
    stolen_at = obs.compromised.get(e.agency)
    revoked_at = obs.revoked.get(e.agency)
    if stolen_at is None or revoked_at is None:
        return False, "the key was never stolen or never revoked in this run", None
    forged = [msg for msg in obs.messages if msg.origin == ATTACKER and msg.sender == e.agency]
    before = [msg for msg in forged if msg.sent < revoked_at]
    after = [msg for msg in forged if msg.sent >= revoked_at]
    took_in = [msg for msg in after if msg.accepted or msg.delivered]
    time_to_revoke = revoked_at - stolen_at
    acc_before = sum(1 for msg in before if msg.accepted)
    refused = Counter(msg.reason for msg in after if msg.state == "refused")
    why = ", ".join(f"{r} x{c}" for r, c in sorted(refused.items()))
    if took_in:
        where = sorted({r for msg in took_in for r in msg.delivered})
        return False, f"{len(took_in)} forged message(s) sent after the revocation were " \
            f"accepted" + (f" (delivered to {', '.join(where[:5])})" if where else ""), \
            time_to_revoke
    return True, f"time to revoke {_fmt(time_to_revoke)}; {acc_before} forged accepted " \
        f"before, 0 of {len(after)} after" + (f" ({why})" if why else ""), time_to_revoke


def unreadable_to_thief(e: m.UnreadableToThief,
                        obs: Observations) -> tuple[bool, str, float | None]:
    found = obs.exposure.get(e.agency)
    if found is None:
        return False, "no key theft was measured in this mode (virtual runs only)", None
    readable, unreadable = found
    bad, missing = [], []
    for n in e.messages:
        for msg in obs.named(n):
            if msg.id in readable:
                bad.append(n)
            elif msg.id not in unreadable:
                missing.append(n)
    shut = [n for n in e.readable for msg in obs.named(n) if msg.id not in readable]
    if bad:
        return False, f"the stolen keys open {', '.join(dict.fromkeys(bad))}", None
    if missing or shut:
        return False, "not recorded by the thief: " + ", ".join(
            dict.fromkeys(missing + shut)), None
    why = Counter(unreadable[msg.id] for n in e.messages for msg in obs.named(n))
    return True, f"{sum(why.values())} recorded message(s) unreadable (" + ", ".join(
        f"{r} x{c}" for r, c in sorted(why.items())) + f"); {len(readable)} readable in the " \
        "window", None


def flowcheck_clean(e: m.FlowcheckClean, obs: Observations) -> tuple[bool, str, float | None]:
    if not obs.flowcheck_ran:
        return False, "the information-flow checker did not run in this mode", None
    if obs.violations:
        kinds = Counter(str(v.get("rule", v.get("kind", "?"))) for v in obs.violations)
        return False, f"{len(obs.violations)} violation(s): " + ", ".join(
            f"{k} x{n}" for k, n in sorted(kinds.items())), None
    return True, "no violation", None


JUDGES: dict[type[m.Expectation], Callable[[Any, Observations],
                                           tuple[bool, str, float | None]]] = {
    m.Delivered: delivered,
    m.Refused: refused,
    m.Dropped: dropped,
    m.NoLoss: no_loss,
    m.CancelledEverywhere: cancelled_everywhere,
    m.Published: published,
    m.NothingAfterRevocation: nothing_after_revocation,
    m.Purged: purged,
    m.UnreadableToThief: unreadable_to_thief,
    m.FlowcheckClean: flowcheck_clean,
}


def judge(expectations: tuple[m.Expectation, ...], obs: Observations) -> list[Outcome]:
    out = []
    for e in expectations:
        passed, detail, measured = JUDGES[type(e)](e, obs)
        out.append(Outcome(e.index, e.kind, e.describe(), passed, detail, measured, e.line))
    return out
