"""A fault-injecting TCP proxy for MQTT 3.1.1: one client (an agency's node) and its broker.

Theory of operation: ``FaultProxy`` listens on a loopback port and, for every client that
connects, opens one connection to the upstream broker. Each direction is split into whole
MQTT packets by ``PacketFramer`` (the fixed header: the packet type in the first byte's high
nibble, then the remaining length as MQTT's variable-length integer of 1-4 bytes), so that
conditions apply to packets, never to bytes:

- Latency and jitter: a packet fully read at time ``t`` is released at
  ``max(t + latency ± uniform(jitter), release of the packet before it)``, so a direction's
  packets never overtake each other.
- Loss: a PUBLISH packet (type 3) is dropped with probability ``loss``. No other packet is
  ever dropped: losing a CONNECT, CONNACK, SUBSCRIBE or PINGREQ would only hang the session.
  The draws come from ``random.Random`` generators seeded from ``seed``, one per direction
  and purpose, so a seed gives the same decisions for the same packets whatever the other
  direction does.
- Gateway filters (``GatewayFilter``, ``set_filters``): the rules of a label-aware gateway,
  with the simulator's meaning (``i24net.sim.network``): a PUBLISH that carries an envelope
  (on its way up to the router) or a delivery (on its way down to this agency) is read for
  its clear header - the envelope's signed header, decoded with the strict
  ``Header.decode``, never the body - and dropped (with a probability) or held for an added
  delay when it matches every criterion of a rule in force. A held packet is a
  store-and-forward hold: it leaves the link's order and later packets may overtake it. Any
  other PUBLISH (reports, receipts, gap requests, the directory, presence) and any payload
  that does not decode pass unfiltered, as in the simulator (whose ``peek_header`` returns
  nothing for them); the router or the node then says what is wrong with a bad one.
- Partition: ``partition(True)`` aborts every live connection on both sides at once and
  from then on accepts new connections only to close them, until ``partition(False)``.

A PUBLISH the proxy drops (loss or a filter) or holds is, for its sender's MQTT session,
taken over by the proxy: a QoS 1 one is acknowledged at once with a PUBACK made by the
proxy, as a gateway that accepts a frame does. Without it the sender's session would keep
the packet in flight - paho waits for that PUBACK for ever, holding a slot of the node's
publish window, and the broker gives up after 5 s with an error in its log - which the
simulator's lost or held frame does not do; the frame itself is lost past the link, and
only end-to-end retries repair it. When a held packet is finally released, the receiver's
PUBACK for it is not passed on (its sender has had one). QoS 2 is not used by i24net: such
a packet is dropped or held without an answer.

Time: delays are measured on the event loop's clock. Filter windows (``start`` / ``end``)
and scheduled link changes (``set_conditions(..., at=t)``) are on the drill's clock, the
``clock`` callable (seconds since the run's start; the default counts from the proxy's
creation), read when a packet is read: a change at ``t`` applies to every packet read from
``t`` on.

Memory is bounded per direction by ``max_buffer`` (16 MiB unless told): a direction stops
reading from its socket while that many bytes wait for release (TCP flow control then slows
the sender, as a congested link would), and a packet that cannot fit in ``max_buffer`` at all
closes the connection, with a log line. A malformed remaining length (a fifth length byte,
which would exceed MQTT's maximum of 268,435,455) closes the connection too.

Conditions change while traffic flows: ``set_conditions``, ``set_filters`` and
``partition`` are plain methods for the proxy's own event loop; called from another thread
they are handed to that loop. ``ProxyThread`` runs a set of proxies on an event loop of its
own in a daemon thread, for callers that are not asynchronous, and waits for each change to
take effect.

Every address is loopback: the proxy refuses to listen on, or forward to, anything else.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import random
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import asdict, dataclass
from typing import Any, TypeVar

from i24net.core.envelope import Header
from i24net.core.errors import I24Error
from i24net.core.filters import DIRECTIONS, HeaderView, matches
from i24net.core.frames import peek_header_bytes

__all__ = [
    "DEFAULT_MAX_BUFFER",
    "DIRECTIONS",
    "MAX_REMAINING_LENGTH",
    "PUBACK",
    "PUBLISH",
    "Clock",
    "Conditions",
    "FaultProxy",
    "GatewayFilter",
    "MalformedPacket",
    "PacketFramer",
    "ProxyThread",
    "message_header",
]

_log = logging.getLogger("i24net.ops.faultproxy")

PUBLISH = 3
PUBACK = 4
MAX_REMAINING_LENGTH = 268_435_455  # the largest value four length bytes can carry
DEFAULT_MAX_BUFFER = 16 * 1024 * 1024
CONNECT_TIMEOUT_S = 5.0
_READ_CHUNK = 65536
_TASK_PREFIX = "faultproxy"
_T = TypeVar("_T")

#: The drill's clock: seconds since the run started (negative, or -inf, before it).
Clock = Callable[[], float]


class MalformedPacket(ValueError):
    """The byte stream is not MQTT: a remaining length longer than four bytes."""


class PacketTooLarge(ValueError):
    """A packet that would need more than the direction's buffer to hold it."""


class PacketFramer:
    """Splits an MQTT byte stream into whole packets (sans-IO).

    ``feed(data)`` returns the packets completed so far as ``(packet type, packet bytes)``;
    the bytes of an unfinished packet stay buffered (``buffered`` says how many). Raises
    ``MalformedPacket`` for a bad remaining length and ``PacketTooLarge`` for a packet
    longer than ``max_packet`` bytes, as soon as its header shows it.
    """

    def __init__(self, max_packet: int = MAX_REMAINING_LENGTH + 5) -> None:
        self._buffer = bytearray()
        self._max_packet = max_packet

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        self._buffer += data
        packets: list[tuple[int, bytes]] = []
        start = 0
        buffer = self._buffer
        while True:
            header = _parse_header(buffer, start)
            if header is None:
                break
            header_length, remaining = header
            total = header_length + remaining
            if total > self._max_packet:
                raise PacketTooLarge(
                    f"a packet of {total} bytes exceeds the {self._max_packet}-byte buffer"
                )
            if len(buffer) - start < total:
                break
            packets.append((buffer[start] >> 4, bytes(buffer[start:start + total])))
            start += total
        if start:
            del buffer[:start]
        return packets


def _parse_header(buffer: bytes | bytearray, start: int) -> tuple[int, int] | None:
    """``(fixed header length, remaining length)`` of the packet at ``start``, or ``None``
    while its header is incomplete; raises ``MalformedPacket``."""
    value = 0
    multiplier = 1
    for index in range(4):
        position = start + 1 + index
        if position >= len(buffer):
            return None
        byte = buffer[position]
        value += (byte & 0x7F) * multiplier
        if not byte & 0x80:
            return index + 2, value
        multiplier *= 128
    raise MalformedPacket(
        f"remaining length has more than 4 bytes (over MQTT's maximum of "
        f"{MAX_REMAINING_LENGTH:,})"
    )


@dataclass(frozen=True, slots=True)
class Conditions:
    """The link's conditions: delay per packet and direction, and PUBLISH loss."""

    latency_ms: float = 0.0
    jitter_ms: float = 0.0
    loss: float = 0.0

    def __post_init__(self) -> None:
        _millis(self.latency_ms, "latency_ms")
        _millis(self.jitter_ms, "jitter_ms")
        _probability(self.loss, "loss")


def _probability(value: Any, what: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{what} must be a probability from 0.0 to 1.0, not {value!r}")


def _millis(value: Any, what: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
        raise ValueError(f"{what} must be a number of milliseconds >= 0, not {value!r}")


@dataclass(frozen=True, slots=True)
class GatewayFilter:
    """A label-aware gateway rule on the PUBLISH packets that carry a message.

    The criteria and their meaning are those of the simulator's ``Filter``
    (``i24net.sim.network``): ``None`` matches anything; a set matches when the header's
    value is in it. ``senders`` and ``recipients`` hold agency ids (expand groups before).
    Going ``up`` (an envelope towards the router), ``recipients`` matches when any signed
    recipient is in it; going ``down`` (a delivery), when the delivery's own recipient - the
    proxy's agency - is. ``addressing`` matches an item the sender wrote (``@EU``). A
    matching packet is dropped with probability ``drop``, else held ``delay_ms`` ±
    ``jitter_ms`` more. The rule is in force from ``start`` until before ``end``, on the
    proxy's clock.
    """

    name: str
    direction: str = "both"
    precedences: frozenset[str] | None = None
    labels: frozenset[str] | None = None
    caveat: str | None = None
    kinds: frozenset[str] | None = None
    senders: frozenset[str] | None = None
    recipients: frozenset[str] | None = None
    addressing: frozenset[str] | None = None
    drop: float = 0.0
    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    start: float = 0.0
    end: float | None = None

    def __post_init__(self) -> None:
        if self.direction not in DIRECTIONS:
            raise ValueError(f"direction must be one of {', '.join(DIRECTIONS)}, "
                             f"not {self.direction!r}")
        _probability(self.drop, "drop")
        _millis(self.delay_ms, "delay_ms")
        _millis(self.jitter_ms, "jitter_ms")
        if self.end is not None and self.end < self.start:
            raise ValueError(f"filter {self.name}: end {self.end} is before start {self.start}")

    def in_force(self, t: float) -> bool:
        return self.start <= t and (self.end is None or t < self.end)

    def matches(self, h: Header, direction: str, dest: str | None) -> bool:
        """Whether a message with header ``h``, crossing the link ``direction`` (``up`` or
        ``down``; ``dest``: the recipient of a delivery), meets every criterion: the
        simulator's own rule (``i24net.core.filters``)."""
        return matches(self, HeaderView.of(h), direction, dest)

    def extra_delay(self, rng: random.Random) -> float:
        """The added hold in seconds: ``delay_ms`` ± ``jitter_ms``, never below zero (drawn
        as the simulator draws a link delay)."""
        ms = self.delay_ms
        if self.jitter_ms:
            ms += (2.0 * rng.random() - 1.0) * self.jitter_ms
        return max(0.0, ms) / 1000.0


def message_header(payload: bytes) -> Header | None:
    """The clear header of the message a PUBLISH payload carries: an envelope (``i24e``)
    or the envelope inside a delivery (``i24d``), decoded strictly but not verified (a
    gateway has no keys; a filter only looks). ``None`` for any other frame (report,
    receipt, gap request, directory, presence) and for anything that does not decode."""
    try:
        header = peek_header_bytes(payload)
        return None if header is None else Header.decode(header)
    except (I24Error, ValueError, IndexError):
        return None


def _publish_fields(packet: bytes) -> tuple[int, int | None, int] | None:
    """``(QoS, packet id or None, offset of the payload)`` of a whole PUBLISH packet, or
    ``None`` when its variable header does not fit in it (the broker will say so)."""
    header = _parse_header(packet, 0)
    if header is None:
        return None
    pos = header[0] + 2
    if pos > len(packet):
        return None
    pos += int.from_bytes(packet[pos - 2:pos], "big")  # the topic
    qos = (packet[0] >> 1) & 3
    packet_id = None
    if qos:
        if pos + 2 > len(packet):
            return None
        packet_id = int.from_bytes(packet[pos:pos + 2], "big")
        pos += 2
    return (qos, packet_id, pos) if pos <= len(packet) else None


def _puback(packet_id: int) -> bytes:
    return bytes([PUBACK << 4, 2]) + packet_id.to_bytes(2, "big")


def _loopback(host: str, what: str) -> str:
    if host == "localhost":
        return host
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ValueError(f"{what} {host!r} refused: the fault proxy works on loopback only")
    return host


def _port(port: int, what: str) -> int:
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ValueError(f"{what} {port!r} is invalid: use 1-65535 (or 0 to listen on any)")
    return port


class _Direction:
    """One way of a connection: packets read from ``reader`` wait here for release."""

    def __init__(self, key: str, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter) -> None:
        self.key = key  # "up" (client to broker) or "down"
        self.reader = reader
        self.writer = writer
        self.queue: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue()
        self.queued_bytes = 0  # waiting for release: in the queue or held
        self.queued_packets = 0
        self.last_release = 0.0
        self.room = asyncio.Event()
        self.room.set()
        self.held: set[asyncio.TimerHandle] = set()  # filter holds, out of the queue's order
        # packet id -> for each QoS 1 PUBLISH with that id written since a held one, in
        # order: True if the proxy acknowledged it already (its receiver's PUBACK is eaten)
        self.owed: dict[int, deque[bool]] = {}


class _Link:
    """A client connection and its upstream connection."""

    def __init__(self, proxy: FaultProxy, number: int,
                 client: tuple[asyncio.StreamReader, asyncio.StreamWriter],
                 upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter]) -> None:
        self.proxy = proxy
        self.number = number
        self.writers = (client[1], upstream[1])
        self.up = _Direction("up", client[0], upstream[1])
        self.down = _Direction("down", upstream[0], client[1])
        self.closed = asyncio.Event()
        self.reason: str | None = None

    def close(self, reason: str, *, abort: bool = True) -> None:
        """End the link now: what still waits for release is dropped (counted under
        ``reason``) and both sockets are closed (``abort``: at once, unsent bytes lost)."""
        if self.reason is not None:
            return
        self.reason = reason
        for direction in (self.up, self.down):
            for handle in direction.held:
                handle.cancel()
            direction.held.clear()
            if direction.queued_packets:
                self.proxy._dropped[reason] += direction.queued_packets
                direction.queued_packets = 0
        for writer in self.writers:
            if abort:
                writer.transport.abort()
            else:
                writer.close()
        self.proxy._closed[reason] += 1
        self.closed.set()

    async def run(self) -> None:
        name = f"{_TASK_PREFIX}:{self.proxy.name}:{self.number}"
        tasks = [
            asyncio.create_task(self._read(self.up), name=f"{name}:up-read"),
            asyncio.create_task(self._write(self.up), name=f"{name}:up-write"),
            asyncio.create_task(self._read(self.down), name=f"{name}:down-read"),
            asyncio.create_task(self._write(self.down), name=f"{name}:down-write"),
        ]
        try:
            await self.closed.wait()
        finally:
            self.close("stop")
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def _other(self, d: _Direction) -> _Direction:
        return self.down if d is self.up else self.up

    async def _read(self, d: _Direction) -> None:
        proxy = self.proxy
        loop = asyncio.get_running_loop()
        framer = PacketFramer(max_packet=proxy.max_buffer)
        back = self._other(d)  # its writer reaches the sender of what d reads
        try:
            while True:
                while d.queued_bytes + framer.buffered >= proxy.max_buffer:
                    d.room.clear()
                    await d.room.wait()
                data = await d.reader.read(_READ_CHUNK)
                if not data:
                    d.queue.put_nowait(None)  # the writer flushes, then ends the link
                    return
                packets = framer.feed(data)
                now = loop.time()
                drill_time = proxy._drill_time()  # applies the link changes now due
                for kind, packet in packets:
                    if kind == PUBACK and back.owed and self._eat_puback(back, packet):
                        continue
                    # read per packet: set_conditions may have run since the last one
                    rng_loss, rng_delay, rng_filter = proxy._rngs[d.key]
                    conditions = proxy._conditions
                    extra = 0.0
                    if kind == PUBLISH:
                        dropped: str | None = None
                        if proxy._filters:
                            dropped, extra = proxy._judge(packet, d.key, drill_time,
                                                          rng_filter)
                        if dropped is None and rng_loss.random() < conditions.loss:
                            dropped = "loss"
                        if dropped is not None:
                            proxy._dropped[dropped] += 1
                            self._take_over(back, packet)
                            continue
                    delay = conditions.latency_ms
                    if conditions.jitter_ms:
                        delay += rng_delay.uniform(-conditions.jitter_ms, conditions.jitter_ms)
                    release = max(now + max(delay, 0.0) / 1000.0, d.last_release)
                    d.last_release = release
                    d.queued_bytes += len(packet)
                    d.queued_packets += 1
                    if extra > 0:
                        self._hold(d, back, packet, release + extra)
                    else:
                        d.queue.put_nowait((release, packet))
        except MalformedPacket as exc:
            _log.warning("fault proxy %s: connection %d closed: %s from the %s: %s",
                         proxy.name, self.number, "malformed packet",
                         "client" if d.key == "up" else "broker", exc)
            self.close("malformed")
        except PacketTooLarge as exc:
            _log.warning("fault proxy %s: connection %d closed: buffer limit exceeded "
                         "(%s, from the %s)", proxy.name, self.number, exc,
                         "client" if d.key == "up" else "broker")
            self.close("overflow")
        except (ConnectionError, OSError):
            self.close("reset")

    def _take_over(self, back: _Direction, packet: bytes) -> int | None:
        """Acknowledge a QoS 1 PUBLISH to its sender (through ``back``) on the receiver's
        behalf, as a gateway that accepted it would; returns its packet id (None for QoS 0
        or 2, which get no answer)."""
        fields = _publish_fields(packet)
        if fields is None or fields[0] != 1 or fields[1] is None:
            return None
        back.writer.write(_puback(fields[1]))
        self.proxy._acknowledged += 1
        return fields[1]

    def _hold(self, d: _Direction, back: _Direction, packet: bytes, at: float) -> None:
        """Release ``packet`` at loop time ``at``, outside the direction's order (a
        store-and-forward hold); its sender is answered now."""
        packet_id = self._take_over(back, packet)
        loop = asyncio.get_running_loop()

        def release() -> None:
            d.held.discard(handle)
            if self.reason is not None:
                return  # the link closed: counted as dropped then
            d.writer.write(packet)
            if packet_id is not None:
                d.owed.setdefault(packet_id, deque()).append(True)
            self._written(d, packet)

        handle = loop.call_at(at, release)
        d.held.add(handle)
        self.proxy._held += 1

    def _eat_puback(self, d: _Direction, puback: bytes) -> bool:
        """Whether this PUBACK (read from the receiver of ``d``'s packets) answers a held
        PUBLISH the proxy acknowledged already: if so it goes no further."""
        if len(puback) != 4:
            return False
        packet_id = int.from_bytes(puback[2:4], "big")
        written = d.owed.get(packet_id)
        if not written:
            return False
        ours = written.popleft()
        if not written:
            del d.owed[packet_id]
        return ours

    def _written(self, d: _Direction, packet: bytes) -> None:
        d.queued_bytes -= len(packet)
        d.queued_packets -= 1
        self.proxy._forwarded[d.key] += 1
        self.proxy._bytes[d.key] += len(packet)
        d.room.set()

    async def _write(self, d: _Direction) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                item = await d.queue.get()
                if item is None:
                    await d.writer.drain()
                    self.close("eof", abort=False)
                    return
                release, packet = item
                wait = release - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                d.writer.write(packet)
                if d.owed and packet[0] >> 4 == PUBLISH:
                    fields = _publish_fields(packet)
                    if fields is not None and fields[0] == 1 and fields[1] in d.owed:
                        d.owed[fields[1]].append(False)  # its PUBACK is the sender's
                self._written(d, packet)
                await d.writer.drain()
        except (ConnectionError, OSError):
            self.close("reset")


class FaultProxy:
    """A TCP proxy between one MQTT client and ``upstream`` that applies link conditions.

    ``port = await proxy.start()`` listens (port 0 picks a free one); ``await proxy.stop()``
    closes every connection and the listener. ``set_conditions``, ``set_filters`` and
    ``partition`` change the link at any time; ``stats()`` reports what happened. ``clock``
    is the drill's clock for filter windows and scheduled changes (default: seconds since
    this proxy was made).
    """

    def __init__(
        self,
        listen_host: str = "127.0.0.1",
        listen_port: int = 0,
        upstream: tuple[str, int] = ("127.0.0.1", 1883),
        *,
        name: str = "",
        max_buffer: int = DEFAULT_MAX_BUFFER,
        connect_timeout: float = CONNECT_TIMEOUT_S,
        clock: Clock | None = None,
    ) -> None:
        self.listen_host = _loopback(listen_host, "listen host")
        self.listen_port = _port(listen_port, "listen port")
        host, port = upstream
        self.upstream = (_loopback(host, "upstream host"), _port(port, "upstream port"))
        if port == 0:
            raise ValueError("upstream port 0 is invalid: give the broker's port")
        if isinstance(max_buffer, bool) or not isinstance(max_buffer, int) or max_buffer < 16:
            raise ValueError(f"max_buffer must be a byte count >= 16, not {max_buffer!r}")
        self.name = name or f"proxy-{id(self):x}"
        self.max_buffer = max_buffer
        self.connect_timeout = connect_timeout
        self._conditions = Conditions()
        self._seed: Any = None
        self._rngs = self._seeded(None)
        self._made = time.monotonic()
        self._clock: Clock = clock or self._since_made
        self._scheduled: list[tuple[float, int, Conditions]] = []  # (at, order, conditions)
        self._filters: tuple[GatewayFilter, ...] = ()
        self._agency: str | None = None  # the recipient of the deliveries coming down
        self._partitioned = False
        self._server: asyncio.Server | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._port: int | None = None
        self._links: set[_Link] = set()
        self._handlers: set[asyncio.Task[Any]] = set()
        self._writers: set[asyncio.StreamWriter] = set()  # accepted, no link yet
        self._connections = 0
        self._accepted = 0
        self._refused = 0
        self._upstream_failures = 0
        self._forwarded: Counter[str] = Counter()
        self._bytes: Counter[str] = Counter()
        self._dropped: Counter[str] = Counter()
        self._closed: Counter[str] = Counter()
        self._held = 0  # PUBLISH packets a filter held
        self._acknowledged = 0  # PUBACKs the proxy sent for packets it dropped or held

    def _since_made(self) -> float:
        return time.monotonic() - self._made

    # -- lifecycle ---------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError(f"fault proxy {self.name} is not listening; call start()")
        return self._port

    @property
    def running(self) -> bool:
        return self._server is not None

    async def start(self) -> int:
        """Listen; returns the bound port."""
        if self._server is not None:
            return self.port
        self._loop = asyncio.get_running_loop()
        self._server = await asyncio.start_server(
            self._accept, self.listen_host, self.listen_port
        )
        self._port = self._server.sockets[0].getsockname()[1]
        _log.info("fault proxy %s listening on %s:%d for %s:%d", self.name, self.listen_host,
                  self._port, *self.upstream)
        return self._port

    async def stop(self) -> None:
        """Close the listener and every connection; returns once no task of it is left."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        self._cut("stop")
        for task in list(self._handlers):
            task.cancel()
        if self._handlers:
            await asyncio.gather(*self._handlers, return_exceptions=True)
        await server.wait_closed()
        _log.info("fault proxy %s stopped", self.name)

    async def __aenter__(self) -> FaultProxy:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- conditions --------------------------------------------------------------------

    @property
    def conditions(self) -> Conditions:
        return self._conditions

    @property
    def partitioned(self) -> bool:
        return self._partitioned

    @property
    def filters(self) -> tuple[GatewayFilter, ...]:
        return self._filters

    def set_conditions(self, latency_ms: float = 0, jitter_ms: float = 0, loss: float = 0.0,
                       seed: Any = None, *, at: float | None = None) -> None:
        """Apply these conditions to every packet read from now on (packets already
        waiting keep their release times); each call replaces all three, so
        ``set_conditions()`` clears them. A ``seed`` restarts the random draws; without
        one they continue. With ``at``, the change waits until the proxy's clock reaches
        ``at`` (changes due at one time apply in the order they were made; an immediate
        change leaves scheduled ones in place). Raises ``ValueError`` for a negative delay
        or a loss outside 0..1."""
        conditions = Conditions(latency_ms, jitter_ms, loss)
        if at is not None and seed is not None:
            raise ValueError("a scheduled change continues the random draws: no seed")

        def apply() -> None:
            if at is not None:
                self._scheduled.append((float(at), len(self._scheduled), conditions))
                self._scheduled.sort(key=lambda change: change[:2])
                _log.info("fault proxy %s conditions at %g s: latency %g ms, jitter %g ms, "
                          "loss %g", self.name, at, conditions.latency_ms,
                          conditions.jitter_ms, conditions.loss)
                return
            self._conditions = conditions
            if seed is not None:
                self._seed = seed
                self._rngs = self._seeded(seed)
            _log.info("fault proxy %s conditions: latency %g ms, jitter %g ms, loss %g%s",
                      self.name, conditions.latency_ms, conditions.jitter_ms, conditions.loss,
                      "" if seed is None else f", seed {seed!r}")

        self._on_loop(apply)

    def set_filters(self, filters: Iterable[GatewayFilter], *,
                    agency: str | None = None) -> None:
        """Replace the gateway filters (an empty list removes them). ``agency`` is the one
        this proxy serves: the recipient of the deliveries it carries down (without it, a
        ``recipients`` criterion going down matches any signed recipient). Filters draw
        from a generator of their own, seeded by ``set_conditions``."""
        rules = tuple(filters)

        def apply() -> None:
            self._filters, self._agency = rules, agency
            _log.info("fault proxy %s filters: %s", self.name,
                      ", ".join(r.name for r in rules) or "none")

        self._on_loop(apply)

    def _drill_time(self) -> float:
        """The drill's clock now, after applying every scheduled change that is due."""
        now = self._clock()
        while self._scheduled and self._scheduled[0][0] <= now:
            self._conditions = self._scheduled.pop(0)[2]
        return now

    def _judge(self, packet: bytes, direction: str, now: float, rng: random.Random
               ) -> tuple[str | None, float]:
        """``(the name of the filter that drops this PUBLISH, or None; the hold it adds, in
        seconds)``, as the simulator's ``_filters`` decides: the first matching rule whose
        drop draw succeeds drops it, else the holds of every matching rule add up."""
        fields = _publish_fields(packet)
        if fields is None:
            return None, 0.0
        header = message_header(packet[fields[2]:])
        if header is None:
            return None, 0.0
        dest = self._agency if direction == "down" else None
        view = HeaderView.of(header)  # once per packet, whatever the number of rules
        extra = 0.0
        for rule in self._filters:
            if not (rule.in_force(now) and matches(rule, view, direction, dest)):
                continue
            if rule.drop and (rule.drop >= 1.0 or rng.random() < rule.drop):
                return f"filter:{rule.name}", 0.0
            if rule.delay_ms or rule.jitter_ms:
                extra += rule.extra_delay(rng)
        return None, extra

    def partition(self, on: bool = True) -> None:
        """``True`` cuts the link: every connection is closed on both sides now and new ones
        are closed as soon as they are accepted. ``False`` heals it."""

        def apply() -> None:
            was, self._partitioned = self._partitioned, bool(on)
            if on:
                self._cut("partition")
            if was != self._partitioned:
                _log.warning("fault proxy %s: link %s", self.name,
                             "partitioned" if on else "healed")

        self._on_loop(apply)

    def _on_loop(self, action: Callable[[], None]) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            action()
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            action()
        else:
            loop.call_soon_threadsafe(action)

    @staticmethod
    def _seeded(seed: Any) -> dict[str, tuple[random.Random, random.Random, random.Random]]:
        """Per direction: the loss, delay and filter generators."""
        if seed is None:
            return {key: (random.Random(), random.Random(), random.Random())
                    for key in ("up", "down")}
        return {
            key: (random.Random(f"{seed!r}/{key}/loss"), random.Random(f"{seed!r}/{key}/delay"),
                  random.Random(f"{seed!r}/{key}/filter"))
            for key in ("up", "down")
        }

    def _cut(self, reason: str) -> None:
        for link in list(self._links):
            link.close(reason)
        for writer in list(self._writers):
            writer.transport.abort()

    # -- connections -------------------------------------------------------------------

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections += 1
        number = self._connections
        task.set_name(f"{_TASK_PREFIX}:{self.name}:{number}")
        self._handlers.add(task)
        self._writers.add(writer)
        upstream_writer: asyncio.StreamWriter | None = None
        try:
            if self._partitioned or self._server is None:
                if self._partitioned:
                    self._refused += 1
                writer.transport.abort()
                return
            try:
                async with asyncio.timeout(self.connect_timeout):
                    upstream = await asyncio.open_connection(*self.upstream)
            except (OSError, TimeoutError) as exc:
                self._upstream_failures += 1
                # not a warning: a broker that is down (a drill's broker crash) is expected
                # to refuse, its clients retry, and stats() counts it (connections_failed)
                _log.info("fault proxy %s: connection %d closed: the upstream %s:%d is "
                          "unreachable: %s", self.name, number, *self.upstream,
                          exc or type(exc).__name__)
                writer.transport.abort()
                return
            upstream_writer = upstream[1]
            if self._partitioned or self._server is None or writer.transport.is_closing():
                # cut (or stopped, or the client left) while the upstream connection opened
                if self._partitioned:
                    self._refused += 1
                writer.transport.abort()
                upstream_writer.transport.abort()
                return
            self._accepted += 1
            self._writers.discard(writer)
            link = _Link(self, number, (reader, writer), upstream)
            self._links.add(link)
            try:
                await link.run()
            finally:
                self._links.discard(link)
        except asyncio.CancelledError:
            # stop() cancels the handlers; asyncio's stream server (3.11) logs a handler
            # task that ends cancelled as an error, so it ends quietly instead
            if self._server is not None:
                raise
        finally:
            self._writers.discard(writer)
            if not writer.transport.is_closing():
                writer.transport.abort()
            if upstream_writer is not None and not upstream_writer.transport.is_closing():
                upstream_writer.transport.abort()
            self._handlers.discard(task)

    # -- counters ----------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """What the proxy did so far: connections accepted (and linked upstream), refused
        while partitioned, failed for an unreachable upstream and active; connections
        closed by reason (``eof``: one side closed, ``reset``, ``partition``, ``malformed``,
        ``overflow``, ``stop``); packets forwarded and bytes per direction (``up``: client
        to broker); packets dropped by reason (``loss``, ``filter:NAME``, or the reason that
        closed the connection they were waiting in); packets a filter held; PUBACKs the
        proxy sent for packets it dropped or held; the current conditions and filters."""
        self._drill_time()
        return {
            "name": self.name,
            "listen": f"{self.listen_host}:{self._port}" if self._port else None,
            "upstream": f"{self.upstream[0]}:{self.upstream[1]}",
            "conditions": asdict(self._conditions),
            "scheduled": len(self._scheduled),
            "filters": [rule.name for rule in self._filters],
            "seed": self._seed,
            "partitioned": self._partitioned,
            "connections_accepted": self._accepted,
            "connections_refused": self._refused,
            "connections_failed": self._upstream_failures,
            "connections_active": sum(link.reason is None for link in self._links),
            "connections_closed": dict(self._closed),
            "packets_forwarded": self._forwarded["up"] + self._forwarded["down"],
            "packets_forwarded_up": self._forwarded["up"],
            "packets_forwarded_down": self._forwarded["down"],
            "bytes_forwarded_up": self._bytes["up"],
            "bytes_forwarded_down": self._bytes["down"],
            "packets_dropped": sum(self._dropped.values()),
            "dropped": dict(self._dropped),
            "packets_held": self._held,
            "acknowledged_by_proxy": self._acknowledged,
        }


class ProxyThread:
    """Runs ``proxies`` on an event loop of its own in a daemon thread.

    ``start()`` returns once every proxy listens (their ports by name) and re-raises what
    stopped one from starting; ``stop()`` stops them and joins the thread. The other
    methods name a proxy (or pass it) and return once the change is in effect. Proxy names
    must be unique. Also a context manager.
    """

    def __init__(self, proxies: Iterable[FaultProxy], *, name: str = "faultproxy",
                 timeout: float = 10.0) -> None:
        self._proxies: dict[str, FaultProxy] = {}
        for proxy in proxies:
            if proxy.name in self._proxies:
                raise ValueError(f"two fault proxies are named {proxy.name!r}")
            self._proxies[proxy.name] = proxy
        self._name = name
        self._timeout = timeout
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    @property
    def proxies(self) -> dict[str, FaultProxy]:
        return dict(self._proxies)

    @property
    def ports(self) -> dict[str, int]:
        return {name: proxy.port for name, proxy in self._proxies.items()}

    def start(self) -> dict[str, int]:
        if self._thread is not None:
            raise RuntimeError("this ProxyThread was started already")
        self._thread = threading.Thread(target=self._main, name=self._name, daemon=True)
        self._thread.start()
        if not self._ready.wait(self._timeout):
            raise TimeoutError(f"the fault proxies did not start within {self._timeout} s")
        if self._error is not None:
            self._thread.join(self._timeout)
            raise self._error
        return self.ports

    def stop(self) -> None:
        thread, loop, stop = self._thread, self._loop, self._stop
        if thread is None:
            return
        if loop is not None and stop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop finished in between
                loop.call_soon_threadsafe(stop.set)
        thread.join(self._timeout)
        if thread.is_alive():
            raise TimeoutError(f"the fault proxy thread did not stop within {self._timeout} s")

    def __enter__(self) -> ProxyThread:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def set_conditions(self, proxy: str | FaultProxy, latency_ms: float = 0,
                       jitter_ms: float = 0, loss: float = 0.0, seed: Any = None, *,
                       at: float | None = None) -> None:
        target = self._proxy(proxy)
        Conditions(latency_ms, jitter_ms, loss)  # a ValueError here, in the caller's thread
        if at is not None and seed is not None:
            raise ValueError("a scheduled change continues the random draws: no seed")
        self._call(lambda: target.set_conditions(latency_ms, jitter_ms, loss, seed, at=at))

    def set_filters(self, proxy: str | FaultProxy, filters: Iterable[GatewayFilter], *,
                    agency: str | None = None) -> None:
        target = self._proxy(proxy)
        rules = tuple(filters)
        self._call(lambda: target.set_filters(rules, agency=agency))

    def partition(self, proxy: str | FaultProxy, on: bool = True) -> None:
        target = self._proxy(proxy)
        self._call(lambda: target.partition(on))

    def stats(self, proxy: str | FaultProxy | None = None) -> dict[str, Any]:
        """One proxy's stats, or every proxy's by name."""
        if proxy is not None:
            target = self._proxy(proxy)
            return self._call(target.stats)
        return self._call(lambda: {n: p.stats() for n, p in self._proxies.items()})

    def _proxy(self, proxy: str | FaultProxy) -> FaultProxy:
        name = proxy.name if isinstance(proxy, FaultProxy) else proxy
        try:
            return self._proxies[name]
        except KeyError:
            raise KeyError(f"no fault proxy named {name!r} in this thread") from None

    def _call(self, action: Callable[[], _T]) -> _T:
        loop = self._loop
        if loop is None or loop.is_closed() or not self._ready.is_set():
            return action()  # not running: nothing else touches the proxies

        async def run() -> _T:
            return action()

        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            return action()
        coroutine: Coroutine[Any, Any, _T] = run()
        return asyncio.run_coroutine_threadsafe(coroutine, loop).result(self._timeout)

    def _main(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._serve())
        except BaseException as exc:  # reported by start()
            self._error = self._error or exc
        finally:
            self._ready.set()
            with contextlib.suppress(Exception):
                loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        started: list[FaultProxy] = []
        try:
            try:
                for proxy in self._proxies.values():
                    await proxy.start()
                    started.append(proxy)
            except BaseException as exc:
                self._error = exc
                return
            finally:
                self._ready.set()
            await self._stop.wait()
        finally:
            for proxy in started:
                try:
                    await proxy.stop()
                except Exception as exc:  # the others must stop all the same
                    _log.warning("fault proxy %s did not stop cleanly: %s", proxy.name, exc)
