"""SQLite stores for the router and the node: the durable half of the delivery guarantee.

Theory of operation: ``SqliteRouterStore`` and ``SqliteNodeStore`` implement the
``RouterStore`` and ``NodeStore`` protocols of ``i24net.core`` with the same semantics as
the memory stores (the tests run one behavioural suite over both). Each store owns one
connection to one file; every mutating method runs in its own ``BEGIN IMMEDIATE`` ...
``COMMIT`` and has committed before it returns, because the machines persist *before* they
acknowledge (a node stores an inbox item, then sends the receipt; it stores an outbox entry,
then tells the user the message was sent). Reads run in autocommit mode and fetch every row,
so no read snapshot outlives the call (a held snapshot would stop WAL checkpoints).

Durability: ``journal_mode=WAL`` with ``synchronous=NORMAL`` (the default) makes a commit
durable across a *process* crash, SIGKILL included: the WAL frames are written to the file
(the kernel's page cache) before ``COMMIT`` returns, and the kernel keeps them when the
process dies. That is the failure the delivery guarantee is tested against. Only a power
loss or kernel crash can roll back the last few commits (the file stays consistent).
``synchronous="FULL"`` adds an fsync of the WAL per commit to survive that too, at the cost
of one disk flush per message.

Concurrency: the daemon owns the file; WAL lets a CLI read it at the same time
(``readonly=True`` opens ``file:...?mode=ro``), and a second writer (``i24net publish``
adding to a running node's outbox) waits up to ``busy_timeout_ms`` for the write lock.

Schema: created on first open, recorded in ``schema_version`` (store kind and version). A
file written by a newer i24net is refused rather than misread; an older one is migrated by
its writer (``MIGRATIONS``, one version a step) and refused by readers until then. The node
store's v2 adds the router's decision time to the outbox (``decided_ms``) and the
``handovers`` log, which records every message handed to the application, a repeat
included, for consumers that follow it by sequence number. Changing ``OutboxEntry``,
``InboxItem`` or ``PriorMessage`` means a new schema version and a migration here. Lists,
sets and maps are stored as msgpack (``wire.pack``); sets are stored sorted.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar, NamedTuple, Self

import msgpack

from i24net.core.errors import ConfigError, I24Error
from i24net.core.labels import TLP, Handling, HandlingCodes, Label
from i24net.core.node import OUTBOX_FINAL, InboxItem, OutboxEntry
from i24net.core.policy import PriorMessage
from i24net.core.wire import pack

__all__ = ["SCHEMA_VERSION", "Handover", "SqliteNodeStore", "SqliteRouterStore", "StoreError"]

SCHEMA_VERSION = 1

# How long a writer waits for another writer's transaction (a CLI ``publish`` next to the
# daemon) before giving up. Transactions here last microseconds; five seconds means "stuck".
DEFAULT_BUSY_TIMEOUT_MS = 5_000

SYNCHRONOUS_MODES = ("NORMAL", "FULL")

# Outbox states every status view shows, even at zero (the final ones come from the node).
OUTBOX_STATES = ("queued", "accepted", *OUTBOX_FINAL)


class Handover(NamedTuple):
    """One message handed to the node's application (``SqliteNodeStore.handovers``)."""

    seq: int
    msg_id: bytes
    sender: str
    subject: str
    received_ms: int


class StoreError(I24Error):
    """The state database could not be opened, read or written; the message names the file
    and what to check (another process holding it, the disk, the i24net version)."""

    default_reason = "store"


# SQLite primary result codes -> (reason, what a person should check). Python 3.11 exposes
# the code's name on the exception; extended codes (SQLITE_BUSY_SNAPSHOT) match by prefix.
_SQLITE_ERRORS: dict[str, tuple[str, str]] = {
    "SQLITE_BUSY": ("store.busy", "another process holds the write lock; is a second "
                    "daemon using this file?"),
    "SQLITE_LOCKED": ("store.busy", "the file is locked"),
    "SQLITE_READONLY": ("store.readonly", "the file or its directory is not writable"),
    "SQLITE_CANTOPEN": ("store.open", "the file cannot be opened; check that the directory "
                        "exists and is accessible"),
    "SQLITE_FULL": ("store.full", "the disk is full"),
    "SQLITE_IOERR": ("store.io", "the disk reported an I/O error"),
    "SQLITE_NOTADB": ("store.corrupt", "the file is not an SQLite database"),
    "SQLITE_CORRUPT": ("store.corrupt", "the database file is damaged"),
    "SQLITE_PERM": ("store.open", "permission denied"),
}


def _unpack(data: bytes) -> Any:
    # Our own file, written by ``pack``; what went in was already checked on the way in
    # (``wire.unpack`` with limits), so this is a plain decode. Non-str map keys are
    # allowed back so that whatever the memory store would hold round-trips here too.
    return msgpack.unpackb(data, raw=False, strict_map_key=False)


class _SqliteStore:
    """One connection, the pragmas, the schema check and the commit discipline."""

    KIND: ClassVar[str]
    SCHEMA: ClassVar[tuple[str, ...]]
    VERSION: ClassVar[int] = SCHEMA_VERSION
    # version -> the statements that bring a store of that version to the next one
    MIGRATIONS: ClassVar[dict[int, tuple[str, ...]]] = {}

    def __init__(self, path: str | os.PathLike[str], *, readonly: bool = False,
                 synchronous: str = "NORMAL",
                 busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS) -> None:
        sync = synchronous.upper()
        if sync not in SYNCHRONOUS_MODES:
            raise ConfigError(f"synchronous must be NORMAL or FULL, not {synchronous!r}",
                              reason="config.store")
        self.path = Path(path)
        self.readonly = readonly
        self.synchronous = sync
        self._closed = False
        self._conn = self._connect(busy_timeout_ms)
        try:
            self._setup()
        except BaseException:
            self._conn.close()
            self._closed = True
            raise

    # -- opening --------------------------------------------------------------------------
    def _connect(self, busy_timeout_ms: int) -> sqlite3.Connection:
        try:
            if self.readonly:
                if not self.path.exists():
                    raise StoreError(f"there is no {self.KIND} store at {self.path} (the "
                                     f"{self.KIND} creates it when it first starts)",
                                     reason="store.open")
                # A URI, so SQLite neither creates the file nor takes the write lock.
                uri = self.path.absolute().as_uri() + "?mode=ro"
                conn = sqlite3.connect(uri, uri=True, isolation_level=None,
                                       timeout=busy_timeout_ms / 1000)
            else:
                self._create_private()
                # isolation_level=None: no implicit transactions; ``_tx`` states them.
                conn = sqlite3.connect(self.path, isolation_level=None,
                                       timeout=busy_timeout_ms / 1000)
        except sqlite3.Error as exc:
            raise self._error(exc, "opening") from exc
        except OSError as exc:
            raise StoreError(f"cannot create {self.path}: {exc.strerror}; check that the "
                             "directory exists and is writable", reason="store.open") from exc
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
            if self.readonly:
                conn.execute("PRAGMA query_only = ON")
            else:
                mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                if str(mode).lower() != "wal":
                    raise StoreError(f"{self.path}: SQLite could not switch to WAL mode "
                                     f"(got {mode!r}); use a local file system",
                                     reason="store.open")
                conn.execute(f"PRAGMA synchronous = {self.synchronous}")
        except sqlite3.Error as exc:
            conn.close()
            raise self._error(exc, "opening") from exc
        except StoreError:
            conn.close()
            raise
        return conn

    def _create_private(self) -> None:
        # The node's inbox holds decrypted bodies: create the file 0600 ourselves, SQLite
        # then gives its -wal and -shm files the same mode.
        if not self.path.exists():
            os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600))

    def _setup(self) -> None:
        # Check with a plain read first: opening an existing store (a CLI beside a busy
        # daemon) must not wait for the write lock.
        tables = self._rows("SELECT name FROM sqlite_master WHERE type = 'table'")
        if tables or self.readonly:
            self._check_version(tables)
            if not self.readonly:
                self._migrate()
            return
        with self._tx("creating the schema") as conn:
            # Again under the lock: another process may have created it meanwhile.
            tables = conn.execute("SELECT name FROM sqlite_master "
                                  "WHERE type = 'table'").fetchall()
            if not tables:
                for statement in self.SCHEMA:
                    conn.execute(statement)
                conn.execute("CREATE TABLE schema_version (kind TEXT NOT NULL, "
                             "version INTEGER NOT NULL)")
                conn.execute("INSERT INTO schema_version (kind, version) VALUES (?, ?)",
                             (self.KIND, self.VERSION))
            else:
                self._check_version(tables)
        self._migrate()

    def _migrate(self) -> None:
        """Bring an older store up to ``VERSION``, one step per transaction."""
        while True:
            version = int(self._rows("SELECT version FROM schema_version")[0][0])
            if version >= self.VERSION:
                return
            with self._tx(f"migrating the schema from v{version}") as conn:
                # under the write lock: another process may have migrated it meanwhile
                if conn.execute("SELECT version FROM schema_version").fetchone()[0] \
                        != version:
                    continue
                for statement in self.MIGRATIONS[version]:
                    conn.execute(statement)
                conn.execute("UPDATE schema_version SET version = ?", (version + 1,))

    def _check_version(self, tables: list[Any]) -> None:
        if "schema_version" not in {t[0] for t in tables}:
            hint = ("start the daemon once to create it" if not tables
                    else "it was not written by i24net")
            raise StoreError(f"{self.path} is not an i24net {self.KIND} store ({hint})",
                             reason="store.schema")
        rows = self._rows("SELECT kind, version FROM schema_version")
        if len(rows) != 1:
            raise StoreError(f"{self.path}: the schema_version table is damaged",
                             reason="store.schema")
        kind, version = rows[0]
        if kind != self.KIND:
            raise StoreError(f"{self.path} is a {kind} store, not a {self.KIND} store",
                             reason="store.schema")
        if version > self.VERSION:
            raise StoreError(f"{self.path} was written by a newer i24net ({self.KIND} store "
                             f"schema v{version}; this version reads v{self.VERSION}): "
                             "upgrade i24net", reason="store.schema")
        if version < self.VERSION and any(v not in self.MIGRATIONS
                                          for v in range(version, self.VERSION)):
            raise StoreError(f"{self.path} has {self.KIND} store schema v{version}, which "
                             f"this version cannot migrate to v{self.VERSION}",
                             reason="store.schema")
        if version < self.VERSION and self.readonly:
            raise StoreError(f"{self.path} has {self.KIND} store schema v{version}: start "
                             f"its {self.KIND} once to migrate it to v{self.VERSION}",
                             reason="store.schema")

    # -- the boundary: every SQLite call goes through these --------------------------------
    def _error(self, exc: sqlite3.Error, doing: str) -> StoreError:
        name = getattr(exc, "sqlite_errorname", "") or ""
        for prefix, (reason, hint) in _SQLITE_ERRORS.items():
            if name == prefix or name.startswith(prefix + "_"):
                return StoreError(f"{self.path}: {doing} failed: {hint} ({exc})",
                                  reason=reason)
        if self._closed or isinstance(exc, sqlite3.ProgrammingError):
            return StoreError(f"{self.path}: {doing} failed: the store is closed ({exc})",
                              reason="store.closed")
        return StoreError(f"{self.path}: {doing} failed: {exc}", reason="store")

    @contextmanager
    def _tx(self, doing: str) -> Iterator[sqlite3.Connection]:
        """One write transaction, committed on exit (rolled back if the body raises)."""
        if self.readonly:
            raise StoreError(f"{self.path} is open read-only; {doing} needs the daemon's "
                             "writable store", reason="store.readonly")
        conn = self._conn
        try:
            # IMMEDIATE takes the write lock up front, so a busy file waits here (under
            # busy_timeout) instead of failing half-way through the transaction.
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise self._error(exc, doing) from exc

    def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        try:
            return self._conn.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise self._error(exc, "reading") from exc

    # -- lifetime -------------------------------------------------------------------------
    def close(self) -> None:
        """Close the connection (idempotent). Everything was already committed."""
        if not self._closed:
            self._closed = True
            self._conn.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        mode = "ro" if self.readonly else self.synchronous
        return f"{type(self).__name__}({str(self.path)!r}, {mode})"


def _upsert(table: str, columns: Sequence[str], key: str) -> str:
    # Upsert, not INSERT OR REPLACE: the row keeps its rowid, so "rowid order" stays "first
    # put order", which is the memory store's dict order. Table and column names are ours.
    names = ", ".join(columns)
    marks = ", ".join("?" * len(columns))
    updates = ", ".join(f"{c} = excluded.{c}" for c in columns if c != key)
    return (f"INSERT INTO {table} ({names}) VALUES ({marks}) "
            f"ON CONFLICT ({key}) DO UPDATE SET {updates}")


# -- router --------------------------------------------------------------------------------

_MESSAGE_COLUMNS = ("id", "sender", "recipients", "level", "caveats", "handling", "h3", "tlp",
                    "digest", "expires_ms", "envelope")


class SqliteRouterStore(_SqliteStore):
    """``RouterStore`` on SQLite: routed messages, sequence counters, delivery log, receipts.

    Sequence counters are never pruned: a recipient's numbering must continue across
    restarts and expiries, or it would see a restart as a run of duplicates.
    """

    KIND = "router"
    SCHEMA = (
        # Small columns first: the envelope (up to ~1.4 MB) spills to overflow pages.
        """CREATE TABLE messages (
            id BLOB PRIMARY KEY,
            sender TEXT NOT NULL,
            recipients BLOB NOT NULL,  -- msgpack list, sorted
            level TEXT NOT NULL,
            caveats BLOB NOT NULL,     -- msgpack list, sorted
            handling BLOB NOT NULL,    -- msgpack list of code names, sorted
            h3 TEXT NOT NULL,
            tlp TEXT,                  -- NULL: no TLP marking
            digest BLOB NOT NULL,
            expires_ms INTEGER NOT NULL,
            envelope BLOB NOT NULL)""",
        "CREATE INDEX messages_by_expiry ON messages (expires_ms)",
        """CREATE TABLE seqs (
            recipient TEXT PRIMARY KEY,
            last INTEGER NOT NULL) WITHOUT ROWID""",
        # One full delivery frame per (recipient, seq), as the protocol asks. A cheaper
        # layout: the frame is pack([magic, version, stamp doc, signature, envelope]) and the
        # envelope is already in ``messages``, so storing only the stamp doc and signature
        # (~200 bytes) and re-packing on resend would save one envelope copy per recipient
        # (a 1 MB message to 100 agencies logs 100 MB here). Not done while frames are cheap.
        """CREATE TABLE deliveries (
            recipient TEXT NOT NULL,
            seq INTEGER NOT NULL,
            msg_id BLOB NOT NULL,
            frame BLOB NOT NULL,
            PRIMARY KEY (recipient, seq))""",
        "CREATE INDEX deliveries_by_message ON deliveries (msg_id)",
        """CREATE TABLE receipts (
            msg_id BLOB NOT NULL,
            recipient TEXT NOT NULL,
            PRIMARY KEY (msg_id, recipient)) WITHOUT ROWID""",
    )
    _RECORD = _upsert("messages", _MESSAGE_COLUMNS, "id")
    _SELECT = f"SELECT {', '.join(_MESSAGE_COLUMNS[:-1])} FROM messages WHERE id = ?"

    def prior(self, msg_id: bytes) -> PriorMessage | None:
        rows = self._rows(self._SELECT, (msg_id,))
        if not rows:
            return None
        mid, sender, recipients, level, caveats, handling, h3, tlp, digest, _ = rows[0]
        return PriorMessage(
            mid, sender, frozenset(_unpack(recipients)),
            Label(level, frozenset(_unpack(caveats))),
            HandlingCodes(frozenset(Handling(c) for c in _unpack(handling)), h3),
            None if tlp is None else TLP(tlp), digest)

    def record(self, prior: PriorMessage, envelope: bytes, expires_ms: int) -> None:
        row = (prior.id, prior.sender, pack(sorted(prior.recipients)), prior.label.level,
               pack(sorted(prior.label.caveats)), pack(prior.handling.names()),
               prior.handling.h3_text, None if prior.tlp is None else prior.tlp.value,
               prior.digest, expires_ms, envelope)
        with self._tx("recording a message") as conn:
            conn.execute(self._RECORD, row)

    def envelope(self, msg_id: bytes) -> bytes | None:
        rows = self._rows("SELECT envelope FROM messages WHERE id = ?", (msg_id,))
        return rows[0][0] if rows else None

    def next_seq(self, recipient: str) -> int:
        with self._tx("numbering a delivery") as conn:
            row = conn.execute(
                "INSERT INTO seqs (recipient, last) VALUES (?, 1) ON CONFLICT (recipient) "
                "DO UPDATE SET last = last + 1 RETURNING last", (recipient,)).fetchone()
        return int(row[0])

    def log_delivery(self, recipient: str, seq: int, msg_id: bytes, frame: bytes) -> None:
        with self._tx("logging a delivery") as conn:
            conn.execute("INSERT OR REPLACE INTO deliveries (recipient, seq, msg_id, frame) "
                         "VALUES (?, ?, ?, ?)", (recipient, seq, msg_id, frame))

    def logged(self, recipient: str, first: int, last: int) -> list[bytes]:
        rows = self._rows("SELECT frame FROM deliveries WHERE recipient = ? "
                          "AND seq BETWEEN ? AND ? ORDER BY seq", (recipient, first, last))
        return [r[0] for r in rows]

    def add_receipt(self, msg_id: bytes, recipient: str) -> None:
        with self._tx("recording a receipt") as conn:
            conn.execute("INSERT OR IGNORE INTO receipts (msg_id, recipient) VALUES (?, ?)",
                         (msg_id, recipient))

    def receipted(self, msg_id: bytes) -> set[str]:
        return {r[0] for r in self._rows("SELECT recipient FROM receipts WHERE msg_id = ?",
                                         (msg_id,))}

    def prune(self, now_ms: int) -> int:
        """Drop messages that expired before ``now_ms`` with their receipts and delivery log.

        (``MemoryRouterStore.prune`` keeps its delivery log; see the tests.)
        """
        expired = "SELECT id FROM messages WHERE expires_ms < ?"
        with self._tx("pruning expired messages") as conn:
            conn.execute(f"DELETE FROM receipts WHERE msg_id IN ({expired})", (now_ms,))
            conn.execute(f"DELETE FROM deliveries WHERE msg_id IN ({expired})", (now_ms,))
            n = conn.execute("DELETE FROM messages WHERE expires_ms < ?", (now_ms,)).rowcount
        return int(n)


# -- node ----------------------------------------------------------------------------------

# Column order puts the small, filtered columns ahead of the large ones (raw, text, data).
_OUTBOX_COLUMNS = ("msg_id", "kind", "precedence", "recipients", "created_ms", "expires_ms",
                   "state", "reason", "receipts", "attempts", "next_ms", "subject", "active",
                   "raw", "decided_ms")
_INBOX_COLUMNS = ("msg_id", "sender", "kind", "label", "precedence", "state", "created_ms",
                  "received_ms", "ref", "subject", "text", "data")


def _outbox_row(e: OutboxEntry) -> tuple[Any, ...]:
    return (e.msg_id, e.kind, e.precedence, pack(list(e.recipients)), e.created_ms,
            e.expires_ms, e.state, e.reason, pack(e.receipts), e.attempts, e.next_ms,
            e.subject, int(not e.final), e.raw, e.decided_ms)


def _outbox_entry(row: Sequence[Any]) -> OutboxEntry:
    (msg_id, kind, precedence, recipients, created_ms, expires_ms, state, reason, receipts,
     attempts, next_ms, subject, _, raw, decided_ms) = row
    return OutboxEntry(msg_id, raw, kind, precedence, tuple(_unpack(recipients)), created_ms,
                       expires_ms, state, reason, _unpack(receipts), attempts, next_ms,
                       subject, decided_ms)


def _inbox_row(i: InboxItem) -> tuple[Any, ...]:
    return (i.msg_id, i.sender, i.kind, i.label, i.precedence, i.state, i.created_ms,
            i.received_ms, i.ref, i.subject, i.text, pack(i.data))


def _inbox_item(row: Sequence[Any]) -> InboxItem:
    (msg_id, sender, kind, label, precedence, state, created_ms, received_ms, ref, subject,
     text, data) = row
    return InboxItem(msg_id, sender, kind, label, precedence, subject, text, _unpack(data),
                     created_ms, received_ms, ref, state)


class SqliteNodeStore(_SqliteStore):
    """``NodeStore`` on SQLite, plus the listings the CLI and status views read."""

    KIND = "node"
    SCHEMA = (
        """CREATE TABLE outbox (
            msg_id BLOB PRIMARY KEY,
            kind TEXT NOT NULL,
            precedence INTEGER NOT NULL,
            recipients BLOB NOT NULL,   -- msgpack list, in the header's order
            created_ms INTEGER NOT NULL,
            expires_ms INTEGER NOT NULL,
            state TEXT NOT NULL,
            reason TEXT NOT NULL,
            receipts BLOB NOT NULL,     -- msgpack map agency -> status
            attempts INTEGER NOT NULL,
            next_ms INTEGER NOT NULL,
            subject TEXT NOT NULL,
            active INTEGER NOT NULL,    -- not OutboxEntry.final, so the node alone says
                                        -- which states are final
            raw BLOB NOT NULL,
            decided_ms INTEGER NOT NULL DEFAULT 0)  -- the router's report time; 0: none""",
        # outbox_active (every tick) reads active = 1; counts() groups by state.
        "CREATE INDEX outbox_by_active ON outbox (active, state)",
        """CREATE TABLE inbox (
            msg_id BLOB PRIMARY KEY,
            sender TEXT NOT NULL,
            kind TEXT NOT NULL,
            label TEXT NOT NULL,
            precedence INTEGER NOT NULL,
            state TEXT NOT NULL,
            created_ms INTEGER NOT NULL,
            received_ms INTEGER NOT NULL,
            ref BLOB,                   -- NULL: no reference
            subject TEXT NOT NULL,
            text TEXT NOT NULL,
            data BLOB NOT NULL)         -- msgpack map""",
        "CREATE INDEX inbox_by_received ON inbox (received_ms)",
        "CREATE INDEX inbox_by_state ON inbox (state)",
        """CREATE TABLE seqs (
            kid BLOB PRIMARY KEY,
            last INTEGER NOT NULL,
            missing BLOB NOT NULL) WITHOUT ROWID  -- msgpack list, sorted""",
        # Every hand-over of a message to the application, in order, duplicates included
        # (the inbox keeps one row per message): what an application consumer follows.
        """CREATE TABLE handovers (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            msg_id BLOB NOT NULL,
            sender TEXT NOT NULL,
            subject TEXT NOT NULL,
            received_ms INTEGER NOT NULL)""",
    )
    VERSION = 2
    MIGRATIONS: ClassVar[dict[int, tuple[str, ...]]] = {1: (
        "ALTER TABLE outbox ADD COLUMN decided_ms INTEGER NOT NULL DEFAULT 0", """CREATE TABLE handovers (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            msg_id BLOB NOT NULL,
            sender TEXT NOT NULL,
            subject TEXT NOT NULL,
            received_ms INTEGER NOT NULL)""",)}
    _OUTBOX_PUT = _upsert("outbox", _OUTBOX_COLUMNS, "msg_id")
    _OUTBOX_SELECT = f"SELECT {', '.join(_OUTBOX_COLUMNS)} FROM outbox"
    _INBOX_PUT = _upsert("inbox", _INBOX_COLUMNS, "msg_id")
    _INBOX_SELECT = f"SELECT {', '.join(_INBOX_COLUMNS)} FROM inbox"

    # -- outbox ---------------------------------------------------------------------------
    def outbox_put(self, entry: OutboxEntry) -> None:
        with self._tx("saving an outbox entry") as conn:
            conn.execute(self._OUTBOX_PUT, _outbox_row(entry))

    def outbox_get(self, msg_id: bytes) -> OutboxEntry | None:
        rows = self._rows(f"{self._OUTBOX_SELECT} WHERE msg_id = ?", (msg_id,))
        return _outbox_entry(rows[0]) if rows else None

    def outbox_active(self) -> list[OutboxEntry]:
        """Entries not in a final state, in the order they were first stored."""
        rows = self._rows(f"{self._OUTBOX_SELECT} WHERE active = 1 ORDER BY rowid")
        return [_outbox_entry(r) for r in rows]

    def outbox_list(self, limit: int | None = 50) -> list[OutboxEntry]:
        """The most recently submitted entries first, any state; ``limit=None`` for all."""
        rows = self._rows(f"{self._OUTBOX_SELECT} ORDER BY rowid DESC LIMIT ?",
                          (-1 if limit is None else max(limit, 0),))
        return [_outbox_entry(r) for r in rows]

    # -- inbox ----------------------------------------------------------------------------
    def inbox_has(self, msg_id: bytes) -> bool:
        return bool(self._rows("SELECT 1 FROM inbox WHERE msg_id = ?", (msg_id,)))

    def inbox_put(self, item: InboxItem) -> None:
        """Store the item and log its hand-over, in one transaction."""
        with self._tx("saving an inbox item") as conn:
            conn.execute(self._INBOX_PUT, _inbox_row(item))
            conn.execute("INSERT INTO handovers (msg_id, sender, subject, received_ms) "
                         "VALUES (?, ?, ?, ?)",
                         (item.msg_id, item.sender, item.subject, item.received_ms))

    def handovers(self, after: int = 0, limit: int = 1000) -> list[Handover]:
        """Hand-overs to the application with a sequence number above ``after``, oldest
        first: a consumer keeps the last ``seq`` it saw and asks again from there."""
        rows = self._rows("SELECT seq, msg_id, sender, subject, received_ms FROM handovers "
                          "WHERE seq > ? ORDER BY seq LIMIT ?", (after, max(limit, 0)))
        return [Handover(*r) for r in rows]

    def inbox_get(self, msg_id: bytes) -> InboxItem | None:
        rows = self._rows(f"{self._INBOX_SELECT} WHERE msg_id = ?", (msg_id,))
        return _inbox_item(rows[0]) if rows else None

    def inbox_set_state(self, msg_id: bytes, state: str) -> None:
        """Change an item's state; an unknown id is ignored (as in the memory store)."""
        with self._tx("updating an inbox item") as conn:
            conn.execute("UPDATE inbox SET state = ? WHERE msg_id = ?", (state, msg_id))

    def inbox_list(self, limit: int | None = 50, since_ms: int = 0,
                   kinds: Iterable[str] | None = None) -> list[InboxItem]:
        """Items received at or after ``since_ms``, newest first, optionally of some kinds."""
        sql = f"{self._INBOX_SELECT} WHERE received_ms >= ?"
        params: list[Any] = [since_ms]
        if kinds is not None:
            wanted = sorted(set(kinds))
            if not wanted:
                return []
            sql += f" AND kind IN ({', '.join('?' * len(wanted))})"
            params += wanted
        sql += " ORDER BY received_ms DESC, rowid DESC LIMIT ?"
        params.append(-1 if limit is None else max(limit, 0))
        return [_inbox_item(r) for r in self._rows(sql, params)]

    # -- sequence numbers -----------------------------------------------------------------
    def seq_get(self, router_kid: bytes) -> tuple[int, set[int]]:
        rows = self._rows("SELECT last, missing FROM seqs WHERE kid = ?", (router_kid,))
        if not rows:
            return 0, set()
        return int(rows[0][0]), set(_unpack(rows[0][1]))

    def seq_put(self, router_kid: bytes, last: int, missing: set[int]) -> None:
        with self._tx("saving sequence numbers") as conn:
            conn.execute("INSERT INTO seqs (kid, last, missing) VALUES (?, ?, ?) "
                         "ON CONFLICT (kid) DO UPDATE SET last = excluded.last, "
                         "missing = excluded.missing",
                         (router_kid, last, pack(sorted(missing))))

    # -- status ---------------------------------------------------------------------------
    def counts(self) -> dict[str, int]:
        """``inbox.total``, ``inbox.<state>``, ``outbox.total``, ``outbox.active`` and
        ``outbox.<state>``; ``inbox.new`` and the usual outbox states are always present."""
        out: dict[str, int] = {"inbox.total": 0, "inbox.new": 0, "outbox.total": 0,
                               "outbox.active": 0}
        out.update({f"outbox.{s}": 0 for s in OUTBOX_STATES})
        for state, n in self._rows("SELECT state, count(*) FROM inbox GROUP BY state"):
            out[f"inbox.{state}"] = n
            out["inbox.total"] += n
        for active, state, n in self._rows("SELECT active, state, count(*) FROM outbox "
                                           "GROUP BY active, state"):
            out[f"outbox.{state}"] = out.get(f"outbox.{state}", 0) + n
            out["outbox.total"] += n
            out["outbox.active"] += n if active else 0
        return out
