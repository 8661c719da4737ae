"""The history of a simulation run: typed events in virtual time, and summaries of them.

Theory of operation: the driver records one frozen event per thing that happened, in the
order it happened, with ``t`` in virtual seconds since the start. Events are values (every
field a str, int, float, bool or tuple of those), so ``to_json`` is a plain walk in field
order and two runs with the same seed dump byte-identical JSON. Message ids are lower-case
hex. The summaries (delivered counts, refusals and drops by reason, latency percentiles by
precedence, per-agency counts) are computed from the events alone, so a report built on a
``History`` loaded from JSON agrees with one built on the live object.

The event kinds, with their ``event`` name in JSON:

========================  =================================================================
``send``                  a message was sealed and queued by its sender's node (``origin``:
                          ``api`` for ``Simulation.send`` and friends, ``hook`` when the GS
                          desk sent it, ``attacker`` when sealed with a stolen key)
``send-error``            the sender's node could not build the message (no recipient, ...)
``accept``                the router accepted a message for ``recipients``
``refuse``                the router refused a message (``reason`` code, ``agencies`` at fault;
                          ``rate.limited`` is transient: the sender retries it later)
``router-retry``          the router saw a sender's retry of an accepted message
``deliver``               a recipient's node accepted a message into its inbox (once)
``refuse-in``             a recipient's node refused a stamped message on its own checks
``duplicate``             a recipient's node saw a message it already held
``receipt``               the sender got a recipient's signed receipt
``delivered``             the sender holds receipts from every recipient
``expired``               the sender gave up: the message expired before every receipt came
``retry``                 the sender's node re-sent a message still missing receipts
``gap``                   a node asked the router for missing sequence numbers
``resend``                the router answered a gap request
``drop``                  a frame was lost or refused: ``where`` is ``link``, ``broker``,
                          ``router`` or the id of the node that dropped it
``notice-published``      the GS published a notice (``number``)
``notice-refused``        the GS refused a notice request (``reason``)
``notice-cancelled``      the GS cancelled a notice
``withdrawn``             a holder marked a notice cancelled / a diffusion deleted / updated
``desk``                  any other notice-desk step (review pending, cancel refused, ...)
``directory``             a component installed a directory version (``who``, ``serial``)
``inject``                a scripted fault or action (partition, crash, compromise, ...)
``exposure``              at a key theft: which recorded messages the thief can and cannot
                          read (forward secrecy)
========================  =================================================================
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

from i24net.core.units import percentile  # the nearest-rank percentile of the summaries

PRECEDENCES = ("FLASH", "IMMEDIATE", "PRIORITY", "ROUTINE")


@dataclass(frozen=True, slots=True)
class Event:
    """Base of every history event: ``t`` is virtual seconds since the start."""

    event: ClassVar[str] = "event"
    t: float

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"event": self.event}
        for f in fields(self):
            v = getattr(self, f.name)
            out[f.name] = list(v) if isinstance(v, tuple) else v
        return out


@dataclass(frozen=True, slots=True)
class Send(Event):
    """A message sealed and queued at its sender's node."""

    event: ClassVar[str] = "send"
    msg_id: str
    sender: str
    recipients: tuple[str, ...]  # the signed list (the directory's expansion)
    addressing: tuple[str, ...]  # what the sender wrote: ids and @groups
    kind: str
    label: str  # display marking, e.g. CONFIDENTIAL//EU
    precedence: str
    handling: tuple[str, ...] = ()
    tlp: str = ""
    ref: str = ""  # the message this one refers to (forward, notice, cancellation)
    release_source: str = ""  # a signed H2 release: who granted it ...
    release_for: str = ""  # ... for which message ...
    release_allowed: tuple[str, ...] = ()  # ... to whom
    key_id: str = ""  # the signing key named in the header
    ttl: float = 0.0  # seconds from creation to expiry
    subject: str = ""
    origin: str = "api"  # api | hook | attacker


@dataclass(frozen=True, slots=True)
class SendError(Event):
    event: ClassVar[str] = "send-error"
    sender: str
    reason: str
    detail: str = ""


@dataclass(frozen=True, slots=True)
class Accept(Event):
    event: ClassVar[str] = "accept"
    msg_id: str
    sender: str
    recipients: tuple[str, ...]
    precedence: str
    serial: int  # the router's directory version


@dataclass(frozen=True, slots=True)
class Refuse(Event):
    event: ClassVar[str] = "refuse"
    msg_id: str
    sender: str
    reason: str
    agencies: tuple[str, ...] = ()
    detail: str = ""
    serial: int = 0


@dataclass(frozen=True, slots=True)
class RouterRetry(Event):
    event: ClassVar[str] = "router-retry"
    msg_id: str
    sender: str
    recipients: tuple[str, ...]  # re-delivered to these


@dataclass(frozen=True, slots=True)
class Deliver(Event):
    """The recipient's node verified, decrypted and stored the message: exactly once."""

    event: ClassVar[str] = "deliver"
    msg_id: str
    recipient: str
    sender: str
    latency_ms: float  # virtual time since the sender's node sealed it
    precedence: str
    serial: int  # the recipient's directory version


@dataclass(frozen=True, slots=True)
class RefuseIn(Event):
    event: ClassVar[str] = "refuse-in"
    msg_id: str
    recipient: str
    sender: str
    reason: str


@dataclass(frozen=True, slots=True)
class Duplicate(Event):
    event: ClassVar[str] = "duplicate"
    msg_id: str
    recipient: str
    sender: str


@dataclass(frozen=True, slots=True)
class Receipt(Event):
    event: ClassVar[str] = "receipt"
    msg_id: str
    sender: str
    recipient: str
    status: str  # delivered | read | refused
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Delivered(Event):
    event: ClassVar[str] = "delivered"
    msg_id: str
    sender: str
    latency_ms: float
    precedence: str


@dataclass(frozen=True, slots=True)
class Expired(Event):
    event: ClassVar[str] = "expired"
    msg_id: str
    sender: str
    detail: str = ""


@dataclass(frozen=True, slots=True)
class Retry(Event):
    event: ClassVar[str] = "retry"
    msg_id: str
    sender: str
    detail: str = ""


@dataclass(frozen=True, slots=True)
class Gap(Event):
    event: ClassVar[str] = "gap"
    agency: str
    detail: str = ""
    reason: str = ""  # gap.abandoned when the node lets the missing numbers go


@dataclass(frozen=True, slots=True)
class Resend(Event):
    event: ClassVar[str] = "resend"
    agency: str
    detail: str = ""


@dataclass(frozen=True, slots=True)
class Drop(Event):
    """A frame that went nowhere: lost on a link, at the broker, or refused on arrival."""

    event: ClassVar[str] = "drop"
    where: str  # link | broker | router | <agency id> (the node that dropped it)
    reason: str
    agency: str = ""  # the link's or the node's agency, the sender for the router
    frame: str = ""  # envelope | delivery | report | receipt | gap | directory | other
    msg_id: str = ""
    detail: str = ""


@dataclass(frozen=True, slots=True)
class NoticePublished(Event):
    event: ClassVar[str] = "notice-published"
    msg_id: str  # the notice message
    request_id: str
    number: str
    requester: str


@dataclass(frozen=True, slots=True)
class NoticeRefused(Event):
    event: ClassVar[str] = "notice-refused"
    request_id: str
    requester: str
    reason: str


@dataclass(frozen=True, slots=True)
class NoticeCancelled(Event):
    event: ClassVar[str] = "notice-cancelled"
    msg_id: str  # the notice message (or the request, if never published)
    by: str
    reason: str
    detail: str = ""


@dataclass(frozen=True, slots=True)
class Withdrawn(Event):
    event: ClassVar[str] = "withdrawn"
    msg_id: str  # the withdrawn notice or diffusion
    holder: str
    state: str  # cancelled | deleted | updated
    by: str


@dataclass(frozen=True, slots=True)
class Purged(Event):
    """A holder erased a body at the end of its kind's retention period."""

    event: ClassVar[str] = "purged"
    msg_id: str
    holder: str
    detail: str  # its kind and how long it was kept


@dataclass(frozen=True, slots=True)
class Desk(Event):
    event: ClassVar[str] = "desk"
    agency: str
    what: str  # the node event kind: notice-review, notice-cancel-refused, ...
    msg_id: str = ""
    peer: str = ""
    reason: str = ""
    detail: str = ""


@dataclass(frozen=True, slots=True)
class DirectoryInstalled(Event):
    event: ClassVar[str] = "directory"
    who: str  # "router" or an agency id
    serial: int


@dataclass(frozen=True, slots=True)
class Inject(Event):
    event: ClassVar[str] = "inject"
    action: str  # partition heal crash restart compromise revoke rotate skew conditions ...
    target: str
    detail: str = ""


@dataclass(frozen=True, slots=True)
class Exposure(Event):
    """What a thief of ``agency``'s keys, at the moment of the theft, could read of the
    traffic it recorded to and from that agency until then: ids it opens, and ids it cannot
    with the reason (``prekey.unknown``: sealed to an erased prekey; ``key.sending``: sealed
    with a sending key the agency has forgotten)."""

    event: ClassVar[str] = "exposure"
    agency: str
    readable: tuple[str, ...]
    unreadable: tuple[str, ...]
    reasons: tuple[str, ...]  # one per unreadable id


EVENT_TYPES: dict[str, type[Event]] = {cls.event: cls for cls in (
    Send, SendError, Accept, Refuse, RouterRetry, Deliver, RefuseIn, Duplicate, Receipt,
    Delivered, Expired, Retry, Gap, Resend, Drop, NoticePublished, NoticeRefused,
    NoticeCancelled, Withdrawn, Purged, Desk, DirectoryInstalled, Inject, Exposure)}


def event_from_dict(d: Mapping[str, Any]) -> Event:
    cls: Any = EVENT_TYPES[d["event"]]
    kw = {f.name: (tuple(d[f.name]) if isinstance(d[f.name], list) else d[f.name])
          for f in fields(cls) if f.name in d}
    ev: Event = cls(**kw)
    return ev


@dataclass(frozen=True, slots=True)
class DirectoryVersion:
    """A directory version issued during the run (the object itself stays in memory)."""

    serial: int
    t: float
    reason: str
    revoked: tuple[str, ...]
    key_versions: tuple[tuple[str, int], ...]  # agencies whose key_version > 1


@dataclass
class History:
    """Everything that happened in a run, in order. Iterable; ``of(kind)`` filters."""

    seed: int = 0
    network: str = ""
    agencies: int = 0
    start_ms: int = 0
    end: float = 0.0
    events: list[Event] = field(default_factory=list)
    versions: list[DirectoryVersion] = field(default_factory=list)
    # serial -> Directory; not serialised (the flow checker's source of truth in memory)
    directories: dict[int, Any] = field(default_factory=dict, repr=False)

    def append(self, ev: Event) -> None:
        self.events.append(ev)

    def __iter__(self) -> Iterator[Event]:
        return iter(self.events)

    def __len__(self) -> int:
        return len(self.events)

    def of(self, *kinds: type[Event]) -> list[Any]:
        return [e for e in self.events if isinstance(e, kinds)]

    def where(self, **match: Any) -> list[Event]:
        """Events whose fields equal ``match``; ``event="deliver"`` selects a kind."""
        kind = match.pop("event", None)
        return [e for e in self.events if (kind is None or e.event == kind)
                and all(getattr(e, k, object()) == v for k, v in match.items())]

    def message(self, msg_id: str) -> list[Event]:
        """Every event about one message (by id or a unique prefix of it)."""
        return [e for e in self.events if getattr(e, "msg_id", "").startswith(msg_id)
                and msg_id]

    def deliveries(self, msg_id: str) -> dict[str, float]:
        """recipient -> time of delivery, for one message."""
        return {e.recipient: e.t for e in self.events
                if isinstance(e, Deliver) and e.msg_id == msg_id}

    def notice(self, request_id: str) -> NoticePublished | None:
        """The publication of the notice requested by ``request_id`` (None if none)."""
        return next((e for e in self.events if isinstance(e, NoticePublished)
                     and e.request_id == request_id), None)

    def withdrawals(self, msg_id: str) -> dict[str, float]:
        """holder -> time it marked ``msg_id`` (a notice or diffusion) withdrawn."""
        return {e.holder: e.t for e in self.events
                if isinstance(e, Withdrawn) and e.msg_id == msg_id}

    # -- summaries ------------------------------------------------------------------------

    def counts(self) -> dict[str, int]:
        """Events per kind, in first-seen order."""
        return dict(Counter(e.event for e in self.events))

    def delivered(self) -> int:
        """Messages delivered to a recipient (one per message and recipient)."""
        return sum(1 for e in self.events if isinstance(e, Deliver))

    def refused_by_reason(self) -> dict[str, int]:
        c = Counter(e.reason for e in self.events if isinstance(e, Refuse))
        return dict(sorted(c.items()))

    def refused_in_by_reason(self) -> dict[str, int]:
        c = Counter(e.reason for e in self.events if isinstance(e, RefuseIn))
        return dict(sorted(c.items()))

    def dropped_by_reason(self) -> dict[str, int]:
        c = Counter(f"{e.where if e.where in ('link', 'broker', 'router') else 'node'}:"
                    f"{e.reason}" for e in self.events if isinstance(e, Drop))
        return dict(sorted(c.items()))

    def latencies(self) -> dict[str, list[float]]:
        """Delivery latencies (ms) by precedence name."""
        out: dict[str, list[float]] = {p: [] for p in PRECEDENCES}
        for e in self.events:
            if isinstance(e, Deliver):
                out.setdefault(e.precedence, []).append(e.latency_ms)
        return out

    def latency_percentiles(self, ps: Iterable[float] = (50, 90, 99, 100)
                            ) -> dict[str, dict[str, float | int]]:
        """Per precedence: ``n`` and the latency percentiles in ms (``p50``...)."""
        ps = tuple(ps)
        out: dict[str, dict[str, float | int]] = {}
        for prec, values in self.latencies().items():
            if not values:
                continue
            row: dict[str, float | int] = {"n": len(values)}
            for p in ps:
                row[f"p{p:g}"] = round(percentile(values, p), 3)
            out[prec] = row
        return out

    def per_agency(self) -> dict[str, dict[str, int]]:
        """Per agency: messages sent, delivered to it, refused (as sender), dropped at it."""
        rows: dict[str, dict[str, int]] = {}

        def row(a: str) -> dict[str, int]:
            return rows.setdefault(a, {"sent": 0, "received": 0, "refused": 0, "dropped": 0})
        for e in self.events:
            if isinstance(e, Send):
                row(e.sender)["sent"] += 1
            elif isinstance(e, Deliver):
                row(e.recipient)["received"] += 1
            elif isinstance(e, Refuse):
                row(e.sender)["refused"] += 1
            elif isinstance(e, Drop) and e.agency:
                row(e.agency)["dropped"] += 1
        return dict(sorted(rows.items()))

    def summary(self) -> dict[str, Any]:
        sends = [e for e in self.events if isinstance(e, Send)]
        return {
            "messages": len(sends),
            "by_origin": dict(sorted(Counter(e.origin for e in sends).items())),
            "accepted": sum(1 for e in self.events if isinstance(e, Accept)),
            "refused": self.refused_by_reason(),
            "delivered": self.delivered(),
            "fully_delivered": sum(1 for e in self.events if isinstance(e, Delivered)),
            "expired": sum(1 for e in self.events if isinstance(e, Expired)),
            "refused_in": self.refused_in_by_reason(),
            "duplicates": sum(1 for e in self.events if isinstance(e, Duplicate)),
            "retries": sum(1 for e in self.events if isinstance(e, Retry)),
            "dropped": self.dropped_by_reason(),
            "latency_ms": self.latency_percentiles(),
            "injects": [f"{e.t:g}s {e.action} {e.target}" for e in self.events
                        if isinstance(e, Inject)],
        }

    # -- JSON -----------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        """Plain data in a stable order: ``meta``, ``directory_versions``, ``events``."""
        return {
            "meta": {"seed": self.seed, "network": self.network, "agencies": self.agencies,
                     "start_ms": self.start_ms, "end": self.end, "events": len(self.events)},
            "directory_versions": [
                {"serial": v.serial, "t": v.t, "reason": v.reason, "revoked": list(v.revoked),
                 "key_versions": [list(kv) for kv in v.key_versions]}
                for v in self.versions],
            "events": [e.to_dict() for e in self.events],
        }

    def dumps(self, *, indent: int | None = None) -> str:
        return json.dumps(self.to_json(), indent=indent, ensure_ascii=False,
                          allow_nan=False)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> History:
        """Rebuild a history from ``to_json`` output (without the directory objects)."""
        meta = data["meta"]
        h = cls(seed=meta["seed"], network=meta["network"], agencies=meta["agencies"],
                start_ms=meta["start_ms"], end=meta["end"])
        h.versions = [DirectoryVersion(v["serial"], v["t"], v["reason"], tuple(v["revoked"]),
                                       tuple((a, n) for a, n in v["key_versions"]))
                      for v in data.get("directory_versions", [])]
        h.events = [event_from_dict(e) for e in data["events"]]
        return h
