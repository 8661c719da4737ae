"""Network conditions: links, label-aware filters, router service time, broker queues.

Theory of operation: the simulated network is a star, as the real one is: every agency's
node has one link to the broker, and the router sits next to the broker. A frame from a node
to the router crosses the node's link once ("up"); a frame from the router to a node crosses
the node's link once ("down"). Each link has a one-way ``latency_ms``, a ``jitter_ms`` (the
delay is drawn uniformly in ``latency +- jitter``, never below zero) and a ``loss``
probability per frame. A link is FIFO, like the TCP connection it models: jitter stretches
delays but never reorders two frames on the same link.

Filters are label-aware: they look inside message-carrying frames (an envelope going up, a
delivery coming down) by peeking at the clear header, never at the body, and drop a frame
with a probability or hold it for an extra delay (a store-and-forward hold, so later frames
on the same link may overtake it). Criteria: precedence, label (exact marking), caveat,
kind, sender, recipient, addressing item (e.g. ``@EU``) and direction. Reports, receipts and
gap requests carry no header and pass filters untouched; use link conditions for them.

The router is a single server with a service time per job (``RouterCost``); with costs at
zero it is infinitely fast. Jobs are the router daemon's: handle an inbound frame (taken
highest precedence first, as the daemon's ``recv`` loop orders them) and publish an outbound
frame (the machine's own precedence queue; a delivery is stamped then). The two kinds of job
alternate when both are waiting, as the daemon's ``work`` and ``send`` loops share one core.

Every random draw (jitter, loss, filter drops) comes from the simulation's one ``Random``.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from i24net.core import frames as fr
from i24net.core.errors import I24Error
from i24net.core.filters import DIRECTIONS, HeaderView, matches
from i24net.core.wire import MAX_RECIPIENTS, unpack

PRECEDENCE_NAMES = ("FLASH", "IMMEDIATE", "PRIORITY", "ROUTINE")


@dataclass(frozen=True, slots=True)
class LinkParams:
    """One agency's link to the broker (both directions)."""

    latency_ms: float = 20.0
    jitter_ms: float = 5.0
    loss: float = 0.0

    def __post_init__(self) -> None:
        if self.latency_ms < 0 or self.jitter_ms < 0:
            raise ValueError("latency and jitter must not be negative")
        if not 0.0 <= self.loss <= 1.0:
            raise ValueError("loss is a probability in [0, 1]")

    def delay_us(self, rng: random.Random) -> int:
        if self.jitter_ms:
            ms = self.latency_ms + (2.0 * rng.random() - 1.0) * self.jitter_ms
            return max(0, round(ms * 1000))
        return round(self.latency_ms * 1000)


@dataclass(frozen=True, slots=True)
class RouterCost:
    """The router's service time per job, in ms (0 everywhere: an infinitely fast router).

    The defaults are of the order of the real work: an envelope costs a signature check and
    the routing decision, a delivery a stamp signature, a receipt a signature check, and
    relaying an already-signed frame (report, forwarded receipt, resend) almost nothing.
    """

    envelope_ms: float = 0.2
    control_ms: float = 0.1  # an inbound receipt or gap request
    stamp_ms: float = 0.1  # an outbound delivery (stamped when published)
    relay_ms: float = 0.02  # any other outbound frame

    def __post_init__(self) -> None:
        if min(self.envelope_ms, self.control_ms, self.stamp_ms, self.relay_ms) < 0:
            raise ValueError("router costs must not be negative")


def peek_header(raw: bytes) -> HeaderView | None:
    """The clear header of an envelope or of the envelope inside a delivery; None for any
    other frame or anything malformed (the receiver will say why; a filter only looks)."""
    try:
        header = fr.peek_header_bytes(raw)
        if header is None:
            return None
        h = unpack(header, what="header", max_size=len(header) + 1,
                   max_items=MAX_RECIPIENTS)
        caveats = frozenset(str(c) for c in h.get("caveats", ()))
        level = str(h.get("level", ""))
        label = level + ("//" + "/".join(sorted(caveats)) if caveats else "")
        mid = h.get("id")
        return HeaderView(mid.hex() if isinstance(mid, bytes) else "", str(h.get("from", "")),
                          tuple(h.get("to", ())),
                          tuple(h.get("addr", ())), label, caveats, str(h.get("prec", "")),
                          str(h.get("kind", "")))
    except (ValueError, AttributeError, TypeError, I24Error):
        return None


FRAME_KINDS = {"i24e": "envelope", "i24d": "delivery", "i24s": "report", "i24r": "receipt",
               "i24g": "gap"}


def frame_info(raw: bytes) -> tuple[str, str]:
    """(frame kind, message id hex or "") of a frame, for the record of a lost frame. Reads
    without verifying; "other" and "" for anything it cannot make sense of."""
    kind = FRAME_KINDS.get(fr.peek_magic(raw) or "", "other")
    if kind in ("envelope", "delivery"):
        h = peek_header(raw)
        return kind, h.msg_id if h else ""
    if kind in ("report", "receipt"):
        try:
            doc = unpack(fr.parse_frame(raw).doc, what="frame", max_size=fr.MAX_DOC,
                         max_items=MAX_RECIPIENTS)
            mid = doc.get("id") if isinstance(doc, dict) else None
            return kind, mid.hex() if isinstance(mid, bytes) else ""
        except I24Error:
            return kind, ""
    return kind, ""


def _names(value: str | Iterable[str] | None) -> frozenset[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return frozenset({value})
    return frozenset(value)


@dataclass(frozen=True, slots=True)
class Filter:
    """A label-aware rule on message-carrying frames. ``None`` criteria match anything.

    ``senders`` / ``recipients`` are sets of agency ids (groups are expanded when the
    filter is made). On the way up, ``recipients`` matches when any signed recipient is in
    the set; on the way down, when the delivery's own recipient is.
    """

    name: str
    direction: str = "both"
    precedences: frozenset[str] | None = None
    labels: frozenset[str] | None = None
    caveat: str | None = None
    kinds: frozenset[str] | None = None
    senders: frozenset[str] | None = None
    recipients: frozenset[str] | None = None
    addressing: frozenset[str] | None = None
    drop: float = 0.0
    delay_ms: float = 0.0
    jitter_ms: float = 0.0

    def __post_init__(self) -> None:
        if self.direction not in DIRECTIONS:
            raise ValueError(f"direction must be one of {', '.join(DIRECTIONS)}")
        if not 0.0 <= self.drop <= 1.0:
            raise ValueError("drop is a probability in [0, 1]")
        if self.delay_ms < 0 or self.jitter_ms < 0:
            raise ValueError("delay and jitter must not be negative")
        if self.precedences and not self.precedences <= set(PRECEDENCE_NAMES):
            raise ValueError(f"precedence must be among {', '.join(PRECEDENCE_NAMES)}")

    def matches(self, h: HeaderView, direction: str, dest: str | None) -> bool:
        return matches(self, h, direction, dest)


@dataclass
class Conditions:
    """The network conditions of a simulation; change them before or during a run.

    Every setter takes an optional ``at`` (virtual seconds): given, the change happens then
    (recorded as an ``inject``); omitted, it applies now. ``who`` arguments take an agency
    id, a ``@GROUP`` (expanded with the directory at that time) or a list of them.

    The engine that owns the conditions hands over the three things they need from it:
    ``resolve`` (agency ids for ids and groups, ``ValueError`` for unknown ones),
    ``links_changed`` (the links of these agencies, or of all with None, changed) and
    ``schedule`` (apply a change now or at ``at``, recording it).
    """

    resolve: Callable[..., frozenset[str]] = field(repr=False, compare=False)
    links_changed: Callable[[frozenset[str] | None], None] = field(repr=False, compare=False)
    schedule: Callable[[float | None, str, str, str, Callable[[], None]], None] = \
        field(repr=False, compare=False)
    default: LinkParams = field(default_factory=LinkParams)
    links: dict[str, dict[str, float]] = field(default_factory=dict)
    router_link: LinkParams = field(default_factory=lambda: LinkParams(0.0, 0.0, 0.0))
    filters: list[Filter] = field(default_factory=list)
    cost: RouterCost = field(default_factory=RouterCost)
    queue_limit: int | None = None
    _count: int = field(default=0, repr=False)

    # -- setters --------------------------------------------------------------------------

    def latency(self, ms: float, jitter_ms: float = 0.0, loss: float | None = None, *,
                at: float | None = None) -> None:
        """The default link of every agency: one-way latency, jitter and loss."""
        new = LinkParams(ms, jitter_ms, self.default.loss if loss is None else loss)
        self._later(at, "latency", "*", f"{ms:g}+-{jitter_ms:g} ms loss {new.loss:g}",
                    lambda: self._set_default(new))

    def link(self, who: str | Iterable[str], *, latency_ms: float | None = None,
             jitter_ms: float | None = None, loss: float | None = None,
             at: float | None = None) -> None:
        """Override the link of an agency, of each member of a ``@GROUP`` (or of the
        ``"router"``'s link to the broker, latency and jitter only). ``None`` keeps a value;
        ``reset_link`` removes the override."""
        changes = {k: v for k, v in (("latency_ms", latency_ms), ("jitter_ms", jitter_ms),
                                     ("loss", loss)) if v is not None}
        LinkParams(**{**{"latency_ms": 0.0}, **changes})  # validate now, not at ``at``
        self._later(at, "link", _label(who), ", ".join(f"{k}={v:g}" for k, v in
                                                        changes.items()),
                    lambda: self._set_links(who, changes))

    group = link  # "per group": ``conditions.group("@EU", loss=0.1)``

    def reset_link(self, who: str | Iterable[str], *, at: float | None = None) -> None:
        self._later(at, "link-reset", _label(who), "", lambda: self._reset_links(who))

    def filter(self, *, precedence: str | Iterable[str] | None = None,
               label: str | Iterable[str] | None = None, caveat: str | None = None,
               kind: str | Iterable[str] | None = None,
               sender: str | Iterable[str] | None = None,
               recipient: str | Iterable[str] | None = None,
               addressing: str | Iterable[str] | None = None, direction: str = "both",
               drop: float = 0.0, delay_ms: float = 0.0, jitter_ms: float = 0.0,
               at: float | None = None, until: float | None = None,
               name: str = "") -> str:
        """Add a label-aware filter; returns its name (for ``remove_filter``).

        E.g. ``filter(precedence="FLASH", delay_ms=50)`` or
        ``filter(addressing="@EU", drop=1.0)``. ``until`` removes it at that time.
        """
        precs = _names(precedence)
        for who in (sender, recipient):  # unknown ids and groups fail now, not at ``at``
            if who is not None:
                self.resolve(who)
        self._count += 1
        f = Filter(
            name=name or f"filter-{self._count}",
            direction=direction,
            precedences=frozenset(p.upper() for p in precs) if precs else None,
            labels=_names(label), caveat=caveat, kinds=_names(kind),
            senders=None, recipients=None, addressing=_names(addressing),
            drop=drop, delay_ms=delay_ms, jitter_ms=jitter_ms)

        def install() -> None:
            self.filters.append(replace(
                f, senders=self.resolve(sender) if sender is not None else None,
                recipients=self.resolve(recipient) if recipient is not None else None))
        self._later(at, "filter", f.name, _describe(f, sender, recipient), install)
        if until is not None:
            self.remove_filter(f.name, at=until)
        return f.name

    def remove_filter(self, name: str, *, at: float | None = None) -> None:
        self._later(at, "filter-removed", name, "",
                    lambda: self.filters.__setitem__(slice(None), [
                        f for f in self.filters if f.name != name]))

    def router(self, *, envelope_ms: float | None = None, control_ms: float | None = None,
               stamp_ms: float | None = None, relay_ms: float | None = None,
               at: float | None = None) -> None:
        """The router's service time per job (see ``RouterCost``); all 0 = instant."""
        changes = {k: v for k, v in (("envelope_ms", envelope_ms), ("control_ms", control_ms),
                                     ("stamp_ms", stamp_ms), ("relay_ms", relay_ms))
                   if v is not None}
        new = replace(self.cost, **changes)
        self._later(at, "router-cost", "router", ", ".join(
            f"{k}={v:g}" for k, v in changes.items()), lambda: setattr(self, "cost", new))

    def broker(self, *, queue_limit: int | None, at: float | None = None) -> None:
        """Frames the broker keeps per offline persistent session (None: no limit; Mosquitto's
        ``max_queued_messages`` default is 1000). Beyond it new frames are dropped."""
        if queue_limit is not None and queue_limit < 0:
            raise ValueError("queue_limit must not be negative")
        self._later(at, "broker-queue", "broker", f"limit {queue_limit}",
                    lambda: setattr(self, "queue_limit", queue_limit))

    # -- effective values -----------------------------------------------------------------

    def link_of(self, agency: str) -> LinkParams:
        over = self.links.get(agency)
        return replace(self.default, **over) if over else self.default

    def _set_default(self, new: LinkParams) -> None:
        self.default = new
        self.links_changed(None)

    def _set_links(self, who: str | Iterable[str], changes: dict[str, float]) -> None:
        targets = self.resolve(who, allow_router=True)
        for a in sorted(targets):
            if a == "router":
                self.router_link = replace(self.router_link, **changes)
                continue
            self.links[a] = {**self.links.get(a, {}), **changes}
        self.links_changed(targets)

    def _reset_links(self, who: str | Iterable[str]) -> None:
        targets = self.resolve(who, allow_router=True)
        for a in targets:
            if a == "router":
                self.router_link = LinkParams(0.0, 0.0, 0.0)
            self.links.pop(a, None)
        self.links_changed(targets)

    def _later(self, at: float | None, action: str, target: str, detail: str,
               apply: Callable[[], None]) -> None:
        self.schedule(at, action, target, detail, apply)


def _label(who: str | Iterable[str]) -> str:
    return who if isinstance(who, str) else ",".join(who)


def _describe(f: Filter, sender: Any, recipient: Any) -> str:
    parts = []
    for name, v in (("direction", f.direction if f.direction != "both" else None),
                    ("precedence", f.precedences), ("label", f.labels), ("caveat", f.caveat),
                    ("kind", f.kinds), ("sender", sender), ("recipient", recipient),
                    ("addressing", f.addressing)):
        if v is not None:
            text = v if isinstance(v, str) else ",".join(sorted(v))
            parts.append(f"{name}={text}")
    if f.drop:
        parts.append(f"drop={f.drop:g}")
    if f.delay_ms:
        parts.append(f"delay={f.delay_ms:g}ms")
    if f.jitter_ms:
        parts.append(f"jitter={f.jitter_ms:g}ms")
    return " ".join(parts)
