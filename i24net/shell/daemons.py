"""The asyncio shells around the router and node machines.

Theory of operation: each daemon is an async context manager that runs three named tasks
in a ``TaskGroup`` over one ``Transport``:

- ``recv``: moves broker deliveries into a priority queue (precedence read from the frame),
  so a FLASH message that arrives behind a flood is handled first;
- ``work``: hands each frame to the machine (all decisions happen there), then writes what
  it reports to the log, the audit chain and the counters;
- ``send``: pops the machine's outbound queue, highest precedence first, into at most
  ``window`` concurrent publishes, so the backlog stays in the machine's priority queue
  and not in the transport's FIFO.

A fourth task, ``timers``, calls the machine's ``handle_timer`` when its ``next_timer``
comes, and only then (node: retries, gap requests, expiry, key maintenance, and pick-up of
messages that ``i24net publish`` wrote straight into the node's store; router: the
summaries of drop windows that have closed). A frame that brings the timer forward, or
``wake`` saying the outbox changed, wakes it early; it never polls.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, Protocol, Self

from i24net.core.audit import AuditChain
from i24net.core.directory import Directory
from i24net.core.errors import I24Error
from i24net.core.events import (
    DirectoryAdopted,
    DirectoryInstalled,
    Dropped,
    Expired,
    FrameDropped,
    KeyChanged,
    NodeEvent,
    Refused,
    RefusedIn,
    Retried,
    RouterEvent,
    SequenceGap,
    SubmissionRefused,
    Violation,
)
from i24net.core.frames import frame_priority
from i24net.core.keys import AgencyKeys
from i24net.core.node import NodeMachine
from i24net.core.router import RouterMachine
from i24net.store.sqlite import SqliteStore
from i24net.transport.base import Delivery, Transport

Clock = Callable[[], int]
AUDIT_BUFFER_BYTES = 64 * 1024  # then the audit lines are written without waiting for idle
MIN_TICK_GAP_S = 0.005  # between back-to-back timer runs when more work is due at once
# Group commit: frames handled, or popped to be sent, under one store commit, at most this
# many, and handling stops taking more after BATCH_S so that a FLASH frame arriving
# meanwhile waits no longer than that.
BATCH_FRAMES = 64
BATCH_S = 0.002
# A store sync that took less than this runs on the event loop the next time (SyncGate).
INLINE_SYNC_S = 0.0005


class SyncGate:
    """Durability for a daemon's store (``SqliteStore.sync``, an fsync of its WAL):
    ``await durable()`` returns once every commit made before the call is on the disk.

    Where the sync runs depends on the load and on how long the last sync took. An idle
    daemon (``busy()`` false) on a disk that answered within ``INLINE_SYNC_S`` syncs on the
    event loop: a thread's round trip costs more time than such a sync (about 120 us against
    45 us, measured on an SSD), and an idle message waits for every one. A busy daemon syncs
    on a thread, so the loop goes on reading the broker meanwhile (where a FLASH frame may be
    waiting) and calls that arrive while a sync runs share the next one: under load one sync
    covers many batches. A slow disk is synced on a thread too, so the loop never waits on
    it for more than the one sync that showed it. A memory store needs nothing (``store``
    None)."""

    def __init__(self, store: SqliteStore | None,
                 busy: Callable[[], bool] = lambda: False,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        self.store = store
        self.busy = busy
        self.clock = clock  # times each sync (seconds)
        self.requested = 0  # tickets handed out
        self.done = 0  # every ticket up to this one is durable
        self.syncs = 0
        self.inline_syncs = 0
        self.last_sync_s = 0.0
        self._synced_changes = -1  # the store's change count the last sync started at
        self._running: asyncio.Future[None] | None = None

    async def durable(self) -> None:
        if self.store is None:
            return
        idle = self._running is None or self._running.done()
        if self.store.changes == self._synced_changes and idle:
            return  # nothing written since the last sync, which has finished
        if idle and self.last_sync_s < INLINE_SYNC_S and not self.busy():
            self._synced_changes = self.store.changes
            self.last_sync_s = self._timed_sync()
            self.syncs += 1
            self.inline_syncs += 1
            self.requested += 1
            self.done = self.requested
            return
        self.requested += 1
        ticket = self.requested
        while self.done < ticket:
            if self._running is None or self._running.done():
                self._running = asyncio.ensure_future(self._sync(self.requested))
            await asyncio.shield(self._running)

    def _timed_sync(self) -> float:
        assert self.store is not None
        started = self.clock()
        self.store.sync()
        return self.clock() - started

    async def _sync(self, upto: int) -> None:
        self._synced_changes = self.store.changes if self.store is not None else -1
        self.last_sync_s = await asyncio.get_running_loop().run_in_executor(
            None, self._timed_sync)
        self.syncs += 1
        self.done = max(self.done, upto)


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


class AuditLog:
    """An audit chain persisted as JSON lines; resumes after a restart."""

    def __init__(self, path: Path, actor: str) -> None:
        self.path = path
        self.actor = actor
        path.parent.mkdir(parents=True, exist_ok=True)
        self.chain = AuditChain()
        if path.exists():
            self.chain = self._resume(path)
        self._fh = path.open("ab", buffering=0)
        self._pending: list[bytes] = []
        self._pending_bytes = 0

    @staticmethod
    def _resume(path: Path) -> AuditChain:
        """Continue the chain after its last entry.

        Only a final line without its newline (torn by a crash mid-write, never acknowledged)
        is cut off. Any other line that does not parse means the file was altered: refuse to
        start rather than erase the evidence (``i24net audit verify`` says where).
        """
        data = path.read_bytes()
        if data and not data.endswith(b"\n"):
            data = data[: data.rfind(b"\n") + 1]
            with path.open("r+b") as fh:
                fh.truncate(len(data))
        lines = [line for line in data.splitlines() if line.strip()]
        last = lines[-1] if lines else None
        return AuditChain.resume(last) if last else AuditChain()

    def append(self, at_ms: int, event: str, msg_id: str = "", reason: str = "",
               details: dict[str, Any] | None = None) -> None:
        entry = self.chain.append(at_ms=at_ms, actor=self.actor, event=event, msg_id=msg_id,
                                  reason=reason, details=details or {})
        line = self.chain.encode_line(entry) + b"\n"
        self._pending.append(line)
        self._pending_bytes += len(line)
        if self._pending_bytes >= AUDIT_BUFFER_BYTES:
            self.flush()

    def flush(self) -> None:
        """Write the buffered lines (whole lines, in one write)."""
        if self._pending:
            data = b"".join(self._pending)
            self._pending.clear()
            self._pending_bytes = 0
            view = memoryview(data)
            while view:
                view = view[self._fh.write(view):]

    def close(self) -> None:
        self.flush()
        self._fh.close()

    def abandon(self) -> None:
        """Close without writing what is buffered, as a crash would (``stop --kill``)."""
        self._pending.clear()
        self._pending_bytes = 0
        self._fh.close()


class Timed(Protocol):
    """What the shells need of a machine's timers (both machines have them)."""

    @property
    def store(self) -> Any: ...
    def next_timer(self) -> int | None: ...
    def handle_timer(self, now_ms: int) -> Sequence[Any]: ...
    def pending(self) -> int: ...


class _Shell:
    """What the router and node daemons share: the queues and the four loops.

    ``tick_s``: after an error in ``handle_timer`` (a broken store), the wait before the
    timers run again, so that the loop does not spin.
    """

    name = "daemon"
    machine: Timed
    audit: AuditLog | None = None

    def __init__(self, transport: Transport, *, clock: Clock = wall_ms,
                 logger: logging.Logger | None = None, window: int = 64,
                 on_event: Callable[[Any], None] | None = None, tick_s: float = 1.0) -> None:
        self.transport = transport
        self.clock = clock
        self.log = logger or logging.getLogger(f"i24net.{self.name}")
        # the publish window: at most ``window`` publishes in flight (aiomqtt's QoS 1)
        self.free_slots = window
        self._slot_freed = asyncio.Event()
        self.inbound: asyncio.PriorityQueue[tuple[int, int, Delivery]] = \
            asyncio.PriorityQueue()
        self._order = itertools.count()
        self._wake = asyncio.Event()
        self._tasks: asyncio.TaskGroup | None = None
        self._runner: asyncio.Task[None] | None = None
        self.on_event = on_event
        self.ready = asyncio.Event()
        self.publish_errors = 0
        self._closed = False
        self.tick_s = tick_s
        self._timer_wake = asyncio.Event()
        self._sleeping_until: int | None = None
        # Measurement hook (the benchmark's per-stage trace): called with ("handle" |
        # "handled" | "popped" | "publish" | "published", frame) around each step of a frame's way
        # through the daemon. None costs one attribute check per step.
        self.observer: Callable[[str, bytes], None] | None = None
        self._gate: SyncGate | None = None
        self._last_batch = 0  # frames in the last batch handled (_busy)
        # Set by whoever keeps a copy of the store's state elsewhere (a router shard's
        # delivery counters on the cluster): awaited after each sync, before anything the
        # batch decided is told or sent. Raising stops the daemon, which sends nothing.
        self.replicate: Callable[[], Awaitable[None]] | None = None

    # -- machine hooks (overridden) -------------------------------------------------------
    def _handle(self, topic: str, payload: bytes, now: int) -> list[Any]:
        raise NotImplementedError

    def _pop(self, now: int, limit: int) -> list[tuple[str, bytes, int]]:
        raise NotImplementedError

    def _record(self, event: Any, now: int) -> None:
        raise NotImplementedError

    def _subscriptions(self) -> list[str]:
        raise NotImplementedError

    # -- loops ----------------------------------------------------------------------------
    directory_topic: str | None = None  # set when the daemon follows the signed directory

    async def _recv(self) -> None:
        async for d in self.transport.deliveries():
            # A new directory goes first: a revocation applies to whatever is queued behind.
            prio = -1 if d.topic == self.directory_topic else frame_priority(d.payload)
            self.inbound.put_nowait((prio, next(self._order), d))

    def _commit(self) -> contextlib.AbstractContextManager[None]:
        """One store commit around a batch (``SqliteStore.batch``); a memory store needs
        none. A commit that fails raises out of the loop: the daemon stops rather than
        send what it could not make durable, and its restart resumes from the store."""
        store = self.machine.store
        return store.batch() if isinstance(store, SqliteStore) else contextlib.nullcontext()

    async def _durable(self) -> None:
        """Every commit so far is on the disk when this returns (``SyncGate``)."""
        if self._gate is None:
            store = self.machine.store
            self._gate = SyncGate(store if isinstance(store, SqliteStore) else None,
                                  busy=self._busy)
        await self._gate.durable()
        if self.replicate is not None:
            await self.replicate()

    def _busy(self) -> bool:
        """More than one frame in the last batch, or more waiting: the daemon is under load."""
        return self._last_batch > 1 or not self.inbound.empty()

    async def _work(self) -> None:
        while True:
            first = await self.inbound.get()
            now = self.clock()
            events: list[Any] = []
            started = time.monotonic()
            with self._commit():
                d: Delivery | None = first[2]
                handled = 0
                while d is not None:
                    events += self._handle_one(d, now)
                    handled += 1
                    d = None
                    if handled < BATCH_FRAMES and not self.inbound.empty() \
                            and time.monotonic() - started < BATCH_S:
                        d = self.inbound.get_nowait()[2]
            self._last_batch = handled
            # durable (committed and synced; frames keep arriving meanwhile): only now is
            # anything the batch decided told (events) or sent (_wake)
            await self._durable()
            for ev in events:
                self._record(ev, now)
            self._wake.set()
            self._after_frames()
            if self.inbound.empty():
                self._idle()
            # Yield after every batch: a FLASH frame that arrives during a long run of
            # batches joins the precedence queue (and goes first), and sends flow.
            await asyncio.sleep(0)

    def _handle_one(self, d: Delivery, now: int) -> list[Any]:
        seen = self.observer
        if seen is not None:
            seen("handle", d.payload)
        try:
            events = self._handle(d.topic, d.payload, now)
        except Exception:  # a bug must not stop the daemon or lose other messages
            self.log.exception("internal error handling a frame on %s", d.topic)
            return []
        if seen is not None:
            seen("handled", d.payload)
        return events

    async def _send(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while True:
                while self.free_slots == 0:
                    self._slot_freed.clear()
                    await self._slot_freed.wait()
                # as many as there are free slots (what is not popped stays in the machine's
                # precedence queue, where a later FLASH frame still goes first)
                with self._commit():  # a router stamps and logs at pop time: one commit
                    out = self._pop(self.clock(), min(self.free_slots, BATCH_FRAMES))
                if not out:
                    break
                self.free_slots -= len(out)
                await self._durable()  # what they acknowledge is on the disk first
                for topic, payload, _ in out:  # committed: now they may leave
                    if self.observer is not None:
                        self.observer("popped", payload)
                    asyncio.get_running_loop().create_task(self._publish(topic, payload),
                                                           name=f"{self.name}-publish")

    async def _publish(self, topic: str, payload: bytes) -> None:
        try:
            if self.observer is not None:
                self.observer("publish", payload)
            await self.transport.publish(topic, payload)
            if self.observer is not None:
                self.observer("published", payload)
        except I24Error as exc:
            self.publish_errors += 1
            self.log.warning("publish to %s failed (%s); end-to-end retry will repair it",
                             topic, exc.reason)
        finally:
            self.free_slots += 1
            self._slot_freed.set()

    def _after_frames(self) -> None:
        # A frame can bring the machine's next timer forward (a gap to ask about, a report
        # that frees the send window, a drop window opened): wake the timers if they sleep
        # past it.
        due = self.machine.next_timer()
        if due is not None and (self._sleeping_until is None or due < self._sleeping_until):
            self._timer_wake.set()

    async def _timers(self) -> None:
        """Run the machine's timers when they are due, and not otherwise: the time comes
        from the machine (``next_timer``), and a frame or ``wake`` that brings it forward
        wakes the loop early. An idle daemon does no work at all."""
        while True:
            due = self.machine.next_timer()
            now = self.clock()
            if due is None or due > now:
                self._sleeping_until = due
                timeout = None if due is None else (due - now) / 1000
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(timeout):
                        await self._timer_wake.wait()
                self._sleeping_until = None
            self._timer_wake.clear()
            now = self.clock()
            try:
                with self._commit():
                    events = self.machine.handle_timer(now)
            except Exception:
                self.log.exception("internal error in a timer")
                await asyncio.sleep(self.tick_s)  # do not spin on a broken store
                continue
            await self._durable()
            for ev in events:
                self._record(ev, now)
            if self.machine.pending():
                self._wake.set()
            self._idle()
            due = self.machine.next_timer()
            if due is not None and due <= self.clock():
                await asyncio.sleep(MIN_TICK_GAP_S)  # more due at once: let frames flow

    def _idle(self) -> None:
        """The inbound queue ran dry: make what was decided visible (audit lines)."""
        audit = getattr(self, "audit", None)
        if audit is not None:
            audit.flush()

    def kick(self) -> None:
        """Tell the send loop there is something new in the machine's queue."""
        self._wake.set()

    async def _extra_tasks(self, tg: asyncio.TaskGroup) -> None:
        pass

    async def run(self) -> None:
        """Subscribe and run the loops until cancelled."""
        await self.transport.subscribe(*self._subscriptions())
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._recv(), name=f"{self.name}-recv")
            tg.create_task(self._work(), name=f"{self.name}-work")
            tg.create_task(self._send(), name=f"{self.name}-send")
            tg.create_task(self._timers(), name=f"{self.name}-timers")
            await self._extra_tasks(tg)
            self.ready.set()
            self._wake.set()

    async def __aenter__(self) -> Self:
        self._runner = asyncio.get_running_loop().create_task(self.run(), name=self.name)
        ready = asyncio.ensure_future(self.ready.wait())
        done, _ = await asyncio.wait({ready, self._runner}, return_when=asyncio.FIRST_COMPLETED)
        if self._runner in done:
            ready.cancel()
            self._runner.result()  # raises what stopped it
        return self

    @property
    def running(self) -> bool:
        """True while the daemon entered with ``async with`` runs (nothing stopped it)."""
        return self._runner is not None and not self._runner.done()

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._runner
        self._close()

    async def abort(self) -> None:
        """Stop as a crash would: the broker connection dropped without DISCONNECT (if the
        transport can), the loops cancelled, buffered audit lines discarded. What the store
        committed stays; the next start resumes from it."""
        drop = getattr(self.transport, "abort", None)
        if drop is not None:
            await drop()
        if self._runner is not None:
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._runner
        self._close(flush=False)

    def _closing_events(self, now: int) -> Sequence[Any]:
        """Events to record before a clean close shuts the audit log (overridden)."""
        return ()

    def _close(self, *, flush: bool = True) -> None:
        """Close once: the audit log written out (``flush``) or its buffer dropped as a
        crash would, then the machine's store."""
        if self._closed:
            return
        self._closed = True
        if self.audit and flush:
            now = self.clock()
            for ev in self._closing_events(now):
                self._record(ev, now)
            self.audit.close()
        elif self.audit:
            self.audit.abandon()
        close = getattr(self.machine.store, "close", None)
        if close is not None:
            close()

    async def serve_forever(self) -> None:
        assert self._runner is not None
        await self._runner


class RouterDaemon(_Shell):
    name = "router"
    machine: RouterMachine

    def __init__(self, machine: RouterMachine, transport: Transport, *,
                 audit: AuditLog | None = None, prune_every_s: float = 60.0,
                 directory_anchor: bytes | None = None, **kw: Any) -> None:
        super().__init__(transport, **kw)
        self.machine = machine
        self.audit = audit
        self._subscribed: set[str] = set()
        self._background: set[asyncio.Task[None]] = set()
        self.prune_every_s = prune_every_s
        self.anchor = directory_anchor
        if directory_anchor is not None:
            self.directory_topic = f"{machine.prefix}/directory"
        #: links to the broker lost since the start.
        self.link_losses = 0
        self._link_up: bool | None = None
        self._link_since = time.time()
        listen = getattr(transport, "add_link_listener", None)
        if listen is not None:
            listen(self._on_link)

    def _on_link(self, up: bool) -> None:
        """The transport's link came up or went: a router without its link receives no
        submission, so a loss is an error in the log, whatever caused it (the transport
        says when it looks like a takeover of the client id)."""
        was, self._link_up = self._link_up, up
        now = time.time()
        if not up and was:
            self.link_losses += 1
            self.log.error("router %s lost its broker link: no submission reaches it until "
                           "it reconnects", getattr(self.transport, "name", ""))
        elif up and was is False:
            self.log.warning("router %s is connected to the broker again after %.1f s",
                             getattr(self.transport, "name", ""), now - self._link_since)
        self._link_since = now

    def link_state(self) -> dict[str, Any]:
        """What ``i24net status`` shows for this shard: ``connected`` (a link to the broker
        is up), ``subscribed`` (the broker granted every filter the shard needs),
        ``since`` (when that last changed), and the links lost and suspected takeovers."""
        connected = bool(getattr(self.transport, "is_connected", True)) and self.ready.is_set()
        granted = getattr(self.transport, "granted_filters", None)
        subscribed = connected and (granted is None or self._subscribed <= set(granted))
        return {"connected": connected, "subscribed": subscribed,
                "since": round(self._link_since, 3), "link_losses": self.link_losses,
                "suspected_takeovers": int(getattr(self.transport, "suspected_takeovers", 0)),
                "client": str(getattr(self.transport, "name", ""))}

    def _subscriptions(self) -> list[str]:
        """The shard's submit topics (``submit/+`` for a single router), its route topic
        and the directory."""
        subs = [*self.machine.submit_filters(), self.machine.route_topic]
        if self.directory_topic is not None:
            subs.append(self.directory_topic)
        self._subscribed = set(subs)
        return subs

    def _follow_agencies(self) -> None:
        """After a new directory: subscribe to the submit topics of new agencies of this
        shard (with one router, ``submit/+`` already covers them)."""
        new = [f for f in self.machine.submit_filters() if f not in self._subscribed]
        if not new:
            return
        self._subscribed.update(new)

        async def subscribe() -> None:
            try:
                await self.transport.subscribe(*new)
            except I24Error as exc:
                self.log.error("could not subscribe to %d new submit topic(s): %s",
                               len(new), exc)

        task = asyncio.get_running_loop().create_task(subscribe(), name="router-subscribe")
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _handle(self, topic: str, payload: bytes, now: int) -> list[RouterEvent]:
        if topic == self.directory_topic:
            return self.handle_directory(payload)
        return self.machine.handle(topic, payload, now)

    def handle_directory(self, payload: bytes) -> list[RouterEvent]:
        """Adopt a newer signed directory (retained on its topic): a revocation or a key
        rotation applies to the next message without restarting the router."""
        from i24net.core.directory import load

        held = self.machine.directory
        try:
            d = load(payload, self.anchor or b"", held=held)
            if d.serial == held.serial:
                return []  # the version already held (the retained copy, seen on connect)
            self.machine.set_directory(d)
        except I24Error as exc:
            return [FrameDropped(reason=exc.reason, detail=f"directory: {exc.message}")]
        self._follow_agencies()
        return [DirectoryAdopted(reason="ok", detail=f"version {held.serial} -> {d.serial}")]

    def _pop(self, now: int, limit: int) -> list[tuple[str, bytes, int]]:
        return self.machine.pop(now, limit)

    def _record(self, ev: RouterEvent, now: int) -> None:
        match ev:
            case DirectoryAdopted():
                self.log.info("adopted directory %s", ev.detail)
            case Refused() | FrameDropped():
                self.log.info("%s %s from %s: %s %s", ev.kind, ev.msg_id[:12], ev.sender,
                              ev.reason, ev.detail)
            case _:
                self.log.debug("%s %s from %s to %s", ev.kind, ev.msg_id[:12], ev.sender,
                               ",".join(ev.recipients[:5]))
        if self.audit is not None:
            self.audit.append(now, ev.kind, ev.msg_id, ev.reason, ev.audit_details())
        if self.on_event:
            self.on_event(ev)

    async def _prune(self) -> None:
        while True:
            await asyncio.sleep(self.prune_every_s)
            n = self.machine.store.prune(self.clock())
            if self.audit:
                self.audit.flush()
            if n:
                self.log.info("pruned %d expired message(s)", n)

    async def _extra_tasks(self, tg: asyncio.TaskGroup) -> None:
        tg.create_task(self._prune(), name="router-prune")

    def _closing_events(self, now: int) -> Sequence[Any]:
        return self.machine.close_drop_windows(now)  # the open windows' summaries


# Node events logged at INFO, what an operator should see; the others at DEBUG.
_NOTABLE = (Dropped, SubmissionRefused, RefusedIn, Expired, SequenceGap, KeyChanged,
            Violation)


class NodeDaemon(_Shell):
    name = "node"
    machine: NodeMachine

    def __init__(self, machine: NodeMachine, transport: Transport, *,
                 audit: AuditLog | None = None,
                 directory_anchor: bytes | None = None,
                 load_keys: Callable[[], AgencyKeys] | None = None, **kw: Any) -> None:
        super().__init__(transport, **kw)
        self.name = f"node-{machine.agency}"
        self.machine = machine
        self.load_keys = load_keys  # the agency's keys again, after a prekey rotation
        self.audit = audit
        self.anchor = directory_anchor
        if directory_anchor is not None:
            self.directory_topic = f"{machine.prefix}/directory"

    def _subscriptions(self) -> list[str]:
        subs = [self.machine.inbox_topic]
        if self.anchor is not None:
            subs.append(f"{self.machine.prefix}/directory")
        return subs

    def _handle(self, topic: str, payload: bytes, now: int) -> list[NodeEvent]:
        if topic == f"{self.machine.prefix}/directory" and self.anchor is not None:
            return self.handle_directory(payload)
        return self.machine.handle(topic, payload, now)

    def handle_directory(self, payload: bytes) -> list[NodeEvent]:
        from i24net.core.directory import load

        try:
            d: Directory = load(payload, self.anchor or b"", held=self.machine.directory)
        except I24Error as exc:
            return [Dropped(reason=exc.reason, detail=exc.message)]
        if d.serial > self.machine.directory.serial:
            self.machine.set_directory(d)
            events: list[NodeEvent] = [DirectoryInstalled(detail=f"now version {d.serial}")]
            if self.machine.needs_keys() and self.load_keys is not None:
                try:
                    self.machine.set_keys(self.load_keys())
                except I24Error as exc:
                    return [*events, Dropped(reason=exc.reason, detail=exc.message)]
                events.append(KeyChanged(detail="keys loaded again: new prekey"))
            return events
        return []

    def _pop(self, now: int, limit: int) -> list[tuple[str, bytes, int]]:
        return self.machine.pop(limit)

    def _record(self, ev: NodeEvent, now: int) -> None:
        level = logging.INFO if isinstance(ev, _NOTABLE) else logging.DEBUG
        self.log.log(level, "%s %s %s %s %s", ev.kind, ev.msg_id[:12], ev.peer, ev.reason,
                     ev.detail)
        if self.audit is not None and not isinstance(ev, Retried):  # retries: counted only
            self.audit.append(now, ev.kind, ev.msg_id, ev.reason, ev.audit_details())
        if self.on_event:
            self.on_event(ev)

    def wake(self) -> None:
        """The outbox was written from outside (``i24net publish``): its timer runs now."""
        self.machine.outbox_changed()
        self._timer_wake.set()



def random_bytes(n: int) -> bytes:
    return os.urandom(n)
