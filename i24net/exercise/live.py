"""Running an exercise live: real processes on the embedded broker, wall-clock injects.

Theory of operation: the runner creates a network home in a temporary folder (the
exercise's network on a free port, embedded broker), starts every process with the
``Supervisor``, and plays the injects at their offsets from the start in wall-clock
seconds, through the same paths a user has: ``client.send`` writes to a node's outbox, the
notice desk's store for GS actions, ``Supervisor.kill`` / ``spawn`` for crashes and
restarts. After the last inject it polls the senders' outboxes (read-only) until every
message is final, or the planned end plus the settle timeout passes, then turns the stores
and the notice authority's register into ``Observations`` (the same kinds the virtual run
reads from the simulator, see ``observe.py``). The processes are always stopped
(``Supervisor.down`` in a ``finally``), also on Ctrl-C, SIGTERM or SIGHUP (turned into
``Interrupted`` in the main thread while the run lasts) and after an error.

Injects keep to the plan's clock: a repeating ``send`` (``repeat`` > 1) plays its copies on
a thread of its own, so the injects after its first copy are not held up by the later ones;
so does a ``compromise`` with several forgeries.
Each inject and each copy records how late it was played against its planned time;
``result.extra["lateness"]`` gives the worst and those beyond ``LATE_TOLERANCE_S``.

Beside the expectations, the run keeps an outside history (``i24net.ops.history``): each submit
once it returned, every hand-over each agency's application consumer saw, the messages the
daemons originated themselves (notices the desk issues) and every sender's last outcome.
``i24net.ops.checker`` judges it: a duplicate, a message delivered where it must not be, a
message lost, or a delivery nobody sent fails the run, whatever the expectations say;
refusals, expiries and messages still in flight are the expectations' to judge.

The key injects play through ``livekeys.KeyDrills``: ``revoke``, ``rotate`` and
``rotate-prekeys`` issue and publish the next signed directory version and return once the
running router and nodes adopted it; ``compromise`` is a thief outside the victim's node,
on a broker connection of its own with the victim's credentials, forging with the stolen
key, while an eavesdropper started with the run records the traffic the stolen keys are
tried on. An action without a live form (``skew``: a live run has one clock) is refused by
``check_live``, which names the first one a file uses and says why.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from i24net.config.home import Home, now_ms
from i24net.core.cooperation import DEFAULT_OPERATION_MS, Operation
from i24net.core.directory import Directory
from i24net.core.errors import I24Error
from i24net.core.labels import Label, Precedence
from i24net.exercise import model as m
from i24net.exercise.expect import Outcome
from i24net.exercise.livekeys import KeyDrills
from i24net.exercise.livesize import allow_open_files, live_size, measure
from i24net.exercise.livestores import OutboxWatch
from i24net.exercise.observe import (
    FLOOD,
    INJECT,
    LIFECYCLE,
    SETTLE_S,
    DropObs,
    InjectObs,
    MessageObs,
    NoticeObs,
    Observations,
)
from i24net.exercise.result import Result
from i24net.ops import client
from i24net.ops.checker import CLASSES
from i24net.ops.history import Consumers, History, judge, record_outcomes

POLL_S = 0.5
# A run ends once nothing was pending on two polls this far apart (a receipt and the
# message it set off, e.g. the notice a request leads to, are then both on disk).
QUIET_S = 2.0
# An inject (or a flood's copy) played later than this after its planned time is reported
# late: the run's timings are then the machine's as much as the network's.
LATE_TOLERANCE_S = 0.5
STOP_THREADS_S = 10.0  # how long the clean-up waits for a flood's thread to notice

Progress = Callable[[float, float, str], None]


class Interrupted(BaseException):
    """SIGTERM or SIGHUP reached a live run: like KeyboardInterrupt, it unwinds the run
    (which stops its processes) and is not an ``Exception`` for handlers to swallow."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(f"interrupted by {signal.Signals(signum).name}")


@contextlib.contextmanager
def _signals_stop_the_run() -> Iterator[None]:
    """While the block runs, SIGTERM and SIGHUP raise ``Interrupted`` in the main thread
    (and SIGINT ``KeyboardInterrupt``, if nobody else handles it); once one did, further
    signals are ignored so the clean-up runs to its end. The previous handlers are put
    back afterwards. Outside the main thread, signals cannot be handled: nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    fired: list[int] = []

    def handler(signum: int, frame: object) -> None:
        if fired:
            return  # already stopping
        fired.append(signum)
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        raise Interrupted(signum)

    previous: dict[int, Any] = {}
    try:
        for sig in (int(signal.SIGTERM), int(signal.SIGHUP), int(signal.SIGINT)):
            if sig == signal.SIGINT and signal.getsignal(sig) is not signal.default_int_handler:
                continue
            previous[sig] = signal.signal(sig, handler)
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def check_live(ex: m.Exercise) -> None:
    """Raise ``NotSupportedLive`` naming the first thing the live runner cannot play."""
    for i in ex.injects:
        if not i.live:
            raise m.NotSupportedLive(f"{ex.source or ex.name}: inject[{i.index}]: " + (
                f"not supported live: {i.action}: {i.why_not_live}" if i.why_not_live
                else f"not supported live yet: {i.action}"))
    if ex.conditions.broker_queue_limit is not None:
        raise m.NotSupportedLive(
            f"{ex.source or ex.name}: conditions.broker_queue_limit: not supported live: "
            "the embedded broker a live run uses (amqtt 0.12) keeps an offline session's "
            "messages without a limit and has no setting for one (Mosquitto's "
            "max_queued_messages would be one); run it --virtual")


def virtual_only(ex: m.Exercise) -> list[str]:
    """The conditions a live run accepts without playing them, each saying why: what
    ``exercise validate --live`` and the live report print beside the verdict."""
    notes = []
    if ex.conditions.router is not None:
        notes.append("conditions.router: virtual-only: the router's service times model its "
                     "CPU in virtual time; a live run uses the real router, whose own costs "
                     "apply")
    return notes


Members = Callable[[str], tuple[str, ...]]  # an agency or a @GROUP -> its agencies


def _link_timeline(c: m.Conditions, agency: str, members: Members
                   ) -> list[tuple[float, tuple[float, float, float]]]:
    """The agency's link over the run as the simulator plays it, as ``(from time,
    (latency_ms, jitter_ms, loss))``, the first from 0: a rule naming the agency or one of
    its groups overlays its set values on the link at its ``start``, and its ``end``
    returns the link to the defaults (``reset_link``), whatever other rule still runs;
    changes at one time apply in file order, a rule's start before its end. Rules between
    two agencies are gateway filters (``_gateway_filters``)."""
    events: list[tuple[float, int, dict[str, float] | None]] = []
    for k, rule in enumerate(c.links):
        if rule.between or agency not in members(rule.agency or rule.group or ""):
            continue
        events.append((rule.start, 2 * k, {key: value for key, value in (
            ("latency_ms", rule.latency_ms), ("jitter_ms", rule.jitter_ms),
            ("loss", rule.loss)) if value is not None}))
        if rule.end is not None:
            events.append((rule.end, 2 * k + 1, None))
    timeline = [(0.0, (c.latency_ms, c.jitter_ms, c.loss))]
    override: dict[str, float] = {}
    for at, _, changes in sorted(events, key=lambda e: e[:2]):
        override = {} if changes is None else {**override, **changes}
        link = (override.get("latency_ms", c.latency_ms),
                override.get("jitter_ms", c.jitter_ms), override.get("loss", c.loss))
        if at <= timeline[-1][0]:
            timeline[-1] = (timeline[-1][0], link)
        else:
            timeline.append((at, link))
    return timeline


def _gateway_filters(c: m.Conditions, members: Members) -> list[Any]:
    """The file's ``[[conditions.filter]]`` rules and its links ``between`` two agencies
    as the fault proxies' gateway filters, named and built as the simulator builds them
    (``VirtualRun._conditions``): a ``between = [A, B]`` rule adds its delay and loss to
    each delivery of a message from A coming down to B."""
    from i24net.ops.faultproxy import GatewayFilter

    def agencies(target: str | None) -> frozenset[str] | None:
        return None if target is None else frozenset(members(target))

    rules = [GatewayFilter(f"link-{rule.index}", direction="down",
                           senders=agencies(rule.between[0]),
                           recipients=agencies(rule.between[1]), drop=rule.loss or 0.0,
                           delay_ms=rule.latency_ms or 0.0, jitter_ms=rule.jitter_ms or 0.0,
                           start=rule.start, end=rule.end)
             for rule in c.links if rule.between]
    for f in c.filters:
        delay = f.action == "delay"
        rules.append(GatewayFilter(
            f"filter-{f.index}", direction=f.direction,
            precedences=frozenset({f.precedence}) if f.precedence else None,
            labels=frozenset({f.label}) if f.label else None, caveat=f.caveat,
            kinds=frozenset({f.kind}) if f.kind else None, senders=agencies(f.sender),
            recipients=agencies(f.to),
            addressing=frozenset({f.to_group}) if f.to_group else None,
            drop=0.0 if delay else f.probability, delay_ms=f.delay_ms if delay else 0.0,
            jitter_ms=f.jitter_ms if delay else 0.0, start=f.start, end=f.end))
    return rules


def with_port(text: str, port: int) -> str:
    """``network.toml`` text with the broker on ``port`` and the embedded engine."""
    text = re.sub(r'(?m)^(\s*engine\s*=\s*)"[^"]*"', r'\1"embedded"', text)
    text = re.sub(r"(?m)^(\s*tls\s*=\s*)true", r"\1false", text)
    if re.search(r"(?m)^\s*port\s*=\s*\d+", text):
        return re.sub(r"(?m)^(\s*port\s*=\s*)\d+", rf"\g<1>{port}", text, count=1)
    if re.search(r"(?m)^\[broker\]", text):
        return re.sub(r"(?m)^\[broker\]\s*$", f"[broker]\nport = {port}", text, count=1)
    return text + f"\n[broker]\nport = {port}\n"


class LiveRun:
    def __init__(self, exercise: m.Exercise, *, progress: Progress | None = None,
                 workdir: Path | None = None, keep: bool = False,
                 settle_s: float = SETTLE_S) -> None:
        check_live(exercise)
        self.ex = exercise
        self.settle_s = settle_s  # how long past the planned end to wait for final outcomes
        self.proxies: Any = None  # a faultproxy.ProxyThread when the file needs link faults
        self.cut: set[str] = set()  # agencies partitioned now
        self.progress = progress or (lambda now, total, text: None)
        self.workdir = workdir
        self.keep = keep
        self.home: Home | None = None
        self.start_ms = 0
        self.t0 = 0.0
        self.names: dict[str, tuple[str, str]] = {}  # msg id hex -> (name, origin)
        self.recipients: dict[str, tuple[str, ...]] = {}  # msg id hex -> its recipients
        self.labels: dict[str, str] = {}  # msg id hex -> label (refusals leave no inbox copy)
        self.notices: dict[str, NoticeObs] = {}
        self.played: list[InjectObs] = []
        self.authority = ""
        self.history: History | None = None
        self.tmp: Path | None = None  # the run's folder (its network home is tmp/home)
        # Flood threads share the dicts above, ``played``, ``lateness`` and the history.
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._floods: list[threading.Thread] = []
        self._flood_error: BaseException | None = None
        self.lateness: list[dict[str, Any]] = []  # one per played action (copies too)
        self.keydrills: KeyDrills | None = None  # the directory actions and the thief

    # -- lifecycle ------------------------------------------------------------------------
    def run(self) -> Result:
        with _signals_stop_the_run():
            return self._run()

    def _run(self) -> Result:
        from i24net.exercise.loader import network_spec
        from i24net.ops.supervisor import Supervisor

        # What fits is the machine's to say (memory, cores, open files), not a count of
        # agencies: refused before anything starts, with the reason and what to do.
        size = live_size(self.ex, network_spec(self.ex.network))
        if size.problem:
            raise m.NotSupportedLive(size.problem)
        sup = consumers = None
        saved_env = os.environ.get("I24NET_MANUAL_REVIEW")
        wall = time.monotonic()
        tmp: Path | None = None
        allow_open_files(size.open_files)  # the proxies and the processes inherit it
        try:
            tmp = self.tmp = Path(tempfile.mkdtemp(prefix="i24-exercise-", dir=self.workdir))
            home = Home(tmp / "home")
            # The broker's port stays bound here until its proxies listen: they take one
            # port of the kernel's choosing per agency (198 of the same range), and none
            # of them may be the broker's.
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as reserved:
                reserved.bind(("127.0.0.1", 0))
                port = reserved.getsockname()[1]
                home.init(with_port(self.ex.network.toml_text(), port), force=True)
                d = home.directory()
                self.home = home
                self._start_proxies(home, port)
            self.authority = (d.authorities("notice-authority") or [""])[0]
            if self.ex.network.review == "manual":
                os.environ["I24NET_MANUAL_REVIEW"] = "1"
            sup = Supervisor(home)
            self.progress(0.0, self.ex.duration, "starting the network")
            self.history = History(tmp / "history.jsonl", "exercise", name=self.ex.name)
            consumers = Consumers(home, d.agencies, self.history)
            ready: dict[str, float] = {}  # process -> seconds from the run's start to ready

            def started(name: str) -> None:
                ready[name] = round(time.monotonic() - wall, 3)
                self.progress(0.0, self.ex.duration, f"starting the network: {name} ready")

            # Crash injects SIGKILL a real process: their targets run on their own (the
            # layout the size check priced).
            sup.up(isolate=size.isolated, on_ready=started)
            consumers.start()
            self.outboxes = OutboxWatch(home, d.agencies)
            self.sup = sup
            if KeyDrills.needed(self.ex):  # before any traffic: the eavesdropper records it
                self.keydrills = KeyDrills(home, self.ex, history=self.history,
                                           lock=self._lock, clock=self._elapsed, to_t=self._t,
                                           reachable=self._reachable)
                self.keydrills.start()
            self.start_ms = now_ms()
            self.t0 = time.monotonic()
            self._play_all()
            # Settle before judging: once every inject is played, until every message
            # submitted is final (all receipts in, refused, or expired) on two polls in a row
            # QUIET_S apart, or the planned end plus the settle timeout passes. A run whose
            # messages are all final ends there, before its planned end: nothing is left to
            # happen in it (the report gives both times).
            limit = self.ex.duration + self.settle_s
            quiet_since: float | None = None
            while True:
                pending = self._pending()
                now = self._elapsed()
                if pending or self._awaiting_erasure():
                    quiet_since = None
                elif quiet_since is None:
                    quiet_since = now
                if (quiet_since is not None and now - quiet_since >= QUIET_S) or now >= limit:
                    break
                self._sleep_until(min(limit, now + POLL_S),
                                  f"settling: {len(pending)} message(s) not final"
                                  if pending else "settling: waiting for retention to end")
            obs = self._observe()
            obs.pending = sorted(pending)
            obs.duration = round(self._elapsed(), 3)
            self.progress(self.ex.duration, self.ex.duration,
                          "done" if not pending else f"done: {len(pending)} not final")
            stopping, consumers = consumers, None
            stopping.stop()  # its error is the run's
            result = Result.build(self.ex, "live", self.ex.seed, obs,
                                  wall_seconds=time.monotonic() - wall)
            self._judge_history(result)
            result.extra["lateness"] = self.lateness_summary()
            result.extra["settle"] = {"planned_s": self.ex.duration,
                                      "ended_s": obs.duration,
                                      "pending": len(pending), "timeout_s": self.settle_s}
            # Where the time and the memory went: start-up (each process's ready time), the
            # played and settled part, the whole; the estimate beside each process's peak.
            result.extra["time"] = {"planned_s": self.ex.duration, "ended_s": obs.duration,
                                    "startup_s": round(self.t0 - wall, 3), "ready_s": ready,
                                    "elapsed_s": round(time.monotonic() - wall, 3)}
            result.extra["size"] = {"estimate": size.to_dict(), "measured": measure(
                {n: (p.pid, len(p.agencies)) for n, p in sup.running().items()})}
            return result
        finally:
            self._stop.set()
            for t in self._floods:
                t.join(STOP_THREADS_S)
            if saved_env is None:
                os.environ.pop("I24NET_MANUAL_REVIEW", None)
            else:
                os.environ["I24NET_MANUAL_REVIEW"] = saved_env
            if consumers is not None:  # an error or a signal: the run's result is lost
                with contextlib.suppress(Exception):
                    consumers.stop()
            if self.keydrills is not None:
                self.keydrills.stop()
            if sup is not None:
                sup.down()
            if self.proxies is not None:
                self.proxies.stop()
            if tmp is not None and not self.keep:
                shutil.rmtree(tmp, ignore_errors=True)

    def _judge_history(self, result: Result) -> None:
        """Close the history with what the daemons originated and what every sender was
        told, and add the checker's verdict to ``result``."""
        assert self.home is not None and self.history is not None
        h, agencies = self.history, sorted(self.home.directory().agencies)
        submitted = set(self.names)
        for a in agencies:  # e.g. a notice the desk issued on its own: not an attacker's
            for e in self._outbox(a):
                if e.msg_id.hex() not in submitted:
                    h.submit(e.msg_id, a, e.recipients, t=e.created_ms, expect="any",
                             origin="node")
        record_outcomes(self.home, agencies, h)
        h.close()
        v = judge(h.path)  # every message is "any": the expectations judge its fate
        result.extra["history"] = {k: v.summary()[k] for k in (
            "ok", "submitted", *CLASSES, "unexpected", "deliveries", "failures")}
        result.outcomes.append(Outcome(
            len(result.outcomes), "history", "every message delivered at most once, only "
            "to its recipients, none lost (outside history)", v.ok,
            "; ".join(v.failures) or f"{v.submitted} messages, {v.deliveries} hand-overs "
            f"checked"))

    def _elapsed(self) -> float:
        return time.monotonic() - self.t0

    def _sleep_until(self, at: float, text: str) -> None:
        while True:
            now = self._elapsed()
            self.progress(min(now, self.ex.duration), self.ex.duration, text)
            if now >= at:
                return
            time.sleep(min(0.2, at - now))

    # -- injects --------------------------------------------------------------------------
    def _play_all(self) -> None:
        """Play every inject at its planned time: each repeating send (and each compromise
        with several forgeries) on a thread of its own, the others here in time order;
        return once the last copy is played."""
        ordered = sorted(self.ex.injects, key=lambda i: (i.at, i.index))
        for inj in ordered:
            if isinstance(inj, m.Send | m.Compromise) and _repeated(inj):
                t = threading.Thread(target=self._flood_thread, args=(inj,), daemon=True,
                                     name=f"inject-{inj.index}")
                self._floods.append(t)
                t.start()
        for inj in ordered:
            if not _repeated(inj):
                self._sleep_until(inj.at, f"next: inject[{inj.index}] {inj.action}")
                self._play(inj)
        for t in self._floods:
            while t.is_alive():
                now = self._elapsed()
                self.progress(min(now, self.ex.duration), self.ex.duration,
                              f"{t.name}: copies")
                t.join(0.2)
        if self._flood_error is not None:
            raise self._flood_error
        with self._lock:
            self.played.sort(key=lambda o: (o.t, o.index))

    def _late(self, inj: m.Inject, planned: float, t: float,
              copy: int | None = None) -> float:
        late = round(max(0.0, t - planned), 3)
        with self._lock:
            self.lateness.append({"inject": inj.index, "action": inj.action,
                                  **({"copy": copy} if copy is not None else {}),
                                  "planned_s": round(planned, 3), "played_s": round(t, 3),
                                  "late_s": late})
        return late

    def lateness_summary(self) -> dict[str, Any]:
        """The worst lateness of any played action, and those beyond the tolerance."""
        with self._lock:
            rows = sorted(self.lateness, key=lambda r: (r["planned_s"], r["inject"],
                                                        r.get("copy", 0)))
        return {"worst_s": max((r["late_s"] for r in rows), default=0.0),
                "tolerance_s": LATE_TOLERANCE_S,
                "played": len(rows),
                "late": [r for r in rows if r["late_s"] > LATE_TOLERANCE_S]}

    def _play(self, inj: m.Inject) -> None:
        t = self._elapsed()
        late = self._late(inj, inj.at, t)
        try:
            detail = self._act(inj)
            obs = InjectObs(round(t, 3), inj.index, inj.action, inj.describe(), True,
                            _with_lateness(detail or "", late))
        except I24Error as exc:
            obs = InjectObs(round(t, 3), inj.index, inj.action, inj.describe(), False,
                            _with_lateness(f"{exc.message} ({exc.reason})", late))
        with self._lock:
            self.played.append(obs)

    def _flood_thread(self, inj: m.Send | m.Compromise) -> None:
        """A repeating send's copies, or a compromise's forgeries (the theft before the
        first), each at ``at + n * every``; the first failure ends it (reported as the
        inject's failure)."""
        count, (one, many) = (inj.repeat, ("copy", "copies")) if isinstance(inj, m.Send) \
            else (inj.count, ("forgery", "forgeries"))
        first: float | None = None
        worst = 0.0
        problem = ""
        notes: list[str] = []
        try:
            for n in range(count):
                planned = inj.at + n * inj.every
                while (wait := planned - self._elapsed()) > 0:
                    if self._stop.wait(min(wait, 0.2)):
                        return
                if self._stop.is_set():
                    return
                t = self._elapsed()
                first = t if first is None else first
                worst = max(worst, self._late(inj, planned, t, copy=n + 1))
                try:
                    notes.append(self._copy(inj, n))
                except I24Error as exc:
                    problem = f"{one} {n + 1} of {count}: {exc.message} ({exc.reason})"
                    break
        except BaseException as exc:  # re-raised in the main thread
            self._flood_error = exc
            return
        played = n + 1 if not problem else n
        detail = "; ".join(x for x in (*notes, problem or f"{played} {many}") if x)
        obs = InjectObs(round(first if first is not None else self._elapsed(), 3),
                        inj.index, inj.action, inj.describe(), not problem,
                        f"{detail}; played up to {worst:.3f} s late")
        with self._lock:
            self.played.append(obs)

    def _copy(self, inj: m.Send | m.Compromise, n: int) -> str:
        """Copy ``n`` of an inject played copy by copy: a send's copy, or a forgery (the
        theft first); returns what the report should say about it."""
        if isinstance(inj, m.Send):
            self._send_copy(inj, n)
            return ""
        assert self.keydrills is not None  # made at the start for a file with key injects
        note = self.keydrills.steal(inj) if n == 0 else ""
        self.keydrills.forge(inj)
        return note

    def _send_copy(self, inj: m.Send, n: int) -> None:
        self._send(inj.sender, list(inj.to), named=(inj.name, FLOOD if inj.repeat > 1
                                                     else INJECT),
                   kind=inj.kind, label=inj.label,
                   subject=inj.subject or (inj.name or inj.kind) +
                   (f" #{n + 1}" if inj.repeat > 1 else ""),
                   text=inj.text, data=dict(inj.data or {}), precedence=inj.precedence,
                   handling=list(inj.handling), ttl_hours=inj.ttl_hours,
                   h3_text=(inj.text or "see text") if "H3" in inj.handling else "")

    def _send(self, sender: str, to: list[str], *, named: tuple[str, str] | None = None,
              **kw: Any) -> str:
        assert self.home is not None
        h = client.send(self.home, sender, to, **kw)
        with self._lock:
            self.labels[h.id_hex] = kw.get("label", "UNCLASSIFIED")
            if named is not None:
                self.names[h.id_hex] = named
            self.recipients[h.id_hex] = h.recipients
            self._record(h.id, sender, h.recipients)
        return h.id_hex

    def _record(self, msg_id: bytes, sender: str, recipients: tuple[str, ...]) -> None:
        """A submit the API acknowledged, on disk before the run goes on."""
        assert self.history is not None
        with self._lock:
            self.history.submit(msg_id, sender, recipients, expect="any")
            self.history.flush()

    def _act(self, inj: m.Inject) -> str:
        assert self.home is not None
        sup = self.sup
        if isinstance(inj, m.Send):  # one copy (a repeating send runs on its own thread)
            self._send_copy(inj, 0)
            return ""
        if isinstance(inj, m.NoticeRequest):
            mid = self._send(inj.sender, [self.authority], named=(inj.name, INJECT),
                             kind="notice-request",
                             label=inj.label, precedence=inj.precedence,
                             subject=inj.subject or f"{inj.colour} Notice request: "
                             f"{inj.person}", text=inj.text or f"Wanted: {inj.offence}.",
                             data={"colour": inj.colour, "subject": inj.person,
                                   "offence": inj.offence, "warrant": inj.warrant})
            if inj.name:
                self.notices[inj.name] = NoticeObs(inj.name, inj.sender,
                                                   self._t(now_ms()), request_id=mid)
            return f"request {mid[:12]}"
        if isinstance(inj, m.Review):
            rid = self.notices[inj.notice].request_id
            return self._desk(lambda desk, mach: desk.approve(mach, rid, now_ms())
                              if inj.decision == "approve"
                              else desk.refuse(mach, rid, now_ms(), inj.reason))
        if isinstance(inj, m.Cancel):
            return self._cancel(inj)
        if isinstance(inj, m.Crash):
            if not sup.kill(inj.who):
                raise I24Error(f"{inj.who} was not running", reason="exercise.crash")
            return ""
        if isinstance(inj, m.Restart):
            sup.wait_ready([sup.spawn(inj.who)])
            return ""
        if isinstance(inj, m.Partition | m.Heal):
            return self._cut(inj)
        if isinstance(inj, m.Forward):
            return self._forward(inj)
        if isinstance(inj, m.Compromise):  # one forgery (several play on their own thread)
            return self._copy(inj, 0)
        if isinstance(inj, m.Revoke | m.Rotate | m.RotatePrekeys):
            return self._directory_action(inj)
        if isinstance(inj, m.COOPERATION_INJECTS):
            assert self.keydrills is not None  # made at the start for these injects too
            change, what = self._cooperation(inj)
            return self.keydrills.amend(change, what)
        raise m.NotSupportedLive(f"not supported live yet: {inj.action}")

    def _directory_action(self, inj: m.Revoke | m.Rotate | m.RotatePrekeys) -> str:
        """The authority's next directory version, published; returns once the running
        router and nodes adopted it (``livekeys``)."""
        keys = self.keydrills
        assert keys is not None  # made at the start for a file with key injects
        if isinstance(inj, m.Revoke):
            return keys.revoke(inj)
        if isinstance(inj, m.Rotate):
            return keys.rotate(inj)
        return keys.rotate_prekeys(inj)

    def _cooperation(self, inj: m.Inject) -> tuple[Callable[[Directory, int], Directory], str]:
        """The directory change an operation or agreement inject makes, as in virtual
        time: an operation's end is ``until`` seconds into the exercise (default 30 days
        after it is created)."""
        assert self.home is not None
        d = self.home.directory()

        def members(items: tuple[str, ...]) -> list[str]:
            return sorted({*d.expand([i for i in items if i.startswith("@")], ""),
                           *(i for i in items if not i.startswith("@"))})

        if isinstance(inj, m.OperationCreate):
            until = inj.until if inj.until is not None else \
                inj.at + DEFAULT_OPERATION_MS / 1000
            op = Operation(inj.operation, inj.title or inj.operation, inj.lead,
                           tuple(sorted({inj.lead, *members(inj.members)})),
                           self.start_ms + round(until * 1000),
                           inj.level or d.agency(inj.lead).clearance.level,
                           created_ms=now_ms())
            return (lambda cur, t: cur.create_operation(op, t)), \
                f"operation {op.name} created with {', '.join(op.members)}"
        if isinstance(inj, m.OperationAdd | m.OperationRemove):
            who = members(inj.agencies)
            joining = isinstance(inj, m.OperationAdd)
            return (lambda cur, t: cur.change_operation(
                inj.operation, t, add=who if joining else (),
                remove=() if joining else who)), \
                f"{', '.join(who)} {'added to' if joining else 'removed from'} operation " \
                f"{inj.operation}"
        if isinstance(inj, m.OperationClose):
            return (lambda cur, t: cur.close_operation(inj.operation, t)), \
                f"operation {inj.operation} closed"
        assert isinstance(inj, m.AgreementExpire)
        return (lambda cur, t: cur.end_agreement(inj.agreement, t, t)), \
            f"agreement {inj.agreement} ended"

    def _reachable(self) -> set[str]:
        """The agencies whose node is up and connected to the broker now, partitioned ones
        aside: a new directory version reaches them at once."""
        states = self.sup.agency_states()
        with self._lock:
            cut = set(self.cut)
        return {a for a, (state, _, detail) in states.items()
                if state == "up" and not detail} - cut

    def _forward(self, inj: m.Forward) -> str:
        """``inj.sender`` passes on a message it holds, as in virtual time: the body from
        its inbox, the original's label, handling codes and precedence unless the inject
        names others, a reference to the original (so the router applies the source's
        handling codes), and with ``release`` the source's signed release for the new
        recipients."""
        from i24net.core.policy import Release

        assert self.home is not None
        with self._lock:
            orig_hex = next((mid for mid, (name, _) in self.names.items()
                             if name == inj.message), None)
        source = next((i for i in self.ex.injects if isinstance(i, m.Send)
                       and i.name == inj.message), None)
        if orig_hex is None or source is None:
            raise I24Error(f"no message named {inj.message!r} was sent to forward",
                           reason="forward.not-held")
        orig_id = bytes.fromhex(orig_hex)
        with client.open_store(self.home, inj.sender, readonly=True) as store:
            item = store.inbox_get(orig_id)
        if item is None:
            raise I24Error(f"{inj.sender} holds no message {orig_hex[:12]} to forward",
                           reason="forward.not-held")
        release = None
        if inj.release:
            allowed = self.home.directory().expand(list(inj.to), inj.sender)
            release = Release(orig_id, source.sender, allowed, now_ms()).sign(
                self.home.keys(source.sender))
        mid = self._send(inj.sender, list(inj.to), named=(inj.name, INJECT),
                         label=inj.label or source.label,
                         handling=list(source.handling if inj.handling is None
                                       else inj.handling),
                         precedence=inj.precedence or source.precedence,
                         subject=(inj.subject or f"FWD: {item.subject}")[:256],
                         text=inj.text or item.text, data=dict(item.data), ref=orig_id,
                         release=release)
        return f"forward {mid[:12]}"

    # -- the network between each agency and the broker ------------------------------------
    def _needs_proxies(self) -> bool:
        """Whether the file has a link model to play: any latency or jitter (the defaults,
        20 ± 5 ms, are one), loss, a link rule, a filter or a partition. Only a file with
        ideal links (latency and jitter 0) and none of the rest runs on the bare loopback."""
        c = self.ex.conditions
        return bool(c.latency_ms or c.jitter_ms or c.loss or c.links or c.filters or any(
            isinstance(i, m.Partition | m.Heal) for i in self.ex.injects))

    def _start_proxies(self, home: Home, broker_port: int) -> None:
        """A fault proxy between each agency and the broker (``broker/routes.json``), with
        the file's conditions: its defaults; each agency's or group's link rule from its
        start, back to the defaults at its end (``_link_timeline``); and the gateway
        filters (``_gateway_filters``) on every proxy. Timed rules run on the run's clock,
        seconds since ``t0``, which is set once the processes are up: until then no timed
        change is due and no filter is in force (no message flows before it)."""
        if not self._needs_proxies():
            return
        from i24net.ops.faultproxy import FaultProxy, ProxyThread
        from i24net.shell.runtime import routes_file

        d = home.directory()
        names = sorted(d.agencies)

        def run_clock() -> float:
            return self._elapsed() if self.t0 else float("-inf")

        def members(target: str) -> tuple[str, ...]:
            return tuple(d.expand([target], "")) if target.startswith("@") else (target,)

        thread = ProxyThread([FaultProxy(upstream=("127.0.0.1", broker_port), name=a,
                                         clock=run_clock) for a in names],
                             name="exercise-links")
        ports = thread.start()
        self.proxies = thread
        routes_file(home).write_text(json.dumps({a: f"127.0.0.1:{ports[a]}" for a in names}))
        c = self.ex.conditions
        filters = _gateway_filters(c, members)
        for n, a in enumerate(names):
            (_, first), *later = _link_timeline(c, a, members)
            thread.set_conditions(a, *first, seed=self.ex.seed * 1000 + n)
            for at, link in later:
                thread.set_conditions(a, *link, at=at)
            if filters:
                thread.set_filters(a, filters, agency=a)

    def _cut(self, inj: m.Partition | m.Heal) -> str:
        assert self.home is not None
        if self.proxies is None:
            raise I24Error("no link proxies in this run", reason="exercise.partition")
        d = self.home.directory()
        on = isinstance(inj, m.Partition)
        targets = list(inj.agencies) or ([] if on else sorted(self.cut))
        agencies = sorted({a for t in targets
                           for a in (d.expand([t], "") if t.startswith("@") else [t])})
        for a in agencies:
            self.proxies.partition(a, on)
        with self._lock:
            self.cut = self.cut | set(agencies) if on else self.cut - set(agencies)
        return f"{'cut' if on else 'healed'}: {', '.join(agencies)}"

    def _cancel(self, inj: m.Cancel) -> str:
        assert self.home is not None
        n = self.notices[inj.notice]
        n.cancel_at = self._t(now_ms())
        by = inj.by or n.requester
        if by == self.authority:
            return self._desk(lambda desk, mach: desk.cancel(mach, n.request_id, now_ms(),
                                                             inj.reason))
        notice = next((i for i in self._inbox(by) if i.kind == "notice"
                       and i.data.get("request") == n.request_id), None)
        ref = notice.msg_id if notice is not None else bytes.fromhex(n.request_id)
        number = str(notice.data.get("number", "")) if notice is not None else ""
        mid = self._send(by, [self.authority], named=("", INJECT),
                         kind="notice-cancel-request",
                         label="OFFICIAL-USE", precedence="IMMEDIATE",
                         subject=f"Cancel notice {number or n.request_id[:12]}",
                         text=inj.text or "Cancellation requested.",
                         data={"number": number, "reason": inj.reason}, ref=ref)
        return f"cancel request {mid[:12]}"

    def _desk(self, action: Callable[[Any, Any], list[Any]]) -> str:
        """Run a GS desk action beside the running GS daemon, as 'i24net notice' does."""
        from i24net.core.events import Submitted
        from i24net.core.lifecycle import NoticeDesk
        from i24net.core.node import NodeMachine
        from i24net.shell.runtime import node_store_path
        from i24net.store import SqliteNodeStore
        from i24net.store.notices import SqliteNoticeStore, notice_store_path

        assert self.home is not None
        h, gs = self.home, self.authority
        with SqliteNoticeStore(notice_store_path(h, gs)) as ns, \
                SqliteNodeStore(node_store_path(h, gs)) as store:
            machine = NodeMachine(gs, h.keys(gs), h.directory(), store, random_bytes=os.urandom)
            events = action(NoticeDesk(gs, ns, auto_review=False), machine)
            for ev in events:
                if isinstance(ev, Submitted):
                    entry = store.outbox_get(bytes.fromhex(ev.msg_id))
                    if entry is not None:
                        store.outbox_put(replace(entry, next_ms=0))
                        with self._lock:
                            self._record(entry.msg_id, gs, entry.recipients)
                            self.names.setdefault(entry.msg_id.hex(), ("", LIFECYCLE))
        client.wake(h, gs)
        return ", ".join(ev.kind for ev in events if not isinstance(ev, Submitted))

    # -- observing ------------------------------------------------------------------------
    def _t(self, ms: int) -> float:
        return round((ms - self.start_ms) / 1000, 3)

    def _inbox(self, agency: str) -> list[Any]:
        assert self.home is not None
        try:
            with client.open_store(self.home, agency, readonly=True) as store:
                return list(store.inbox_list(limit=None))
        except I24Error:
            return []

    def _outbox(self, agency: str) -> list[Any]:
        assert self.home is not None
        try:
            with client.open_store(self.home, agency, readonly=True) as store:
                return list(store.outbox_list(limit=None))
        except I24Error:
            return []

    def _pending(self) -> list[str]:
        """Ids of the messages in some agency's outbox that are not final yet: each look
        reads only the stores that changed since the last (``OutboxWatch``)."""
        return [e.msg_id.hex() for e in self.outboxes.pending()]

    def _awaiting_erasure(self) -> list[str]:
        """Ids of the messages a ``purged`` expectation names that a recipient still holds:
        their erasure at the end of the retention period is part of what the drill waits
        for (until the planned end and the settle timeout; not a loss if it never comes)."""
        names = {e.message for e in self.ex.expectations if isinstance(e, m.Purged)}
        ids = {mid for mid, (name, _) in self.names.items() if name in names}
        holders = {a for mid in ids for a in self.recipients.get(mid, ())}
        waiting = {i.msg_id.hex() for a in sorted(holders) for i in self._inbox(a)
                   if i.msg_id.hex() in ids and not i.erased_ms}
        return sorted(waiting)

    def _observe(self) -> Observations:
        assert self.home is not None
        d = self.home.directory()
        agencies = tuple(sorted(d.agencies))
        groups = {f"@{g}": d.expand([f"@{g}"], "") for g in d.group_names()}
        obs = Observations(duration=round(self._elapsed(), 3), agencies=agencies,
                           groups=groups, injects=list(self.played))
        inboxes = {a: self._inbox(a) for a in agencies}
        msgs: dict[str, MessageObs] = {}
        for a in agencies:
            for e in self._outbox(a):
                mid = e.msg_id.hex()
                name, origin = self.names.get(mid, ("", LIFECYCLE))
                state = e.state
                msgs[mid] = MessageObs(
                    id=mid, sender=a, kind=e.kind, label=self.labels.get(mid, ""),
                    precedence=Precedence(e.precedence).name, recipients=e.recipients,
                    sent=self._t(e.created_ms), name=name, origin=origin, state=state,
                    reason=e.reason,
                    # the router's time in its signed report; a message delivered before
                    # its report came back was decided by its first delivery, below
                    decided=self._t(e.decided_ms) if e.decided_ms else None,
                    refused_by={r: "refused" for r, s in e.receipts.items() if s == "refused"})
        if self.keydrills is not None:  # the thefts, and the forgeries no outbox holds
            msgs.update(self.keydrills.observe(obs))
        for a, items in inboxes.items():
            for i in items:
                msg = msgs.get(i.msg_id.hex())
                if msg is None:
                    continue
                msg.delivered.setdefault(a, self._t(i.received_ms))
                msg.label = msg.label or i.label
                if msg.decided is None or msg.decided > msg.delivered[a]:
                    msg.decided = msg.delivered[a]
                if msg.ref == "" and i.ref:
                    msg.ref = i.ref.hex()
                if i.state == "purged" and i.erased_ms:
                    msg.purged.setdefault(a, self._t(i.erased_ms))
        obs.messages = sorted(msgs.values(), key=lambda x: (x.sent, x.id))
        self._notices(obs, inboxes, msgs)
        obs.drops = self._drops(agencies)
        versions = self.keydrills.versions if self.keydrills is not None else [d]
        obs.violations = _flow_violations(versions, obs, inboxes)
        obs.flowcheck_ran = True
        return obs

    def _notices(self, obs: Observations, inboxes: dict[str, list[Any]],
                 msgs: dict[str, MessageObs]) -> None:
        """Each named request's fate. The decision is the notice authority's, as its
        register recorded it (and as virtual time records it): a request its desk refused
        is refused even if the requester never got the answer. A request the desk could
        not even register (malformed) is known from the signed decision the GS sent, at
        the time the GS sent it."""
        register = self._register()
        for name, n0 in self.notices.items():
            n = replace(n0, holders={}, cancelled={})
            entry = register.get(n.request_id)
            if entry is not None:
                n.decision, n.reason, n.decided = _decision(entry.notice, self._t)
                n.number = entry.notice.number or ""
                n.notice_id = entry.notice_id.hex() if entry.notice_id else ""
            for a, items in inboxes.items():
                for i in items:
                    if i.data.get("request") != n.request_id:
                        continue
                    if i.kind == "notice-decision" and a == n.requester and entry is None:
                        decision = str(i.data.get("decision", ""))
                        if decision in ("published", "refused", "under-review") and \
                                n.decision in ("", "under-review"):
                            n.decision, n.decided = decision, self._t(i.created_ms)
                            n.reason = str(i.data.get("reason", ""))
                    elif i.kind == "notice":
                        n.holders[a] = self._t(i.received_ms)
                        n.number = n.number or str(i.data.get("number", ""))
                        n.notice_id = n.notice_id or i.msg_id.hex()
                    elif i.kind == "notice-cancel":
                        n.cancelled[a] = self._t(i.received_ms)
            if n.notice_id and n.notice_id in msgs:
                n.audience = msgs[n.notice_id].recipients
            obs.notices[name] = n

    def _register(self) -> dict[str, Any]:
        """The notice authority's register (request id -> desk entry), read-only."""
        from i24net.store.notices import SqliteNoticeStore, notice_store_path

        assert self.home is not None
        path = notice_store_path(self.home, self.authority) if self.authority else None
        if path is None or not path.exists():
            return {}
        with SqliteNoticeStore(path, readonly=True) as ns:
            return {e.request_id: e for e in ns.load().entries}

    def _drops(self, agencies: tuple[str, ...]) -> list[DropObs]:
        assert self.home is not None
        out = []
        for a in (*agencies, "router"):
            path = self.home.logs_dir / f"audit-{a}.jsonl"
            if not path.exists():
                continue
            for line in path.read_bytes().splitlines():
                try:
                    entry = json.loads(line)
                except ValueError:
                    continue
                if entry.get("event") == "drop":
                    where = "router" if a == "router" else "node"
                    out.append(DropObs(self._t(int(entry.get("at_ms", self.start_ms))), a,
                                       f"{where}:{entry.get('reason', '?')}",
                                       str(entry.get("msg_id", ""))))
        return out


def _decision(notice: Any, t: Callable[[int], float]) -> tuple[str, str, float | None]:
    """(decision, reason, when) of a registered request, in the words of
    ``NoticeObs.decision``: published (also once updated or cancelled after publication),
    refused, under-review, or "" while the desk has not screened it."""
    from i24net.core.notices import NoticeEvent, NoticeState

    if notice.published_ms is not None:
        return "published", "", t(notice.published_ms)
    if notice.state is NoticeState.REFUSED:
        at = next((h.at_ms for h in reversed(notice.history)
                   if h.event is NoticeEvent.REFUSE), None)
        return "refused", notice.reason, None if at is None else t(at)
    if notice.state is NoticeState.UNDER_REVIEW:
        return "under-review", "", None
    return "", "", None


def _repeated(inj: m.Inject) -> bool:
    """A repeating send, or a compromise with several forgeries: its copies play on a
    thread of their own, beside the other injects."""
    return (isinstance(inj, m.Send) and inj.repeat > 1) or \
        (isinstance(inj, m.Compromise) and inj.count > 1)


def _with_lateness(detail: str, late: float) -> str:
    return f"{detail}; played {late:.3f} s late" if detail else f"played {late:.3f} s late"


def _flow_violations(versions: list[Directory], obs: Observations,
                     inboxes: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """The live run's information-flow check, from the stores: every inbox item was
    addressed to its holder, who is cleared for its label, and came from a sender whose
    outbox holds it (no body reached anyone unaddressed).

    Clearances change during a run (a joint operation grants and takes away its caveat):
    an item is judged by the directory version in force when it was received (the newest
    issued before), or the one before that, which the router may still have applied to
    a message accepted just before the new version reached it."""
    ordered = sorted(versions, key=lambda v: v.serial)

    def in_force(received_ms: int) -> list[Directory]:
        n = max([k for k, v in enumerate(ordered) if v.issued_ms <= received_ms] or [0])
        return ordered[max(0, n - 1):n + 1]

    by_id = {msg.id: msg for msg in obs.messages}
    out: list[dict[str, Any]] = []
    for a, items in sorted(inboxes.items()):
        for i in items:
            mid = i.msg_id.hex()
            msg = by_id.get(mid)
            if msg is None:
                out.append({"rule": "unknown-origin", "agency": a, "msg_id": mid})
                continue
            if a not in msg.recipients:
                out.append({"rule": "unaddressed", "agency": a, "msg_id": mid})
            try:
                lab = Label.parse(i.label)
                if not any(a in d.agencies and d.scale.dominates(d.agencies[a].clearance, lab)
                           for d in in_force(i.received_ms)):
                    out.append({"rule": "uncleared", "agency": a, "msg_id": mid,
                                "label": i.label})
            except (I24Error, KeyError):
                out.append({"rule": "bad-label", "agency": a, "msg_id": mid})
    return out


def run_live(exercise: m.Exercise, *, progress: Progress | None = None,
             workdir: Path | None = None, keep: bool = False) -> Result:
    return LiveRun(exercise, progress=progress, workdir=workdir, keep=keep).run()
