"""Drill: the daemons on an open broker, with an attacker publishing on every topic.

The broker here enforces nothing (``MemoryBroker`` without an ACL, the worst case: a
misconfigured or compromised broker). The real asyncio daemons (``RouterDaemon``,
``NodeDaemon``) run on it; an attacker client publishes garbage, forged frames, a directory
signed by someone else and an older genuine directory on every topic - submit, inbox,
directory, presence. End-to-end signatures and encryption hold (defence in
depth: docs/security.md 3, broker ACLs): every daemon stays up, nothing hostile is acted on,
each refusal is an event (logged
and audited by the daemon), and a legitimate message still arrives exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import random

import pytest
from netfixtures import (
    AUTHORITY_SEED,
    ROGUE_ROUTER,
    ROUTER,
    Rng,
    build,
    demo_directory,
    header,
    keys_for,
    stamp_delivery,
)

from i24net.core import frames as fr
from i24net.core.envelope import Body
from i24net.core.keys import AgencyKeys
from i24net.core.node import MemoryNodeStore, NodeMachine
from i24net.core.router import MemoryRouterStore, RouterMachine
from i24net.shell.daemons import NodeDaemon, RouterDaemon, wall_ms
from i24net.transport.memory import MemoryBroker, MemoryTransport

pytestmark = pytest.mark.timeout(60)

ANCHOR = AgencyKeys("authority", AUTHORITY_SEED, bytes(32)).verify_key
AGENCIES = ("NCB-FR", "NCB-DE", "NCB-US")


def hostile_payloads(rng: random.Random, now: int) -> list[bytes]:
    d = demo_directory()
    env = build("NCB-FR", ["NCB-DE"], now=now)
    forged_env = build("NCB-FR", ["NCB-DE"], now=now, signer=AgencyKeys(
        "NCB-FR", keys_for("NCB-US").signing_seed, keys_for("NCB-US").encryption_secret))
    return [
        b"", b"\x00", b"garbage" * 50, rng.randbytes(300), b"\x94\xa4i24e\x01\xc1",
        b"\x95\xa4i24d\x02" + b"\x91" * 5000, b"\x94\xa4i24s\x02\xc6\xff\xff\xff\xff",
        env[:-10],                                       # truncated envelope
        forged_env,                                      # NCB-US signing as NCB-FR
        stamp_delivery(env, "NCB-DE", 1, signer=ROGUE_ROUTER),  # a router no one lists
        stamp_delivery(forged_env, "NCB-DE", 1),                # genuine stamp, forged body
        fr.make_gap(fr.GapRequest("NCB-DE", 1, 9_999, now), keys_for("NCB-US")),
        d.next_version(now).sign(keys_for("rogue-authority").signing_seed),  # not the GS
        d.sign(AUTHORITY_SEED),                          # genuine but older (held: v2)
        d.next_version(now).sign(AUTHORITY_SEED)[:-1],   # truncated directory
    ]


async def until(check: object, timeout: float = 15.0) -> None:
    async with asyncio.timeout(timeout):
        while not check():  # type: ignore[operator]
            await asyncio.sleep(0.02)


async def test_daemons_survive_hostile_traffic_on_every_topic() -> None:
    d2 = demo_directory().next_version(demo_directory().issued_ms + 1)  # what they hold
    broker = MemoryBroker()  # no ACL at all
    events: list[tuple[str, str, str]] = []

    def record(who: str) -> object:
        return lambda ev: events.append((who, ev.kind, ev.reason))

    links = {name: MemoryTransport(broker, name) for name in ("i24-router", *AGENCIES)}
    router = RouterDaemon(RouterMachine(d2, ROUTER, MemoryRouterStore()), links["i24-router"],
                          directory_anchor=ANCHOR,
                          on_event=record("router"))  # type: ignore[arg-type]
    nodes = {a: NodeDaemon(NodeMachine(a, keys_for(a), d2, MemoryNodeStore(),
                                       random_bytes=Rng(f"open-broker-{a}")),
                           links[a], directory_anchor=ANCHOR,
                           on_event=record(a))  # type: ignore[arg-type]
             for a in AGENCIES}
    topics = [f"{d2.prefix}/{kind}/{a}" for kind in ("submit", "inbox", "presence")
              for a in AGENCIES] + [f"{d2.prefix}/directory", f"{d2.prefix}/submit/NCB-XX"]
    async with contextlib.AsyncExitStack() as stack:
        for link in links.values():
            await stack.enter_async_context(link)
        for daemon in (router, *nodes.values()):
            await stack.enter_async_context(daemon)
        async with MemoryTransport(broker, "attacker") as attacker:
            payloads = hostile_payloads(random.Random(8), wall_ms())
            for topic in topics:
                for payload in payloads:
                    await attacker.publish(topic, payload)
        # the attack is over; every frame was handled (nothing queued or in progress)
        await until(lambda: router.inbound.empty()
                    and all(n.inbound.empty() for n in nodes.values()))
        # a legitimate message, through the daemons
        fr_node = nodes["NCB-FR"].machine
        now = wall_ms()
        h = header("NCB-FR", ["NCB-DE"], d=fr_node.directory, now=now,
                   rng=fr_node.random_bytes, lab="OFFICIAL-USE")
        fr_node.submit(h, Body("legitimate, after the attack"), now)
        nodes["NCB-FR"].kick()
        de_store = nodes["NCB-DE"].machine.store
        await until(lambda: de_store.inbox_has(h.id)
                    and fr_node.store.outbox_get(h.id).state == "delivered")  # type: ignore
        for daemon in (router, *nodes.values()):
            assert daemon.running, daemon.name

    # nothing hostile was acted on
    for a in AGENCIES:
        inbox = nodes[a].machine.store
        assert isinstance(inbox, MemoryNodeStore)
        assert set(inbox.inbox) == ({h.id} if a == "NCB-DE" else set()), a
    assert nodes["NCB-DE"].machine.counters["received"] == 1
    assert router.machine.directory is d2
    assert all(n.machine.directory is d2 for n in nodes.values())
    # every hostile frame was refused or dropped, and each refusal is an event
    kinds = {(who, kind, reason) for who, kind, reason in events}
    assert ("router", "drop", "directory.rollback") in kinds
    assert ("router", "drop", "sig.invalid") in kinds  # the rogue authority's directory
    assert ("NCB-DE", "drop", "directory.rollback") in kinds
    assert ("NCB-DE", "drop", "sig.unknown-key") in kinds  # the rogue router's stamp
    assert ("NCB-DE", "drop", "sig.invalid") in kinds  # the forged envelope, stamped
    assert ("router", "refuse", "sig.invalid") in kinds
    # the legitimate message is the only one accepted and received
    assert [e for e in events if e[1] in ("accept", "received")] == [
        ("router", "accept", "ok"), ("NCB-DE", "received", "")]
    assert sum(n for name, n in router.machine.counters.items()
               if name.startswith(("drop.", "refuse."))) >= len(payloads) * 2
