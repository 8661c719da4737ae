"""``RouterStore`` on SQLite (``state/router.sqlite``, one file per router shard): routed
messages, sequence counters, the delivery log and receipts. The commit discipline, the schema
check and the durability argument are ``i24net.store.sqlite``'s."""

from __future__ import annotations

import os

from i24net.core.labels import TLP, Handling, HandlingCodes, Label
from i24net.core.policy import PriorMessage
from i24net.core.wire import pack

from .sqlite import DEFAULT_BUSY_TIMEOUT_MS, SqliteStore, unpack_own, upsert_sql

__all__ = ["SqliteRouterStore"]

_MESSAGE_COLUMNS = ("id", "sender", "recipients", "level", "caveats", "handling", "h3", "tlp",
                    "digest", "expires_ms", "envelope")


class SqliteRouterStore(SqliteStore):
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
    def __init__(self, path: str | os.PathLike[str], *, readonly: bool = False,
                 synchronous: str = "FULL",
                 busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS) -> None:
        super().__init__(path, readonly=readonly, synchronous=synchronous,
                         busy_timeout_ms=busy_timeout_ms)
        # the counters next_seq moved since take_numbered last took them
        self._numbered: dict[str, int] = {}

    _RECORD = upsert_sql("messages", _MESSAGE_COLUMNS, "id")
    _SELECT = f"SELECT {', '.join(_MESSAGE_COLUMNS[:-1])} FROM messages WHERE id = ?"

    def prior(self, msg_id: bytes) -> PriorMessage | None:
        rows = self.rows(self._SELECT, (msg_id,))
        if not rows:
            return None
        mid, sender, recipients, level, caveats, handling, h3, tlp, digest, _ = rows[0]
        return PriorMessage(
            mid, sender, frozenset(unpack_own(recipients)),
            Label(level, frozenset(unpack_own(caveats))),
            HandlingCodes(frozenset(Handling(c) for c in unpack_own(handling)), h3),
            None if tlp is None else TLP(tlp), digest)

    def record(self, prior: PriorMessage, envelope: bytes, expires_ms: int) -> None:
        row = (prior.id, prior.sender, pack(sorted(prior.recipients)), prior.label.level,
               pack(sorted(prior.label.caveats)), pack(prior.handling.names()),
               prior.handling.h3_text, None if prior.tlp is None else prior.tlp.value,
               prior.digest, expires_ms, envelope)
        with self.transaction("recording a message") as conn:
            conn.execute(self._RECORD, row)

    def envelope(self, msg_id: bytes) -> bytes | None:
        rows = self.rows("SELECT envelope FROM messages WHERE id = ?", (msg_id,))
        return rows[0][0] if rows else None

    def next_seq(self, recipient: str) -> int:
        with self.transaction("numbering a delivery") as conn:
            row = conn.execute(
                "INSERT INTO seqs (recipient, last) VALUES (?, 1) ON CONFLICT (recipient) "
                "DO UPDATE SET last = last + 1 RETURNING last", (recipient,)).fetchone()
        n = int(row[0])
        self._numbered[recipient] = n
        return n

    def take_numbered(self) -> dict[str, int]:
        """Each recipient whose counter moved since the last call, with its last number
        (a number of a batch that rolled back included: a copy elsewhere must never be
        behind, and being ahead only skips numbers)."""
        out = dict(self._numbered)
        self._numbered.clear()
        return out

    def raise_seqs(self, lasts: dict[str, int]) -> None:
        """Raise each recipient's counter to at least ``lasts[recipient]`` (a copy of the
        counters kept elsewhere, taken when this store starts serving a shard)."""
        with self.transaction("raising sequence counters") as conn:
            conn.executemany(
                "INSERT INTO seqs (recipient, last) VALUES (?, ?) ON CONFLICT (recipient) "
                "DO UPDATE SET last = MAX(last, excluded.last)", sorted(lasts.items()))

    def seq(self, recipient: str) -> int:
        """The last number given to ``recipient``'s deliveries (0: none yet)."""
        rows = self.rows("SELECT last FROM seqs WHERE recipient = ?", (recipient,))
        return int(rows[0][0]) if rows else 0

    def log_delivery(self, recipient: str, seq: int, msg_id: bytes, frame: bytes) -> None:
        with self.transaction("logging a delivery") as conn:
            conn.execute("INSERT OR REPLACE INTO deliveries (recipient, seq, msg_id, frame) "
                         "VALUES (?, ?, ?, ?)", (recipient, seq, msg_id, frame))

    def logged(self, recipient: str, first: int, last: int) -> list[bytes]:
        rows = self.rows("SELECT frame FROM deliveries WHERE recipient = ? "
                          "AND seq BETWEEN ? AND ? ORDER BY seq", (recipient, first, last))
        return [r[0] for r in rows]

    def add_receipt(self, msg_id: bytes, recipient: str) -> None:
        with self.transaction("recording a receipt") as conn:
            conn.execute("INSERT OR IGNORE INTO receipts (msg_id, recipient) VALUES (?, ?)",
                         (msg_id, recipient))

    def receipted(self, msg_id: bytes) -> set[str]:
        return {r[0] for r in self.rows("SELECT recipient FROM receipts WHERE msg_id = ?",
                                         (msg_id,))}

    def prune(self, now_ms: int) -> int:
        """Drop messages that expired before ``now_ms`` with their receipts and delivery log.

        (``MemoryRouterStore.prune`` keeps its delivery log; see the tests.)
        """
        expired = "SELECT id FROM messages WHERE expires_ms < ?"
        with self.transaction("pruning expired messages") as conn:
            conn.execute(f"DELETE FROM receipts WHERE msg_id IN ({expired})", (now_ms,))
            conn.execute(f"DELETE FROM deliveries WHERE msg_id IN ({expired})", (now_ms,))
            n = conn.execute("DELETE FROM messages WHERE expires_ms < ?", (now_ms,)).rowcount
        return int(n)


