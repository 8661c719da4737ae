"""The waiting primitives shared by the transports.

Theory of operation: publishers and subscribers park while the link is down and must wake
on any change of link state - up, down, or the transport closing - then re-check what they
need. :class:`LinkSignal` is that wake-up: every change replaces an ``asyncio.Event`` after
setting it, so each waiter is woken exactly once per change and a cancelled waiter leaves
nothing behind (awaiting a shared ``Future`` instead would cancel it for everyone).
:func:`deadline` bounds a wait and reports expiry as the project's own error, and
:class:`DeliveryQueue` carries incoming messages to the consumer across reconnects.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from i24net.core.errors import TransportError
from i24net.transport.base import Delivery

__all__ = ["DeliveryQueue", "LinkSignal", "deadline"]


class LinkSignal:
    """Wakes every current waiter when the link state changes.

    Check the condition, then ``await signal.changed()`` with no ``await`` in between;
    the event is captured synchronously, so a change cannot slip through the gap.
    """

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def notify(self) -> None:
        """Wake everyone waiting now; later waiters wait for the next change."""
        self._event.set()
        self._event = asyncio.Event()

    async def changed(self) -> None:
        """Return after the next :meth:`notify`."""
        await self._event.wait()


@asynccontextmanager
async def deadline(seconds: float | None, what: str) -> AsyncIterator[None]:
    """Bound the body to ``seconds`` (``None``: unbounded).

    Expiry raises ``TransportError(reason="transport.timeout")`` naming ``what``; a
    ``TimeoutError`` raised by the body itself passes through unchanged.
    """
    try:
        async with asyncio.timeout(seconds) as scope:
            yield
    except TimeoutError as exc:
        if not scope.expired():
            raise
        raise TransportError(
            f"{what} did not complete within {seconds} s; is the broker reachable?",
            reason="transport.timeout",
        ) from exc


class DeliveryQueue:
    """The unbounded hand-over from a transport to its one consumer.

    Unbounded on purpose: by the time a message reaches us the client library has already
    acknowledged it to the broker (paho sends the PUBACK right after its callback), so a
    full queue could only drop a message the broker believes delivered - the aiomqtt trap
    (docs/protocol.md 8.8). Back-pressure belongs to the sender's receipts, not here.
    """

    def __init__(self) -> None:
        self._queue: asyncio.Queue[Delivery | None] = asyncio.Queue()
        self._closed = False

    def put(self, delivery: Delivery) -> None:
        """Queue one message for the consumer."""
        self._queue.put_nowait(delivery)

    def close(self) -> None:
        """End iteration after everything already queued has been consumed."""
        if not self._closed:
            self._closed = True
            self._queue.put_nowait(None)

    def __len__(self) -> int:
        """Messages waiting to be consumed."""
        return self._queue.qsize() - (1 if self._closed else 0)

    async def iterate(self) -> AsyncIterator[Delivery]:
        """Yield messages in arrival order until closed and drained."""
        while True:
            item = await self._queue.get()
            if item is None:
                self._queue.put_nowait(None)  # a second iterator must see the end too
                return
            yield item
