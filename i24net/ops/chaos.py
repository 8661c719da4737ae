"""The chaos soak: a live network under kills and partitions, and a checker for what was lost.

Theory of operation: ``Soak`` starts a real network (separate processes, on Mosquitto or the
embedded broker), feeds N messages into the senders' outboxes at a steady rate, and while
they flow a seeded ``random.Random`` SIGKILLs the router, random nodes and the broker and
restarts them, and "partitions" nodes by freezing them (SIGSTOP, then SIGCONT): to the
broker and the rest of the network a frozen process is indistinguishable from one cut off.
On a clustered broker with sharded routers the ``cluster`` plan does what a member loss and
a router loss look like in production: mid-stream it SIGKILLs one cluster member and one
router and keeps them down while messages keep flowing (nodes fail over to another member;
a surviving router takes the dead router's shard over), then brings both back (the shard is
handed back). The ``random`` plan picks members and routers among its targets.

The verdict comes from an outside history (``i24net.ops.history``), never from the daemons'
own buffered audit: the feeder records each submit once it returned (fsync'd before the
message counts as sent), the application consumer of every agency records each hand-over
from its node's hand-over log, and at the end the senders' outcomes are recorded. When the
schedule is over the soak waits (bounded) for the outboxes to settle; ``i24net.ops.checker``
then classifies every submitted message (delivered once, duplicated, misdelivered, refused
with its reason, expired, lost, pending) and fails the run unless each one was delivered
once: a refusal is a failure, since the soak sends nothing the policy should refuse.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from i24net.config.home import Home, now_ms
from i24net.core.envelope import Body, make_header
from i24net.core.labels import Label, Precedence
from i24net.ops import client
from i24net.ops.checker import Allowance, Verdict
from i24net.ops.history import Consumers, History, judge, record_outcomes
from i24net.ops.supervisor import Supervisor

PLANS = ("random", "cluster")


@dataclass
class ChaosReport:
    sent: int = 0  # submits in the history
    accepted: int = 0  # neither refused nor expired
    delivered: int = 0
    lost: int = 0
    duplicated: int = 0
    unexpected: int = 0
    misdelivered: int = 0
    refused: int = 0
    refused_unexpected: int = 0
    expired: int = 0
    failed: int = 0  # refused or expired
    pending: int = 0
    ok: bool = False  # the checker's verdict
    failures: list[str] = field(default_factory=list)
    history: str = ""
    kills: int = 0
    freezes: int = 0
    broker_restarts: int = 0
    router_kills: int = 0
    node_kills: int = 0  # SIGKILLs of an agency's own process
    host_kills: int = 0  # SIGKILLs of a node host: all its agencies at once
    agency_crashes: int = 0  # agencies stopped abruptly inside their host
    hosts: int = 0
    isolated: int = 0
    elapsed_s: float = 0.0
    settle_s: float = 0.0
    takeovers: int = 0
    plan: str = "random"
    engine: str = ""
    nodes: int = 0
    routers: int = 1
    members: int = 1
    # on a cluster, from the connections the nodes' logs show they made: agencies that
    # connected to each member, and deliveries whose sender and recipient stayed on two
    # different members from submit to hand-over (so the cluster carried them across)
    nodes_per_member: dict[str, int] = field(default_factory=dict)
    crossed_members: int = 0
    seed: int = 0
    lost_ids: list[str] = field(default_factory=list)
    duplicated_ids: list[str] = field(default_factory=list)
    failed_reasons: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    def take(self, v: Verdict) -> None:
        """The checker's classification of the history."""
        c = v.counts
        self.sent = v.submitted
        self.delivered, self.lost, self.duplicated = c["delivered"], c["lost"], c["duplicated"]
        self.misdelivered, self.refused, self.expired = (c["misdelivered"], c["refused"],
                                                         c["expired"])
        self.pending, self.unexpected = c["pending"], v.unexpected
        self.refused_unexpected = v.refused_unexpected
        self.failed = self.refused + self.expired
        self.accepted = self.sent - self.failed
        self.ok, self.failures = v.ok, list(v.failures)
        self.lost_ids, self.duplicated_ids = v.ids["lost"], v.ids["duplicated"]
        self.failed_reasons = dict(v.refusal_reasons)
        if self.expired:
            self.failed_reasons["expired"] = self.expired


def pick_port_block(span: int, host: str = "127.0.0.1") -> int:
    """A base port whose ``span`` following ports are all free (for a cluster's members)."""
    import socket

    rng = random.Random()
    for _ in range(200):
        base = rng.randrange(20_000, 60_000 - span)
        try:
            socks = []
            for port in range(base, base + span):
                s = socket.socket()
                socks.append(s)
                s.bind((host, port))
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
        return base
    raise OSError(f"no block of {span} free ports found on {host}")


def prepare(path: Path, nodes: int, engine: str, *, routers: int = 1,
            preset: str | None = None, spec: str | None = None) -> Home:
    """A network of ``nodes`` law-enforcement agencies plus the GS and Europol, or the
    built-in network ``preset``, or the network ``spec`` (a network.toml's text; in those
    two every active agency sends and receives), with ``routers`` router shards."""
    from i24net.broker import pick_free_port
    from i24net.config.presets import configure, preset_toml, synthetic_toml
    from i24net.core.netspec import CLUSTER_ENGINES

    text = spec if spec is not None else preset_toml(preset) if preset else \
        synthetic_toml(max(1, nodes) + 2, seed=1)  # GS-LYON, EUROPOL and the nodes
    port = pick_port_block(40) if engine in CLUSTER_ENGINES else pick_free_port()
    text = configure(text, engine=engine, port=port, routers=routers)
    home = Home(path)
    home.init(text, force=True)
    return home


def feed(home: Home, agencies: list[str], n: int, rng: random.Random, *,
         first: int = 1, history: History | None = None,
         label: Label = Label("UNCLASSIFIED")) -> int:
    """Write ``n`` messages (900-byte bodies, 80% to one recipient, 20% to three) straight
    into random senders' outboxes, due at once, as ``NodeMachine.submit`` does for
    ``publish``; record each submit in ``history`` (fsync'd before this returns) and wake
    the senders' nodes. Returns ``n``."""
    from dataclasses import replace

    from i24net.core.node import NodeMachine

    d = home.directory()
    stores: dict[str, Any] = {}
    machines: dict[str, NodeMachine] = {}

    def machine(a: str) -> NodeMachine:  # opened for the senders drawn only
        if a not in machines:
            stores[a] = client.open_store(home, a)
            machines[a] = NodeMachine(a, home.keys(a), d, stores[a], random_bytes=os.urandom)
        return machines[a]

    woken: set[str] = set()
    try:
        for i in range(n):
            sender = rng.choice(agencies)
            woken.add(sender)
            others = [a for a in agencies if a != sender]
            to = rng.sample(others, k=1 if rng.random() < 0.8 else min(3, len(others)))
            header = make_header(d, sender=sender, addressing=to, kind="message",
                                 label=label, now_ms=now_ms(),
                                 ttl_ms=6 * 3600_000, random_bytes=os.urandom,
                                 precedence=Precedence.ROUTINE)
            machine(sender).submit(header, Body(f"chaos-{first + i:06d}", "x" * 900),
                                    now_ms())
            entry = stores[sender].outbox_get(header.id)
            assert entry is not None
            stores[sender].outbox_put(replace(entry, next_ms=0))
            if history is not None:
                history.submit(header.id, sender, to, subject=f"chaos-{first + i:06d}")
    finally:
        for s in stores.values():
            s.close()
        if history is not None:
            history.flush()  # on disk before the caller counts these as sent
    for a in sorted(woken):
        client.wake(home, a, timeout=1.0)  # a frozen host answers when it thaws
    return n


_CONNECTED = re.compile(r"(?m)^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) \S+ \w+ "
                        r"([A-Za-z0-9-]+): connected to ([0-9.]+:[0-9]+) ")


def connections(logs: Path, agencies: list[str]) -> dict[str, list[tuple[int, str]]]:
    """When each agency's node connected to which broker member (``host:port``), from
    what the transports logged in the daemons' logs: (Unix ms, member), in time order."""
    wanted = set(agencies)
    found: dict[str, list[tuple[int, str]]] = {}
    for path in sorted(logs.glob("*.log")):
        for m in _CONNECTED.finditer(path.read_text(errors="replace")):
            if m[3] in wanted:
                at = time.mktime(time.strptime(m[1], "%Y-%m-%d %H:%M:%S"))  # local time
                found.setdefault(m[3], []).append((int(at * 1000) + int(m[2]), m[4]))
    return {a: sorted(events) for a, events in found.items()}


def _member_throughout(events: list[tuple[int, str]], start: int, end: int) -> str | None:
    """The member a node was connected to for the whole of [start, end] (its last
    connection before ``start``, and no other one until ``end``), else None."""
    before = [member for at, member in events if at <= start]
    if not before or any(start < at <= end for at, _ in events):
        return None
    return before[-1]


def crossed(history: Path, timeline: dict[str, list[tuple[int, str]]]) -> int:
    """Deliveries in ``history`` that the cluster must have carried from one member to
    another: from submit to hand-over the sender stayed connected to one member and the
    recipient to another (so the message entered through the first and left through the
    second)."""
    records = [json.loads(line) for line in history.read_bytes().splitlines()]
    submits = {r["id"]: r for r in records if r["op"] == "submit"}
    n = 0
    for r in records:
        s = submits.get(r["id"]) if r["op"] == "deliver" else None
        if s is None:
            continue
        a = _member_throughout(timeline.get(s["sender"], []), s["t"], r["t"])
        b = _member_throughout(timeline.get(r["agency"], []), s["t"], r["t"])
        n += bool(a and b and a != b)
    return n


def settled(home: Home, agencies: list[str]) -> bool:
    """Whether every outbox is final (delivered, refused or expired)."""
    for a in agencies:
        with client.open_store(home, a, readonly=True) as store:
            if store.counts().get("outbox.active", 0):
                return False
    return True


class Soak:
    def __init__(self, home: Home, *, messages: int, seed: int, duration: float,
                 engine: str, plan: str = "random", isolate: int = 4,
                 label: Label = Label("UNCLASSIFIED"),
                 history: str | os.PathLike[str] | None = None,
                 log: Callable[[str], None] = lambda _: None,
                 progress: Callable[[int, int], None] = lambda _a, _b: None) -> None:
        self.home = home
        self.sup = Supervisor(home)
        self.label = label
        self.history_path = Path(history) if history else home.path / "history.jsonl"
        self.history: History | None = None
        self.members_of: dict[str, list[tuple[int, str]]] = {}
        self.messages = messages
        self.rng = random.Random(seed)
        self.duration = duration
        self.engine = engine
        self.log = log
        self.progress = progress
        d = home.directory()
        # the synthetic network's law-enforcement agencies, or every agency of a preset
        self.agencies = sorted(a for a in d.agencies if a.startswith("LEA-")) or \
            sorted(a.id for a in d.agencies.values() if a.active)
        if plan not in PLANS:
            raise ValueError(f"unknown chaos plan {plan!r}: choose one of {', '.join(PLANS)}")
        self.plan = plan
        self.routers = self.sup.routers()
        self.brokers = self.sup.brokers(engine)
        # A few agencies get their own process, so SIGKILL hits a real agency process;
        # the rest share node hosts, which get SIGKILLed whole.
        k = min(isolate, max(1, len(self.agencies) // 5)) if isolate else 0
        self.isolated = sorted(self.rng.sample(self.agencies, k))
        self.hosts: list[str] = []
        self.hosted = [a for a in self.agencies if a not in self.isolated]
        self.report = ChaosReport(engine=engine, nodes=len(self.agencies), seed=seed,
                                  plan=plan, routers=len(self.routers),
                                  members=len(self.brokers), isolated=len(self.isolated))

    def _schedule(self) -> list[tuple[float, str, str]]:
        """(at seconds, action, target): kills, crashes and freezes spread over the feeding
        time. A node target is an isolated agency's process or a whole host (SIGKILL), or
        an agency inside its host ("crash": its connection dropped, nothing flushed)."""
        if self.plan == "cluster":
            return self._cluster_schedule()
        events = []
        procs = self.isolated + self.hosts
        t = self.rng.uniform(2.0, 4.0)
        while t < self.duration * 0.85:
            roll = self.rng.random()
            if roll < 0.2:
                events.append((t, "kill", self.rng.choice(self.routers)))
            elif roll < 0.32:
                events.append((t, "kill", self.rng.choice(self.brokers)))
            elif roll < 0.47 and self.isolated:
                events.append((t, "kill", self.rng.choice(self.isolated)))
            elif roll < 0.57 and self.hosts:
                events.append((t, "kill", self.rng.choice(self.hosts)))
            elif roll < 0.8 and self.hosted:
                events.append((t, "crash", self.rng.choice(self.hosted)))
            else:
                events.append((t, "freeze", self.rng.choice(procs)))
            t += self.rng.uniform(2.0, 6.0)
        return events

    def _cluster_schedule(self) -> list[tuple[float, str, str]]:
        """SIGKILL one member and one router mid-stream, keep both down for a third of the
        run while messages flow, then bring them back; random node kills around it."""
        d = self.duration * 0.85
        member = self.brokers[self.rng.randrange(len(self.brokers))]
        router = self.routers[-1]
        events = [(0.25 * d, "down", member), (0.30 * d, "down", router),
                  (0.65 * d, "up", member), (0.70 * d, "up", router)]
        t = self.rng.uniform(2.0, 4.0)
        while t < d:
            roll = self.rng.random()
            if roll < 0.3 and self.hosted:
                events.append((t, "crash", self.rng.choice(self.hosted)))
            else:
                events.append((t, "kill" if roll < 0.7 else "freeze",
                               self.rng.choice(self.isolated + self.hosts)))
            t += self.rng.uniform(4.0, 8.0)
        return sorted(events)

    def _count_kill(self, target: str) -> None:
        self.report.kills += 1
        if target.startswith("router"):
            self.report.router_kills += 1
        elif target.startswith("broker"):
            self.report.broker_restarts += 1
        elif self.sup.is_host(target):
            self.report.host_kills += 1
        else:
            self.report.node_kills += 1

    def _spawn(self, target: str) -> None:
        self.sup.wait_ready([self.sup.spawn(target, self.engine
                                            if target.startswith("broker") else None)])

    def _act(self, action: str, target: str) -> None:
        if action == "crash":
            if self.sup.stop_agencies([target], kill=True):
                self.report.kills += 1
                self.report.agency_crashes += 1
            time.sleep(self.rng.uniform(0.2, 1.5))
            self.sup.start_agencies([target])
        elif action == "kill":
            if self.sup.kill(target):
                self._count_kill(target)
            time.sleep(self.rng.uniform(0.2, 1.5))
            self._spawn(target)
        elif action == "down":
            if self.sup.kill(target):
                self._count_kill(target)
        elif action == "up":
            if target not in self.sup.running():
                self._spawn(target)
        else:
            p = self.sup.load().get(target)
            if p is None or not p.alive:
                return
            os.killpg(p.pid, signal.SIGSTOP)
            self.report.freezes += 1
            time.sleep(self.rng.uniform(1.0, 4.0))
            os.killpg(p.pid, signal.SIGCONT)
        self.log(f"{action} {target}")

    def _feed(self, n: int) -> None:
        self.report.sent += feed(self.home, self.agencies, n, self.rng,
                                 first=self.report.sent + 1, history=self.history,
                                 label=self.label)

    def run(self, settle_timeout: float = 300.0) -> ChaosReport:
        """Start the network, feed and hurt it, let it settle, judge the history."""
        t0 = time.monotonic()
        self.report.history = str(self.history_path)
        self.history = History(self.history_path, "chaos", plan=self.plan,
                               engine=self.engine, seed=self.report.seed,
                               agencies=len(self.agencies))
        consumers = Consumers(self.home, self.agencies, self.history,
                              interval=max(0.25, len(self.agencies) / 400))
        try:
            self.sup.up(self.engine, isolate=self.isolated)
            consumers.start()
            self._run(t0, settle_timeout)
        finally:
            try:
                self._observe()
                consumers.stop()  # a last look at every hand-over log
                record_outcomes(self.home, self.agencies, self.history)
            finally:
                self.history.close()
                self.sup.down()
        self.report.take(judge(self.history_path, Allowance()))
        if self.members_of:
            self.report.crossed_members = crossed(self.history_path, self.members_of)
        self.report.elapsed_s = round(time.monotonic() - t0, 1)
        return self.report

    def _run(self, t0: float, settle_timeout: float) -> None:
        self.hosts = sorted(n for n in self.sup.load() if self.sup.is_host(n))
        self.report.hosts = len(self.hosts)
        schedule = self._schedule()
        rate = self.messages / max(1.0, self.duration * 0.85)
        fed = 0
        while fed < self.messages or schedule:
            elapsed = time.monotonic() - t0
            due = min(self.messages, int(elapsed * rate) + 1)
            if due > fed:
                self._feed(due - fed)
                fed = due
                self.progress(fed, self.messages)
            if schedule and schedule[0][0] <= elapsed:
                _, action, target = schedule.pop(0)
                self._act(action, target)
            else:
                time.sleep(0.05)
        self.sup.up(self.engine)  # anything the schedule left down comes back
        down = [a for a, (state, _, _) in self.sup.agency_states().items()
                if state != "up"]
        if down:
            self.sup.start_agencies(down)
        settle0 = time.monotonic()
        while time.monotonic() - settle0 < settle_timeout:
            if self._settled():
                break
            time.sleep(1.0)
        self.report.settle_s = round(time.monotonic() - settle0, 1)
        time.sleep(1.0)  # a late re-delivery would show as a duplicate

    def _observe(self) -> None:
        """What the logs say: shard takeovers, and which member each node was on."""
        logs = self.home.logs_dir
        for name in self.routers:
            path = logs / f"{name}.log"
            if path.exists():
                self.report.takeovers += path.read_text(errors="replace").count(
                    "taking it over")
        if len(self.brokers) > 1:
            self.members_of = connections(logs, self.agencies)
            spread: Counter[str] = Counter(m for events in self.members_of.values()
                                           for m in {member for _, member in events})
            self.report.nodes_per_member = dict(sorted(spread.items()))

    def _settled(self) -> bool:
        return settled(self.home, self.agencies)
