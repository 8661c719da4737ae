"""The embedded broker: amqtt 0.12 with per-account passwords and exact topic ACLs.

Theory of operation: amqtt is configured only through its ``plugins`` table (which replaces
its defaults, among them the anonymous plugin that admits any client giving a username and
the ``0.0.0.0`` listener). Three checks come from the broker accounts:

1. Passwords: ``PasswordAuthPlugin`` reads ``passwd`` (mode 0600, rewritten at every start),
   one ``user:blake2b$<salt>$<digest>`` line per account: a salted BLAKE2b digest of the
   password, compared in constant time. amqtt verifies passwords synchronously on its event
   loop, so a slow hash (amqtt's argon2 ``FileAuthPlugin``) would cost ~10 ms per CONNECT and
   ~10 s per 1,000 logins. It would protect nothing either: broker passwords are 192-bit random
   strings (``generate_password``), which no one can guess from a leaked digest however fast
   the hash, so a single salted hash suffices and the file never holds a plaintext password.
   A client without a username, an unknown user and a wrong password are all refused.
2. Client ids: ``ClientIdBindingPlugin`` admits account ``U`` only with client id ``U`` or
   ``U:<suffix>``. Without it, amqtt hands a persistent session (its subscriptions and the
   messages queued in it) to whichever authenticated client presents that client id next.
3. Topics: ``AccountsTopicPlugin`` answers amqtt's publish, subscribe and receive checks with
   ``may_publish`` / ``may_subscribe`` / ``may_receive``. amqtt's ``TopicAccessControlList``
   plugin is not used: its matcher lets an allowed ``a/+`` subscribe ``a/#`` and denies ``a``
   under an allowed ``a/#``.

Two amqtt 0.12 flaws need more than a plugin, so ``_IsolatingBroker`` (a ``Broker``
subclass) fixes them: amqtt looks up, and for a clean session deletes, the stored session of a
CONNECT's client id *before* checking the password (any local client without credentials could
wipe an agency's queued inbox), and on connect it sends every retained message matching *any*
client's subscription, unchecked. Both are pinned by tests that fail without the fix. The same
subclass removes amqtt's scans over every subscribed filter, once per message and once per
CONNECT (O(accounts) each with one inbox filter per agency), and listens with a deep backlog,
so a 1,000-agency network logs in and routes in seconds (tests/broker/test_embedded_scale.py).

Sessions live in memory: a restart of the embedded broker loses them (use Mosquitto for
broker-restart drills), and amqtt drops in-flight QoS 1 state when a client disconnects
(its issue #401); end-to-end receipts cover both.

Run it as its own process with ``python -m i24net.broker.embedded --config FILE.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import functools
import hashlib
import hmac
import json
import logging
import os
import re
import signal
import ssl
import stat
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

from amqtt.adapters import ReaderAdapter, StreamReaderAdapter, StreamWriterAdapter, WriterAdapter
from amqtt.broker import Broker
from amqtt.contexts import Action, BaseContext, ListenerType
from amqtt.errors import AMQTTError, MQTTError, NoDataError
from amqtt.errors import BrokerError as AmqttBrokerError
from amqtt.events import BrokerEvents
from amqtt.mqtt.connack import NOT_AUTHORIZED, ConnackPacket
from amqtt.mqtt.constants import QOS_0, QOS_1, QOS_2
from amqtt.mqtt.packet import MQTTFixedHeader
from amqtt.mqtt.protocol.broker_handler import BrokerProtocolHandler
from amqtt.plugins.base import BaseAuthPlugin, BaseTopicPlugin
from amqtt.session import Session
from amqtt.utils import gen_client_id
from transitions import MachineError

from i24net.broker.accounts import (
    ROUTER_USERNAME,
    BrokerAccount,
    client_id_allowed,
    may_publish,
    may_receive,
    may_subscribe,
)
from i24net.broker.errors import BrokerConfigError, BrokerError, BrokerStartError
from i24net.broker.files import ensure_directory, write_file
from i24net.broker.limits import AGENCY_MAX_PACKET, CONNECT_MAX_PACKET, ROUTER_MAX_PACKET
from i24net.broker.process import (
    BrokerProcess,
    ProcessControl,
    pick_free_port,
    validate_host,
    validate_port,
)
from i24net.broker.refusals import RefusalLog, shown
from i24net.config.logsetup import configure_logging

__all__ = [
    "AccountsTopicPlugin",
    "ClientIdBindingPlugin",
    "ClientIdPolicy",
    "EmbeddedBroker",
    "EmbeddedBrokerProcess",
    "PasswordAuthPlugin",
    "amqtt_config",
    "main",
    "quiet_amqtt_logging",
    "read_amqtt_password_file",
    "read_embedded_config_file",
    "render_amqtt_password_file",
    "write_embedded_config_file",
]

ClientIdPolicy = Literal["bound", "any"]

_PASSWORD_FILE = "passwd"
# Password digests: BLAKE2b-256 over the UTF-8 password with a random 16-byte salt per account
# (BLAKE2b's own salt parameter) and a fixed personalisation that ties the digests to this use.
# One fast hash is enough because the passwords carry 192 random bits (see the module doc).
_PASSWORD_SCHEME = "blake2b"
_SALT_BYTES = 16
_DIGEST_BYTES = 32
_PERSON = b"i24net.broker.pw"
_PASSWORD_LINE = re.compile(
    rf"(?P<user>[A-Za-z0-9_.-]{{1,128}}):{_PASSWORD_SCHEME}"
    rf"\$(?P<salt>[0-9a-f]{{{2 * _SALT_BYTES}}})\$(?P<digest>[0-9a-f]{{{2 * _DIGEST_BYTES}}})"
)
_PORT_RETRIES = 3
_SUBSCRIBE_FAILURE = 0x80  # SUBACK return code
_LISTEN_BACKLOG = 4096  # pending connections the kernel queues (capped by net.core.somaxconn)
_AMQTT_LOGGERS = ("amqtt", "transitions")
# amqtt imports plugins by dotted path; spelled out so it also holds under ``python -m``.
_MODULE = "i24net.broker.embedded"


def quiet_amqtt_logging(level: int = logging.WARNING) -> None:
    """Raise amqtt's loggers to ``level`` unless someone configured them explicitly.

    amqtt logs every connection and packet at INFO/DEBUG; a simulation with many nodes would
    drown its own logs in them.
    """
    for name in _AMQTT_LOGGERS:
        logger = logging.getLogger(name)
        if logger.level == logging.NOTSET:
            logger.setLevel(level)


def _password_digest(password: str | bytes, salt: bytes) -> bytes:
    secret = password.encode("utf-8") if isinstance(password, str) else bytes(password)
    return hashlib.blake2b(
        secret, digest_size=_DIGEST_BYTES, salt=salt, person=_PERSON
    ).digest()


def render_amqtt_password_file(
    accounts: Sequence[BrokerAccount],
    *,
    rng_bytes: Callable[[int], bytes] = os.urandom,
) -> str:
    """The password file ``PasswordAuthPlugin`` reads: one
    ``username:blake2b$<salt hex>$<digest hex>`` line per account, with a fresh random salt
    from ``rng_bytes`` for each (about a microsecond per account)."""
    names = [a.username for a in accounts]
    if len(set(names)) != len(names):
        raise BrokerConfigError("broker accounts listed twice; each username must be unique")
    lines = []
    for account in accounts:
        salt = rng_bytes(_SALT_BYTES)
        if not isinstance(salt, bytes | bytearray) or len(salt) != _SALT_BYTES:
            raise BrokerConfigError(
                f"the random source did not return {_SALT_BYTES} bytes; pass os.urandom"
            )
        digest = _password_digest(account.password, bytes(salt))
        lines.append(f"{account.username}:{_PASSWORD_SCHEME}${salt.hex()}${digest.hex()}\n")
    return "".join(lines)


@dataclass(frozen=True, slots=True)
class _StoredPassword:
    salt: bytes
    digest: bytes


def read_amqtt_password_file(path: Path) -> dict[str, _StoredPassword]:
    """Parse a file written by ``render_amqtt_password_file``, strictly.

    Every line must be a well-formed entry and every username unique; anything else is a
    ``BrokerConfigError`` naming the line, so a damaged file stops the broker at start instead
    of silently locking an agency out. The file must not be readable by group or others.
    """
    path = Path(path)
    try:
        mode = path.stat().st_mode
        text = path.read_bytes().decode("utf-8")  # bytes: no newline translation
    except OSError as exc:
        raise BrokerConfigError(f"cannot read password file {path}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise BrokerConfigError(f"password file {path} is not UTF-8 text") from exc
    if stat.S_IMODE(mode) & 0o077:
        raise BrokerConfigError(
            f"password file {path} is readable by others (mode {stat.S_IMODE(mode):o}); "
            "it must be 0600"
        )
    if text and not text.endswith("\n"):
        raise BrokerConfigError(f"password file {path} does not end with a newline (truncated?)")
    users: dict[str, _StoredPassword] = {}
    for number, line in enumerate(text.split("\n")[:-1], start=1):
        entry = _PASSWORD_LINE.fullmatch(line)
        if entry is None:
            raise BrokerConfigError(
                f"password file {path}, line {number}: expected "
                f"'username:{_PASSWORD_SCHEME}$<{2 * _SALT_BYTES} hex digits>"
                f"$<{2 * _DIGEST_BYTES} hex digits>'"
            )
        user = entry["user"]
        if user in users:
            raise BrokerConfigError(f"password file {path}, line {number}: {user!r} listed twice")
        users[user] = _StoredPassword(bytes.fromhex(entry["salt"]), bytes.fromhex(entry["digest"]))
    if not users:
        raise BrokerConfigError(
            f"password file {path} holds no accounts: a broker nobody can log in to is useless"
        )
    return users


_REFUSAL_LOGGER = logging.getLogger("i24net.broker.embedded")

SHUTDOWN_TIMEOUT_S = 3.0  # amqtt shutdown can hang on Python 3.11 (see EmbeddedBroker.stop)


@dataclass(frozen=True, slots=True)
class _Grants:
    publish: tuple[str, ...]
    subscribe: tuple[str, ...]


def _grants_of(accounts: Sequence[BrokerAccount]) -> dict[str, _Grants]:
    return {a.username: _Grants(a.publish, a.subscribe) for a in accounts}


class AccountsTopicPlugin(BaseTopicPlugin):  # type: ignore[misc]  # amqtt ships no types
    """amqtt topic plugin: publish, subscribe and delivery allowed exactly as the accounts say.

    amqtt asks every topic plugin and proceeds only if all answer True; an unknown user or a
    missing session is refused.
    """

    @dataclass
    class Config:
        """Per-username filters, as amqtt hands plugin configs over (plain dicts of lists)."""

        publish: dict[str, list[str]] = field(default_factory=dict)
        subscribe: dict[str, list[str]] = field(default_factory=dict)

    def __init__(self, context: BaseContext) -> None:
        super().__init__(context)
        config = context.config
        if not isinstance(config, AccountsTopicPlugin.Config):
            raise BrokerConfigError(
                "AccountsTopicPlugin needs its Config from amqtt's plugins table"
            )
        users = set(config.publish) | set(config.subscribe)
        self._grants = {
            user: _Grants(
                tuple(config.publish.get(user, ())), tuple(config.subscribe.get(user, ()))
            )
            for user in users
        }
        self.refusals = RefusalLog(_REFUSAL_LOGGER)

    def update(self, grants: Mapping[str, _Grants]) -> None:
        """Use ``grants`` from now on (``EmbeddedBroker.reload``)."""
        self._grants = dict(grants)

    async def topic_filtering(
        self,
        *,
        session: Session | None = None,
        topic: str | None = None,
        action: Action | None = None,
    ) -> bool:
        if session is None or not session.username or topic is None:
            return False
        grants = self._grants.get(session.username)
        if grants is None:
            return False
        if action == Action.PUBLISH:
            allowed = may_publish(grants, topic)
        elif action == Action.SUBSCRIBE:
            allowed = may_subscribe(grants, topic)
        elif action == Action.RECEIVE:
            allowed = may_receive(grants, topic)
        else:
            allowed = False
        if not allowed:
            what = {Action.PUBLISH: "publish", Action.SUBSCRIBE: "subscription",
                    Action.RECEIVE: "delivery"}.get(action, str(action))
            self.refusals.refused(
                "refused %s on %s for %s (client %s)",
                what,
                shown(topic),
                shown(session.username),
                shown(session.client_id),
            )
        return allowed


class PasswordAuthPlugin(BaseAuthPlugin):  # type: ignore[misc]
    """amqtt auth plugin: the CONNECT's password must match its account's digest in the file.

    The file is read once, when amqtt loads the plugin; a malformed file fails the start. A
    login costs one BLAKE2b digest and a constant-time comparison. A client without a username
    is refused outright (False), not left to amqtt's rule that a connection no plugin answered
    is refused, so anonymous clients stay out whatever other plugins are loaded. An unknown
    user is refused after the same work as a wrong password.
    """

    @dataclass
    class Config:
        """Where the password file is (amqtt hands the plugin's config over as a dict)."""

        password_file: str = ""

    def __init__(self, context: BaseContext) -> None:
        super().__init__(context)
        config = context.config
        if not isinstance(config, PasswordAuthPlugin.Config) or not config.password_file:
            raise BrokerConfigError(
                "PasswordAuthPlugin needs 'password_file' in amqtt's plugins table"
            )
        self._path = Path(config.password_file)
        self._users = read_amqtt_password_file(self._path)
        # Unknown users are checked against this, so they cost what a wrong password costs.
        self._nobody = _StoredPassword(os.urandom(_SALT_BYTES), os.urandom(_DIGEST_BYTES))
        self.refusals = RefusalLog(_REFUSAL_LOGGER)

    def reload(self) -> None:
        """Read the password file again (``EmbeddedBroker.reload``); a damaged file raises
        ``BrokerConfigError`` and the accounts in use stay."""
        self._users = read_amqtt_password_file(self._path)

    def accepts(self, username: str | None, password: str | None) -> bool:
        """Whether ``username`` with ``password`` would log in now."""
        stored = self._users.get(username or "")
        if stored is None:
            return False
        try:
            digest = _password_digest(password if password is not None else "", stored.salt)
        except (TypeError, UnicodeEncodeError):
            return False
        return hmac.compare_digest(digest, stored.digest)

    async def authenticate(self, *, session: Session) -> bool | None:
        if session is None or not session.username:
            return False
        stored = self._users.get(session.username)
        known = stored is not None
        if stored is None:
            stored = self._nobody
        password = session.password if session.password is not None else ""
        try:
            digest = _password_digest(password, stored.salt)
        except (TypeError, UnicodeEncodeError):
            digest = b""
        matches = hmac.compare_digest(digest, stored.digest)
        if known and matches:
            return True
        self.refusals.refused(
            "refused login of %s: %s (client %s)",
            shown(session.username),
            "wrong password" if known else "no such account",
            shown(session.client_id),
        )
        return False


class ClientIdBindingPlugin(BaseAuthPlugin):  # type: ignore[misc]
    """amqtt auth plugin: account ``U`` may use only client id ``U`` or ``U:<suffix>``.

    It answers None (no opinion) without a username and leaves that client to
    ``PasswordAuthPlugin``, which refuses it; amqtt admits a connection only if every plugin
    that answered said True, and at least one answered.
    """

    @dataclass
    class Config:
        """No options: the rule is ``accounts.client_id_allowed``."""

    def __init__(self, context: BaseContext) -> None:
        super().__init__(context)
        self.refusals = RefusalLog(_REFUSAL_LOGGER)

    async def authenticate(self, *, session: Session) -> bool | None:
        if session is None or not session.username:
            return None
        allowed = client_id_allowed(session.username, session.client_id or "")
        if not allowed:
            self.refusals.refused(
                "refused login of %s: client id %s does not belong to that account "
                "(use %s or %s)",
                shown(session.username),
                shown(session.client_id),
                shown(session.username),
                shown(f"{session.username}:..."),
            )
        return allowed


def _is_wildcard(topic_filter: str) -> bool:
    return "+" in topic_filter or "#" in topic_filter


class _SubscriptionTable(dict[str, list[tuple[Session, int]]]):
    """amqtt's subscription dict (filter -> [(session, qos)]) that also knows its wildcard keys.

    amqtt matches every message against every filter, O(accounts) per message with one inbox
    filter per agency; ``_IsolatingBroker`` looks a topic's exact filter up instead and matches
    only the wildcard filters, which this table keeps in step with its keys whoever changes
    them. Its repr is short: amqtt logs ``repr(subscriptions)`` after every SUBSCRIBE, built
    even when debug logging is off, and the full repr lists every subscribed session.
    """

    def __init__(self) -> None:
        super().__init__()
        self.wildcards: dict[str, None] = {}  # an ordered set of the wildcard keys

    def __setitem__(self, key: str, value: list[tuple[Session, int]]) -> None:
        super().__setitem__(key, value)
        if _is_wildcard(key):
            self.wildcards[key] = None

    def __delitem__(self, key: str) -> None:
        super().__delitem__(key)
        self.wildcards.pop(key, None)

    def pop(self, key: str, *default: Any) -> Any:
        self.wildcards.pop(key, None)
        return super().pop(key, *default)

    def popitem(self) -> tuple[str, list[tuple[Session, int]]]:
        key, value = super().popitem()
        self.wildcards.pop(key, None)
        return key, value

    def clear(self) -> None:
        super().clear()
        self.wildcards.clear()

    def setdefault(self, key: str, default: Any = None) -> Any:
        if key not in self:
            self[key] = default
        return self[key]

    def update(self, *args: Any, **kwargs: Any) -> None:
        for key, value in dict(*args, **kwargs).items():
            self[key] = value

    def __ior__(self, other: Any) -> _SubscriptionTable:  # type: ignore[override, misc]
        self.update(other)
        return self

    def __repr__(self) -> str:
        return f"<{len(self)} subscription filters>"


def max_packet_of(username: str | None) -> int:
    """The largest MQTT packet (remaining length) the embedded broker reads from an account:
    the router's directory, an agency's envelope (``i24net.broker.limits``)."""
    return ROUTER_MAX_PACKET if username == ROUTER_USERNAME else AGENCY_MAX_PACKET


class _CappedReader(StreamReaderAdapter):  # type: ignore[misc]
    """A connection's reader that knows the largest packet it may read.

    amqtt reads a packet's fixed header, then its whole remaining length (a PUBLISH payload
    in one ``readexactly``), so a client announcing 200 MB made the broker buffer 200 MB
    before anything looked at it. ``_capped_fixed_header`` checks the remaining length as
    soon as it is decoded: over ``max_packet`` the connection is aborted and nothing more is
    read (asyncio's stream buffer holds at most 128 KiB meanwhile). Until the login succeeds
    the cap is a CONNECT's largest valid size; then it is the account's (``max_packet_of``).
    """

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 refusals: RefusalLog) -> None:
        super().__init__(reader)
        self.writer = writer
        self.max_packet = CONNECT_MAX_PACKET
        self.who = "a client that has not logged in"
        self.refusals = refusals
        self.refused = False

    def abort(self) -> None:
        """Drop the connection at once, unread data and all."""
        self.writer.transport.abort()
        self.feed_eof()


_amqtt_fixed_header = MQTTFixedHeader.from_stream.__func__


async def _capped_fixed_header(cls: type[MQTTFixedHeader],
                               reader: ReaderAdapter) -> MQTTFixedHeader | None:
    """amqtt's ``MQTTFixedHeader.from_stream``, then the packet cap of a ``_CappedReader``:
    an oversized packet ends the connection (``None`` is amqtt's "no more data"). Readers
    of amqtt's own client, or any other, are left alone."""
    header: MQTTFixedHeader | None = await _amqtt_fixed_header(cls, reader)
    if header is None or not isinstance(reader, _CappedReader):
        return header
    if reader.refused:
        return None
    if header.remaining_length > reader.max_packet:
        reader.refused = True
        reader.refusals.refused(
            "refused a packet of %d bytes (type %d) from %s: over the %d allowed; "
            "connection closed", header.remaining_length, header.packet_type, reader.who,
            reader.max_packet,
        )
        reader.abort()
        return None
    return header


MQTTFixedHeader.from_stream = classmethod(_capped_fixed_header)


class _IsolatingBroker(Broker):  # type: ignore[misc]
    """amqtt 0.12's Broker with two isolation flaws fixed, and its per-message and
    per-connection scans over all subscriptions replaced by lookups.

    1. Authenticate before touching sessions. amqtt looks up the stored session of the
       CONNECT's client id, and for a clean-session CONNECT deletes it, *before* it checks the
       password; a refused CONNECT also leaves the owner's session marked connected to a
       closed socket. So any local client, without credentials, could wipe an agency's queued
       inbox or make the broker drop messages for it. Here a CONNECT that fails authentication
       is refused (CONNACK 5) before any session is looked up; the rest of
       ``_initialize_client_session`` is amqtt's own, unchanged.
    2. Retained messages on connect. amqtt sends a connecting client every retained message
       matching *any* client's subscription, unchecked; a retained message on
       ``inbox/NCB-FR`` would reach NCB-DE. Here a connecting client gets the retained
       messages of its own session's subscriptions (a resumed session has some, a new one
       none), and only of filters its account may subscribe.
    3. Scale. amqtt matched each message against every subscribed filter and, on each
       CONNECT, walked every client's filters: O(accounts) per message and per login. Here
       a message's exact filter is a dict lookup and only wildcard filters are matched
       (``_SubscriptionTable``); a CONNECT walks only its session's filters (kept per client
       id as subscriptions come and go); a retained message for an exact filter is a lookup.
       The filters and subscribers a message goes to are copied before the first ``await``,
       so a client subscribing or leaving meanwhile cannot make the loop raise RuntimeError
       ("dictionary changed size") or skip another subscriber, as amqtt's loops could.
    4. Packet size. Each connection reads through a ``_CappedReader``: a packet larger than
       the account may send is refused from its fixed header, before it is buffered.
    5. Takeover. When a connection presents a client id already connected, amqtt closes
       the old connection and then ends it like any other: its will is published and the
       session, which the new connection now uses, is marked disconnected, so messages for
       it were queued and never sent. Here the connection taken over only stops.
    6. Accounts change while running (``i24_reload``): the plugins and grants are replaced
       and every connection whose login would now be refused is closed.
    """

    def __init__(self, config: dict[str, Any], grants: Mapping[str, _Grants]) -> None:
        super().__init__(config)
        self._i24_grants = dict(grants)
        self._subscriptions: _SubscriptionTable = _SubscriptionTable()
        # client id -> the filters its session holds (an ordered set), for the CONNECT path.
        self._i24_filters_of: dict[str, dict[str, None]] = {}
        self.i24_packet_refusals = RefusalLog(_REFUSAL_LOGGER)
        self._i24_readers: dict[str, _CappedReader] = {}  # client id -> its connection
        self._i24_taken_over: set[BrokerProtocolHandler] = set()

    async def stream_connected(self, reader: asyncio.StreamReader,
                               writer: asyncio.StreamWriter, listener_name: str) -> None:
        await self._client_connected(
            listener_name, _CappedReader(reader, writer, self.i24_packet_refusals),
            StreamWriterAdapter(writer),
        )

    async def i24_reload(self, accounts: Sequence[BrokerAccount]) -> list[str]:
        """Serve ``accounts`` from now on (the password file is already rewritten): the
        plugins reread it, the grants are replaced, and each connected client whose login
        would now be refused (account gone, password changed) is disconnected; the sessions
        of accounts that are gone are deleted. Returns the client ids disconnected."""
        grants = _grants_of(accounts)
        passwords: list[PasswordAuthPlugin] = []
        for plugin in self.plugins_manager.plugins:
            if isinstance(plugin, PasswordAuthPlugin):
                plugin.reload()
                passwords.append(plugin)
            elif isinstance(plugin, AccountsTopicPlugin):
                plugin.update(grants)
        self._i24_grants = grants
        dropped = []
        for client_id, (session, _handler) in list(self._sessions.items()):
            if all(p.accepts(session.username, session.password) for p in passwords):
                continue
            reader = self._i24_readers.get(client_id)
            if session.transitions.state == "connected" and reader is not None:
                reader.abort()
                dropped.append(client_id)
            if session.username not in grants:
                await self._delete_session(client_id)
        return dropped

    async def start(self) -> None:
        self._i24_filters_of.clear()  # amqtt's start() clears sessions and subscriptions
        await super().start()

    async def _initialize_client_session(
        self,
        reader: ReaderAdapter,
        writer: WriterAdapter,
        remote_address: str,
        remote_port: int,
    ) -> tuple[BrokerProtocolHandler, Session]:
        try:
            handler, client_session = await BrokerProtocolHandler.init_from_connect(
                reader, writer, self.plugins_manager
            )
        except (AMQTTError, NoDataError) as exc:
            raise AMQTTError(exc) from exc
        except MQTTError as exc:
            await writer.close()
            raise MQTTError(exc) from exc

        if not await self._authenticate(client_session, None):
            with contextlib.suppress(OSError):  # the client may already have hung up
                await ConnackPacket.build(0, NOT_AUTHORIZED).to_stream(writer)
                await writer.close()
            raise MQTTError(
                f"refused CONNECT from {remote_address}:{remote_port} "
                f"(user {client_session.username!r}, client id {client_session.client_id!r})"
            )
        if isinstance(reader, _CappedReader):
            reader.max_packet = max_packet_of(client_session.username)
            reader.who = (f"{client_session.username} (client {client_session.client_id!r}, "
                          f"{remote_address}:{remote_port})")
            if client_session.client_id:
                self._i24_readers[client_session.client_id] = reader

        # From here on: amqtt 0.12.1 Broker._initialize_client_session, unchanged.
        if client_session.clean_session:
            if client_session.client_id is not None and client_session.client_id != "":
                await self._delete_session(client_session.client_id)
            else:
                client_session.client_id = gen_client_id()
            client_session.parent = 0
        elif client_session.client_id in self._sessions:
            existing, _ = self._sessions[client_session.client_id]
            existing.will_flag = client_session.will_flag
            existing.will_message = client_session.will_message
            existing.will_topic = client_session.will_topic
            existing.will_qos = client_session.will_qos
            existing.keep_alive = client_session.keep_alive
            existing.username = client_session.username
            existing.password = client_session.password
            client_session = existing
            client_session.parent = 1
        else:
            client_session.parent = 0

        timeout_disconnect_delay = self.config.get("timeout-disconnect-delay", 0)
        if client_session.keep_alive > 0 and isinstance(timeout_disconnect_delay, int):
            client_session.keep_alive += timeout_disconnect_delay
        return handler, client_session

    async def _create_server_instance(
        self,
        listener_name: str,
        listener_type: ListenerType,
        address: str | None,
        port: int,
        ssl_context: ssl.SSLContext | None,
    ) -> Any:
        # amqtt listens with asyncio's default backlog of 100: when a network's nodes all
        # connect at once (start-up, after a broker restart) the kernel drops the excess SYNs
        # and those clients wait a 1 s (then 3 s) retransmit. A deep backlog lets them queue.
        if listener_type != ListenerType.TCP:
            return await super()._create_server_instance(
                listener_name, listener_type, address, port, ssl_context
            )
        return await asyncio.start_server(
            functools.partial(self.stream_connected, listener_name=listener_name),
            address,
            port,
            reuse_address=True,
            ssl=ssl_context,
            backlog=_LISTEN_BACKLOG,
        )

    async def _handle_client_session(
        self,
        reader: ReaderAdapter,
        writer: WriterAdapter,
        client_session: Session,
        handler: BrokerProtocolHandler,
        server: Any,
        listener_name: str,
    ) -> None:
        # amqtt 0.12.1 Broker._handle_client_session, unchanged but for the marked loop.
        authenticated = await self._authenticate(
            client_session, self.listeners_config[listener_name]
        )
        if client_session.client_id is None:
            raise AmqttBrokerError("Client ID was not correctly created/set.")
        while True:
            try:
                client_session.transitions.connect()
                break
            except (MachineError, ValueError):
                if client_session.transitions.is_connected():
                    self.logger.warning(
                        f"Client {client_session.client_id} is already connected, "
                        "performing take-over."
                    )
                    old_session = self._sessions[client_session.client_id]
                    # Changed: the connection taken over must not end the session it gave up
                    # (see _handle_disconnect).
                    self._i24_taken_over.add(old_session[1])
                    await old_session[1].handle_connection_closed()
                    await old_session[1].stop()
                    break
                self.logger.warning(
                    f"Client {client_session.client_id} is reconnecting too quickly, make it wait"
                )
                await asyncio.sleep(1)
        handler.attach(client_session, reader, writer)
        self._sessions[client_session.client_id] = (client_session, handler)
        if not client_session.transitions.is_connected():  # Changed: see _handle_disconnect
            client_session.transitions.connect()
        await handler.mqtt_connack_authorize(authenticated)
        if not authenticated:
            await writer.close()
            return
        await self.plugins_manager.fire_event(
            BrokerEvents.CLIENT_CONNECTED,
            client_id=client_session.client_id,
            client_session=client_session,
        )
        await handler.start()
        await self._publish_session_retained_messages(client_session)
        # Changed: the session's own filters (a copy), not every filter of every client.
        for topic_filter in list(self._i24_filters_of.get(client_session.client_id, ())):
            await self._publish_retained_messages_for_subscription(
                (topic_filter, QOS_0), client_session
            )
        try:
            await self._client_message_loop(client_session, handler)
        finally:
            if self._i24_readers.get(client_session.client_id) is reader:
                del self._i24_readers[client_session.client_id]

    async def _handle_disconnect(self, client_session: Session, handler: BrokerProtocolHandler,
                                 disconnect_waiter: asyncio.Future[Any]) -> None:
        # amqtt ends a connection that another one with its client id took over like any
        # other: it publishes the will and marks the session, now the new connection's,
        # disconnected, so the broker queued that client's messages instead of sending them
        # (a router taken over and back received nothing while it looked connected). The
        # connection taken over only stops.
        if handler in self._i24_taken_over:
            self._i24_taken_over.discard(handler)
            await self._stop_handler(handler)
            return
        await super()._handle_disconnect(client_session, handler, disconnect_waiter)

    async def add_subscription(self, subscription: tuple[str, int], session: Session) -> int:
        granted: int = await super().add_subscription(subscription, session)
        if granted != _SUBSCRIBE_FAILURE and session.client_id:
            self._i24_filters_of.setdefault(session.client_id, {})[subscription[0]] = None
        return granted

    def _del_subscription(self, a_filter: str, session: Session) -> int:
        deleted: int = super()._del_subscription(a_filter, session)
        if deleted:
            own = self._i24_filters_of.get(session.client_id or "")
            if own is not None:
                own.pop(a_filter, None)
                if not own:
                    del self._i24_filters_of[session.client_id]
        return deleted

    async def _publish_retained_messages_for_subscription(
        self, subscription: tuple[str, int], session: Session
    ) -> None:
        topic_filter, qos = subscription
        if not self._retained_messages:
            return
        grants = self._i24_grants.get(session.username or "")
        if grants is None or not may_subscribe(grants, topic_filter):
            return
        if _is_wildcard(topic_filter):
            await super()._publish_retained_messages_for_subscription(subscription, session)
            return
        # An exact filter matches one topic: look it up rather than match every retained one.
        retained = self._retained_messages.get(topic_filter)
        handler = self._get_handler(session)
        if retained is None or handler is None:
            return
        await asyncio.wait(
            [
                asyncio.ensure_future(
                    handler.mqtt_publish(
                        retained.topic,
                        retained.data,
                        min(qos, retained.qos or qos),
                        retain=True,
                    )
                )
            ]
        )

    def _filters_matching(self, topic: Any) -> list[str]:
        """The subscribed filters that match ``topic``, as amqtt's ``_matches`` decides."""
        table = self._subscriptions
        if not isinstance(topic, str):
            return []
        if _is_wildcard(topic):  # not a valid topic name: amqtt's full scan, no shortcut
            return [f for f in table if self._matches(topic, f)]
        exact = [topic] if topic in table else []
        return exact + [f for f in table.wildcards if self._matches(topic, f)]

    async def _run_broadcast(self, running_tasks: Any) -> None:
        # amqtt 0.12.1 Broker._run_broadcast, but the matching filters come from a lookup and
        # the filters and subscriber lists are copied before the first await.
        broadcast = await self._broadcast_queue.get()
        topic = broadcast["topic"]
        targets = [
            list(self._subscriptions.get(topic_filter, ()))
            for topic_filter in self._filters_matching(topic)
        ]
        for subscriptions in targets:
            for target_session, sub_qos in subscriptions:
                qos = broadcast.get("qos", sub_qos)
                sendable = await self._topic_filtering(
                    target_session, topic=topic, action=Action.RECEIVE
                )
                if not sendable:
                    self.logger.info(
                        f"{target_session.client_id} not allowed to receive messages from "
                        f"TOPIC {topic}."
                    )
                    continue
                # Keep what a disconnected persistent session is owed (QoS 1 and 2).
                if (
                    target_session.transitions.state != "connected"
                    and not target_session.clean_session
                    and qos in (QOS_1, QOS_2)
                    and not target_session.is_anonymous
                ):
                    await self._retain_broadcast_message(broadcast, qos, target_session)
                    continue
                if target_session.transitions.state != "connected":
                    continue
                handler = self._get_handler(target_session)
                if handler:
                    running_tasks.append(
                        asyncio.ensure_future(
                            handler.mqtt_publish(topic, broadcast["data"], qos, retain=False)
                        )
                    )


_OVERRIDDEN = (
    "stream_connected",
    "_client_connected",
    "_create_server_instance",
    "_initialize_client_session",
    "_handle_client_session",
    "_handle_disconnect",
    "_stop_handler",
    "_publish_retained_messages_for_subscription",
    "_run_broadcast",
    "_matches",
    "_get_handler",
    "add_subscription",
    "_del_subscription",
    "_retain_broadcast_message",
)
if not all(hasattr(Broker, name) for name in _OVERRIDDEN):  # pragma: no cover
    raise ImportError(
        "this amqtt version changed Broker internals that i24net patches for isolation "
        f"({', '.join(_OVERRIDDEN)}); use amqtt 0.12 or review i24net/broker/embedded.py"
    )


def _check_policy(policy: str) -> ClientIdPolicy:
    if policy == "bound":
        return "bound"
    if policy == "any":
        return "any"
    raise BrokerConfigError(
        f"client_id_policy {policy!r} is invalid: use 'bound' (client id = username or "
        "'username:suffix') or 'any'"
    )


def amqtt_config(
    accounts: Sequence[BrokerAccount],
    *,
    host: str,
    port: int,
    password_file: Path,
    client_id_policy: ClientIdPolicy = "bound",
) -> dict[str, Any]:
    """The amqtt broker config dict: one loopback TCP listener and only our plugins."""
    plugins: dict[str, Any] = {
        f"{_MODULE}.PasswordAuthPlugin": {"password_file": str(password_file)},
        f"{_MODULE}.AccountsTopicPlugin": {
            "publish": {a.username: list(a.publish) for a in accounts},
            "subscribe": {a.username: list(a.subscribe) for a in accounts},
        },
    }
    if _check_policy(client_id_policy) == "bound":
        plugins[f"{_MODULE}.ClientIdBindingPlugin"] = {}
    return {
        "listeners": {"default": {"type": "tcp", "bind": f"{host}:{port}", "max_connections": 0}},
        # No expiry: an offline agency's persistent session waits for it (in memory).
        "session_expiry_interval": None,
        "plugins": plugins,
    }


def _config_error_in(exc: BaseException) -> BrokerConfigError | None:
    """The ``BrokerConfigError`` a plugin raised, from under amqtt's ``PluginInitError``."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, BrokerConfigError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def _is_address_in_use(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno == errno.EADDRINUSE:
            return True
        seen = seen.__cause__ or seen.__context__
    return False


class EmbeddedBroker:
    """The amqtt broker in this process, for ``accounts``; port 0 picks a free port.

    ``async with EmbeddedBroker(accounts, data_dir) as broker`` starts it on ``broker.host``
    / ``broker.port`` and shuts it down on exit. ``data_dir`` receives the password file.
    """

    def __init__(
        self,
        accounts: Sequence[BrokerAccount],
        data_dir: Path,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        client_id_policy: ClientIdPolicy = "bound",
        logger: logging.Logger | None = None,
    ) -> None:
        self._accounts = tuple(accounts)
        if not self._accounts:
            raise BrokerConfigError("no broker accounts: a broker nobody can log in to is useless")
        self._data_dir = Path(data_dir)
        self._host = validate_host(host)
        self._requested_port = validate_port(port)
        self._port: int | None = None
        self._client_id_policy: ClientIdPolicy = _check_policy(client_id_policy)
        self._logger = logger or logging.getLogger("i24net.broker.embedded")
        self._broker: _IsolatingBroker | None = None

    @property
    def host(self) -> str:
        return self._host

    @property
    def port(self) -> int:
        if self._port is None:
            raise BrokerStartError("the embedded broker has not been started yet; call start()")
        return self._port

    @property
    def running(self) -> bool:
        return self._broker is not None

    @property
    def addresses(self) -> list[tuple[str, int]]:
        return [(self.host, self.port)]

    @property
    def pid(self) -> int | None:
        """None: the broker runs in this process."""
        return None

    @property
    def password_file(self) -> Path:
        return self._data_dir / _PASSWORD_FILE

    async def start(self) -> None:
        """Write the password file and start listening; raises ``BrokerStartError``."""
        if self._broker is not None:
            return
        quiet_amqtt_logging()
        ensure_directory(self._data_dir)
        write_file(self.password_file, render_amqtt_password_file(self._accounts), private=True)
        for attempt in range(_PORT_RETRIES):
            port = self._port or self._requested_port or pick_free_port(self._host)
            config = amqtt_config(
                self._accounts,
                host=self._host,
                port=port,
                password_file=self.password_file,
                client_id_policy=self._client_id_policy,
            )
            try:
                broker = _IsolatingBroker(config, _grants_of(self._accounts))
                await broker.start()
            except (AmqttBrokerError, OSError) as exc:
                if (
                    _is_address_in_use(exc)
                    and not self._requested_port
                    and attempt + 1 < _PORT_RETRIES
                ):
                    self._port = None
                    continue
                raise BrokerStartError(
                    f"the embedded broker could not listen on {self._host}:{port}: {exc}; "
                    "choose another port or stop what is using it"
                ) from exc
            except Exception as exc:  # amqtt wraps plugin and config failures in many types
                config_error = _config_error_in(exc)
                if config_error is not None:
                    raise config_error from exc
                raise BrokerStartError(f"the embedded broker failed to start: {exc}") from exc
            self._broker = broker
            self._port = port
            self._logger.info("embedded broker listening on %s:%d", self._host, port)
            return

    @property
    def accounts(self) -> tuple[BrokerAccount, ...]:
        return self._accounts

    async def reload(self, accounts: Sequence[BrokerAccount]) -> list[str]:
        """Serve ``accounts`` from now on, without a restart: the password file is rewritten
        and reread, the topic grants replaced, and every client whose login would now be
        refused (a revoked agency, a changed password) is disconnected at once; the
        sessions of removed accounts are deleted. Returns the client ids disconnected."""
        accounts = tuple(accounts)
        if not accounts:
            raise BrokerConfigError("no broker accounts: a broker nobody can log in to is useless")
        text = render_amqtt_password_file(accounts)  # checks the usernames are unique
        broker = self._broker
        self._accounts = accounts
        if broker is None:
            return []
        write_file(self.password_file, text, private=True)
        dropped: list[str] = await broker.i24_reload(accounts)
        self._logger.warning(
            "embedded broker reloaded %d account(s)%s", len(accounts),
            f"; disconnected {', '.join(dropped)}" if dropped else "",
        )
        return dropped

    async def apply_accounts(self, accounts: Sequence[BrokerAccount]) -> None:
        """``reload``, for the ``Broker`` protocol."""
        await self.reload(accounts)

    async def stop(self) -> None:
        """Disconnect every client and close the listener."""
        broker, self._broker = self._broker, None
        if broker is None:
            return
        try:
            # amqtt's shutdown waits for every connection's reader, and on Python 3.11 a
            # reader inside asyncio.wait_for can swallow its cancellation and never finish:
            # bound the wait so a stop under load cannot hang (and silently drop traffic).
            async with asyncio.timeout(SHUTDOWN_TIMEOUT_S):
                await broker.shutdown()
        except TimeoutError:
            self._logger.warning("embedded broker shutdown took over %gs; closing anyway",
                                 SHUTDOWN_TIMEOUT_S)
        except Exception as exc:  # a failed shutdown must not mask the caller's own error
            self._logger.warning("embedded broker shutdown was not clean: %s", exc)

    async def __aenter__(self) -> EmbeddedBroker:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()


# --- running the embedded broker as its own OS process -------------------------------------


@dataclass(frozen=True, slots=True)
class _ProcessConfig:
    host: str
    port: int
    data_dir: Path
    accounts: tuple[BrokerAccount, ...]
    client_id_policy: ClientIdPolicy


def write_embedded_config_file(
    path: Path,
    accounts: Sequence[BrokerAccount],
    *,
    data_dir: Path,
    host: str = "127.0.0.1",
    port: int = 0,
    client_id_policy: ClientIdPolicy = "bound",
) -> Path:
    """Write the JSON config ``python -m i24net.broker.embedded`` reads (mode 0600: it holds
    the plaintext passwords)."""
    document = {
        "host": validate_host(host),
        "port": validate_port(port),
        "data_dir": str(data_dir),
        "client_id_policy": client_id_policy,
        "accounts": [a.to_dict() for a in accounts],
    }
    return write_file(Path(path), json.dumps(document, indent=2) + "\n", private=True)


def read_embedded_config_file(path: Path) -> _ProcessConfig:
    """Parse and validate a config written by ``write_embedded_config_file``."""
    try:
        document = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise BrokerConfigError(f"cannot read broker config {path}: {exc.strerror}") from exc
    except json.JSONDecodeError as exc:
        raise BrokerConfigError(f"broker config {path} is not valid JSON: {exc}") from exc
    if not isinstance(document, Mapping):
        raise BrokerConfigError(f"broker config {path} must hold a JSON object")
    allowed = {"host", "port", "data_dir", "accounts", "client_id_policy"}
    unknown = set(document) - allowed
    missing = {"data_dir", "accounts"} - set(document)
    if unknown or missing:
        raise BrokerConfigError(
            f"broker config {path}: unknown keys {sorted(unknown)}, missing keys {sorted(missing)}"
        )
    accounts = document["accounts"]
    if not isinstance(accounts, list):
        raise BrokerConfigError(f"broker config {path}: 'accounts' must be a list")
    policy = _check_policy(document.get("client_id_policy", "bound"))
    return _ProcessConfig(
        host=validate_host(document.get("host", "127.0.0.1")),
        port=validate_port(document.get("port", 0)),
        data_dir=Path(document["data_dir"]),
        accounts=tuple(BrokerAccount.from_dict(a) for a in accounts),
        client_id_policy=policy,
    )


async def _serve(config: _ProcessConfig, path: Path) -> None:
    stop = asyncio.Event()
    reload = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    loop.add_signal_handler(signal.SIGHUP, reload.set)
    broker = EmbeddedBroker(
        config.accounts,
        config.data_dir,
        host=config.host,
        port=config.port,
        client_id_policy=config.client_id_policy,
    )
    async with broker:
        print(f"ready {broker.host}:{broker.port}", flush=True)
        while not stop.is_set():
            stopping = asyncio.ensure_future(stop.wait())
            reloading = asyncio.ensure_future(reload.wait())
            await asyncio.wait({stopping, reloading}, return_when=asyncio.FIRST_COMPLETED)
            stopping.cancel()
            reloading.cancel()
            if reload.is_set():
                reload.clear()
                try:  # SIGHUP: the config file holds the new accounts
                    await broker.reload(read_embedded_config_file(path).accounts)
                except BrokerError as exc:
                    print(f"ERROR: reload refused, the accounts in use stay: {exc}",
                          file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m i24net.broker.embedded --config FILE.json``: serve until SIGTERM/SIGINT."""
    parser = argparse.ArgumentParser(
        prog="python -m i24net.broker.embedded",
        description="Run i24net's embedded MQTT broker (amqtt) until SIGTERM or SIGINT.",
    )
    parser.add_argument(
        "--config", required=True, type=Path, help="JSON: host, port, data_dir, accounts"
    )
    parser.add_argument("--log-level", default="WARNING", help="Python log level (default WARNING)")
    args = parser.parse_args(argv)
    configure_logging(args.log_level)
    try:
        config = read_embedded_config_file(args.config)
        asyncio.run(_serve(config, args.config))
    except BrokerError as exc:
        print(f"ERROR: {exc}", file=sys.stderr, flush=True)
        return 1
    return 0


class EmbeddedBrokerProcess(ProcessControl):
    """The embedded broker in a child process, controlled like ``MosquittoBroker``.

    Useful when the broker must be killable on its own (chaos drills) or when the caller's
    event loop should not also carry the broker. The port is chosen once and kept across
    restarts; amqtt keeps sessions in memory, so a restart starts with none.
    """

    def __init__(
        self,
        directory: Path,
        accounts: Sequence[BrokerAccount],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        client_id_policy: ClientIdPolicy = "bound",
        start_timeout: float = 20.0,
        stop_timeout: float = 5.0,
        logger: logging.Logger | None = None,
    ) -> None:
        self._directory = Path(directory)
        self._accounts = tuple(accounts)
        if not self._accounts:
            raise BrokerConfigError("no broker accounts: a broker nobody can log in to is useless")
        self._host = validate_host(host)
        self._port = validate_port(port)
        self._client_id_policy: ClientIdPolicy = _check_policy(client_id_policy)
        self._start_timeout = start_timeout
        self._stop_timeout = stop_timeout
        self._logger = logger or logging.getLogger("i24net.broker.embedded")
        self._process: BrokerProcess | None = None

    @property
    def host(self) -> str:
        return self._host

    @property
    def port(self) -> int:
        if not self._port:
            raise BrokerStartError("the embedded broker process has not been started yet")
        return self._port

    @property
    def accounts(self) -> tuple[BrokerAccount, ...]:
        """The accounts served (those of the last start or reload)."""
        return self._accounts

    @property
    def config_path(self) -> Path:
        return self._directory / "embedded.json"

    @property
    def log_path(self) -> Path:
        return self._directory / "embedded.log"

    def start(self) -> None:
        if self.running:
            return
        ensure_directory(self._directory)
        picked = not self._port
        for attempt in range(_PORT_RETRIES):
            if not self._port:
                self._port = pick_free_port(self._host)
            self._write_config()
            self._process = BrokerProcess(
                "embedded broker",
                [sys.executable, "-m", "i24net.broker.embedded", "--config", str(self.config_path)],
                self.log_path,
                host=self._host,
                ports=[self._port],
                ready_marker=b"ready ",
                start_timeout=self._start_timeout,
                stop_timeout=self._stop_timeout,
                logger=self._logger,
            )
            try:
                self._process.start()
                return
            except BrokerStartError as exc:
                if picked and "could not listen" in str(exc) and attempt + 1 < _PORT_RETRIES:
                    self._port = 0
                    continue
                raise

    def reload(self, accounts: Sequence[BrokerAccount]) -> None:
        """Rewrite the config with ``accounts`` and SIGHUP the child, which reloads them in
        place (``EmbeddedBroker.reload``: removed accounts are disconnected)."""
        if self._process is None or not self._process.running:
            raise BrokerStartError("the embedded broker process is not running; start it first")
        accounts = tuple(accounts)
        if not accounts:
            raise BrokerConfigError("no broker accounts: a broker nobody can log in to is useless")
        render_amqtt_password_file(accounts)  # the child would refuse duplicates: refuse here
        self._accounts = accounts
        self._write_config()
        self._process.signal(signal.SIGHUP)

    def _write_config(self) -> None:
        write_embedded_config_file(self.config_path, self._accounts, data_dir=self._directory,
                                   host=self._host, port=self._port,
                                   client_id_policy=self._client_id_policy)



if __name__ == "__main__":
    # Run the copy amqtt will import plugins from, not this __main__ duplicate of it.
    from i24net.broker.embedded import main as _main

    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(_main())
