"""Wiring: build brokers, transports, stores and daemons for a network home.

The CLI commands (``broker``, ``router``, ``node``) and the local supervisor call these, so a
daemon started by hand and one started by ``i24net up`` are configured the same way.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from i24net.broker import (
    BrokerAccount,
    BrokerConfigError,
    TlsFiles,
    accounts_for,
    generate_tls_files,
    start_broker,
    unguessable_client_id,
)
from i24net.broker.nats import EXPORTED_HASHES
from i24net.broker.tls import DEFAULT_HOSTS
from i24net.config.home import ROUTER_ACCOUNT, Home
from i24net.core.errors import ConfigError, I24Error
from i24net.core.netspec import CLUSTER_ENGINES, parse_address
from i24net.core.node import NodeMachine
from i24net.core.router import RouterMachine
from i24net.core.shards import Shard
from i24net.shell.daemons import AuditLog, NodeDaemon, RouterDaemon
from i24net.store import SqliteNodeStore, SqliteRouterStore
from i24net.transport.base import Will
from i24net.transport.mqtt import MqttTransport

if TYPE_CHECKING:
    from i24net.broker import Broker


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where the network's broker listens (written by ``i24net broker`` when it starts).

    ``addresses`` lists every member of a clustered broker (or several brokers given with
    ``--broker``); clients start at one and fail over to the next. Empty: just host:port.
    """

    engine: str
    host: str
    port: int
    tls_ca: str | None = None
    addresses: tuple[tuple[str, int], ...] = ()

    @property
    def members(self) -> list[tuple[str, int]]:
        return list(self.addresses) or [(self.host, self.port)]

    def to_json(self) -> str:
        return json.dumps({"engine": self.engine, "host": self.host, "port": self.port,
                           "tls_ca": self.tls_ca,
                           "addresses": [f"{h}:{p}" for h, p in self.addresses]})

    def with_addresses(self, addresses: list[tuple[str, int]]) -> Endpoint:
        """The same broker reached through ``addresses`` (``--broker`` on the command line)."""
        if not addresses:
            return self
        return replace(self, host=addresses[0][0], port=addresses[0][1],
                       addresses=tuple(addresses))


def start_index(name: str, members: int, order: list[str] | None = None) -> int:
    """Which member a client starts at: agencies in turn over the members by their place in
    ``order`` (the directory's sorted ids, so N agencies split as evenly as N allows), and
    any other name by a stable hash."""
    if members <= 1:
        return 0
    if order and name in order:
        return order.index(name) % members
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=4).digest(), "big") \
        % members


def endpoint_file(home: Home) -> Path:
    return home.broker_dir / "endpoint.json"


def routes_file(home: Home) -> Path:
    """Per-account broker addresses that override the endpoint (a live drill puts a fault
    proxy between each agency and the broker): JSON ``{account: "host:port"}``."""
    return home.broker_dir / "routes.json"


def route(home: Home, account: str, ep: Endpoint) -> Endpoint:
    """``ep``, or the address ``routes.json`` gives ``account`` (loopback only)."""
    path = routes_file(home)
    if not path.exists():
        return ep
    try:
        routes = json.loads(path.read_text())
        given = routes.get(account) if isinstance(routes, dict) else None
        if given is None:
            return ep
        host, port = parse_address(str(given))
    except (ValueError, OSError, ConfigError) as exc:
        raise ConfigError(f"{path}: {exc}", reason="config.broker") from exc
    if not host.startswith("127."):
        raise ConfigError(f"{path}: {account} is routed to {host}, not a loopback address",
                          reason="config.broker", agency=account)
    return replace(ep, host=host, port=port, addresses=())


def endpoint(home: Home) -> Endpoint:
    """The running broker's endpoint, else the one network.toml asks for."""
    path = endpoint_file(home)
    b = home.spec().broker
    if path.exists():
        data = json.loads(path.read_text())
        return Endpoint(data["engine"], data["host"], int(data["port"]), data.get("tls_ca"),
                        tuple(parse_address(a) for a in data.get("addresses", [])))
    ca = str(tls_dir(home) / "ca.crt") if b.tls else None
    if b.addresses or b.members > 1:
        # Members (or brokers elsewhere) take TLS on their own ports: the CA goes with them.
        host, port = b.member_addresses()[0]
        return Endpoint(b.engine, host, port, ca, addresses=tuple(b.member_addresses()))
    if b.tls and b.engine in CLUSTER_ENGINES:
        return Endpoint(b.engine, b.host, b.port, ca)
    if b.tls:
        return Endpoint(b.engine, b.host, default_tls_port(b.port), ca)
    return Endpoint(b.engine, b.host, b.port)


def tls_dir(home: Home) -> Path:
    return home.broker_dir / "tls"


def default_tls_port(port: int) -> int:
    """The TLS listener's port when none is given: next to the plain one, so it is the same
    after a broker restart and reconnecting clients find it (0 stays 0: pick a free one)."""
    return port + 1 if port else 0


def broker_tls_files(home: Home, *, min_days_left: int = 1) -> TlsFiles:
    """The home's broker CA and server certificate (``broker/tls/``): the existing ones while
    they stay valid for ``min_days_left`` days, so clients keep trusting the same CA across
    broker restarts; otherwise a new CA and certificate."""
    import datetime as dt

    from cryptography import x509

    d = tls_dir(home)
    files = TlsFiles(d / "ca.crt", d / "ca.key", d / "server.crt", d / "server.key")
    if exported_hashes(home) is not None:
        # a machine running members of another home's cluster: that home's certificate
        # (exported), never one of its own, which the other members would not trust
        if not all(p.exists() for p in (files.ca_cert, files.server_cert, files.server_key)):
            raise ConfigError(f"{d} lacks the cluster's certificate: export this machine "
                              "again from a home whose network uses TLS", reason="config.broker")
        return files
    # the certificate names every address a member binds (broker.member_hosts)
    hosts = list(dict.fromkeys([*DEFAULT_HOSTS, *home.spec().broker.member_hosts]))
    try:
        if all(p.exists() for p in (files.ca_cert, files.ca_key, files.server_key)):
            cert = x509.load_pem_x509_certificate(files.server_cert.read_bytes())
            left = cert.not_valid_after_utc - dt.datetime.now(dt.UTC)
            names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            named = {str(ip) for ip in names.get_values_for_type(x509.IPAddress)} | \
                set(names.get_values_for_type(x509.DNSName))
            if left > dt.timedelta(days=min_days_left) and set(hosts) <= named:
                return files
    except (OSError, ValueError, x509.ExtensionNotFound):
        pass  # missing, unreadable or naming too few addresses: make new ones
    return generate_tls_files(d, hosts=hosts)


def broker_accounts(home: Home) -> list[BrokerAccount]:
    """The broker accounts of the home's current directory: one per active agency (a revoked
    agency has none, so the broker refuses its login) and the router's."""
    d = home.directory()
    active = sorted(a.id for a in d.agencies.values() if a.active)
    return accounts_for(active, home.broker_passwords(), prefix=d.prefix)


def exported_hashes(home: Home) -> dict[str, str] | None:
    """On a machine's export that runs cluster members: the bcrypt hash of every account's
    password, which its members' configs hold in place of the passwords it does not have
    (``i24net export --members``); ``None`` elsewhere."""
    path = home.broker_dir / "nats" / EXPORTED_HASHES
    if not path.exists():
        return None
    data = json.loads(path.read_text())
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        raise ConfigError(f"{path} is not what i24net export writes", reason="config.broker")
    return {str(k): v for k, v in data.items()}


def export_member_files(home: Home, target: Home) -> None:
    """What a machine's export that runs cluster members needs beyond its other files
    (``config.machine.export_machine``): the members' route secret and a bcrypt hash of every
    account's password (its members' configs name every account), never the passwords."""
    from i24net.broker.nats import password_hashes, route_secret

    source = home.broker_dir / "nats"
    source.mkdir(parents=True, exist_ok=True)
    secret = route_secret(source)
    hashes = password_hashes(source, broker_accounts(home))
    out = target.broker_dir / "nats"
    out.mkdir(parents=True, exist_ok=True)
    os.chmod(out, 0o700)
    for name, text in (("route-secret", secret + "\n"),
                       (EXPORTED_HASHES, json.dumps(hashes, indent=1, sort_keys=True))):
        (out / name).write_text(text)
        os.chmod(out / name, 0o600)


def member_accounts(home: Home) -> tuple[list[BrokerAccount], dict[str, str] | None]:
    """The accounts a broker member of this home serves, and the hashes that stand for
    passwords it does not hold (``exported_hashes``; ``None``: it holds every password)."""
    hashes = exported_hashes(home)
    if hashes is None:
        return broker_accounts(home), None
    d = home.directory()
    active = sorted(a.id for a in d.agencies.values() if a.active)
    missing = [a for a in [*active, ROUTER_ACCOUNT] if a not in hashes]
    if missing:
        raise ConfigError(f"no password hash for {', '.join(missing)} in "
                          f"{home.broker_dir / 'nats' / EXPORTED_HASHES}: the directory "
                          "names accounts this machine's export predates; export it again",
                          reason="config.broker")
    # the hash stands in the password's place: only the member's config reads it
    return accounts_for(active, hashes, prefix=d.prefix), hashes


FOLLOW_POLL_S = 0.5


def _file_stamp(path: Path) -> tuple[int, int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


async def follow_directory(home: Home, broker: Broker, *, logger: logging.Logger | None = None,
                           poll_s: float = FOLLOW_POLL_S) -> None:
    """Keep a running broker's accounts in step with the home's signed directory, until
    cancelled: when ``directory.signed`` changes (``i24net directory revoke``, ``issue``,
    ``rotate``), it is loaded and verified again and, if the accounts differ, the broker is
    reloaded (``apply_accounts``): a revoked agency is disconnected and refused within
    ``poll_s`` and a reload. A version that does not load (or lacks a broker password for a
    new agency) is logged and the accounts in use stay."""
    import asyncio

    log = logger or logging.getLogger("i24net.broker")
    path = home.directory_file
    seen: tuple[int, int, int] | None = None  # compare once at the start too
    current = list(broker.accounts)
    while True:
        stamp = _file_stamp(path)
        if stamp == seen:
            await asyncio.sleep(poll_s)
            continue
        seen = stamp
        try:
            fresh = Home(home.path)  # verified against the anchor, no rollback, no fork
            version = fresh.directory().serial
            accounts = member_accounts(fresh)[0]
        except I24Error as exc:
            log.error("the directory changed but cannot be used for the broker accounts "
                      "(%s: %s); the accounts in use stay", exc.reason, exc.message)
            continue
        if accounts == current:
            continue
        before = {a.username for a in current}
        after = {a.username for a in accounts}
        await broker.apply_accounts(accounts)
        current = accounts
        log.warning("directory version %d: broker accounts reloaded (removed: %s; added: %s)",
                    version, ", ".join(sorted(before - after)) or "none",
                    ", ".join(sorted(after - before)) or "none")


def make_broker(home: Home, engine: str | None = None, port: int | None = None,
                logger: logging.Logger | None = None, *, tls: bool | None = None,
                tls_port: int | None = None, member: int | None = None) -> Broker:
    """The network's broker (not started). ``tls`` (default: network.toml's ``broker.tls``)
    serves MQTT over TLS with the home's CA (``broker_tls_files``): Mosquitto adds a TLS
    listener on ``tls_port`` (default ``default_tls_port``) and keeps its plain listener on
    127.0.0.1, which i24net's clients do not use; a NATS member speaks TLS only, on its own
    ports, routes included (mutual). The embedded engines offer no TLS.

    A clustered engine (``nats``) starts all ``broker.members`` members, or only member
    ``member`` (the supervisor runs each member as its own process, so one can die alone).
    """
    spec = home.spec()
    accounts, hashes = member_accounts(home)
    engine = engine or spec.broker.engine
    port = spec.broker.port if port is None else port
    use_tls = spec.broker.tls if tls is None else tls
    files = None
    if use_tls:
        if engine not in ("mosquitto", *CLUSTER_ENGINES):
            raise BrokerConfigError(f"the {engine} broker has no TLS listener: use --engine "
                                    "mosquitto or nats for TLS (or set tls = false in "
                                    "network.toml)")
        files = broker_tls_files(home)
    if engine in CLUSTER_ENGINES:
        b = spec.broker.for_engine(engine)
        return start_broker(engine, home.broker_dir / engine, accounts, host=b.host,
                            port=port, logger=logger, member=member, members=b.members,
                            tls=files, member_hosts=b.member_hosts, hashes=hashes)
    if member is not None:
        raise BrokerConfigError(f"--member applies to a clustered engine, not {engine}")
    return start_broker(engine, home.broker_dir / engine, accounts, host=spec.broker.host,
                        port=port, logger=logger, tls=files,
                        tls_port=default_tls_port(port) if tls_port is None else tls_port)


def make_transport(home: Home, account: str, *, client_suffix: str = "",
                   logger: logging.Logger | None = None, will: Will | None = None,
                   ep: Endpoint | None = None,
                   connect_timeout: float = 30.0,
                   password: str | None = None) -> MqttTransport:
    """A transport for broker ``account``; with several broker members it starts at one
    picked by its client id (so the agencies spread over the members) and fails over.
    ``password`` saves reading keys/broker.toml again (a host starting many agencies)."""
    ep = route(home, account, ep or endpoint(home))
    if password is None:
        passwords = home.broker_passwords()
        if account not in passwords:
            raise ConfigError(f"no broker account for {account}", reason="config.broker",
                              agency=account)
        password = passwords[account]
    name = client_id = account + (f":{client_suffix}" if client_suffix else "")
    if ep.engine in CLUSTER_ENGINES:
        # NATS does not bind client ids to accounts: one nobody else can compute (the logs
        # keep the plain name).
        client_id = unguessable_client_id(client_id, password)
    members = ep.members
    order = sorted(home.directory().agencies) if len(members) > 1 else None
    if account == ROUTER_ACCOUNT and client_suffix.startswith("shard-"):
        # shard k starts at member k (mod n), so the routers too sit on different members
        start = int(client_suffix[6:].split("of", 1)[0]) - 1
    else:
        start = start_index(account, len(members), order)
    local = _local_members(home, len(members))
    if local and (start % len(members)) + 1 not in local:
        # a machine that runs some of the members: its clients start at one of its own,
        # which lives and dies with them
        start = local[start % len(local)] - 1
    return MqttTransport(addresses=members, start=start,
                         client_id=client_id, username=account,
                         password=password, clean_session=False,
                         tls_ca=ep.tls_ca, logger=logger, will=will,
                         connect_timeout=connect_timeout, name=name)


def _local_members(home: Home, count: int) -> tuple[int, ...]:
    """The cluster members (1-based) this home runs, when it runs some but not all of the
    ``count`` its clients know (a network spread over machines); else ``()``."""
    from i24net.config.machine import members_here

    if count <= 1:
        return ()
    # with the count given, only the small machine files are read: this runs for every
    # agency a host starts
    here = tuple(k for k in members_here(home, count) if k <= count)
    return here if 0 < len(here) < count else ()


def node_store_path(home: Home, agency: str) -> Path:
    return home.state_dir / f"node-{agency}.sqlite"


def router_store_path(home: Home, shard: int = 1) -> Path:
    """Shard 1 keeps the single router's file name, so a network can grow shards."""
    return home.state_dir / ("router.sqlite" if shard == 1 else f"router-{shard}.sqlite")


def router_audit_path(home: Home, shard: int = 1) -> Path:
    return home.logs_dir / ("audit-router.jsonl" if shard == 1 else
                            f"audit-router-{shard}.jsonl")


def router_client_suffix(shard: Shard) -> str:
    """The broker session of a shard: one per shard and layout (``i24-router:shard-2of3``),
    so a router that takes a shard over resumes its queued messages. One router: none."""
    return "" if shard.count == 1 else f"shard-{shard.index}of{shard.count}"


def make_node(home: Home, agency: str, *, logger: logging.Logger | None = None,
              transport: Any = None, auto_review: bool = True,
              ep: Endpoint | None = None, password: str | None = None) -> NodeDaemon:
    d = home.directory()
    d.agency(agency)
    keys = home.keys(agency)
    # the daemon syncs its commits itself, off its event loop (daemons.SyncGate)
    store = SqliteNodeStore(node_store_path(home, agency), synchronous="NORMAL")
    machine = NodeMachine(agency, keys, d, store, random_bytes=os.urandom)
    machine.set_retention(home.spec().retention)  # network.toml [retention]
    from i24net.core.lifecycle import install_lifecycle
    from i24net.store.notices import desk_store_for

    # The notice authority's register is durable (state/notices-<AGENCY>.sqlite), shared
    # with 'i24net notice ...'; auto_review=False leaves clean requests for the task force.
    install_lifecycle(machine, auto_review=auto_review, store=desk_store_for(home, agency))
    prefix = d.prefix
    will = Will(f"{prefix}/presence/{agency}", b"offline", True)
    t = transport or make_transport(home, agency, logger=logger, will=will, ep=ep,
                                    password=password)
    audit = AuditLog(home.logs_dir / f"audit-{agency}.jsonl", agency)
    return NodeDaemon(machine, t, audit=audit, logger=logger,
                      directory_anchor=home.anchor(), load_keys=lambda: home.keys(agency))


def make_router(home: Home, *, logger: logging.Logger | None = None,
                transport: Any = None, shard: Shard | None = None,
                ep: Endpoint | None = None) -> RouterDaemon:
    """The router daemon of ``shard`` (default: the only one): its key, store, audit log and
    broker session are the shard's, whichever process serves it."""
    d = home.directory()
    shard = shard or Shard(1, home.spec().router_shards)
    if len(d.router_keys) < shard.count:
        raise ConfigError(f"the directory lists {len(d.router_keys)} router key(s), not "
                          f"{shard.count}: set [router] shards = {shard.count} in "
                          "network.toml and run 'i24net directory issue'",
                          reason="config.shard")
    keys = home.router_keys(shard.index)
    store = SqliteRouterStore(router_store_path(home, shard.index), synchronous="NORMAL")
    machine = RouterMachine(d, keys, store, shard=shard)
    t = transport or make_transport(home, ROUTER_ACCOUNT, logger=logger, ep=ep,
                                    client_suffix=router_client_suffix(shard))
    actor = "router" if shard.index == 1 else f"router-{shard.index}"
    audit = AuditLog(router_audit_path(home, shard.index), actor)
    return RouterDaemon(machine, t, audit=audit, logger=logger,
                        directory_anchor=home.anchor())


async def publish_directory(home: Home, *, ep: Endpoint | None = None, timeout: float = 3.0,
                            logger: logging.Logger | None = None,
                            client_suffix: str = "directory") -> Endpoint:
    """Publish the home's signed directory, retained, on ``<prefix>/directory`` with the
    router's account, so running nodes and the router adopt it (each verifies it against the
    trust anchor and refuses a rollback or a fork). Returns where it went; raises
    ``TransportError`` if the broker does not take it within ``timeout`` seconds.
    """
    import asyncio

    from i24net.core.errors import TransportError

    ep = ep or endpoint(home)
    signed = home.signed_directory()
    topic = f"{home.directory().prefix}/directory"
    t = make_transport(home, ROUTER_ACCOUNT, client_suffix=client_suffix, ep=ep,
                       connect_timeout=timeout, logger=logger)
    async with t:
        try:
            async with asyncio.timeout(timeout):  # a publish otherwise waits for the link
                await t.publish(topic, signed, retain=True)
        except TimeoutError:
            raise TransportError(f"the broker at {ep.host}:{ep.port} did not acknowledge the "
                                 f"directory within {timeout:g} s",
                                 reason="transport.timeout") from None
    return ep
