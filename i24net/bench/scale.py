"""Throughput with K router shards against one router, on the same broker, in one run.

Theory of operation: each round builds a fresh network home (``chaos.prepare``: the GS,
Europol and ``nodes`` agencies), starts it as separate processes with ``i24net up``'s
supervisor (brokers, K routers, one node per agency), writes ``messages`` messages straight
into the senders' outboxes (``chaos.feed``) and times them from the first write until every
outbox is final, i.e. every recipient's signed receipt is back at its sender. That is the
end-to-end rate of the whole pipeline: seal, submit, route, stamp, deliver, open, receipt.

``router_bound_round`` measures the routers alone: no node daemons; one light process seals
every message beforehand, then publishes them on the senders' submit topics, answers each
delivery with the recipient's signed receipt (as a node would, without opening the body or
writing SQLite) and counts the receipts the routers forward back to the senders. The routers
do all their usual work (verify, decide, stamp, SQLite, reports, receipts, cross-shard
forwarding); the clock stops at the last receipt. That shows what sharding buys when the
routers are the bottleneck, which on a small machine the full pipeline is not.

Rounds alternate between the layouts (1, K, 1, K, ...) so that a noisy machine affects both
alike; the figures are medians. Each round also reads, from ``/proc``, the CPU seconds every
router process used and, from the routers' audit logs, how many messages each shard
accepted, which shows how the load was shared.
"""

from __future__ import annotations

import random
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from i24net.bench.pipeline import cpu_seconds, machine_info
from i24net.core.errors import WaitTimeout
from i24net.ops.chaos import feed, prepare, settled
from i24net.ops.supervisor import Supervisor
from i24net.shell.runtime import router_audit_path

Say = Callable[[str], None]


def _accepted(path: Path) -> int:
    if not path.exists():
        return 0
    return path.read_bytes().count(b'"event":"accept"')


def scale_round(engine: str, routers: int, nodes: int, messages: int, work: Path, *,
                seed: int, timeout: float, say: Say) -> dict[str, Any]:
    """One timed round with ``routers`` shards; returns its figures."""
    home = prepare(work / f"routers-{routers}-seed-{seed}", nodes, engine, routers=routers)
    sup = Supervisor(home)
    rng = random.Random(seed)
    agencies = sorted(a for a in home.directory().agencies if a.startswith("LEA-"))
    sup.up(engine)
    try:
        names = sup.routers()
        procs = sup.load()
        # warm-up: connections, caches and SQLite files exist before the clock starts
        feed(home, agencies, 2 * len(agencies), rng)
        _wait(home, agencies, timeout, "the warm-up")
        before = {n: cpu_seconds(procs[n].pid) for n in names}
        accepted0 = {k: _accepted(router_audit_path(home, k)) for k in range(1, routers + 1)}
        t0 = time.monotonic()
        feed(home, agencies, messages, rng, first=1_000)
        _wait(home, agencies, timeout, f"{messages} messages")
        seconds = time.monotonic() - t0
        cpu = {n: round(cpu_seconds(procs[n].pid) - before[n], 2) for n in names}
    finally:
        sup.down()
    accepted = {f"shard-{k}": _accepted(router_audit_path(home, k)) - accepted0[k]
                for k in range(1, routers + 1)}
    rate = messages / seconds
    say(f"  {routers} router(s): {messages} messages in {seconds:.1f} s = {rate:.0f} msg/s; "
        f"router CPU {cpu}; accepted per shard {accepted}")
    return {"routers": routers, "messages": messages, "seconds": round(seconds, 2),
            "rate": round(rate, 1), "router_cpu_s": cpu, "accepted": accepted}


def router_bound_round(engine: str, routers: int, agencies_n: int, messages: int,
                       work: Path, *, seed: int, timeout: float, say: Say) -> dict[str, Any]:
    """One timed round of routers alone (see the module docstring)."""
    import asyncio

    home = prepare(work / f"bound-{routers}-seed-{seed}", agencies_n, engine, routers=routers)
    sup = Supervisor(home)
    rng = random.Random(seed)
    agencies = sorted(a for a in home.directory().agencies if a.startswith("LEA-"))
    sealed = _seal_all(home, agencies, messages, rng)
    sup.up(engine, agencies=[])
    try:
        names = sup.routers()
        procs = sup.load()
        before = {n: cpu_seconds(procs[n].pid) for n in names}
        seconds = asyncio.run(_drive(home, agencies, sealed, timeout))
        cpu = {n: round(cpu_seconds(procs[n].pid) - before[n], 2) for n in names}
    finally:
        sup.down()
    rate = messages / seconds
    say(f"  routers only, {routers} router(s): {messages} messages in {seconds:.1f} s = "
        f"{rate:.0f} msg/s; router CPU {cpu}")
    return {"routers": routers, "messages": messages, "seconds": round(seconds, 2),
            "rate": round(rate, 1), "router_cpu_s": cpu}


def _seal_all(home: Any, agencies: list[str], n: int,
              rng: random.Random) -> dict[str, list[bytes]]:
    """``n`` sealed envelopes (900-byte bodies, one recipient each), by sender."""
    import os

    from i24net.config.home import now_ms
    from i24net.core.envelope import Body, make_header, recipient_keys, seal
    from i24net.core.labels import Label

    d = home.directory()
    keys = {a: home.keys(a) for a in agencies}
    out: dict[str, list[bytes]] = {a: [] for a in agencies}
    for i in range(n):
        sender = rng.choice(agencies)
        to = rng.choice([a for a in agencies if a != sender])
        h = make_header(d, sender=sender, addressing=[to], kind="message",
                        label=Label("UNCLASSIFIED"), now_ms=now_ms(), ttl_ms=3_600_000,
                        random_bytes=os.urandom)
        out[sender].append(seal(h, Body(f"bound-{i}", "x" * 900), keys[sender],
                                recipient_keys(d, h), random_bytes=os.urandom))
    return out


async def _drive(home: Any, agencies: list[str], sealed: dict[str, list[bytes]],
                 timeout: float) -> float:
    """Publish every envelope, receipt every delivery, wait for every receipt back."""
    import asyncio
    import contextlib

    from i24net.config.home import now_ms
    from i24net.core import frames as fr
    from i24net.core.envelope import Envelope
    from i24net.shell.runtime import make_transport

    prefix = home.directory().prefix
    keys = {a: home.keys(a) for a in agencies}
    expected = sum(len(v) for v in sealed.values())
    back: set[tuple[bytes, str]] = set()
    done = asyncio.Event()
    tasks: set[asyncio.Task[None]] = set()
    links = {a: make_transport(home, a, client_suffix="load") for a in agencies}

    def spawn(coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    async def consume(a: str) -> None:
        async for d in links[a].deliveries():
            magic = fr.peek_magic(d.payload)
            if magic == fr.DELIVERY:
                env = Envelope.parse(fr.parse_frame(d.payload).extra)
                rec = fr.Receipt(env.header.id, env.digest, env.header.sender, a,
                                 "delivered", "", now_ms())
                spawn(links[a].publish(f"{prefix}/submit/{a}", fr.make_receipt(rec, keys[a])))
            elif magic == fr.RECEIPT:
                rec = fr.Receipt.from_doc(fr.parse_frame(d.payload).doc)
                back.add((rec.msg_id, rec.receiver))
                if len(back) >= expected:
                    done.set()

    async with contextlib.AsyncExitStack() as stack:
        for a, link in links.items():
            await stack.enter_async_context(link)
            await link.subscribe(f"{prefix}/inbox/{a}")
            spawn(consume(a))
        t0 = time.monotonic()
        for a, envs in sealed.items():
            for raw in envs:
                spawn(links[a].publish(f"{prefix}/submit/{a}", raw))
        try:
            await asyncio.wait_for(done.wait(), timeout)
        except TimeoutError:
            raise WaitTimeout(f"{len(back)} of {expected} receipts back after {timeout:g} s",
                              reason="timeout") from None
        seconds = time.monotonic() - t0
        for task in list(tasks):
            task.cancel()
    return seconds


def _wait(home: Any, agencies: list[str], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not settled(home, agencies):
        if time.monotonic() > deadline:
            raise WaitTimeout(f"{what} did not settle within {timeout:g} s",
                              reason="timeout")
        time.sleep(0.2)


def run_scale(engine: str = "nats", *, shards: int = 2, nodes: int = 8,
              messages: int = 1500, repeats: int = 3, timeout: float = 600.0,
              say: Say = lambda _s: None, keep: Path | None = None,
              bound_agencies: int = 16) -> dict[str, Any]:
    """1 router against ``shards`` routers, ``repeats`` rounds each, alternating: the full
    pipeline (``nodes`` node daemons) and the routers alone (``bound_agencies`` senders)."""
    started = time.monotonic()
    rounds: list[dict[str, Any]] = []
    bound: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="i24net-scale-") as tmp:
        work = keep or Path(tmp)
        for rep in range(repeats):
            for k in (1, shards):
                say(f"round {rep + 1}/{repeats}, {k} router(s) on {engine}")
                rounds.append(scale_round(engine, k, nodes, messages, work, seed=rep + 1,
                                          timeout=timeout, say=say))
                bound.append(router_bound_round(engine, k, bound_agencies, messages, work,
                                                seed=rep + 1, timeout=timeout, say=say))
    return {**machine_info(), "engine": engine, "nodes": nodes, "messages": messages,
            "repeats": repeats, "shards": shards, "bound_agencies": bound_agencies,
            "pipeline": _summary(rounds, shards), "routers_only": _summary(bound, shards),
            "seconds": round(time.monotonic() - started, 1)}


def _summary(rounds: list[dict[str, Any]], shards: int) -> dict[str, Any]:
    one = [r["rate"] for r in rounds if r["routers"] == 1]
    many = [r["rate"] for r in rounds if r["routers"] == shards]
    return {"rounds": rounds, "rate_1_router": round(statistics.median(one), 1),
            f"rate_{shards}_routers": round(statistics.median(many), 1),
            "ratio": round(statistics.median(many) / statistics.median(one), 2)}
