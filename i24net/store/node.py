"""``NodeStore`` on SQLite (``state/node-<AGENCY>.sqlite``): the outbox, the inbox, the
hand-over log and the listings the CLI and status views read. The commit discipline, the
schema check and the durability argument are ``i24net.store.sqlite``'s."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, ClassVar, NamedTuple

from i24net.core.node import OUTBOX_FINAL, InboxItem, OutboxEntry
from i24net.core.wire import pack

from .sqlite import SqliteStore, unpack_own, upsert_sql

__all__ = ["OUTBOX_STATES", "Handover", "SqliteNodeStore"]

# Outbox states every status view shows, even at zero (the final ones come from the node).
OUTBOX_STATES = ("queued", "accepted", *OUTBOX_FINAL)

class Handover(NamedTuple):
    """One message handed to the node's application (``SqliteNodeStore.handovers``)."""

    seq: int
    msg_id: bytes
    sender: str
    subject: str
    received_ms: int


# Column order puts the small, filtered columns ahead of the large ones (raw, text, data).
OUTBOX_COLUMNS = ("msg_id", "kind", "precedence", "recipients", "created_ms", "expires_ms",
                   "state", "reason", "receipts", "attempts", "next_ms", "subject", "active",
                   "raw", "decided_ms")
INBOX_COLUMNS = ("msg_id", "sender", "kind", "label", "precedence", "state", "created_ms",
                  "received_ms", "ref", "handling", "keep_until_ms", "erased_ms", "agreement",
                  "subject", "text", "data")


def _outbox_row(e: OutboxEntry) -> tuple[Any, ...]:
    return (e.msg_id, e.kind, e.precedence, pack(list(e.recipients)), e.created_ms,
            e.expires_ms, e.state, e.reason, pack(e.receipts), e.attempts, e.next_ms,
            e.subject, int(not e.final), e.raw, e.decided_ms)


def _outbox_entry(row: Sequence[Any]) -> OutboxEntry:
    (msg_id, kind, precedence, recipients, created_ms, expires_ms, state, reason, receipts,
     attempts, next_ms, subject, _, raw, decided_ms) = row
    return OutboxEntry(msg_id, raw, kind, precedence, tuple(unpack_own(recipients)), created_ms,
                       expires_ms, state, reason, unpack_own(receipts), attempts, next_ms,
                       subject, decided_ms)


def _inbox_row(i: InboxItem) -> tuple[Any, ...]:
    return (i.msg_id, i.sender, i.kind, i.label, i.precedence, i.state, i.created_ms,
            i.received_ms, i.ref, i.handling, i.keep_until_ms, i.erased_ms, i.agreement,
            i.subject, i.text, pack(i.data))


def _inbox_item(row: Sequence[Any]) -> InboxItem:
    (msg_id, sender, kind, label, precedence, state, created_ms, received_ms, ref, handling,
     keep_until_ms, erased_ms, agreement, subject, text, data) = row
    return InboxItem(msg_id, sender, kind, label, precedence, subject, text, unpack_own(data),
                     created_ms, received_ms, ref, state, handling, keep_until_ms, erased_ms,
                     agreement)


def _retention_sql(retention: Mapping[str, int]) -> tuple[str, list[Any]]:
    """``(expression, params)``: when an inbox row's body is due for erasure under
    ``retention``, NULL for kinds without a rule and rows already erased."""
    if not retention:
        return "NULL", []
    cases = " ".join("WHEN ? THEN MAX(received_ms + ?, keep_until_ms)" for _ in retention)
    params: list[Any] = [v for kind, ms in sorted(retention.items()) for v in (kind, ms)]
    return f"(CASE WHEN erased_ms != 0 THEN NULL ELSE CASE kind {cases} END END)", params


class SqliteNodeStore(SqliteStore):
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
            handling TEXT NOT NULL DEFAULT '',        -- the header's codes, "H1,H2"
            keep_until_ms INTEGER NOT NULL DEFAULT 0, -- renewed until; 0: the kind's rule
            erased_ms INTEGER NOT NULL DEFAULT 0,     -- body erased at; 0: held
            agreement TEXT NOT NULL DEFAULT '',       -- stamped: crossed under it; '': none
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
    VERSION = 4
    MIGRATIONS: ClassVar[dict[int, tuple[str, ...]]] = {1: (
        "ALTER TABLE outbox ADD COLUMN decided_ms INTEGER NOT NULL DEFAULT 0", """CREATE TABLE handovers (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            msg_id BLOB NOT NULL,
            sender TEXT NOT NULL,
            subject TEXT NOT NULL,
            received_ms INTEGER NOT NULL)""",), 2: (
        "ALTER TABLE inbox ADD COLUMN handling TEXT NOT NULL DEFAULT ''",
        "ALTER TABLE inbox ADD COLUMN keep_until_ms INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE inbox ADD COLUMN erased_ms INTEGER NOT NULL DEFAULT 0",
        # a deletion order used to mark an item and keep its body: erase those now
        "UPDATE inbox SET subject = '', text = '', data = X'80', erased_ms = received_ms "
        "WHERE state = 'deleted'",), 3: (
        "ALTER TABLE inbox ADD COLUMN agreement TEXT NOT NULL DEFAULT ''",)}
    _OUTBOX_PUT = upsert_sql("outbox", OUTBOX_COLUMNS, "msg_id")
    _OUTBOX_SELECT = f"SELECT {', '.join(OUTBOX_COLUMNS)} FROM outbox"
    _INBOX_PUT = upsert_sql("inbox", INBOX_COLUMNS, "msg_id")
    _INBOX_SELECT = f"SELECT {', '.join(INBOX_COLUMNS)} FROM inbox"

    # -- outbox ---------------------------------------------------------------------------
    def outbox_put(self, entry: OutboxEntry) -> None:
        with self.transaction("saving an outbox entry") as conn:
            conn.execute(self._OUTBOX_PUT, _outbox_row(entry))

    def outbox_get(self, msg_id: bytes) -> OutboxEntry | None:
        rows = self.rows(f"{self._OUTBOX_SELECT} WHERE msg_id = ?", (msg_id,))
        return _outbox_entry(rows[0]) if rows else None

    def outbox_active(self) -> list[OutboxEntry]:
        """Entries not in a final state, in the order they were first stored."""
        rows = self.rows(f"{self._OUTBOX_SELECT} WHERE active = 1 ORDER BY rowid")
        return [_outbox_entry(r) for r in rows]

    def outbox_list(self, limit: int | None = 50) -> list[OutboxEntry]:
        """The most recently submitted entries first, any state; ``limit=None`` for all."""
        rows = self.rows(f"{self._OUTBOX_SELECT} ORDER BY rowid DESC LIMIT ?",
                          (-1 if limit is None else max(limit, 0),))
        return [_outbox_entry(r) for r in rows]

    # -- inbox ----------------------------------------------------------------------------
    def inbox_has(self, msg_id: bytes) -> bool:
        return bool(self.rows("SELECT 1 FROM inbox WHERE msg_id = ?", (msg_id,)))

    def inbox_put(self, item: InboxItem) -> None:
        """Store the item and log its hand-over, in one transaction."""
        with self.transaction("saving an inbox item") as conn:
            conn.execute(self._INBOX_PUT, _inbox_row(item))
            conn.execute("INSERT INTO handovers (msg_id, sender, subject, received_ms) "
                         "VALUES (?, ?, ?, ?)",
                         (item.msg_id, item.sender, item.subject, item.received_ms))

    def handovers(self, after: int = 0, limit: int = 1000) -> list[Handover]:
        """Hand-overs to the application with a sequence number above ``after``, oldest
        first: a consumer keeps the last ``seq`` it saw and asks again from there."""
        rows = self.rows("SELECT seq, msg_id, sender, subject, received_ms FROM handovers "
                          "WHERE seq > ? ORDER BY seq LIMIT ?", (after, max(limit, 0)))
        return [Handover(*r) for r in rows]

    def inbox_get(self, msg_id: bytes) -> InboxItem | None:
        rows = self.rows(f"{self._INBOX_SELECT} WHERE msg_id = ?", (msg_id,))
        return _inbox_item(rows[0]) if rows else None

    def inbox_set_state(self, msg_id: bytes, state: str) -> None:
        """Change an item's state; an unknown id is ignored (as in the memory store)."""
        with self.transaction("updating an inbox item") as conn:
            conn.execute("UPDATE inbox SET state = ? WHERE msg_id = ?", (state, msg_id))

    def inbox_erase(self, msg_ids: Iterable[bytes], state: str, now_ms: int) -> None:
        """Erase the items' bodies (subject, text, data) and put them in ``state``, in one
        transaction; the rows stay, with their id, sender, kind, label and dates, so a late
        copy is recognised and the data-protection record (``i24net audit dpo``) shows when
        each went."""
        empty = pack({})
        with self.transaction("erasing inbox items") as conn:
            conn.executemany("UPDATE inbox SET subject = '', text = '', data = ?, state = ?, "
                             "erased_ms = ? WHERE msg_id = ?",
                             [(empty, state, now_ms, m) for m in msg_ids])

    def inbox_retention_due(self, retention: Mapping[str, int], now_ms: int,
                            limit: int) -> list[InboxItem]:
        """Items whose body is due for erasure by ``now_ms`` under ``retention`` (ms per
        kind), the earliest first."""
        expr, params = _retention_sql(retention)
        if not params:
            return []
        rows = self.rows(f"SELECT * FROM (SELECT {', '.join(INBOX_COLUMNS)}, {expr} AS due "
                         "FROM inbox) WHERE due IS NOT NULL AND due <= ? ORDER BY due LIMIT ?",
                         [*params, now_ms, max(limit, 0)])
        return [_inbox_item(r[:-1]) for r in rows]

    def inbox_next_retention(self, retention: Mapping[str, int]) -> int | None:
        """When the next body is due for erasure under ``retention``; None: none is."""
        expr, params = _retention_sql(retention)
        if not params:
            return None
        rows = self.rows(f"SELECT MIN({expr}) FROM inbox", params)
        return None if rows[0][0] is None else int(rows[0][0])

    def inbox_renew(self, msg_id: bytes, until_ms: int) -> bool:
        """Keep an item's body at least until ``until_ms`` (a renewal); False if the item
        is not held or its body is already erased."""
        with self.transaction("renewing an inbox item") as conn:
            cur = conn.execute("UPDATE inbox SET keep_until_ms = MAX(keep_until_ms, ?) "
                               "WHERE msg_id = ? AND erased_ms = 0", (until_ms, msg_id))
            return cur.rowcount == 1

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
        return [_inbox_item(r) for r in self.rows(sql, params)]

    # -- sequence numbers -----------------------------------------------------------------
    def seq_get(self, router_kid: bytes) -> tuple[int, set[int]]:
        rows = self.rows("SELECT last, missing FROM seqs WHERE kid = ?", (router_kid,))
        if not rows:
            return 0, set()
        return int(rows[0][0]), set(unpack_own(rows[0][1]))

    def seq_put(self, router_kid: bytes, last: int, missing: set[int]) -> None:
        with self.transaction("saving sequence numbers") as conn:
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
        for state, n in self.rows("SELECT state, count(*) FROM inbox GROUP BY state"):
            out[f"inbox.{state}"] = n
            out["inbox.total"] += n
        for active, state, n in self.rows("SELECT active, state, count(*) FROM outbox "
                                           "GROUP BY active, state"):
            out[f"outbox.{state}"] = out.get(f"outbox.{state}", 0) + n
            out["outbox.total"] += n
            out["outbox.active"] += n if active else 0
        return out
