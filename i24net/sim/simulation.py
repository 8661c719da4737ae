"""The simulation driver: the real router and node machines on a virtual clock.

Theory of operation: ``Simulation`` is the discrete-event twin of the asyncio daemons. It
builds one ``RouterMachine`` and one ``NodeMachine`` per agency (with the notice lifecycle
installed, as the node daemon does), over in-memory stores, and moves their frames itself:

    node.pop() --up link--> broker --> router inbound (precedence heap) --router service-->
    router.handle() ... router.pop() --> broker --down link--> node.handle()

Nothing is simplified inside the machines: every envelope is sealed, signed, verified,
stamped, decrypted and receipted for real, so what a simulation shows is what the code does.
The driver adds what the machines leave to their shells: time (each machine's ``now`` is the
virtual time plus that component's clock skew), the links (``network.Conditions``), the
broker's persistent sessions (frames for a client that is offline - partitioned or crashed -
queue at the broker, in order, and flow when it is back, as MQTT QoS 1 persistent sessions
do; a broker crash loses them and everything in flight), the router's service time, timers
(a node is woken exactly when its outbox or gap timers fall due; see ``SimNodeStore``),
directory distribution (a new version reaches the router at once and each node after its
link latency, or when it reconnects: it is the retained directory topic) and faults.

Determinism: one ``random.Random(seed)`` supplies everything - the keys, every message id,
nonce and body key (it is each machine's ``random_bytes``), jitter, loss and filter draws -
and the scheduler runs same-time events in the order they were scheduled. No set of strings
is ever iterated. So a run is a function of (spec, seed, script): the same inputs give the
same ``History``, byte for byte in JSON, in any process.

Crashes follow the daemons: a crashed node or router loses its machine (in-memory queues,
timers, caches) and keeps its store; ``restart`` builds a new machine over the same store.
"""

from __future__ import annotations

import bisect
import heapq
import itertools
import random
import tomllib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from i24net.core import frames as fr
from i24net.core.directory import Directory
from i24net.core.envelope import KINDS, Body, Envelope, Header, make_header, recipient_keys, seal
from i24net.core.errors import I24Error
from i24net.core.keys import PairKeyCache, key_id
from i24net.core.labels import TLP, Evaluation, HandlingCodes, Label, Precedence
from i24net.core.lifecycle import MemoryDeskStore, NoticeDesk, install_lifecycle
from i24net.core.netspec import NetworkSpec, parse_spec
from i24net.core.node import InboxItem, NodeEvent, NodeMachine, OutboxEntry
from i24net.core.policy import Release, complete_addressing
from i24net.core.router import RouterEvent, RouterMachine
from i24net.core.wire import unpack
from i24net.daemons import frame_priority
from i24net.presets import preset_toml, synthetic_toml
from i24net.sim import history as hs
from i24net.sim.keyring import Keyring, SimKeys
from i24net.sim.network import Conditions, LinkParams, frame_info, peek_header
from i24net.sim.scheduler import Scheduler, ms_to_us, seconds_to_us
from i24net.sim.stores import SimNodeStore, SimRouterStore

DEFAULT_START_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z: virtual time 0
PREC_NAMES = ("FLASH", "IMMEDIATE", "PRIORITY", "ROUTINE")
ROUTER = "router"
BROKER = "broker"


@dataclass
class Sent:
    """A handle on a scripted message. ``msg_id`` is filled in when the send happens (in
    virtual time); ``error`` holds the reason code if the sender could not build it."""

    at: float
    sender: str
    kind: str
    origin: str = "api"
    msg_id: str | None = None
    error: str | None = None
    detail: str = ""

    @property
    def sent(self) -> bool:
        return self.msg_id is not None


class _Host:
    """One agency's node as the driver sees it: machine, durable store, link and session."""

    __slots__ = ("agency", "desk", "desk_store", "down_seq", "held", "keys", "last_down",
                 "last_up", "link", "machine", "name", "partitioned", "pending_keys",
                 "session", "skew_ms", "store", "up", "wake_at", "wake_token")

    def __init__(self, agency: str, keys: SimKeys, held: Directory, *, name: str = "",
                 keep_bodies: bool = True) -> None:
        self.agency = agency  # whose topics this host uses
        self.name = name or agency
        self.keys = keys
        self.held = held  # the newest directory this node installed (durable)
        self.store = SimNodeStore(keep_bodies=keep_bodies)
        self.desk_store = MemoryDeskStore()
        self.desk: NoticeDesk | None = None
        self.machine: NodeMachine | None = None
        self.up = True
        self.partitioned = False
        self.skew_ms = 0
        self.link = LinkParams()
        self.last_up = 0  # FIFO links: the latest arrival scheduled each way
        self.last_down = 0
        self.session: list[tuple[int, bytes]] = []  # broker-side queue while offline
        self.down_seq = 0
        self.wake_at: int | None = None
        self.wake_token = 0
        self.pending_keys: list[tuple[int, SimKeys]] = []  # (serial, keys) after a rotation

    @property
    def connected(self) -> bool:
        return self.up and not self.partitioned


class Simulation:
    """A simulated i24net network. Script it in virtual seconds, then ``run``.

    Build with ``from_preset``, ``from_toml``, ``synthetic`` or ``Simulation(spec)``. Every
    scripted action takes ``at`` (virtual seconds since the start) and happens when the run
    reaches it; arguments are checked when the action is scripted (``ValueError`` or an
    ``I24Error``), and what goes wrong in virtual time is recorded in the history.
    """

    def __init__(self, spec: NetworkSpec, *, seed: int = 0, start_ms: int = DEFAULT_START_MS,
                 auto_review: bool = True, keep_bodies: bool = True) -> None:
        self.spec = spec
        self.seed = seed
        self.rng = random.Random(seed)
        self.clock = Scheduler()
        self.start_ms = start_ms
        self.auto_review = auto_review
        self.keep_bodies = keep_bodies
        self.keyring = Keyring.build(spec, self.rng, issued_ms=start_ms)
        self.directory: Directory = self.keyring.directory  # the authority's newest version
        d = self.directory
        self.history = hs.History(seed=seed, network=spec.name, agencies=len(spec.agencies),
                                  start_ms=start_ms)
        self.history.directories[d.serial] = d
        self.history.versions.append(hs.DirectoryVersion(d.serial, 0.0, "initial", (), ()))
        self.conditions = Conditions(self)
        self.inbox_prefix = f"{d.prefix}/inbox/"
        self.submit_prefix = f"{d.prefix}/submit/"
        # router
        self.router_store = SimRouterStore()
        self.router_dir = d
        self.router: RouterMachine | None = RouterMachine(d, self.keyring.router,
                                                          self.router_store)
        self.router_skew_ms = 0
        self.router_epoch = 0
        self._rin: list[tuple[int, int, str, bytes]] = []
        self._rorder = itertools.count()
        self._rbusy = False
        self._rturn = False
        self._router_session: list[tuple[str, bytes]] = []  # (topic, frame) at the broker
        self._last_prune_ms = 0
        # broker
        self.broker_up = True
        self.broker_epoch = 0
        # nodes
        self.hosts: dict[str, _Host] = {}
        for a in spec.agencies:
            host = _Host(a.id, self.keyring.agencies[a.id], d, keep_bodies=keep_bodies)
            host.link = self.conditions.link_of(a.id)
            self.hosts[a.id] = host
            self._start_node(host)
        self._attackers: dict[str, _Host] = {}
        self._stolen: dict[str, SimKeys] = {}
        self._attacker_cache = PairKeyCache()
        self._sent_us: dict[str, int] = {}
        self.messages: dict[str, hs.Send] = {}  # msg id -> its send event
        self._next_action_us = 0

    # -- construction ---------------------------------------------------------------------

    @classmethod
    def from_spec(cls, spec: NetworkSpec, *, max_skew_seconds: int | None = None,
                  **kw: Any) -> Simulation:
        if max_skew_seconds is not None:
            spec = replace(spec, max_skew_seconds=int(max_skew_seconds))
        return cls(spec, **kw)

    @classmethod
    def from_toml(cls, text: str, **kw: Any) -> Simulation:
        """A network from ``network.toml`` text. ``max_skew_seconds`` overrides the spec's
        clock-skew bound; other keywords go to ``Simulation``."""
        return cls.from_spec(parse_spec(tomllib.loads(text)), **kw)

    @classmethod
    def from_preset(cls, name: str, **kw: Any) -> Simulation:
        """A built-in network: ``demo`` (8 agencies) or ``interpol`` (198)."""
        return cls.from_toml(preset_toml(name), **kw)

    @classmethod
    def synthetic(cls, n_agencies: int, *, network_seed: int = 0, **kw: Any) -> Simulation:
        """A synthetic network of ``n_agencies`` (``presets.synthetic_toml``)."""
        return cls.from_toml(synthetic_toml(n_agencies, seed=network_seed), **kw)

    # -- observation ----------------------------------------------------------------------

    @property
    def now(self) -> float:
        """Virtual seconds since the start."""
        return self.clock.now

    @property
    def agencies(self) -> list[str]:
        return list(self.hosts)

    def node(self, agency: str) -> NodeMachine | None:
        """The agency's node machine (None while it is crashed)."""
        return self._host(agency).machine

    def store(self, agency: str) -> SimNodeStore:
        return self._host(agency).store

    def inbox(self, agency: str) -> list[InboxItem]:
        return list(self._host(agency).store.inbox.values())

    def outbox(self, agency: str) -> list[OutboxEntry]:
        return list(self._host(agency).store.outbox.values())

    def state(self, sent: Sent | str) -> str:
        """The outbox state of a scripted message at its sender (``unsent`` before)."""
        mid = sent.msg_id if isinstance(sent, Sent) else sent
        sender = sent.sender if isinstance(sent, Sent) else self.messages[sent].sender
        if mid is None:
            return "error" if isinstance(sent, Sent) and sent.error else "unsent"
        e = self._host(sender).store.outbox.get(bytes.fromhex(mid))
        return e.state if e else "unknown"

    def holders(self, sent: Sent | str) -> list[str]:
        """The agencies whose inbox holds the message."""
        mid = sent.msg_id if isinstance(sent, Sent) else sent
        if mid is None:
            return []
        key = bytes.fromhex(mid)
        return [a for a, h in self.hosts.items() if key in h.store.inbox]

    @property
    def desk(self) -> NoticeDesk | None:
        """The notice authority's desk (None if it is crashed or there is none)."""
        for h in self.hosts.values():
            if h.desk is not None:
                return h.desk
        return None

    def notice_authority(self) -> str:
        found = self.directory.authorities("notice-authority")
        if not found:
            raise ValueError("this network has no notice authority")
        return found[0]

    # -- scripting: messages --------------------------------------------------------------

    def send(self, at: float, sender: str, to: str | Sequence[str], *, kind: str = "message",
             label: str = "UNCLASSIFIED", precedence: str = "ROUTINE", subject: str = "",
             text: str = "", data: dict[str, Any] | None = None,
             handling: Sequence[str] = (), h3_text: str = "", tlp: str | None = None,
             evaluation: str | None = None, ref: Sent | str | bytes | None = None,
             release: bytes | None = None, ttl: float | None = None) -> Sent:
        """Send a message from ``sender``'s node at ``at``: addressed to ``to`` (agency ids
        and ``@GROUP``s; a diffusion gains its GS copy as the CLI adds it), sealed, queued,
        retried until every receipt arrives or it expires (``ttl`` seconds, default the
        spec's ``default_ttl_hours``)."""
        self._host(sender)
        spec = self._message_spec(kind, to, label, precedence, handling, h3_text, tlp,
                                  evaluation, subject or f"{kind} from {sender}", text, data,
                                  ttl)
        h = Sent(at, sender, kind)
        self._at(at, self._do_send, h, spec, ref, release)
        return h

    def forge(self, at: float, sender: str, to: str | Sequence[str], **kw: Any) -> Sent:
        """An attacker holding ``sender``'s stolen key (see ``compromise``) sends through
        ``sender``'s submit topic, as if it had the broker password too. Same keywords as
        ``send``; never retried. Nothing is sent if no key was stolen by then."""
        self._host(sender)
        spec = self._message_spec(
            kw.pop("kind", "message"), to, kw.pop("label", "UNCLASSIFIED"),
            kw.pop("precedence", "ROUTINE"), kw.pop("handling", ()), kw.pop("h3_text", ""),
            kw.pop("tlp", None), kw.pop("evaluation", None),
            kw.pop("subject", "") or f"message from {sender}", kw.pop("text", ""),
            kw.pop("data", None), kw.pop("ttl", None))
        ref = kw.pop("ref", None)
        if kw:
            raise TypeError(f"unexpected argument(s): {', '.join(sorted(kw))}")
        h = Sent(at, sender, spec["kind"], origin="attacker")
        self._at(at, self._do_forge, h, spec, ref)
        return h

    def forward(self, at: float, sender: str, of: Sent | str, to: str | Sequence[str], *,
                release: bool = False, label: str | None = None,
                handling: Sequence[str] | None = None, precedence: str | None = None,
                subject: str | None = None, text: str | None = None) -> Sent:
        """``sender`` passes on a message it holds (``of``) to ``to``: the body is copied
        from its inbox, label and handling codes inherited unless given, and the forward
        refers to the original (so the router applies the source's handling codes).
        ``release=True`` attaches the source's signed release for the new recipients, as if
        ``sender`` had asked the source for permission (H2)."""
        self._host(sender)
        if label is not None:
            self.directory.scale.validate(Label.parse(label))
        if precedence is not None:
            Precedence.parse(precedence)
        if handling is not None:
            HandlingCodes.parse(handling)
        h = Sent(at, sender, "message")
        self._at(at, self._do_forward, h, of, _as_list(to), release, label, handling,
                 precedence, subject, text)
        return h

    def notice_request(self, at: float, requester: str, *, colour: str = "RED",
                       subject: str, offence: str = "", warrant: str = "",
                       label: str = "OFFICIAL-USE", precedence: str = "IMMEDIATE",
                       text: str = "", fields: dict[str, str] | None = None,
                       handling: Sequence[str] = ()) -> Sent:
        """``requester`` asks the notice authority (the GS) to publish a notice. With
        ``auto_review`` (the default) the GS screens it (completeness, Article 3) and
        publishes or refuses at once; otherwise it waits for ``review``."""
        data = {"colour": colour, "subject": subject, "offence": offence,
                "warrant": warrant, **(fields or {})}
        return self.send(at, requester, [self.notice_authority()], kind="notice-request",
                         label=label, precedence=precedence,
                         subject=f"{colour.upper()} Notice request: {subject}"[:256],
                         text=text or f"Request for a {colour.upper()} notice: {subject}",
                         data=data, handling=handling)

    def cancel_notice(self, at: float, requester: str, request: Sent | str, *,
                      reason: str = "", label: str | None = None,
                      precedence: str = "IMMEDIATE") -> Sent:
        """``requester`` asks the GS to cancel the notice published for ``request`` (or to
        withdraw the request if it is not published yet). The notice number and id are
        read from the requester's own inbox (the GS's decision), as a person would."""
        self._host(requester)
        h = Sent(at, requester, "notice-cancel-request")
        self._at(at, self._do_cancel_notice, h, request, reason, label, precedence)
        return h

    def review(self, at: float, request: Sent | str, *, approve: bool = True,
               reason: str = "notice.refused") -> None:
        """The GS task force decides on a request left under review (``auto_review=False``)."""
        self._at(at, self._do_review, request, approve, reason)

    def order_deletion(self, at: float, diffusion: Sent | str, *,
                       reason: str = "diffusion.non-compliant") -> None:
        """The GS finds a diffusion non-compliant and orders every recipient to delete it."""
        self._at(at, self._do_order_deletion, diffusion, reason)

    def at(self, at: float, fn: Callable[[Simulation], Any]) -> None:
        """Call ``fn(sim)`` at virtual time ``at`` (anything the API does not cover)."""
        self._at(at, fn, self)

    # -- scripting: faults ----------------------------------------------------------------

    def partition(self, at: float, agencies: str | Iterable[str]) -> None:
        """Cut agencies (ids or ``@GROUP``s) from the broker until ``heal``: what they send
        is lost (their outboxes retry), what is sent to them waits at the broker."""
        agencies = _as_list(agencies)
        self._resolve(agencies)
        self._at(at, self._do_partition, agencies, True)

    def heal(self, at: float, agencies: str | Iterable[str] | None = None) -> None:
        """Reconnect partitioned agencies (all of them if None)."""
        agencies = _as_list(agencies) if agencies is not None else None
        if agencies is not None:
            self._resolve(agencies)
        self._at(at, self._do_partition, agencies, False)

    def crash(self, at: float, who: str) -> None:
        """Crash ``"router"``, ``"broker"`` or an agency's node (memory lost, store kept)."""
        self._check_who(who)
        self._at(at, self._do_crash, who)

    def restart(self, at: float, who: str) -> None:
        """Restart what ``crash`` stopped: a new machine over the same store."""
        self._check_who(who)
        self._at(at, self._do_restart, who)

    def compromise(self, at: float, agency: str) -> None:
        """An attacker steals ``agency``'s current private keys (then see ``forge``)."""
        self._host(agency)
        self._at(at, self._do_compromise, agency)

    def revoke(self, at: float, agency: str) -> None:
        """The authority issues a directory version revoking ``agency``."""
        self._host(agency)
        self._at(at, self._do_revoke, agency)

    def rotate(self, at: float, agency: str) -> None:
        """The authority issues a version with new keys for ``agency``; its node switches
        to the new private keys when that version reaches it."""
        self._host(agency)
        self._at(at, self._do_rotate, agency)

    def skew(self, at: float, agency: str, seconds: float) -> None:
        """Set the clock offset of an agency's node (or ``"router"``) to ``seconds``."""
        if agency != ROUTER:
            self._resolve([agency])
        self._at(at, self._do_skew, agency, round(seconds * 1000))

    # -- running --------------------------------------------------------------------------

    def run(self, until: float | None = None, *, max_events: int | None = None) -> hs.History:
        """Run virtual time up to ``until`` seconds (until nothing is left to do if None);
        may be called again to continue. Returns the history so far."""
        until_us = None if until is None else seconds_to_us(until)
        if until_us is not None and until_us < self.clock.now_us:
            raise ValueError(f"until={until} is before the current time {self.now:g}s")
        self.clock.run(until_us, max_events=max_events)
        self.history.end = self.clock.now
        return self.history

    # -- internals: scripting helpers ------------------------------------------------------

    def _at(self, at: float, fn: Callable[..., Any], *args: Any) -> None:
        t = seconds_to_us(at)
        if at < 0 or t < self.clock.now_us:
            raise ValueError(f"at={at} is in the past (virtual time is {self.now:g}s)")
        self.clock.at(t, fn, *args)

    def _host(self, agency: str) -> _Host:
        try:
            return self.hosts[agency]
        except KeyError:
            raise ValueError(f"unknown agency {agency!r} (this network has "
                             f"{len(self.hosts)} agencies, e.g. "
                             f"{', '.join(list(self.hosts)[:4])})") from None

    def _check_who(self, who: str) -> None:
        if who not in (ROUTER, BROKER):
            self._host(who)

    def _resolve(self, who: str | Iterable[str], *, allow_router: bool = False
                 ) -> frozenset[str]:
        """Agency ids for ids and ``@GROUP``s (expanded with the newest directory)."""
        out: set[str] = set()
        for item in _as_list(who):
            if item == ROUTER and allow_router:
                out.add(item)
            elif item.startswith("@"):
                try:
                    out.update(self.directory.expand([item], ""))
                except I24Error as exc:
                    raise ValueError(exc.message) from None
            else:
                self._host(item)
                out.add(item)
        return frozenset(out)

    def _message_spec(self, kind: str, to: str | Sequence[str], label: str, precedence: str,
                      handling: Sequence[str], h3_text: str, tlp: str | None,
                      evaluation: str | None, subject: str, text: str,
                      data: dict[str, Any] | None, ttl: float | None) -> dict[str, Any]:
        if kind not in KINDS:
            raise ValueError(f"unknown kind {kind!r}; one of {', '.join(KINDS)}")
        lab = self.directory.scale.validate(Label.parse(label))
        ttl_ms = round((ttl if ttl is not None else self.spec.default_ttl_hours * 3600) * 1000)
        if ttl_ms <= 0:
            raise ValueError("ttl must be positive")
        spec = {
            "kind": kind, "to": _as_list(to), "label": lab,
            "precedence": Precedence.parse(precedence),
            "handling": HandlingCodes.parse(handling, h3_text),
            "tlp": TLP.parse(tlp) if tlp else None,
            "evaluation": Evaluation.parse(evaluation) if evaluation else None,
            "body": Body(subject[:256], text, dict(data or {})), "ttl_ms": ttl_ms}
        spec["body"].encode()  # refuse now what could never be sealed
        return spec

    def _condition(self, at: float | None, action: str, target: str, detail: str,
                   apply: Callable[[], None]) -> None:
        def fire() -> None:
            apply()
            self._record(hs.Inject(self.clock.now, action, target, detail))
        if at is None:
            fire()
        else:
            self._at(at, fire)

    def _links_changed(self, targets: frozenset[str] | None) -> None:
        for a, host in self.hosts.items():
            if targets is None or a in targets:
                host.link = self.conditions.link_of(a)
        for host in self._attackers.values():
            host.link = self.conditions.default

    # -- internals: time ------------------------------------------------------------------

    def _now_ms(self, host: _Host) -> int:
        return self.start_ms + self.clock.now_us // 1000 + host.skew_ms

    def _router_now(self) -> int:
        return self.start_ms + self.clock.now_us // 1000 + self.router_skew_ms

    def _record(self, ev: hs.Event) -> None:
        self.history.events.append(ev)

    def _t(self) -> float:
        return self.clock.now_us / 1_000_000

    # -- internals: nodes -----------------------------------------------------------------

    def _start_node(self, host: _Host) -> None:
        m = NodeMachine(host.agency, host.keys, host.held, host.store,
                        random_bytes=self.rng.randbytes)
        host.desk = install_lifecycle(m, auto_review=self.auto_review, store=host.desk_store)
        host.machine = m
        host.up = True

    def _flush(self, host: _Host) -> None:
        m = host.machine
        if m is not None and m.pending():
            for _, payload, _ in m.pop(1 << 30):
                self._up(host, payload)

    def _plan_wake(self, host: _Host) -> None:
        m = host.machine
        if m is None:
            return
        due = host.store.next_due()
        # The node's gap timers are private to the machine; the driver must know when they
        # fall due to wake the node then, without polling thousands of nodes.
        gaps: dict[bytes, int] = getattr(m, "_gap_due", {})
        if gaps:
            g = min(gaps.values())
            due = g if due is None else min(due, g)
        if due is None:
            return
        t = max((due - self.start_ms - host.skew_ms) * 1000, self.clock.now_us)
        if host.wake_at is not None and host.wake_at <= t:
            return
        host.wake_at = t
        host.wake_token += 1
        self.clock.at(t, self._wake, host, host.wake_token)

    def _rewake(self, host: _Host) -> None:
        host.wake_at = None
        host.wake_token += 1
        self._plan_wake(host)

    def _wake(self, host: _Host, token: int) -> None:
        if token != host.wake_token:
            return
        host.wake_at = None
        m = host.machine
        if m is None:
            return
        self._node_events(host, m.tick(self._now_ms(host)), "")
        self._flush(host)
        self._plan_wake(host)

    def _node_handle(self, host: _Host, frame: bytes) -> None:
        m = host.machine
        assert m is not None
        events = m.handle(m.inbox_topic, frame, self._now_ms(host))
        if events:
            self._node_events(host, events, frame)
        self._flush(host)
        self._plan_wake(host)

    def _node_events(self, host: _Host, events: list[NodeEvent], frame: bytes | str) -> None:
        t = self._t()
        me = host.agency
        rec = self.history.events.append
        for ev in events:
            k = ev.kind
            if k == "received":
                sent = self._sent_us.get(ev.msg_id)
                lat = (self.clock.now_us - sent) / 1000 if sent is not None else \
                    float(ev.latency_ms)
                m = host.machine
                rec(hs.Deliver(t, ev.msg_id, me, ev.peer, lat, PREC_NAMES[ev.precedence],
                               m.directory.serial if m else 0))
            elif k == "receipt":
                rec(hs.Receipt(t, ev.msg_id, me, ev.peer, ev.detail, ev.reason))
            elif k == "delivered":
                sent = self._sent_us.get(ev.msg_id)
                lat = (self.clock.now_us - sent) / 1000 if sent is not None else -1.0
                rec(hs.Delivered(t, ev.msg_id, me, lat, PREC_NAMES[ev.precedence]))
            elif k in ("accepted", "refused"):
                continue  # the router's own accept / refuse events say it first
            elif k == "duplicate":
                rec(hs.Duplicate(t, ev.msg_id, me, ev.peer))
            elif k == "refused-in":
                rec(hs.RefuseIn(t, ev.msg_id, me, ev.peer, ev.reason))
            elif k == "drop":
                kind = frame_info(frame)[0] if isinstance(frame, bytes) else "other"
                rec(hs.Drop(t, me, ev.reason, me, kind, ev.msg_id, ev.detail))
            elif k == "retry":
                rec(hs.Retry(t, ev.msg_id, me, ev.detail))
            elif k == "expired":
                rec(hs.Expired(t, ev.msg_id, me, ev.detail))
            elif k == "gap":
                rec(hs.Gap(t, me, ev.detail))
            elif k == "submit":
                self._record_hook_send(host, ev.msg_id)
            elif k == "notice-published":
                rid = ""
                if host.desk is not None:
                    rid = host.desk.by_notice.get(bytes.fromhex(ev.msg_id), "")
                rec(hs.NoticePublished(t, ev.msg_id, rid, ev.detail, ev.peer))
            elif k == "notice-refused":
                rec(hs.NoticeRefused(t, ev.msg_id, ev.peer, ev.reason))
            elif k == "notice-cancelled":
                rec(hs.NoticeCancelled(t, ev.msg_id, ev.peer, ev.reason, ev.detail))
            elif k in ("cancelled", "deleted", "updated"):
                rec(hs.Withdrawn(t, ev.msg_id, me, k, ev.peer))
            else:
                rec(hs.Desk(t, me, k, ev.msg_id, ev.peer, ev.reason, ev.detail))

    def _record_send(self, host: _Host, h: Header, subject: str, origin: str) -> hs.Send:
        rel_source = rel_for = ""
        rel_allowed: tuple[str, ...] = ()
        if h.release is not None:
            rel_source, rel_for, rel_allowed = _release_info(h.release)
        ev = hs.Send(self._t(), h.id_hex, h.sender, h.recipients, h.addressing, h.kind,
                     h.label.marking, h.precedence.name, tuple(h.handling.names()),
                     h.tlp.value if h.tlp else "", h.ref.hex() if h.ref else "",
                     rel_source, rel_for, rel_allowed, h.key_id.hex(),
                     (h.expires_ms - h.created_ms) / 1000, subject, origin)
        self.history.events.append(ev)
        self.messages[ev.msg_id] = ev
        self._sent_us[ev.msg_id] = self.clock.now_us
        return ev

    def _record_hook_send(self, host: _Host, msg_id: str) -> None:
        entry = host.store.outbox_get(bytes.fromhex(msg_id))
        if entry is None or not entry.raw:
            return
        self._record_send(host, Envelope.parse(entry.raw).header, entry.subject, "hook")

    def _submit(self, handle: Sent, host: _Host, header: Header, body: Body) -> None:
        m = host.machine
        assert m is not None
        try:
            m.submit(header, body, self._now_ms(host))
        except I24Error as exc:
            self._send_error(handle, exc.reason, exc.message)
            return
        handle.msg_id = header.id_hex
        self._record_send(host, header, body.subject, handle.origin)
        self._flush(host)
        self._plan_wake(host)

    def _send_error(self, handle: Sent, reason: str, detail: str) -> None:
        handle.error, handle.detail = reason, detail
        self._record(hs.SendError(self._t(), handle.sender, reason, detail))

    def _ref(self, ref: Sent | str | bytes | None) -> bytes | None:
        if ref is None or isinstance(ref, bytes):
            return ref
        if isinstance(ref, Sent):
            if ref.msg_id is None:
                raise I24Error(f"the referenced {ref.kind} from {ref.sender} was not sent "
                               f"(scheduled at {ref.at:g}s: {ref.error or 'not yet'})",
                               reason="ref.unsent")
            return bytes.fromhex(ref.msg_id)
        return bytes.fromhex(ref)

    def _live(self, handle: Sent) -> _Host | None:
        host = self.hosts[handle.sender]
        if host.machine is None:
            self._send_error(handle, "node.down", f"{handle.sender}'s node is not running")
            return None
        return host

    def _header(self, host: _Host, d: Directory, spec: dict[str, Any],
                ref: bytes | None, release: bytes | None, *, sender: str) -> Header:
        return make_header(
            d, sender=sender,
            addressing=complete_addressing(spec["kind"], list(spec["to"]), sender, d),
            kind=spec["kind"], label=spec["label"], now_ms=self._now_ms(host),
            ttl_ms=spec["ttl_ms"], random_bytes=self.rng.randbytes,
            precedence=spec["precedence"], handling=spec["handling"], tlp=spec["tlp"],
            evaluation=spec["evaluation"], ref=ref, release=release)

    def _do_send(self, handle: Sent, spec: dict[str, Any], ref: Any,
                 release: bytes | None) -> None:
        host = self._live(handle)
        if host is None:
            return
        assert host.machine is not None
        try:
            header = self._header(host, host.machine.directory, spec, self._ref(ref),
                                  release, sender=host.agency)
        except I24Error as exc:
            self._send_error(handle, exc.reason, exc.message)
            return
        self._submit(handle, host, header, spec["body"])

    def _do_forward(self, handle: Sent, of: Sent | str, to: list[str], release: bool,
                    label: str | None, handling: Sequence[str] | None,
                    precedence: str | None, subject: str | None, text: str | None) -> None:
        host = self._live(handle)
        if host is None:
            return
        assert host.machine is not None
        try:
            orig_id = self._ref(of)
            assert orig_id is not None
            item = host.store.inbox_get(orig_id)
            orig = self.messages.get(orig_id.hex())
            if item is None or orig is None:
                raise I24Error(f"{host.agency} holds no message {orig_id.hex()[:12]} to "
                               "forward", reason="forward.not-held")
            d = host.machine.directory
            codes = HandlingCodes.parse(orig.handling if handling is None else handling)
            signed_release = None
            if release:
                allowed = d.expand(to, host.agency)
                src = self.hosts[orig.sender].keys
                signed_release = Release(orig_id, orig.sender, allowed,
                                         self._now_ms(host)).sign(src)
            spec = {"kind": "message", "to": to,
                    "label": Label.parse(label or orig.label),
                    "precedence": Precedence.parse(precedence or orig.precedence),
                    "handling": codes, "tlp": TLP.parse(orig.tlp) if orig.tlp else None,
                    "evaluation": None,
                    "ttl_ms": self.spec.default_ttl_hours * 3_600_000}
            body = Body((subject or f"FWD: {item.subject}")[:256],
                        item.text if text is None else text, dict(item.data))
            header = self._header(host, d, spec, orig_id, signed_release,
                                  sender=host.agency)
        except I24Error as exc:
            self._send_error(handle, exc.reason, exc.message)
            return
        self._submit(handle, host, header, body)

    def _do_cancel_notice(self, handle: Sent, request: Sent | str, reason: str,
                          label: str | None, precedence: str) -> None:
        host = self._live(handle)
        if host is None:
            return
        assert host.machine is not None
        try:
            rid_b = self._ref(request)
            assert rid_b is not None
            rid = rid_b.hex()
            number, ref = "", rid_b
            for item in host.store.inbox.values():  # the GS's decision names the notice
                if item.kind == "notice-decision" and item.data.get("request") == rid \
                        and item.data.get("notice"):
                    number = str(item.data.get("number", ""))
                    ref = bytes.fromhex(str(item.data["notice"]))
            orig = self.messages.get(rid)
            lab = Label.parse(label or (orig.label if orig else "OFFICIAL-USE"))
            spec = {"kind": "notice-cancel-request", "to": [self.notice_authority()],
                    "label": lab, "precedence": Precedence.parse(precedence),
                    "handling": HandlingCodes.parse(orig.handling if orig else ()),
                    "tlp": None, "evaluation": None, "ttl_ms": 7 * 86_400_000}
            data = {"number": number, **({"reason": reason} if reason else {})}
            body = Body(f"Cancel notice {number or rid[:12]}", "Please cancel.", data)
            header = self._header(host, host.machine.directory, spec, ref, None,
                                  sender=host.agency)
        except I24Error as exc:
            self._send_error(handle, exc.reason, exc.message)
            return
        self._submit(handle, host, header, body)

    def _gs(self) -> _Host | None:
        for h in self.hosts.values():
            if h.desk is not None and h.machine is not None:
                return h
        return None

    def _do_review(self, request: Sent | str, approve: bool, reason: str) -> None:
        gs = self._gs()
        what = "approve" if approve else "refuse"
        if gs is None or gs.desk is None or gs.machine is None:
            self._record(hs.Desk(self._t(), "", f"{what}-error", reason="node.down",
                                 detail="the notice authority's node is not running"))
            return
        try:
            rid_b = self._ref(request)
            assert rid_b is not None
            now = self._now_ms(gs)
            events = gs.desk.approve(gs.machine, rid_b.hex(), now) if approve else \
                gs.desk.refuse(gs.machine, rid_b.hex(), now, reason)
        except I24Error as exc:
            self._record(hs.Desk(self._t(), gs.agency, f"{what}-error", reason=exc.reason,
                                 detail=exc.message))
            return
        self._node_events(gs, events, "")
        self._flush(gs)
        self._plan_wake(gs)

    def _do_order_deletion(self, diffusion: Sent | str, reason: str) -> None:
        gs = self._gs()
        if gs is None or gs.desk is None or gs.machine is None:
            self._record(hs.Desk(self._t(), "", "deletion-error", reason="node.down"))
            return
        try:
            did = self._ref(diffusion)
            assert did is not None
            events = gs.desk.order_deletion(gs.machine, did, self._now_ms(gs), reason)
        except I24Error as exc:
            self._record(hs.Desk(self._t(), gs.agency, "deletion-error", reason=exc.reason,
                                 detail=exc.message))
            return
        self._node_events(gs, events, "")
        self._flush(gs)
        self._plan_wake(gs)

    # -- internals: the attacker ----------------------------------------------------------

    def _do_compromise(self, agency: str) -> None:
        keys = self.hosts[agency].keys
        self._stolen[agency] = keys
        if agency not in self._attackers:
            att = _Host(agency, keys, self.directory, name=f"attacker:{agency}")
            att.link = self.conditions.default
            att.machine = None
            self._attackers[agency] = att
        self._record(hs.Inject(self._t(), "compromise", agency,
                               f"key {key_id(keys.verify_key).hex()} stolen"))

    def _do_forge(self, handle: Sent, spec: dict[str, Any], ref: Any) -> None:
        keys = self._stolen.get(handle.sender)
        att = self._attackers.get(handle.sender)
        if keys is None or att is None:
            self._send_error(handle, "attacker.no-key",
                             f"no key of {handle.sender} has been stolen")
            return
        d = self.directory  # the retained directory topic: anyone may read it
        try:
            header = self._header(att, d, spec, self._ref(ref), None, sender=handle.sender)
            header = replace(header, key_id=key_id(keys.verify_key))
            raw = seal(header, spec["body"], keys, recipient_keys(d, header),
                       random_bytes=self.rng.randbytes, cache=self._attacker_cache)
        except I24Error as exc:
            self._send_error(handle, exc.reason, exc.message)
            return
        handle.msg_id = header.id_hex
        self._record_send(att, header, spec["body"].subject, "attacker")
        self._up(att, raw)

    # -- internals: directory versions ----------------------------------------------------

    def _do_revoke(self, agency: str) -> None:
        try:
            nd = self.directory.revoke(agency, self._router_now())
        except I24Error as exc:
            self._record(hs.Inject(self._t(), "revoke", agency, f"failed: {exc.message}"))
            return
        self._issue(nd, "revoke", agency)

    def _do_rotate(self, agency: str) -> None:
        new = SimKeys.draw(agency, self.rng)
        nd = self.directory.rotate(agency, new.verify_key, new.encryption_public,
                                   self._router_now())
        self.hosts[agency].pending_keys.append((nd.serial, new))
        self._issue(nd, "rotate", agency)

    def _issue(self, nd: Directory, action: str, agency: str) -> None:
        d = self.keyring.publish(nd, held=self.directory)
        self.directory = d
        self.history.directories[d.serial] = d
        self.history.versions.append(hs.DirectoryVersion(
            d.serial, self._t(), f"{action} {agency}",
            tuple(a for a, r in d.agencies.items() if not r.active),
            tuple((a, r.key_version) for a, r in d.agencies.items() if r.key_version > 1)))
        self._record(hs.Inject(self._t(), action, agency, f"directory version {d.serial}"))
        self.router_dir = d
        if self.router is not None:
            self.router.set_directory(d)
            self._record(hs.DirectoryInstalled(self._t(), ROUTER, d.serial))
        if self.broker_up:
            for host in self.hosts.values():
                if host.connected:
                    self._send_directory(host)

    def _send_directory(self, host: _Host) -> None:
        t = max(self.clock.now_us + host.link.delay_us(self.rng), host.last_down)
        host.last_down = t
        self.clock.at(t, self._at_node_directory, host, self.broker_epoch)

    def _at_node_directory(self, host: _Host, epoch: int) -> None:
        if epoch != self.broker_epoch or not host.connected:
            return  # it gets the retained version when it reconnects
        self._install_node_directory(host, self.directory)

    def _install_node_directory(self, host: _Host, d: Directory) -> None:
        if d.serial <= host.held.serial:
            return
        host.held = d
        while host.pending_keys and host.pending_keys[0][0] <= d.serial:
            host.keys = host.pending_keys.pop(0)[1]
        m = host.machine
        if m is not None:
            m.set_directory(d)
            m.keys = host.keys
        self._record(hs.DirectoryInstalled(self._t(), host.agency, d.serial))

    # -- internals: faults ----------------------------------------------------------------

    def _do_partition(self, agencies: list[str] | None, cut: bool) -> None:
        targets = self._resolve(agencies) if agencies is not None else frozenset(
            a for a, h in self.hosts.items() if h.partitioned)
        names = sorted(targets)
        self._record(hs.Inject(self._t(), "partition" if cut else "heal",
                               ",".join(names) if agencies is not None else "*",
                               f"{len(names)} agencies"))
        for a in names:
            host = self.hosts[a]
            if host.partitioned == cut:
                continue
            host.partitioned = cut
            if not cut:
                self._reconnect(host)

    def _do_crash(self, who: str) -> None:
        t = self._t()
        if who == ROUTER:
            if self.router is None:
                self._record(hs.Inject(t, "crash", who, "already down"))
                return
            self._record(hs.Inject(t, "crash", who, f"{len(self._rin)} inbound and "
                                   f"{self.router.pending()} outbound frame(s) lost"))
            for _, _, _, payload in sorted(self._rin):
                self._drop(ROUTER, "router.crash", ROUTER, payload)
            self._rin = []
            self.router = None
            self.router_epoch += 1
            self._rbusy = False
        elif who == BROKER:
            if not self.broker_up:
                self._record(hs.Inject(t, "crash", who, "already down"))
                return
            queued = sum(len(h.session) for h in self.hosts.values())
            self._record(hs.Inject(t, "crash", who, f"{queued + len(self._router_session)} "
                                   "queued frame(s) lost"))
            self.broker_up = False
            self.broker_epoch += 1
            for host in self.hosts.values():
                for _, payload in host.session:
                    self._drop(BROKER, "broker.crash", host.agency, payload)
                host.session = []
            for _, payload in self._router_session:
                self._drop(BROKER, "broker.crash", ROUTER, payload)
            self._router_session = []
        else:
            host = self.hosts[who]
            if host.machine is None:
                self._record(hs.Inject(t, "crash", who, "already down"))
                return
            self._record(hs.Inject(t, "crash", who, f"{host.machine.pending()} unsent "
                                   "frame(s) lost"))
            host.machine = None
            host.desk = None
            host.up = False
            host.wake_at = None
            host.wake_token += 1

    def _do_restart(self, who: str) -> None:
        t = self._t()
        if who == ROUTER:
            if self.router is not None:
                self._record(hs.Inject(t, "restart", who, "already running"))
                return
            self._record(hs.Inject(t, "restart", who, f"{len(self._router_session)} queued "
                                   "frame(s) waiting at the broker"))
            self.router = RouterMachine(self.router_dir, self.keyring.router,
                                        self.router_store)
            queued, self._router_session = self._router_session, []
            for topic, payload in queued:
                self._router_in(topic, payload)
        elif who == BROKER:
            if self.broker_up:
                self._record(hs.Inject(t, "restart", who, "already running"))
                return
            self._record(hs.Inject(t, "restart", who, "sessions and in-flight frames lost"))
            self.broker_up = True
            self.broker_epoch += 1
            for host in self.hosts.values():
                self._reconnect(host)
        else:
            host = self.hosts[who]
            if host.machine is not None:
                self._record(hs.Inject(t, "restart", who, "already running"))
                return
            self._record(hs.Inject(t, "restart", who, f"{len(host.store.active)} outbox "
                                   f"entries pending, {len(host.session)} frame(s) queued"))
            self._start_node(host)
            self._reconnect(host)
            self._rewake(host)

    def _do_skew(self, who: str, skew_ms: int) -> None:
        self._record(hs.Inject(self._t(), "skew", who, f"{skew_ms / 1000:+g} s"))
        if who == ROUTER:
            self.router_skew_ms = skew_ms
            return
        for a in sorted(self._resolve([who])):
            host = self.hosts[a]
            host.skew_ms = skew_ms
            self._rewake(host)

    # -- internals: the wire --------------------------------------------------------------

    def _drop(self, where: str, reason: str, agency: str, payload: bytes) -> None:
        kind, mid = frame_info(payload)
        self._record(hs.Drop(self._t(), where, reason, agency, kind, mid))

    def _filters(self, payload: bytes, direction: str, dest: str | None
                 ) -> tuple[str | None, int]:
        """(name of a filter that drops the frame, or None; extra delay in us)."""
        h = peek_header(payload)
        if h is None:
            return None, 0
        extra = 0
        for f in self.conditions.filters:
            if f.matches(h, direction, dest):
                if f.drop and (f.drop >= 1.0 or self.rng.random() < f.drop):
                    return f.name, 0
                if f.delay_ms or f.jitter_ms:
                    extra += LinkParams(f.delay_ms, f.jitter_ms).delay_us(self.rng)
        return None, extra

    def _up(self, host: _Host, payload: bytes) -> None:
        """A frame from a node (or the attacker) towards the broker."""
        if not self.broker_up:
            self._drop(BROKER, "broker.down", host.agency, payload)
            return
        if host.partitioned:
            self._drop("link", "partition", host.agency, payload)
            return
        extra = 0
        if self.conditions.filters:
            dropped, extra = self._filters(payload, "up", None)
            if dropped is not None:
                self._drop("link", f"filter:{dropped}", host.agency, payload)
                return
        link = host.link
        if link.loss and self.rng.random() < link.loss:
            self._drop("link", "loss", host.agency, payload)
            return
        t = self.clock.now_us + link.delay_us(self.rng)
        if t < host.last_up:
            t = host.last_up
        host.last_up = t
        self.clock.at(t + extra, self._at_broker, host, payload, self.broker_epoch)

    def _at_broker(self, host: _Host, payload: bytes, epoch: int) -> None:
        if epoch != self.broker_epoch:
            self._drop(BROKER, "broker.crash", host.agency, payload)
            return
        if host.partitioned:
            self._drop("link", "partition", host.agency, payload)
            return
        topic = self.submit_prefix + host.agency
        rl = self.conditions.router_link
        if rl.latency_ms or rl.jitter_ms:
            self.clock.after(rl.delay_us(self.rng), self._at_router, topic, payload,
                             self.broker_epoch)
        else:
            self._router_in(topic, payload)

    def _at_router(self, topic: str, payload: bytes, epoch: int) -> None:
        if epoch != self.broker_epoch:
            self._drop(BROKER, "broker.crash", ROUTER, payload)
            return
        self._router_in(topic, payload)

    def _router_in(self, topic: str, payload: bytes) -> None:
        if self.router is None:  # the router's persistent session keeps it at the broker
            limit = self.conditions.queue_limit
            if limit is not None and len(self._router_session) >= limit:
                self._drop(BROKER, "broker.queue-full", ROUTER, payload)
                return
            self._router_session.append((topic, payload))
            return
        heapq.heappush(self._rin, (frame_priority(payload), next(self._rorder), topic,
                                   payload))
        self._router_kick()

    def _router_kick(self) -> None:
        """Give the router's single server its next job, if it is idle."""
        if self._rbusy:
            return
        cost = self.conditions.cost
        while (r := self.router) is not None:
            has_in = bool(self._rin)
            if not has_in and not r.pending():
                return
            if has_in and (self._rturn is False or not r.pending()):
                self._rturn = True
                _, _, topic, payload = heapq.heappop(self._rin)
                c = cost.envelope_ms if payload[2:6] == b"i24e" else cost.control_ms
                if c <= 0:
                    self._router_handle(topic, payload)
                    continue
                self._rbusy = True
                self.clock.after(ms_to_us(c), self._router_done_in, self.router_epoch,
                                 topic, payload)
                return
            self._rturn = False
            out = r.pop(self._router_now(), 1)
            if not out:
                continue
            topic, frame, _ = out[0]
            c = cost.stamp_ms if frame[2:6] == b"i24d" else cost.relay_ms
            if c <= 0:
                self._router_publish(topic, frame)
                continue
            self._rbusy = True
            self.clock.after(ms_to_us(c), self._router_done_out, self.router_epoch, topic,
                             frame)
            return

    def _router_done_in(self, epoch: int, topic: str, payload: bytes) -> None:
        if epoch != self.router_epoch:
            self._drop(ROUTER, "router.crash", ROUTER, payload)
            return
        self._rbusy = False
        self._router_handle(topic, payload)
        self._router_kick()

    def _router_done_out(self, epoch: int, topic: str, frame: bytes) -> None:
        if epoch != self.router_epoch:
            self._drop(ROUTER, "router.crash", ROUTER, frame)
            return
        self._rbusy = False
        self._router_publish(topic, frame)
        self._router_kick()

    def _router_handle(self, topic: str, payload: bytes) -> None:
        r = self.router
        assert r is not None
        now = self._router_now()
        if now - self._last_prune_ms >= 60_000:
            self._last_prune_ms = now
            r.store.prune(now)
        events = r.handle(topic, payload, now)
        if events:
            self._router_events(events, payload)

    def _router_events(self, events: list[RouterEvent], payload: bytes) -> None:
        t = self._t()
        rec = self.history.events.append
        serial = self.router_dir.serial
        for ev in events:
            k = ev.kind
            if k == "accept":
                rec(hs.Accept(t, ev.msg_id, ev.sender, ev.recipients,
                              PREC_NAMES[ev.precedence], serial))
            elif k == "refuse":
                rec(hs.Refuse(t, ev.msg_id, ev.sender, ev.reason, ev.recipients, ev.detail,
                              serial))
            elif k == "duplicate":
                rec(hs.RouterRetry(t, ev.msg_id, ev.sender, ev.recipients))
            elif k == "resend":
                rec(hs.Resend(t, ev.sender, ev.detail))
            elif k == "drop":
                kind, mid = frame_info(payload)
                rec(hs.Drop(t, ROUTER, ev.reason, ev.sender, kind, ev.msg_id or mid,
                            ev.detail))
            # "receipt": the sender's receipt event records it where it matters

    def _router_publish(self, topic: str, frame: bytes) -> None:
        host = self.hosts.get(topic[len(self.inbox_prefix):]) \
            if topic.startswith(self.inbox_prefix) else None
        if host is None:
            self._drop(ROUTER, "topic.unexpected", ROUTER, frame)
            return
        rl = self.conditions.router_link
        if rl.latency_ms or rl.jitter_ms:
            self.clock.after(rl.delay_us(self.rng), self._down, host, frame)
        else:
            self._down(host, frame)

    def _down(self, host: _Host, frame: bytes) -> None:
        """A frame the router published, at the broker, for ``host``'s session."""
        if not self.broker_up:
            self._drop(BROKER, "broker.down", host.agency, frame)
            return
        host.down_seq += 1
        if host.connected:
            self._send_down(host, host.down_seq, frame)
        else:
            self._queue(host, host.down_seq, frame)

    def _queue(self, host: _Host, n: int, frame: bytes) -> None:
        limit = self.conditions.queue_limit
        if limit is not None and len(host.session) >= limit:
            self._drop(BROKER, "broker.queue-full", host.agency, frame)
            return
        bisect.insort(host.session, (n, frame), key=lambda x: x[0])

    def _send_down(self, host: _Host, n: int, frame: bytes) -> None:
        extra = 0
        if self.conditions.filters:
            dropped, extra = self._filters(frame, "down", host.agency)
            if dropped is not None:
                self._drop("link", f"filter:{dropped}", host.agency, frame)
                return
        link = host.link
        if link.loss and self.rng.random() < link.loss:
            self._drop("link", "loss", host.agency, frame)
            return
        t = self.clock.now_us + link.delay_us(self.rng)
        if t < host.last_down:
            t = host.last_down
        host.last_down = t
        self.clock.at(t + extra, self._at_node, host, n, frame, self.broker_epoch)

    def _at_node(self, host: _Host, n: int, frame: bytes, epoch: int) -> None:
        if epoch != self.broker_epoch:
            self._drop(BROKER, "broker.crash", host.agency, frame)
            return
        if not host.connected:  # not acknowledged: the session keeps it (QoS 1)
            self._queue(host, n, frame)
            return
        self._node_handle(host, frame)

    def _reconnect(self, host: _Host) -> None:
        if not (host.connected and self.broker_up):
            return
        if host.held.serial < self.directory.serial:
            self._send_directory(host)
        queued, host.session = host.session, []
        for n, frame in queued:
            self._send_down(host, n, frame)


def _as_list(value: str | Iterable[str]) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


def _release_info(signed: bytes) -> tuple[str, str, tuple[str, ...]]:
    """(source, message id hex, allowed) of a release, read without verifying it."""
    try:
        outer = unpack(signed, what="release", max_size=4096, max_items=4)
        doc = unpack(outer[0], what="release", max_size=4096, max_items=256)
        return (str(doc.get("source", "")), bytes(doc.get("id", b"")).hex(),
                tuple(str(a) for a in doc.get("allowed", ())))
    except (I24Error, TypeError, IndexError, KeyError, AttributeError):
        return "", "", ()
