"""The node as a sans-IO state machine: one agency's outbox, inbox and receipts.

Theory of operation: a node owns ``<prefix>/inbox/<AGENCY>`` and publishes on
``<prefix>/submit/<AGENCY>``. Three inputs drive it, each returning events, with outbound
frames queued for the driver to ``pop``:

- ``submit(header, body, now)``: seal, persist to the outbox, queue for the router. The
  message is durable before anyone is told it was sent.
- ``handle(topic, payload, now)``: a delivery (router stamp + envelope), a router report
  (accepted / refused), or a receipt forwarded from a recipient.
- ``handle_timer(now)``: retries of outbox entries whose receipts are missing, gap
  requests for missing sequence numbers, expiry, key maintenance. ``next_timer()`` says
  when it is next due, so a driver sleeps until then instead of polling.

A delivery is acted on only after every check passes, in this order: the router's stamp
(signature by a listed router key, digest of the enclosed envelope, this node named), the
sender's signature, then unwraps and decrypts (``open_verified``: a failure from there on is
answered with a signed refusal, and an unreadable mandatory copy is a violation), then the
node's own re-checks of what it can judge (freshness, its own clearance against the label,
the recipient list against the directory's expansion). The item is stored in the inbox
*before* the delivery receipt is queued, and a message id already in the inbox is not
delivered twice (exactly once to the application); its receipt is simply sent again.

Sequence numbers: the router numbers deliveries per recipient, one stream per router key
(each router shard signs with its own). A number beyond the next expected one opens a gap;
after ``GAP_GRACE_MS`` without the missing deliveries the node asks for them again, naming
the stream's key id so that the shard that numbered them answers. Senders retry until
receipts arrive, so even a lost resend log cannot lose an accepted message.

With several router shards, receipts and gap requests go to ``submit/<AGENCY>/to/<k>``: k is
the shard of the message's sender (receipts) or of the stream's key (gap requests).
"""

from __future__ import annotations

import hashlib
import heapq
import itertools
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any, Protocol

from i24net.core import frames as fr
from i24net.core import keys as k
from i24net.core.directory import Directory, check_succession
from i24net.core.envelope import (
    Body,
    Envelope,
    Header,
    check_freshness,
    open_verified,
    recipient_keys,
    seal,
)
from i24net.core.errors import (
    CryptoError,
    I24Error,
    NotRecipientError,
    WireFormatError,
)
from i24net.core.events import (
    Delivered,
    Dropped,
    DuplicateDelivery,
    Expired,
    KeyChanged,
    NodeEvent,
    Purged,
    ReceiptIn,
    Received,
    RefusedIn,
    Retried,
    SequenceGap,
    SubmissionAccepted,
    SubmissionDeferred,
    SubmissionRefused,
    Submitted,
    Violation,
)
from i24net.core.policy import AUTHORITY_KINDS, TRANSIENT_REASONS, reader_clearance
from i24net.core.shards import shard_count, shard_of, to_shard_topic

RETRY_MIN_MS = 2_000
RETRY_MAX_MS = 60_000
GAP_GRACE_MS = 1_500
# Retries are spread, not synchronised: messages submitted together would otherwise retry
# together, and after a router outage every wave would overrun the router's rate limit again.
RETRY_JITTER = 0.5  # each delay is scaled by a factor in [1 - j, 1 + j]
MAX_RETRIES_PER_TICK = 32  # the rest stay due and go on the next tick
# Congestion control: at most this many messages sent and not yet answered by the router;
# new messages wait in the outbox. Without it a backlog (after an outage, or a burst from
# `i24net publish`) turns into retry waves that keep the router saturated.
SEND_WINDOW = 64
# Once the router has accepted a message only receipts are missing: the router holds it and
# re-delivers on a retry, so retry less eagerly than for an unanswered submission.
ACCEPTED_RETRY_MIN_MS = 8_000
MAX_GAP_REQUESTS = 3  # then the missing numbers are let go: sender retries repair the rest


class OutboxState(StrEnum):
    """Where an outbox entry stands. A ``StrEnum``: stores and views keep the plain names.

    queued -> accepted (the router's report) -> delivered (every receipt in); refused (the
    router's report) and expired (no receipts by the expiry) are final too. A refused entry
    may still turn accepted: a late report from a retry the router accepted.
    """

    QUEUED = "queued"
    ACCEPTED = "accepted"
    REFUSED = "refused"
    DELIVERED = "delivered"
    EXPIRED = "expired"


OUTBOX_FINAL = (OutboxState.REFUSED, OutboxState.DELIVERED, OutboxState.EXPIRED)


def _digest(raw: bytes) -> bytes:
    """What reports and receipts name a message by: SHA-256 of its envelope bytes."""
    return hashlib.sha256(raw).digest()


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    msg_id: bytes
    raw: bytes = field(repr=False)
    kind: str
    precedence: int
    recipients: tuple[str, ...]
    created_ms: int
    expires_ms: int
    state: OutboxState = OutboxState.QUEUED
    reason: str = ""
    receipts: dict[str, str] = field(default_factory=dict)
    attempts: int = 1
    next_ms: int = 0
    subject: str = ""
    decided_ms: int = 0  # when the router accepted or refused it (its report); 0: not yet

    def __post_init__(self) -> None:
        # a store hands back the plain name it saved
        object.__setattr__(self, "state", OutboxState(self.state))

    @property
    def final(self) -> bool:
        return self.state in OUTBOX_FINAL


@dataclass(frozen=True, slots=True)
class InboxItem:
    msg_id: bytes
    sender: str
    kind: str
    label: str
    precedence: int
    subject: str
    text: str
    data: dict[str, Any]
    created_ms: int
    received_ms: int
    ref: bytes | None = None
    state: str = "new"  # new | read | cancelled | deleted | updated | purged
    handling: str = ""  # the header's handling codes, e.g. "H1,H2" ("" when none)
    keep_until_ms: int = 0  # a renewal: kept at least until then (0: the kind's rule)
    erased_ms: int = 0  # when the body was erased (deleted by order, or purged); 0: held
    agreement: str = ""  # the agreement the router stamped: it crossed organisations under it

    def retained_until(self, retention: Mapping[str, int]) -> int | None:
        """When this item's body is due for erasure under ``retention`` (ms per kind), or
        None: its kind has no rule, or it is already erased."""
        keep = retention.get(self.kind)
        if keep is None or self.erased_ms:
            return None
        return max(self.received_ms + keep, self.keep_until_ms)


class NodeStore(Protocol):
    def outbox_put(self, entry: OutboxEntry) -> None: ...
    def outbox_get(self, msg_id: bytes) -> OutboxEntry | None: ...
    def outbox_active(self) -> list[OutboxEntry]: ...
    def inbox_has(self, msg_id: bytes) -> bool: ...
    def inbox_put(self, item: InboxItem) -> None: ...
    def inbox_get(self, msg_id: bytes) -> InboxItem | None: ...
    def inbox_set_state(self, msg_id: bytes, state: str) -> None: ...
    def inbox_erase(self, msg_ids: Iterable[bytes], state: str, now_ms: int) -> None: ...
    def inbox_retention_due(self, retention: Mapping[str, int], now_ms: int,
                            limit: int) -> list[InboxItem]: ...
    def inbox_next_retention(self, retention: Mapping[str, int]) -> int | None: ...
    def seq_get(self, router_kid: bytes) -> tuple[int, set[int]]: ...
    def seq_put(self, router_kid: bytes, last: int, missing: set[int]) -> None: ...


def erased(item: InboxItem, state: str, now_ms: int) -> InboxItem:
    """``item`` with its body gone (subject, text and data), in ``state`` (``deleted`` by
    an order, ``purged`` at the end of its retention), erased at ``now_ms``."""
    return replace(item, subject="", text="", data={}, state=state, erased_ms=now_ms)


class MemoryNodeStore:
    """``NodeStore`` in memory (simulator, tests)."""

    def __init__(self) -> None:
        self.outbox: dict[bytes, OutboxEntry] = {}
        self.inbox: dict[bytes, InboxItem] = {}
        self.seqs: dict[bytes, tuple[int, set[int]]] = {}

    def outbox_put(self, entry: OutboxEntry) -> None:
        self.outbox[entry.msg_id] = entry

    def outbox_get(self, msg_id: bytes) -> OutboxEntry | None:
        return self.outbox.get(msg_id)

    def outbox_active(self) -> list[OutboxEntry]:
        return [e for e in self.outbox.values() if not e.final]

    def inbox_has(self, msg_id: bytes) -> bool:
        return msg_id in self.inbox

    def inbox_put(self, item: InboxItem) -> None:
        self.inbox[item.msg_id] = item

    def inbox_get(self, msg_id: bytes) -> InboxItem | None:
        return self.inbox.get(msg_id)

    def inbox_set_state(self, msg_id: bytes, state: str) -> None:
        if msg_id in self.inbox:
            self.inbox[msg_id] = replace(self.inbox[msg_id], state=state)

    def inbox_erase(self, msg_ids: Iterable[bytes], state: str, now_ms: int) -> None:
        for msg_id in msg_ids:
            if msg_id in self.inbox:
                self.inbox[msg_id] = erased(self.inbox[msg_id], state, now_ms)

    def inbox_retention_due(self, retention: Mapping[str, int], now_ms: int,
                            limit: int) -> list[InboxItem]:
        due = [(until, i.msg_id) for i in self.inbox.values()
               if (until := i.retained_until(retention)) is not None and until <= now_ms]
        return [self.inbox[m] for _, m in sorted(due)[:limit]]

    def inbox_next_retention(self, retention: Mapping[str, int]) -> int | None:
        return min((u for i in self.inbox.values()
                    if (u := i.retained_until(retention)) is not None), default=None)

    def seq_get(self, router_kid: bytes) -> tuple[int, set[int]]:
        last, missing = self.seqs.get(router_kid, (0, set()))
        return last, set(missing)

    def seq_put(self, router_kid: bytes, last: int, missing: set[int]) -> None:
        self.seqs[router_kid] = (last, set(missing))


# An application hook: called with each newly delivered item; returns follow-up messages
# to send as (header-builder args) through ``submit``. The GS's notice desk is one.
Hook = Callable[["NodeMachine", InboxItem, Header, int], list[NodeEvent]]


def _sooner(due: int | None, at_ms: int) -> int:
    """A timer's new due time once work at ``at_ms`` is added (None: nothing was due)."""
    return at_ms if due is None else min(due, at_ms)


MAX_PURGES_PER_TICK = 256  # bodies erased per handle_timer call; the rest at once after
SENDING_KEY_MS = 3_600_000  # a sending key seals for at most an hour, then is forgotten


class NodeMachine:
    def __init__(self, agency: str, keys: k.AgencyKeys, directory: Directory,
                 store: NodeStore, *, random_bytes: Callable[[int], bytes]) -> None:
        if keys.agency != agency:
            raise I24Error(f"keys are {keys.agency}'s, not {agency}'s", reason="config.keys")
        self.agency = agency
        if keys.sending_secret is None:
            keys = keys.with_sending_key(random_bytes(k.KEY_SIZE))
        self.keys = keys
        self._sending_since: int | None = None  # when the sending key was first used
        self.directory = directory
        self.store = store
        self.random_bytes = random_bytes
        self.cache = k.PairKeyCache()
        self.prefix = directory.prefix
        self.submit_topic = f"{self.prefix}/submit/{agency}"
        self.inbox_topic = f"{self.prefix}/inbox/{agency}"
        self.hooks: list[Hook] = []
        self.counters: dict[str, int] = {}
        self._queue: list[tuple[int, int, str, bytes]] = []
        self._order = itertools.count()
        self._gap_due: dict[bytes, int] = {}
        self._gap_tries: dict[bytes, int] = {}
        self.retry_jitter = RETRY_JITTER
        # When the outbox next has work (ms): 0 until the first ``handle_timer``, which
        # picks up whatever was stored while no driver ran; None when nothing is scheduled.
        # Never later than the work, at times earlier (an entry finished by a receipt keeps
        # it until the next ``handle_timer`` recomputes it): a wake-up too many, never one
        # too few.
        self._outbox_due: int | None = 0
        self._window_blocked = False
        # Retention per kind (ms; docs/protocol.md 9.5): bodies older than their kind's
        # period are erased by ``handle_timer``. ``_retention_due``: when the next one is
        # due (0: look in the store at the next ``handle_timer``; None: nothing to erase).
        # Never later than the work: a renewal written by another process only moves an
        # item's erasure later, and the store says what is due when the timer fires.
        self.retention: dict[str, int] = {}
        self._retention_due: int | None = None

    # -- plumbing -------------------------------------------------------------------------
    def _count(self, name: str) -> None:
        self.counters[name] = self.counters.get(name, 0) + 1

    def _push(self, priority: int, payload: bytes, topic: str | None = None) -> None:
        heapq.heappush(self._queue, (priority, next(self._order), topic or self.submit_topic,
                                     payload))

    def _to_shard(self, index: int) -> str:
        """The topic that reaches router shard ``index`` (see ``core.shards``)."""
        return to_shard_topic(self.submit_topic, index,
                              shard_count(self.directory.router_keys))

    def _stream_shard(self, kid: bytes) -> int:
        """The shard whose key numbered a stream (1 when the key is not listed)."""
        for i, key in enumerate(self.directory.router_keys):
            if k.key_id(key) == kid:
                return i + 1
        return 1

    def pending(self) -> int:
        return len(self._queue)

    # -- timers ---------------------------------------------------------------------------
    def next_timer(self) -> int | None:
        """The earliest time (ms) at which ``handle_timer`` has work: a retry, an expiry, a
        gap request, a key to replace or erase, or a message held back by the send window
        once a report freed a place. None when nothing is scheduled, so a driver can sleep
        until something arrives (a frame, a ``submit``, or ``outbox_changed``) instead of
        polling. Each input may bring it forward: a driver asks again after each."""
        due = [d for d in (self._outbox_due, *self._gap_due.values(), self._keys_due(),
                           self._retention_due) if d is not None]
        return min(due, default=None)

    # -- keys -----------------------------------------------------------------------------
    def _keys_due(self) -> int | None:
        """When the sending key must be replaced or a retired prekey erased."""
        due = [p.retired_ms + self.directory.prekey_grace_ms + 1 for p in self.keys.prekeys
               if p.retired_ms is not None]
        if self._sending_since is not None:
            due.append(self._sending_since + SENDING_KEY_MS)
        return min(due, default=None)

    def _maintain_keys(self, now_ms: int) -> list[NodeEvent]:
        """Replace a sending key older than ``SENDING_KEY_MS`` and erase the prekeys
        retired longer ago than the directory's grace period, with everything derived from
        them: once gone, nothing in this node opens what was sealed under them."""
        events: list[NodeEvent] = []
        if self._sending_since is not None and now_ms >= self._sending_since + SENDING_KEY_MS:
            self.cache.forget(self.keys.sending_public)
            self.keys = self.keys.with_sending_key(self.random_bytes(k.KEY_SIZE))
            self._sending_since = None  # until it first seals: an idle node stays idle
            events.append(KeyChanged(detail="new sending key"))
        kept = self.keys.erase_prekeys(now_ms, self.directory.prekey_grace_ms)
        if kept is not self.keys:
            gone = [p for p in self.keys.prekeys if kept.prekey(p.id) is None]
            for p in gone:
                self.cache.forget(p.public)
            self.keys = kept
            events.append(KeyChanged(detail=f"erased prekey(s) "
                                     f"{', '.join(p.id.hex() for p in gone)}"))
        return events

    def needs_keys(self) -> bool:
        """True when the directory lists a prekey for this agency that its keys lack (the
        prekey was rotated): the shell should load the agency's keys again (``set_keys``)."""
        rec = self.directory.agencies.get(self.agency)
        return rec is not None and self.keys.prekey(rec.prekey_id) is None

    def set_keys(self, keys: k.AgencyKeys) -> None:
        """Adopt keys loaded again after a rotation; the sending key in use is kept."""
        if keys.agency != self.agency:
            raise I24Error(f"keys are {keys.agency}'s, not {self.agency}'s",
                           reason="config.keys")
        held = self.keys.sending_secret
        self.keys = keys.with_sending_key(held) if held is not None else keys

    def set_retention(self, retention: Mapping[str, int]) -> None:
        """Keep each kind's bodies ``retention[kind]`` ms after their arrival (kinds not
        listed: for as long as the store keeps them); the store is looked at again at the
        next ``handle_timer``."""
        bad = {kind: ms for kind, ms in retention.items() if ms <= 0}
        if bad:
            raise I24Error(f"retention periods must be positive: {bad}", reason="config.retention")
        self.retention = dict(retention)
        self._retention_due = 0 if self.retention else None

    def outbox_changed(self) -> None:
        """The store's outbox was written by someone else (``i24net publish`` enqueues
        straight into it): ``handle_timer`` is due now."""
        self._outbox_due = 0

    def _due(self, at_ms: int) -> None:
        self._outbox_due = _sooner(self._outbox_due, at_ms)

    def pop(self, limit: int = 64) -> list[tuple[str, bytes, int]]:
        out: list[tuple[str, bytes, int]] = []
        while self._queue and len(out) < limit:
            prio, _, topic, payload = heapq.heappop(self._queue)
            out.append((topic, payload, prio))
        return out

    def set_directory(self, directory: Directory) -> None:
        """Adopt a (verified) directory: never an older version, and never a different
        directory under the serial already held (a fork: the authority key signed two)."""
        check_succession(self.directory, directory)
        self.directory = directory

    # -- sending --------------------------------------------------------------------------
    def submit(self, header: Header, body: Body, now_ms: int, *,
               send: bool = True) -> tuple[bytes, Submitted]:
        """Seal and persist a message, then queue it; returns (envelope bytes, event).

        ``send=False`` only persists it, due at once and never sent (attempt 0): for a
        process other than the agency's running node (``i24net publish``), which then
        wakes that node to send it with its own machine."""
        self._maintain_keys(now_ms)
        if self._sending_since is None:
            self._sending_since = now_ms
        raw = seal(header, body, self.keys, recipient_keys(self.directory, header),
                   random_bytes=self.random_bytes, cache=self.cache)
        entry = OutboxEntry(header.id, raw, header.kind, int(header.precedence),
                            header.recipients, header.created_ms, header.expires_ms,
                            attempts=1 if send else 0,
                            next_ms=now_ms + RETRY_MIN_MS if send else 0,
                            subject=body.subject)
        self.store.outbox_put(entry)
        if send:
            self._push(int(header.precedence), raw)
        self._due(min(entry.next_ms, entry.expires_ms + 1))
        self._count("submit")
        return raw, Submitted(header.id_hex, ",".join(header.recipients[:5]),
                              precedence=int(header.precedence), detail=body.subject)

    def _jitter(self, delay: int) -> int:
        if not self.retry_jitter:
            return delay
        unit = int.from_bytes(self.random_bytes(2), "big") / 65535  # uniform in [0, 1]
        return int(delay * (1 - self.retry_jitter + 2 * self.retry_jitter * unit))

    def handle_timer(self, now_ms: int) -> list[NodeEvent]:
        """Do what is due by ``now_ms`` (see ``next_timer``): key maintenance, expiry and
        retries of outbox entries (at most ``MAX_RETRIES_PER_TICK``, within the send
        window), gap requests. Calling it early is harmless: nothing is due, nothing done."""
        events: list[NodeEvent] = self._maintain_keys(now_ms)
        if self._retention_due is not None and now_ms >= self._retention_due:
            events += self._purge(now_ms)
        retried = 0
        active = sorted(self.store.outbox_active(), key=lambda e: e.precedence)
        unanswered = sum(1 for e in active
                         if e.state == OutboxState.QUEUED and e.attempts >= 1)
        due: int | None = None
        blocked = False
        for e in active:
            if now_ms > e.expires_ms:
                self.store.outbox_put(replace(e, state=OutboxState.EXPIRED,
                                              reason="time.expired"))
                self._count("expired")
                events.append(Expired(e.msg_id.hex(), reason="time.expired",
                                      detail=f"{len(e.receipts)}/{len(e.recipients)} "
                                      "receipts"))
                continue
            next_ms = e.next_ms
            if now_ms >= e.next_ms and retried < MAX_RETRIES_PER_TICK:
                if e.attempts == 0 and unanswered >= SEND_WINDOW:
                    blocked = True  # never sent: only within the window (see _on_report)
                    next_ms = e.expires_ms + 1
                else:
                    if e.attempts == 0:
                        unanswered += 1
                    retried += 1
                    base = ACCEPTED_RETRY_MIN_MS if e.state == OutboxState.ACCEPTED \
                        else RETRY_MIN_MS
                    delay = self._jitter(min(RETRY_MAX_MS, base << min(e.attempts, 5)))
                    next_ms = now_ms + delay
                    self.store.outbox_put(replace(e, attempts=e.attempts + 1,
                                                  next_ms=next_ms))
                    self._push(e.precedence, e.raw)
                    self._count("retry")
                    events.append(Retried(e.msg_id.hex(), detail=f"attempt {e.attempts + 1}",
                                          precedence=e.precedence))
            elif now_ms >= e.next_ms:
                next_ms = now_ms  # over this call's retry budget: the next call, at once
            at = min(next_ms, e.expires_ms + 1)
            due = at if due is None else min(due, at)
        self._outbox_due = due
        self._window_blocked = blocked
        for kid, due in list(self._gap_due.items()):
            if now_ms >= due:
                del self._gap_due[kid]
                last, missing = self.store.seq_get(kid)
                tries = self._gap_tries.get(kid, 0)
                if missing and tries >= MAX_GAP_REQUESTS:
                    # The router no longer holds those deliveries (e.g. it died between
                    # numbering one and logging it); the senders' retries repair what matters.
                    self.store.seq_put(kid, last, set())
                    self._gap_tries.pop(kid, None)
                    self._count("gap.abandoned")
                    events.append(SequenceGap(reason="gap.abandoned",
                                              detail=f"{len(missing)} number(s) let go"))
                elif missing:
                    self._gap_tries[kid] = tries + 1
                    first, end = min(missing), max(missing)
                    end = min(end, first + fr.MAX_GAP - 1)
                    gap = fr.GapRequest(self.agency, first, end, now_ms, kid)
                    self._push(1, fr.make_gap(gap, self.keys),
                               self._to_shard(self._stream_shard(kid)))
                    self._gap_due[kid] = now_ms + GAP_GRACE_MS * 4
                    self._count("gap")
                    events.append(SequenceGap(detail=f"asked for {first}-{end}"))
        return events

    def _purge(self, now_ms: int) -> list[NodeEvent]:
        """Erase the bodies whose retention ended by ``now_ms`` (at most
        ``MAX_PURGES_PER_TICK``; the rest at the next call, at once)."""
        due = self.store.inbox_retention_due(self.retention, now_ms, MAX_PURGES_PER_TICK)
        self.store.inbox_erase([item.msg_id for item in due], "purged", now_ms)  # one commit
        events: list[NodeEvent] = []
        for item in due:
            self._count("purged")
            kept = (now_ms - item.received_ms) // 86_400_000
            events.append(Purged(item.msg_id.hex(), item.sender, "retention.expired",
                                 f"{item.kind} kept {kept} day(s)",
                                 precedence=item.precedence))
        self._retention_due = now_ms if len(due) == MAX_PURGES_PER_TICK \
            else self.store.inbox_next_retention(self.retention)
        return events

    # -- receiving ------------------------------------------------------------------------
    def handle(self, topic: str, payload: bytes, now_ms: int) -> list[NodeEvent]:
        if topic != self.inbox_topic:
            self._count("drop.topic")
            return [Dropped(reason="topic.unexpected", detail=topic)]
        try:
            frame = fr.parse_frame(payload)
            if frame.magic == fr.DELIVERY:
                return self._on_delivery(frame, now_ms)
            if frame.magic == fr.REPORT:
                return self._on_report(frame)
            if frame.magic == fr.RECEIPT:
                return self._on_receipt(frame)
            raise I24Error(f"unexpected {frame.magic} frame on an inbox", reason="wire.magic")
        except I24Error as exc:
            self._count(f"drop.{exc.reason}")
            return [Dropped(exc.msg_id or "", exc.agency or "", exc.reason, exc.message)]

    def _track_seq(self, kid: bytes, seq: int, now_ms: int) -> None:
        last, missing = self.store.seq_get(kid)
        if seq > last:
            # At most one gap request's worth per jump: a stamp claiming seq 2**63 (a rogue
            # router key, a corrupt store) must not enumerate 2**63 numbers. The sender's
            # retries, not gap requests, guarantee delivery.
            missing.update(range(max(last + 1, seq - fr.MAX_GAP), seq))
            last = seq
            if missing and kid not in self._gap_due:
                self._gap_due[kid] = now_ms + GAP_GRACE_MS
        else:
            missing.discard(seq)
            if not missing:
                self._gap_tries.pop(kid, None)
        self.store.seq_put(kid, last, missing)

    def _receipt(self, env: Envelope, status: str, reason: str, now_ms: int,
                 precedence: int) -> None:
        h = env.header
        rec = fr.Receipt(h.id, env.digest, h.sender, self.agency, status, reason, now_ms)
        count = shard_count(self.directory.router_keys)
        self._push(min(1, precedence), fr.make_receipt(rec, self.keys),
                   self._to_shard(shard_of(h.sender, count)))

    def _on_delivery(self, frame: fr.Frame, now_ms: int) -> list[NodeEvent]:
        stamp = fr.verify_delivery(frame, self.directory, self.agency)
        env = Envelope.parse(frame.extra)
        h = env.header
        if h.id != stamp.msg_id or h.sender != stamp.sender:
            raise I24Error("the stamp and the envelope disagree", reason="stamp.mismatch",
                           msg_id=h.id_hex)
        self._track_seq(stamp.router_kid, stamp.seqs[self.agency], now_ms)
        if self.store.inbox_has(h.id):
            self._receipt(env, "delivered", "", now_ms, int(h.precedence))
            self._count("duplicate")
            return [DuplicateDelivery(h.id_hex, h.sender, precedence=int(h.precedence))]
        env.verify(self.directory)  # nothing below acts on bytes the sender did not sign
        try:
            opened = open_verified(env, self.keys, self.directory, cache=self.cache)
        except NotRecipientError:
            raise  # misrouted: not this node's to answer
        except (CryptoError, WireFormatError) as exc:
            return self._unreadable(env, exc, now_ms)
        refusal = self._recheck(h, now_ms)
        if refusal:
            self._receipt(env, "refused", refusal, now_ms, int(h.precedence))
            self._count(f"refuse.{refusal}")
            return [RefusedIn(h.id_hex, h.sender, refusal)]
        item = InboxItem(h.id, h.sender, h.kind, h.label.marking, int(h.precedence),
                         opened.body.subject, opened.body.text, dict(opened.body.data),
                         h.created_ms, now_ms, h.ref, handling=",".join(h.handling.names()),
                         agreement=stamp.agreement)
        self.store.inbox_put(item)
        until = item.retained_until(self.retention)
        if until is not None:
            self._retention_due = _sooner(self._retention_due, until)
        self._receipt(env, "delivered", "", now_ms, int(h.precedence))
        self._count("received")
        events: list[NodeEvent] = [
            Received(h.id_hex, h.sender, detail=opened.body.subject,
                     latency_ms=now_ms - h.created_ms, precedence=int(h.precedence))]
        for hook in self.hooks:
            events += hook(self, item, h, now_ms)
        return events

    def _unreadable(self, env: Envelope, exc: I24Error, now_ms: int) -> list[NodeEvent]:
        """A signed message this node cannot open (a wrap that does not open or opens to
        an uncommitted key, an erased prekey, a body that does not decrypt or decode): the
        sender signed it, so the sender is told with a signed refusal. A diffusion whose
        mandatory copy the notice authority cannot read is a compliance violation: it is
        recorded with its sender, and the refusal says so (``copy.unreadable``)."""
        h = env.header
        reason = exc.reason
        events: list[NodeEvent] = []
        me = self.directory.agencies.get(self.agency)
        if h.kind == "diffusion" and me is not None and "notice-authority" in me.roles:
            events.append(Violation(h.id_hex, h.sender, "copy.unreadable",
                                    f"the copy of diffusion {h.id_hex[:12]} from {h.sender} "
                                    f"cannot be read ({reason}): {exc.message}",
                                    precedence=int(h.precedence)))
            self._count("violation.copy.unreadable")
            reason = "copy.unreadable"
        self._receipt(env, "refused", reason, now_ms, int(h.precedence))
        self._count(f"refuse.{exc.reason}")
        return [RefusedIn(h.id_hex, h.sender, reason, exc.message,
                          precedence=int(h.precedence)), *events]

    def _recheck(self, h: Header, now_ms: int) -> str | None:
        """The node's own checks, independent of the router's verdict."""
        d = self.directory
        stale = check_freshness(h, now_ms, d.max_skew_ms)
        if stale:
            return stale
        cleared = reader_clearance(d, self.agency, h.label)  # the check envelope open makes
        if cleared:
            return cleared
        # the router's kind rule, for the kinds whose hooks change what this node holds
        # (cancel, delete): a stamp alone must not let an NCB withdraw someone's notice
        if h.kind in AUTHORITY_KINDS and "notice-authority" not in d.agency(h.sender).roles:
            # the source may order the deletion of its own message: what this node holds
            # of it must come from that sender (an order that arrives first is checked
            # against the item when it comes: lifecycle's holder hook)
            held = self.store.inbox_get(h.ref) if h.ref is not None else None
            if h.kind != "deletion-order" or h.ref is None or (
                    held is not None and held.sender != h.sender):
                return "kind.not-allowed"
        try:
            if d.serial == h.directory_serial and d.expand(h.addressing, h.sender) \
                    != h.recipients:
                return "addressing.mismatch"
        except I24Error:
            return "addressing.unknown-group"
        return None

    def _on_report(self, frame: fr.Frame) -> list[NodeEvent]:
        rep = fr.verify_report(frame, self.directory)
        entry = self.store.outbox_get(rep.msg_id)
        if entry is None or rep.sender != self.agency:
            raise I24Error("report for a message this node did not send",
                           reason="report.unknown", msg_id=rep.msg_id.hex())
        if rep.digest != _digest(entry.raw):
            # the router answered other bytes under this id (a forged submission with a
            # copied id): the answer is not about this message, which keeps its course
            raise I24Error("report for another envelope with this message's id",
                           reason="report.digest", msg_id=rep.msg_id.hex())
        if entry.final and not (entry.state == OutboxState.REFUSED and rep.accepted):
            return []
        if self._window_blocked:
            self._due(0)  # an answer frees a place in the send window
        if not rep.accepted and rep.reason in TRANSIENT_REASONS:
            # "not now" (rate.limited): keep the entry and its retry schedule; backpressure
            self._count(f"deferred.{rep.reason}")
            return [SubmissionDeferred(rep.msg_id.hex(), reason=rep.reason,
                                       detail=rep.message, precedence=entry.precedence)]
        if rep.accepted:
            state = OutboxState.DELIVERED if set(entry.receipts) >= set(entry.recipients) \
                else OutboxState.ACCEPTED
            self.store.outbox_put(replace(entry, state=state, reason="",
                                          decided_ms=rep.router_ms))
            if state == OutboxState.ACCEPTED:
                # a refused entry that turns accepted is active again: its retries resume
                self._due(min(entry.next_ms, entry.expires_ms + 1))
            self._count("accepted")
            return [SubmissionAccepted(rep.msg_id.hex(), detail=rep.message,
                                       precedence=entry.precedence)]
        self.store.outbox_put(replace(entry, state=OutboxState.REFUSED, reason=rep.reason,
                                      decided_ms=rep.router_ms))
        self._count(f"refused.{rep.reason}")
        return [SubmissionRefused(rep.msg_id.hex(), reason=rep.reason, detail=rep.message,
                                  precedence=entry.precedence)]

    def _on_receipt(self, frame: fr.Frame) -> list[NodeEvent]:
        rec = fr.verify_receipt(frame, self.directory)
        entry = self.store.outbox_get(rec.msg_id)
        if entry is None or rec.sender != self.agency or rec.receiver not in entry.recipients:
            raise I24Error("receipt for a message this node did not send to that agency",
                           reason="receipt.unknown", msg_id=rec.msg_id.hex())
        if rec.digest != _digest(entry.raw):
            raise I24Error("receipt for another envelope with this message's id",
                           reason="receipt.digest", msg_id=rec.msg_id.hex())
        prev = entry.receipts.get(rec.receiver)
        if prev is not None and not (rec.status == "read" and prev != "read"):
            return []  # a repeat; the only news after a first receipt is "read"
        receipts = {**entry.receipts, rec.receiver: rec.status}
        state = entry.state
        if set(receipts) >= set(entry.recipients) and state != OutboxState.REFUSED:
            state = OutboxState.DELIVERED
        self.store.outbox_put(replace(entry, receipts=receipts, state=state))
        self._count(f"receipt.{rec.status}")
        events: list[NodeEvent] = [ReceiptIn(rec.msg_id.hex(), rec.receiver, rec.reason,
                                             rec.status, precedence=entry.precedence)]
        if state == OutboxState.DELIVERED and entry.state != OutboxState.DELIVERED:
            events.append(Delivered(rec.msg_id.hex(), detail=f"{len(receipts)} receipt(s)",
                                    precedence=entry.precedence))
        return events
