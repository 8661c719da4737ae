"""What every broker engine offers: the ``Broker`` protocol.

The engines differ in how they run (amqtt in this event loop, or a child process driven by
blocking calls in a thread: ``process.ProcessControl``) but the shells see one interface:

- ``async with broker`` starts it and stops it on exit;
- ``host`` / ``port`` is where a client connects first, ``addresses`` every place it may
  connect (the members of a cluster, else just ``[(host, port)]``);
- ``accounts`` are the accounts served, and ``await broker.apply_accounts(accounts)`` serves
  new ones without a restart: a removed account is disconnected and its next login refused;
- ``running`` and ``pid`` (``None`` for a broker in this process, or one not started).

``start_broker`` returns one of the engine classes; code that needs an engine's own extras
(Mosquitto's TLS port, a NATS cluster's members) narrows with ``isinstance``.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Protocol, Self

from i24net.broker.accounts import BrokerAccount

__all__ = ["Broker"]


class Broker(Protocol):
    """A running (or ready to run) MQTT broker for a list of accounts."""

    @property
    def host(self) -> str: ...

    @property
    def port(self) -> int: ...

    @property
    def addresses(self) -> list[tuple[str, int]]: ...

    @property
    def accounts(self) -> tuple[BrokerAccount, ...]: ...

    @property
    def running(self) -> bool: ...

    @property
    def pid(self) -> int | None: ...

    async def apply_accounts(self, accounts: Sequence[BrokerAccount]) -> None: ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None: ...


if TYPE_CHECKING:  # mypy proves every engine implements the protocol
    from i24net.broker.embedded import EmbeddedBroker, EmbeddedBrokerProcess
    from i24net.broker.mosquitto import MosquittoBroker
    from i24net.broker.nats import NatsCluster, NatsMember

    def _engines(a: EmbeddedBroker, b: EmbeddedBrokerProcess, c: MosquittoBroker,
                 d: NatsCluster, e: NatsMember) -> tuple[Broker, ...]:
        return (a, b, c, d, e)
