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

When the schedule is over it waits (bounded) for the outboxes to settle, then ``check``
reads every history — each sender's outbox, each receiver's inbox, and each node's audit
log of deliveries to its application — and classifies every message:

- delivered: accepted and in every recipient's inbox;
- lost: accepted but missing from some recipient's inbox;
- duplicated: handed to some recipient's application more than once (audit ``received``);
- unexpected: in an inbox but never sent by anyone;
- failed: reported to its sender as refused or expired.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from i24net import client
from i24net.core.envelope import Body, make_header
from i24net.core.labels import Label, Precedence
from i24net.home import Home, now_ms
from i24net.supervisor import Supervisor

PLANS = ("random", "cluster")


@dataclass
class ChaosReport:
    sent: int = 0
    accepted: int = 0
    delivered: int = 0
    lost: int = 0
    duplicated: int = 0
    unexpected: int = 0
    failed: int = 0
    pending: int = 0
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
    nodes_start_member: dict[str, int] = field(default_factory=dict)
    seed: int = 0
    lost_ids: list[str] = field(default_factory=list)
    duplicated_ids: list[str] = field(default_factory=list)
    failed_reasons: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)


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
            preset: str | None = None) -> Home:
    """A network of ``nodes`` law-enforcement agencies plus the GS and Europol, or the
    built-in network ``preset`` (every agency of it sends and receives), with ``routers``
    router shards."""
    from i24net.broker import pick_free_port
    from i24net.core.netspec import CLUSTER_ENGINES
    from i24net.presets import configure, preset_toml, synthetic_toml

    text = preset_toml(preset) if preset else \
        synthetic_toml(max(1, nodes) + 2, seed=1)  # GS-LYON, EUROPOL and the nodes
    port = pick_port_block(40) if engine in CLUSTER_ENGINES else pick_free_port()
    text = configure(text, engine=engine, port=port, routers=routers)
    home = Home(path)
    home.init(text, force=True)
    return home


def check(home: Home, agencies: list[str]) -> ChaosReport:
    """Classify every message from the senders' and receivers' histories."""
    from i24net.runtime import node_store_path

    r = ChaosReport()
    agencies = [a for a in agencies if node_store_path(home, a).exists()]
    sent: dict[bytes, tuple[str, tuple[str, ...]]] = {}
    accepted: set[bytes] = set()
    for a in agencies:
        with client.open_store(home, a, readonly=True) as store:
            for e in store.outbox_list(limit=None):
                sent[e.msg_id] = (a, e.recipients)
                if e.state in ("refused", "expired"):
                    r.failed += 1
                    r.failed_reasons[e.reason] = r.failed_reasons.get(e.reason, 0) + 1
                else:
                    accepted.add(e.msg_id)
                    if e.state != "delivered":
                        r.pending += 1
    holders: dict[bytes, set[str]] = {}
    for a in agencies:
        with client.open_store(home, a, readonly=True) as store:
            for i in store.inbox_list(limit=None):
                holders.setdefault(i.msg_id, set()).add(a)
        handed: Counter[str] = Counter()
        audit = home.logs_dir / f"audit-{a}.jsonl"
        if audit.exists():
            for line in audit.read_bytes().splitlines():
                with contextlib.suppress(ValueError):
                    entry = json.loads(line)
                    if entry.get("event") == "received":
                        handed[str(entry.get("msg_id", ""))] += 1
        for mid, n in handed.items():
            if n > 1:
                r.duplicated += 1
                r.duplicated_ids.append(f"{mid}@{a}")
    r.sent = len(sent)
    r.accepted = len(accepted)
    r.unexpected = sum(1 for mid in holders if mid not in sent)
    for mid in accepted:
        _, recipients = sent[mid]
        if set(recipients) <= holders.get(mid, set()):
            r.delivered += 1
        else:
            r.lost += 1
            r.lost_ids.append(mid.hex())
    return r


def feed(home: Home, agencies: list[str], n: int, rng: random.Random, *,
         first: int = 1) -> int:
    """Write ``n`` messages (900-byte bodies, 80% to one recipient, 20% to three) straight
    into random senders' outboxes, due at once, and wake the senders' nodes. Returns
    ``n``."""
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
                                 label=Label("UNCLASSIFIED"), now_ms=now_ms(),
                                 ttl_ms=6 * 3600_000, random_bytes=os.urandom,
                                 precedence=Precedence.ROUTINE)
            machine(sender).submit(header, Body(f"chaos-{first + i:06d}", "x" * 900),
                                    now_ms())
            entry = stores[sender].outbox_get(header.id)
            assert entry is not None
            stores[sender].outbox_put(replace(entry, next_ms=0))
    finally:
        for s in stores.values():
            s.close()
    for a in sorted(woken):
        client.wake(home, a, timeout=1.0)  # a frozen host answers when it thaws
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
                 log: Callable[[str], None] = lambda _: None,
                 progress: Callable[[int, int], None] = lambda _a, _b: None) -> None:
        self.home = home
        self.sup = Supervisor(home)
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
                                 first=self.report.sent + 1)

    def run(self, settle_timeout: float = 300.0) -> ChaosReport:
        t0 = time.monotonic()
        self.sup.up(self.engine, isolate=self.isolated)
        self.hosts = sorted(n for n in self.sup.load() if self.sup.is_host(n))
        self.report.hosts = len(self.hosts)
        try:
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
            time.sleep(1.0)  # let the last audit lines reach the files
        finally:
            self._observe()
            self.sup.down()
        checked = check(self.home, self.agencies)
        for key in ("accepted", "delivered", "lost", "duplicated", "unexpected", "failed",
                    "pending", "lost_ids", "duplicated_ids", "failed_reasons"):
            setattr(self.report, key, getattr(checked, key))
        self.report.elapsed_s = round(time.monotonic() - t0, 1)
        return self.report

    def _observe(self) -> None:
        """What the logs say: shard takeovers, and which member each node was on."""
        logs = self.home.logs_dir
        for name in self.routers:
            path = logs / f"{name}.log"
            if path.exists():
                self.report.takeovers += path.read_text(errors="replace").count(
                    "taking it over")
        if len(self.brokers) > 1:
            from i24net.runtime import endpoint, start_index

            members = endpoint(self.home).members
            order = sorted(self.home.directory().agencies)
            spread: Counter[str] = Counter()
            for a in self.agencies:
                host, port = members[start_index(a, len(members), order)]
                spread[f"{host}:{port}"] += 1
            self.report.nodes_start_member = dict(sorted(spread.items()))

    def _settled(self) -> bool:
        return settled(self.home, self.agencies)
