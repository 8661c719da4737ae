"""The network spec: ``network.toml`` as typed values, and the directory built from it.

Theory of operation: people edit ``network.toml``; ``parse_spec`` turns the parsed TOML
(a dict, so this module stays free of file I/O) into a ``NetworkSpec`` and names the exact
field when something is wrong (``agency[3].clearance: unknown classification level``).
``build_directory`` joins the spec with the agencies' public keys into a ``Directory``
ready for the authority to sign.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from i24net.core.cooperation import AGREEMENT_ID, HANDLING_NAMES, ORG_ID, Agreement, Flow
from i24net.core.directory import (
    AGENCY_ID,
    DEFAULT_ORG,
    DERIVED_GROUPS,
    GROUP_NAME,
    KINDS,
    ROLES,
    AgencyRecord,
    Directory,
)
from i24net.core.envelope import KINDS as MESSAGE_KINDS
from i24net.core.errors import ConfigError, I24Error
from i24net.core.keys import PublicKeys
from i24net.core.labels import DEFAULT_LEVELS, ClassificationScale, Label

BROKER_ENGINES = ("embedded", "mosquitto", "nats")
CLUSTER_ENGINES = ("nats",)
MEMBER_PORT_STEP = 10  # a cluster member k listens for MQTT on port + 10 * (k - 1)


@dataclass(frozen=True, slots=True)
class BrokerSettings:
    """``[broker]``: the engine and where it listens.

    A clustered engine (``nats``) runs ``members`` members; member k takes MQTT on
    ``port + 10 * (k - 1)`` (the next ports hold its cluster links). ``addresses`` lists
    brokers run elsewhere (``"host:port"``): nodes and routers connect to those instead and
    fail over from one to the next. ``member_hosts`` gives each member of a clustered
    engine an address of its own (member k binds ``member_hosts[k-1]``, on its usual ports):
    loopback addresses, each standing in for a machine.
    """

    engine: str = "embedded"
    host: str = "127.0.0.1"
    port: int = 18830
    tls: bool = False
    members: int = 1
    addresses: tuple[tuple[str, int], ...] = ()
    member_hosts: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.engine not in BROKER_ENGINES:
            raise ConfigError(f"broker.engine must be one of {', '.join(BROKER_ENGINES)}",
                              reason="config.broker")
        top = self.port + MEMBER_PORT_STEP * (self.members - 1)
        if not 0 < self.port <= top < 65536:
            raise ConfigError("broker.port must be 1-65535 (with room for every member's "
                              "ports)", reason="config.broker")
        if self.engine in CLUSTER_ENGINES:
            if not 1 <= self.members <= 9:
                raise ConfigError("broker.members must be 1-9", reason="config.broker")
        elif self.members != 1:
            raise ConfigError(f"broker.members applies to a clustered engine "
                              f"({', '.join(CLUSTER_ENGINES)}), not {self.engine}",
                              reason="config.broker")
        if self.member_hosts:
            if self.engine not in CLUSTER_ENGINES or len(self.member_hosts) != self.members:
                raise ConfigError("broker.member_hosts lists one address per member of a "
                                  f"clustered engine ({self.members} here)",
                                  reason="config.broker")
            bad = [h for h in self.member_hosts if not _is_loopback(h)]
            if bad:
                raise ConfigError(f"broker.member_hosts: {', '.join(bad)} is not a loopback "
                                  "address (127.0.0.0/8): the members i24net starts serve one "
                                  "machine", reason="config.broker")

    def for_engine(self, engine: str | None) -> BrokerSettings:
        """These settings run on ``engine`` (``i24net up --engine ...``): the spec's own when
        it names that engine, else with that engine's default member count."""
        if engine is None or engine == self.engine:
            return self
        return replace(self, engine=engine, members=3 if engine in CLUSTER_ENGINES else 1,
                       addresses=(), member_hosts=())

    def member_addresses(self) -> list[tuple[str, int]]:
        """Where clients connect, in order: the explicit list, else the local members."""
        if self.addresses:
            return list(self.addresses)
        return [(self.host_of(i + 1), self.port + MEMBER_PORT_STEP * i)
                for i in range(self.members)]

    def host_of(self, member: int) -> str:
        """The address member ``member`` (1-based) binds."""
        return self.member_hosts[member - 1] if self.member_hosts else self.host


def _is_loopback(host: str) -> bool:
    if host in ("localhost", "::1"):
        return True
    try:
        return ipaddress.IPv4Address(host).is_loopback
    except ValueError:
        return False


def parse_address(text: str, where: str = "broker address") -> tuple[str, int]:
    """``"host:port"`` -> (host, port), with a clear error."""
    host, sep, port = text.strip().rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"{where}: expected host:port, got {text!r}",
                          reason="config.broker")
    return host.strip("[]"), int(port)


@dataclass(frozen=True, slots=True)
class AgencySpec:
    id: str
    name: str
    kind: str
    region: str
    clearance: Label
    roles: frozenset[str]
    org: str = DEFAULT_ORG


# The organisation an agency belongs to when its [[agency]] table names none.
DEFAULT_ORGS = {"europol": "EUROPOL"}


@dataclass(frozen=True, slots=True)
class NetworkSpec:
    name: str
    prefix: str
    scale: ClassificationScale
    max_skew_seconds: int
    default_ttl_hours: int
    broker: BrokerSettings
    groups: Mapping[str, tuple[str, ...]]
    agencies: tuple[AgencySpec, ...]
    router_shards: int = 1  # [router] shards: routers sharing the load by sender
    prekey_grace_hours: int = 720  # how long a retired prekey is kept (docs/protocol.md 2.6)
    # [retention]: how long a recipient keeps each kind's bodies (ms), docs/home.md
    retention: Mapping[str, int] = field(default_factory=dict)
    # [[agreement]]: what may pass between organisations (core/cooperation.py)
    agreements: Mapping[str, Agreement] = field(default_factory=dict)

    def agency_ids(self) -> list[str]:
        return [a.id for a in self.agencies]


def _field(path: str, message: str) -> ConfigError:
    return ConfigError(f"{path}: {message}", reason="config.field")


def _get(table: Mapping[str, Any], key: str, path: str, typ: type, default: Any = None) -> Any:
    if key not in table:
        if default is not None:
            return default
        raise _field(f"{path}{key}", "missing")
    value = table[key]
    if typ is int and isinstance(value, bool):
        raise _field(f"{path}{key}", "must be an integer")
    if not isinstance(value, typ):
        raise _field(f"{path}{key}", f"must be {typ.__name__}, got {type(value).__name__}")
    return value


def _str_list(table: Mapping[str, Any], key: str, path: str) -> list[str]:
    value = table.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _field(f"{path}{key}", "must be a list of strings")
    return value


def parse_spec(doc: Mapping[str, Any]) -> NetworkSpec:
    """Validate a parsed ``network.toml``; every error names the field at fault."""
    known = {"network", "broker", "router", "groups", "agency", "retention", "agreement"}
    for key in doc:
        if key not in known:
            raise _field(str(key), "unknown table (expected network, broker, router, groups, "
                         "agency, retention, agreement)")
    net = _get(doc, "network", "", dict)
    name = _get(net, "name", "network.", str)
    # The limits below are the directory decoder's: a spec beyond them would issue a
    # directory that no one (this program included) can load.
    if not 0 < len(name) <= 64:
        raise _field("network.name", "must be 1-64 characters")
    prefix = _get(net, "prefix", "network.", str, "i24/v1")
    if not prefix or prefix.startswith("/") or any(c in prefix for c in "+#") \
            or len(prefix) > 128:
        raise _field("network.prefix", "must be a topic prefix without wildcards "
                     "(at most 128 characters)")
    levels = tuple(_str_list(net, "levels", "network.")) or DEFAULT_LEVELS
    caveats = frozenset(_str_list(net, "caveats", "network."))
    if len(levels) > 32 or len(caveats) > 64:
        raise _field("network.levels", "at most 32 levels and 64 caveats")
    try:
        scale = ClassificationScale(levels, caveats)
    except I24Error as exc:
        raise _field("network.levels", str(exc)) from exc
    skew = _get(net, "max_skew_seconds", "network.", int, 300)
    ttl = _get(net, "default_ttl_hours", "network.", int, 72)
    if not 0 <= skew <= 86_400:
        raise _field("network.max_skew_seconds", "must be 0-86400")
    if not 1 <= ttl <= 24 * 365 * 5:
        raise _field("network.default_ttl_hours", "must be 1 hour to 5 years")
    grace = _get(net, "prekey_grace_hours", "network.", int, 720)
    if not 0 <= grace <= 24 * 365 * 10:
        raise _field("network.prekey_grace_hours", "must be 0 hours to 10 years")

    b = doc.get("broker", {})
    if not isinstance(b, dict):
        raise _field("broker", "must be a table")
    try:
        engine = _get(b, "engine", "broker.", str, "embedded")
        broker = BrokerSettings(
            engine=engine,
            host=_get(b, "host", "broker.", str, "127.0.0.1"),
            port=_get(b, "port", "broker.", int, 18830),
            tls=_get(b, "tls", "broker.", bool, False),  # bool("false") would be True
            members=_get(b, "members", "broker.", int,
                         3 if engine in CLUSTER_ENGINES else 1),
            addresses=tuple(parse_address(a, "broker.addresses")
                            for a in _str_list(b, "addresses", "broker.")),
            member_hosts=tuple(_str_list(b, "member_hosts", "broker.")),
        )
    except ConfigError as exc:
        raise _field("broker", str(exc)) from exc
    r = doc.get("router", {})
    if not isinstance(r, dict) or set(r) - {"shards"}:
        raise _field("router", "must be a table with at most 'shards'")
    shards = _get(r, "shards", "router.", int, 1)
    if not 1 <= shards <= 64:
        raise _field("router.shards", "must be 1-64")

    raw_agencies = doc.get("agency", [])
    if not isinstance(raw_agencies, list) or not raw_agencies:
        raise _field("agency", "at least one [[agency]] table is needed")
    agencies: list[AgencySpec] = []
    seen: set[str] = set()
    for i, a in enumerate(raw_agencies):
        path = f"agency[{i}]."
        if not isinstance(a, dict):
            raise _field(f"agency[{i}]", "must be a table")
        for key in a:
            if key not in {"id", "name", "kind", "region", "clearance", "caveats", "roles",
                           "org"}:
                raise _field(f"{path}{key}", "unknown field")
        aid = _get(a, "id", path, str)
        if not AGENCY_ID.match(aid) or len(aid) > 32:
            raise _field(f"{path}id", f"{aid!r} is not a valid agency id (e.g. NCB-FR)")
        if aid in seen:
            raise _field(f"{path}id", f"duplicate agency {aid}")
        seen.add(aid)
        kind = _get(a, "kind", path, str)
        if kind not in KINDS:
            raise _field(f"{path}kind", f"must be one of {', '.join(KINDS)}")
        roles = frozenset(_str_list(a, "roles", path))
        if roles - set(ROLES):
            raise _field(f"{path}roles", f"unknown role; known: {', '.join(ROLES)}")
        try:
            clearance = scale.validate(Label(_get(a, "clearance", path, str),
                                             frozenset(_str_list(a, "caveats", path))))
        except ConfigError as exc:
            raise _field(f"{path}clearance", str(exc)) from exc
        region = _get(a, "region", path, str).upper()
        if not GROUP_NAME.match(region) or region in DERIVED_GROUPS:
            raise _field(f"{path}region", f"{region!r} is not a valid region name (e.g. "
                         "EUROPE; ALL and NCB are taken)")
        aname = _get(a, "name", path, str, aid)
        if not 0 < len(aname) <= 256:
            raise _field(f"{path}name", "must be 1-256 characters")
        org = _get(a, "org", path, str, DEFAULT_ORGS.get(kind, DEFAULT_ORG))
        if not ORG_ID.match(org):
            raise _field(f"{path}org", f"{org!r} is not a valid organisation (upper-case "
                         "letters, digits and '-', e.g. INTERPOL, EUROPOL)")
        agencies.append(AgencySpec(aid, aname, kind, region, clearance, roles, org))

    raw_groups = doc.get("groups", {})
    if not isinstance(raw_groups, dict):
        raise _field("groups", "must be a table of name = [agency ids]")
    groups: dict[str, tuple[str, ...]] = {}
    for gname, members in raw_groups.items():
        if not isinstance(members, list) or not all(isinstance(m, str) for m in members):
            raise _field(f"groups.{gname}", "must be a list of agency ids")
        if not GROUP_NAME.match(gname):
            raise _field(f"groups.{gname}", "group names are upper-case letters, digits "
                         "and '-' (at most 32)")
        if gname in DERIVED_GROUPS or gname in {a.region for a in agencies}:
            raise _field(f"groups.{gname}", "clashes with a derived group (@ALL, @NCB or a "
                         "region)")
        if len(set(members)) != len(members):
            raise _field(f"groups.{gname}", "lists an agency twice")
        for m in members:
            if m not in seen:
                raise _field(f"groups.{gname}", f"unknown agency {m}")
        groups[gname] = tuple(members)
    if not any("directory-authority" in a.roles for a in agencies):
        raise _field("agency", "one agency must hold the role directory-authority")
    agreements = parse_agreements(doc.get("agreement", []), scale,
                                  {a.org for a in agencies})
    return NetworkSpec(name, prefix, scale, skew, ttl, broker, groups, tuple(agencies),
                       shards, grace, parse_retention(doc.get("retention", {})), agreements)


def parse_until(value: Any, path: str) -> int:
    """An end date in ms since the epoch (UTC): a TOML date or ``"YYYY-MM-DD"`` (the end of
    that day), or a date and time (``2031-12-31T12:00:00Z``)."""
    if isinstance(value, str):
        try:
            value = (dt.date.fromisoformat(value) if len(value.strip()) == 10
                     else dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00")))
        except ValueError:
            raise _field(path, f"{value!r} is not a date: write e.g. 2031-12-31 or "
                         "2031-12-31T12:00:00Z") from None
    if isinstance(value, dt.datetime):
        stamp = value if value.tzinfo else value.replace(tzinfo=dt.UTC)
        return int(stamp.timestamp() * 1000)
    if isinstance(value, dt.date):
        end = dt.datetime(value.year, value.month, value.day, tzinfo=dt.UTC)
        return int((end + dt.timedelta(days=1)).timestamp() * 1000)
    raise _field(path, f"must be a date such as 2031-12-31, got {type(value).__name__}")


def parse_agreements(raw: Any, scale: ClassificationScale,
                     orgs: set[str]) -> dict[str, Agreement]:
    """``[[agreement]]`` tables: id, title, parties (two organisations), until, and one
    ``[[agreement.flow]]`` per direction (from, to, kinds, max_level, caveats, handling)."""
    if not isinstance(raw, list):
        raise _field("agreement", "must be an array of tables ([[agreement]])")
    out: dict[str, Agreement] = {}
    for i, a in enumerate(raw):
        path = f"agreement[{i}]."
        if not isinstance(a, dict):
            raise _field(f"agreement[{i}]", "must be a table")
        for key in a:
            if key not in {"id", "title", "parties", "until", "flow"}:
                raise _field(f"{path}{key}", "unknown field")
        aid = _get(a, "id", path, str)
        if not AGREEMENT_ID.match(aid):
            raise _field(f"{path}id", f"{aid!r} is not a valid agreement id (e.g. "
                         "INTERPOL-EUROPOL)")
        if aid in out:
            raise _field(f"{path}id", f"duplicate agreement {aid}")
        parties = _str_list(a, "parties", path)
        if len(parties) != 2 or parties[0] == parties[1]:
            raise _field(f"{path}parties", "name the two organisations, e.g. [\"INTERPOL\", "
                         "\"EUROPOL\"]")
        for p in parties:
            if p not in orgs:
                raise _field(f"{path}parties", f"no agency belongs to organisation {p}; "
                             f"organisations: {', '.join(sorted(orgs))}")
        raw_flows = a.get("flow", [])
        if not isinstance(raw_flows, list) or not 1 <= len(raw_flows) <= 2:
            raise _field(f"{path}flow", "one or two [[agreement.flow]] tables, one per "
                         "direction")
        flows = [_parse_flow(fl, f"{path}flow[{n}].", scale, parties)
                 for n, fl in enumerate(raw_flows)]
        until = parse_until(a.get("until"), f"{path}until")
        title = _get(a, "title", path, str, aid)
        try:
            out[aid] = Agreement(aid, title, (parties[0], parties[1]), until, tuple(flows))
        except I24Error as exc:
            raise _field(f"agreement[{i}]", exc.message) from exc
    return out


def _parse_flow(fl: Any, path: str, scale: ClassificationScale, parties: list[str]) -> Flow:
    if not isinstance(fl, dict):
        raise _field(path.rstrip("."), "must be a table")
    for key in fl:
        if key not in {"from", "to", "kinds", "max_level", "caveats", "handling"}:
            raise _field(f"{path}{key}", "unknown field")
    source, target = _get(fl, "from", path, str), _get(fl, "to", path, str)
    if {source, target} != set(parties):
        raise _field(path.rstrip("."), f"a flow runs from one party to the other "
                     f"({' and '.join(parties)})")
    kinds = _str_list(fl, "kinds", path)
    if not kinds or set(kinds) - set(MESSAGE_KINDS):
        raise _field(f"{path}kinds", f"list message kinds from: {', '.join(MESSAGE_KINDS)}")
    level = _get(fl, "max_level", path, str)
    if level not in scale.levels:
        raise _field(f"{path}max_level", f"unknown level; levels: {', '.join(scale.levels)}")
    caveats = _str_list(fl, "caveats", path)
    if set(caveats) - scale.caveats:
        raise _field(f"{path}caveats", "unknown caveat; caveats: "
                     f"{', '.join(sorted(scale.caveats))}")
    handling = _str_list(fl, "handling", path)
    if set(handling) - set(HANDLING_NAMES):
        raise _field(f"{path}handling", f"handling codes are {', '.join(HANDLING_NAMES)}")
    return Flow(source, target, frozenset(kinds), level, frozenset(caveats),
                frozenset(handling))


_PERIOD = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(d|h|min|m|s)\s*\Z")
_PERIOD_MS = {"d": 86_400_000, "h": 3_600_000, "min": 60_000, "m": 60_000, "s": 1000}
# Kinds whose bodies the notice lifecycle keeps and withdraws itself (a notice lives for its
# five years unless renewed; its updates and cancellations go with it).
LIFECYCLE_KINDS = frozenset({"notice", "notice-update", "notice-cancel"})


def parse_period(value: Any, path: str) -> int:
    """A retention period in ms: ``"365d"``, ``"90d"``, ``"12h"``, ``"30min"``, ``"45s"``,
    or an integer number of days."""
    if isinstance(value, int) and not isinstance(value, bool):
        ms = value * 86_400_000
    elif isinstance(value, str) and (m := _PERIOD.match(value)):
        ms = round(float(m.group(1)) * _PERIOD_MS[m.group(2)])
    else:
        raise _field(path, f"{value!r} is not a period: write e.g. \"365d\", \"90d\", "
                     "\"12h\", \"45s\" or a number of days")
    if not 1000 <= ms <= 50 * 365 * 86_400_000:
        raise _field(path, "must be 1 second to 50 years")
    return ms


def parse_retention(raw: Any) -> dict[str, int]:
    """``[retention]``: kind = period. Kinds left out are kept for as long as the store
    keeps them."""
    if not isinstance(raw, dict):
        raise _field("retention", "must be a table of kind = period (e.g. diffusion = "
                     "\"365d\")")
    out: dict[str, int] = {}
    for kind, value in raw.items():
        if kind not in MESSAGE_KINDS:
            raise _field(f"retention.{kind}", f"unknown kind; known: {', '.join(MESSAGE_KINDS)}")
        if kind in LIFECYCLE_KINDS:
            raise _field(f"retention.{kind}", "notices are kept for their own lifetime and "
                         "withdrawn by the notice authority; no retention applies")
        out[kind] = parse_period(value, f"retention.{kind}")
    return out


def build_directory(
    spec: NetworkSpec,
    public_keys: Mapping[str, PublicKeys],
    *,
    authority_key: bytes,
    serial: int,
    issued_ms: int,
    previous: Directory | None = None,
    router_keys: tuple[bytes, ...] = (),
) -> Directory:
    """The directory for ``spec``; ``public_keys`` maps agency id -> its public keys (the
    two long-term keys and the signed current prekey, ``AgencyKeys.public()``).

    With ``previous``, revocations and key versions carry over for agencies still listed,
    and so do its joint operations (``i24net operation``): their caveats stay the network's,
    granted to the members of those still running.
    """
    operations = {}
    if previous is not None:
        operations = {name: op for name, op in previous.operations.items()
                      if {op.lead, *op.members, *op.removed} <= set(spec.agency_ids())}
    granted: dict[str, set[str]] = {}
    for name, op in operations.items():
        if op.status == "active":
            for m in op.members:
                granted.setdefault(m, set()).add(name)
    scale = ClassificationScale(spec.scale.levels, spec.scale.caveats | set(operations))
    records = {}
    for a in spec.agencies:
        if a.id not in public_keys:
            raise ConfigError(f"no keys for {a.id}: run 'i24net directory keygen {a.id}'",
                              reason="config.keys", agency=a.id)
        pk = public_keys[a.id]
        status, version = "active", 1
        if previous is not None and a.id in previous.agencies:
            old = previous.agencies[a.id]
            status = old.status
            version = old.key_version + (old.sign_key != pk.sign_key)
        clearance = Label(a.clearance.level, a.clearance.caveats | granted.get(a.id, set()))
        records[a.id] = AgencyRecord(a.id, a.name, a.kind, a.region, clearance, a.roles,
                                     pk.sign_key, pk.enc_key, status, version,
                                     pk.prekey, pk.prekey_sig, a.org)
    return Directory(network=spec.name, serial=serial, issued_ms=issued_ms, scale=scale,
                     agencies=records, groups=dict(spec.groups), authority_key=authority_key,
                     prefix=spec.prefix, max_skew_ms=spec.max_skew_seconds * 1000,
                     prekey_grace_ms=spec.prekey_grace_hours * 3_600_000,
                     router_keys=router_keys, agreements=dict(spec.agreements),
                     operations=operations)
