"""The router as a sans-IO state machine: bytes in on submit topics, stamped bytes out.

Theory of operation: the router owns ``<prefix>/submit/+``. ``handle(topic, payload, now)``
takes one inbound frame and returns the events to log and count; outbound frames wait in a
priority queue held here (precedence first, then arrival order) and the driver drains it
with ``pop``. Sequence numbers are assigned when a delivery is *popped*, not when the
message is accepted, so a FLASH message that overtakes ROUTINE traffic never looks like a
gap to the recipient.

- Envelope: decide (``policy.decide``); accepted -> one delivery per recipient (stamp +
  envelope) and an ``accepted`` report to the sender; refused -> a ``refused`` report with
  the reason code. A retry of a message already accepted (same id, same digest) is
  re-delivered only to recipients that have not receipted it yet; that is how a sender's
  retries repair a router crash or a broker that lost a queue.
  A retry also means "I still miss receipts", so the receipts already forwarded are
  forwarded again (the router holds the frames in memory, bounded); a recipient whose
  receipt frame is no longer held (after a restart) gets the message again instead and its
  node, which de-duplicates, answers with a fresh receipt.
- Receipt: verified, must come from the receiver's own topic and name a recipient of the
  message; forwarded unchanged to the original sender's inbox.
- Gap request: verified, from the requester's own topic; the logged deliveries are re-sent.
- Shards (``i24net.core.shards``): with K routers, this machine handles the submit topics of
  its own shard's senders, and ``submit/<A>/to/<k>`` of every agency A for its own k, where
  nodes put the receipts and gap requests that concern this shard (envelopes are refused
  there). A receipt about another shard's sender, or a gap request about another shard's
  stream, that still lands here is verified and passed on to that shard's route topic; the
  frames that arrive on this shard's route topic are handled as if from the agency that
  signed them (only the router account may publish there).
- Rate limit: envelopes and gap requests take a token from their sender's bucket
  (``RateLimit``) before anything else; an empty bucket refuses the envelope with
  ``rate.limited`` (the node retries later) so one flooding agency cannot delay the others.
- Drops (bytes that do not decode, frames on topics not served here, receipts and gap
  requests that do not verify): always counted, but recorded as events only up to
  ``AuditBound`` per source and window, the rest summed up in one ``DropSummary`` event when
  the window closes (``handle_timer``, due at ``next_timer``), so a flood cannot fill the
  audit log. Bytes that do not decode on a
  listed agency's own topic are answered with a signed report under the all-zero id
  (``frames.NO_MESSAGE_ID``) naming their digest and the reason, bounded the same way.

The router never holds a body key: it decides on headers alone. Its durable state (routed
messages, sequence counters, delivery log, receipts) lives behind ``RouterStore`` so the
same machine runs on SQLite in the daemon and in memory in the simulator.
"""

from __future__ import annotations

import hashlib
import heapq
import itertools
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol

from i24net.core import frames as fr
from i24net.core import keys as k
from i24net.core.directory import Directory, check_succession
from i24net.core.envelope import Envelope
from i24net.core.errors import ConfigError, I24Error
from i24net.core.events import (
    Accepted,
    DropSummary,
    DuplicateSubmission,
    Forwarded,
    FrameDropped,
    ReceiptForwarded,
    Refused,
    Resent,
    RouterEvent,
)
from i24net.core.frames import CONTROL_PRIORITY
from i24net.core.policy import Decision, PriorMessage, decide
from i24net.core.shards import Shard, route_index, route_topic, shard_of

# Forwarded receipt frames kept for re-forwarding (~250 bytes each): 65,536 is 16 MiB, a
# broadcast to every NCB several hundred times over. Beyond it the oldest messages' frames
# are forgotten, which costs re-deliveries, never a receipt.
MAX_HELD_RECEIPTS = 65_536

# A rate-limited sender's refusal reports go behind every delivery (ROUTINE is 3): backpressure
# to a flooder is the least urgent work the router has.
LIMITED_PRIORITY = 4


@dataclass(frozen=True, slots=True)
class RateLimit:
    """Per-sender token bucket: ``capacity`` envelopes at once, then ``per_second``.

    The sender is the agency of the submit topic (the broker account that published, so one
    agency cannot drain another's bucket without its broker credentials). Every envelope
    takes a token before its signature is checked - a retry too, since a retry makes the
    router re-deliver - and so does every gap request (each may resend 10,000 frames).
    Receipts take none. Over the limit, an envelope is refused with ``rate.limited`` (the
    sender's node retries it later) and a gap request is dropped (the node asks again).
    The bucket bounds what one agency can put in the router's queue ahead of the others'
    messages to ``capacity`` messages plus ``per_second`` a second.
    """

    capacity: int = 200
    per_second: int = 100

    def __post_init__(self) -> None:
        if self.capacity < 1 or self.per_second < 0:
            raise ConfigError("a rate limit needs capacity >= 1 and per_second >= 0",
                              reason="config.rate-limit")


DEFAULT_RATE_LIMIT = RateLimit()


@dataclass(frozen=True, slots=True)
class AuditBound:
    """How many dropped frames per source are recorded one by one.

    Every drop (bytes on a submit topic that do not decode, a frame on a topic the router
    does not own, a receipt or gap request that does not verify...) would otherwise be one
    event, hence one audit entry and one log line (about 310 bytes each): a flood would fill
    the audit log without bound. Per source, a window opens at the source's first drop and
    lasts ``window_ms``; its first ``per_window`` drops are returned as ``FrameDropped``
    events (and an undecodable submission among them answered with a report); the rest are
    only counted (``counters`` still counts every drop) and summed up in one ``DropSummary``
    event, with the count per reason, when the window closes. Sources: each agency of the directory (the
    account of the submit topic), all unlisted agencies together, every topic the router does
    not own together, the route topic. So at most ``per_window + 1`` events per source and
    window, whatever arrives. Time comes from the caller (``handle``, ``handle_timer``).
    """

    per_window: int = 16
    window_ms: int = 60_000

    def __post_init__(self) -> None:
        if self.per_window < 0 or self.window_ms < 1:
            raise ConfigError("an audit bound needs per_window >= 0 and window_ms >= 1",
                              reason="config.audit-bound")


DEFAULT_AUDIT_BOUND = AuditBound()
# Drop sources that are not agencies (an agency id never contains parentheses):
OTHER_TOPICS, UNLISTED, ROUTE = "(other topics)", "(unlisted agencies)", "(route topic)"


@dataclass(slots=True)
class _Window:
    """One source's drops since its window opened."""

    opened_ms: int
    recorded: int = 0
    counts: dict[str, int] = field(default_factory=dict)  # reason -> drops not recorded
    first_ms: int = 0
    last_ms: int = 0


@dataclass(order=True, slots=True)
class _Queued:
    priority: int
    order: int
    topic: str = field(compare=False)
    payload: bytes = field(compare=False, default=b"")
    # deliveries are stamped at pop time:
    msg_id: bytes = field(compare=False, default=b"")
    recipient: str = field(compare=False, default="")
    agreement: str = field(compare=False, default="")


class RouterStore(Protocol):
    """Durable router state."""

    def prior(self, msg_id: bytes) -> PriorMessage | None: ...
    def record(self, prior: PriorMessage, envelope: bytes, expires_ms: int) -> None: ...
    def envelope(self, msg_id: bytes) -> bytes | None: ...
    def next_seq(self, recipient: str) -> int: ...
    def log_delivery(self, recipient: str, seq: int, msg_id: bytes, frame: bytes) -> None: ...
    def logged(self, recipient: str, first: int, last: int) -> list[bytes]: ...
    def add_receipt(self, msg_id: bytes, recipient: str) -> None: ...
    def receipted(self, msg_id: bytes) -> set[str]: ...
    def prune(self, now_ms: int) -> int: ...


class MemoryRouterStore:
    """``RouterStore`` in memory, for the simulator and tests."""

    def __init__(self) -> None:
        self.messages: dict[bytes, tuple[PriorMessage, bytes, int]] = {}
        self.seqs: dict[str, int] = {}
        self.log: dict[tuple[str, int], tuple[bytes, bytes]] = {}
        self.receipts: dict[bytes, set[str]] = {}

    def prior(self, msg_id: bytes) -> PriorMessage | None:
        found = self.messages.get(msg_id)
        return found[0] if found else None

    def record(self, prior: PriorMessage, envelope: bytes, expires_ms: int) -> None:
        self.messages[prior.id] = (prior, envelope, expires_ms)

    def envelope(self, msg_id: bytes) -> bytes | None:
        found = self.messages.get(msg_id)
        return found[1] if found else None

    def next_seq(self, recipient: str) -> int:
        n = self.seqs.get(recipient, 0) + 1
        self.seqs[recipient] = n
        return n

    def log_delivery(self, recipient: str, seq: int, msg_id: bytes, frame: bytes) -> None:
        self.log[(recipient, seq)] = (msg_id, frame)

    def logged(self, recipient: str, first: int, last: int) -> list[bytes]:
        return [found[1] for n in range(first, last + 1)
                if (found := self.log.get((recipient, n))) is not None]

    def add_receipt(self, msg_id: bytes, recipient: str) -> None:
        self.receipts.setdefault(msg_id, set()).add(recipient)

    def receipted(self, msg_id: bytes) -> set[str]:
        return set(self.receipts.get(msg_id, ()))

    def prune(self, now_ms: int) -> int:
        old = [m for m, (_, _, exp) in self.messages.items() if exp < now_ms]
        for m in old:
            del self.messages[m]
            self.receipts.pop(m, None)
        gone = set(old)
        for key in [key for key, (m, _) in self.log.items() if m in gone]:
            del self.log[key]
        return len(old)


class RouterMachine:
    """Routing policy plus stamping, with a precedence queue of outbound frames."""

    def __init__(self, directory: Directory, keys: k.AgencyKeys, store: RouterStore, *,
                 rate_limit: RateLimit | None = DEFAULT_RATE_LIMIT,
                 shard: Shard | None = None,
                 audit_bound: AuditBound | None = DEFAULT_AUDIT_BOUND) -> None:
        self.directory = directory
        self.keys = keys
        self.kid = k.key_id(keys.verify_key)
        self.store = store
        self.prefix = directory.prefix
        self.shard = shard or Shard()
        self.route_topic = route_topic(self.prefix, self.shard.index)
        self._shard_kids = self._stream_owners(directory)
        self._queue: list[_Queued] = []
        self._order = itertools.count()
        self.counters: dict[str, int] = {}
        self._receipts: dict[bytes, dict[str, bytes]] = {}  # msg id -> receiver -> frame
        self._held = 0
        self.rate_limit = rate_limit  # None: no limit
        self._buckets: dict[str, tuple[int, int]] = {}  # agency -> (milli-tokens, at ms)
        self.audit_bound = audit_bound  # None: every drop is an event
        self._windows: dict[str, _Window] = {}  # drop source -> its open window
        self._closing: list[tuple[int, int, str]] = []  # heap of (closes at ms, order, source)

    # -- inputs ---------------------------------------------------------------------------
    def set_directory(self, directory: Directory) -> None:
        """Adopt a (verified) directory: never an older version, and never a different
        directory under the serial already held (a fork: the authority key signed two)."""
        check_succession(self.directory, directory)
        self.directory = directory
        self._shard_kids = self._stream_owners(directory)

    @staticmethod
    def _stream_owners(directory: Directory) -> dict[bytes, int]:
        """Router key id -> shard: the directory lists shard k's key at position k - 1."""
        return {k.key_id(key): i + 1 for i, key in enumerate(directory.router_keys)}

    def owns(self, agency: str) -> bool:
        """Whether this shard routes ``agency``'s submissions."""
        return shard_of(agency, self.shard.count) == self.shard.index

    def submit_filters(self) -> list[str]:
        """The topic filters this shard subscribes to (besides its route topic)."""
        if self.shard.count == 1:
            return [f"{self.prefix}/submit/+"]
        return [*(f"{self.prefix}/submit/{a}" for a in sorted(self.directory.agencies)
                  if self.owns(a)), f"{self.prefix}/submit/+/to/{self.shard.index}"]

    def _count(self, name: str) -> None:
        self.counters[name] = self.counters.get(name, 0) + 1

    def _admit(self, agency: str, now_ms: int) -> bool:
        """Take one token from ``agency``'s bucket; False when it is empty."""
        limit = self.rate_limit
        if limit is None:
            return True
        # topics of agencies the directory does not know share one bucket (bounded memory)
        key = agency if agency in self.directory.agencies else ""
        full = limit.capacity * 1000
        tokens, at = self._buckets.get(key, (full, now_ms))
        tokens = min(full, tokens + max(0, now_ms - at) * limit.per_second)
        ok = tokens >= 1000
        self._buckets[key] = (tokens - 1000 if ok else tokens, max(at, now_ms))
        return ok

    def submit_agency(self, topic: str) -> str | None:
        head = f"{self.prefix}/submit/"
        if not topic.startswith(head):
            return None
        agency = topic[len(head):]
        return agency if agency and "/" not in agency else None

    def _to_shard(self, topic: str) -> tuple[str, int] | None:
        """``submit/<A>/to/<k>`` -> (A, k), else None."""
        head = f"{self.prefix}/submit/"
        if not topic.startswith(head):
            return None
        agency, sep, index = topic[len(head):].partition("/to/")
        if not sep or not agency or "/" in agency or not index.isdigit() or len(index) > 3:
            return None
        return agency, int(index)

    def handle(self, topic: str, payload: bytes, now_ms: int) -> list[RouterEvent]:
        """One inbound frame: the events to log, count and audit (first, the summaries of
        drop windows that have closed by ``now_ms``)."""
        closed = self.handle_timer(now_ms) if self._closing else []
        events = self._handle(topic, payload, now_ms)
        return closed + events if closed else events

    def _handle(self, topic: str, payload: bytes, now_ms: int) -> list[RouterEvent]:
        agency = self.submit_agency(topic)
        if agency is None:
            if topic == self.route_topic:
                return self._dispatch("", payload, now_ms, via="route")
            aimed = self._to_shard(topic)
            if aimed is not None and aimed[1] == self.shard.index:
                return self._dispatch(aimed[0], payload, now_ms, via="shard")
            self._count("drop.topic")
            reason = "shard.misrouted" if route_index(self.prefix, topic) or aimed \
                else "topic.unexpected"
            return self._drop(OTHER_TOPICS, "", reason, topic[:256], payload, now_ms)
        if not self.owns(agency):
            self._count("drop.shard.foreign")
            return self._drop(self._source(agency), agency, "shard.foreign",
                              f"{agency} is routed by shard "
                              f"{shard_of(agency, self.shard.count)}, not {self.shard}",
                              payload, now_ms)
        return self._dispatch(agency, payload, now_ms, via="submit")

    # -- drops: bounded in number, undecodable submissions answered -------------------------
    def _source(self, agency: str) -> str:
        """The drop source of a submit topic: the agency if the directory lists it (the
        broker account that published), else one source for every unlisted name."""
        return agency if agency in self.directory.agencies else UNLISTED

    def _drop(self, source: str, agency: str, reason: str, detail: str, payload: bytes,
              now_ms: int, *, answer: bool = False) -> list[RouterEvent]:
        """A dropped frame (already counted): its event, unless the audit bound has recorded
        enough from ``source`` in this window; an answer to the sender with it if ``answer``."""
        if not self._record_drop(source, reason, now_ms):
            return []
        digest = hashlib.sha256(payload).digest()
        if answer:
            self._refuse_undecodable(agency, digest, reason, detail, len(payload), now_ms)
        return [FrameDropped(sender=agency, reason=reason, detail=detail, digest=digest.hex(),
                             source=source)]

    def _record_drop(self, source: str, reason: str, now_ms: int) -> bool:
        """Whether this drop is recorded one by one (True) or only counted in the window."""
        bound = self.audit_bound
        if bound is None:
            return True
        w = self._windows.get(source)
        if w is None:
            w = self._windows[source] = _Window(now_ms)
            heapq.heappush(self._closing, (now_ms + bound.window_ms, next(self._order), source))
        if w.recorded < bound.per_window:
            w.recorded += 1
            return True
        if not w.counts:
            w.first_ms = now_ms
        w.counts[reason] = w.counts.get(reason, 0) + 1
        w.last_ms = max(w.last_ms, now_ms)
        return False

    # -- timers ---------------------------------------------------------------------------
    def next_timer(self) -> int | None:
        """The earliest time (ms) at which ``handle_timer`` has work: the end of the first
        open drop window; None when no window is open. ``handle`` may open one (a driver
        asks again after each frame)."""
        return self._closing[0][0] if self._closing else None

    def handle_timer(self, now_ms: int) -> list[RouterEvent]:
        """Close the drop windows that end by ``now_ms`` and return a ``DropSummary`` for
        each that held drops not recorded one by one. ``handle`` calls this first; a driver
        calls it at ``next_timer`` so that a summary is not held until the next frame."""
        return self._close_windows(now_ms, every=False)

    def close_drop_windows(self, now_ms: int) -> list[RouterEvent]:
        """Close every open drop window now, ended or not (before stopping: their drops are
        summed up rather than forgotten)."""
        return self._close_windows(now_ms, every=True)

    def _close_windows(self, now_ms: int, *, every: bool) -> list[RouterEvent]:
        out: list[RouterEvent] = []
        while self._closing and (every or self._closing[0][0] <= now_ms):
            _, _, source = heapq.heappop(self._closing)
            w = self._windows.pop(source)
            if not w.counts:
                continue
            reasons = tuple(sorted(w.counts.items()))
            count = sum(w.counts.values())
            shown = ", ".join(f"{r} x{n}" for r, n in reasons[:8])
            out.append(DropSummary(
                sender=source if source in self.directory.agencies else "",
                count=count, reasons=reasons, source=source,
                since_ms=w.first_ms, until_ms=w.last_ms,
                detail=f"{count} more frame(s) from {source} dropped between {w.first_ms} and "
                f"{w.last_ms} ms, not recorded one by one ({shown}"
                f"{', ...' if len(reasons) > 8 else ''})"))
        return out

    def _refuse_undecodable(self, agency: str, digest: bytes, reason: str, detail: str,
                            size: int, now_ms: int) -> None:
        """A signed report to the sender of bytes that do not decode: there is no message id
        to name (``frames.NO_MESSAGE_ID``), the digest names the bytes."""
        rep = fr.Report(fr.NO_MESSAGE_ID, digest, agency, False, reason,
                        (f"the router could not decode the {size} byte(s) {agency} submitted "
                         f"(SHA-256 {digest.hex()}): {detail}")[:4000], (), now_ms, self.kid)
        self._push(LIMITED_PRIORITY, f"{self.prefix}/inbox/{agency}",
                   payload=fr.make_report(rep, self.keys))

    def _dispatch(self, agency: str, payload: bytes, now_ms: int, *,
                  via: str) -> list[RouterEvent]:
        """Hand a frame to its handler by kind. ``via`` says where it came from:

        - ``submit``: the agency's own submit topic, where envelopes go too;
        - ``shard``: ``submit/<agency>/to/<k>``, receipts and gap requests only;
        - ``route``: another shard verified it and passed it on; ``agency`` is empty and the
          signer is the agency (only the router account may publish there), whose rate-limit
          token the first shard already took.
        """
        routed = via == "route"
        try:
            magic = fr.peek_magic(payload)
            if magic == fr.ENVELOPE and via == "submit":
                return self._on_envelope(agency, payload, now_ms)
            if magic == fr.RECEIPT:
                return self._on_receipt(agency, payload, routed=routed)
            if magic == fr.GAP:
                if not routed and not self._admit(agency, now_ms):
                    raise I24Error(f"{agency} is over its rate limit: gap request dropped",
                                   reason="rate.limited")
                return self._on_gap(agency, payload, routed=routed)
            where = {"submit": "", "shard": " on a shard topic (envelopes go on the "
                     "agency's own submit topic)", "route": f" on {self.route_topic}"}[via]
            raise I24Error(f"unexpected frame kind {magic!r} from {agency or 'a shard'}"
                           f"{where}", reason="wire.magic")
        except I24Error as exc:
            self._count(f"drop.{exc.reason}")
            # bytes that do not decode on an agency's own topics are answered: the broker
            # binds the topic to the account, so the sender is known even without an id
            answer = exc.reason.startswith("wire.") and not routed \
                and agency in self.directory.agencies
            return self._drop(ROUTE if routed else self._source(agency), agency, exc.reason,
                              exc.message, payload, now_ms, answer=answer)

    def _on_envelope(self, agency: str, payload: bytes, now_ms: int) -> list[RouterEvent]:
        env = Envelope.parse(payload)
        h = env.header
        if not self._admit(agency, now_ms):
            return self._limited(agency, env, now_ms)
        decision = decide(env, self.directory, now_ms, prior=self.store.prior,
                          topic_agency=agency)
        if not decision.accepted:
            self._count(f"refuse.{decision.reason}")
            self._report(env, decision, now_ms, to=agency)
            return [Refused(h.id_hex, h.sender, decision.reason, decision.agencies,
                            decision.message, int(h.precedence))]
        earlier = self.store.prior(h.id)
        outcome: type[Accepted | DuplicateSubmission]
        if earlier is None:
            self.store.record(PriorMessage.of(env), payload,
                              h.expires_ms + self.directory.max_skew_ms)
            targets = decision.recipients
            outcome = Accepted
            self._count("accept")
        else:
            done = self.store.receipted(h.id)
            held = self._receipts.get(h.id, {})
            targets = tuple(r for r in decision.recipients if r not in done or r not in held)
            outcome = DuplicateSubmission
            self._count("duplicate")
        self._report(env, decision, now_ms, to=agency)
        if earlier is not None:
            for frame in self._receipts.get(h.id, {}).values():
                self._push(CONTROL_PRIORITY, f"{self.prefix}/inbox/{h.sender}", payload=frame)
        for r in targets:
            self._push(int(h.precedence), f"{self.prefix}/inbox/{r}", msg_id=h.id, recipient=r,
                       agreement=decision.agreements.get(r, ""))
        return [outcome(h.id_hex, h.sender, "ok", targets, decision.message, int(h.precedence))]

    def _limited(self, agency: str, env: Envelope, now_ms: int) -> list[RouterEvent]:
        h = env.header
        limit = self.rate_limit
        assert limit is not None
        d = Decision.refuse("rate.limited", f"{agency} sent more than {limit.capacity} "
                            f"messages at once or {limit.per_second} a second; the node "
                            "retries later", header=h, agencies=(agency,))
        self._count("refuse.rate.limited")
        self._report(env, d, now_ms, to=agency, priority=LIMITED_PRIORITY)
        return [Refused(h.id_hex, h.sender, d.reason, d.agencies, d.message,
                        int(h.precedence))]

    def _report(self, env: Envelope, d: Decision, now_ms: int, *, to: str,
                priority: int | None = None) -> None:
        h = env.header
        rep = fr.Report(h.id, env.digest, h.sender, d.accepted, d.reason, d.message[:4000],
                        d.recipients, now_ms, self.kid)
        if priority is None:
            priority = min(CONTROL_PRIORITY, int(h.precedence))
        self._push(priority, f"{self.prefix}/inbox/{to}",
                   payload=fr.make_report(rep, self.keys))

    def _forward(self, owner: int, payload: bytes, what: str, agency: str,
                 msg_id: str = "") -> list[RouterEvent]:
        self._push(CONTROL_PRIORITY, route_topic(self.prefix, owner), payload=payload)
        self._count("forward")
        return [Forwarded(msg_id, agency, "ok", detail=f"{what} to shard {owner}")]

    def _on_receipt(self, agency: str, payload: bytes, *,
                    routed: bool = False) -> list[RouterEvent]:
        rec = fr.verify_receipt(fr.parse_frame(payload), self.directory)
        if not routed and rec.receiver != agency:
            raise I24Error(f"{agency} sent a receipt signed by {rec.receiver}",
                           reason="sender.topic")
        owner = shard_of(rec.sender, self.shard.count)
        if owner != self.shard.index:
            if routed:
                raise I24Error(f"a receipt for {rec.sender}'s message reached shard "
                               f"{self.shard}", reason="shard.misrouted")
            return self._forward(owner, payload, "receipt", rec.receiver, rec.msg_id.hex())
        prior = self.store.prior(rec.msg_id)
        if prior is None or rec.receiver not in prior.recipients \
                or prior.digest != rec.digest:
            raise I24Error(f"receipt from {agency} for a message it was not sent",
                           reason="receipt.unknown")
        self.store.add_receipt(rec.msg_id, rec.receiver)
        self._hold_receipt(rec.msg_id, rec.receiver, payload)
        self._count("receipt")
        self._push(CONTROL_PRIORITY, f"{self.prefix}/inbox/{prior.sender}",
                   payload=payload)
        return [ReceiptForwarded(rec.msg_id.hex(), prior.sender, rec.status, (rec.receiver,),
                                 rec.reason)]

    def _hold_receipt(self, msg_id: bytes, receiver: str, frame: bytes) -> None:
        held = self._receipts.setdefault(msg_id, {})
        self._held += receiver not in held
        held[receiver] = frame
        while self._held > MAX_HELD_RECEIPTS:
            oldest = next(iter(self._receipts))
            self._held -= len(self._receipts.pop(oldest))

    def _on_gap(self, agency: str, payload: bytes, *,
                routed: bool = False) -> list[RouterEvent]:
        gap = fr.verify_gap(fr.parse_frame(payload), self.directory)
        if not routed and gap.agency != agency:
            raise I24Error(f"{agency} sent a gap request signed by {gap.agency}",
                           reason="sender.topic")
        agency = gap.agency
        if gap.router_kid and gap.router_kid != self.kid:
            owner = self._shard_kids.get(gap.router_kid)
            if owner is None:
                raise I24Error(f"{agency} asked for a stream of router key "
                               f"{gap.router_kid.hex()}, which the directory does not list",
                               reason="gap.unknown-router")
            if routed or owner == self.shard.index:
                raise I24Error(f"a gap request for shard {owner}'s stream reached shard "
                               f"{self.shard}", reason="shard.misrouted")
            return self._forward(owner, payload, "gap request", agency)
        frames = self.store.logged(agency, gap.first, gap.last)
        for f in frames:
            self._push(CONTROL_PRIORITY, f"{self.prefix}/inbox/{agency}", payload=f)
        self._count("resend")
        return [Resent(sender=agency, detail=f"{gap.first}-{gap.last}: {len(frames)} frame(s)")]

    # -- outputs --------------------------------------------------------------------------
    def _push(self, priority: int, topic: str, *, payload: bytes = b"", msg_id: bytes = b"",
              recipient: str = "", agreement: str = "") -> None:
        heapq.heappush(self._queue, _Queued(priority, next(self._order), topic, payload,
                                            msg_id, recipient, agreement))

    def pending(self, max_priority: int | None = None) -> int:
        """Frames waiting to be published; with ``max_priority``, those of that priority
        or a more urgent one (a lower value), which leave before any ROUTINE frame would."""
        if max_priority is None:
            return len(self._queue)
        return sum(1 for q in self._queue if q.priority <= max_priority)

    @property
    def rate_buckets(self) -> frozenset[str]:
        """The senders holding a rate-limit bucket (``""``: the one shared by every topic
        that names no agency of the directory, so an open broker cannot grow the table)."""
        return frozenset(self._buckets)

    def set_rate_limit(self, limit: RateLimit | None) -> None:
        """Limit submissions per sender from now on (``None``: no limit); every sender
        starts again with a full bucket."""
        self.rate_limit = limit
        self._buckets.clear()

    def pop(self, now_ms: int, limit: int = 64) -> list[tuple[str, bytes, int]]:
        """Up to ``limit`` frames to publish, highest precedence first: (topic, bytes, prio).

        Deliveries are stamped here, so sequence numbers follow the publishing order.
        """
        out: list[tuple[str, bytes, int]] = []
        while self._queue and len(out) < limit:
            q = heapq.heappop(self._queue)
            if q.msg_id:
                frame = self._stamp(q.msg_id, q.recipient, now_ms, q.agreement)
                if frame is None:
                    continue
                out.append((q.topic, frame, q.priority))
            else:
                out.append((q.topic, q.payload, q.priority))
        return out

    def _stamp(self, msg_id: bytes, recipient: str, now_ms: int,
               agreement: str = "") -> bytes | None:
        raw = self.store.envelope(msg_id)
        prior = self.store.prior(msg_id)
        if raw is None or prior is None:
            return None  # pruned (expired) while queued
        seq = self.store.next_seq(recipient)
        stamp = fr.Stamp(msg_id, prior.digest, prior.sender, (recipient,), {recipient: seq},
                         now_ms, self.directory.serial, self.kid, agreement=agreement)
        frame = fr.make_delivery(stamp, raw, self.keys)
        self.store.log_delivery(recipient, seq, msg_id, frame)
        return frame

    def drain(self, now_ms: int) -> Iterable[tuple[str, bytes, int]]:
        while self._queue:
            yield from self.pop(now_ms)
