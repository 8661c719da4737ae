"""A NATS server cluster with its MQTT gateway and JetStream, configured from broker accounts.

Theory of operation: ``NatsCluster`` runs ``members`` nats-server processes on 127.0.0.1, each
a ``NatsMember`` with its own directory (``member-<k>/``: ``nats.conf``, ``jetstream/``,
``nats.log``). For a base port P, member k listens for MQTT on ``P + 10*(k-1)`` and for NATS
clients, cluster routes and HTTP monitoring on the next three ports (``nats_ports``). Every
member's config is rendered from the same ``BrokerAccount`` list (docs/protocol.md 6.2), so a
member can be started on its own (``start_broker("nats", ..., member=k)``) and agree with the
others.

NATS speaks MQTT 3.1.1 by mapping topics to subjects (``a/b`` -> ``a.b``, ``+`` -> ``*``,
``#`` -> ``>``) and keeping MQTT state in JetStream streams of the account: sessions
(``$MQTT_sess``), QoS 1 messages (``$MQTT_msgs``, one durable consumer per QoS 1
subscription) and retained messages (``$MQTT_rmsgs``). With those streams replicated on
every member (R3 on three members), a session and its queued QoS 1 messages survive the loss
of any one member, and a client may resume its session on any member.

Facts about nats-server 2.9.10 that the settings answer (read in its source, server/mqtt.go,
and checked by ``tests/broker/test_nats.py``):

- MQTT needs ``server_name`` and JetStream. The ``mqtt`` block accepts ``stream_replicas``,
  ``consumer_replicas``, ``consumer_memory_storage``, ``consumer_inactive_threshold``,
  ``ack_wait`` and ``max_ack_pending``. Without ``stream_replicas`` the count is guessed from
  the ``routes`` list (capped at 3), so it is set here. Consumers are created without a
  replica count and take their stream's; their state is on disk (no memory storage).
- Permissions apply to MQTT clients as NATS subjects. A QoS 1 subscription is two NATS
  subscriptions, the topic and the JetStream delivery subject ``$MQTT.sub.<nuid>``, so a user
  held to its topics also needs subscribe permission on ``$MQTT.sub.>``. JetStream API calls,
  acks and stores are made by the server's internal client: users need no ``$JS`` or other
  ``$MQTT`` permission. MQTT clients cannot subscribe to ``$MQTT.sub.`` themselves (the
  server refuses the filter); NATS-protocol logins could, hence ``allowed_connection_types``.
- A publish outside the grants is dropped and still acknowledged (PUBACK), as with Mosquitto;
  a refused subscription gets SUBACK 0x80. Retained messages and wills pass the same publish
  check. A resumed session's subscriptions are checked again against the new login, so
  presenting another account's client id yields none of its messages (but a clean login with
  it discards that session: a loss, not a leak).
- A client id may be used on any member: the new connection takes the session over and the
  old one is closed, wherever it is. A reconnect with that id within 1 s of a takeover is
  held 1 s and closed (NATS's "flapper" guard).
- An unacknowledged QoS 1 message is resent (DUP) when ``ack_wait`` runs out, counted from
  its delivery, whether the client stayed connected or came back (on any member); unlike
  Mosquitto, a reconnect alone does not resend it. Hence a short ``ack_wait``.
- ``max_payload`` caps NATS-protocol messages only: 2.9.10 does not apply it to MQTT
  PUBLISH (QoS 0, 1 or retained), which MQTT itself caps at 256 MiB, and its MQTT reader
  buffers a packet whole before parsing it. Nothing in its configuration caps an MQTT
  packet; i24net sets ``max_payload`` to ``ROUTER_MAX_PACKET`` for versions that apply it.
- Client ids are not bound to users: sessions are keyed by client id within the NATS
  account, which every broker account shares, so any login can take over any session
  (its permissions are checked again, so it reads nothing, but the holder is closed). Hence
  ``runtime.make_transport`` gives clients on this engine ids nobody else can compute
  (``accounts.unguessable_client_id``).
- On SIGHUP nats-server reloads its users and closes the connections of users that are gone
  (``reload``).
- When a member dies, the streams it led elect a new leader (a Raft timeout, 4-9 s); until
  then logins and QoS 1 publishes on the other members fail (the publisher is disconnected),
  so clients must retry for about 10 s. A member that led nothing leaves no gap.
- MQTT topics may not contain ``.`` or spaces (NATS token separators); such grants are
  refused here rather than mistranslated.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from string import Template
from typing import Any

from i24net.broker.accounts import (
    CLIENT_ID_SEPARATOR,
    ROUTER_USERNAME,
    BrokerAccount,
    is_valid_topic_filter,
)
from i24net.broker.errors import BrokerConfigError, BrokerNotInstalledError, BrokerStartError
from i24net.broker.files import ensure_directory, write_file
from i24net.broker.limits import ROUTER_MAX_PACKET
from i24net.broker.mosquitto import check_unique
from i24net.broker.process import (
    BlockingStartStop,
    BrokerProcess,
    ProcessControl,
    pick_free_port,
    validate_host,
    validate_port,
)
from i24net.broker.tls import TlsFiles
from i24net.core.netspec import MEMBER_PORT_STEP

__all__ = [
    "MEMBER_PORT_STEP",
    "NATS_CONF_TEMPLATE",
    "NatsCluster",
    "NatsConfig",
    "NatsLimits",
    "NatsMember",
    "NatsPorts",
    "find_nats_server",
    "member_addresses",
    "mqtt_filter_to_subjects",
    "mqtt_login_works",
    "nats_permissions",
    "nats_ports",
    "pick_base_port",
    "render_nats_conf",
    "server_name",
    "write_nats_config",
]

# Member k's ports start at base + 10 * (k - 1): MQTT, NATS client, cluster route, monitor
# (one constant with the network spec, which tells clients where the members are).

MAX_MEMBERS = 9
DELIVERY_SUBJECTS = "$MQTT.sub.>"
"""Where JetStream delivers a session's QoS 1 messages; every MQTT user subscribes there."""

_CLUSTER_NAME = "i24net"
_ROUTE_USER = "i24-route"
_ROUTE_SECRET_FILE = "route-secret"
_LOG_NAME = "nats.log"
_CONF_NAME = "nats.conf"
_READY_MARKER = b"Server is ready"
_HTTP_TIMEOUT = 1.0
_POLL_INTERVAL = 0.1
_HEALTH_POLL_INTERVAL = 0.5  # nats-server logs a warning for every failed /healthz
_MQTT_CONNECT_TIMEOUT = 5.0
_ADDRESS_IN_USE = "address already in use"
_PORT_RETRIES = 3

NATS_CONF_TEMPLATE = Template("""\
# Generated by i24net from the network's broker accounts. Do not edit: regenerated on start.
# nats-server 2.9: member $member of $members, everything on $host (this cluster serves one
# machine). Mode 0600: it holds bcrypt hashes of the accounts' passwords and, in plain text,
# the route secret.

# MQTT requires an explicit, stable server name (it names this member's JetStream state).
server_name: $server_name
listen: $client_listen
http: $monitor_listen
$client_tls
# Largest message: the router's signed directory plus 64 KiB (i24net.broker.limits). nats-server
# 2.9.10 applies it to NATS-protocol messages only, not to MQTT PUBLISH: it reads and buffers
# an MQTT packet of any size (up to MQTT's 256 MiB) whatever this says. Later versions apply
# it to MQTT too, hence the value.
max_payload: $max_payload

# Explicit caps: the defaults (75% of RAM, most of the disk) are per server, and here every
# member shares one machine. The MQTT streams use file storage only.
jetstream {
  store_dir: $store_dir
  max_memory_store: $max_memory_store
  max_file_store: $max_file_store
}
$cluster_block
mqtt {
  listen: $mqtt_listen
$mqtt_tls  # Sessions, QoS 1 messages and retained messages live in JetStream streams; with one
  # replica per member (up to 3) they survive the loss of any one member.
  stream_replicas: $stream_replicas
  consumer_memory_storage: false
  # An unacknowledged QoS 1 message is resent when ack_wait runs out (counted from its
  # delivery), whether its client stayed connected or reconnected: a reconnect alone does
  # not resend it. NATS's default (30 s) would leave a crashed node waiting that long; a
  # resend to a slow but live client is only a duplicate, which receivers discard. At most
  # max_ack_pending messages are in flight per subscription.
  ack_wait: "$ack_wait"
  max_ack_pending: $max_ack_pending
}

# One user per broker account, MQTT logins only: a NATS-protocol login could subscribe to
# every session's delivery subject ($$MQTT.sub.>), which MQTT clients cannot. The one
# NATS-protocol user, the routers' lease user, may touch its key-value bucket only.
authorization {
  users: [
$users
  ]
}
""")

_CLUSTER_TEMPLATE = Template("""
cluster {
  name: $cluster_name
  listen: $cluster_listen
  # Routes carry every message unchecked: only members knowing the secret may join.
  authorization {
    user: $route_user
    password: $route_password
  }
  routes: $routes
$route_tls}
""")


@dataclass(frozen=True, slots=True)
class NatsPorts:
    """The four TCP ports of one member, all on the cluster's host."""

    mqtt: int
    client: int
    cluster: int
    monitor: int


def _check_member(member: int, members: int) -> None:
    if isinstance(members, bool) or not isinstance(members, int) or not 1 <= members <= MAX_MEMBERS:
        raise BrokerConfigError(f"a NATS cluster has 1-{MAX_MEMBERS} members, got {members!r}")
    if isinstance(member, bool) or not isinstance(member, int) or not 1 <= member <= members:
        raise BrokerConfigError(f"NATS member {member!r} does not exist: choose 1-{members}")


def nats_ports(base: int, member: int) -> NatsPorts:
    """Member ``member``'s ports for the base port ``base``: MQTT first, then +1, +2, +3."""
    validate_port(base, "base port")
    if base == 0:
        raise BrokerConfigError("a NATS cluster needs a real base port, not 0")
    _check_member(member, MAX_MEMBERS)
    mqtt = base + MEMBER_PORT_STEP * (member - 1)
    if mqtt + 3 > 65535:
        raise BrokerConfigError(
            f"NATS member {member} on base port {base} would need ports up to {mqtt + 3}; "
            "choose a lower base port"
        )
    return NatsPorts(mqtt=mqtt, client=mqtt + 1, cluster=mqtt + 2, monitor=mqtt + 3)


def member_addresses(host: str, base: int, members: int,
                     hosts: Sequence[str] = ()) -> list[tuple[str, int]]:
    """The MQTT address of every member, member 1 first: where clients connect. Member k
    listens on ``hosts[k-1]`` when ``hosts`` is given (one address per member), else all on
    ``host``."""
    _check_member(1, members)
    return [(_member_host(host, hosts, k), nats_ports(base, k).mqtt)
            for k in range(1, members + 1)]


def _member_host(host: str, hosts: Sequence[str], k: int) -> str:
    if not hosts:
        return host
    if len(hosts) < k:
        raise BrokerConfigError(f"member {k} has no host: {len(hosts)} host(s) given")
    return hosts[k - 1]


def pick_base_port(host: str = "127.0.0.1", members: int = 3, attempts: int = 50) -> int:
    """A base port whose every member port was free a moment ago (see ``pick_free_port``)."""
    _check_member(1, members)
    for _ in range(attempts):
        base = pick_free_port(host)
        top = base + MEMBER_PORT_STEP * (members - 1) + 3
        if top > 65535:
            continue
        wanted = [
            port
            for k in range(1, members + 1)
            for port in _ports_tuple(nats_ports(base, k))
            if port != base
        ]
        if all(_port_is_free(host, port) for port in wanted):
            return base
    raise BrokerStartError(
        f"found no {members * 4} free ports on {host} for a NATS cluster; pass a base port"
    )


def server_name(member: int) -> str:
    """Member ``member``'s NATS server name (also its name in JetStream's Raft groups)."""
    return f"i24-nats-{member}"


def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _ports_tuple(ports: NatsPorts) -> tuple[int, int, int, int]:
    return (ports.mqtt, ports.client, ports.cluster, ports.monitor)


def _port_is_free(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


@dataclass(frozen=True, slots=True)
class NatsLimits:
    """Payload, JetStream and MQTT delivery limits; the defaults are argued in the template."""

    max_payload: int = ROUTER_MAX_PACKET
    max_memory_store: int = 256 * 1024 * 1024
    max_file_store: int = 8 * 1024 * 1024 * 1024
    ack_wait_seconds: int = 10
    max_ack_pending: int = 1024
    stream_replicas: int | None = None
    """``None``: one per member, at most 3 (the usual quorum size; JetStream allows 1-5)."""

    def __post_init__(self) -> None:
        for name in (
            "max_payload",
            "max_memory_store",
            "max_file_store",
            "ack_wait_seconds",
            "max_ack_pending",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise BrokerConfigError(f"nats {name} must be a positive integer, got {value!r}")
        if self.max_payload > 64 * 1024 * 1024:
            raise BrokerConfigError("nats max_payload may not exceed 64 MiB (nats-server limit)")
        if self.max_ack_pending > 65535:
            raise BrokerConfigError("nats max_ack_pending may not exceed 65535 (MQTT packet ids)")
        if self.stream_replicas is not None and (
            isinstance(self.stream_replicas, bool)
            or not isinstance(self.stream_replicas, int)
            or not 1 <= self.stream_replicas <= 5
        ):
            raise BrokerConfigError(
                f"nats stream_replicas must be 1-5, got {self.stream_replicas!r}"
            )

    def replicas_for(self, members: int) -> int:
        """The MQTT streams' replica count for a cluster of ``members``. A stream needs a
        majority of its replicas: R3 survives one dead member, R2 (two members) none."""
        if self.stream_replicas is None:
            return min(members, 3)
        if self.stream_replicas > members:
            raise BrokerConfigError(
                f"nats stream_replicas {self.stream_replicas} exceeds the {members} members"
            )
        return self.stream_replicas


@dataclass(frozen=True, slots=True)
class NatsConfig:
    """Where one member's generated files are, and its ports."""

    directory: Path
    conf: Path
    store_dir: Path
    log_file: Path
    host: str
    base_port: int
    member: int
    members: int
    ports: NatsPorts
    hosts: tuple[str, ...] = ()  # every member's address, when they differ (member_addresses)


def find_nats_server(executable: str | None = None) -> str:
    """The nats-server binary: ``executable``, else ``nats-server`` on PATH or in /usr/sbin."""
    candidates = [executable] if executable else ["nats-server", "/usr/sbin/nats-server"]
    for candidate in candidates:
        found = shutil.which(candidate) if candidate else None
        if found:
            return found
    raise BrokerNotInstalledError(
        f"{executable or 'nats-server'} not found: install it (Debian: apt-get install "
        "nats-server) or use another --engine"
    )


def _subject_token(level: str) -> str:
    return "*" if level == "+" else level


def mqtt_filter_to_subjects(topic_filter: str) -> tuple[str, ...]:
    """The NATS subjects that grant exactly what the MQTT filter grants.

    ``/`` becomes ``.``, ``+`` becomes ``*`` and a final ``#`` becomes ``>``; since MQTT's
    ``a/#`` also matches ``a`` and NATS's ``a.>`` does not, that filter gives ``a`` and
    ``a.>``. Filters NATS cannot express exactly are refused: ``.`` or spaces (NATS token
    separators), empty levels, and a wildcard or ``$`` in the first level (NATS wildcards
    there would also match the server's internal ``$MQTT``/``$JS`` subjects, MQTT's never).
    """
    if not is_valid_topic_filter(topic_filter):
        raise BrokerConfigError(f"{topic_filter!r} is not a valid MQTT topic filter")
    levels = topic_filter.split("/")
    problem = None
    if "." in topic_filter or " " in topic_filter:
        problem = "NATS cannot carry '.' or ' ' in MQTT topics"
    elif "" in levels:
        problem = "empty topic levels are not supported"
    elif levels[0] in ("+", "#") or levels[0].startswith("$"):
        problem = "the first level must be a literal name not starting with '$'"
    if problem:
        raise BrokerConfigError(
            f"topic filter {topic_filter!r} cannot be granted on the nats engine: {problem}"
        )
    if levels[-1] == "#":
        parent = ".".join(_subject_token(level) for level in levels[:-1])
        return (parent, parent + ".>")
    return (".".join(_subject_token(level) for level in levels),)


def _subjects(filters: Sequence[str]) -> list[str]:
    seen: dict[str, None] = {}
    for topic_filter in filters:
        for subject in mqtt_filter_to_subjects(topic_filter):
            seen.setdefault(subject)
    return list(seen)


def nats_permissions(account: BrokerAccount) -> dict[str, Any]:
    """The ``permissions`` map of ``account``'s NATS user: its grants as subjects, plus the
    QoS 1 delivery subjects. Anything not allowed is denied."""
    return {
        "publish": {"allow": _subjects(account.publish)},
        "subscribe": {"allow": [*_subjects(account.subscribe), DELIVERY_SUBJECTS]},
    }


def _quote(value: str) -> str:
    # A double-quoted nats.conf string takes JSON's escapes; quoting every value also keeps
    # the parser from reading "$..." (bcrypt hashes, subjects) as a variable reference.
    if any(ord(c) < 32 for c in value):
        raise BrokerConfigError(f"nats.conf cannot hold the control characters in {value!r}")
    return json.dumps(value)


# The members' files hold bcrypt hashes of the accounts' passwords, never the passwords.
# The passwords are 192-bit random tokens (``i24net init``), so a hash's work factor adds
# nothing against guessing; the lowest (4, about 1-4 ms a hash here) keeps a config of
# thousands of accounts quick to write. nats-server 2.9 reads only the "$2a$" form.
BCRYPT_ROUNDS = 4
_HASHES_FILE = "password-hashes.json"
# On a machine's export that runs members: every account's hash, no password (export --members)
EXPORTED_HASHES = "exported-hashes.json"


def password_hashes(directory: Path, accounts: Sequence[BrokerAccount]) -> dict[str, str]:
    """A bcrypt hash of each account's password, username -> hash. Kept in ``directory``
    (mode 0600) beside a SHA-256 of the password each was made from, so a member rewriting
    its config hashes only the passwords that changed."""
    import bcrypt

    path = directory / _HASHES_FILE
    try:
        known = json.loads(path.read_text())
    except (OSError, ValueError):
        known = {}
    out, kept = {}, {}
    for account in accounts:
        digest = hashlib.sha256(account.password.encode()).hexdigest()
        entry = known.get(account.username)
        if not (isinstance(entry, list) and len(entry) == 2 and entry[0] == digest):
            made = bcrypt.hashpw(account.password.encode(),
                                 bcrypt.gensalt(rounds=BCRYPT_ROUNDS, prefix=b"2a"))
            entry = [digest, made.decode()]
        kept[account.username] = entry
        out[account.username] = entry[1]
    if kept != known:
        tmp = path.with_name(f"{_HASHES_FILE}.{os.getpid()}.tmp")
        write_file(tmp, json.dumps(kept), private=True)
        os.replace(tmp, path)
    return out


def _render_user(account: BrokerAccount, password_hash: str) -> str:
    perms = nats_permissions(account)
    return _render_nats_user(account.username, password_hash, "MQTT",
                             perms["publish"]["allow"], perms["subscribe"]["allow"])


def _render_nats_user(username: str, password_hash: str, connection: str,
                      publish: list[str], subscribe: list[str]) -> str:
    """One entry of ``authorization.users``: who, from which kind of connection, and the
    subjects it may publish to and subscribe to (anything else is denied)."""
    return (
        "    {\n"
        f"      user: {_quote(username)}\n"
        f"      password: {_quote(password_hash)}\n"
        f'      allowed_connection_types: ["{connection}"]\n'
        "      permissions: {\n"
        f"        publish: {{ allow: {json.dumps(publish)} }}\n"
        f"        subscribe: {{ allow: {json.dumps(subscribe)} }}\n"
        "      }\n"
        "    }"
    )


# The routers' shard leases live in a JetStream key-value bucket of the cluster
# (i24net.shell.leases), reached with a NATS-protocol login of their own: the router
# account's password, no MQTT, and no subject but the bucket's and its replies. The MQTT
# grants never reach "$KV" (every grant is under the network's topic prefix).
LEASE_USER = "i24-lease"
LEASE_BUCKET = "i24-leases"
# The shards' delivery counters, so that a router taking a shard over on any machine
# numbers each recipient's deliveries on (i24net.shell.leases.EngineCounters).
COUNTER_BUCKET = "i24-router-seqs"
LEASE_INBOX = "_INBOX_i24-lease"


def lease_permissions() -> dict[str, list[str]]:
    """What the lease user may do: create the two buckets, read and write their keys."""
    publish = []
    for bucket in (LEASE_BUCKET, COUNTER_BUCKET):
        stream = f"KV_{bucket}"
        publish += [f"$KV.{bucket}.>", f"$JS.API.STREAM.INFO.{stream}",
                    f"$JS.API.STREAM.CREATE.{stream}", f"$JS.API.STREAM.MSG.GET.{stream}"]
    return {"publish": publish, "subscribe": [f"{LEASE_INBOX}.>"]}


def _render_lease_user(password_hash: str) -> str:
    perms = lease_permissions()
    return _render_nats_user(LEASE_USER, password_hash, "STANDARD", perms["publish"],
                             perms["subscribe"])


def _secret(account: BrokerAccount, hashes: dict[str, str] | None) -> str:
    """What the config holds for ``account``'s password: its hash, when given."""
    return account.password if hashes is None else hashes[account.username]


def _tls_block(tls: TlsFiles, *, mutual: bool, indent: str) -> str:
    """A ``tls { }`` block: this member's certificate; ``mutual``: the peer must present one
    the CA signed (routes: every member presents the same member certificate)."""
    lines = [f"cert_file: {_quote(str(tls.server_cert))}",
             f"key_file: {_quote(str(tls.server_key))}",
             "timeout: 5"]
    if mutual:
        lines += [f"ca_file: {_quote(str(tls.ca_cert))}", "verify: true"]
    inner = "".join(f"{indent}  {line}\n" for line in lines)
    return f"{indent}tls {{\n{inner}{indent}}}\n"


def render_nats_conf(
    config: NatsConfig,
    accounts: Sequence[BrokerAccount],
    *,
    route_secret: str,
    limits: NatsLimits = NatsLimits(),
    tls: TlsFiles | None = None,
    hashes: dict[str, str] | None = None,
) -> str:
    """``nats.conf`` text for one member of the cluster described by ``config``; ``hashes``
    (username -> bcrypt hash, ``password_hashes``) replace the passwords it holds. With
    ``tls`` every listener but the local monitor speaks TLS only: MQTT and the (refused)
    NATS-protocol logins with this member's certificate, routes mutually (each member
    verifies the other's certificate against the CA)."""
    check_unique(accounts)
    host = config.host
    cluster_block = ""
    if config.members > 1:
        if not route_secret or not route_secret.isalnum():
            raise BrokerConfigError("the NATS route secret must be a non-empty alphanumeric string")
        routes = [
            f"nats-route://{_ROUTE_USER}:{route_secret}@"
            + _hostport(_member_host(host, config.hosts, k),
                        nats_ports(config.base_port, k).cluster)
            for k in range(1, config.members + 1)
            if k != config.member
        ]
        cluster_block = _CLUSTER_TEMPLATE.substitute(
            cluster_name=_quote(_CLUSTER_NAME),
            cluster_listen=_quote(_hostport(host, config.ports.cluster)),
            route_user=_quote(_ROUTE_USER),
            route_password=_quote(route_secret),
            routes=json.dumps(routes),
            route_tls=_tls_block(tls, mutual=True, indent="  ") if tls else "",
        )
    return NATS_CONF_TEMPLATE.substitute(
        member=config.member,
        members=config.members,
        host=host,
        server_name=_quote(server_name(config.member)),
        client_listen=_quote(_hostport(host, config.ports.client)),
        monitor_listen=_quote(_hostport(host, config.ports.monitor)),
        max_payload=limits.max_payload,
        # nats-server keeps its JetStream state in <store_dir>/jetstream.
        store_dir=_quote(str(config.store_dir.parent)),
        max_memory_store=limits.max_memory_store,
        max_file_store=limits.max_file_store,
        cluster_block=cluster_block,
        mqtt_listen=_quote(_hostport(host, config.ports.mqtt)),
        stream_replicas=limits.replicas_for(config.members),
        ack_wait=f"{limits.ack_wait_seconds}s",
        max_ack_pending=limits.max_ack_pending,
        users=",\n".join([*(_render_user(a, _secret(a, hashes)) for a in accounts),
                           *(_render_lease_user(_secret(a, hashes)) for a in accounts
                             if a.username == ROUTER_USERNAME)]),
        client_tls=_tls_block(tls, mutual=False, indent="") if tls else "",
        mqtt_tls=_tls_block(tls, mutual=False, indent="  ") if tls else "",
    )


def route_secret(directory: Path) -> str:
    """The cluster's route secret, shared by every member: created once, 0600, then kept."""
    path = directory / _ROUTE_SECRET_FILE
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    except OSError as exc:
        raise BrokerConfigError(f"cannot create {path}: {exc.strerror}") from exc
    else:
        with os.fdopen(fd, "w", encoding="ascii") as out:
            out.write(secrets.token_hex(24) + "\n")
    for _ in range(50):  # another member may be writing it this very moment
        try:
            secret = path.read_text(encoding="ascii").strip()
        except OSError as exc:
            raise BrokerConfigError(f"cannot read {path}: {exc.strerror}") from exc
        if secret:
            if not secret.isalnum():
                raise BrokerConfigError(f"{path} is corrupt; delete it (members regenerate it)")
            return secret
        time.sleep(0.01)
    raise BrokerConfigError(f"{path} is empty; delete it (members regenerate it)")


def write_nats_config(
    directory: Path,
    accounts: Sequence[BrokerAccount],
    *,
    member: int,
    members: int = 3,
    host: str = "127.0.0.1",
    port: int,
    limits: NatsLimits = NatsLimits(),
    tls: TlsFiles | None = None,
    hosts: Sequence[str] = (),
    hashes: dict[str, str] | None = None,
) -> NatsConfig:
    """Write member ``member``'s ``nats.conf`` (mode 0600) under ``directory/member-<k>/``.
    ``hashes`` (username -> bcrypt hash) stand for passwords this machine does not hold (a
    machine's export that runs a member); by default they are made from the accounts'.
    With ``hosts`` (one address per member) member k binds ``hosts[k-1]`` and its routes
    go to the others' addresses; ``host`` is then this member's own."""
    for h in hosts:
        validate_host(h)
    host = _member_host(host, hosts, member)
    validate_host(host)
    _check_member(member, members)
    ports = nats_ports(port, member)
    nats_ports(port, members)  # every member's ports must exist, not just this one's
    check_unique(accounts)
    root = ensure_directory(Path(directory).resolve())
    out = ensure_directory(root / f"member-{member}")
    config = NatsConfig(
        directory=out,
        conf=out / _CONF_NAME,
        store_dir=out / "jetstream",
        log_file=out / _LOG_NAME,
        host=host,
        base_port=port,
        member=member,
        members=members,
        ports=ports,
        hosts=tuple(hosts),
    )
    secret = route_secret(root) if members > 1 else ""
    if hashes is None:
        hashes = password_hashes(root, accounts)
    missing = sorted(a.username for a in accounts if a.username not in hashes)
    if missing:
        raise BrokerConfigError(f"no password hash for {', '.join(missing)}: this machine's "
                                "export predates them; export it again")
    text = render_nats_conf(config, accounts, route_secret=secret, limits=limits, tls=tls,
                            hashes=hashes)
    write_file(config.conf, text, private=True)
    return config


def _get_json(url: str) -> Any:
    """The JSON body at ``url`` (error statuses included), or ``None`` if there is none."""
    try:
        with urllib.request.urlopen(url, timeout=_HTTP_TIMEOUT) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        try:
            return json.loads(exc.read())
        except (OSError, ValueError):
            return None
    except (OSError, ValueError):
        return None


def _mqtt_string(value: str) -> bytes:
    data = value.encode("utf-8")
    return len(data).to_bytes(2, "big") + data


def _remaining_length(length: int) -> bytes:
    out = bytearray()
    while True:
        byte, length = length % 128, length // 128
        out.append(byte | (0x80 if length else 0))
        if not length:
            return bytes(out)


def mqtt_login_works(host: str, port: int, account: BrokerAccount, client_id: str,
                     timeout: float = _MQTT_CONNECT_TIMEOUT, *,
                     ca: Path | None = None) -> bool:
    """True if ``account`` can open a clean MQTT 3.1.1 session on ``host:port`` now (over
    TLS, verifying the broker against ``ca``, when given).

    On NATS the first MQTT login creates the account's JetStream streams, so this is the
    test that MQTT really works, not just that the port is open.
    """
    variable = _mqtt_string("MQTT") + bytes([4, 0xC2]) + (10).to_bytes(2, "big")
    payload = (
        _mqtt_string(client_id) + _mqtt_string(account.username) + _mqtt_string(account.password)
    )
    body = variable + payload
    packet = bytes([0x10]) + _remaining_length(len(body)) + body
    try:
        with contextlib.ExitStack() as stack:
            sock = stack.enter_context(socket.create_connection((host, port), timeout=timeout))
            if ca is not None:
                context = ssl.create_default_context(cafile=str(ca))
                sock = stack.enter_context(context.wrap_socket(sock, server_hostname=host))
            sock.settimeout(timeout)
            sock.sendall(packet)
            connack = b""
            while len(connack) < 4:
                chunk = sock.recv(4 - len(connack))
                if not chunk:
                    return False
                connack += chunk
            ok = connack[0] == 0x20 and connack[3] == 0
            if ok:
                sock.sendall(bytes([0xE0, 0]))  # DISCONNECT: no will, session discarded
            return ok
    except OSError:
        return False


class NatsMember(ProcessControl):
    """One member of a NATS cluster: nats-server with JetStream and the MQTT gateway.

    ``port`` is the cluster's base port; this member's own ports are ``nats_ports(port,
    member)``. ``start()`` writes the config and returns once this member's MQTT port accepts
    connections; it does not wait for the other members, so a member can be (re)started
    while others are down. Its JetStream store is kept across restarts, kills included.
    """

    def __init__(
        self,
        directory: Path,
        accounts: Sequence[BrokerAccount],
        *,
        member: int,
        members: int = 3,
        host: str = "127.0.0.1",
        port: int,
        limits: NatsLimits = NatsLimits(),
        executable: str | None = None,
        start_timeout: float = 30.0,
        stop_timeout: float = 10.0,
        logger: logging.Logger | None = None,
        tls: TlsFiles | None = None,
        hosts: Sequence[str] = (),
        hashes: dict[str, str] | None = None,
    ) -> None:
        _check_member(member, members)
        self.tls = tls
        self.hashes = hashes
        self._hosts = tuple(validate_host(h) for h in hosts)
        self._host = validate_host(_member_host(host, self._hosts, member))
        validate_port(port, "base port")
        nats_ports(port, members)
        self._directory = Path(directory)
        self._accounts = tuple(accounts)
        check_unique(self._accounts)
        self._member = member
        self._size = members
        self._base = port
        self._ports = nats_ports(port, member)
        self._limits = limits
        self._executable = executable
        self._start_timeout = start_timeout
        self._stop_timeout = stop_timeout
        self._logger = logger or logging.getLogger("i24net.broker.nats")
        self._config: NatsConfig | None = None
        self._process: BrokerProcess | None = None

    @property
    def host(self) -> str:
        return self._host

    @property
    def port(self) -> int:
        """This member's MQTT port."""
        return self._ports.mqtt

    @property
    def accounts(self) -> tuple[BrokerAccount, ...]:
        """The accounts served (those of the last start or reload)."""
        return self._accounts

    @property
    def member(self) -> int:
        return self._member

    @property
    def ports(self) -> NatsPorts:
        return self._ports

    @property
    def addresses(self) -> list[tuple[str, int]]:
        """Every member's MQTT address, member 1 first."""
        return member_addresses(self._host, self._base, self._size, self._hosts)

    @property
    def directory(self) -> Path:
        return self._directory / f"member-{self._member}"

    @property
    def log_path(self) -> Path:
        return self.directory / _LOG_NAME

    @property
    def monitor_url(self) -> str:
        return f"http://{_hostport(self._host, self._ports.monitor)}"

    def write_config(self) -> NatsConfig:
        """Generate this member's files without starting it."""
        self._config = write_nats_config(
            self._directory,
            self._accounts,
            member=self._member,
            members=self._size,
            host=self._host,
            port=self._base,
            limits=self._limits,
            tls=self.tls,
            hosts=self._hosts,
            hashes=self.hashes,
        )
        return self._config

    def start(self) -> None:
        """Write the config, start nats-server and wait until this member listens."""
        if self.running:
            return
        binary = find_nats_server(self._executable)
        config = self.write_config()
        ports = list(_ports_tuple(self._ports))
        if self._size == 1:
            ports.remove(self._ports.cluster)  # a lone member opens no route port
        self._process = BrokerProcess(
            f"nats-{self._member}",
            [binary, "-c", str(config.conf)],
            config.log_file,
            host=self._host,
            ports=ports,
            ready_marker=_READY_MARKER,
            start_timeout=self._start_timeout,
            stop_timeout=self._stop_timeout,
            logger=self._logger,
        )
        self._process.start()

    def reload(self, accounts: Sequence[BrokerAccount] | None = None) -> None:
        """Rewrite this member's config (from ``accounts`` if given) and SIGHUP nats-server,
        which reloads its users in place and closes the connections of users that are gone
        (a revoked agency's MQTT clients included)."""
        if self._process is None or not self._process.running:
            raise BrokerStartError(f"NATS member {self._member} is not running; start it first")
        if accounts is not None:
            check_unique(accounts)
            self._accounts = tuple(accounts)
        self.write_config()
        self._process.signal(signal.SIGHUP)

    @property
    def server_name(self) -> str:
        return server_name(self._member)

    def jsz(self, query: str = "") -> dict[str, Any] | None:
        """This member's JetStream report (``/jsz?<query>``), or ``None`` if it does not
        answer (not running, or still starting)."""
        report = _get_json(f"{self.monitor_url}/jsz" + (f"?{query}" if query else ""))
        return report if isinstance(report, dict) else None

    def health(self) -> str:
        """``"ok"`` once this member's JetStream is current: it knows the meta leader and
        every stream and consumer it holds has caught up (``/healthz``); else the reason.

        While any member is down the others report their replicas on it as not current, so
        this says "the cluster is whole again", not "this member serves"."""
        report = _get_json(f"{self.monitor_url}/healthz")
        if not isinstance(report, dict):
            return "not answering"
        if report.get("status") == "ok":
            return "ok"
        return str(report.get("error") or report.get("status") or report)

    def jetstream_leaders(self) -> dict[str, str] | None:
        """Every stream (``name``) and consumer (``stream > name``) this member holds, with
        its Raft leader as this member sees it (``""`` while none is elected)."""
        report = self.jsz("consumers=true")
        if report is None:
            return None
        leaders: dict[str, str] = {}
        for account in report.get("account_details") or []:
            for stream in account.get("stream_detail") or []:
                name = stream.get("name", "")
                leaders[name] = (stream.get("cluster") or {}).get("leader") or ""
                for consumer in stream.get("consumer_detail") or []:
                    key = f"{name} > {consumer.get('name', '')}"
                    leaders[key] = (consumer.get("cluster") or {}).get("leader") or ""
        return leaders

    def meta_leader(self) -> str | None:
        """The JetStream meta leader as this member sees it (its own name if standalone)."""
        report = self.jsz()
        if report is None:
            return None
        if self._size == 1:
            return self.server_name if not report.get("disabled") else None
        leader = (report.get("meta_cluster") or {}).get("leader")
        return leader if isinstance(leader, str) and leader else None

    def wait_for_jetstream(self, timeout: float = 30.0) -> float:
        """Wait until this member knows a JetStream meta leader; return the seconds waited."""
        started = time.monotonic()
        while self.meta_leader() is None:
            if not self.running:
                raise BrokerStartError(
                    f"NATS member {self._member} exited; see {self.log_path}:\n"
                    f"{self._tail()}"
                )
            if time.monotonic() - started > timeout:
                raise BrokerStartError(
                    f"NATS member {self._member} saw no JetStream meta leader within "
                    f"{timeout:.0f} s (are a majority of members up?); see {self.log_path}"
                )
            time.sleep(_POLL_INTERVAL)
        return time.monotonic() - started

    def _tail(self) -> str:
        return self._process.log_tail() if self._process is not None else "(not started)"


def _probe_account(accounts: Sequence[BrokerAccount]) -> BrokerAccount:
    for account in accounts:
        if account.username == ROUTER_USERNAME:
            return account
    return accounts[0]


class NatsCluster(BlockingStartStop):
    """``members`` NATS members on one host, started and stopped together.

    ``start()`` returns once every member listens, JetStream has a meta leader and an MQTT
    login succeeds on every member (the first login creates the replicated MQTT streams);
    ``startup_seconds`` says how long that took. Port 0 picks a free base port (kept across
    restarts). ``kill_member(k)`` / ``restart_member(k)`` are for chaos drills: the others
    keep serving.
    """

    def __init__(
        self,
        directory: Path,
        accounts: Sequence[BrokerAccount],
        *,
        members: int = 3,
        host: str = "127.0.0.1",
        port: int = 0,
        limits: NatsLimits = NatsLimits(),
        executable: str | None = None,
        start_timeout: float = 60.0,
        logger: logging.Logger | None = None,
        tls: TlsFiles | None = None,
        hosts: Sequence[str] = (),
    ) -> None:
        _check_member(1, members)
        self.tls = tls
        self._hosts = tuple(validate_host(h) for h in hosts)
        if self._hosts and len(self._hosts) != members:
            raise BrokerConfigError(f"{len(self._hosts)} member hosts for {members} members")
        self._host = validate_host(_member_host(host, self._hosts, 1))
        self._requested_port = validate_port(port, "base port")
        if port:
            nats_ports(port, members)
        limits.replicas_for(members)
        self._directory = Path(directory)
        self._accounts = tuple(accounts)
        check_unique(self._accounts)
        self._size = members
        self._limits = limits
        self._executable = executable
        self._start_timeout = start_timeout
        self._logger = logger or logging.getLogger("i24net.broker.nats")
        self._base: int | None = port or None
        self._members: list[NatsMember] = []
        self.startup_seconds: float | None = None
        """How long the last ``start()`` took, until MQTT worked on every member."""

    @property
    def host(self) -> str:
        return self._host

    @property
    def port(self) -> int:
        """Member 1's MQTT port, which is the base port (known once started)."""
        if self._base is None:
            raise BrokerStartError("the NATS cluster has not been started yet; call start()")
        return self._base

    @property
    def accounts(self) -> tuple[BrokerAccount, ...]:
        """The accounts served (those of the last start or reload)."""
        return self._accounts

    @property
    def addresses(self) -> list[tuple[str, int]]:
        """Every member's MQTT address, member 1 first."""
        return member_addresses(self._host, self.port, self._size, self._hosts)

    @property
    def members(self) -> list[NatsMember]:
        """The members, member 1 first (built on first use; port 0 is resolved then)."""
        if not self._members:
            if self._base is None:
                self._base = pick_base_port(self._host, self._size)
            self._members = [
                NatsMember(
                    self._directory,
                    self._accounts,
                    member=k,
                    members=self._size,
                    host=self._host,
                    port=self._base,
                    limits=self._limits,
                    executable=self._executable,
                    logger=self._logger,
                    tls=self.tls,
                    hosts=self._hosts,
                )
                for k in range(1, self._size + 1)
            ]
        return self._members

    @property
    def pid(self) -> int | None:
        """None: the members are separate processes (``member(k).pid``)."""
        return None

    @property
    def running(self) -> bool:
        """True while every member runs."""
        return bool(self._members) and all(m.running for m in self._members)

    def member(self, k: int) -> NatsMember:
        _check_member(k, self._size)
        return self.members[k - 1]

    def start(self) -> None:
        """Start every member and wait until the cluster serves MQTT (see the class doc)."""
        for attempt in range(_PORT_RETRIES):
            try:
                self._start_once()
                return
            except BrokerStartError as exc:
                self.stop()
                in_use = _ADDRESS_IN_USE in str(exc).lower()
                if in_use and not self._requested_port and attempt + 1 < _PORT_RETRIES:
                    # Someone took one of the ports we picked before a member bound it.
                    self._base, self._members = None, []
                    continue
                raise
            except BaseException:
                self.stop()
                raise

    def _start_once(self) -> None:
        started = time.monotonic()
        deadline = started + self._start_timeout
        for member in self.members:
            member.start()
        listening = time.monotonic() - started
        for member in self.members:
            member.wait_for_jetstream(max(deadline - time.monotonic(), 0.1))
        leader = time.monotonic() - started
        # Member 1 creates the MQTT streams; the others then only attach to them.
        first, *others = self.members
        self._wait_mqtt(first, deadline)
        with ThreadPoolExecutor(max_workers=max(len(others), 1)) as pool:
            for future in [pool.submit(self._wait_mqtt, m, deadline) for m in others]:
                future.result()
        self.startup_seconds = time.monotonic() - started
        self._logger.info(
            "NATS cluster of %d on %s ports %d-%d: members listening after %.2f s, JetStream "
            "meta leader after %.2f s, MQTT working on every member after %.2f s",
            self._size,
            self._host,
            self.port,
            self.port + MEMBER_PORT_STEP * (self._size - 1) + 3,
            listening,
            leader,
            self.startup_seconds,
        )

    def _wait_mqtt(self, member: NatsMember, deadline: float) -> None:
        account = _probe_account(self._accounts)
        client_id = f"{account.username}{CLIENT_ID_SEPARATOR}i24net-probe-{secrets.token_hex(4)}"
        ca = self.tls.ca_cert if self.tls is not None else None
        while not mqtt_login_works(member.host, member.port, account, client_id, ca=ca):
            if not member.running:
                raise BrokerStartError(
                    f"NATS member {member.member} exited; see {member.log_path}"
                )
            if time.monotonic() > deadline:
                raise BrokerStartError(
                    f"NATS member {member.member} did not accept an MQTT login within "
                    f"{self._start_timeout:.0f} s of the cluster start; see {member.log_path}"
                )
            time.sleep(_POLL_INTERVAL)

    def wait_for_leaders(self, timeout: float = 30.0) -> float:
        """Wait until the MQTT streams (sessions, QoS 1 messages, retained messages) are
        each led by a running member, as every running member sees it; return the seconds.

        After a member dies, the streams it led are unavailable until re-elected (4-9 s):
        logins and QoS 1 publishes fail meanwhile. Consumers are not waited for: an idle
        consumer may stay leaderless until used (see ``wait_rejoined``).
        """
        started = time.monotonic()
        while True:
            alive = [m for m in self._members if m.running]
            names = {m.server_name for m in alive}
            views = [m.jetstream_leaders() for m in alive]
            if alive and all(
                view is not None
                and all(leader in names for name, leader in view.items() if " > " not in name)
                for view in views
            ):
                return time.monotonic() - started
            if time.monotonic() - started > timeout:
                raise BrokerStartError(
                    f"NATS cluster: some MQTT streams had no leader among the running members "
                    f"after {timeout:.0f} s: {views}"
                )
            time.sleep(_POLL_INTERVAL)

    def reload(self, accounts: Sequence[BrokerAccount] | None = None) -> None:
        """Give every running member the accounts (``NatsMember.reload``)."""
        if accounts is not None:
            check_unique(accounts)
            self._accounts = tuple(accounts)
        for member in self._members:
            if member.running:
                member.reload(self._accounts)

    def stop(self) -> None:
        """Stop every member (SIGTERM, then SIGKILL if one hangs)."""
        for member in reversed(self._members):
            member.stop()

    def kill(self) -> None:
        """SIGKILL every member: the whole cluster crashes. The stores stay on disk."""
        for member in self._members:
            member.kill()

    def kill_member(self, k: int) -> int | None:
        """SIGKILL member ``k`` (a crash); its JetStream store stays on disk. Until the
        streams it led have elected new leaders (4-9 s), logins elsewhere may fail."""
        return self.member(k).kill()

    def restart_member(self, k: int, timeout: float = 30.0) -> float:
        """(Re)start member ``k`` on its ports and store; return once it has rejoined
        JetStream (``wait_rejoined``) and serves an MQTT login, with the seconds taken.

        The login matters beyond the check: a member sets up its MQTT state (and its own
        retained-message consumer) at its first login. Done now, while the cluster is whole,
        it takes a fraction of a second; left to the first client after another member's
        death, it waits out that member's Raft elections (observed: 15-20 s).
        """
        started = time.monotonic()
        deadline = started + timeout
        member = self.member(k)
        member.stop()
        member.start()
        self.wait_rejoined(k, max(deadline - time.monotonic(), 0.1))
        self._wait_mqtt(member, deadline)
        return time.monotonic() - started

    def wait_rejoined(self, k: int, timeout: float = 30.0) -> float:
        """Wait until member ``k`` knows the meta leader and holds again every stream and
        consumer the other running members hold, each stream with a leader among the
        running members; return the seconds waited.

        Until then it cannot vote in those groups: killing another member meanwhile leaves
        them without a quorum (nats-server logs "has NO quorum, stalled"). Consumer leaders
        are not required: in 2.9.10 a restarted follower of an idle consumer may not learn
        its leader (and ``/healthz`` may call it "not current") for a long time.
        """
        started = time.monotonic()
        member = self.member(k)
        while True:
            alive = [m for m in self._members if m.running]
            names = {m.server_name for m in alive}
            mine = member.jetstream_leaders() if member.running else None
            others = [m.jetstream_leaders() for m in alive if m is not member]
            expected = set().union(*(view or {} for view in others))
            if (
                mine is not None
                and member.meta_leader() in names
                and expected <= set(mine)
                and all(mine[name] in names for name in mine if " > " not in name)
            ):
                return time.monotonic() - started
            if not member.running:
                raise BrokerStartError(f"NATS member {k} exited; see {member.log_path}")
            if time.monotonic() - started > timeout:
                missing = sorted(expected - set(mine or {}))
                raise BrokerStartError(
                    f"NATS member {k} had not rejoined JetStream after {timeout:.0f} s "
                    f"(missing {missing}, leaders {mine}); see {member.log_path}"
                )
            time.sleep(_POLL_INTERVAL)

    def wait_healthy(self, timeout: float = 30.0) -> float:
        """Wait until every member runs and its ``/healthz`` is ok (JetStream current);
        return the seconds waited. See ``wait_rejoined`` for why restarts do not use it."""
        started = time.monotonic()
        while True:
            health = {m.member: (m.health() if m.running else "not running") for m in self.members}
            if all(state == "ok" for state in health.values()):
                return time.monotonic() - started
            if time.monotonic() - started > timeout:
                raise BrokerStartError(
                    f"NATS cluster not whole after {timeout:.0f} s: "
                    + "; ".join(f"member {k}: {state}" for k, state in health.items())
                )
            time.sleep(_HEALTH_POLL_INTERVAL)
