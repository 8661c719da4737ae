"""Shard leases in the NATS cluster's key-value bucket (``i24net.shell.leases``), against a
real 3-member cluster: one holder at a time, renewals that keep a lease, expiry of a lease
nobody renews, fencing of a holder that stopped renewing, and a lease user that can touch
nothing but its bucket."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from i24net.broker import NatsCluster, accounts_for, generate_password
from i24net.broker.accounts import ROUTER_USERNAME
from i24net.broker.nats import LEASE_USER
from i24net.shell.leases import LEASE_TTL_S, SAFETY_S, EngineLeases

from .support import AGENCIES, PREFIX, requires_nats

pytestmark = [pytest.mark.broker, pytest.mark.xdist_group("nats"), requires_nats,
              pytest.mark.timeout(120)]


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[tuple[NatsCluster, str]]:
    passwords = {name: generate_password(os.urandom) for name in (*AGENCIES, ROUTER_USERNAME)}
    accounts = accounts_for(AGENCIES, passwords, PREFIX)
    async with NatsCluster(tmp_path / "nats", accounts) as running:
        yield running, passwords[ROUTER_USERNAME]


def leases(cluster: NatsCluster, password: str, who: str) -> EngineLeases:
    servers = [(cluster.host, m.ports.client) for m in cluster.members]
    return EngineLeases(servers, password, identity=who, replicas=3)


async def test_one_holder_at_a_time_and_expiry_of_a_lease_nobody_renews(
        cluster: tuple[NatsCluster, str]) -> None:
    running, password = cluster
    a = await leases(running, password, "machine-a").open()
    b = await leases(running, password, "machine-b").open()
    try:
        assert await a.acquire("lease-1")
        assert not await b.acquire("lease-1")
        assert await b.taken("lease-1") and await b.holder("lease-1") == "machine-a"
        # renewals keep it: well past the TTL, a still holds it and b still cannot take it
        await asyncio.sleep(LEASE_TTL_S * 1.5)
        assert a.valid("lease-1") and not await b.acquire("lease-1")
        # a released it: b takes it at once
        await a.release("lease-1")
        assert await b.acquire("lease-1") and not await a.acquire("lease-1")
        # b freezes (stops renewing): it stops counting itself the holder before the key
        # can expire anywhere; then the key expires and a takes it
        await b.stop_renewing()
        await b.renew("lease-1")  # its last renewal: the key expires 3 s from about now
        renewed = time.monotonic()
        await asyncio.sleep(LEASE_TTL_S - SAFETY_S + 0.2)
        assert not b.valid("lease-1")
        # not expired yet (unless this took most of the safety margin): fencing came first
        if time.monotonic() - renewed < LEASE_TTL_S - 0.2:
            assert not await a.acquire("lease-1")
        await asyncio.sleep(max(0.0, renewed + LEASE_TTL_S + 0.5 - time.monotonic()))
        deadline = time.monotonic() + 5
        while not await a.acquire("lease-1"):  # the server drops it within ms of its age
            assert time.monotonic() < deadline
            await asyncio.sleep(0.1)
        assert await a.holder("lease-1") == "machine-a"
        # b wakes and renews with its old revision: refused, and it knows the lease is gone
        await b.renew("lease-1")
        assert not b.valid("lease-1") and not b.holds("lease-1")
    finally:
        await a.close()
        await b.close()


async def test_the_lease_user_reaches_its_bucket_only(cluster: tuple[NatsCluster, str]) -> None:
    import nats

    running, password = cluster
    denied: list[str] = []

    async def refused(exc: Exception) -> None:
        denied.append(str(exc).lower())

    nc = await nats.connect(f"nats://{running.host}:{running.member(1).ports.client}",
                            user=LEASE_USER, password=password, inbox_prefix="_INBOX_i24-lease",
                            allow_reconnect=False, error_cb=refused)
    try:
        # no MQTT subject, no session stream, no other inbox
        sub = await nc.subscribe("$MQTT.sub.>")
        await nc.publish(f"{PREFIX.replace('/', '.')}.inbox.NCB-FR", b"forged")
        await nc.flush()
        await asyncio.sleep(0.5)
        await sub.unsubscribe()
    finally:
        await nc.close()
    assert any("permissions violation for subscription to \"$mqtt.sub.>\"" in d
               for d in denied), denied
    assert any("permissions violation for publish to" in d and "inbox.ncb-fr" in d
               for d in denied), denied


async def test_delivery_counters_outlive_the_router_that_wrote_them(
        cluster: tuple[NatsCluster, str]) -> None:
    from i24net.shell.leases import EngineCounters

    running, password = cluster
    a = await leases(running, password, "machine-a").open()
    try:
        await EngineCounters(a).push(2, {"NCB-DE": 15, "NCB-FR": 3})
        await EngineCounters(a).push(2, {"NCB-DE": 16})
    finally:
        await a.close()
    b = await leases(running, password, "machine-b").open()
    try:
        counters = EngineCounters(b)
        assert await counters.load(2, ["NCB-DE", "NCB-FR", "NCB-US"]) == \
            {"NCB-DE": 16, "NCB-FR": 3}
        assert await counters.load(1, ["NCB-DE"]) == {}  # each shard its own
    finally:
        await b.close()
