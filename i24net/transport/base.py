"""What every transport offers the node and the router: publish, subscribe, receive.

Theory of operation: a transport moves opaque bytes between topics with MQTT's QoS 1
semantics - at least once, in order per publisher, acknowledged by the broker. It is
deliberately thin. A broker acknowledgement means the broker took responsibility for the
message, not that any recipient got it (docs/protocol.md 8.8): end-to-end receipts, de-duplication
and durable outboxes live in the layers above, which is also why a transport may deliver a
message twice (a publish retried after a lost PUBACK, a redelivery after a reconnect).

Two implementations share this interface: :class:`~i24net.transport.mqtt.MqttTransport`
over a real broker and :class:`~i24net.transport.memory.MemoryTransport` over the in-process
:class:`~i24net.transport.memory.MemoryBroker`, so the daemons can be tested and simulated
without a network.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Protocol, Self, runtime_checkable

from i24net.core.errors import TransportError

__all__ = ["Delivery", "Transport", "TransportError", "Will"]


@dataclass(frozen=True, slots=True)
class Delivery:
    """One message as it came off the broker.

    Attributes:
        topic: the concrete topic name it was published to (never a wildcard filter).
        payload: the bytes exactly as published; the transport never decodes them, because
            signatures cover the exact bytes sent (docs/protocol.md 2.2, 8.8).
    """

    topic: str
    payload: bytes


@dataclass(frozen=True, slots=True)
class Will:
    """The last-will message a broker publishes for a client whose link dies uncleanly.

    Used for the ``presence/<AGENCY>`` topic: a clean exit suppresses it, a crash or a cut
    link publishes it (after a session takeover too, as Mosquitto 2.0 does).

    Attributes:
        topic: where the broker publishes the will.
        payload: what it publishes.
        retain: whether the broker keeps it as the topic's retained message, so a dashboard
            that subscribes later still sees the agency as offline.
    """

    topic: str
    payload: bytes
    retain: bool = False


@runtime_checkable
class Transport(Protocol):
    """A connection to a broker, used as ``async with transport: ...``.

    Entering connects and starts whatever background work the transport needs; leaving
    disconnects cleanly (so no last will is published). Every operation is QoS 1.

    ``guard`` fences a client that may lose the right to act (a router whose shard lease
    ran out): when set, every publish, each resend included, first calls it and is refused
    with ``TransportError(reason="transport.fenced")`` once it returns false.
    """

    guard: Callable[[], bool] | None

    @property
    def is_connected(self) -> bool:
        """Whether the link to the broker is up right now (it can drop at any moment)."""
        ...

    @property
    def connected(self) -> asyncio.Event:
        """Set while the link is up; wait on it to learn that a reconnect has happened."""
        ...

    async def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        """Publish at QoS 1 and return once the broker has acknowledged it (PUBACK).

        While the link is down this waits for it to come back rather than failing, and a
        publish cut off by a disconnect is sent again, so a message may arrive twice. It is
        not end-to-end delivery: the application's receipts are.
        """
        ...

    async def subscribe(self, *filters: str) -> None:
        """Subscribe at QoS 1; the subscriptions are re-established after a reconnect
        that lost the broker session."""
        ...

    def deliveries(self) -> AsyncIterator[Delivery]:
        """Iterate over incoming messages, across reconnects, until the transport closes.

        Meant for one consumer: two iterators would split the stream between them.
        """
        ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...
