"""The key injects of a live exercise: the authority's directory versions and the thief.

Theory of operation: ``KeyDrills`` plays ``revoke``, ``rotate``, ``rotate-prekeys`` and
``compromise`` on the running network of a ``LiveRun``, with the meaning they have in
virtual time (``i24net.sim``), through the paths a person or an attacker has.

The authority (``revoke``, ``rotate``, ``rotate-prekeys``) issues the next signed directory
version in the run's home, as ``i24net directory revoke`` / ``rotate`` / ``rotate-prekeys``
do (``Home.revoke`` ...: new keys are written to the agency's key file), and publishes it
retained on the directory topic, as ``i24net directory publish`` does. The router and the
nodes follow that topic (``handle_directory`` in the daemons); a node whose prekey changed loads its
keys again (``load_keys``). The broker follows the signed file and drops the accounts of
revoked agencies. An inject is played only once the version is in force: the runner
watches the audit logs, where the router and each node write a ``directory`` entry when
they adopt a newer version (and a node its ``key`` entry when it reloaded its keys), and
waits for the router and every node that is up and reachable, at most ``ADOPT_TIMEOUT_S``.
The time the router adopted a revocation is the revocation's time in the observations: in
virtual time the router adopts a version the moment it is issued, so both modes measure
the time to revoke up to the point where the router refuses the agency.

The thief (``compromise``) is not the victim's node. At the inject it copies the agency's
private keys as its node holds them: the key file, without the retired prekeys the node
has already erased (it erases each at the end of the grace period; the key file itself
keeps them until the next rotation, which the inject's detail reports), and without the
node's sending key, which lives in the node's memory only (every message the runner sends
for an agency is sealed with a sending key of its own, gone once it is sealed). It also
has the agency's broker password. With it, the embedded broker lets it in under any client
id of the account's (``NCB-BR`` or ``NCB-BR:<anything>``, ``accounts.client_id_allowed``):
the bare id would take the node's session over and cut the node off, so a thief that wants
to go unnoticed, as this one, connects as ``<agency>:thief``, a session of its own beside
the node's, directly to the broker (not through the victim's link or its fault proxy).
The account's ACL lets it publish on the victim's submit topic, so each forgery is a real
envelope, built with the core API from the public directory and signed with the stolen
key, that the router judges as it judges the victim's own. Once a revocation reaches the
broker, the account is gone: the broker closes the thief's session and refuses its next
login, and a forgery that finds no way in is recorded as refused with the transport's
reason (``transport.refused``); one the router saw is refused by it (``sender.revoked``).
The router's decision on each forgery is read from its audit log (the thief has no outbox);
the deliveries from the recipients' inboxes, as for every message. Each forgery that left
for the broker is in the run's outside history (``origin`` attacker), with the router's
decision as its outcome, so a forgery handed to anyone after a refusal fails the history.

The eavesdropper: in virtual time the attacker has recorded, from the start of the run,
every envelope to or from the agency whose keys it steals, and at the theft the history
says which of them the stolen keys open (``Exposure``). Live, a passive subscriber plays
that recording from the start of the run: it reads every submit topic at the broker (with
the router's account and a client id of its own, ``i24-router:wiretap``: the view of
someone who reads the broker's traffic or, without TLS as live runs are, the wire) and
keeps every envelope to or from an agency some ``compromise`` names. At the theft the
thief tries each recorded envelope with the stolen keys, as a recipient or as its sender
(``open_envelope`` / ``open_as_sender``, with the prekeys of every directory version the
run published), and what opens and why the rest stays shut (``prekey.unknown``,
``key.sending``) is the run's exposure observation, judged by ``unreadable-to-thief``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import threading
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

from i24net.config.home import ROUTER_ACCOUNT, Home, now_ms
from i24net.core import frames as fr
from i24net.core.directory import Directory
from i24net.core.envelope import (
    Body,
    Envelope,
    exposure,
    make_header,
    recipient_keys,
    seal,
)
from i24net.core.errors import I24Error, TransportError
from i24net.core.keys import AgencyKeys, key_id
from i24net.core.labels import Label, Precedence
from i24net.core.policy import complete_addressing
from i24net.exercise import model as m
from i24net.exercise.observe import ATTACKER, MessageObs, Observations
from i24net.ops.history import History

ADOPT_TIMEOUT_S = 10.0  # the router and the reachable nodes adopt a version within this
ADOPT_POLL_S = 0.05
CONNECT_TIMEOUT_S = 5.0  # the thief's and the eavesdropper's broker connections
PUBLISH_TIMEOUT_S = 5.0
THIEF_CLIENT = "thief"  # the thief's client id: <agency>:thief
WIRETAP_CLIENT = "wiretap"  # the eavesdropper's: i24-router:wiretap
FORGED_TEXT = "Forged with a stolen key."  # the body text, as in virtual time
KEY_INJECTS = (m.Compromise, m.Revoke, m.Rotate, m.RotatePrekeys, *m.COOPERATION_INJECTS)

_T = TypeVar("_T")


def _quiet_logger() -> logging.Logger:
    """The thief's transports log a lost link once the broker drops a revoked account:
    expected in the drill, so it stays out of the run's terminal."""
    log = logging.getLogger("i24net.exercise.thief")
    if not log.handlers:
        log.addHandler(logging.NullHandler())
        log.propagate = False
    return log


@dataclass(slots=True)
class Forgery:
    """One message the thief built, and how far it got."""

    inject: m.Compromise
    id: str  # hex
    recipients: tuple[str, ...]
    sent: float  # exercise seconds, when the thief sent it (or tried to)
    refused: str = ""  # the broker would not take it: the transport's reason
    lost: str = ""  # it left but the broker did not confirm it: the transport's reason


@dataclass(slots=True)
class Adoption:
    """How a directory version was taken up: when the router adopted it, which nodes did,
    and which could not be waited for."""

    serial: int
    router_ms: int | None = None
    nodes: list[str] = field(default_factory=list)
    late: list[str] = field(default_factory=list)  # up, reachable, not adopted in time
    not_reloaded: list[str] = field(default_factory=list)  # adopted, keys not loaded
    skipped: list[str] = field(default_factory=list)  # down or cut off: adopt it later
    seconds: float = 0.0

    def check(self) -> None:
        """Raise unless the router and every node waited for adopted it (and reloaded
        the keys it had to)."""
        if self.router_ms is None:
            raise I24Error(f"the router did not adopt directory version {self.serial} "
                           f"within {ADOPT_TIMEOUT_S:g} s", reason="directory.not-adopted")
        if self.late or self.not_reloaded:
            parts = ([f"not adopted by {', '.join(self.late)}"] if self.late else []) + (
                [f"keys not reloaded by {', '.join(self.not_reloaded)}"]
                if self.not_reloaded else [])
            raise I24Error(f"directory version {self.serial}: {'; '.join(parts)} within "
                           f"{ADOPT_TIMEOUT_S:g} s", reason="directory.not-adopted")

    def describe(self) -> str:
        skipped = f"; {', '.join(self.skipped)} down or cut off: adopt it when back" \
            if self.skipped else ""
        return (f"directory version {self.serial} in force: router and {len(self.nodes)} "
                f"node(s) adopted it within {self.seconds:.2f} s{skipped}")


class _Loop:
    """An event loop on a daemon thread for the thief's and the eavesdropper's MQTT
    connections: the runner itself is synchronous."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True,
                                       name="exercise-thief")
        self.thread.start()

    def call(self, coro: Coroutine[Any, Any, _T], timeout: float) -> _T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5.0)
        if not self.thread.is_alive():
            self.loop.close()


class KeyDrills:
    """The key injects of one live run (see the module's docstring).

    ``clock`` gives the run's exercise seconds and ``to_t`` turns a Unix ms time into them;
    ``reachable`` names the agencies whose node is up and connected to the broker now (not
    crashed, not partitioned): those a new directory version must reach before the inject
    counts as played. ``lock`` guards the run's outside ``history``."""

    def __init__(self, home: Home, exercise: m.Exercise, *, history: History,
                 lock: threading.RLock, clock: Callable[[], float],
                 to_t: Callable[[int], float], reachable: Callable[[], set[str]]) -> None:
        self.home = home
        self.ex = exercise
        self.history = history
        self.lock = lock
        self.clock = clock
        self.to_t = to_t
        self.reachable = reachable
        self.watched = {i.agency for i in exercise.injects if isinstance(i, m.Compromise)}
        self.versions: list[Directory] = []  # every version the run had: public prekeys
        self.captured: dict[str, bytes] = {}  # msg id hex -> the envelope, first seen
        self.stolen: dict[str, AgencyKeys] = {}
        self.compromised: dict[str, float] = {}  # agency -> first theft
        self.revoked: dict[str, float] = {}  # agency -> the router adopted its revocation
        self.exposure: dict[str, tuple[frozenset[str], dict[str, str]]] = {}
        self.forgeries: list[Forgery] = []
        self._captured_lock = threading.Lock()
        self._loop: _Loop | None = None
        self._wiretap: Any = None
        self._thieves: dict[str, Any] = {}  # agency -> its open MqttTransport
        self._tasks: set[asyncio.Task[None]] = set()

    @staticmethod
    def needed(exercise: m.Exercise) -> bool:
        return any(isinstance(i, KEY_INJECTS) for i in exercise.injects)

    # -- lifecycle ------------------------------------------------------------------------
    def start(self) -> None:
        """Before the first inject: the loop for the broker connections, and the
        eavesdropper's recording if some ``compromise`` will want it."""
        self.versions.append(self.home.directory())
        self._loop = _Loop()
        if self.watched:
            self._loop.call(self._start_wiretap(), CONNECT_TIMEOUT_S + PUBLISH_TIMEOUT_S)

    def stop(self) -> None:
        """Close every connection (the thief's and the eavesdropper's) and the loop."""
        if self._loop is None:
            return
        with contextlib.suppress(Exception):  # on the way out: the run's own error wins
            self._loop.call(self._close_all(), CONNECT_TIMEOUT_S)
        self._loop.close()
        self._loop = None

    async def _close_all(self) -> None:
        for t in [*self._thieves.values(), self._wiretap]:
            if t is not None:
                with contextlib.suppress(Exception):  # a link the broker closed already
                    await t.__aexit__(None, None, None)
        self._thieves.clear()
        self._wiretap = None
        for task in list(self._tasks):
            task.cancel()

    def _transport(self, account: str, suffix: str) -> Any:
        """A connection of ``account`` straight to the broker (never through an agency's
        fault proxy), under the client id ``<account>:<suffix>``."""
        from i24net.shell.runtime import endpoint
        from i24net.transport.mqtt import MqttTransport

        ep = endpoint(self.home)
        return MqttTransport(ep.host, ep.port, client_id=f"{account}:{suffix}",
                             username=account,
                             password=self.home.broker_passwords()[account],
                             clean_session=True, connect_timeout=CONNECT_TIMEOUT_S,
                             publish_timeout=PUBLISH_TIMEOUT_S, logger=_quiet_logger())

    # -- the eavesdropper -----------------------------------------------------------------
    async def _start_wiretap(self) -> None:
        t = self._transport(ROUTER_ACCOUNT, WIRETAP_CLIENT)
        await t.__aenter__()
        self._wiretap = t
        await t.subscribe(f"{self.home.directory().prefix}/submit/+")
        task = asyncio.get_running_loop().create_task(self._record(t), name="wiretap")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _record(self, t: Any) -> None:
        """Keep the first copy of every envelope to or from a watched agency (a retry
        sends the same bytes again)."""
        async for d in t.deliveries():
            try:
                if fr.peek_magic(d.payload) != fr.ENVELOPE:
                    continue  # receipts and gap requests
                h = Envelope.parse(d.payload).header
            except I24Error:
                continue
            if h.sender in self.watched or not self.watched.isdisjoint(h.recipients):
                with self._captured_lock:
                    self.captured.setdefault(h.id_hex, d.payload)

    # -- the authority --------------------------------------------------------------------
    def revoke(self, inj: m.Revoke) -> str:
        """The GS revokes the agency: the next version, published; in force once the
        router (and every reachable node but the revoked one) adopted it."""
        marks = self._marks()
        d = self.home.revoke(inj.agency)
        adoption = self._publish(d, marks, skip=frozenset({inj.agency}))
        if adoption.router_ms is not None:
            self.revoked.setdefault(inj.agency, self.to_t(adoption.router_ms))
        adoption.check()
        return f"revoked {inj.agency}; {adoption.describe()}"

    def rotate(self, inj: m.Rotate) -> str:
        """New keys for the agency (its key file), the next version listing them; in force
        once the router and the reachable nodes adopted it and the agency's node loaded
        its new keys."""
        marks = self._marks()
        d, _ = self.home.rotate(inj.agency)
        adoption = self._publish(d, marks, reload=frozenset({inj.agency}))
        adoption.check()
        return f"{inj.agency} key version {d.agency(inj.agency).key_version}; " \
            f"{adoption.describe()}"

    def rotate_prekeys(self, inj: m.RotatePrekeys) -> str:
        """A new prekey for each of the agencies (default: every active one), as
        ``i24net directory rotate-prekeys`` does; in force once every reachable node
        adopted it and those of the agencies loaded their new prekeys."""
        marks = self._marks()
        names = list(inj.agencies) or None
        d = self.home.rotate_prekeys(names)
        adoption = self._publish(d, marks, reload=frozenset(names) if names else frozenset(
            a for a, r in d.agencies.items() if r.active))
        adoption.check()
        return f"new prekeys for {', '.join(inj.agencies) or 'every active agency'}; " \
            f"{adoption.describe()}"

    def amend(self, change: Callable[[Directory, int], Directory], what: str) -> str:
        """A joint operation created, changed or closed, or an agreement ended
        (``change``, as ``i24net operation`` / ``agreement end`` make it): the next version,
        published; in force once the router and every reachable node adopted it."""
        marks = self._marks()
        d = self.home.amend(change)
        adoption = self._publish(d, marks)
        adoption.check()
        return f"{what}; {adoption.describe()}"

    def _audit_files(self) -> dict[str, Path]:
        """The audit log of each router shard (``router``, ``router-2`` ...) and node."""
        from i24net.shell.runtime import router_audit_path

        shards = self.home.spec().router_shards
        out = {("router" if k == 1 else f"router-{k}"): router_audit_path(self.home, k)
               for k in range(1, shards + 1)}
        for a in sorted(self.home.directory().agencies):
            out[a] = self.home.logs_dir / f"audit-{a}.jsonl"
        return out

    def _marks(self) -> dict[str, int]:
        """How far each audit log goes now: what is written after is news."""
        return {who: path.stat().st_size if path.exists() else 0
                for who, path in self._audit_files().items()}

    def _publish(self, d: Directory, marks: dict[str, int], *,
                 skip: frozenset[str] = frozenset(),
                 reload: frozenset[str] = frozenset()) -> Adoption:
        """Publish the home's signed directory (retained) and wait until the router and
        every node reachable now adopted it (and the ``reload`` agencies' nodes loaded their
        keys again), at most ``ADOPT_TIMEOUT_S``."""
        from i24net.shell.runtime import publish_directory

        assert self._loop is not None
        self.versions.append(d)
        started = self.clock()
        self._loop.call(publish_directory(self.home, timeout=PUBLISH_TIMEOUT_S,
                                          logger=_quiet_logger()),
                        PUBLISH_TIMEOUT_S + CONNECT_TIMEOUT_S)
        active = {a for a, r in d.agencies.items() if r.active} - skip
        up = self.reachable()
        wanted = sorted(active & up)
        adoption = Adoption(d.serial, skipped=sorted(active - up))
        files = self._audit_files()
        routers = [who for who in files if who.startswith("router")]
        seen: dict[str, list[dict[str, Any]]] = {who: [] for who in files}
        offsets = dict(marks)
        while True:
            for who in (*routers, *wanted):
                offsets[who], news = _read_entries(files[who], offsets.get(who, 0))
                seen[who] += news
            router = [_adopted(seen[who]) for who in routers]
            nodes = {a: _adopted(seen[a]) for a in wanted}
            done = all(r is not None for r in router) and all(
                n is not None and (a not in reload or n[1] is not None)
                for a, n in nodes.items())
            if done or self.clock() - started >= ADOPT_TIMEOUT_S:
                break
            threading.Event().wait(ADOPT_POLL_S)
        adoption.seconds = self.clock() - started
        if all(r is not None for r in router):
            adoption.router_ms = max(r[0] for r in router if r is not None)
        for a, n in nodes.items():
            if n is None:
                adoption.late.append(a)
            elif a in reload and n[1] is not True:
                adoption.not_reloaded.append(a)
            else:
                adoption.nodes.append(a)
        return adoption

    # -- the thief ------------------------------------------------------------------------
    def steal(self, inj: m.Compromise) -> str:
        """The thief copies the agency's keys as its node holds them, and tries them on
        everything recorded to or from the agency so far."""
        agency = inj.agency
        d = self.home.directory()
        on_disk = self.home.keys(agency)
        held = replace(on_disk.erase_prekeys(now_ms(), d.prekey_grace_ms),
                       sending_secret=None)
        self.stolen[agency] = held
        self.compromised.setdefault(agency, round(self.clock(), 3))
        readable, shut = self._exposure(agency, held, d)
        self.exposure.setdefault(agency, (frozenset(readable), shut))
        erased = len(on_disk.prekeys) - len(held.prekeys)
        on_file = f"; the key file still holds {erased} retired prekey(s) the node has " \
            "erased (a copy of the disk alone would open what was sealed to them)" \
            if erased else ""
        return f"key {key_id(held.verify_key).hex()} stolen; it opens {len(readable)} of " \
            f"{len(readable) + len(shut)} recorded message(s){on_file}"

    def _exposure(self, agency: str, keys: AgencyKeys, d: Directory
                  ) -> tuple[list[str], dict[str, str]]:
        """Which recorded envelopes to or from ``agency`` the stolen keys open; the others
        with the reason they stay shut."""
        with self._captured_lock:
            captured = dict(self.captured)
        return exposure(captured, agency, keys, d, self.versions)

    def forge(self, inj: m.Compromise) -> None:
        """One forgery: addressed and sealed from the public directory, signed with the
        stolen key, sent on the victim's submit topic over the thief's own connection."""
        agency = inj.agency
        keys = self.stolen.get(agency)
        if keys is None:
            raise I24Error(f"no key of {agency} has been stolen", reason="attacker.no-key")
        d = self.home.directory()  # the retained directory topic: anyone may read it
        header = make_header(
            d, sender=agency, addressing=complete_addressing(inj.kind, list(inj.to), agency, d),
            kind=inj.kind, label=Label.parse(inj.label), now_ms=now_ms(),
            ttl_ms=self.home.spec().default_ttl_hours * 3_600_000, random_bytes=os.urandom,
            precedence=Precedence.parse(inj.precedence))
        header = replace(header, key_id=key_id(keys.verify_key))
        raw = seal(header, Body(inj.subject[:256], FORGED_TEXT, {}), keys,
                   recipient_keys(d, header), random_bytes=os.urandom)
        f = Forgery(inj, header.id_hex, header.recipients, round(self.clock(), 3))
        self.forgeries.append(f)
        assert self._loop is not None
        try:
            link = self._loop.call(self._thief_link(agency), CONNECT_TIMEOUT_S + 5)
        except (TransportError, TimeoutError) as exc:
            f.refused = getattr(exc, "reason", "transport.connect")
            return
        with self.lock:  # on the wire from here on: in the outside history
            self.history.submit(header.id, agency, header.recipients, expect="any",
                                origin=ATTACKER)
            self.history.flush()
        try:
            self._loop.call(link.publish(f"{d.prefix}/submit/{agency}", raw),
                            PUBLISH_TIMEOUT_S + 5)
        except (TransportError, TimeoutError) as exc:
            f.lost = getattr(exc, "reason", "transport.timeout")

    async def _thief_link(self, agency: str) -> Any:
        """The thief's open connection for ``agency``, or a new one: after a revocation the
        broker has closed it and refuses the login (``transport.refused``)."""
        t = self._thieves.get(agency)
        if t is not None and t.is_connected:
            return t
        if t is not None:
            del self._thieves[agency]
            with contextlib.suppress(Exception):  # the broker closed it already
                await t.__aexit__(None, None, None)
        t = self._transport(agency, THIEF_CLIENT)
        await t.__aenter__()
        self._thieves[agency] = t
        return t

    # -- observing ------------------------------------------------------------------------
    def observe(self, obs: Observations) -> dict[str, MessageObs]:
        """Give ``obs`` the thefts, the revocations and the exposure, and return the
        forgeries as messages (their deliveries are read from the inboxes with everyone
        else's). The router's decision on each one goes into the outside history as its
        outcome, as ``record_outcomes`` does for the senders' outboxes."""
        obs.compromised.update(self.compromised)
        obs.revoked.update(self.revoked)
        obs.exposure.update(self.exposure)
        decisions = self._router_decisions({f.id for f in self.forgeries if not f.refused})
        out: dict[str, MessageObs] = {}
        for f in self.forgeries:
            inj = f.inject
            msg = MessageObs(id=f.id, sender=inj.agency, kind=inj.kind, label=inj.label,
                             precedence=inj.precedence, recipients=f.recipients, sent=f.sent,
                             name=inj.name, origin=ATTACKER)
            if f.refused:
                msg.state, msg.reason, msg.decided = "refused", f.refused, f.sent
            elif f.id in decisions:
                accepted, reason, at_ms = decisions[f.id]
                msg.state = "accepted" if accepted else "refused"
                msg.reason, msg.decided = reason, self.to_t(at_ms)
                with self.lock:
                    self.history.outcome(bytes.fromhex(f.id), msg.state, reason)
            out[f.id] = msg
        with self.lock:
            self.history.flush()
        return out

    def _router_decisions(self, ids: set[str]) -> dict[str, tuple[bool, str, int]]:
        """id -> (accepted, refusal reason, router time) of the first decision any router
        shard's audit log holds on each of ``ids``."""
        out: dict[str, tuple[bool, str, int]] = {}
        for who, path in self._audit_files().items():
            if not who.startswith("router"):
                continue
            _, entries = _read_entries(path, 0)
            for e in entries:
                mid = str(e.get("msg_id", ""))
                if mid not in ids or mid in out:
                    continue
                if e.get("event") in ("accept", "duplicate"):
                    out[mid] = (True, "", int(e.get("at_ms", 0)))
                elif e.get("event") == "refuse":
                    out[mid] = (False, str(e.get("reason", "")), int(e.get("at_ms", 0)))
        return out


def _read_entries(path: Path, offset: int) -> tuple[int, list[dict[str, Any]]]:
    """The whole audit lines of ``path`` from byte ``offset`` on, and the offset after
    them (a line being written is read next time)."""
    if not path.exists():
        return offset, []
    with path.open("rb") as fh:
        fh.seek(offset)
        data = fh.read()
    end = data.rfind(b"\n") + 1
    out = []
    for line in data[:end].splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict):
            out.append(entry)
    return offset + end, out


def _adopted(entries: list[dict[str, Any]]) -> tuple[int, bool | None] | None:
    """From a daemon's new audit entries: (when it adopted a newer directory, whether it
    then loaded its keys again: True, failed: False, or did not need to: None); None if
    it adopted none."""
    for n, e in enumerate(entries):
        if e.get("event") == "directory":
            after = entries[n + 1] if n + 1 < len(entries) else {}
            reloaded = {"key": True, "drop": False}.get(str(after.get("event", "")))
            return int(e.get("at_ms", 0)), reloaded
    return None
