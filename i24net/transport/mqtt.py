"""The transport over a real MQTT 3.1.1 broker, built on aiomqtt 2.x (paho-mqtt 2.x).

Theory of operation: one supervisor task (``mqtt-supervisor:<client_id>``) owns the link.
It connects with a fixed client id and, by default, ``clean_session=False``, so the broker
keeps our subscriptions and queues QoS 1 messages while we are away. Each link runs two
tasks in a ``TaskGroup``: ``mqtt-pump:<client_id>`` moves ``client.messages`` into our own
unbounded queue, and ``mqtt-subscribe:<client_id>`` re-subscribes when the CONNACK says the
broker lost the session, then marks the link up. When the link dies the pump's iterator
raises ``MqttError``, the group ends, and the supervisor reconnects after a randomised
exponential backoff (jitter from the injected ``rng``). A fresh ``aiomqtt.Client`` is built
for every attempt: after an unexpected disconnect aiomqtt 2.5 leaves the old client's
``_connected`` future resolved, so re-entering it would not wait for the next CONNACK.

The broker may be a cluster: the transport takes an ordered list of member addresses and a
``start`` index (callers spread nodes over the members with it). :class:`MemberRotation`,
which does no I/O, decides where the next attempt goes and how long to wait first: every
failed attempt or lost link moves on to the next member, round robin, after only the
shortest delay, so a node leaves a dead member within about a second; once a whole round
of members has failed, the delay grows as :func:`backoff_delay` says. The cluster holds the
session, so the CONNACK on the new member may say it is present; when it does not (separate
brokers, or the cluster lost it) the subscriptions are restored as after any reconnect.

Publishers never talk to the supervisor: they wait for a live link, publish at QoS 1 and
race the PUBACK against the link's ``lost`` future, because aiomqtt would otherwise wait
for the full timeout on a dead link. A publish cut off by a disconnect is sent again on the
next link (so the broker may see it twice; receivers de-duplicate by message id). An
``asyncio.Semaphore(max_inflight)`` bounds the publishes in flight: aiomqtt logs a warning
for every pending call beyond ten and paho queues beyond its own in-flight limit, so
thousands of concurrent publishes would otherwise flood the log and hit timeouts.

Traps handled here (docs/protocol.md 8.8): paho PUBACKs an incoming message as soon as its
callback returns, before our code sees it, and aiomqtt drops messages when its queue is
bounded and full - so that queue is unbounded and drained promptly into ours, and whatever
is left in it when a link ends is drained too rather than thrown away.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import socket
import struct
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self, TypeVar

import aiomqtt
import paho.mqtt.client as paho
from aiomqtt.exceptions import MqttConnectError

from i24net.core.errors import ConfigError, TransportError
from i24net.transport.base import Delivery, Will
from i24net.transport.topics import validate_filter, validate_topic
from i24net.transport.waiting import DeliveryQueue, LinkSignal, deadline

__all__ = ["MAX_PAYLOAD_BYTES", "Address", "MemberRotation", "MqttTransport", "backoff_delay"]

#: A broker member: host and TCP port.
Address = tuple[str, int]

#: The MQTT remaining-length field tops out at 268,435,455 bytes for the whole PUBLISH
#: packet (topic, packet id and payload); paho raises a bare ValueError beyond it.
MAX_PAYLOAD_BYTES = 268_435_455

#: Seconds to wait for a CONNACK, or a SUBACK while restoring subscriptions, before giving
#: the link up as broken. Matches aiomqtt's own default.
NODELAY = (socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # aiomqtt socket option: no Nagle
ACK_TIMEOUT = 10.0

#: paho return codes meaning "there is no connection": the operation did not reach the
#: broker and must wait for the next link.
_LINK_DOWN_CODES = frozenset({paho.MQTT_ERR_NO_CONN, paho.MQTT_ERR_CONN_LOST})

#: SUBACK return codes at or above this are refusals (0x80 in MQTT 3.1.1).
_SUBACK_FAILURE = 0x80

_T = TypeVar("_T")


def backoff_delay(failures: int, *, minimum: float, maximum: float, rng: random.Random) -> float:
    """Seconds to wait before reconnect attempt number ``failures`` (0-based).

    The ceiling doubles from ``minimum`` up to ``maximum``; the delay is drawn uniformly
    from the upper half of it. Jitter spreads out the reconnect storm when a broker comes
    back to hundreds of nodes at once; keeping the lower half out stops a refused client
    from spinning.
    """
    ceiling = min(maximum, minimum * 2.0 ** min(failures, 32))
    return rng.uniform(ceiling / 2.0, ceiling)


@dataclass(slots=True)
class MemberRotation:
    """Which broker member the next connection attempt goes to, and how far to back off.

    No I/O and no clock: the supervisor reports how each attempt ended and gets back the
    ``failures`` argument for :func:`backoff_delay`. Within a round (fewer than one failure
    per member since the last link came up) that is 0, the shortest delay, so a node fails
    over quickly; after each full round it grows by one, as the reconnects to a single
    broker always did. A lost link counts as the round's first failure: that member was
    just tried and is gone.

    Args:
        members: the broker members, in the order to try them.
        start: index of the first member to try, taken modulo the number of members.
    """

    members: tuple[Address, ...]
    start: int = 0
    #: index into ``members`` of the member to try next (or the one in use).
    index: int = field(init=False)
    #: consecutive failures since the last link came up, the lost link included.
    failures: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        if not isinstance(self.start, int):
            raise ConfigError(f"start must be an integer member index, not {self.start!r}")
        if not self.members:
            raise ConfigError("at least one broker address is required")
        self.index = self.start % len(self.members)

    @property
    def current(self) -> Address:
        """The member to try next, or the one the live link goes to."""
        return self.members[self.index]

    @property
    def first_round(self) -> bool:
        """Whether each member has failed at most once since the last link was up."""
        return self.failures <= len(self.members)

    def failed(self, *, was_up: bool) -> int:
        """Record that the link to :attr:`current` was lost (``was_up``) or could not be
        made, move on to the next member, and return the backoff step for the wait."""
        self.failures = 1 if was_up else self.failures + 1
        self.index = (self.index + 1) % len(self.members)
        rounds, within = divmod(self.failures, len(self.members))
        return 0 if within else rounds - 1


class _LinkLost(Exception):
    """Internal: the link died before the operation was acknowledged; retry on the next."""


@dataclass(slots=True)
class _Connack:
    """What the CONNACK said; filled in by a hook on paho's ``on_connect``."""

    session_present: bool | None = None


@dataclass(eq=False, slots=True)
class _Link:
    """One connection to the broker, from CONNACK to disconnect."""

    client: aiomqtt.Client
    connack: _Connack
    address: Address
    lost: asyncio.Future[None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )
    up: bool = False


class MqttTransport:
    """A :class:`~i24net.transport.base.Transport` over an MQTT 3.1.1 broker.

    Args:
        host: broker address (i24net's own brokers listen on 127.0.0.1), for a single
            broker; give ``addresses`` instead for a cluster.
        port: broker port, with ``host``.
        addresses: the members of a clustered broker as ``(host, port)`` pairs, in the
            order to try them; the transport fails over to the next one when its member
            dies or cannot be reached. Same credentials, client id and TLS CA for all.
        start: index of the member to try first (modulo their number), to spread nodes
            over the members.
        client_id: fixed MQTT client id; the broker keys the persistent session on it, and
            a second connection with the same id takes the session over.
        username: broker account (``None`` for anonymous).
        password: its password.
        clean_session: ``False`` (the default) keeps subscriptions and queues messages at
            the broker while disconnected.
        tls_ca: path to a CA bundle; enables TLS when given.
        will: last will as a :class:`~i24net.transport.base.Will` or a
            ``(topic, payload, retain)`` tuple; published at QoS 1 if the link dies.
        max_inflight: publishes allowed in flight at once (also paho's in-flight window).
        logger: where link changes go; paho's packet log goes to its ``paho`` child.
        keepalive: seconds between MQTT pings; a dead link is noticed within about 1.5x.
        reconnect_min: first reconnect backoff ceiling, in seconds.
        reconnect_max: largest reconnect backoff, in seconds.
        rng: source of backoff jitter; pass a seeded one for reproducible runs.
        connect_timeout: seconds ``async with`` waits for the first connection before
            raising ``TransportError(reason="transport.connect")``; ``None`` waits forever.
        publish_timeout: seconds a publish or subscribe may take, including time spent
            waiting for the link; ``None`` (the default) waits as long as it takes.
        name: what logs and errors call this client (default: ``client_id``); give one
            when the client id holds a secret (``broker.unguessable_client_id``).
    """

    def __init__(
        self,
        host: str | None = None,
        port: int | None = None,
        *,
        addresses: Sequence[Address] | None = None,
        start: int = 0,
        client_id: str,
        username: str | None = None,
        password: str | None = None,
        clean_session: bool = False,
        tls_ca: str | None = None,
        will: Will | tuple[str, bytes, bool] | None = None,
        max_inflight: int = 64,
        logger: logging.Logger | None = None,
        keepalive: int = 30,
        reconnect_min: float = 0.2,
        reconnect_max: float = 5.0,
        rng: random.Random | None = None,
        connect_timeout: float | None = 10.0,
        publish_timeout: float | None = None,
        name: str | None = None,
    ) -> None:
        if not client_id:
            raise ConfigError("client_id is required: the broker keys persistent sessions on it")
        if max_inflight < 1:
            raise ConfigError(f"max_inflight must be at least 1, not {max_inflight}")
        if not 0 < reconnect_min <= reconnect_max:
            raise ConfigError(
                "reconnect backoff needs 0 < reconnect_min <= reconnect_max, got "
                f"{reconnect_min} and {reconnect_max}"
            )
        if keepalive < 1:
            raise ConfigError(f"keepalive must be at least 1 second, not {keepalive}")
        self._rotation = MemberRotation(_members(host, port, addresses), start)
        #: the broker members, in the order they are tried.
        self.addresses = self._rotation.members
        #: the member of the live link, or of the last one (before any: the first to try).
        self.host, self.port = self._rotation.current
        self.client_id = client_id
        #: how logs, task names and errors call this client: ``client_id`` unless a
        #: ``name`` was given (one without the secret part of an unguessable client id).
        self.name = name or client_id
        self._username = username
        self._password = password
        self._clean_session = clean_session
        self._tls_ca = tls_ca
        # Fencing: when set, every publish (each resend included) first asks it, and is
        # refused (``transport.fenced``) once it says no: a router whose shard lease is gone.
        self.guard: Callable[[], bool] | None = None
        self._will = will if will is None or isinstance(will, Will) else Will(*will)
        if self._will is not None:
            validate_topic(self._will.topic)
        self._max_inflight = max_inflight
        self._log = logger or logging.getLogger(__name__)
        self._keepalive = keepalive
        self._reconnect_min = reconnect_min
        self._reconnect_max = reconnect_max
        self._rng = rng or random.Random()
        self._connect_timeout = connect_timeout
        self._publish_timeout = publish_timeout

        self._window = asyncio.Semaphore(max_inflight)
        self._connected = asyncio.Event()
        self._signal = LinkSignal()
        self._incoming = DeliveryQueue()
        # Measurement hook: called with each frame as it comes off the socket.
        self.on_arrival: Callable[[bytes], None] | None = None
        self._filters: dict[str, None] = {}  # granted filters, in order, restored if lost
        self._link: _Link | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._fatal: TransportError | None = None
        self._entered = False
        self._closing = False
        self._links_up = 0
        self._inflight = 0

        #: publishes acknowledged by the broker.
        self.published = 0
        #: messages received from the broker (duplicates included).
        self.received = 0
        #: successful connections after the first.
        self.reconnects = 0
        #: moves to another broker member after a failed attempt or a lost link.
        self.failovers = 0
        #: publishes sent again because a disconnect cut them off.
        self.retried = 0
        #: the most publishes ever in flight at once (never above ``max_inflight``).
        self.peak_inflight = 0
        #: the session-present flag of the latest CONNACK (``None`` before the first).
        self.session_present: bool | None = None
        #: the error that ended the latest link or connection attempt.
        self.last_error: BaseException | None = None
        #: links that were up and were lost.
        self.link_losses = 0
        #: lost links the broker closed while it kept running: the next attempt, to the same
        #: member, got in at once. Another connection that presented this client id (a
        #: session takeover) does that; so does a broker that dropped the link (keepalive).
        self.suspected_takeovers = 0
        #: ``time.time()`` of the latest change of link state (``None`` before the first).
        self.link_changed_at: float | None = None
        self._lost: tuple[float, Address] | None = None  # when and where the last link went
        self._attempts_since_loss = 0
        self._link_listeners: list[Callable[[bool], None]] = []

    # -- the Transport interface -------------------------------------------------------

    @property
    def is_connected(self) -> bool:
        """Whether a link is up (connected and subscriptions restored)."""
        return self._connected.is_set()

    @property
    def connected(self) -> asyncio.Event:
        """Set while a link is up; cleared the moment it is lost."""
        return self._connected

    @property
    def granted_filters(self) -> tuple[str, ...]:
        """The filters the broker granted, restored after every reconnect that lost them."""
        return tuple(self._filters)

    def add_link_listener(self, listener: Callable[[bool], None]) -> None:
        """Call ``listener(True)`` each time a link comes up (subscriptions restored) and
        ``listener(False)`` each time it is lost."""
        self._link_listeners.append(listener)

    def _tell(self, up: bool) -> None:
        self.link_changed_at = time.time()
        for listener in list(self._link_listeners):
            try:
                listener(up)
            except Exception:  # a listener's bug must not take the link down
                self._log.exception("%s: link listener failed", self.name)

    @property
    def inflight(self) -> int:
        """Publishes currently holding a slot of the in-flight window."""
        return self._inflight

    async def __aenter__(self) -> Self:
        """Start the supervisor and wait for the first connection.

        Raises ``TransportError`` with reason ``transport.refused`` if the broker refuses
        the credentials or client id, or ``transport.connect`` if no connection is made
        within ``connect_timeout``; in both cases nothing is left running.
        """
        if self._entered:
            raise TransportError(
                f"transport {self.name!r} was already used; create a new one",
                reason="transport.reused",
            )
        self._entered = True
        self._supervisor = asyncio.create_task(
            self._supervise(), name=f"mqtt-supervisor:{self.name}"
        )
        try:
            async with asyncio.timeout(self._connect_timeout):
                await self._wait_link()
        except TimeoutError as exc:
            await self._stop()
            last = "none" if self.last_error is None else _describe(self.last_error)
            if len(self.addresses) == 1:
                where = f"the MQTT broker at {self.host}:{self.port}"
            else:
                where = "any MQTT broker member (" + ", ".join(map(_show, self.addresses)) + ")"
            raise TransportError(
                f"could not connect to {where} as {self.name!r} within "
                f"{self._connect_timeout} s (last error: {last}); is the broker running?",
                reason="transport.connect",
            ) from exc
        except BaseException:
            await self._stop()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Disconnect cleanly (the broker discards the will) and end :meth:`deliveries`."""
        await self._stop()

    async def abort(self) -> None:
        """Drop the connection as a crash would: no DISCONNECT, so the broker publishes
        the will and keeps the session (with what it queues meanwhile) for the next
        connection with this client id. Ends :meth:`deliveries` like ``__aexit__``."""
        link = self._link
        if link is not None:
            _drop_socket(link.client)
        await self._stop()
        if link is not None:
            # aiomqtt records the dropped link as an exception on its ``_disconnected``
            # future, which nobody awaits after an abort: retrieve it, it is expected.
            lost = getattr(link.client, "_disconnected", None)
            if isinstance(lost, asyncio.Future) and lost.done() and not lost.cancelled():
                lost.exception()

    async def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        """Publish at QoS 1; return once the broker sent PUBACK.

        Waits while disconnected and resends after a disconnect, both bounded by
        ``publish_timeout`` (``TransportError(reason="transport.timeout")``).
        """
        validate_topic(topic)
        if not isinstance(payload, bytes):
            payload = bytes(payload)
        if len(payload) + len(topic.encode()) + 4 > MAX_PAYLOAD_BYTES:
            raise TransportError(
                f"payload of {len(payload)} bytes for {topic!r} exceeds the MQTT packet limit",
                reason="transport.too_large",
            )
        self._check_open()
        if self._publish_timeout is None:
            # The common case skips the deadline's machinery: it costs a few percent of
            # throughput per message for nothing.
            await self._publish_in_window(topic, payload, retain)
        else:
            # The deadline covers the wait for a window slot too: the caller waits for it.
            async with deadline(self._publish_timeout, f"{self.name}: publish to {topic!r}"):
                await self._publish_in_window(topic, payload, retain)
        self.published += 1

    async def subscribe(self, *filters: str) -> None:
        """Subscribe at QoS 1 and return once the broker granted it (SUBACK).

        Granted filters are restored automatically after a reconnect that lost the
        session. Raises ``TransportError(reason="transport.subscribe")`` if the broker
        refuses one (Mosquitto 2.0 grants ACL-denied filters and delivers nothing).
        """
        for filter_ in filters:
            validate_filter(filter_)
        if not filters:
            return
        self._check_open()
        async with deadline(self._publish_timeout, f"{self.name}: subscribe {filters!r}"):
            while True:
                link = await self._wait_link()
                try:
                    refused = await self._until_lost(
                        link, self._subscribe_on(link, filters, math.inf)
                    )
                except _LinkLost:
                    continue
                break
        granted = [f for f in filters if f not in refused]
        self._filters.update(dict.fromkeys(granted))
        if refused:
            raise TransportError(
                f"the broker refused the subscription(s) {refused!r} for {self.name!r}; "
                "check the ACL",
                reason="transport.subscribe",
            )

    def deliveries(self) -> AsyncIterator[Delivery]:
        """Incoming messages, across reconnects, until the transport is closed."""
        return self._incoming.iterate()

    # -- the supervisor ----------------------------------------------------------------

    async def _supervise(self) -> None:
        """Connect, serve, and reconnect (failing over between members) with backoff until
        cancelled or refused."""
        rotation = self._rotation
        try:
            while True:
                address = rotation.current
                error, was_up = await self._serve_link(address)
                self.last_error = error
                self._log.debug(
                    "%s: link to %s ended: %s", self.name, _show(address), _describe(error)
                )
                if self._closing:
                    # The clean disconnect on the way out failed; there is nothing to redo.
                    return
                if was_up:
                    self.link_losses += 1
                    self._lost = (time.monotonic(), address)
                    self._attempts_since_loss = 0
                else:
                    self._attempts_since_loss += 1
                if isinstance(error, MqttConnectError) and self._links_up == 0 \
                        and not _server_unavailable(error):
                    # Refused before we ever got in: wrong credentials or client id, which
                    # the other members of a cluster share. Retrying would only hide the
                    # mistake, so fail the caller of `async with`. "Server unavailable" is
                    # different: a cluster member that is starting (or has lost its quorum)
                    # says so, and another member, or the same one later, will take us.
                    self._fail(
                        TransportError(
                            f"the MQTT broker at {_show(address)} refused "
                            f"{self.name!r}: {error}; check the username, password "
                            "and ACL",
                            reason="transport.refused",
                        )
                    )
                    return
                delay = backoff_delay(
                    rotation.failed(was_up=was_up),
                    minimum=self._reconnect_min,
                    maximum=self._reconnect_max,
                    rng=self._rng,
                )
                if was_up:
                    self._log.warning(
                        "%s: lost the link to %s (%s); reconnecting in %.2f s",
                        self.name,
                        _show(address),
                        _describe(error),
                        delay,
                    )
                elif rotation.failures == 1:
                    self._log.warning(
                        "%s: cannot connect to %s (%s); retrying in %.2f s",
                        self.name,
                        _show(address),
                        _describe(error),
                        delay,
                    )
                else:
                    self._log.debug(
                        "%s: connect attempt %d failed (%s); retrying in %.2f s",
                        self.name,
                        rotation.failures,
                        _describe(error),
                        delay,
                    )
                if rotation.current != address:
                    self.failovers += 1
                    # Once every member has failed this is an outage, not a failover: the
                    # warning above has said so, and a line per attempt would flood the log.
                    self._log.log(
                        logging.INFO if rotation.first_round else logging.DEBUG,
                        "%s: broker member %s unreachable, failing over to %s",
                        self.name,
                        _show(address),
                        _show(rotation.current),
                    )
                await asyncio.sleep(delay)
        except Exception as exc:
            # Not a network fault (those are MqttError): a bug. Stop loudly rather than
            # leave publishers waiting for a link that will never come.
            self._log.exception("%s: MQTT supervisor stopped unexpectedly", self.name)
            self._fail(
                TransportError(
                    f"the MQTT transport {self.name!r} stopped unexpectedly: {exc!r}",
                    reason="transport.internal",
                )
            )
            raise

    async def _serve_link(self, address: Address) -> tuple[aiomqtt.MqttError, bool]:
        """Run one connection to ``address`` from connect to loss; return why it ended and
        whether it was ever up."""
        connack = _Connack()
        client = self._new_client(connack, address)
        link: _Link | None = None
        failure: aiomqtt.MqttError | None = None
        try:
            async with client:
                link = _Link(client=client, connack=connack, address=address)
                async with asyncio.TaskGroup() as group:
                    group.create_task(self._pump(link), name=f"mqtt-pump:{self.name}")
                    group.create_task(self._restore(link), name=f"mqtt-subscribe:{self.name}")
        except* aiomqtt.MqttError as errors:
            failure = _first_leaf(errors)
        finally:
            if link is not None:
                self._link_down(link)
                # paho has already acknowledged whatever is still in aiomqtt's queue.
                await self._drain(client)
        if failure is None:  # the pump only ends by raising; keep mypy and readers honest
            failure = aiomqtt.MqttError("link ended without an error")
        return failure, link is not None and link.up

    def _new_client(self, connack: _Connack, address: Address) -> aiomqtt.Client:
        """A fresh aiomqtt client for one connection attempt (see the module docstring)."""
        will = self._will
        host, port = address
        client = aiomqtt.Client(
            host,
            port,
            username=self._username,
            password=self._password,
            logger=self._log.getChild("paho"),
            identifier=self.client_id,
            protocol=aiomqtt.ProtocolVersion.V311,
            will=None if will is None else aiomqtt.Will(will.topic, will.payload, 1, will.retain),
            clean_session=self._clean_session,
            timeout=ACK_TIMEOUT,
            keepalive=self._keepalive,
            # 0 is unbounded: a bound makes aiomqtt discard messages paho already acked.
            max_queued_incoming_messages=0,
            max_inflight_messages=self._max_inflight,
            tls_params=None
            if self._tls_ca is None
            else aiomqtt.TLSParameters(ca_certs=self._tls_ca),
            # paho leaves Nagle on: a lone small packet then waits for the broker's delayed
            # ACK (~40 ms); frames are whole packets, so each goes at once
            socket_options=(NODELAY,),
        )
        # aiomqtt warns once per call whenever more than this many are pending; our window
        # already bounds them, so only warn if something escapes it.
        client.pending_calls_threshold = self._max_inflight + 16
        _hook_session_present(client, connack)
        return client

    async def _pump(self, link: _Link) -> None:
        """Move incoming messages into our queue until the link dies (MqttError)."""
        try:
            async for message in link.client.messages:
                self._accept(message)
                # aiomqtt's iterator costs a task and an asyncio.wait per message; take what
                # it already holds in one go, so a saturated daemon's backlog waits in the
                # daemon's precedence queue rather than in aiomqtt's FIFO ahead of it.
                held = getattr(link.client, "_queue", None)
                while held is not None and not held.empty():
                    self._accept(held.get_nowait())
        except aiomqtt.MqttError:
            self._link_down(link)  # let publishers retry now, not after the group unwinds
            raise

    async def _restore(self, link: _Link) -> None:
        """Re-subscribe if the broker lost our session, then mark the link up."""
        self.session_present = link.connack.session_present
        if link.connack.session_present is not True and self._filters:
            # Not present (clean session, broker restarted without persistence, session
            # expired) or unknown: the broker has no subscriptions for us.
            filters = tuple(self._filters)
            refused = await self._subscribe_on(link, filters, ACK_TIMEOUT)
            for filter_ in refused:
                # The ACL changed while we were away: nothing to retry, say so loudly.
                self._filters.pop(filter_, None)
                self._log.error(
                    "%s: the broker refused to restore the subscription %r",
                    self.name,
                    filter_,
                )
            self._log.info(
                "%s: restored %d subscription(s)", self.name, len(filters) - len(refused)
            )
        self._link_up(link)

    async def _drain(self, client: aiomqtt.Client) -> None:
        """Take what is left in a finished client's queue.

        Only called once the client is disconnected and its pump is done. While the queue
        is non-empty, aiomqtt's iterator returns the next message even after a disconnect
        (its queue-get task completes before the disconnect wait is looked at).
        """
        messages = client.messages
        for _ in range(len(messages)):
            try:
                self._accept(await anext(messages))
            except aiomqtt.MqttError:
                break

    def _accept(self, message: aiomqtt.Message) -> None:
        self.received += 1
        # paho hands over the payload as bytes, exactly as published.
        payload = bytes(message.payload)
        if self.on_arrival is not None:
            self.on_arrival(payload)
        self._incoming.put(Delivery(message.topic.value, payload))

    def backlog(self) -> dict[str, int]:
        """Where received frames wait: aiomqtt's message queue and the hand-over queue
        that ``deliveries()`` reads (both FIFO)."""
        link = self._link
        return {"aiomqtt_queue": len(link.client.messages) if link is not None else 0,
                "incoming": len(self._incoming)}

    def _link_up(self, link: _Link) -> None:
        if link.lost.done():
            return
        link.up = True
        self._link = link
        self.host, self.port = link.address
        self._links_up += 1
        if self._links_up > 1:
            self.reconnects += 1
        self._connected.set()
        self._signal.notify()
        lost, self._lost = self._lost, None
        if lost is not None and self._attempts_since_loss == 0 and lost[1] == link.address:
            self.suspected_takeovers += 1
            self._log.error(
                "%s: the broker at %s closed this client's link while it kept running (back "
                "on the first attempt after %.2f s): another connection presented client id "
                "%r and took its session over, or the broker dropped it (keepalive, reload); "
                "reconnected (session present: %s)",
                self.name,
                _show(link.address),
                time.monotonic() - lost[0],
                self.name,
                link.connack.session_present,
            )
        else:
            self._log.info(
                "%s: connected to %s:%d (session present: %s)",
                self.name,
                self.host,
                self.port,
                link.connack.session_present,
            )
        self._tell(True)

    def _link_down(self, link: _Link) -> None:
        if not link.lost.done():
            link.lost.set_result(None)
        if self._link is link:
            self._link = None
            self._connected.clear()
            self._signal.notify()
            self._tell(False)

    def _fail(self, error: TransportError) -> None:
        self._fatal = error
        self._signal.notify()

    async def _stop(self) -> None:
        self._closing = True
        self._signal.notify()
        task = self._supervisor
        if task is not None:
            if not task.done():
                task.cancel()  # its `async with client` sends DISCONNECT on the way out
            await asyncio.wait({task})
            if not task.cancelled() and task.exception() is not None:
                self._log.debug("%s: supervisor had failed: %r", self.name, task.exception())
        self._connected.clear()
        self._incoming.close()
        self._log.info("%s: transport closed", self.name)

    # -- operations on a link ----------------------------------------------------------

    def _check_open(self) -> None:
        if not self._entered:
            raise TransportError(
                f"transport {self.name!r} is not open; use 'async with' first",
                reason="transport.closed",
            )

    async def _wait_link(self) -> _Link:
        """The current live link, waiting for one while disconnected."""
        while True:
            if self._fatal is not None:
                raise TransportError(
                    self._fatal.message, reason=self._fatal.reason
                ) from self._fatal
            if self._closing:
                raise TransportError(
                    f"transport {self.name!r} is closed", reason="transport.closed"
                )
            link = self._link
            if link is not None and not link.lost.done():
                return link
            await self._signal.changed()

    async def _publish_in_window(self, topic: str, payload: bytes, retain: bool) -> None:
        """Hold one slot of the in-flight window until the broker acknowledged."""
        async with self._window:
            self._inflight += 1
            self.peak_inflight = max(self.peak_inflight, self._inflight)
            try:
                await self._publish_until_acked(topic, payload, retain)
            finally:
                self._inflight -= 1

    async def _publish_until_acked(self, topic: str, payload: bytes, retain: bool) -> None:
        while True:
            link = await self._wait_link()
            guard = self.guard
            if guard is not None and not guard():
                raise TransportError(
                    f"{self.name}: publish to {topic!r} refused: this client may no longer "
                    "act (its lease is gone)", reason="transport.fenced")
            try:
                await self._until_lost(
                    link,
                    link.client.publish(topic, payload, qos=1, retain=retain, timeout=math.inf),
                )
            except _LinkLost:
                self.retried += 1
                self._log.debug(
                    "%s: publish to %r cut off by a disconnect; resending on the next link",
                    self.name,
                    topic,
                )
                continue
            except aiomqtt.MqttError as exc:
                raise TransportError(
                    f"the broker did not accept a publish to {topic!r}: {exc}",
                    reason="transport.publish",
                ) from exc
            return

    async def _subscribe_on(
        self, link: _Link, filters: tuple[str, ...], timeout: float
    ) -> list[str]:
        """Send one SUBSCRIBE for ``filters`` at QoS 1; return the ones the broker refused."""
        codes = await link.client.subscribe([(f, 1) for f in filters], timeout=timeout)
        return [
            f
            for f, code in zip(filters, codes, strict=False)
            if _code_value(code) >= _SUBACK_FAILURE
        ]

    async def _until_lost(self, link: _Link, operation: Awaitable[_T]) -> _T:
        """Await ``operation`` unless the link dies first, then raise :class:`_LinkLost`.

        aiomqtt waits for an acknowledgement with a timeout but does not notice that the
        link died meanwhile; racing against ``link.lost`` turns a dead link into an
        immediate retry instead of a long stall.
        """
        task = asyncio.ensure_future(operation)
        task.add_done_callback(_retrieve)
        try:
            await asyncio.wait((task, link.lost), return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not task.done():
                task.cancel()
        if not task.done():
            raise _LinkLost
        try:
            return task.result()
        except aiomqtt.MqttCodeError as exc:
            if exc.rc not in _LINK_DOWN_CODES and not link.lost.done():
                raise
            # paho saw the socket go before the pump did: give the supervisor a moment to
            # notice, so the retry does not spin on the same dead link.
            await asyncio.wait({link.lost}, timeout=1.0)
            self._link_down(link)
            raise _LinkLost from exc


def _hook_session_present(client: aiomqtt.Client, connack: _Connack) -> None:
    """Record CONNACK's session-present flag, which aiomqtt 2.x does not expose.

    aiomqtt keeps its paho client in ``_client`` and installs ``on_connect`` on it; we
    wrap that callback. If a future aiomqtt moves it, the flag stays ``None`` and the
    transport re-subscribes on every connect, which is correct, only more chatty
    (re-subscribing makes the broker resend retained messages).
    """
    inner_client = getattr(client, "_client", None)
    if not isinstance(inner_client, paho.Client):
        return
    # paho types on_connect as a union over its callback API versions; aiomqtt uses v2.
    installed: Callable[..., None] | None = inner_client.on_connect
    if installed is None:
        return
    inner: Callable[..., None] = installed

    def on_connect(
        paho_client: paho.Client,
        userdata: Any,
        flags: paho.ConnectFlags,
        reason_code: Any,
        properties: Any = None,
    ) -> None:
        connack.session_present = bool(flags.session_present)
        inner(paho_client, userdata, flags, reason_code, properties)

    inner_client.on_connect = on_connect


def _drop_socket(client: aiomqtt.Client) -> None:
    """End the client's TCP connection at once, so nothing more leaves it: not the
    DISCONNECT its ``async with`` sends on the way out, nor anything queued. ``shutdown``
    makes every later send fail; with SO_LINGER 0 paho's own close then resets the link.
    Reaches paho's socket through aiomqtt's ``_client``, as ``_hook_session_present`` does."""
    inner_client = getattr(client, "_client", None)
    sock = inner_client.socket() if isinstance(inner_client, paho.Client) else None
    if not isinstance(sock, socket.socket):  # no link, or a WebSocket wrapper
        return
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        # shutdown makes every later send fail; the close that follows resets the link
        sock.shutdown(socket.SHUT_RDWR)


def _server_unavailable(error: MqttConnectError) -> bool:
    """CONNACK return code 3 (MQTT 3.1.1), which paho 2.x reports as reason code 136."""
    rc = getattr(error, "rc", None)
    value = getattr(rc, "value", rc)
    return value in (3, 136) or "unavailable" in str(rc).lower()


def _members(
    host: str | None, port: int | None, addresses: Sequence[Address] | None
) -> tuple[Address, ...]:
    """The broker members as a checked tuple, from ``host``/``port`` or ``addresses``."""
    if addresses is None:
        if host is None or port is None:
            raise ConfigError("give the broker as host and port, or as addresses=[(host, port)]")
        candidates: list[object] = [(host, port)]
    elif host is not None or port is not None:
        raise ConfigError("give the broker as host and port or as addresses, not both")
    elif isinstance(addresses, str | bytes):
        raise ConfigError(f"addresses must be (host, port) pairs, not the string {addresses!r}")
    else:
        candidates = list(addresses)
    if not candidates:
        raise ConfigError("at least one broker address is required")
    members: list[Address] = []
    for candidate in candidates:
        pair = tuple(candidate) if isinstance(candidate, list | tuple) else ()
        if len(pair) != 2:
            raise ConfigError(f"a broker address is a (host, port) pair, not {candidate!r}")
        member_host, member_port = pair
        if not isinstance(member_host, str) or not member_host:
            raise ConfigError(f"broker host must be a non-empty string, not {member_host!r}")
        if (
            not isinstance(member_port, int)
            or isinstance(member_port, bool)
            or not 0 < member_port < 65536
        ):
            raise ConfigError(f"broker port must be 1 to 65535, not {member_port!r}")
        members.append((member_host, member_port))
    return tuple(members)


def _show(address: Address) -> str:
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _describe(error: BaseException) -> str:
    """An aiomqtt error with its cause: "Disconnected during message iteration" alone does
    not say whether the broker went away or a keepalive expired."""
    cause = error.__cause__
    return str(error) if cause is None else f"{error}: {cause}"


def _code_value(code: object) -> int:
    """A SUBACK code as an int: paho 2 gives ``ReasonCode`` objects, older paho ints."""
    value = getattr(code, "value", code)
    return value if isinstance(value, int) else 0


def _first_leaf(group: BaseExceptionGroup[aiomqtt.MqttError]) -> aiomqtt.MqttError:
    """The first MqttError in a (possibly nested) exception group."""
    first = group.exceptions[0]
    while isinstance(first, BaseExceptionGroup):
        first = first.exceptions[0]
    return first


def _retrieve(task: asyncio.Future[Any]) -> None:
    """Mark an abandoned operation's exception as seen, so asyncio does not warn about it
    when the link was lost first and nobody read the result."""
    if not task.cancelled():
        task.exception()
