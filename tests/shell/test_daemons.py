"""The asyncio shells on the in-memory broker: directory reload, inbound precedence.

- The router follows ``<prefix>/directory`` as the nodes do: a revocation published while
  the network runs applies to the revoked agency's next message, without a restart.
- ``set_directory`` refuses a rollback and a fork (same serial, other contents).
- A node orders its inbound work by the precedence inside each delivery, so a FLASH message
  that arrives behind a backlog of ROUTINE deliveries is handled first.
- ``i24net directory revoke|rotate|issue`` publish the new version when a broker runs, and
  say so clearly when it cannot be reached.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nacl.bindings as sodium
import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from i24net.broker import pick_free_port
from i24net.cli import cli
from i24net.config.home import ROUTER_ACCOUNT, Home, now_ms
from i24net.config.presets import preset_toml
from i24net.core import envelope as envelope_module
from i24net.core import frames as fr
from i24net.core import keys as keys_module
from i24net.core.directory import Directory
from i24net.core.envelope import Body, Envelope, Header, make_header
from i24net.core.errors import I24Error
from i24net.core.labels import Label, Precedence
from i24net.core.node import MemoryNodeStore, NodeEvent, NodeMachine, OutboxEntry
from i24net.core.router import CONTROL_PRIORITY, MemoryRouterStore, RouterEvent, RouterMachine
from i24net.shell.daemons import NodeDaemon, RouterDaemon, frame_priority
from i24net.transport import MemoryBroker, MemoryTransport

SENDER, READER = "NCB-DE", "NCB-FR"
LABEL = Label("CONFIDENTIAL", frozenset({"EU"}))
HOUR = 3_600_000


@pytest.fixture
def home(tmp_path: Path) -> Home:
    h = Home(tmp_path / "home")
    h.init(preset_toml("demo"))
    return h


def header(d: Directory, *, sender: str = SENDER, to: str = READER,
           precedence: Precedence = Precedence.ROUTINE) -> Header:
    return make_header(d, sender=sender, addressing=[to], kind="message", label=LABEL,
                       now_ms=now_ms(), ttl_ms=HOUR, random_bytes=os.urandom,
                       precedence=precedence)


async def until(check: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


def node_machine(h: Home, agency: str, d: Directory | None = None) -> NodeMachine:
    return NodeMachine(agency, h.keys(agency), d or h.directory(), MemoryNodeStore(),
                       random_bytes=os.urandom)


# -- the router adopts a newer directory --------------------------------------------------------

async def test_router_refuses_a_sender_revoked_while_it_runs(home: Home) -> None:
    d = home.directory()
    topic = f"{d.prefix}/directory"
    broker = MemoryBroker()
    router_events: list[RouterEvent] = []
    node_events: dict[str, list[NodeEvent]] = {SENDER: [], READER: []}
    router = RouterDaemon(RouterMachine(d, home.router_keys(), MemoryRouterStore()),
                          MemoryTransport(broker, ROUTER_ACCOUNT),
                          directory_anchor=home.anchor(), on_event=router_events.append)
    nodes = {a: NodeDaemon(node_machine(home, a), MemoryTransport(broker, a), tick_s=0.05,
                           directory_anchor=home.anchor(), on_event=node_events[a].append)
             for a in (SENDER, READER)}
    publisher = MemoryTransport(broker, f"{ROUTER_ACCOUNT}:directory")
    async with publisher:
        # What 'i24net broker' does at start: version 1, retained.
        await publisher.publish(topic, home.signed_directory(), retain=True)
    async with router.transport, router, \
            nodes[SENDER].transport, nodes[SENDER], nodes[READER].transport, nodes[READER]:
        sender = nodes[SENDER].machine

        first = header(d)
        sender.submit(first, Body("before", "x"), now_ms())
        nodes[SENDER].kick()
        await until(lambda: nodes[READER].machine.store.inbox_has(first.id), "delivery")

        # 'i24net directory revoke NCB-DE' on a running network: version 2, published.
        revoked = home.revoke(SENDER)
        async with MemoryTransport(broker, f"{ROUTER_ACCOUNT}:directory") as t:
            await t.publish(topic, home.signed_directory(), retain=True)
        await until(lambda: router.machine.directory.serial == revoked.serial,
                    "the router to adopt version 2")
        assert [e.detail for e in router_events if e.kind == "directory"] == ["version 1 -> 2"]
        assert not router.machine.directory.agency(SENDER).active

        # The sender's node seals with the directory it holds; the router refuses.
        second = header(d)
        sender.submit(second, Body("after", "x"), now_ms())
        nodes[SENDER].kick()
        await until(lambda: any(e.kind == "refuse" for e in router_events), "a refusal")
        refusal = next(e for e in router_events if e.kind == "refuse")
        assert (refusal.sender, refusal.reason) == (SENDER, "sender.revoked")
        await until(lambda: sender.store.outbox_get(second.id).state == "refused",
                    "the report at the sender")
        assert sender.store.outbox_get(second.id).reason == "sender.revoked"
        assert not nodes[READER].machine.store.inbox_has(second.id)
        # The retained version 1 seen on connect did not count as news; nothing dropped.
        assert not [e for e in router_events if e.kind == "drop"]


async def test_router_ignores_a_forged_or_older_directory(home: Home) -> None:
    d1 = home.directory()
    signed_v1 = home.signed_directory()
    home.reissue()
    d2 = home.directory()
    broker = MemoryBroker()
    events: list[RouterEvent] = []
    router = RouterDaemon(RouterMachine(d2, home.router_keys(), MemoryRouterStore()),
                          MemoryTransport(broker, ROUTER_ACCOUNT),
                          directory_anchor=home.anchor(), on_event=events.append)
    async with router.transport, router, MemoryTransport(broker, "pub") as pub:
        topic = f"{d1.prefix}/directory"
        await pub.publish(topic, signed_v1)  # a rollback
        forged = d2.next_version(d2.issued_ms + 1).revoke(SENDER, d2.issued_ms + 2) \
            .sign(os.urandom(32))  # not the authority's key
        await pub.publish(topic, forged)
        await pub.publish(topic, b"\x00garbage")
        await until(lambda: len(events) == 3, "three drops")
    assert [e.kind for e in events] == ["drop"] * 3
    assert events[0].reason == "directory.rollback"
    assert router.machine.directory is d2


def test_set_directory_refuses_a_fork_and_a_rollback(home: Home) -> None:
    d1 = home.directory()
    later = d1.next_version(d1.issued_ms + 1)
    fork = d1.next_version(d1.issued_ms + 2)  # also version 2, other contents
    assert fork.serial == later.serial and fork.digest != later.digest
    machines: list[Any] = [RouterMachine(d1, home.router_keys(), MemoryRouterStore()),
                           node_machine(home, READER, d1)]
    for m in machines:
        m.set_directory(later)
        m.set_directory(later)  # the same version again: fine
        with pytest.raises(I24Error) as forked:
            m.set_directory(fork)
        assert forked.value.reason == "directory.fork"
        with pytest.raises(I24Error) as old:
            m.set_directory(d1)
        assert old.value.reason == "directory.rollback"
        assert m.directory is later


# -- a node handles FLASH before a ROUTINE backlog ------------------------------------------------

def stamped(h: Home, router: RouterMachine, prec: Precedence, n: int = 1) -> list[bytes]:
    """``n`` deliveries to READER, sealed by SENDER and stamped by ``router``."""
    sender = node_machine(h, SENDER)
    for i in range(n):
        hd = header(router.directory, precedence=prec)
        raw, _ = sender.submit(hd, Body(f"{prec.name} {i}", "x"), now_ms())
        events = router.handle(f"{router.prefix}/submit/{SENDER}", raw, now_ms())
        assert [e.kind for e in events] == ["accept"], events
    out = [p for t, p, _ in router.pop(now_ms(), limit=10 * n + 10) if t.endswith(READER)
           and fr.peek_magic(p) == fr.DELIVERY]
    assert len(out) == n
    return out


async def test_a_flash_delivery_overtakes_a_routine_backlog(home: Home) -> None:
    d = home.directory()
    router = RouterMachine(d, home.router_keys(), MemoryRouterStore())
    routine = stamped(home, router, Precedence.ROUTINE, 40)
    flash = stamped(home, router, Precedence.FLASH)
    broker = MemoryBroker()
    inbox = f"{d.prefix}/inbox/{READER}"
    # The node is away; its persistent session queues the backlog, FLASH last.
    broker.connect(READER, clean_session=False)
    broker.subscribe(READER, inbox)
    broker.disconnect(READER)
    broker.connect(ROUTER_ACCOUNT, clean_session=True)
    for frame in [*routine, *flash]:
        broker.publish(ROUTER_ACCOUNT, inbox, frame)
    assert broker.queued(READER) == 41

    handled: list[NodeEvent] = []
    node = NodeDaemon(node_machine(home, READER), MemoryTransport(broker, READER),
                      on_event=handled.append)
    async with node.transport, node:
        await until(lambda: sum(e.kind == "received" for e in handled) == 41, "41 deliveries")
    received = [e for e in handled if e.kind == "received"]
    assert received[0].precedence == Precedence.FLASH, [e.detail for e in received[:3]]
    assert [e.detail for e in received[1:]] == [f"ROUTINE {i}" for i in range(40)]


# -- frame_priority / peek_precedence ------------------------------------------------------------

@pytest.fixture(scope="module")
def frames(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """An envelope and a delivery of each precedence, a report and a receipt."""
    h = Home(tmp_path_factory.mktemp("frames") / "home")
    h.init(preset_toml("demo"))
    d = h.directory()
    router = RouterMachine(d, h.router_keys(), MemoryRouterStore())
    sender = node_machine(h, SENDER)
    out: dict[str, bytes] = {}
    for prec in Precedence:
        raw, _ = sender.submit(header(d, precedence=prec), Body("s", "x"), now_ms())
        router.handle(f"{d.prefix}/submit/{SENDER}", raw, now_ms())
        popped = {fr.peek_magic(p): p for _, p, _ in router.pop(now_ms())}
        out[f"envelope {prec.name}"] = raw
        out[f"delivery {prec.name}"] = popped[fr.DELIVERY]
        out["report"] = popped[fr.REPORT]
    raw, _ = sender.submit(header(d, precedence=Precedence.FLASH), Body("s", "x" * 65_536),
                           now_ms())
    router.handle(f"{d.prefix}/submit/{SENDER}", raw, now_ms())
    out["delivery FLASH 64 KiB"] = next(p for _, p, _ in router.pop(now_ms())
                                        if fr.peek_magic(p) == fr.DELIVERY)
    reader = node_machine(h, READER)
    reader.handle(f"{d.prefix}/inbox/{READER}", out["delivery ROUTINE"], now_ms())
    out["receipt"] = next(p for _, p, _ in reader.pop() if fr.peek_magic(p) == fr.RECEIPT)
    return out


def test_frame_priority_reads_deliveries_and_envelopes(frames: dict[str, bytes]) -> None:
    for prec in Precedence:
        assert frame_priority(frames[f"envelope {prec.name}"]) == prec
        assert frame_priority(frames[f"delivery {prec.name}"]) == prec
    assert frame_priority(frames["report"]) == CONTROL_PRIORITY
    assert frame_priority(frames["receipt"]) == CONTROL_PRIORITY
    assert frame_priority(b"") == CONTROL_PRIORITY  # no frame kind we know: no precedence


def test_frame_priority_on_truncated_and_altered_frames(frames: dict[str, bytes]) -> None:
    for name in ("envelope PRIORITY", "delivery PRIORITY"):
        raw = frames[name]
        assert frame_priority(raw[:5]) == CONTROL_PRIORITY  # not even a frame kind
        for cut in (7, 9, 40):  # inside the clear header: malformed, handled promptly
            assert frame_priority(raw[:cut]) == 0, (name, cut)
        for cut in (len(raw) // 2, len(raw) - 1):  # the peek only reads up to the header
            assert frame_priority(raw[:cut]) in (0, Precedence.PRIORITY), (name, cut)
        bad_prec = raw.replace(b"\xa4prec\xa8PRIORITY", b"\xa4prec\xa8PRIORITZ")
        assert bad_prec != raw
        assert frame_priority(bad_prec) == 0  # malformed: handled (refused) promptly


def test_peek_decodes_the_clear_header_only(frames: dict[str, bytes],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """The peek hands the msgpack decoder the envelope's clear header and nothing else: no
    ``unpack`` of the frame, the envelope or the body, no signature check, and every byte
    after the header (wraps, ciphertext, signature) may be garbage without changing its
    answer. The full parse decodes every byte and refuses the garbage."""
    raw = frames["delivery FLASH 64 KiB"]
    parsed = Envelope.parse(fr.parse_frame(raw).extra)
    header_end = raw.index(parsed.header_bytes) + len(parsed.header_bytes)
    assert len(raw) > 50 * len(parsed.header_bytes)  # a 64 KiB body behind a small header

    decoded: list[tuple[str, int]] = []

    def spy(name: str, decode: Callable[..., Any]) -> Callable[..., Any]:
        def recording(data: bytes, *args: Any, **kwargs: Any) -> Any:
            decoded.append((name, len(data)))
            return decode(data, *args, **kwargs)
        return recording

    def no_signature_check(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the peek checked a signature")

    monkeypatch.setattr(fr, "peek_field", spy("peek_field", fr.peek_field))
    monkeypatch.setattr(fr, "unpack", spy("unpack", fr.unpack))
    monkeypatch.setattr(envelope_module, "unpack", spy("unpack", envelope_module.unpack))
    monkeypatch.setattr(sodium, "crypto_sign_open", no_signature_check)
    monkeypatch.setattr(keys_module, "verify", no_signature_check)

    assert fr.peek_precedence(raw) == Precedence.FLASH
    assert decoded == [("peek_field", len(parsed.header_bytes))]

    decoded.clear()
    Envelope.parse(fr.parse_frame(raw).extra)  # the spies see what a full parse decodes
    assert [name for name, _ in decoded] == ["unpack"] * len(decoded) and len(decoded) >= 3
    assert sum(size for _, size in decoded) > 2 * len(raw)  # the frame, then the envelope

    garbage = raw[:header_end] + b"\xc1" * (len(raw) - header_end)  # 0xc1: never valid
    decoded.clear()
    assert fr.peek_precedence(garbage) == Precedence.FLASH
    assert decoded == [("peek_field", len(parsed.header_bytes))]
    with pytest.raises(I24Error):
        Envelope.parse(fr.parse_frame(garbage).extra)


@given(prec=st.sampled_from(list(Precedence)), kind=st.sampled_from(["envelope", "delivery"]),
       cut=st.integers(0, 3000), flip=st.integers(0, 3000), mask=st.integers(1, 255))
def test_peek_agrees_with_the_full_parse(frames: dict[str, bytes], prec: Precedence,
                                         kind: str, cut: int, flip: int, mask: int) -> None:
    raw = frames[f"{kind} {prec.name}"]
    flipped = raw[:flip] + bytes([raw[flip] ^ mask]) + raw[flip + 1:] if flip < len(raw) \
        else raw
    for sample in (raw, raw[:cut], flipped):
        try:
            peeked = fr.peek_precedence(sample)
        except I24Error:
            continue  # malformed: frame_priority says 0 and the machine refuses it
        try:
            if kind == "delivery":
                full = int(Envelope.parse(fr.parse_frame(sample).extra).header.precedence)
            else:
                full = int(Envelope.parse(sample).header.precedence)
        except I24Error:
            continue  # the peek reads one field, so it may accept what the parse refuses
        assert peeked == full


# -- 'i24net directory revoke' publishes the new version ----------------------------------------

def _write_endpoint(h: Home, port: int) -> None:
    (h.broker_dir / "endpoint.json").write_text(json.dumps(
        {"engine": "embedded", "host": "127.0.0.1", "port": port, "tls_ca": None}))


def test_revoke_without_a_broker_says_it_only_wrote_the_file(home: Home) -> None:
    r = CliRunner().invoke(cli, ["directory", "revoke", "NCB-ZA", "--home", str(home.path)])
    assert r.exit_code == 0, r.output
    assert "version 2" in r.output and "no broker is running" in r.output


def test_revoke_with_an_unreachable_broker_warns_and_keeps_the_file(home: Home) -> None:
    _write_endpoint(home, pick_free_port())  # a stale file: nobody listens there
    start = time.monotonic()
    r = CliRunner().invoke(cli, ["directory", "revoke", "NCB-ZA", "--home", str(home.path)])
    assert time.monotonic() - start < 15
    assert r.exit_code == 0, r.output
    assert "version 2 is written but was not published" in r.output
    assert "i24net directory publish" in r.output
    assert Home(home.path).directory().serial == 2
    r = CliRunner().invoke(cli, ["directory", "publish", "--timeout", "1", "--home",
                                 str(home.path)])
    assert r.exit_code == 1 and "ERROR:" in r.output


@pytest.mark.broker
async def test_revoke_publishes_to_the_running_broker(home: Home) -> None:
    from i24net.shell.runtime import make_broker, make_transport

    async with make_broker(home, "embedded", 0) as b:
        _write_endpoint(home, b.port)
        got: asyncio.Queue[bytes] = asyncio.Queue()
        async with make_transport(home, READER, client_suffix="watch") as t:
            await t.subscribe(f"{home.directory().prefix}/directory")

            async def watch() -> None:
                async for m in t.deliveries():
                    got.put_nowait(m.payload)

            watcher = asyncio.create_task(watch())
            r = await asyncio.to_thread(CliRunner().invoke, cli,
                                        ["directory", "revoke", "NCB-ZA", "--home",
                                         str(home.path)])
            assert r.exit_code == 0, r.output
            assert "published version 2" in r.output
            payload = await asyncio.wait_for(got.get(), 10)
            watcher.cancel()
    from i24net.core.directory import load

    d = load(payload, home.anchor())
    assert d.serial == 2 and not d.agency("NCB-ZA").active


def test_the_sync_gate_shares_one_sync_among_those_waiting_and_skips_when_nothing_changed(
        tmp_path: Path) -> None:
    from i24net.shell.daemons import SyncGate
    from i24net.store import SqliteNodeStore

    store = SqliteNodeStore(tmp_path / "node.sqlite", synchronous="NORMAL")
    synced: list[int] = []
    real = store.sync

    def counted() -> None:
        synced.append(store.changes)
        time.sleep(0.02)  # a slow disk: the others arrive while it runs
        real()

    store.sync = counted  # type: ignore[method-assign]
    gate = SyncGate(store)

    async def scenario() -> None:
        await gate.durable()  # nothing written yet: still one sync, of the schema
        first = len(synced)
        await gate.durable()
        assert len(synced) == first  # nothing changed since: no sync
        store.outbox_put(OutboxEntry(b"o" * 16, b"raw", "message", 3, ("NCB-DE",), 1, 9))
        await asyncio.gather(*(gate.durable() for _ in range(10)))
        assert len(synced) - first <= 2  # ten waiters, one or two syncs
        assert gate.done == gate.requested

    asyncio.run(scenario())
    store.close()
    assert SyncGate(None).store is None


def test_the_sync_gate_syncs_a_fast_disk_on_the_loop_and_a_slow_one_on_a_thread(
        tmp_path: Path) -> None:
    import threading

    from i24net.shell.daemons import INLINE_SYNC_S, SyncGate
    from i24net.store import SqliteNodeStore

    store = SqliteNodeStore(tmp_path / "node.sqlite", synchronous="NORMAL")
    delays = iter([0.0, 0.0, 4 * INLINE_SYNC_S, 0.0, 0.0, 0.0])
    where: list[str] = []
    now = [0.0]  # the gate's clock: each sync takes what the script says
    real = store.sync

    def timed() -> None:
        where.append("loop" if threading.current_thread() is threading.main_thread()
                     else "thread")
        real()
        now[0] += next(delays)

    store.sync = timed  # type: ignore[method-assign]
    gate = SyncGate(store, clock=lambda: now[0])

    async def scenario() -> None:
        for n in range(5):
            store.outbox_put(OutboxEntry(bytes([n]) * 16, b"raw", "message", 3,
                                         ("NCB-DE",), 1, 9))
            await gate.durable()
            assert gate.done == gate.requested
        # a busy daemon syncs on a thread, however fast the disk
        busy = SyncGate(store, busy=lambda: True, clock=lambda: now[0])
        store.outbox_put(OutboxEntry(b"b" * 16, b"raw", "message", 3, ("NCB-DE",), 1, 9))
        await busy.durable()

    asyncio.run(scenario())
    store.close()
    # fast, fast, then slow (on the loop: nothing had shown it yet), so the next on a
    # thread; that one was fast again, so back on the loop
    assert where == ["loop", "loop", "loop", "thread", "loop", "thread"]
    assert (gate.syncs, gate.inline_syncs) == (5, 4)
