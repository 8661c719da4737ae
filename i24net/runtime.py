"""Wiring: build brokers, transports, stores and daemons for a network home.

The CLI commands (``broker``, ``router``, ``node``) and the local supervisor call these, so a
daemon started by hand and one started by ``i24net up`` are configured the same way.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from i24net.broker import accounts_for, start_broker
from i24net.core.errors import ConfigError
from i24net.core.node import NodeMachine
from i24net.core.router import RouterMachine
from i24net.daemons import AuditLog, NodeDaemon, RouterDaemon
from i24net.home import ROUTER_ACCOUNT, Home
from i24net.store import SqliteNodeStore, SqliteRouterStore
from i24net.transport.base import Will
from i24net.transport.mqtt import MqttTransport


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where the network's broker listens (written by ``i24net broker`` when it starts)."""

    engine: str
    host: str
    port: int
    tls_ca: str | None = None

    def to_json(self) -> str:
        return json.dumps({"engine": self.engine, "host": self.host, "port": self.port,
                           "tls_ca": self.tls_ca})


def endpoint_file(home: Home) -> Path:
    return home.broker_dir / "endpoint.json"


def endpoint(home: Home) -> Endpoint:
    """The running broker's endpoint, else the one network.toml asks for."""
    path = endpoint_file(home)
    if path.exists():
        data = json.loads(path.read_text())
        return Endpoint(data["engine"], data["host"], int(data["port"]), data.get("tls_ca"))
    b = home.spec().broker
    return Endpoint(b.engine, b.host, b.port)


def make_broker(home: Home, engine: str | None = None, port: int | None = None,
                logger: logging.Logger | None = None) -> Any:
    spec = home.spec()
    d = home.directory()
    accounts = accounts_for(sorted(d.agencies), home.broker_passwords(), prefix=d.prefix)
    return start_broker(engine or spec.broker.engine, home.broker_dir / (engine or
                        spec.broker.engine), accounts, host=spec.broker.host,
                        port=spec.broker.port if port is None else port, logger=logger)


def make_transport(home: Home, account: str, *, client_suffix: str = "",
                   logger: logging.Logger | None = None, will: Will | None = None,
                   ep: Endpoint | None = None) -> MqttTransport:
    ep = ep or endpoint(home)
    passwords = home.broker_passwords()
    if account not in passwords:
        raise ConfigError(f"no broker account for {account}", reason="config.broker",
                          agency=account)
    client_id = account + (f":{client_suffix}" if client_suffix else "")
    return MqttTransport(ep.host, ep.port, client_id=client_id, username=account,
                         password=passwords[account], clean_session=False,
                         tls_ca=ep.tls_ca, logger=logger, will=will, connect_timeout=30.0)


def node_store_path(home: Home, agency: str) -> Path:
    return home.state_dir / f"node-{agency}.sqlite"


def router_store_path(home: Home) -> Path:
    return home.state_dir / "router.sqlite"


def make_node(home: Home, agency: str, *, logger: logging.Logger | None = None,
              transport: Any = None) -> NodeDaemon:
    d = home.directory()
    d.agency(agency)
    store = SqliteNodeStore(node_store_path(home, agency))
    machine = NodeMachine(agency, home.keys(agency), d, store, random_bytes=os.urandom)
    from i24net.core.lifecycle import install_lifecycle

    install_lifecycle(machine, auto_review=True)
    prefix = d.prefix
    will = Will(f"{prefix}/presence/{agency}", b"offline", True)
    t = transport or make_transport(home, agency, logger=logger, will=will)
    audit = AuditLog(home.logs_dir / f"audit-{agency}.jsonl", agency)
    return NodeDaemon(machine, t, audit=audit, logger=logger,
                      directory_anchor=home.anchor())


def make_router(home: Home, *, logger: logging.Logger | None = None,
                transport: Any = None) -> RouterDaemon:
    d = home.directory()
    store = SqliteRouterStore(router_store_path(home))
    machine = RouterMachine(d, home.router_keys(), store)
    t = transport or make_transport(home, ROUTER_ACCOUNT, logger=logger)
    audit = AuditLog(home.logs_dir / "audit-router.jsonl", "router")
    return RouterDaemon(machine, t, audit=audit, logger=logger)
