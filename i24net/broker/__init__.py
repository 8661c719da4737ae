"""The broker layer: accounts and topic rules, Mosquitto, a NATS cluster, and the embedded
amqtt broker.

``start_broker(engine, ...)`` returns a broker to use as ``async with``; every engine is
generated from the same ``BrokerAccount`` list (``accounts_for`` builds the network's), so
agencies can publish only to their submit topic and read only their inbox on all of them.

The embedded engine's names are imported lazily: importing ``i24net.broker`` does not pull in
amqtt (and its dependencies) unless that engine is used, and ``python -m
i24net.broker.embedded`` runs without a second copy of the module.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from i24net.broker.accounts import (
    CLIENT_ID_SEPARATOR,
    DEFAULT_PREFIX,
    ROUTER_USERNAME,
    BrokerAccount,
    TopicGrants,
    accounts_for,
    client_id_allowed,
    filter_covers,
    generate_password,
    is_valid_topic_filter,
    is_valid_topic_name,
    may_publish,
    may_receive,
    may_subscribe,
    topic_matches,
    unguessable_client_id,
)
from i24net.broker.base import Broker
from i24net.broker.errors import (
    BrokerConfigError,
    BrokerError,
    BrokerNotInstalledError,
    BrokerStartError,
)
from i24net.broker.mosquitto import (
    MosquittoBroker,
    MosquittoConfig,
    MosquittoLimits,
    find_mosquitto,
    write_mosquitto_config,
)
from i24net.broker.nats import (
    NatsCluster,
    NatsLimits,
    NatsMember,
    NatsPorts,
    find_nats_server,
    member_addresses,
    nats_ports,
    write_nats_config,
)
from i24net.broker.process import pick_free_port
from i24net.broker.tls import TlsFiles, generate_tls_files

if TYPE_CHECKING:
    from i24net.broker.embedded import EmbeddedBroker, EmbeddedBrokerProcess

__all__ = [
    "CLIENT_ID_SEPARATOR",
    "DEFAULT_PREFIX",
    "ENGINES",
    "ROUTER_USERNAME",
    "Broker",
    "BrokerAccount",
    "BrokerConfigError",
    "BrokerError",
    "BrokerNotInstalledError",
    "BrokerStartError",
    "EmbeddedBroker",
    "EmbeddedBrokerProcess",
    "MosquittoBroker",
    "MosquittoConfig",
    "MosquittoLimits",
    "NatsCluster",
    "NatsLimits",
    "NatsMember",
    "NatsPorts",
    "TlsFiles",
    "TopicGrants",
    "accounts_for",
    "client_id_allowed",
    "filter_covers",
    "find_mosquitto",
    "find_nats_server",
    "generate_password",
    "generate_tls_files",
    "is_valid_topic_filter",
    "is_valid_topic_name",
    "may_publish",
    "may_receive",
    "may_subscribe",
    "member_addresses",
    "nats_ports",
    "pick_free_port",
    "start_broker",
    "topic_matches",
    "unguessable_client_id",
    "write_mosquitto_config",
    "write_nats_config",
]

ENGINES: tuple[str, ...] = ("embedded", "embedded-process", "mosquitto", "nats")
"""``embedded``: amqtt in this process (the default, nothing to install); ``embedded-process``:
amqtt in a child process (killable on its own); ``mosquitto``: Eclipse Mosquitto; ``nats``: a
cluster of nats-server members with the MQTT gateway and replicated JetStream."""

_LAZY = {"EmbeddedBroker", "EmbeddedBrokerProcess"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module("i24net.broker.embedded"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def start_broker(
    engine: str,
    directory: Path,
    accounts: Sequence[BrokerAccount],
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    tls: TlsFiles | None = None,
    tls_port: int = 0,
    logger: logging.Logger | None = None,
    member: int | None = None,
    members: int = 3,
    member_hosts: Sequence[str] = (),
    hashes: dict[str, str] | None = None,
) -> Broker:
    """A broker of the chosen ``engine`` for ``accounts``, files under ``directory``: one of
    the engine classes, each implementing the ``Broker`` protocol (``broker.base``).

    The broker starts when entered (``async with start_broker(...) as broker``) and stops on
    exit; ``broker.host`` and ``broker.port`` say where clients connect. Port 0 picks a free
    port. ``tls``: Mosquitto adds a TLS listener on ``tls_port``; every NATS member speaks
    TLS only (MQTT on its own port, routes mutually); the embedded engines have none.

    ``nats`` runs ``members`` members from the base port ``port`` (member k's MQTT port is
    ``port + 10*(k-1)``, see ``nats_ports``): the whole cluster (a ``NatsCluster``) when
    ``member`` is ``None``, else only member ``member`` (a ``NatsMember``, which needs a
    real base port so that it finds the others). ``member``/``members`` apply to nats only.
    """
    if engine not in ENGINES:
        raise BrokerConfigError(
            f"unknown broker engine {engine!r}: choose one of {', '.join(ENGINES)}"
        )
    if engine == "nats":
        if member is None:
            return NatsCluster(
                directory, accounts, members=members, host=host, port=port, logger=logger,
                tls=tls, hosts=member_hosts,
            )
        if not port:
            raise BrokerConfigError(
                f"NATS member {member} needs the cluster's base port (0 would pick one that "
                "the other members do not know); pass --port"
            )
        return NatsMember(
            directory, accounts, member=member, members=members, host=host, port=port,
            logger=logger, tls=tls, hosts=member_hosts, hashes=hashes,
        )
    if member is not None:
        raise BrokerConfigError(f"the {engine} engine has no members; member= is for nats")
    if engine == "mosquitto":
        return MosquittoBroker(
            directory, accounts, host=host, port=port, tls=tls, tls_port=tls_port, logger=logger
        )
    if tls is not None:
        raise BrokerConfigError(
            f"the {engine} engine has no TLS listener; use --engine mosquitto for TLS"
        )
    embedded = importlib.import_module("i24net.broker.embedded")
    if engine == "embedded":
        broker: EmbeddedBroker = embedded.EmbeddedBroker(
            accounts, directory, host=host, port=port, logger=logger
        )
        return broker
    process: EmbeddedBrokerProcess = embedded.EmbeddedBrokerProcess(
        directory, accounts, host=host, port=port, logger=logger
    )
    return process
