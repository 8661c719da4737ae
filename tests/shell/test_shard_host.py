"""Router shards in one process on the in-memory broker: serve, take over, hand back.

Two ``ShardHost`` objects stand for two router processes of a home with ``[router] shards
= 2``. Their locks are ``flock`` locks on files in the home's ``state/``, which conflict
between two open files even inside one process, so the takeover logic runs here for real;
what a SIGKILL adds (the kernel dropping the locks) is covered by the cluster soak
(``make test-cluster``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from i24net.config.home import Home, now_ms
from i24net.config.presets import preset_toml
from i24net.core.envelope import Body, make_header
from i24net.core.errors import ConfigError
from i24net.core.labels import Label
from i24net.core.node import MemoryNodeStore, NodeMachine
from i24net.core.shards import Shard, shard_of
from i24net.shell.daemons import NodeDaemon
from i24net.shell.leases import FileLock
from i24net.shell.runtime import make_router, router_client_suffix
from i24net.shell.shard_host import ShardHost
from i24net.transport import MemoryBroker, MemoryTransport

# each test runs a NATS cluster; one worker runs them in turn (make test: --dist loadgroup)
pytestmark = pytest.mark.xdist_group("nats")

LABEL = Label("CONFIDENTIAL", frozenset({"EU"}))


@pytest.fixture
def home(tmp_path: Path) -> Home:
    h = Home(tmp_path / "home")
    h.init(preset_toml("demo") + "\n[router]\nshards = 2\n")
    return h


async def until(check: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def host(home: Home, broker: MemoryBroker, index: int) -> ShardHost:
    def build(shard: Shard):  # type: ignore[no-untyped-def]
        t = MemoryTransport(broker, f"i24-router:{router_client_suffix(shard)}")
        return make_router(home, shard=shard, transport=t)

    return ShardHost(home, Shard(index, 2), build, poll_s=0.02, grace_s=0.2)


def test_the_home_lists_one_router_key_per_shard(home: Home) -> None:
    d = home.directory()
    assert d.router_keys == (home.router_keys(1).verify_key, home.router_keys(2).verify_key)


def test_file_lock_excludes_a_second_holder_and_names_the_pid(tmp_path: Path) -> None:
    a, b = FileLock(tmp_path / "x.lock"), FileLock(tmp_path / "x.lock")
    assert a.acquire() and a.held
    assert not b.acquire() and b.taken()
    assert a.holder() == str(os.getpid())
    a.release()
    assert not b.taken() and b.acquire()
    b.release()


async def test_each_router_serves_its_shard_and_a_survivor_takes_over_and_hands_back(
        home: Home) -> None:
    broker = MemoryBroker()
    one, two = host(home, broker, 1), host(home, broker, 2)
    run_one = asyncio.ensure_future(one.run())
    run_two = asyncio.ensure_future(two.run())
    try:
        await until(lambda: one.serving == [1] and two.serving == [2], "both shards served")
        # router 2 stops: router 1 takes shard 2 over
        run_two.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await run_two
        await until(lambda: one.serving == [1, 2], "shard 2 taken over")
        assert one.takeovers == 1
        # router 2 is back: shard 2 is handed back to it
        two = host(home, broker, 2)
        run_two = asyncio.ensure_future(two.run())
        await until(lambda: one.serving == [1] and two.serving == [2], "shard 2 handed back")
        assert one.handbacks == 1
    finally:
        for task in (run_one, run_two):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def test_a_second_router_for_the_same_shard_is_refused(home: Home) -> None:
    broker = MemoryBroker()
    first = asyncio.ensure_future(host(home, broker, 1).run())
    try:
        await asyncio.sleep(0.1)
        with pytest.raises(ConfigError) as err:
            await host(home, broker, 1).run()
        assert err.value.reason == "config.shard"
    finally:
        first.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await first


async def test_messages_flow_across_shards_while_one_router_is_down(home: Home) -> None:
    broker = MemoryBroker()
    d = home.directory()
    # a sender and a recipient routed by different shards
    sender, reader = "NCB-DE", "NCB-FR"
    if shard_of(sender, 2) == shard_of(reader, 2):
        sender = next(a for a in ("NCB-US", "GS-LYON", "EUROPOL", "NCB-JP")
                      if shard_of(a, 2) != shard_of(reader, 2)
                      and d.scale.dominates(d.agency(a).clearance, LABEL))
    nodes = {a: NodeDaemon(NodeMachine(a, home.keys(a), d, MemoryNodeStore(),
                                       random_bytes=os.urandom),
                           MemoryTransport(broker, a), tick_s=0.05) for a in (sender, reader)}
    hosts = {i: host(home, broker, i) for i in (1, 2)}
    runs = {i: asyncio.ensure_future(h.run()) for i, h in hosts.items()}
    async with contextlib.AsyncExitStack() as stack:
        for n in nodes.values():
            await stack.enter_async_context(n.transport)
            await stack.enter_async_context(n)
        try:
            await until(lambda: all(h.serving for h in hosts.values()), "routers up")
            # the sender's router goes away; its shard is taken over by the other
            down = shard_of(sender, 2)
            runs[down].cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await runs[down]
            other = hosts[3 - down]
            await until(lambda: other.serving == [1, 2], "takeover")
            ids = []
            for i in range(5):
                h = make_header(d, sender=sender, addressing=[reader], kind="message",
                                label=LABEL, now_ms=now_ms(), ttl_ms=3_600_000,
                                random_bytes=os.urandom)
                nodes[sender].machine.submit(h, Body(f"m{i}", "x"), now_ms())
                ids.append(h.id)
            nodes[sender].kick()
            out = nodes[sender].machine.store
            await until(lambda: all(out.outbox_get(m).state == "delivered"  # type: ignore[union-attr]
                                    for m in ids), "delivery with receipts")
            assert all(nodes[reader].machine.store.inbox_has(m) for m in ids)
        finally:
            for task in runs.values():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task


def test_the_supervisor_runs_one_process_per_member_and_per_shard(home: Home) -> None:
    from i24net.ops.supervisor import Supervisor

    sup = Supervisor(home)
    assert sup.brokers() == ["broker"]  # the demo spec's engine is embedded
    assert sup.brokers("nats") == ["broker-1", "broker-2", "broker-3"]
    assert sup.routers() == ["router-1", "router-2"]
    assert sup.argv("broker-2", "nats")[2:] == ("broker", "--engine", "nats", "--member", "2",
                                                 "--home", str(home.path))
    assert sup.argv("router-2", None)[2:] == ("router", "--shard", "2/2", "--home",
                                               str(home.path))
    assert all(sup.is_infra(n) for n in ("broker", "broker-3", "router", "router-1"))
    assert not any(sup.is_infra(a) for a in home.directory().agencies)


def test_agencies_start_on_members_in_turn_and_shards_on_their_own_member(home: Home) -> None:
    from collections import Counter

    from i24net.shell.runtime import Endpoint, make_transport, start_index

    order = sorted(home.directory().agencies)
    spread = Counter(start_index(a, 3, order) for a in order)
    assert max(spread.values()) - min(spread.values()) <= 1
    ep = Endpoint("nats", "127.0.0.1", 30_000,
                  addresses=(("127.0.0.1", 30_000), ("127.0.0.1", 30_010),
                             ("127.0.0.1", 30_020)))
    starts = [make_transport(home, "i24-router", client_suffix=f"shard-{k}of2", ep=ep).port
              for k in (1, 2)]
    assert starts == [30_000, 30_010]
    t = make_transport(home, order[4], ep=ep)
    assert (t.host, t.port) == ep.members[4 % 3] and t.addresses == ep.addresses
