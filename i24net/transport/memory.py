"""An in-process MQTT broker and a transport over it, for tests and simulation.

Theory of operation: :class:`MemoryBroker` is a synchronous model of the parts of an MQTT
3.1.1 broker that i24net relies on, with no asyncio and no clock, so that the discrete-event
simulator can drive it directly in virtual time while :class:`MemoryTransport` wraps it for
asyncio code. It models, in the way Mosquitto 2.0 behaves (checked against 2.0.11):

* sessions per client id: a persistent session (``clean_session=False``) keeps its
  subscriptions and queues the messages that match them while its client is offline, then
  hands them over in order on the next connect, with ``session_present`` set; a clean
  session is forgotten on disconnect;
* retained messages: the last retained message per topic is sent to each new matching
  subscription, and a retained publish with an empty payload clears it;
* an access-control callback ``acl(client_id, action, topic) -> bool``: a denied publish is
  acknowledged and silently dropped, a denied subscription is accepted and delivers
  nothing, and delivery re-checks the concrete topic (as Mosquitto checks read access);
* last wills, published when a link dies uncleanly or the session is taken over by a new
  connection with the same client id (Mosquitto does the latter too);
* one copy per client even when several of its filters match, in publish order.

The broker calls a connected client's ``sink`` for each message routed to it and also returns
the routed ``(client_id, Delivery)`` pairs, so a driver that registers no sinks (the
simulator, which adds link latency) can schedule deliveries itself. What an action produces
for its own caller - queued messages on connect, retained messages on subscribe - is only
returned, never pushed, so the caller decides the order.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Literal, Self

from i24net.core.errors import ConfigError, TransportError
from i24net.transport.base import Delivery, Will
from i24net.transport.topics import topic_matches, validate_filter, validate_topic
from i24net.transport.waiting import DeliveryQueue, LinkSignal, deadline

__all__ = ["AclCallback", "Connected", "MemoryBroker", "MemoryTransport"]

#: ``acl(client_id, action, topic)``: may this client publish to / receive from ``topic``?
#: For ``"subscribe"`` the topic is the filter at subscribe time and the concrete topic name
#: at delivery time.
AclCallback = Callable[[str, Literal["publish", "subscribe"], str], bool]

#: Routes one delivery to a connected client (the asyncio transport puts it on its queue).
Sink = Callable[[Delivery], None]

_log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Connected:
    """What a client learns when it connects.

    Attributes:
        session_present: the broker still had this client's persistent session, so its
            subscriptions are in place and need not be sent again.
        queued: messages that arrived for the session while the client was away, in the
            order they were published; the client must process them before anything else.
    """

    session_present: bool
    queued: tuple[Delivery, ...]


@dataclass(slots=True)
class _Session:
    """The broker's state for one client id; outlives the link when persistent."""

    client_id: str
    clean_session: bool
    subscriptions: dict[str, None] = field(default_factory=dict)  # ordered set of filters
    queue: deque[Delivery] = field(default_factory=deque)
    online: bool = False
    sink: Sink | None = None
    on_takeover: Callable[[], None] | None = None
    will: Will | None = None


class MemoryBroker:
    """A synchronous, in-process MQTT broker (see the module docstring for the model).

    Args:
        acl: optional access-control callback; ``None`` allows everything, like a broker
            without an ACL file.
        max_queued_messages: per-session cap on messages queued while offline, beyond which
            new ones are dropped silently and counted in :attr:`overflowed`; Mosquitto's
            default is 1000, ``None`` (the default here) means unbounded. Simulations set it
            to show that end-to-end receipts, not the broker, make delivery reliable.
    """

    def __init__(
        self,
        *,
        acl: AclCallback | None = None,
        max_queued_messages: int | None = None,
    ) -> None:
        if max_queued_messages is not None and max_queued_messages < 0:
            raise ConfigError(
                f"max_queued_messages must be >= 0 or None, not {max_queued_messages}"
            )
        self.acl = acl
        self.max_queued_messages = max_queued_messages
        self._sessions: dict[str, _Session] = {}
        self._retained: dict[str, bytes] = {}
        #: publishes accepted from clients (denied ones excluded).
        self.accepted = 0
        #: publishes and subscriptions refused by the ACL.
        self.denied = 0
        #: messages dropped because an offline session's queue was full.
        self.overflowed = 0

    # -- sessions ------------------------------------------------------------------------

    def connect(
        self,
        client_id: str,
        *,
        clean_session: bool = False,
        will: Will | None = None,
        sink: Sink | None = None,
        on_takeover: Callable[[], None] | None = None,
    ) -> Connected:
        """Bring ``client_id`` online and hand over what its session queued.

        A client id already online is taken over: the old link is closed uncleanly (its
        ``on_takeover`` is called and its will published), as MQTT requires.
        """
        if not client_id:
            raise TransportError(
                "a client id is required: persistent sessions are keyed by it",
                reason="transport.client_id",
            )
        session = self._sessions.get(client_id)
        if session is not None and session.online:
            _log.warning("client %s connected again; taking over its session", client_id)
            callback = session.on_takeover
            self._drop_link(session, graceful=False)
            if callback is not None:
                callback()
            session = self._sessions.get(client_id)
        present = session is not None and not clean_session
        if session is None or clean_session:
            session = _Session(client_id=client_id, clean_session=clean_session)
            self._sessions[client_id] = session
        session.clean_session = clean_session
        session.online = True
        session.sink = sink
        session.on_takeover = on_takeover
        session.will = will
        queued = tuple(session.queue)
        session.queue.clear()
        return Connected(session_present=present, queued=queued)

    def disconnect(self, client_id: str, *, graceful: bool = True) -> list[tuple[str, Delivery]]:
        """Take ``client_id`` offline.

        ``graceful`` is an MQTT DISCONNECT (the will is discarded); otherwise the link died
        and the will is published. Returns what the will routed to other clients.
        """
        session = self._sessions.get(client_id)
        if session is None or not session.online:
            return []
        return self._drop_link(session, graceful=graceful)

    def is_online(self, client_id: str) -> bool:
        """Whether ``client_id`` currently has a live link."""
        session = self._sessions.get(client_id)
        return session is not None and session.online

    def has_session(self, client_id: str) -> bool:
        """Whether the broker holds a session (online or persistent) for ``client_id``."""
        return client_id in self._sessions

    def queued(self, client_id: str) -> int:
        """How many messages wait for ``client_id`` to come back."""
        session = self._sessions.get(client_id)
        return 0 if session is None else len(session.queue)

    def subscriptions(self, client_id: str) -> tuple[str, ...]:
        """The filters in ``client_id``'s session, in the order they were first granted."""
        session = self._sessions.get(client_id)
        return () if session is None else tuple(session.subscriptions)

    def retained(self, topic: str) -> bytes | None:
        """The retained payload for ``topic``, if any."""
        return self._retained.get(topic)

    # -- subscriptions -------------------------------------------------------------------

    def subscribe(self, client_id: str, *filters: str) -> list[Delivery]:
        """Add ``filters`` to the client's session and return the retained messages they
        match, which the caller delivers to that client.

        A filter the ACL denies is acknowledged but not recorded, so it delivers nothing.
        Re-subscribing an existing filter sends its retained messages again, as MQTT 3.1.1
        requires.
        """
        session = self._online_session(client_id, "subscribe")
        granted: list[str] = []
        for filter_ in filters:
            validate_filter(filter_)
            if not self._allowed(client_id, "subscribe", filter_):
                self.denied += 1
                _log.info("ACL denied %s subscribing to %r", client_id, filter_)
                continue
            session.subscriptions[filter_] = None
            granted.append(filter_)
        out: list[Delivery] = []
        for topic, payload in self._retained.items():
            if any(topic_matches(f, topic) for f in granted) and self._allowed(
                client_id, "subscribe", topic
            ):
                out.append(Delivery(topic, payload))
        return out

    def unsubscribe(self, client_id: str, *filters: str) -> None:
        """Remove ``filters`` from the client's session (unknown ones are ignored)."""
        session = self._online_session(client_id, "unsubscribe")
        for filter_ in filters:
            session.subscriptions.pop(filter_, None)

    # -- publishing ----------------------------------------------------------------------

    def publish(
        self, sender: str, topic: str, payload: bytes, *, retain: bool = False
    ) -> list[tuple[str, Delivery]]:
        """Route one message; return the deliveries made to clients that are online.

        ``sender`` names the publishing client for the ACL. The core does not insist that it
        is connected, so a simulator can inject traffic as any client; the transports only
        publish while connected. Offline persistent sessions queue the message instead.
        """
        validate_topic(topic)
        if not self._allowed(sender, "publish", topic):
            # Mosquitto acknowledges a denied publish and drops it: the sender cannot tell.
            self.denied += 1
            _log.info("ACL denied %s publishing to %r; dropped", sender, topic)
            return []
        self.accepted += 1
        payload = bytes(payload)
        if retain:
            if payload:
                self._retained[topic] = payload
            else:
                self._retained.pop(topic, None)
        return self._route(Delivery(topic, payload))

    # -- internals -----------------------------------------------------------------------

    def _route(self, delivery: Delivery) -> list[tuple[str, Delivery]]:
        routed: list[tuple[str, Delivery]] = []
        # Snapshot: a sink may react synchronously (e.g. publish), which must not change
        # who receives the message being routed now.
        for session in list(self._sessions.values()):
            if not any(topic_matches(f, delivery.topic) for f in session.subscriptions):
                continue
            if not self._allowed(session.client_id, "subscribe", delivery.topic):
                continue
            if session.online:
                routed.append((session.client_id, delivery))
                if session.sink is not None:
                    session.sink(delivery)
            elif (
                self.max_queued_messages is not None
                and len(session.queue) >= self.max_queued_messages
            ):
                self.overflowed += 1
            else:
                session.queue.append(delivery)
        return routed

    def _drop_link(self, session: _Session, *, graceful: bool) -> list[tuple[str, Delivery]]:
        will = session.will
        session.online = False
        session.sink = None
        session.on_takeover = None
        session.will = None
        if session.clean_session:
            del self._sessions[session.client_id]
        if graceful or will is None:
            return []
        return self.publish(session.client_id, will.topic, will.payload, retain=will.retain)

    def _online_session(self, client_id: str, action: str) -> _Session:
        session = self._sessions.get(client_id)
        if session is None or not session.online:
            raise TransportError(
                f"{client_id!r} cannot {action} while it is not connected to the broker",
                reason="transport.disconnected",
            )
        return session

    def _allowed(self, client_id: str, action: Literal["publish", "subscribe"], topic: str) -> bool:
        return self.acl is None or self.acl(client_id, action, topic)


class MemoryTransport:
    """A :class:`~i24net.transport.base.Transport` over a :class:`MemoryBroker`.

    It behaves like :class:`~i24net.transport.mqtt.MqttTransport` where the layers above can
    tell: publishes wait while the link is down, subscriptions come back after a reconnect
    that lost the session, messages for a persistent session queue up while it is away.
    :meth:`disconnect` and :meth:`reconnect` simulate a link loss and its repair.

    Args:
        broker: the broker to attach to.
        client_id: the session key; reuse it to find a persistent session again.
        clean_session: ``False`` (the default) keeps the session while disconnected.
        will: last will, published if the link is cut (not on a clean exit).
        publish_timeout: seconds a publish or subscribe may wait for the link; ``None``
            waits as long as it takes.
        logger: where link changes are logged.
    """

    def __init__(
        self,
        broker: MemoryBroker,
        client_id: str,
        clean_session: bool = False,
        *,
        will: Will | None = None,
        publish_timeout: float | None = None,
        logger: logging.Logger | None = None,
    ) -> None:
        self.broker = broker
        self.client_id = client_id
        self.clean_session = clean_session
        self.will = will
        self.publish_timeout = publish_timeout
        self._log = logger or _log
        self._connected = asyncio.Event()
        self._link_changed = LinkSignal()
        self._incoming = DeliveryQueue()
        self._filters: dict[str, None] = {}
        self._entered = False
        self._closed = False
        self._ever_connected = False
        #: publishes the broker accepted from this transport.
        self.published = 0
        self.guard: Callable[[], bool] | None = None  # fencing (transport.base.Transport)
        #: messages put on the delivery queue.
        self.received = 0
        #: successful connections after the first.
        self.reconnects = 0

    @property
    def is_connected(self) -> bool:
        """Whether the simulated link is up."""
        return self._connected.is_set()

    @property
    def connected(self) -> asyncio.Event:
        """Set while the simulated link is up."""
        return self._connected

    async def __aenter__(self) -> Self:
        if self._entered:
            raise TransportError(
                f"transport {self.client_id!r} was already used; create a new one",
                reason="transport.reused",
            )
        self._entered = True
        self._link_up()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._connected.is_set():
            self.broker.disconnect(self.client_id, graceful=True)
            self._connected.clear()
        self._closed = True
        self._link_changed.notify()  # publishers waiting for the link fail now
        # End the delivery iterator only after what is already queued, so nothing the
        # broker handed over is thrown away.
        self._incoming.close()

    def disconnect(self) -> None:
        """Cut the link as a network fault would: the will is published, a persistent
        session starts queueing, publishes wait."""
        if not self._connected.is_set():
            return
        self._connected.clear()
        self._link_changed.notify()
        self.broker.disconnect(self.client_id, graceful=False)
        self._log.warning("%s: link to the memory broker lost", self.client_id)

    def reconnect(self) -> None:
        """Restore the link: queued messages flow first, then lost subscriptions return."""
        if self._closed or not self._entered:
            raise TransportError(
                f"transport {self.client_id!r} is not open; use 'async with' first",
                reason="transport.closed",
            )
        if not self._connected.is_set():
            self._link_up()

    async def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        """Publish once the link is up; the memory broker acknowledges synchronously."""
        validate_topic(topic)
        async with deadline(self.publish_timeout, f"{self.client_id}: publish to {topic!r}"):
            while True:
                await self._wait_link()
                # A real publish always yields; doing the same here keeps tests on the
                # memory transport honest about concurrency. The link may drop meanwhile.
                await asyncio.sleep(0)
                if self._connected.is_set():
                    break
        if self.guard is not None and not self.guard():
            raise TransportError(f"{self.client_id}: publish to {topic!r} refused: this client "
                                 "may no longer act (its lease is gone)",
                                 reason="transport.fenced")
        self.broker.publish(self.client_id, topic, payload, retain=retain)
        self.published += 1

    async def subscribe(self, *filters: str) -> None:
        """Subscribe once the link is up; retained matches are queued at once."""
        for filter_ in filters:
            validate_filter(filter_)
        async with deadline(self.publish_timeout, f"{self.client_id}: subscribe {filters!r}"):
            await self._wait_link()
        for delivery in self.broker.subscribe(self.client_id, *filters):
            self._accept(delivery)
        # Remembered only once granted: a reconnect that lost the session restores these,
        # while a subscribe still waiting for the link makes its own request.
        self._filters.update(dict.fromkeys(filters))

    def deliveries(self) -> AsyncIterator[Delivery]:
        """Incoming messages until the transport closes (one consumer)."""
        return self._incoming.iterate()

    def _link_up(self) -> None:
        result = self.broker.connect(
            self.client_id,
            clean_session=self.clean_session,
            will=self.will,
            sink=self._accept,
            on_takeover=self._taken_over,
        )
        for delivery in result.queued:
            self._accept(delivery)
        if not result.session_present and self._filters:
            # The broker forgot us (clean session, or it never had one): subscribe again.
            for delivery in self.broker.subscribe(self.client_id, *self._filters):
                self._accept(delivery)
        if self._ever_connected:
            self.reconnects += 1
        self._ever_connected = True
        self._connected.set()
        self._link_changed.notify()
        self._log.info(
            "%s: connected to the memory broker (session present: %s, %d queued)",
            self.client_id,
            result.session_present,
            len(result.queued),
        )

    def _taken_over(self) -> None:
        self._connected.clear()
        self._link_changed.notify()
        self._log.warning("%s: session taken over by another connection", self.client_id)

    def _accept(self, delivery: Delivery) -> None:
        self.received += 1
        self._incoming.put(delivery)

    async def _wait_link(self) -> None:
        while True:
            if self._closed:
                raise TransportError(
                    f"transport {self.client_id!r} is closed", reason="transport.closed"
                )
            if self._connected.is_set():
                return
            await self._link_changed.changed()
