"""Serving router shards: each router process serves its own shard and takes over the shard
of a router that died, until that router is back.

Theory of operation: a shard (``i24net.core.shards``) is state - a signing key, a store, an
audit log and a broker session - and exactly one process may serve it at a time. Two leases
per shard (``i24net.shell.leases``) say who:

- ``owner-<k>`` is held, for its whole life, by the process started as ``--shard k/K``;
- ``lease-<k>`` is held by whichever process serves shard k right now.

On a single broker they are ``flock`` files in the home's ``state/``: the kernel drops a
process's locks the instant it dies, SIGKILL included, so liveness needs no heartbeat. On
the NATS cluster they are keys of its key-value bucket, which every machine sees: renewed
while their holder lives, gone 3 s after it stops; a holder whose lease may have run out
stops its shard and refuses its publishes first (fencing). Every ``poll_s`` a
``ShardHost``:

1. serves its own shard as soon as that lease is free;
2. takes over shard j when j has had no owner for ``TAKEOVER_GRACE_S`` and j's lease is
   free (when several routers survive, the lease decides which one serves it);
3. hands shard j back as soon as j's owner is running again: it stops j's daemon cleanly
   (the broker keeps the shard's session and queues for it) and releases the lease, which
   the owner is waiting for.

What a router had taken from the broker but not yet acted on when it died is repaired end to
end: senders retry until receipts arrive, and the shard's store says what was accepted. The
file leases need the state folder on one machine; the cluster's leases do not, but a
shard's store (its sequence counters and the ids it has seen) still lives on the machine
that served it.

Each router process answers ``{"op": "status"}`` on its control socket,
``state/ctl/router.sock`` (``router-<k>.sock`` with shards), with every shard it serves and
that shard's link to the broker (``RouterDaemon.link_state``): ``i24net status`` calls a
router up only while its own shard is connected and subscribed, not merely while its
process runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from i24net.config.home import Home
from i24net.core.errors import ConfigError, TransportError
from i24net.core.shards import Shard
from i24net.shell.control import MAX_LINE, ctl_dir, ctl_path, request, socket_address
from i24net.shell.daemons import RouterDaemon
from i24net.shell.leases import EngineCounters, EngineLeases, FileLeases, Leases
from i24net.store import SqliteRouterStore

POLL_S = 0.25
# A shard must be without its router this long before another takes it over: a router that
# is being restarted (or that starts a moment after its peers) keeps its shard.
TAKEOVER_GRACE_S = 1.0
# How long a router started for shard k tries for its owner lock: the other routers' probes
# of it (``FileLock.taken``) hold it for a moment, a live router holds it for good.
OWNER_WAIT_S = 1.0


def owner(k: int) -> str:
    """The lease name the process started as shard k holds for its whole life."""
    return f"owner-{k}"


def lease(k: int) -> str:
    """The lease name of whichever process serves shard k now."""
    return f"lease-{k}"


Build = Callable[[Shard], RouterDaemon]


class ShardHost:
    """One router process: its own shard, plus the shards of routers that are gone."""

    def __init__(self, home: Home, own: Shard, build: Build, *, takeover: bool = True,
                 logger: logging.Logger | None = None, poll_s: float = POLL_S,
                 grace_s: float = TAKEOVER_GRACE_S, leases: Leases | None = None) -> None:
        self.home = home
        self.own = own
        self.build = build
        self.takeover = takeover
        self.log = logger or logging.getLogger("i24net.router")
        self.poll_s = poll_s
        self.grace_s = grace_s
        self._orphaned: dict[int, float] = {}  # shard -> when it was first seen ownerless
        home.state_dir.mkdir(parents=True, exist_ok=True)
        self.leases: Leases = leases if leases is not None else FileLeases(home)
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self.daemons: dict[int, RouterDaemon] = {}
        self.ready = asyncio.Event()  # set once the own shard is served
        self.takeovers = 0
        self.handbacks = 0
        self.fenced = 0  # shards stopped because their lease was no longer valid
        self._waiters_seen: set[str] = set()

    @property
    def serving(self) -> list[int]:
        return sorted(j for j, d in self.daemons.items() if d.ready.is_set())

    @property
    def process_name(self) -> str:
        """The supervisor's name for this process: ``router``, or ``router-<k>``."""
        return "router" if self.own.count == 1 else f"router-{self.own.index}"

    def status(self) -> dict[str, Any]:
        """Every shard this process serves, with its link (``RouterDaemon.link_state``)."""
        shards = {}
        for j, daemon in sorted(self.daemons.items()):
            shards[str(j)] = {"serving": daemon.ready.is_set(), **daemon.link_state()}
        return {"ok": True, "process": self.process_name, "own": self.own.index,
                "count": self.own.count, "shards": shards}

    async def _claim_own(self) -> None:
        """Hold this shard's owner lease. A file lease held by another process is a second
        router on this machine: refused. An engine lease held elsewhere (another machine's
        router of this shard): wait until it expires or is released, saying so on both
        sides (the holder logs the waiter it sees)."""
        name = owner(self.own.index)
        loop = asyncio.get_running_loop()
        if isinstance(self.leases, FileLeases):
            deadline = loop.time() + OWNER_WAIT_S  # other routers' probes hold it a moment
            while not await self.leases.acquire(name):
                if loop.time() >= deadline:
                    raise ConfigError(f"shard {self.own} already has a router "
                                      f"({await self.leases.holder(name)}); each shard "
                                      "runs one", reason="config.shard")
                await asyncio.sleep(0.02)
            return
        waited = False
        while not await self.leases.acquire(name):
            if not waited:
                self.log.warning("shard %s is served by %s: waiting until its lease expires "
                                 "or is released", self.own, await self.leases.holder(name))
                waited = True
            await self.leases.announce(f"wait-{self.own.index}")
            await asyncio.sleep(self.poll_s)
        if waited:
            self.log.info("shard %s: its lease is free; this process serves it", self.own)

    async def run(self) -> None:
        try:
            await self._claim_own()
        except BaseException:
            await self.leases.close()
            raise
        server: asyncio.Server | None = None
        path = ctl_path(self.home, self.process_name)
        try:
            server = await self._open_control(path)
            while True:
                await self._step()
                await asyncio.sleep(self.poll_s)
        finally:
            if server is not None:
                server.close()
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
            for j in list(self._tasks):
                await self._stop(j)
            await self.leases.release(owner(self.own.index))
            await self.leases.close()

    async def _open_control(self, path: Path) -> asyncio.Server:
        """The control socket (mode 0600 in a 0700 folder); one left by a killed router is
        replaced (this process holds the shard's owner lock, so no live router uses it)."""
        directory = ctl_dir(self.home)
        directory.mkdir(parents=True, exist_ok=True)
        os.chmod(directory, 0o700)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        with socket_address(path) as address:
            server = await asyncio.start_unix_server(self._serve_control, path=address,
                                                     limit=MAX_LINE)
        os.chmod(path, 0o600)
        return server

    async def _serve_control(self, reader: asyncio.StreamReader,
                             writer: asyncio.StreamWriter) -> None:
        try:
            line = await reader.readline()
            try:
                req = json.loads(line)
            except ValueError:
                req = None
            if isinstance(req, dict) and req.get("op") == "status":
                answer = self.status()
            else:
                answer = {"ok": False, "reason": "control.unknown",
                          "error": "a router answers only {\"op\": \"status\"}"}
            writer.write(json.dumps(answer).encode() + b"\n")
            await writer.drain()
        except (OSError, ValueError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


    async def _step(self) -> None:
        for j, task in list(self._tasks.items()):
            if task.done():
                self._tasks.pop(j)
                self.daemons.pop(j, None)
                await self.leases.release(lease(j))
                exc = None if task.cancelled() else task.exception()
                if j == self.own.index and isinstance(exc, ConfigError):
                    raise exc
                self.log.error("shard %d/%d stopped (%s); serving it again",
                               j, self.own.count, exc or "cancelled")
        for j in list(self._tasks):
            if not self.leases.valid(lease(j)):  # fencing: frozen, cut off, or taken over
                self.log.error("shard %d/%d: its lease is no longer valid; stopped serving "
                               "it before publishing again", j, self.own.count)
                self.fenced += 1
                await self._stop(j)
        mine = self.own.index
        if not self.leases.valid(owner(mine)) and not await self.leases.acquire(owner(mine)):
            # the owner lease ran out (this process was frozen or cut off) and another
            # process holds it now: that one is shard k's router; wait for it to go
            await self.leases.announce(f"wait-{mine}")
            return
        waiter = await self.leases.waiting(f"wait-{mine}")
        if waiter is not None and waiter not in self._waiters_seen:
            self._waiters_seen.add(waiter)
            self.log.warning("another router of shard %s (%s) is waiting for this one's "
                             "lease", self.own, waiter)
        if mine not in self._tasks and await self.leases.acquire(lease(mine)):
            self._start(mine)
        if not self.takeover:
            return
        now = asyncio.get_running_loop().time()
        for j in range(1, self.own.count + 1):
            if j == mine:
                continue
            if j in self._tasks:
                if await self.leases.taken(owner(j)):
                    self.log.info("shard %d/%d: its router is back; handing it over",
                                  j, self.own.count)
                    await self._stop(j)
                    self.handbacks += 1
            elif await self.leases.taken(owner(j)):
                self._orphaned.pop(j, None)
            elif now - self._orphaned.setdefault(j, now) >= self.grace_s \
                    and await self.leases.acquire(lease(j)):
                self._orphaned.pop(j, None)
                self.log.warning("shard %d/%d has no router: taking it over",
                                 j, self.own.count)
                self.takeovers += 1
                self._start(j)

    def _start(self, j: int) -> None:
        try:
            daemon = self.build(Shard(j, self.own.count))
        except Exception:
            asyncio.get_running_loop().create_task(self.leases.release(lease(j)))
            raise
        self.daemons[j] = daemon
        # fencing: each publish first checks that this process still holds the shard
        daemon.transport.guard = lambda: self.leases.valid(lease(j))

        async def serve() -> None:
            if isinstance(self.leases, EngineLeases):
                await self._carry_counters(j, daemon)
            async with daemon.transport, daemon:
                self.log.info("serving shard %d/%d (directory v%d, %d agencies)", j,
                              self.own.count, daemon.machine.directory.serial,
                              len(daemon.machine.directory.agencies))
                if j == self.own.index:
                    self.ready.set()
                await daemon.serve_forever()

        self._tasks[j] = asyncio.get_running_loop().create_task(
            serve(), name=f"router-shard-{j}")

    async def _carry_counters(self, j: int, daemon: RouterDaemon) -> None:
        """Shard j's delivery counters live on the cluster too (``EngineCounters``): raise
        this store's to them before serving, and write them back after every sync, before
        anything numbered is published."""
        assert isinstance(self.leases, EngineLeases)
        store = daemon.machine.store
        if not isinstance(store, SqliteRouterStore):
            return
        counters = EngineCounters(self.leases)
        recipients = sorted(daemon.machine.directory.agencies)
        store.raise_seqs(await counters.load(j, recipients))

        async def replicate() -> None:
            lasts = store.take_numbered()
            while lasts:
                if not self.leases.valid(lease(j)):
                    raise TransportError(f"shard {j}: its lease is gone before its delivery "
                                         "counters reached the cluster",
                                         reason="transport.fenced")
                try:
                    await counters.push(j, lasts)
                    return
                except Exception as exc:  # no quorum, cut off: publish nothing meanwhile
                    self.log.warning("shard %d/%d: its delivery counters did not reach the "
                                     "cluster (%s); trying again before publishing", j,
                                     self.own.count, exc or type(exc).__name__)
                    await asyncio.sleep(0.2)

        daemon.replicate = replicate

    async def _stop(self, j: int) -> None:
        task = self._tasks.pop(j, None)
        self.daemons.pop(j, None)
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self.leases.release(lease(j))


def router_status(home: Home, process: str, timeout: float = 5.0) -> dict[str, Any]:
    """The answer of router process ``process`` (``router`` or ``router-<k>``) to
    ``{"op": "status"}``; raises ``ControlError`` (or ``I24Error``) if it does not answer."""
    return request(ctl_path(home, process), {"op": "status"}, timeout=timeout)


def own_shard_state(answer: dict[str, Any]) -> tuple[bool, str]:
    """Whether a router's answer says its own shard is served and connected and subscribed,
    and if not, why (for ``i24net status``)."""
    shard = (answer.get("shards") or {}).get(str(answer.get("own")))
    if not isinstance(shard, dict) or not shard.get("serving"):
        return False, "not serving its shard yet"
    if not shard.get("connected"):
        return False, "not connected to the broker (reconnecting)"
    if not shard.get("subscribed"):
        return False, "connected, but the broker has not granted its subscriptions"
    return True, ""

