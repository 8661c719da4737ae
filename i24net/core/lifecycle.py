"""Notice and diffusion procedures, applied by node machines as delivery hooks.

Theory of operation. Every node applies withdrawal events to what it holds — a
``notice-cancel`` marks the referenced notice cancelled, a ``deletion-order`` deletes the
referenced diffusion, a ``notice-update`` marks it updated — idempotently and in any order
(a cancel that arrives before its notice is remembered and applied when the notice lands).

The node of the notice authority (the GS) also runs the ``NoticeDesk``. A ``notice-request``
is recorded in the ``NoticeRegistry`` and screened (completeness, then Article 3): a flagged
request is refused at once (a ``notice-decision`` to the requester with the reason code).
A clean one is published straight away with automatic review, or left under review for the
task force (``i24net notice review``), which approves or refuses it later through
``NoticeDesk.approve`` / ``NoticeDesk.refuse``; automatic and manual approval run the same
``_publish``. Publication numbers the notice and sends it to every agency cleared for the
request's label. A ``notice-cancel-request`` from a notice's owner (or ``NoticeDesk.cancel``
from the authority itself) withdraws it from every holder; a refused cancellation is answered
with a ``notice-decision`` too, so the owner is never left guessing. A diffusion copy is
recorded, so the GS can later find it non-compliant and order its deletion
(``order_deletion``).

Follow-ups travel under the request's own label, precedence and handling codes (its
``Carriage``): a notice refers to its request, so the router judges it as onward
dissemination of the requester's message and refuses a downgraded label or a dropped code.

Persistence. The desk's state — the register, which message carried each published notice,
each request's carriage, the diffusion copies — lives behind a ``DeskStore`` (SQLite in
``i24net.store.notices``, memory here). The desk keeps a copy in memory and reloads it whenever
the store's revision moved, because the CLI reviews and cancels on the same store beside the
running daemon. Every change is one read-modify-write under ``DeskStore.exclusive``: reload
if stale, change, save; only then are the resulting messages sealed and put in the node's
outbox. Headers are built (ids drawn, recipients checked) *before* anything changes, so a
request that would reach nobody is refused without touching the register.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field, replace
from typing import Protocol

from i24net.core.envelope import Body, Header, make_header
from i24net.core.errors import I24Error, StateError
from i24net.core.events import (
    DeletionOrdered,
    DeskError,
    ItemCancelled,
    ItemChanged,
    ItemDeleted,
    ItemUpdated,
    NodeEvent,
    NoticeCancelled,
    NoticeCancelRefused,
    NoticeDuplicate,
    NoticePublished,
    NoticeRefused,
    NoticeUnderReview,
)
from i24net.core.labels import HandlingCodes, Label, Precedence
from i24net.core.node import Hook, InboxItem, NodeMachine
from i24net.core.notices import (
    NOTICE_NUMBER,
    REQUEST_FIELDS,
    Notice,
    NoticeColour,
    NoticeRegistry,
    RegistrySnapshot,
    explain,
    screen_request,
)
from i24net.core.policy import crossing_refusal

DECISION_TTL_MS = 7 * 24 * 3600 * 1000
NOTICE_TTL_MS = 30 * 24 * 3600 * 1000  # the operational copy; retention is the registry's

REASON_CANCELLED = "notice.cancelled"  # the default reason code of a cancellation
REASON_NO_AUDIENCE = "notice.no-audience"  # nobody but the GS is cleared for the label
REASON_NOT_OWNER = "notice.not-owner"
MAX_ID = 32  # message ids are 16 bytes; the register accepts request ids up to 32


# -- values -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Carriage:
    """How the desk's follow-ups to a message travel: its label, precedence, handling."""

    label: Label
    precedence: Precedence = Precedence.ROUTINE
    handling: HandlingCodes = field(default_factory=HandlingCodes)

    def __post_init__(self) -> None:
        if not isinstance(self.label, Label) or not isinstance(self.handling, HandlingCodes):
            raise StateError("a carriage needs a Label and HandlingCodes",
                             reason="notice.carriage")
        object.__setattr__(self, "precedence", Precedence(self.precedence))

    @classmethod
    def of(cls, h: Header) -> Carriage:
        return cls(h.label, h.precedence, h.handling)


def _check_id(name: str, value: object, *, optional: bool = False) -> None:
    if value is None and optional:
        return
    if not isinstance(value, bytes) or not 1 <= len(value) <= MAX_ID:
        raise StateError(f"{name} must be a message id of 1-{MAX_ID} bytes",
                         reason="notice.schema")


@dataclass(frozen=True, slots=True)
class DeskEntry:
    """What the desk keeps about one request: the notice, its carriage, who holds it, and
    the id of the ``notice`` message that published it (None until published)."""

    notice: Notice
    carriage: Carriage
    holders: frozenset[str] = frozenset()
    notice_id: bytes | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.notice, Notice) or not isinstance(self.carriage, Carriage):
            raise StateError("a desk entry needs a Notice and a Carriage",
                             reason="notice.schema")
        object.__setattr__(self, "holders", frozenset(self.holders))
        _check_id("notice_id", self.notice_id, optional=True)

    @property
    def request_id(self) -> str:
        return self.notice.request_id


@dataclass(frozen=True, slots=True)
class DiffusionRecord:
    """A diffusion copy the GS received: who sent it to whom, under which label; and, once
    the GS found it non-compliant, the reason and the id of its deletion order."""

    diffusion_id: bytes
    sender: str
    recipients: tuple[str, ...]  # every recipient but the GS itself
    carriage: Carriage
    received_ms: int
    deletion_reason: str = ""
    deletion_id: bytes | None = None

    def __post_init__(self) -> None:
        _check_id("diffusion_id", self.diffusion_id)
        _check_id("deletion_id", self.deletion_id, optional=True)
        object.__setattr__(self, "recipients", tuple(self.recipients))
        if not isinstance(self.sender, str) or not self.sender:
            raise StateError("a diffusion record needs its sender", reason="notice.schema")

    @property
    def ordered(self) -> bool:
        return self.deletion_id is not None


@dataclass(frozen=True, slots=True)
class DeskState:
    """Everything a ``DeskStore`` holds, at one revision."""

    revision: int
    entries: tuple[DeskEntry, ...] = ()
    sequence: Mapping[int, int] = field(default_factory=dict)  # year -> last number used
    diffusions: tuple[DiffusionRecord, ...] = ()


# -- the store ----------------------------------------------------------------------------


class DeskStore(Protocol):
    """Where a ``NoticeDesk`` keeps its state across restarts, shared with the CLI.

    ``revision`` changes with every ``save``, so a desk can tell that someone else wrote
    since it last loaded. ``exclusive`` brackets a read-modify-write: no other writer saves
    in between (``revision``, ``load`` and ``save`` may be called inside it). ``save``
    upserts the entries and diffusion records given, raises each year's sequence to at least
    the value given, and returns the new revision.
    """

    def revision(self) -> int: ...
    def load(self) -> DeskState: ...
    def exclusive(self) -> AbstractContextManager[None]: ...
    def save(self, entries: Sequence[DeskEntry], sequence: Mapping[int, int],
             diffusions: Sequence[DiffusionRecord]) -> int: ...


class MemoryDeskStore:
    """``DeskStore`` in memory (simulator, tests). One process, so ``exclusive`` is free."""

    def __init__(self) -> None:
        self.entries: dict[str, DeskEntry] = {}
        self.sequence: dict[int, int] = {}
        self.diffusions: dict[bytes, DiffusionRecord] = {}
        self._revision = 0

    def revision(self) -> int:
        return self._revision

    def load(self) -> DeskState:
        return DeskState(self._revision, tuple(self.entries.values()), dict(self.sequence),
                         tuple(self.diffusions.values()))

    def exclusive(self) -> AbstractContextManager[None]:
        return nullcontext()

    def save(self, entries: Sequence[DeskEntry], sequence: Mapping[int, int],
             diffusions: Sequence[DiffusionRecord]) -> int:
        for e in entries:
            self.entries[e.request_id] = e
        for year, last in sequence.items():
            self.sequence[year] = max(self.sequence.get(year, 0), last)
        for d in diffusions:
            self.diffusions[d.diffusion_id] = d
        self._revision += 1
        return self._revision


# -- the desk -----------------------------------------------------------------------------


@dataclass
class Holdings:
    """What a node remembers to apply withdrawals in any order."""

    # msg id -> the withdrawal (cancel, deletion) that came before the item itself, and who
    # sent it (an order from a non-authority applies only to an item from that sender)
    withdrawn: dict[bytes, tuple[type[ItemChanged], str]] = field(default_factory=dict)


# What each withdrawal event does to the item it refers to.
_CHANGES: dict[str, type[ItemChanged]] = {
    "notice-cancel": ItemCancelled, "deletion-order": ItemDeleted, "notice-update": ItemUpdated}


@dataclass
class _Batch:
    """One read-modify-write: what changed, and what to send once it is saved."""

    touched: list[str] = field(default_factory=list)  # request ids whose entry changed
    diffusions: list[DiffusionRecord] = field(default_factory=list)
    out: list[tuple[Header, Body]] = field(default_factory=list)

    def touch(self, request_id: str) -> None:
        if request_id not in self.touched:
            self.touched.append(request_id)


class NoticeDesk:
    """The notice authority's desk: the register, the message that published each notice,
    each request's carriage and the diffusion copies, kept in a ``DeskStore``.

    The public actions (``approve``, ``refuse``, ``cancel``, ``order_deletion`` and the
    three ``on_*`` / ``record_diffusion`` handlers the delivery hook calls) take the GS's
    ``NodeMachine``, save first, then submit their messages; each returns node events.
    """

    def __init__(self, authority: str, store: DeskStore | None = None, *,
                 auto_review: bool = True) -> None:
        self.authority = authority
        self.store: DeskStore = store if store is not None else MemoryDeskStore()
        self.auto_review = auto_review
        self.registry = NoticeRegistry(authority)
        self.notice_ids: dict[str, bytes] = {}  # request id -> notice message id
        self.by_notice: dict[bytes, str] = {}  # notice message id -> request id
        self.carriage: dict[str, Carriage] = {}  # request id -> how its follow-ups travel
        self.diffusions: dict[bytes, DiffusionRecord] = {}
        self._revision: int | None = None
        self.refresh()

    # -- state ----------------------------------------------------------------------------

    def refresh(self) -> bool:
        """Reload from the store if anyone saved since this desk last did; True if it did."""
        if self.store.revision() == self._revision:
            return False
        self._load(self.store.load())
        return True

    def _load(self, state: DeskState) -> None:
        holders = {e.request_id: e.holders for e in state.entries if e.holders}
        self.registry = NoticeRegistry.restore(RegistrySnapshot(
            self.authority, tuple(e.notice for e in state.entries), holders, state.sequence))
        self.notice_ids = {e.request_id: e.notice_id for e in state.entries
                           if e.notice_id is not None}
        self.by_notice = {nid: rid for rid, nid in self.notice_ids.items()}
        self.carriage = {e.request_id: e.carriage for e in state.entries}
        self.diffusions = {d.diffusion_id: d for d in state.diffusions}
        self._revision = state.revision

    def entry(self, request_id: str) -> DeskEntry:
        return DeskEntry(self.registry.get(request_id), self.carriage[request_id],
                         self.registry.holders(request_id), self.notice_ids.get(request_id))

    def entries(self) -> list[DeskEntry]:
        """Every request in the register, oldest first."""
        return [self.entry(n.request_id) for n in
                sorted(self.registry, key=lambda n: (n.created_ms, n.request_id))]

    @contextmanager
    def _changing(self) -> Iterator[_Batch]:
        batch = _Batch()
        with self.store.exclusive():
            self.refresh()
            try:
                yield batch
                if batch.touched or batch.diffusions:
                    self._revision = self.store.save(
                        [self.entry(rid) for rid in batch.touched],
                        self.registry.snapshot().sequence, batch.diffusions)
            except BaseException:
                self._revision = None  # the copy in memory may be half-changed: reload
                raise

    def _check_machine(self, m: NodeMachine) -> None:
        if m.agency != self.authority:
            raise StateError(f"the notice desk belongs to {self.authority}, not to "
                             f"{m.agency}", reason="notice.not-authority", agency=m.agency)

    # -- lookups --------------------------------------------------------------------------

    def resolve(self, text: str) -> str:
        """The request id that ``text`` names: a notice number (``A-1/11-2026``), a full
        request id or a prefix of exactly one. ``StateError`` otherwise."""
        self.refresh()
        t = text.strip()
        if NOTICE_NUMBER.match(t):
            return self.registry.by_number(t).request_id
        prefix = t.lower()
        if not prefix or any(c not in "0123456789abcdef" for c in prefix):
            raise StateError(f"{text!r} is neither a notice number (A-<n>/<MM>-<YYYY>) nor "
                             "a request id (hex)", reason="notice.unknown")
        if prefix in self.registry:
            return prefix
        found = [n.request_id for n in self.registry if n.request_id.startswith(prefix)]
        if len(found) == 1:
            return found[0]
        if not found:
            raise StateError(f"no request {prefix} in the register", reason="notice.unknown")
        raise StateError(f"{prefix} matches {len(found)} requests; give more digits",
                         reason="notice.ambiguous")

    def resolve_diffusion(self, text: str) -> bytes:
        """The id of the recorded diffusion that ``text`` (hex, or a unique prefix) names."""
        self.refresh()
        prefix = text.strip().lower()
        found = [d for d in self.diffusions if d.hex().startswith(prefix)] if prefix else []
        if len(found) == 1:
            return found[0]
        if not found:
            raise StateError(f"no diffusion {prefix or '(empty id)'} recorded by "
                             f"{self.authority}", reason="diffusion.unknown")
        raise StateError(f"{prefix} matches {len(found)} diffusions; give more digits",
                         reason="diffusion.ambiguous")

    # -- actions (the CLI's, and the hook's) ----------------------------------------------

    def approve(self, m: NodeMachine, request_id: str, now_ms: int) -> list[NodeEvent]:
        """Publish a request under review: number it, send it to every cleared agency,
        and tell the requester. ``StateError`` (nothing changed) if it may not be."""
        self._check_machine(m)
        with self._changing() as b:
            events = self._publish(m, b, request_id, now_ms)
        return events + _submit_all(m, b.out, now_ms)

    def refuse(self, m: NodeMachine, request_id: str, now_ms: int,
               reason: str) -> list[NodeEvent]:
        """Refuse a request under review with ``reason`` (a code such as
        ``notice.insufficient-data``) and tell the requester."""
        self._check_machine(m)
        with self._changing() as b:
            events = self._refuse(m, b, request_id, now_ms, reason)
        return events + _submit_all(m, b.out, now_ms)

    def cancel(self, m: NodeMachine, request_id: str, now_ms: int,
               reason: str = REASON_CANCELLED) -> list[NodeEvent]:
        """The authority cancels a notice (or withdraws an undecided request): every
        holder gets a ``notice-cancel``; the requester a decision if it holds no copy."""
        self._check_machine(m)
        with self._changing() as b:
            events = self._cancel(m, b, request_id, now_ms, reason, by=m.agency)
        return events + _submit_all(m, b.out, now_ms)

    def order_deletion(self, m: NodeMachine, diffusion_id: bytes, now_ms: int,
                       reason: str) -> list[NodeEvent]:
        """The GS finds a diffusion non-compliant: tell its recipients (and its sender)
        to delete it. Once per diffusion (``StateError`` the second time)."""
        self._check_machine(m)
        with self._changing() as b:
            rec = self.diffusions.get(diffusion_id)
            if rec is None:
                raise StateError(f"no diffusion {diffusion_id.hex()} recorded by "
                                 f"{self.authority}", reason="diffusion.unknown")
            if rec.ordered:
                raise StateError(f"the deletion of diffusion {diffusion_id.hex()} was "
                                 f"already ordered ({rec.deletion_reason})",
                                 reason="diffusion.already-ordered")
            to = _reachable(m, {*rec.recipients, rec.sender}, rec.carriage, "deletion-order",
                            now_ms, rec.recipients)
            if not to:
                raise StateError(f"no recipient of diffusion {diffusion_id.hex()} can be "
                                 "reached any more", reason="addressing.empty")
            body = Body("Deletion order", f"Diffusion {diffusion_id.hex()} from {rec.sender} "
                        f"is non-compliant ({reason}); delete it.",
                        {"diffusion": diffusion_id.hex(), "reason": reason})
            header = _header(m, now_ms, to, "deletion-order", rec.carriage, DECISION_TTL_MS,
                             diffusion_id)
            done = replace(rec, deletion_reason=reason, deletion_id=header.id)
            self.diffusions[diffusion_id] = done
            b.diffusions.append(done)
            b.out.append((header, body))
        return [DeletionOrdered(diffusion_id.hex(), rec.sender, reason,
                                detail=f"{len(to)} recipient(s)"), *_submit_all(m, b.out, now_ms)]

    # -- handlers (the delivery hook) -----------------------------------------------------

    def record_diffusion(self, m: NodeMachine, h: Header, now_ms: int) -> list[NodeEvent]:
        with self._changing() as b:
            if h.id not in self.diffusions:
                rec = DiffusionRecord(h.id, h.sender,
                                      tuple(r for r in h.recipients if r != m.agency),
                                      Carriage.of(h), now_ms)
                self.diffusions[h.id] = rec
                b.diffusions.append(rec)
        return []

    def on_request(self, m: NodeMachine, item: InboxItem, h: Header,
                   now_ms: int) -> list[NodeEvent]:
        data = {k: str(v) for k, v in item.data.items()}
        rid = h.id_hex
        with self._changing() as b:
            if rid in self.registry:  # the same request again (a restored inbox)
                return [NoticeDuplicate(rid, h.sender)]
            try:
                colour = NoticeColour.parse(data.get("colour", "RED"))
                fields = {k: data.get(k, "") for k in REQUEST_FIELDS}
                self.registry.request(request_id=rid, requester=h.sender, colour=colour,
                                      fields=fields, now_ms=now_ms)
            except I24Error as exc:  # malformed: nothing recorded, the requester is told
                b.out.append(_decision(m, now_ms, h.sender, Carriage.of(h), h.id,
                                       f"Notice request refused: {exc.message}",
                                       {"decision": "refused", "reason": exc.reason,
                                        "request": rid}))
                events: list[NodeEvent] = [NoticeRefused(rid, h.sender, exc.reason,
                                                         exc.message)]
            else:
                self.carriage[rid] = Carriage.of(h)
                b.touch(rid)
                events = self._screen(m, b, rid, now_ms)
        return events + _submit_all(m, b.out, now_ms)

    def _screen(self, m: NodeMachine, b: _Batch, rid: str, now_ms: int) -> list[NodeEvent]:
        notice = self.registry.get(rid)
        flag = screen_request(notice.colour, notice.fields)
        if flag is not None:
            return self._refuse(m, b, rid, now_ms, flag)
        if not self.auto_review:
            self.registry.submit_for_review(rid, actor=m.agency, now_ms=now_ms)
            b.out.append(_decision(m, now_ms, notice.requester, self.carriage[rid],
                                   bytes.fromhex(rid), "Notice request under review",
                                   {"decision": "under-review", "request": rid}))
            return [NoticeUnderReview(rid, notice.requester, detail="awaiting review")]
        try:
            return self._publish(m, b, rid, now_ms)
        except StateError as exc:  # e.g. nobody cleared: refuse rather than leave it hanging
            return self._refuse(m, b, rid, now_ms, exc.reason)

    def on_cancel_request(self, m: NodeMachine, item: InboxItem, h: Header,
                          now_ms: int) -> list[NodeEvent]:
        number = str(item.data.get("number", "")).strip()
        reason = str(item.data.get("reason", "")).strip() or REASON_CANCELLED
        with self._changing() as b:
            try:
                rid = self._cancel_target(number, h.ref)
                notice = self.registry.get(rid)
                if notice.requester != h.sender:
                    raise StateError(f"{h.sender} does not own notice {notice.name}",
                                     reason=REASON_NOT_OWNER, agency=h.sender)
                events = self._cancel(m, b, rid, now_ms, reason, by=h.sender)
            except I24Error as exc:
                what = number or (h.ref.hex() if h.ref else "")
                b.out.append(_decision(m, now_ms, h.sender, Carriage.of(h), h.id,
                                       f"Cancellation of {what or 'the notice'} refused: "
                                       f"{exc.message}",
                                       {"decision": "cancel-refused", "reason": exc.reason,
                                        "number": number, "request": h.id_hex}))
                events = [NoticeCancelRefused(h.id_hex, h.sender, exc.reason, exc.message)]
        return events + _submit_all(m, b.out, now_ms)

    def _cancel_target(self, number: str, ref: bytes | None) -> str:
        if number:
            return self.registry.by_number(number).request_id
        if ref is not None:
            if ref in self.by_notice:  # the published notice message
                return self.by_notice[ref]
            if ref.hex() in self.registry:  # the request itself (withdrawn before review)
                return ref.hex()
        raise StateError("the cancellation request names no notice of this register (give "
                         "its number, or refer to the notice or the request)",
                         reason="notice.unknown")

    # -- the one code path per decision ---------------------------------------------------

    def _publish(self, m: NodeMachine, b: _Batch, rid: str, now_ms: int) -> list[NodeEvent]:
        notice = self.registry.get(rid)
        flag = notice.screen()
        if flag is not None:  # before the state: "Article 3" says more than "REFUSED"
            raise StateError(f"request {rid[:12]} cannot be approved: "
                             f"{explain(notice, flag)}; it is {notice.state.value}",
                             reason=flag, agency=notice.requester)
        carriage = self.carriage[rid]
        audience = _cleared_audience(m, carriage, now_ms)
        if not audience:
            raise StateError(f"no agency but {m.agency} may receive a notice marked "
                             f"{carriage.label.marking} (cleared for it and, in another "
                             f"organisation, reached under an agreement): notice "
                             f"{notice.name} would reach no one", reason=REASON_NO_AUDIENCE,
                             agency=notice.requester)
        header = _header(m, now_ms, audience, "notice", carriage, NOTICE_TTL_MS,
                         bytes.fromhex(rid))  # built first: nothing changes if it fails
        notice = self.registry.review(rid, approve=True, actor=m.agency, now_ms=now_ms)
        number = notice.number or ""
        f = notice.fields
        body = Body(f"{notice.colour.value} NOTICE {number}: {f['subject']}"[:256],
                    f"{notice.colour.purpose}. Offence: {f['offence'] or '-'}. Warrant: "
                    f"{f['warrant'] or '-'}. Requested by {notice.requester}.",
                    {"colour": notice.colour.value, "number": number, "request": rid, **f})
        self.notice_ids[rid] = header.id
        self.by_notice[header.id] = rid
        self.registry.record_sent(rid, header.recipients)
        b.touch(rid)
        b.out.append((header, body))
        b.out.append(_decision(m, now_ms, notice.requester, carriage, bytes.fromhex(rid),
                               f"Notice {number} published",
                               {"decision": "published", "number": number, "request": rid,
                                "notice": header.id_hex}))
        return [NoticePublished(header.id_hex, notice.requester, detail=number)]

    def _refuse(self, m: NodeMachine, b: _Batch, rid: str, now_ms: int,
                reason: str) -> list[NodeEvent]:
        notice = self.registry.review(rid, approve=False, actor=m.agency, now_ms=now_ms,
                                      reason=reason)
        b.touch(rid)
        b.out.append(_decision(m, now_ms, notice.requester, self.carriage[rid],
                               bytes.fromhex(rid), f"Notice request refused ({notice.reason})",
                               {"decision": "refused", "reason": notice.reason,
                                "request": rid}))
        return [NoticeRefused(rid, notice.requester, notice.reason)]

    def _cancel(self, m: NodeMachine, b: _Batch, rid: str, now_ms: int, reason: str,
                by: str) -> list[NodeEvent]:
        before = self.registry.get(rid)
        carriage = self.carriage[rid]
        holders = self.registry.holders(rid)
        to = _reachable(m, holders, carriage, "notice-cancel", now_ms, holders)
        nid = self.notice_ids.get(rid)
        header = None
        if to and nid is not None:  # built first: nothing changes if it fails
            header = _header(m, now_ms, to, "notice-cancel", carriage, NOTICE_TTL_MS, nid)
        notice, _ = self.registry.cancel(rid, actor=m.agency, now_ms=now_ms, reason=reason)
        b.touch(rid)
        name = notice.number or f"request {rid[:12]}"
        if header is not None:
            b.out.append((header, Body(f"CANCELLED: notice {name}"[:256],
                                       f"Notice {name} is cancelled ({reason}) at the "
                                       f"request of {by}.",
                                       {"number": notice.number or "", "request": rid,
                                        "reason": reason})))
        if notice.requester not in to and notice.requester != m.agency:
            verb = "cancelled" if before.in_force else "withdrawn"
            b.out.append(_decision(m, now_ms, notice.requester, carriage, bytes.fromhex(rid),
                                   f"Notice {name} {verb}",
                                   {"decision": verb, "reason": reason, "request": rid,
                                    "number": notice.number or ""}))
        return [NoticeCancelled((nid or bytes.fromhex(rid)).hex(), by, reason,
                                detail=f"{name} ({len(to)} holder(s) told)")]


# -- helpers ------------------------------------------------------------------------------


def _header(m: NodeMachine, now_ms: int, to: Sequence[str], kind: str, c: Carriage,
            ttl_ms: int, ref: bytes | None) -> Header:
    return make_header(m.directory, sender=m.agency, addressing=list(to), kind=kind,
                       label=c.label, now_ms=now_ms, ttl_ms=ttl_ms,
                       random_bytes=m.random_bytes, precedence=c.precedence,
                       handling=c.handling, ref=ref)


def _decision(m: NodeMachine, now_ms: int, to: str, c: Carriage, ref: bytes, text: str,
              data: dict[str, str]) -> tuple[Header, Body]:
    return (_header(m, now_ms, [to], "notice-decision", c, DECISION_TTL_MS, ref),
            Body(text[:256], text, data))


def _submit_all(m: NodeMachine, out: Sequence[tuple[Header, Body]],
                now_ms: int) -> list[NodeEvent]:
    return [m.submit(header, body, now_ms)[1] for header, body in out]


def _may_receive(m: NodeMachine, agency: str, c: Carriage, kind: str, now_ms: int, *,
                 withdrawing: bool = False) -> bool:
    """``agency`` is cleared for the label and, in another organisation, reached under an
    agreement that lets ``kind`` carried as ``c`` cross (the router would refuse the whole
    message for one that is not)."""
    d = m.directory
    return d.scale.dominates(d.agencies[agency].clearance, c.label) and crossing_refusal(
        d, m.agency, agency, kind, c.label, c.handling, now_ms,
        withdrawing=withdrawing) is None


def _cleared_audience(m: NodeMachine, c: Carriage, now_ms: int) -> list[str]:
    """``["@ALL"]`` when everyone may receive a notice carried as ``c``, else those who may
    (maybe []), ``_may_receive``."""
    everyone = m.directory.expand(["@ALL"], m.agency)
    cleared = [a for a in everyone if _may_receive(m, a, c, "notice", now_ms)]
    return ["@ALL"] if cleared and cleared == list(everyone) else cleared


def _reachable(m: NodeMachine, agencies: Collection[str], c: Carriage, kind: str,
               now_ms: int, sent_to: Collection[str]) -> list[str]:
    """The agencies still listed, active, cleared for the label and reached under an
    agreement if in another organisation (the router would refuse the whole message for
    one that is not), the sender excluded. ``sent_to``: who was sent the message this one
    withdraws (an agreement that has ended still carries its withdrawal to them)."""
    d = m.directory
    return sorted(a for a in agencies if a != m.agency and a in d.agencies
                  and d.agencies[a].active
                  and _may_receive(m, a, c, kind, now_ms, withdrawing=a in sent_to))


def _apply(m: NodeMachine, msg_id: bytes, change: type[ItemChanged], now_ms: int) -> None:
    """Put a held item in the change's state; a deletion erases its body, as the order
    says (the id stays, so a late copy of it is recognised and not stored again)."""
    if change is ItemDeleted:
        m.store.inbox_erase([msg_id], change.state, now_ms)
    else:
        m.store.inbox_set_state(msg_id, change.state)


def _is_authority(m: NodeMachine, agency: str) -> bool:
    rec = m.directory.agencies.get(agency)
    return rec is not None and "notice-authority" in rec.roles


def _holder_hook(holdings: Holdings) -> Hook:
    def hook(m: NodeMachine, item: InboxItem, h: Header, now_ms: int) -> list[NodeEvent]:
        change = _CHANGES.get(h.kind)
        if change is not None and h.ref is not None:
            if change is not ItemUpdated:  # an update does not withdraw the item
                holdings.withdrawn[h.ref] = (change, h.sender)
            if m.store.inbox_get(h.ref) is not None:
                _apply(m, h.ref, change, now_ms)
            return [change(h.ref.hex(), h.sender, detail=item.subject)]
        overtaken = holdings.withdrawn.get(h.id)
        if overtaken is not None:  # the withdrawal overtook the item itself
            change, by = overtaken
            if by == h.sender or _is_authority(m, by):
                _apply(m, h.id, change, now_ms)
                return [change(h.id_hex, by, detail="withdrawn before it arrived")]
        return []
    return hook


def _desk_hook(desk: NoticeDesk) -> Hook:
    def hook(m: NodeMachine, item: InboxItem, h: Header, now_ms: int) -> list[NodeEvent]:
        # A failure here (the store busy or damaged) is reported, never raised: the item is
        # already in the inbox and its receipt queued, and other hooks must still run.
        try:
            if h.kind == "diffusion":
                return desk.record_diffusion(m, h, now_ms)
            if h.kind == "notice-request":
                return desk.on_request(m, item, h, now_ms)
            if h.kind == "notice-cancel-request":
                return desk.on_cancel_request(m, item, h, now_ms)
        except I24Error as exc:
            return [DeskError(h.id_hex, h.sender, exc.reason, exc.message)]
        return []
    return hook


def order_deletion(m: NodeMachine, desk: NoticeDesk, diffusion_id: bytes, now_ms: int,
                   reason: str) -> list[NodeEvent]:
    """The GS finds a diffusion non-compliant: tell its recipients to delete it."""
    return desk.order_deletion(m, diffusion_id, now_ms, reason)


def install_lifecycle(m: NodeMachine, *, auto_review: bool = True,
                      store: DeskStore | None = None) -> NoticeDesk | None:
    """Attach the holder hook to every node, and the notice desk to the notice authority.

    ``store`` keeps the desk's register (default: in memory, lost with the process); it is
    ignored on a node that does not hold the role notice-authority.
    """
    m.hooks.append(_holder_hook(Holdings()))
    if "notice-authority" in m.directory.agency(m.agency).roles:
        desk = NoticeDesk(m.agency, store, auto_review=auto_review)
        m.hooks.append(_desk_hook(desk))
        return desk
    return None
