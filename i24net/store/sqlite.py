"""The footing every SQLite store stands on: one connection, the pragmas, the schema check,
the commit discipline and SQLite errors in words. The durable half of the delivery guarantee.

Theory of operation: ``SqliteRouterStore`` (``i24net.store.router``) and ``SqliteNodeStore``
(``i24net.store.node``) implement the
``RouterStore`` and ``NodeStore`` protocols of ``i24net.core`` with the same semantics as
the memory stores (the tests run one behavioural suite over both). Each store owns one
connection to one file; every mutating method runs in its own ``BEGIN IMMEDIATE`` ...
``COMMIT`` and has committed before it returns, because the machines persist *before* they
acknowledge (a node stores an inbox item, then sends the receipt; it stores an outbox entry,
then tells the user the message was sent). Reads run in autocommit mode and fetch every row,
so no read snapshot outlives the call (a held snapshot would stop WAL checkpoints).

Group commit (``batch``): a daemon handles the frames waiting for it, or pops the frames it
may send, inside one ``batch``: each mutating method then runs as a savepoint of one
transaction (a failing one rolls back alone) and the batch commits once.

Durability (the fsync policy): ``journal_mode=WAL`` with ``synchronous=FULL`` (the default)
syncs the WAL to the disk at every commit, so a commit survives a power loss or a kernel
crash, not only a process crash; commands that write a store (``i24net publish`` into a
node's outbox) use it. The daemons open their stores with ``synchronous="NORMAL"`` (a
commit reaches the kernel's page cache: a killed process loses nothing, a power loss may)
and make their commits durable themselves with ``sync`` (an fsync of the WAL), on a thread,
before they publish or report anything those commits decided: one sync covers every commit
made before it started, so under load one sync serves many batches, and the event loop
never waits on the disk. ``tests/shell/test_power_loss.py`` drops every write not yet
synced and restarts the network: nothing acknowledged is lost.

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
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar, Self

import msgpack

from i24net.core.errors import ConfigError, I24Error

__all__ = ["SCHEMA_VERSION", "SqliteStore", "StoreError", "unpack_own", "upsert_sql"]

SCHEMA_VERSION = 1

# How long a writer waits for another writer's transaction (a CLI ``publish`` next to the
# daemon) before giving up. Transactions here last microseconds; five seconds means "stuck".
DEFAULT_BUSY_TIMEOUT_MS = 5_000

SYNCHRONOUS_MODES = ("NORMAL", "FULL")




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


def unpack_own(data: bytes) -> Any:
    # Our own file, written by ``pack``; what went in was already checked on the way in
    # (``wire.unpack`` with limits), so this is a plain decode. Non-str map keys are
    # allowed back so that whatever the memory store would hold round-trips here too.
    return msgpack.unpackb(data, raw=False, strict_map_key=False)


class SqliteStore:
    """One connection, the pragmas, the schema check and the commit discipline."""

    KIND: ClassVar[str]
    SCHEMA: ClassVar[tuple[str, ...]]
    VERSION: ClassVar[int] = SCHEMA_VERSION
    # version -> the statements that bring a store of that version to the next one
    MIGRATIONS: ClassVar[dict[int, tuple[str, ...]]] = {}

    def __init__(self, path: str | os.PathLike[str], *, readonly: bool = False,
                 synchronous: str = "FULL",
                 busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS) -> None:
        sync = synchronous.upper()
        if sync not in SYNCHRONOUS_MODES:
            raise ConfigError(f"synchronous must be NORMAL or FULL, not {synchronous!r}",
                              reason="config.store")
        self.path = Path(path)
        self.readonly = readonly
        self.synchronous = sync
        self._closed = False
        self._batching = False  # inside ``batch``: transactions are its savepoints
        self._wal_fd: int | None = None  # for ``sync``, under ``_sync_lock`` (a thread)
        self._sync_lock = threading.Lock()
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
        tables = self.rows("SELECT name FROM sqlite_master WHERE type = 'table'")
        if tables or self.readonly:
            self._check_version(tables)
            if not self.readonly:
                self._migrate()
            return
        with self.transaction("creating the schema") as conn:
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
            version = int(self.rows("SELECT version FROM schema_version")[0][0])
            if version >= self.VERSION:
                return
            with self.transaction(f"migrating the schema from v{version}") as conn:
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
        rows = self.rows("SELECT kind, version FROM schema_version")
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
    def batch(self, doing: str = "committing a batch") -> Iterator[None]:
        """Group commit: every ``transaction`` inside is a savepoint of one transaction,
        committed on exit (one sync of the WAL); a body that raises rolls the whole batch
        back. Nested batches join the outer one."""
        if self._batching:
            yield
            return
        with self.transaction(doing):
            self._batching = True
            try:
                yield
            finally:
                self._batching = False

    @contextmanager
    def transaction(self, doing: str) -> Iterator[sqlite3.Connection]:
        """One write transaction, committed on exit (rolled back if the body raises);
        inside a ``batch``, a savepoint of it."""
        if self.readonly:
            raise StoreError(f"{self.path} is open read-only; {doing} needs the daemon's "
                             "writable store", reason="store.readonly")
        conn = self._conn
        if self._batching:
            try:
                conn.execute("SAVEPOINT step")
                try:
                    yield conn
                except BaseException:
                    conn.execute("ROLLBACK TO step")
                    raise
                finally:
                    conn.execute("RELEASE step")
            except sqlite3.Error as exc:
                raise self._error(exc, doing) from exc
            return
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

    @contextmanager
    def snapshot(self, doing: str) -> Iterator[sqlite3.Connection]:
        """One consistent read snapshot for several SELECTs, ended on exit (inside a
        ``batch``, the batch's own transaction is that snapshot)."""
        conn = self._conn
        if self._batching:
            yield conn
            return
        try:
            conn.execute("BEGIN")
            try:
                yield conn
            finally:
                if conn.in_transaction:
                    conn.execute("COMMIT")  # read-only: ends the snapshot
        except sqlite3.Error as exc:
            raise self._error(exc, doing) from exc

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        try:
            return self._conn.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise self._error(exc, "reading") from exc

    @property
    def changes(self) -> int:
        """Rows changed through this connection so far (a sync is needed only after)."""
        return self._conn.total_changes

    def sync(self) -> None:
        """Make every commit so far durable: fsync the WAL file, where a WAL-mode commit
        lives until a checkpoint copies it into the database (SQLite syncs the WAL before a
        checkpoint and the database after it). Blocking: a daemon calls it on a thread.
        Safe beside the connection's own writes; a WAL replaced since the last call (a new
        inode) is opened again."""
        wal = Path(f"{self.path}-wal")
        with self._sync_lock:
            if self._closed:
                return  # closed: the connection's close checkpointed and synced
            try:
                st = os.stat(wal)
            except FileNotFoundError:
                return  # nothing written since the last checkpoint removed it
            fd = self._wal_fd
            if fd is None or os.fstat(fd).st_ino != st.st_ino:
                if fd is not None:
                    os.close(fd)
                fd = self._wal_fd = os.open(wal, os.O_RDONLY | os.O_CLOEXEC)
            os.fsync(fd)

    # -- lifetime -------------------------------------------------------------------------
    def close(self) -> None:
        """Close the connection (idempotent). Everything was already committed."""
        if not self._closed:
            self._closed = True
            self._conn.close()
            with self._sync_lock:
                if self._wal_fd is not None:
                    os.close(self._wal_fd)
                    self._wal_fd = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        mode = "ro" if self.readonly else self.synchronous
        return f"{type(self).__name__}({str(self.path)!r}, {mode})"


def upsert_sql(table: str, columns: Sequence[str], key: str) -> str:
    # Upsert, not INSERT OR REPLACE: the row keeps its rowid, so "rowid order" stays "first
    # put order", which is the memory store's dict order. Table and column names are ours.
    names = ", ".join(columns)
    marks = ", ".join("?" * len(columns))
    updates = ", ".join(f"{c} = excluded.{c}" for c in columns if c != key)
    return (f"INSERT INTO {table} ({names}) VALUES ({marks}) "
            f"ON CONFLICT ({key}) DO UPDATE SET {updates}")


