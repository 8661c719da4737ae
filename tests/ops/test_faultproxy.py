"""The fault proxy: MQTT packets through it unchanged, delayed, lost (PUBLISH only), filtered
as a label-aware gateway would (messages only), or cut.

Byte-level tests put a raw TCP echo (or sink) server behind the proxy; end-to-end tests put
the embedded broker behind it and talk MQTT with aiomqtt or hand-made packets. Everything
listens on 127.0.0.1 and is stopped by the test that started it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import selectors
import socket
import struct
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiomqtt
import pytest

from i24net.broker import ROUTER_USERNAME, EmbeddedBroker, accounts_for, generate_password
from i24net.core.envelope import ID_SIZE, NONCE_SIZE, WIRE_VERSION, Header
from i24net.core.frames import FRAME_VERSION
from i24net.core.keys import KEY_ID_SIZE
from i24net.core.labels import Label, Precedence
from i24net.core.wire import pack
from i24net.ops.faultproxy import (
    MAX_REMAINING_LENGTH,
    PUBACK,
    PUBLISH,
    FaultProxy,
    GatewayFilter,
    MalformedPacket,
    PacketFramer,
    ProxyThread,
    message_header,
)
from i24net.sim.network import Filter, peek_header

pytestmark = pytest.mark.timeout(60)

HOST = "127.0.0.1"
FR, DE = "NCB-FR", "NCB-DE"
PREFIX = "i24/v1"
PRESENCE_ALL = f"{PREFIX}/presence/+"
WAIT = 5.0

# -- raw MQTT packets --------------------------------------------------------------------


def _length(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _str(text: str) -> bytes:
    data = text.encode()
    return struct.pack("!H", len(data)) + data


def packet(first: int, body: bytes = b"") -> bytes:
    return bytes([first]) + _length(len(body)) + body


def connect_packet(client_id: str, username: str, password: str) -> bytes:
    header = _str("MQTT") + bytes([4, 0xC2]) + struct.pack("!H", 60)
    return packet(0x10, header + _str(client_id) + _str(username) + _str(password))


def subscribe_packet(packet_id: int, topic_filter: str, qos: int = 1) -> bytes:
    return packet(0x82, struct.pack("!H", packet_id) + _str(topic_filter) + bytes([qos]))


def publish_packet(topic: str, payload: bytes, packet_id: int | None = None) -> bytes:
    if packet_id is None:
        return packet(0x30, _str(topic) + payload)
    return packet(0x32, _str(topic) + struct.pack("!H", packet_id) + payload)


PINGREQ = packet(0xC0)
PINGRESP = packet(0xD0)


def puback_packet(packet_id: int) -> bytes:
    return packet(0x40, struct.pack("!H", packet_id))


def publish_id(raw: bytes) -> int:
    """The packet id of a QoS 1 PUBLISH packet."""
    pos = 1
    while raw[pos] & 0x80:  # the remaining length's bytes
        pos += 1
    topic_end = pos + 3 + struct.unpack("!H", raw[pos + 1:pos + 3])[0]
    return int(struct.unpack("!H", raw[topic_end:topic_end + 2])[0])


# -- message frames with a real header (unsigned: a gateway never checks signatures) -------


def header(**fields: object) -> Header:
    values: dict[str, object] = {
        "id": os.urandom(ID_SIZE), "kind": "message", "sender": "NCB-US",
        "recipients": ("NCB-FR", "NCB-JP"), "addressing": ("NCB-FR", "NCB-JP"),
        "label": Label("RESTRICTED", frozenset()), "precedence": Precedence.ROUTINE,
        "created_ms": 1, "expires_ms": 2, "directory_serial": 1,
        "key_id": bytes(KEY_ID_SIZE), "nonce": bytes(NONCE_SIZE)}
    values.update(fields)
    return Header(**values)  # type: ignore[arg-type]


def envelope(h: Header) -> bytes:
    signed = pack([h.encode(), bytes(32), bytes(32), [], b""])
    return pack(["i24e", WIRE_VERSION, signed, bytes(64)])


def delivery(h: Header) -> bytes:
    return pack(["i24d", FRAME_VERSION, pack({"id": h.id}), bytes(64), envelope(h)])


class RawClient:
    """A TCP client that reads whole MQTT packets."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.framer = PacketFramer()
        self.pending: list[tuple[int, bytes]] = []

    @classmethod
    async def open(cls, port: int) -> RawClient:
        return cls(*await asyncio.open_connection(HOST, port))

    async def send(self, *packets: bytes) -> None:
        self.writer.write(b"".join(packets))
        await self.writer.drain()

    async def next(self, timeout: float = WAIT) -> tuple[int, bytes]:
        async with asyncio.timeout(timeout):
            while not self.pending:
                data = await self.reader.read(65536)
                if not data:
                    raise ConnectionResetError("closed")
                self.pending.extend(self.framer.feed(data))
        return self.pending.pop(0)

    async def closed(self, timeout: float = WAIT) -> bool:
        """True once the other end closed the connection (EOF or reset)."""
        try:
            async with asyncio.timeout(timeout):
                while True:
                    if not await self.reader.read(65536):
                        return True
        except (ConnectionError, OSError):
            return True
        except TimeoutError:
            return False

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await self.writer.wait_closed()


# -- servers behind the proxy ------------------------------------------------------------


class LoopbackServer:
    """A TCP server on ``HOST`` whose connections ``serve`` handles; ``stop`` cancels them."""

    def __init__(self) -> None:
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._handle, HOST, 0)
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self.serve(reader, writer)
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()
            self._tasks.discard(task)

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raise NotImplementedError

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()


class EchoServer(LoopbackServer):
    """Returns every byte it receives, recording each packet and when it arrived."""

    def __init__(self, echo: bool = True) -> None:
        super().__init__()
        self.echo = echo
        self.received: list[tuple[float, int, bytes]] = []
        self.connections = 0
        self.open = 0

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.open += 1
        framer = PacketFramer()
        loop = asyncio.get_running_loop()
        try:
            while data := await reader.read(65536):
                with contextlib.suppress(MalformedPacket):
                    for kind, raw in framer.feed(data):
                        self.received.append((loop.time(), kind, raw))
                if self.echo:
                    writer.write(data)
                    await writer.drain()
        finally:
            self.open -= 1


@pytest.fixture
async def echo() -> AsyncIterator[tuple[EchoServer, int]]:
    server = EchoServer()
    port = await server.start()
    yield server, port
    await server.stop()


@pytest.fixture
async def proxy(echo: tuple[EchoServer, int]) -> AsyncIterator[FaultProxy]:
    fault = FaultProxy(upstream=(HOST, echo[1]), name="echo")
    await fault.start()
    yield fault
    await fault.stop()


class Broker:
    def __init__(self, broker: EmbeddedBroker, passwords: dict[str, str]) -> None:
        self.broker, self.passwords = broker, passwords

    def client(self, port: int, username: str = FR, timeout: float = WAIT) -> aiomqtt.Client:
        return aiomqtt.Client(HOST, port, username=username, password=self.passwords[username],
                              identifier=username, timeout=timeout)


@pytest.fixture
async def broker(tmp_path: Path) -> AsyncIterator[Broker]:
    passwords = {name: generate_password(os.urandom) for name in (FR, DE, ROUTER_USERNAME)}
    accounts = accounts_for((FR, DE), passwords, PREFIX)
    async with EmbeddedBroker(accounts, tmp_path / "broker") as running:
        yield Broker(running, passwords)


@pytest.fixture
async def broker_proxy(broker: Broker) -> AsyncIterator[FaultProxy]:
    fault = FaultProxy(upstream=(HOST, broker.broker.port), name=FR)
    await fault.start()
    yield fault
    await fault.stop()


async def next_message(client: aiomqtt.Client, timeout: float = WAIT) -> aiomqtt.Message:
    async with asyncio.timeout(timeout):
        return await anext(aiter(client.messages))


async def messages_within(client: aiomqtt.Client, seconds: float) -> list[aiomqtt.Message]:
    received: list[aiomqtt.Message] = []
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            async for message in client.messages:
                received.append(message)
    return received


def proxy_tasks() -> list[asyncio.Task[object]]:
    return [t for t in asyncio.all_tasks() if t.get_name().startswith("faultproxy")]


# -- the framer ----------------------------------------------------------------------------


def test_framer_splits_a_stream_into_whole_packets_however_it_is_cut() -> None:
    stream = b"".join([
        connect_packet(FR, FR, "secret"),
        publish_packet("a/b", b"x" * 200, packet_id=7),  # a two-byte remaining length
        PINGREQ,
        publish_packet("a/b", b"y" * 20_000),  # three bytes
        packet(0xE0),
    ])
    for step in (1, 2, 3, 7, 64, len(stream)):
        framer = PacketFramer()
        got: list[tuple[int, bytes]] = []
        for i in range(0, len(stream), step):
            got.extend(framer.feed(stream[i:i + step]))
        assert [kind for kind, _ in got] == [1, PUBLISH, 12, PUBLISH, 14]
        assert b"".join(raw for _, raw in got) == stream
        assert framer.buffered == 0


def test_framer_refuses_a_fifth_length_byte_and_an_oversized_packet() -> None:
    assert _length(MAX_REMAINING_LENGTH) == b"\xff\xff\xff\x7f"
    framer = PacketFramer()
    assert framer.feed(b"\x30\xff\xff\xff\x7f") == []  # the maximum: valid, incomplete
    with pytest.raises(MalformedPacket):
        PacketFramer().feed(b"\x30\xff\xff\xff\xff\x01")
    with pytest.raises(ValueError, match="exceeds"):
        PacketFramer(max_packet=100).feed(b"\x30\x80\x01")  # 128 bytes announced


def test_conditions_and_addresses_are_checked() -> None:
    fault = FaultProxy(upstream=(HOST, 1883))
    for bad in ({"latency_ms": -1}, {"jitter_ms": -5}, {"loss": 1.5}, {"loss": -0.1}):
        with pytest.raises(ValueError):
            fault.set_conditions(**bad)
    with pytest.raises(ValueError, match="loopback"):
        FaultProxy("0.0.0.0", upstream=(HOST, 1883))
    with pytest.raises(ValueError, match="loopback"):
        FaultProxy(upstream=("192.0.2.1", 1883))


# -- byte level: an echo server behind the proxy ---------------------------------------------


async def test_bytes_pass_unchanged_without_conditions(
    echo: tuple[EchoServer, int], proxy: FaultProxy
) -> None:
    client = await RawClient.open(proxy.port)
    sent = [publish_packet("t", os.urandom(n), packet_id=1 + n % 100) for n in (0, 1, 300, 70_000)]
    sent += [PINGREQ, subscribe_packet(9, "t/#")]
    stream = b"".join(sent)
    for i in range(0, len(stream), 1000):  # cut across packet boundaries
        await client.send(stream[i:i + 1000])
    back = [(await client.next())[1] for _ in sent]
    assert back == sent
    assert [raw for _, _, raw in echo[0].received] == sent
    stats = proxy.stats()
    assert stats["packets_forwarded_up"] == stats["packets_forwarded_down"] == len(sent)
    assert stats["bytes_forwarded_up"] == len(stream)
    assert stats["packets_dropped"] == 0 and stats["connections_accepted"] == 1
    await client.close()


async def test_latency_delays_each_direction(
    echo: tuple[EchoServer, int], proxy: FaultProxy
) -> None:
    server = echo[0]
    proxy.set_conditions(latency_ms=150)
    client = await RawClient.open(proxy.port)
    loop = asyncio.get_running_loop()
    sent_at = loop.time()
    await client.send(PINGREQ)
    await client.next()
    round_trip = loop.time() - sent_at
    arrived_at = server.received[0][0]
    assert arrived_at - sent_at >= 0.15  # client to server
    assert round_trip - (arrived_at - sent_at) >= 0.15  # and back
    assert round_trip < 2.0
    await client.close()


async def test_jitter_never_reorders_packets(
    echo: tuple[EchoServer, int], proxy: FaultProxy
) -> None:
    proxy.set_conditions(latency_ms=20, jitter_ms=20, seed=1)
    client = await RawClient.open(proxy.port)
    sent = [publish_packet("t", i.to_bytes(2, "big")) for i in range(60)]
    for p in sent:
        await client.send(p)
        await asyncio.sleep(0.002)
    back = [(await client.next())[1] for _ in sent]
    assert back == sent
    assert [raw for _, _, raw in echo[0].received] == sent
    await client.close()


async def test_seeded_loss_drops_about_that_share_of_publishes_reproducibly() -> None:
    sink = EchoServer(echo=False)
    port = await sink.start()
    fault = FaultProxy(upstream=(HOST, port), name="lossy")
    await fault.start()
    total = 1000

    async def run(seed: int) -> list[bytes]:
        sink.received.clear()
        fault.set_conditions(loss=0.3, seed=seed)
        client = await RawClient.open(fault.port)
        packets = []
        for i in range(total):
            packets.append(publish_packet("t", i.to_bytes(2, "big")))
            packets.append(PINGREQ)  # never dropped
        await client.send(*packets)
        async with asyncio.timeout(WAIT):  # every PINGREQ, so every PUBLISH before it too
            while sum(kind != PUBLISH for _, kind, _ in sink.received) < total:
                await asyncio.sleep(0.01)
        await client.close()
        return [raw for _, kind, raw in sink.received if kind == PUBLISH]

    try:
        first = await run(seed=42)
        assert 240 <= total - len(first) <= 360  # 3 standard deviations around 300
        again = await run(seed=42)
        other = await run(seed=43)
        assert again == first and other != first
        stats = fault.stats()
        assert stats["dropped"] == {"loss": 3 * total - len(first) - len(again) - len(other)}
        assert stats["seed"] == 43
    finally:
        await fault.stop()
        await sink.stop()


async def test_a_malformed_remaining_length_closes_the_connection(
    echo: tuple[EchoServer, int], proxy: FaultProxy, caplog: pytest.LogCaptureFixture
) -> None:
    client = await RawClient.open(proxy.port)
    await client.send(PINGREQ)
    assert await client.next() == (12, PINGREQ)
    with caplog.at_level(logging.WARNING, "i24net.ops.faultproxy"):
        await client.send(b"\x30\xff\xff\xff\xff\x01")
        assert await client.closed()
    assert "malformed" in caplog.text
    assert [raw for _, _, raw in echo[0].received] == [PINGREQ]  # nothing of it went on
    stats = proxy.stats()
    assert stats["connections_closed"] == {"malformed": 1}
    assert stats["connections_active"] == 0


async def test_a_packet_larger_than_the_buffer_closes_the_connection(
    echo: tuple[EchoServer, int], caplog: pytest.LogCaptureFixture
) -> None:
    async with FaultProxy(upstream=(HOST, echo[1]), name="small", max_buffer=4096) as fault:
        client = await RawClient.open(fault.port)
        await client.send(publish_packet("t", b"z" * 4000))  # fits
        assert (await client.next())[0] == PUBLISH
        with caplog.at_level(logging.WARNING, "i24net.ops.faultproxy"):
            await client.send(publish_packet("t", b"z" * 5000)[:100])  # header announces 5 KB
            assert await client.closed()
        assert "buffer limit exceeded" in caplog.text
        assert fault.stats()["connections_closed"] == {"overflow": 1}


async def test_a_slow_link_buffers_no_more_than_its_limit(echo: tuple[EchoServer, int]) -> None:
    """Packets waiting out their delay stop the reading beyond ``max_buffer`` bytes (the
    sender is slowed by TCP) instead of growing without bound; none is lost."""
    async with FaultProxy(upstream=(HOST, echo[1]), name="slow", max_buffer=8192) as fault:
        fault.set_conditions(latency_ms=50)
        client = await RawClient.open(fault.port)
        sent = [publish_packet("t", bytes([i]) * 1000) for i in range(40)]
        await client.send(*sent)
        back = [(await client.next())[1] for _ in sent]
        assert back == sent
        assert fault.stats()["connections_closed"] == {}


async def test_partition_cuts_live_connections_refuses_new_ones_and_heals(
    echo: tuple[EchoServer, int], proxy: FaultProxy
) -> None:
    server = echo[0]
    client = await RawClient.open(proxy.port)
    await client.send(PINGREQ)
    await client.next()
    proxy.partition(True)
    assert await client.closed(timeout=1.0)
    async with asyncio.timeout(1.0):  # the broker's side is closed at once too
        while server.open:
            await asyncio.sleep(0.01)
    refused = await RawClient.open(proxy.port)  # the listener accepts, then closes
    assert await refused.closed(timeout=1.0)
    assert server.connections == 1  # nothing reached upstream
    stats = proxy.stats()
    assert stats["partitioned"] and stats["connections_refused"] == 1
    assert stats["connections_closed"] == {"partition": 1}
    proxy.partition(False)
    again = await RawClient.open(proxy.port)
    await again.send(PINGREQ)
    assert await again.next() == (12, PINGREQ)
    assert proxy.stats()["connections_accepted"] == 2
    for c in (client, refused, again):
        await c.close()


async def test_stop_closes_everything_and_leaves_no_task(echo: tuple[EchoServer, int]) -> None:
    fault = FaultProxy(upstream=(HOST, echo[1]), name="stopping")
    port = await fault.start()
    fault.set_conditions(latency_ms=5000)  # packets wait in the proxy when it stops
    clients = [await RawClient.open(port) for _ in range(3)]
    for c in clients:
        await c.send(PINGREQ)
    async with asyncio.timeout(WAIT):
        while fault.stats()["connections_active"] < 3:
            await asyncio.sleep(0.01)
    assert proxy_tasks()
    await fault.stop()
    assert proxy_tasks() == []
    for c in clients:
        assert await c.closed(timeout=1.0)
        await c.close()
    with pytest.raises(OSError):
        await asyncio.open_connection(HOST, port)
    stats = fault.stats()
    assert stats["dropped"] == {"stop": 3} and stats["connections_closed"] == {"stop": 3}
    await fault.stop()  # twice is harmless


async def test_a_broker_that_is_down_closes_the_client_quietly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A drill crashes the broker: the proxy closes each client that connects meanwhile (the
    client retries), counts it, and does not warn about what the drill did on purpose."""
    with socket.create_server((HOST, 0)) as closed:
        port = closed.getsockname()[1]
    async with FaultProxy(upstream=(HOST, port), name="down") as fault:
        with caplog.at_level(logging.INFO, "i24net.ops.faultproxy"):
            client = await RawClient.open(fault.port)
            assert await client.closed()
            await client.close()
        assert fault.stats()["connections_failed"] == 1
    assert "unreachable" in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


# -- gateway filters --------------------------------------------------------------------


def test_message_header_reads_envelopes_and_deliveries_and_nothing_else() -> None:
    h = header(kind="alert", precedence=Precedence.FLASH,
               label=Label("CONFIDENTIAL", frozenset({"EU"})))
    assert message_header(envelope(h)) == h
    assert message_header(delivery(h)) == h
    report = pack(["i24s", FRAME_VERSION, pack({"id": h.id}), bytes(64)])
    noncanonical = envelope(h).replace(b"\xa5alert", b"\xa5ALERT")  # kinds are lower case
    for other in (report, b"online", b"", os.urandom(300), envelope(h)[:40], noncanonical):
        assert message_header(other) is None


FILTER_CASES = [
    {"precedences": frozenset({"FLASH"})},
    {"labels": frozenset({"CONFIDENTIAL//EU"})},
    {"caveat": "EU"},
    {"kinds": frozenset({"alert", "diffusion"})},
    {"senders": frozenset({"NCB-US"})},
    {"recipients": frozenset({"NCB-JP"})},
    {"recipients": frozenset({"NCB-DE", "NCB-BR"})},
    {"addressing": frozenset({"@EU"})},
    {"direction": "up", "kinds": frozenset({"alert"})},
    {"direction": "down", "recipients": frozenset({"NCB-FR"}), "senders": frozenset({"NCB-US"})},
]


def test_gateway_filters_match_exactly_as_the_simulators_filters() -> None:
    """Live and virtual runs must mean the same by a filter: the proxy's rule agrees with
    ``i24net.sim.network.Filter`` on every header, direction and recipient tried."""
    headers = [header(),
               header(kind="alert", precedence=Precedence.FLASH),
               header(kind="diffusion", sender="NCB-DE", recipients=("NCB-DE", "NCB-FR"),
                      addressing=("@EU",), label=Label("CONFIDENTIAL", frozenset({"EU"}))),
               header(sender="NCB-JP", recipients=("NCB-BR",), addressing=("NCB-BR",),
                      label=Label("CONFIDENTIAL", frozenset({"EU", "CT"})))]
    checked = 0
    for case in FILTER_CASES:
        ours, theirs = GatewayFilter("f", **case), Filter("f", **case)  # type: ignore[arg-type]
        for h in headers:
            view = peek_header(envelope(h))
            assert view is not None
            for direction, dest in (("up", None), ("down", "NCB-FR"), ("down", "NCB-JP"),
                                    ("down", "NCB-BR")):
                assert ours.matches(h, direction, dest) == theirs.matches(view, direction, dest), \
                    (case, h.kind, direction, dest)
                checked += ours.matches(h, direction, dest)
    assert checked > 20  # the grid exercises matches, not only misses


def test_gateway_filters_check_their_values_and_windows() -> None:
    for bad in ({"direction": "sideways"}, {"drop": 1.5}, {"delay_ms": -1},
                {"start": 10.0, "end": 5.0}):
        with pytest.raises(ValueError):
            GatewayFilter("bad", **bad)
    timed = GatewayFilter("w", start=10.0, end=20.0)
    assert [timed.in_force(t) for t in (float("-inf"), 9.9, 10.0, 19.9, 20.0)] == \
        [False, False, True, True, False]


class PeerServer(LoopbackServer):
    """A stand-in broker: acknowledges every QoS 1 PUBLISH, answers PINGREQ, records what
    arrives and can push packets to its client."""

    def __init__(self) -> None:
        super().__init__()
        self.received: list[tuple[int, bytes]] = []
        self.writer: asyncio.StreamWriter | None = None

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        framer = PacketFramer()
        while data := await reader.read(65536):
            for kind, raw in framer.feed(data):
                self.received.append((kind, raw))
                if kind == PUBLISH and (raw[0] >> 1) & 3 == 1:
                    writer.write(puback_packet(publish_id(raw)))
                elif kind == 12:
                    writer.write(PINGRESP)
            await writer.drain()

    def push(self, raw: bytes) -> None:
        assert self.writer is not None
        self.writer.write(raw)

    def ids(self, kind: int) -> list[int]:
        """Packet ids of the QoS 1 PUBLISH (or PUBACK) packets received, in order."""
        if kind == PUBACK:
            return [struct.unpack("!H", raw[2:4])[0] for k, raw in self.received if k == kind]
        return [publish_id(raw) for k, raw in self.received if k == kind and raw[0] & 0x06]


@pytest.fixture
async def peer() -> AsyncIterator[tuple[PeerServer, int]]:
    server = PeerServer()
    port = await server.start()
    yield server, port
    await server.stop()


async def until(condition: object, timeout: float = WAIT) -> None:
    async with asyncio.timeout(timeout):
        while not condition():  # type: ignore[operator]
            await asyncio.sleep(0.01)


async def test_a_filter_drops_or_holds_matching_messages_and_answers_their_sender(
    peer: tuple[PeerServer, int]
) -> None:
    """Going up: a dropped alert never reaches the broker, a held FLASH is overtaken by what
    follows; the sender gets the proxy's PUBACK for both at once (and exactly one for the
    held one: the broker's later PUBACK is not passed on); a payload that is not a message
    passes unfiltered."""
    server, port = peer
    async with FaultProxy(upstream=(HOST, port), name=FR) as fault:
        fault.set_filters([GatewayFilter("hold-flash", precedences=frozenset({"FLASH"}),
                                         delay_ms=400),
                           GatewayFilter("drop-alert", kinds=frozenset({"alert"}),
                                         direction="up", drop=1.0)], agency=FR)
        client = await RawClient.open(fault.port)
        flash = header(precedence=Precedence.FLASH)
        await client.send(
            publish_packet("s", envelope(flash), packet_id=1),
            publish_packet("s", envelope(header(kind="alert")), packet_id=2),
            publish_packet("s", envelope(header()), packet_id=3),
            publish_packet("s", b"\x94\xa4i24e\x01garbage", packet_id=4),
            publish_packet("s", envelope(header(kind="alert"))))  # QoS 0: no answer
        answered = [await client.next() for _ in range(4)]
        assert [raw for _, raw in answered[:2]] == [puback_packet(1), puback_packet(2)]
        assert sorted(raw for _, raw in answered[2:]) == [puback_packet(3), puback_packet(4)]
        await until(lambda: 1 in server.ids(PUBLISH))
        assert server.ids(PUBLISH) == [3, 4, 1]  # the FLASH came last, the alerts never
        await client.send(PINGREQ)
        assert await client.next() == (13, PINGRESP)  # no second PUBACK 1 before it
        stats = fault.stats()
        assert stats["dropped"] == {"filter:drop-alert": 2}
        assert stats["packets_held"] == 1 and stats["acknowledged_by_proxy"] == 2
        assert stats["filters"] == ["hold-flash", "drop-alert"]
        await client.close()


async def test_filters_going_down_name_the_proxys_agency_and_keep_to_their_window(
    peer: tuple[PeerServer, int]
) -> None:
    """A delivery coming down is matched on the agency the proxy serves, only while the
    rule is in force on the drill's clock; what it drops, the broker is told is taken."""
    server, port = peer
    now = [5.0]
    async with FaultProxy(upstream=(HOST, port), name="NCB-JP", clock=lambda: now[0]) as fault:
        rule = GatewayFilter("jp-window", direction="down", recipients=frozenset({"NCB-JP"}),
                             senders=frozenset({"NCB-US"}), drop=1.0, start=10.0, end=20.0)
        fault.set_filters([rule], agency="NCB-JP")
        client = await RawClient.open(fault.port)
        await client.send(PINGREQ)
        assert await client.next() == (13, PINGRESP)
        frame = delivery(header())
        for t, packet_id, delivered in ((5.0, 11, True), (15.0, 12, False), (25.0, 13, True)):
            now[0] = t
            down = publish_packet("i/NCB-JP", frame, packet_id=packet_id)
            server.push(down)
            await client.send(publish_packet("s", frame, packet_id=20 + packet_id))  # up
            got = {await client.next() for _ in range(1 + delivered)}
            # going up is not this rule's direction: the broker's PUBACK comes back
            assert got == {(PUBACK, puback_packet(20 + packet_id))} | (
                {(PUBLISH, down)} if delivered else set())
            if not delivered:  # the proxy took the dropped delivery off the broker's hands
                await until(lambda: 12 in server.ids(PUBACK))
        assert server.ids(PUBACK) == [12]
        fault.set_filters([rule], agency="NCB-FR")  # another agency's deliveries pass
        now[0] = 15.0
        server.push(publish_packet("i/NCB-FR", frame, packet_id=14))
        assert (await client.next())[1] == publish_packet("i/NCB-FR", frame, packet_id=14)
        assert fault.stats()["dropped"] == {"filter:jp-window": 1}
        await client.close()


async def test_a_scheduled_change_applies_once_the_clock_reaches_it(
    echo: tuple[EchoServer, int]
) -> None:
    now = [0.0]
    async with FaultProxy(upstream=(HOST, echo[1]), name="timed", clock=lambda: now[0]) as fault:
        fault.set_conditions(latency_ms=150, at=10.0)
        fault.set_conditions(latency_ms=0, at=20.0)
        with pytest.raises(ValueError, match="no seed"):
            fault.set_conditions(latency_ms=5, at=30.0, seed=1)
        client = await RawClient.open(fault.port)
        loop = asyncio.get_running_loop()
        round_trips = []
        for t in (5.0, 10.0, 25.0):
            now[0] = t
            started = loop.time()
            await client.send(PINGREQ)
            await client.next()
            round_trips.append(loop.time() - started)
        assert round_trips[0] < 0.1 and round_trips[1] >= 0.3 and round_trips[2] < 0.1
        assert fault.stats()["scheduled"] == 0
        await client.close()


# -- end to end: the embedded broker behind the proxy --------------------------------------


@pytest.mark.broker
async def test_publish_and_subscribe_through_the_proxy(
    broker: Broker, broker_proxy: FaultProxy
) -> None:
    payload = os.urandom(50_000)
    async with broker.client(broker_proxy.port) as fr:
        await fr.subscribe(PRESENCE_ALL, qos=1)
        await fr.publish(f"{PREFIX}/presence/{FR}", payload, qos=1)
        message = await next_message(fr)
        assert (str(message.topic), message.payload) == (f"{PREFIX}/presence/{FR}", payload)
    stats = broker_proxy.stats()
    assert stats["packets_forwarded_up"] >= 3 and stats["packets_forwarded_down"] >= 3
    assert stats["packets_dropped"] == 0


@pytest.mark.broker
async def test_total_loss_drops_every_publish_and_nothing_else(
    broker: Broker, broker_proxy: FaultProxy
) -> None:
    broker_proxy.set_conditions(loss=1.0)
    client = await RawClient.open(broker_proxy.port)
    await client.send(connect_packet(DE, DE, broker.passwords[DE]))
    assert await client.next() == (2, b"\x20\x02\x00\x00")  # CONNACK, accepted
    await client.send(subscribe_packet(1, PRESENCE_ALL, qos=1))
    assert (await client.next())[0] == 9  # SUBACK
    await client.send(publish_packet(f"{PREFIX}/presence/{DE}", b"lost", packet_id=2))
    await client.send(PINGREQ)
    # the proxy answers the lost QoS 1 PUBLISH itself, so the session does not keep it in
    # flight; the broker never saw it: no copy comes back on our own subscription
    assert await client.next() == (4, b"\x40\x02\x00\x02")
    assert await client.next() == (13, PINGRESP)
    stats = broker_proxy.stats()
    assert stats["dropped"] == {"loss": 1} and stats["acknowledged_by_proxy"] == 1

    broker_proxy.set_conditions(loss=0.0)  # the same session carries on
    await client.send(publish_packet(f"{PREFIX}/presence/{DE}", b"kept", packet_id=3))
    kinds = {(await client.next())[0] for _ in range(2)}  # PUBACK, and our own message
    assert kinds == {4, PUBLISH}
    await client.close()

    broker_proxy.set_conditions(loss=1.0)  # aiomqtt: connect and subscribe still work
    async with broker.client(broker_proxy.port) as fr:
        await fr.subscribe(PRESENCE_ALL, qos=0)
        await fr.publish(f"{PREFIX}/presence/{FR}", b"gone", qos=0)
        assert await messages_within(fr, 0.5) == []


@pytest.mark.broker
async def test_a_client_reconnects_once_the_partition_heals(
    broker: Broker, broker_proxy: FaultProxy
) -> None:
    async with broker.client(broker_proxy.port) as fr:
        await fr.subscribe(PRESENCE_ALL, qos=1)
        broker_proxy.partition(True)
        with pytest.raises(aiomqtt.MqttError):
            await next_message(fr)
    with pytest.raises(aiomqtt.MqttError):  # aiomqtt waits out its timeout for the CONNACK
        async with broker.client(broker_proxy.port, timeout=1.0):
            pass
    assert broker_proxy.stats()["connections_refused"] >= 1
    broker_proxy.partition(False)
    async with broker.client(broker_proxy.port) as fr:
        await fr.subscribe(PRESENCE_ALL, qos=1)
        await fr.publish(f"{PREFIX}/presence/{FR}", b"back", qos=1)
        assert (await next_message(fr)).payload == b"back"


# -- the proxy thread ---------------------------------------------------------------------


class BlockingEcho:
    """An echo server on a thread of its own, joined on exit."""

    def __init__(self) -> None:
        self.listener = socket.create_server((HOST, 0))
        self.port = self.listener.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with selectors.DefaultSelector() as selector:
            self.listener.setblocking(False)
            selector.register(self.listener, selectors.EVENT_READ)
            while not self._stop.is_set():
                for key, _ in selector.select(0.05):
                    sock = key.fileobj
                    assert isinstance(sock, socket.socket)
                    if sock is self.listener:
                        conn, _ = sock.accept()
                        conn.setblocking(True)
                        selector.register(conn, selectors.EVENT_READ)
                        continue
                    try:
                        data = sock.recv(65536)
                    except OSError:
                        data = b""
                    if data:
                        with contextlib.suppress(OSError):
                            sock.sendall(data)
                    else:
                        selector.unregister(sock)
                        sock.close()
            for key in list(selector.get_map().values()):
                key.fileobj.close()  # type: ignore[union-attr]

    def __enter__(self) -> BlockingEcho:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(WAIT)
        assert not self._thread.is_alive()


@contextlib.contextmanager
def dial(port: int) -> Iterator[socket.socket]:
    with socket.create_connection((HOST, port), timeout=WAIT) as sock:
        yield sock


def gone(sock: socket.socket) -> bool:
    try:
        return sock.recv(1) == b""
    except ConnectionError:
        return True


def test_proxy_thread_applies_changes_from_another_thread_and_stops() -> None:
    before = set(threading.enumerate())
    with BlockingEcho() as echo_server:
        runner = ProxyThread([FaultProxy(upstream=(HOST, echo_server.port), name=FR),
                              FaultProxy(upstream=(HOST, echo_server.port), name=DE)])
        ports = runner.start()
        try:
            assert set(ports) == {FR, DE}
            runner.set_conditions(FR, latency_ms=100)
            with dial(ports[FR]) as sock:
                started = time.monotonic()
                sock.sendall(PINGREQ)
                assert sock.recv(2) == PINGREQ
                assert time.monotonic() - started >= 0.2
                runner.partition(FR, True)
                assert gone(sock)
            with dial(ports[FR]) as sock:
                assert gone(sock)
            with dial(ports[DE]) as sock:  # the other proxy is untouched
                sock.sendall(PINGREQ)
                assert sock.recv(2) == PINGREQ
            runner.partition(FR, False)
            runner.set_conditions(FR)
            with dial(ports[FR]) as sock:
                sock.sendall(PINGREQ)
                assert sock.recv(2) == PINGREQ
            stats = runner.stats()
            assert stats[FR]["connections_refused"] == 1
            assert stats[FR]["conditions"] == {"latency_ms": 0, "jitter_ms": 0, "loss": 0.0}
            assert runner.stats(DE)["connections_accepted"] == 1
            with pytest.raises(ValueError):
                runner.set_conditions(FR, loss=2)
            with pytest.raises(KeyError):
                runner.partition("NCB-XX")
        finally:
            runner.stop()
        runner.stop()  # twice is harmless
    assert set(threading.enumerate()) <= before


def test_proxy_thread_reports_a_proxy_that_cannot_listen() -> None:
    with socket.create_server((HOST, 0)) as squatter:
        port = squatter.getsockname()[1]
        runner = ProxyThread([FaultProxy(HOST, port, upstream=(HOST, 1883), name="busy")])
        with pytest.raises(OSError):
            runner.start()
        runner.stop()
    assert not [t for t in threading.enumerate() if t.name == "faultproxy"]
