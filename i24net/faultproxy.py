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
  ever dropped: losing a CONNECT, CONNACK, SUBSCRIBE or PINGREQ would only hang the session,
  whereas a lost PUBLISH is what QoS 1 redelivery and the end-to-end retries repair. The
  draws come from ``random.Random`` generators seeded from ``seed``, one per direction, so a
  seed gives the same decisions for the same packets whatever the other direction does.
- Partition: ``partition(True)`` aborts every live connection on both sides at once and
  from then on accepts new connections only to close them, until ``partition(False)``.

Memory is bounded per direction by ``max_buffer`` (16 MiB unless told): a direction stops
reading from its socket while that many bytes wait for release (TCP flow control then slows
the sender, as a congested link would), and a packet that cannot fit in ``max_buffer`` at all
closes the connection, with a log line. A malformed remaining length (a fifth length byte,
which would exceed MQTT's maximum of 268,435,455) closes the connection too.

Conditions change while traffic flows: ``set_conditions`` and ``partition`` are plain
methods for the proxy's own event loop; called from another thread they are handed to that
loop. ``ProxyThread`` runs a set of proxies on an event loop of its own in a daemon thread,
for callers that are not asynchronous, and waits for each change to take effect.

Every address is loopback: the proxy refuses to listen on, or forward to, anything else.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import random
import threading
from collections import Counter
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import asdict, dataclass
from typing import Any, TypeVar

__all__ = [
    "DEFAULT_MAX_BUFFER",
    "MAX_REMAINING_LENGTH",
    "PUBLISH",
    "Conditions",
    "FaultProxy",
    "MalformedPacket",
    "PacketFramer",
    "ProxyThread",
]

_log = logging.getLogger("i24net.faultproxy")

PUBLISH = 3
MAX_REMAINING_LENGTH = 268_435_455  # the largest value four length bytes can carry
DEFAULT_MAX_BUFFER = 16 * 1024 * 1024
CONNECT_TIMEOUT_S = 5.0
_READ_CHUNK = 65536
_TASK_PREFIX = "faultproxy"
_T = TypeVar("_T")


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


def _parse_header(buffer: bytearray, start: int) -> tuple[int, int] | None:
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
        for what in ("latency_ms", "jitter_ms"):
            value = getattr(self, what)
            if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
                raise ValueError(f"{what} must be a number of milliseconds >= 0, not {value!r}")
        if (isinstance(self.loss, bool) or not isinstance(self.loss, int | float)
                or not 0.0 <= self.loss <= 1.0):
            raise ValueError(f"loss must be a probability from 0.0 to 1.0, not {self.loss!r}")


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
        self.queued_bytes = 0
        self.queued_packets = 0
        self.last_release = 0.0
        self.room = asyncio.Event()
        self.room.set()


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

    async def _read(self, d: _Direction) -> None:
        proxy = self.proxy
        loop = asyncio.get_running_loop()
        framer = PacketFramer(max_packet=proxy.max_buffer)
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
                for kind, packet in packets:
                    # read per packet: set_conditions may have run since the last one
                    rng_loss, rng_delay = proxy._rngs[d.key]
                    conditions = proxy._conditions
                    if kind == PUBLISH and rng_loss.random() < conditions.loss:
                        proxy._dropped["loss"] += 1
                        continue
                    delay = conditions.latency_ms
                    if conditions.jitter_ms:
                        delay += rng_delay.uniform(-conditions.jitter_ms, conditions.jitter_ms)
                    release = max(now + max(delay, 0.0) / 1000.0, d.last_release)
                    d.last_release = release
                    d.queued_bytes += len(packet)
                    d.queued_packets += 1
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
                d.queued_bytes -= len(packet)
                d.queued_packets -= 1
                self.proxy._forwarded[d.key] += 1
                self.proxy._bytes[d.key] += len(packet)
                d.room.set()
                await d.writer.drain()
        except (ConnectionError, OSError):
            self.close("reset")


class FaultProxy:
    """A TCP proxy between one MQTT client and ``upstream`` that applies link conditions.

    ``port = await proxy.start()`` listens (port 0 picks a free one); ``await proxy.stop()``
    closes every connection and the listener. ``set_conditions`` and ``partition`` change
    the link at any time; ``stats()`` reports what happened.
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

    def set_conditions(self, latency_ms: float = 0, jitter_ms: float = 0, loss: float = 0.0,
                       seed: Any = None) -> None:
        """Apply these conditions to every packet read from now on (packets already
        waiting keep their release times); each call replaces all three, so
        ``set_conditions()`` clears them. A ``seed`` restarts the random draws; without
        one they continue. Raises ``ValueError`` for a negative delay or a loss outside
        0..1."""
        conditions = Conditions(latency_ms, jitter_ms, loss)

        def apply() -> None:
            self._conditions = conditions
            if seed is not None:
                self._seed = seed
                self._rngs = self._seeded(seed)
            _log.info("fault proxy %s conditions: latency %g ms, jitter %g ms, loss %g%s",
                      self.name, conditions.latency_ms, conditions.jitter_ms, conditions.loss,
                      "" if seed is None else f", seed {seed!r}")

        self._on_loop(apply)

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
    def _seeded(seed: Any) -> dict[str, tuple[random.Random, random.Random]]:
        if seed is None:
            return {key: (random.Random(), random.Random()) for key in ("up", "down")}
        return {
            key: (random.Random(f"{seed!r}/{key}/loss"), random.Random(f"{seed!r}/{key}/delay"))
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
                _log.warning("fault proxy %s: connection %d closed: the upstream %s:%d "
                             "is unreachable: %s", self.name, number, *self.upstream,
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
        to broker); packets dropped by reason (``loss``, or the reason that closed the
        connection they were waiting in)."""
        return {
            "name": self.name,
            "listen": f"{self.listen_host}:{self._port}" if self._port else None,
            "upstream": f"{self.upstream[0]}:{self.upstream[1]}",
            "conditions": asdict(self._conditions),
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
                       jitter_ms: float = 0, loss: float = 0.0, seed: Any = None) -> None:
        target = self._proxy(proxy)
        Conditions(latency_ms, jitter_ms, loss)  # a ValueError here, in the caller's thread
        self._call(lambda: target.set_conditions(latency_ms, jitter_ms, loss, seed))

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
