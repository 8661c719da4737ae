"""The node host: the node machines of many agencies in one process, on one event loop.

One OS process per agency costs tens of MiB and a fraction of a second of imports each;
the 198 agencies of the interpol preset would need gigabytes. A host runs any number of
agencies side by side instead, and keeps everything that makes each a separate agency:

- its own broker connection, account and client id (the broker's ACLs isolate agencies
  inside one host exactly as across processes);
- its own SQLite store, audit chain, keys and pair-key cache, built by ``make_node`` as for
  ``i24net node``; what the agencies share is only public and immutable: the verified
  directory and the process's code.

Theory of operation: ``NodeHost.run`` starts the agencies (a bounded number connecting at
once), printing ``up AGENCY`` for each, then ``ready NAME N agencies``; if any fails to
start, the host stops the others and exits non-zero, naming it (``i24net up`` is all or
nothing). Once running, an agency that fails (its store corrupt, its login refused) is
marked failed with the reason and its neighbours go on. The control socket
(``i24net.shell.control``) wakes an agency's outbox after ``i24net publish``, streams a message's
events to ``publish --wait``, and stops (gracefully, or abruptly: the connection dropped
without DISCONNECT, nothing flushed) and starts agencies inside the host.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from i24net.config.home import Home
from i24net.core.errors import I24Error
from i24net.core.events import (
    Delivered,
    Expired,
    NodeEvent,
    ReceiptIn,
    SubmissionAccepted,
    SubmissionDeferred,
    SubmissionRefused,
)
from i24net.shell.control import ControlError, ctl_dir, ctl_path, request, socket_address
from i24net.shell.daemons import NodeDaemon

START_CONCURRENCY = 32  # agencies connecting to the broker at once
STOP_TIMEOUT_S = 5.0
# What ``publish --wait`` follows of a message it sent (each under its audit name)
WATCHED = (SubmissionAccepted, SubmissionRefused, SubmissionDeferred, ReceiptIn, Delivered,
           Expired)


class HostStartError(I24Error):
    """An agency of the host could not start."""


@dataclass
class Slot:
    """One hosted agency."""

    agency: str
    state: str = "stopped"  # starting | up | stopped | failed
    reason: str = ""
    error: str = ""
    daemon: NodeDaemon | None = None
    task: asyncio.Task[None] | None = None
    started: asyncio.Future[None] | None = None
    killing: bool = False

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"state": self.state}
        if self.daemon is not None and self.state == "up":
            link = getattr(self.daemon.transport, "is_connected", None)
            if link is not None:
                out["connected"] = bool(link() if callable(link) else link)
        if self.reason:
            out.update(reason=self.reason, error=self.error)
        return out


@dataclass(eq=False)
class _Watch:
    queue: asyncio.Queue[dict[str, Any]] = field(default_factory=asyncio.Queue)


class NodeHost:
    """The agencies ``agencies`` of ``home`` in this process, with a control socket
    named ``name``. ``make`` builds one agency's daemon (``runtime.make_node``)."""

    def __init__(self, home: Home, name: str, agencies: list[str],
                 make: Callable[[str], NodeDaemon], *,
                 logger: logging.Logger | None = None,
                 say: Callable[[str], None] = print) -> None:
        if not agencies:
            raise I24Error("a host needs at least one agency", reason="config.host")
        self.home = home
        self.name = name
        self.make = make
        self.log = logger or logging.getLogger(f"i24net.{name}")
        self.say = say
        self.slots = {a: Slot(a) for a in agencies}
        self.watches: dict[tuple[str, str], set[_Watch]] = {}
        self.ready = asyncio.Event()
        self._limit = asyncio.Semaphore(START_CONCURRENCY)
        self._server: asyncio.Server | None = None

    # -- one agency -----------------------------------------------------------------------
    async def start(self, agency: str) -> Slot:
        """Start ``agency`` (if not up) and return once it is up or has failed."""
        slot = self.slots[agency]
        if slot.state in ("up", "starting") and slot.started is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(slot.started)
            return slot
        loop = asyncio.get_running_loop()
        slot.state, slot.reason, slot.error, slot.killing = "starting", "", "", False
        slot.started = loop.create_future()
        slot.task = loop.create_task(self._run_agency(slot), name=f"agency-{agency}")
        with contextlib.suppress(Exception):
            await asyncio.shield(slot.started)
        return slot

    async def _run_agency(self, slot: Slot) -> None:
        assert slot.started is not None
        started = slot.started
        try:
            async with self._limit:
                d = self.make(slot.agency)
                slot.daemon = d
                d.on_event = lambda ev, a=slot.agency: self._dispatch(a, ev)
                await d.transport.__aenter__()
            try:
                async with d:
                    prefix = d.machine.prefix
                    await d.transport.publish(f"{prefix}/presence/{slot.agency}", b"online",
                                              retain=True)
                    slot.state = "up"
                    started.set_result(None)
                    await d.serve_forever()
            finally:
                if not slot.killing:
                    await d.transport.__aexit__(None, None, None)
        except asyncio.CancelledError:
            if not started.done():
                started.cancel()
            raise
        except Exception as exc:
            reason = exc.reason if isinstance(exc, I24Error) else "internal"
            slot.state, slot.reason, slot.error = "failed", reason, str(exc)
            self.log.error("%s failed (%s): %s", slot.agency, reason, exc)
            if not started.done():
                started.set_exception(exc)
            if slot.daemon is not None:
                await slot.daemon.abort()

    async def stop(self, agency: str, *, kill: bool = False) -> Slot:
        """Stop ``agency``: gracefully (DISCONNECT, audit flushed, presence offline), or with
        ``kill`` as a crash would (connection dropped, nothing flushed, the broker's will
        says offline)."""
        slot = self.slots[agency]
        task, d = slot.task, slot.daemon
        if task is None or task.done():
            if slot.state != "failed":
                slot.state = "stopped"
            return slot
        if kill and d is not None:
            slot.killing = True
            await d.abort()
        elif d is not None and slot.state == "up":
            with contextlib.suppress(I24Error, TimeoutError):
                async with asyncio.timeout(1.0):
                    await d.transport.publish(f"{d.machine.prefix}/presence/{agency}",
                                              b"offline", retain=True)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            async with asyncio.timeout(STOP_TIMEOUT_S):
                await task
        slot.state, slot.daemon, slot.task = "stopped", None, None
        self.log.info("%s stopped%s", agency, " (killed)" if kill else "")
        return slot

    # -- events for watchers ----------------------------------------------------------------
    def _dispatch(self, agency: str, ev: NodeEvent) -> None:
        if not isinstance(ev, WATCHED):
            return
        watchers = self.watches.get((agency, ev.msg_id))
        if not watchers:
            return
        event: dict[str, Any] = {"event": ev.kind}
        match ev:
            case ReceiptIn():
                event.update(peer=ev.peer, status=ev.detail, reason=ev.reason)
            case _:
                if ev.reason:
                    event["reason"] = ev.reason
                if ev.detail:
                    event["detail"] = ev.detail
        for w in watchers:
            w.queue.put_nowait(event)

    def _snapshot(self, agency: str, msg_id: str) -> dict[str, Any]:
        slot = self.slots[agency]
        out: dict[str, Any] = {"event": "state", "agency_state": slot.state}
        if slot.daemon is None:
            return out
        try:
            entry = slot.daemon.machine.store.outbox_get(bytes.fromhex(msg_id))
        except ValueError:
            raise I24Error(f"not a message id: {msg_id!r}", reason="control.request") from None
        if entry is None:
            return {**out, "state": "unknown"}
        return {**out, "state": entry.state, "reason": entry.reason,
                "receipts": dict(entry.receipts)}

    # -- the control socket -----------------------------------------------------------------
    async def _serve_client(self, reader: asyncio.StreamReader,
                            writer: asyncio.StreamWriter) -> None:
        try:
            line = await reader.readline()
            if not line:
                return
            try:
                req = json.loads(line)
                if not isinstance(req, dict):
                    raise ValueError("not an object")
            except ValueError as exc:
                await _answer(writer, {"ok": False, "reason": "control.request",
                                       "error": f"not a JSON request: {exc}"})
                return
            if req.get("op") == "watch":
                await self._watch(req, reader, writer)
                return
            try:
                answer = await self._request(req)
            except I24Error as exc:
                answer = {"ok": False, "reason": exc.reason, "error": exc.message}
            except Exception as exc:  # a bug: answer it, keep serving the others
                self.log.exception("internal error on a control request")
                answer = {"ok": False, "reason": "internal", "error": repr(exc)}
            await _answer(writer, answer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    def _agencies(self, req: dict[str, Any]) -> list[str]:
        names = req.get("agencies")
        if names is None and "agency" in req:
            names = [req["agency"]]
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise I24Error("the request names no agencies", reason="control.request")
        unknown = [n for n in names if n not in self.slots]
        if unknown:
            raise I24Error(f"{', '.join(unknown)} not hosted by {self.name}",
                           reason="control.unknown-agency")
        return names

    async def _request(self, req: dict[str, Any]) -> dict[str, Any]:
        op = req.get("op")
        if op == "status":
            return {"ok": True, "host": self.name, "pid": os.getpid(),
                    "agencies": {a: s.to_json() for a, s in self.slots.items()}}
        if op == "wake":
            (agency,) = self._agencies(req)[:1] or [""]
            slot = self.slots[agency]
            if slot.state == "up" and slot.daemon is not None:
                slot.daemon.wake()
            return {"ok": True, "state": slot.state}
        if op == "stop":
            kill = bool(req.get("kill", False))
            slots = await asyncio.gather(*(self.stop(a, kill=kill)
                                           for a in self._agencies(req)))
            return {"ok": True, "agencies": {s.agency: s.to_json() for s in slots}}
        if op == "start":
            slots = await asyncio.gather(*(self.start(a) for a in self._agencies(req)))
            return {"ok": True, "agencies": {s.agency: s.to_json() for s in slots}}
        raise I24Error(f"unknown operation {op!r}", reason="control.request")

    async def _watch(self, req: dict[str, Any], reader: asyncio.StreamReader,
                     writer: asyncio.StreamWriter) -> None:
        try:
            (agency,) = self._agencies(req)[:1]
            msg_id = str(req.get("id", ""))
            w = _Watch()
            key = (agency, msg_id)
            self.watches.setdefault(key, set()).add(w)
            first = self._snapshot(agency, msg_id)
        except (I24Error, ValueError) as exc:
            reason = exc.reason if isinstance(exc, I24Error) else "control.request"
            await _answer(writer, {"ok": False, "reason": reason, "error": str(exc)})
            return
        try:
            await _answer(writer, first)
            hangup = asyncio.ensure_future(reader.read())  # EOF: the watcher went away
            while True:
                get = asyncio.ensure_future(w.queue.get())
                done, _ = await asyncio.wait({get, hangup},
                                             return_when=asyncio.FIRST_COMPLETED)
                if hangup in done:
                    get.cancel()
                    return
                await _answer(writer, get.result())
        finally:
            if "hangup" in locals():
                hangup.cancel()
            watchers = self.watches.get(key, set())
            watchers.discard(w)
            if not watchers:
                self.watches.pop(key, None)

    # -- the whole host ---------------------------------------------------------------------
    async def run(self) -> None:
        """Open the control socket, start every agency, then serve until cancelled; on
        the way out stop every agency gracefully."""
        directory = ctl_dir(self.home)
        directory.mkdir(parents=True, exist_ok=True)
        os.chmod(directory, 0o700)
        path = ctl_path(self.home, self.name)
        if path.exists():
            try:
                request(path, {"op": "status"}, timeout=2.0)
            except ControlError:
                path.unlink()  # left by a process that was killed
            else:
                raise I24Error(f"{self.name} is already running (its control socket {path} "
                               "answers): 'i24net status' shows it", reason="config.running")
        with socket_address(path) as address:
            self._server = await asyncio.start_unix_server(self._serve_client, path=address)
        os.chmod(path, 0o600)
        try:
            await self._start_all()
            self.ready.set()
            await asyncio.Event().wait()
        finally:
            self._server.close()
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            await asyncio.gather(*(self.stop(a) for a in self.slots),
                                 return_exceptions=True)

    async def _start_all(self) -> None:
        total = len(self.slots)
        done = 0

        async def one(agency: str) -> None:
            nonlocal done
            slot = await self.start(agency)
            if slot.state != "up":
                raise HostStartError(f"{slot.error} ({slot.reason})",
                                     reason=slot.reason or "host.start", agency=agency)
            done += 1
            self.say(f"up {agency} ({done}/{total})")

        try:
            async with asyncio.TaskGroup() as tg:
                for agency in self.slots:
                    tg.create_task(one(agency))
        except* HostStartError as group:
            first = group.exceptions[0]
            assert isinstance(first, HostStartError)
            raise first from None
        self.say(f"ready {self.name} {total} agencies")


async def _answer(writer: asyncio.StreamWriter, obj: dict[str, Any]) -> None:
    writer.write(json.dumps(obj).encode() + b"\n")
    await writer.drain()
