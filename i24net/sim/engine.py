"""The engine of a simulation: the real router and node machines on a virtual clock.

Theory of operation: ``Engine`` is the discrete-event twin of the asyncio daemons. It
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
(a node is woken when its machine's ``next_timer`` falls due, as the node daemon is),
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
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import Any

from i24net.core.directory import Directory
from i24net.core.envelope import Envelope, Header
from i24net.core.errors import I24Error
from i24net.core.events import (
    Accepted,
    Delivered,
    Dropped,
    DuplicateDelivery,
    DuplicateSubmission,
    Expired,
    FrameDropped,
    ItemChanged,
    NodeEvent,
    NoticeCancelled,
    NoticePublished,
    NoticeRefused,
    Purged,
    ReceiptIn,
    Received,
    Refused,
    RefusedIn,
    Resent,
    Retried,
    RouterEvent,
    SequenceGap,
    SubmissionAccepted,
    SubmissionDeferred,
    SubmissionRefused,
    Submitted,
)
from i24net.core.frames import frame_priority
from i24net.core.keys import AgencyKeys, PairKeyCache
from i24net.core.lifecycle import MemoryDeskStore, NoticeDesk, install_lifecycle
from i24net.core.netspec import NetworkSpec
from i24net.core.node import NodeMachine
from i24net.core.router import RouterMachine
from i24net.core.wire import unpack
from i24net.sim import history as hs
from i24net.sim.keyring import Keyring
from i24net.sim.network import Conditions, LinkParams, frame_info, peek_header
from i24net.sim.scheduler import Scheduler, ms_to_us, seconds_to_us
from i24net.sim.stores import SimNodeStore, SimRouterStore

DEFAULT_START_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z: virtual time 0
PREC_NAMES = ("FLASH", "IMMEDIATE", "PRIORITY", "ROUTINE")
ROUTER = "router"
BROKER = "broker"
_CORE_DEFAULT: Any = object()  # "use the router machine's own default"


class Host:
    """One agency's node as the driver sees it: machine, durable store, link and session."""

    __slots__ = ("agency", "desk", "desk_store", "down_seq", "held", "keys", "last_down",
                 "last_up", "link", "machine", "name", "partitioned", "pending_keys",
                 "session", "skew_ms", "store", "up", "wake_at", "wake_token")

    def __init__(self, agency: str, keys: AgencyKeys, held: Directory, *, name: str = "",
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
        self.pending_keys: list[tuple[int, AgencyKeys]] = []  # (serial, keys) after a rotation

    @property
    def connected(self) -> bool:
        return self.up and not self.partitioned


class Engine:
    """The hosts, the router, the broker and the wire between them, in virtual time.

    ``Simulation`` adds the scripting API on top; everything here is driven by it.
    """

    def __init__(self, spec: NetworkSpec, *, seed: int = 0, start_ms: int = DEFAULT_START_MS,
                 auto_review: bool = True, keep_bodies: bool = True,
                 rate_limit: Any = _CORE_DEFAULT) -> None:
        self.spec = spec
        # the router's per-sender token bucket: the core's default unless given (None: off)
        self._router_kw = {} if rate_limit is _CORE_DEFAULT else {"rate_limit": rate_limit}
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
        self.conditions = Conditions(self._resolve, self._links_changed, self._condition)
        self.inbox_prefix = f"{d.prefix}/inbox/"
        self.submit_prefix = f"{d.prefix}/submit/"
        # router
        self.router_store = SimRouterStore()
        self.router_dir = d
        self._router_serial = d.serial  # the version the running router installed
        self.router: RouterMachine | None = RouterMachine(d, self.keyring.router,
                                                          self.router_store, **self._router_kw)
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
        self.hosts: dict[str, Host] = {}
        for a in spec.agencies:
            host = Host(a.id, self.keyring.agencies[a.id], d, keep_bodies=keep_bodies)
            host.link = self.conditions.link_of(a.id)
            self.hosts[a.id] = host
            self._start_node(host)
        self._attackers: dict[str, Host] = {}
        self._stolen: dict[str, AgencyKeys] = {}
        self._attacker_cache = PairKeyCache()
        # An eavesdropper's recording of the traffic to and from agencies whose keys a
        # compromise will steal (only those: a long run records nothing it need not).
        self._watched: set[str] = set()
        self._planned_caveats: set[str] = set()  # of the joint operations scheduled so far
        self._captured: dict[str, bytes] = {}
        self._sent_us: dict[str, int] = {}
        self.messages: dict[str, hs.Send] = {}  # msg id -> its send event

    @property
    def now(self) -> float:
        """Virtual seconds since the start."""
        return self.clock.now

    # -- scheduling and lookups ------------------------------------------------------------

    def _at(self, at: float, fn: Callable[..., Any], *args: Any) -> None:
        t = seconds_to_us(at)
        if at < 0 or t < self.clock.now_us:
            raise ValueError(f"at={at} is in the past (virtual time is {self.now:g}s)")
        self.clock.at(t, fn, *args)

    def _host(self, agency: str) -> Host:
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
        for item in as_list(who):
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

    # -- clocks and the record -------------------------------------------------------------

    def _now_ms(self, host: Host) -> int:
        return self.start_ms + self.clock.now_us // 1000 + host.skew_ms

    def _router_now(self) -> int:
        return self.start_ms + self.clock.now_us // 1000 + self.router_skew_ms

    def _record(self, ev: hs.Event) -> None:
        self.history.events.append(ev)

    def _t(self) -> float:
        return self.clock.now_us / 1_000_000

    # -- nodes -----------------------------------------------------------------------------

    def _start_node(self, host: Host) -> None:
        # the sending key lives in memory only: a node (re)started draws a fresh one
        m = NodeMachine(host.agency, replace(host.keys, sending_secret=None), host.held,
                        host.store, random_bytes=self.rng.randbytes)
        m.set_retention(self.spec.retention)
        host.desk = install_lifecycle(m, auto_review=self.auto_review, store=host.desk_store)
        host.machine = m
        host.up = True

    def _flush(self, host: Host) -> None:
        m = host.machine
        if m is not None and m.pending():
            for _, payload, _ in m.pop(1 << 30):
                self._up(host, payload)

    def _plan_wake(self, host: Host) -> None:
        m = host.machine
        if m is None:
            return
        # The machine says when it next has work; the driver wakes the node then, without
        # polling thousands of nodes.
        due = m.next_timer()
        if due is None:
            return
        t = max((due - self.start_ms - host.skew_ms) * 1000, self.clock.now_us)
        if host.wake_at is not None and host.wake_at <= t:
            return
        host.wake_at = t
        host.wake_token += 1
        self.clock.at(t, self._wake, host, host.wake_token)

    def _rewake(self, host: Host) -> None:
        host.wake_at = None
        host.wake_token += 1
        self._plan_wake(host)

    def _wake(self, host: Host, token: int) -> None:
        if token != host.wake_token:
            return
        host.wake_at = None
        m = host.machine
        if m is None:
            return
        self._node_events(host, m.handle_timer(self._now_ms(host)), "")
        self._flush(host)
        self._plan_wake(host)

    def _node_handle(self, host: Host, frame: bytes) -> None:
        m = host.machine
        assert m is not None
        events = m.handle(m.inbox_topic, frame, self._now_ms(host))
        if events:
            self._node_events(host, events, frame)
        self._flush(host)
        self._plan_wake(host)

    def _node_events(self, host: Host, events: list[NodeEvent], frame: bytes | str) -> None:
        t = self._t()
        me = host.agency
        rec = self.history.events.append
        for ev in events:
            match ev:
                case Received():
                    sent = self._sent_us.get(ev.msg_id)
                    lat = (self.clock.now_us - sent) / 1000 if sent is not None else \
                        float(ev.latency_ms)
                    m = host.machine
                    rec(hs.Deliver(t, ev.msg_id, me, ev.peer, lat, PREC_NAMES[ev.precedence],
                                   m.directory.serial if m else 0))
                case ReceiptIn():
                    rec(hs.Receipt(t, ev.msg_id, me, ev.peer, ev.detail, ev.reason))
                case Delivered():
                    sent = self._sent_us.get(ev.msg_id)
                    lat = (self.clock.now_us - sent) / 1000 if sent is not None else -1.0
                    rec(hs.Delivered(t, ev.msg_id, me, lat, PREC_NAMES[ev.precedence]))
                case SubmissionAccepted() | SubmissionRefused() | SubmissionDeferred():
                    pass  # the router's own accept / refuse events say it first
                case DuplicateDelivery():
                    rec(hs.Duplicate(t, ev.msg_id, me, ev.peer))
                case RefusedIn():
                    rec(hs.RefuseIn(t, ev.msg_id, me, ev.peer, ev.reason))
                case Dropped():
                    kind = frame_info(frame)[0] if isinstance(frame, bytes) else "other"
                    rec(hs.Drop(t, me, ev.reason, me, kind, ev.msg_id, ev.detail))
                case Retried():
                    rec(hs.Retry(t, ev.msg_id, me, ev.detail))
                case Expired():
                    rec(hs.Expired(t, ev.msg_id, me, ev.detail))
                case SequenceGap():
                    rec(hs.Gap(t, me, ev.detail, ev.reason))
                case Submitted():
                    self._record_hook_send(host, ev.msg_id)
                case NoticePublished():
                    rid = ""
                    if host.desk is not None:
                        rid = host.desk.by_notice.get(bytes.fromhex(ev.msg_id), "")
                    rec(hs.NoticePublished(t, ev.msg_id, rid, ev.detail, ev.peer))
                case NoticeRefused():
                    rec(hs.NoticeRefused(t, ev.msg_id, ev.peer, ev.reason))
                case NoticeCancelled():
                    rec(hs.NoticeCancelled(t, ev.msg_id, ev.peer, ev.reason, ev.detail))
                case ItemChanged():
                    rec(hs.Withdrawn(t, ev.msg_id, me, ev.state, ev.peer))
                case Purged():
                    rec(hs.Purged(t, ev.msg_id, me, ev.detail))
                case _:  # the desk's other events, key changes, violations: under their name
                    rec(hs.Desk(t, me, ev.kind, ev.msg_id, ev.peer, ev.reason, ev.detail))

    def _record_send(self, host: Host, h: Header, subject: str, origin: str) -> hs.Send:
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

    def _record_hook_send(self, host: Host, msg_id: str) -> None:
        entry = host.store.outbox_get(bytes.fromhex(msg_id))
        if entry is None or not entry.raw:
            return
        self._record_send(host, Envelope.parse(entry.raw).header, entry.subject, "hook")

    # -- directory versions ----------------------------------------------------------------

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
            self._router_serial = d.serial
            self._record(hs.DirectoryInstalled(self._t(), ROUTER, d.serial))
        if self.broker_up:
            for host in self.hosts.values():
                if host.connected:
                    self._send_directory(host)

    def _send_directory(self, host: Host) -> None:
        t = max(self.clock.now_us + host.link.delay_us(self.rng), host.last_down)
        host.last_down = t
        self.clock.at(t, self._at_node_directory, host, self.broker_epoch)

    def _at_node_directory(self, host: Host, epoch: int) -> None:
        if epoch != self.broker_epoch or not host.connected:
            return  # it gets the retained version when it reconnects
        self._install_node_directory(host, self.directory)

    def _install_node_directory(self, host: Host, d: Directory) -> None:
        if d.serial <= host.held.serial:
            return
        host.held = d
        while host.pending_keys and host.pending_keys[0][0] <= d.serial:
            host.keys = host.pending_keys.pop(0)[1]
        m = host.machine
        if m is not None:
            m.set_directory(d)
            m.set_keys(host.keys)  # keeps the sending key the node uses now
        self._record(hs.DirectoryInstalled(self._t(), host.agency, d.serial))

    # -- faults ----------------------------------------------------------------------------

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
                                        self.router_store, **self._router_kw)
            if self.router_dir.serial != self._router_serial:  # issued while it was down
                self._router_serial = self.router_dir.serial
                self._record(hs.DirectoryInstalled(t, ROUTER, self._router_serial))
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

    # -- the wire: links and the broker ----------------------------------------------------

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

    def _up(self, host: Host, payload: bytes) -> None:
        """A frame from a node (or the attacker) towards the broker."""
        if not self.broker_up:
            self._drop(BROKER, "broker.down", host.agency, payload)
            return
        if host.partitioned:
            self._drop("link", "partition", host.agency, payload)
            return
        t = self._over_link(host, payload, "up", None)
        if t is not None:
            self.clock.at(t, self._at_broker, host, payload, self.broker_epoch)

    def _over_link(self, host: Host, frame: bytes, way: str, dest: str | None) -> int | None:
        """When ``frame`` comes out of ``host``'s link going ``way`` ("up" to the broker,
        "down" to the node), or None when a filter or the link's loss drops it. Frames keep
        their order on each direction of a link."""
        extra = 0
        if self.conditions.filters:
            dropped, extra = self._filters(frame, way, dest)
            if dropped is not None:
                self._drop("link", f"filter:{dropped}", host.agency, frame)
                return None
        link = host.link
        if link.loss and self.rng.random() < link.loss:
            self._drop("link", "loss", host.agency, frame)
            return None
        t = self.clock.now_us + link.delay_us(self.rng)
        last = host.last_up if way == "up" else host.last_down
        t = max(t, last)
        if way == "up":
            host.last_up = t
        else:
            host.last_down = t
        return t + extra

    def _at_broker(self, host: Host, payload: bytes, epoch: int) -> None:
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

    # -- the router: one server, two queues ------------------------------------------------

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
        serial = self._router_serial
        for ev in events:
            match ev:
                case Accepted():
                    rec(hs.Accept(t, ev.msg_id, ev.sender, ev.recipients,
                                  PREC_NAMES[ev.precedence], serial))
                case Refused():
                    rec(hs.Refuse(t, ev.msg_id, ev.sender, ev.reason, ev.recipients, ev.detail,
                                  serial))
                case DuplicateSubmission():
                    rec(hs.RouterRetry(t, ev.msg_id, ev.sender, ev.recipients))
                case Resent():
                    rec(hs.Resend(t, ev.sender, ev.detail))
                case FrameDropped():
                    kind, mid = frame_info(payload)
                    rec(hs.Drop(t, ROUTER, ev.reason, ev.sender, kind, ev.msg_id or mid,
                                ev.detail))
                # a forwarded receipt: the sender's receipt event records it where it matters

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

    # -- the wire: down to the nodes -------------------------------------------------------

    def _down(self, host: Host, frame: bytes) -> None:
        """A frame the router published, at the broker, for ``host``'s session."""
        if not self.broker_up:
            self._drop(BROKER, "broker.down", host.agency, frame)
            return
        host.down_seq += 1
        if host.connected:
            self._send_down(host, host.down_seq, frame)
        else:
            self._queue(host, host.down_seq, frame)

    def _queue(self, host: Host, n: int, frame: bytes) -> None:
        limit = self.conditions.queue_limit
        if limit is not None and len(host.session) >= limit:
            self._drop(BROKER, "broker.queue-full", host.agency, frame)
            return
        bisect.insort(host.session, (n, frame), key=lambda x: x[0])

    def _send_down(self, host: Host, n: int, frame: bytes) -> None:
        t = self._over_link(host, frame, "down", host.agency)
        if t is not None:
            self.clock.at(t, self._at_node, host, n, frame, self.broker_epoch)

    def _at_node(self, host: Host, n: int, frame: bytes, epoch: int) -> None:
        if epoch != self.broker_epoch:
            self._drop(BROKER, "broker.crash", host.agency, frame)
            return
        if not host.connected:  # not acknowledged: the session keeps it (QoS 1)
            self._queue(host, n, frame)
            return
        self._node_handle(host, frame)

    def _reconnect(self, host: Host) -> None:
        if not (host.connected and self.broker_up):
            return
        if host.held.serial < self.directory.serial:
            self._send_directory(host)
        queued, host.session = host.session, []
        for n, frame in queued:
            self._send_down(host, n, frame)


def as_list(value: str | Iterable[str]) -> list[str]:
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
