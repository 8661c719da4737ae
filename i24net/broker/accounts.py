"""Broker accounts and the topic rules every broker engine enforces.

Theory of operation: the network's broker isolation (docs/security.md 4.6) is a list of
accounts, one
per agency plus the router's, each with the topic filters it may publish to and subscribe to.
Everything else is derived from that list: Mosquitto's password and ACL files, the embedded
amqtt broker's plugins, and the in-memory transport's checks. So the three agree, the rules
live here as pure functions with exact MQTT 3.1.1 semantics (§4.7):

- ``topic_matches(filter, topic)``: does a subscription receive a message?
- ``filter_covers(allowed, requested)``: is every topic ``requested`` can match also matched by
  ``allowed``? A subscription is allowed only if some allowed filter covers it, so an account
  allowed ``i24/v1/inbox/NCB-FR`` cannot subscribe ``i24/v1/inbox/+`` or ``#``.
- ``may_publish`` / ``may_subscribe`` / ``may_receive``: the account-level decisions.

Malformed topics and filters are never allowed: every predicate answers ``False`` for them
rather than raising, because a security check that throws on hostile input is one that a
caller can forget to catch. Constructors (``BrokerAccount``, ``accounts_for``) do raise, with a
message naming the bad value, since a bad account is an operator's mistake to fix.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from i24net.broker.errors import BrokerConfigError
from i24net.transport.topics import topic_matches as match_valid_topic

__all__ = [
    "CLIENT_ID_SEPARATOR",
    "DEFAULT_PREFIX",
    "ROUTER_USERNAME",
    "BrokerAccount",
    "TopicGrants",
    "accounts_for",
    "client_id_allowed",
    "filter_covers",
    "generate_password",
    "is_valid_topic_filter",
    "is_valid_topic_name",
    "may_publish",
    "may_receive",
    "may_subscribe",
    "topic_matches",
    "unguessable_client_id",
]

ROUTER_USERNAME = "i24-router"
"""The router's broker account: it reads every submit topic and writes every inbox."""

DEFAULT_PREFIX = "i24/v1"

CLIENT_ID_SEPARATOR = ":"
"""A client id belongs to account ``U`` if it is ``U`` or starts with ``U:``. The separator is
a character usernames may not contain, so account ``NCB`` can never claim ``NCB-FR``'s ids."""

_USERNAME_RE = re.compile(r"[A-Za-z0-9_.-]+")
# MQTT caps strings at 65535 bytes; ours are identifiers and must fit config files and logs.
_MAX_USERNAME_LEN = 128
_MAX_PASSWORD_LEN = 256
_MAX_TOPIC_BYTES = 65535
# Password files and ACL files are line-based ("user:hash", "topic read X"), so anything that
# could end a line or a field early is refused in the values we write into them.
_FORBIDDEN_IN_CONFIG = re.compile(r"[\x00-\x20\x7f]")
_PASSWORD_ENTROPY_BYTES = 24  # 192 bits -> exactly 32 urlsafe base64 characters, no padding


class TopicGrants(Protocol):
    """Anything that carries publish and subscribe filters (an account, a plugin's table)."""

    @property
    def publish(self) -> tuple[str, ...]: ...

    @property
    def subscribe(self) -> tuple[str, ...]: ...


def is_valid_topic_name(topic: str) -> bool:
    """A topic a message may be published to: non-empty, no wildcards, no NUL (MQTT §4.7.3)."""
    if not isinstance(topic, str) or not topic or "\x00" in topic:
        return False
    if "+" in topic or "#" in topic:
        return False
    return len(topic.encode("utf-8", "surrogatepass")) <= _MAX_TOPIC_BYTES


def is_valid_topic_filter(topic_filter: str) -> bool:
    """A filter a client may subscribe with: ``+`` fills a whole level, ``#`` only the last."""
    if not isinstance(topic_filter, str) or not topic_filter or "\x00" in topic_filter:
        return False
    if len(topic_filter.encode("utf-8", "surrogatepass")) > _MAX_TOPIC_BYTES:
        return False
    levels = topic_filter.split("/")
    for index, level in enumerate(levels):
        if "#" in level and (level != "#" or index != len(levels) - 1):
            return False
        if "+" in level and level != "+":
            return False
    return True


def topic_matches(topic_filter: str, topic: str) -> bool:
    """True if a subscription with ``topic_filter`` receives a message published to ``topic``.

    ``+`` matches exactly one level (possibly empty), ``#`` the parent level and any number of
    levels below it, and a filter starting with a wildcard never matches a topic starting with
    ``$`` (MQTT §4.7.2), so ``#`` does not reach ``$SYS``. Invalid input matches nothing.
    """
    if not is_valid_topic_filter(topic_filter) or not is_valid_topic_name(topic):
        return False
    return match_valid_topic(topic_filter, topic)


def filter_covers(allowed: str, requested: str) -> bool:
    """True if every topic that ``requested`` matches is also matched by ``allowed``.

    This is the subscribe check: granting a filter grants everything it can ever match. The
    test is per allowed filter; a request covered only by the union of several allowed filters
    is refused, which errs on the safe side and never arises with the accounts built here.
    """
    if not is_valid_topic_filter(allowed) or not is_valid_topic_filter(requested):
        return False
    a_levels = allowed.split("/")
    r_levels = requested.split("/")
    # A '$' literal first level names topics that wildcards at the first level never match.
    if r_levels[0].startswith("$") and a_levels[0] in ("+", "#"):
        return False
    for index, r_level in enumerate(r_levels):
        if index >= len(a_levels):
            return False
        a_level = a_levels[index]
        if a_level == "#":
            return True
        if r_level == "#":
            # requested matches any depth below here and the parent topic (the levels before
            # the '#'). Only '#' covers both, unless the parent is the empty string, which is
            # no topic: then "+/#" (one or more levels) covers it too, e.g. "#" and "+/#".
            parent_is_a_topic = "/".join(r_levels[:index]) != ""
            return not parent_is_a_topic and a_levels[index:] == ["+", "#"]
        if r_level == "+":
            if a_level != "+":
                return False
        elif a_level not in ("+", r_level):
            return False
    # requested is exhausted: allowed must end here, or continue with a '#' that matches the
    # zero extra levels ("a/#" covers "a").
    return len(a_levels) == len(r_levels) or (
        len(a_levels) == len(r_levels) + 1 and a_levels[-1] == "#"
    )


def may_publish(account: TopicGrants, topic: str) -> bool:
    """True if ``account`` may publish a message to ``topic`` (a topic name, no wildcards)."""
    return is_valid_topic_name(topic) and any(topic_matches(f, topic) for f in account.publish)


def may_subscribe(account: TopicGrants, topic_filter: str) -> bool:
    """True if ``account`` may subscribe with ``topic_filter``: some allowed filter covers it."""
    return any(filter_covers(allowed, topic_filter) for allowed in account.subscribe)


def may_receive(account: TopicGrants, topic: str) -> bool:
    """True if a message on ``topic`` may be delivered to ``account``.

    Brokers use this as a second check at delivery time, so a subscription that slipped past
    the subscribe check (or a session taken over) still cannot deliver a foreign topic.
    """
    return is_valid_topic_name(topic) and any(topic_matches(f, topic) for f in account.subscribe)


def client_id_allowed(username: str, client_id: str) -> bool:
    """True if ``username`` may connect with ``client_id``: ``username`` or ``username:<any>``.

    Binding client ids to accounts stops one agency from resuming another's persistent session
    (and reading the inbox messages queued in it) by reusing its client id.
    """
    return client_id == username or client_id.startswith(username + CLIENT_ID_SEPARATOR)


def unguessable_client_id(client_id: str, password: str) -> str:
    """``client_id`` with a tag only the account's password holder can compute:
    ``<client_id>:<16 hex digits>`` (BLAKE2b-64 of the password, personalised).

    For brokers that do not bind client ids to accounts (NATS 2.9: any login may present any
    client id and take that session over, closing its holder): an agency cannot knock the
    router, or another agency, off without knowing its client id, and cannot compute it
    without that account's password. The tagged id still belongs to the account
    (``client_id_allowed``). It is a secret only as long as the broker does not show it:
    NATS lists client ids on its monitoring port and in its log, both local to its host.
    """
    digest = hashlib.blake2b(password.encode("utf-8"), digest_size=8,
                             person=b"i24net-client-id").hexdigest()
    return f"{client_id}{CLIENT_ID_SEPARATOR}{digest}"


def _check_filters(name: str, username: str, value: Any) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, Iterable):
        raise BrokerConfigError(
            f"account {username!r}: {name} must be a sequence of topic filters, "
            f"not {type(value).__name__}",
            agency=username,
        )
    filters = tuple(value)
    for topic_filter in filters:
        if not isinstance(topic_filter, str) or not is_valid_topic_filter(topic_filter):
            raise BrokerConfigError(
                f"account {username!r}: {topic_filter!r} in {name} is not a valid MQTT topic "
                "filter ('+' must fill a level, '#' only as the last level)",
                agency=username,
            )
        if _FORBIDDEN_IN_CONFIG.search(topic_filter):
            raise BrokerConfigError(
                f"account {username!r}: topic filter {topic_filter!r} in {name} contains a "
                "space or control character, which broker ACL files cannot hold",
                agency=username,
            )
    return filters


@dataclass(frozen=True, slots=True)
class BrokerAccount:
    """One broker login and the topics it may use.

    ``publish`` and ``subscribe`` are MQTT topic filters. The password is plaintext (brokers
    store only its hash) and is kept out of ``repr`` so accounts can be logged.
    """

    username: str
    password: str = field(repr=False)
    publish: tuple[str, ...]
    subscribe: tuple[str, ...]

    def __post_init__(self) -> None:
        if (
            not isinstance(self.username, str)
            or len(self.username) > _MAX_USERNAME_LEN
            or not _USERNAME_RE.fullmatch(self.username)
        ):
            raise BrokerConfigError(
                f"broker username {self.username!r} is invalid: use 1-{_MAX_USERNAME_LEN} "
                "characters from A-Z a-z 0-9 _ . -",
                agency=str(self.username),
            )
        if (
            not isinstance(self.password, str)
            or not 0 < len(self.password) <= _MAX_PASSWORD_LEN
            or _FORBIDDEN_IN_CONFIG.search(self.password)
        ):
            raise BrokerConfigError(
                f"account {self.username!r}: the password must be 1-{_MAX_PASSWORD_LEN} "
                "printable characters without spaces (use generate_password())",
                agency=self.username,
            )
        # Accept lists (e.g. from JSON) but store tuples so the account stays immutable.
        object.__setattr__(self, "publish", _check_filters("publish", self.username, self.publish))
        object.__setattr__(
            self, "subscribe", _check_filters("subscribe", self.username, self.subscribe)
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (password included: write it only to files with mode 0600)."""
        return {
            "username": self.username,
            "password": self.password,
            "publish": list(self.publish),
            "subscribe": list(self.subscribe),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BrokerAccount:
        """Build an account from ``to_dict()`` output, naming what is missing or extra."""
        expected = {"username", "password", "publish", "subscribe"}
        if not isinstance(data, Mapping) or set(data) != expected:
            got = sorted(data) if isinstance(data, Mapping) else type(data).__name__
            raise BrokerConfigError(
                f"a broker account needs exactly the keys {sorted(expected)}, got {got}"
            )
        return cls(
            username=data["username"],
            password=data["password"],
            publish=data["publish"],
            subscribe=data["subscribe"],
        )


def _check_prefix(prefix: str) -> None:
    if (
        not is_valid_topic_name(prefix)
        or prefix.startswith(("$", "/"))
        or prefix.endswith("/")
        or "//" in prefix
        or _FORBIDDEN_IN_CONFIG.search(prefix)
    ):
        raise BrokerConfigError(
            f"topic prefix {prefix!r} is invalid: use levels like 'i24/v1' without wildcards, "
            "spaces, a leading '$' or '/', or empty levels"
        )


def accounts_for(
    agencies: Iterable[str],
    passwords: Mapping[str, str],
    prefix: str = DEFAULT_PREFIX,
) -> list[BrokerAccount]:
    """The broker accounts of a network: one per agency, then the router's.

    Agency ``A`` may publish only ``{prefix}/submit/A``, ``{prefix}/submit/A/to/+`` (to a
    router shard) and ``{prefix}/presence/A`` and
    subscribe only ``{prefix}/inbox/A``, ``{prefix}/directory`` and ``{prefix}/presence/+``. The
    router subscribes ``submit/+``, ``submit/+/to/+``, ``directory``, ``presence/+`` and
    ``route/+`` and publishes
    ``inbox/+``, ``directory``, ``presence/+`` and ``route/+`` (docs/protocol.md 6.1;
    ``route/<k>`` carries
    frames between router shards). ``passwords`` maps each username, the
    router's (``ROUTER_USERNAME``) included, to its plaintext password.
    """
    _check_prefix(prefix)
    agency_ids = list(agencies)
    seen: set[str] = set()
    for agency in agency_ids:
        if agency == ROUTER_USERNAME:
            raise BrokerConfigError(
                f"agency id {agency!r} is reserved for the router's broker account; rename it",
                agency=agency,
            )
        if agency in seen:
            raise BrokerConfigError(f"agency {agency!r} is listed twice", agency=agency)
        seen.add(agency)
    missing = [name for name in [*agency_ids, ROUTER_USERNAME] if name not in passwords]
    if missing:
        raise BrokerConfigError(
            f"no broker password for {', '.join(missing)}; add one per account "
            "(generate_password() makes them)",
            agencies=tuple(missing),
        )
    accounts = [
        BrokerAccount(
            username=agency,
            password=passwords[agency],
            # submit/A/to/<k>: receipts and gap requests aimed at router shard k
            publish=(f"{prefix}/submit/{agency}", f"{prefix}/submit/{agency}/to/+",
                     f"{prefix}/presence/{agency}"),
            subscribe=(f"{prefix}/inbox/{agency}", f"{prefix}/directory", f"{prefix}/presence/+"),
        )
        for agency in agency_ids
    ]
    accounts.append(
        BrokerAccount(
            username=ROUTER_USERNAME,
            password=passwords[ROUTER_USERNAME],
            publish=(f"{prefix}/inbox/+", f"{prefix}/directory", f"{prefix}/presence/+",
                     f"{prefix}/route/+"),
            # directory: the router adopts a newer signed version while running, as nodes do;
            # route/<k>: router shards pass receipts and gap requests to each other
            subscribe=(f"{prefix}/submit/+", f"{prefix}/submit/+/to/+", f"{prefix}/directory",
                       f"{prefix}/presence/+", f"{prefix}/route/+"),
        )
    )
    return accounts


def generate_password(rng_bytes: Callable[[int], bytes]) -> str:
    """A 32-character urlsafe password from 192 random bits (pass ``os.urandom`` or a seeded
    source in tests). That much entropy makes the brokers' fast password hashes safe."""
    raw = rng_bytes(_PASSWORD_ENTROPY_BYTES)
    if not isinstance(raw, bytes | bytearray) or len(raw) != _PASSWORD_ENTROPY_BYTES:
        raise BrokerConfigError(
            f"the random source did not return {_PASSWORD_ENTROPY_BYTES} bytes; "
            "pass a callable like os.urandom"
        )
    return base64.urlsafe_b64encode(bytes(raw)).decode("ascii")
