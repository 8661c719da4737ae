"""Throughput with K router shards against one router, on the same broker, in one run.

Theory of operation: each round builds a fresh network home (``chaos.prepare``: the GS,
Europol and ``nodes`` agencies), starts it as separate processes with ``i24net up``'s
supervisor (brokers, K routers, one node per agency), writes ``messages`` messages straight
into the senders' outboxes (``chaos.feed``) and times them from the first write until every
outbox is final, i.e. every recipient's signed receipt is back at its sender. That is the
end-to-end rate of the whole pipeline: seal, submit, route, stamp, deliver, open, receipt.

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

from i24net.bench import cpu_seconds, machine_info
from i24net.chaos import feed, prepare, settled
from i24net.core.errors import WaitTimeout
from i24net.runtime import router_audit_path
from i24net.supervisor import Supervisor

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


def _wait(home: Any, agencies: list[str], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not settled(home, agencies):
        if time.monotonic() > deadline:
            raise WaitTimeout(f"{what} did not settle within {timeout:g} s",
                              reason="timeout")
        time.sleep(0.2)


def run_scale(engine: str = "nats", *, shards: int = 2, nodes: int = 8,
              messages: int = 1500, repeats: int = 3, timeout: float = 600.0,
              say: Say = lambda _s: None, keep: Path | None = None) -> dict[str, Any]:
    """1 router against ``shards`` routers, ``repeats`` rounds each, alternating."""
    started = time.monotonic()
    rounds: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="i24net-scale-") as tmp:
        work = keep or Path(tmp)
        for rep in range(repeats):
            for k in (1, shards):
                say(f"round {rep + 1}/{repeats}, {k} router(s) on {engine}")
                rounds.append(scale_round(engine, k, nodes, messages, work, seed=rep + 1,
                                          timeout=timeout, say=say))
    one = [r["rate"] for r in rounds if r["routers"] == 1]
    many = [r["rate"] for r in rounds if r["routers"] == shards]
    result = {**machine_info(), "engine": engine, "nodes": nodes, "messages": messages,
              "repeats": repeats, "shards": shards, "rounds": rounds,
              "rate_1_router": round(statistics.median(one), 1),
              f"rate_{shards}_routers": round(statistics.median(many), 1),
              "ratio": round(statistics.median(many) / statistics.median(one), 2),
              "seconds": round(time.monotonic() - started, 1)}
    return result
