"""The notice authority's register on SQLite: ``state/notices-<AGENCY>.sqlite``.

Theory of operation: ``SqliteNoticeStore`` implements the core's ``DeskStore`` protocol
(``i24net.core.lifecycle``) on the same footing as the node and router stores
(``i24net.store.sqlite``: WAL, one connection, every write committed before it returns, SQLite
errors turned into ``StoreError`` naming the file). It holds every ``Notice`` with its
history, the agencies holding it, the request's carriage (label, precedence, handling) and
the id of the message that published it; the per-year number sequence; and the diffusion
copies the GS received, with any deletion order.

Two processes share the file: the GS node daemon (its delivery hook) and the CLI (``i24net
notice review / cancel``, ``i24net diffusion non-compliant``). ``exclusive`` holds SQLite's
write lock (``BEGIN IMMEDIATE``) for one read-modify-write of the desk — reload if the
revision moved, change in memory, save — which takes microseconds; sealing and queuing the
resulting messages happens after the commit. ``revision`` is a counter bumped by every save,
so a desk that sees the number it last wrote knows nobody else changed anything.

Records are msgpack maps (``wire.pack``) read back through ``wire.unpack`` and ``Fields``
with limits, and rebuilt into the core's validated values: a damaged row is a
``StoreError`` (``store.corrupt``), never a half-read notice.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from i24net.config.home import Home
from i24net.core.errors import I24Error
from i24net.core.labels import HandlingCodes, Label, Precedence
from i24net.core.lifecycle import Carriage, DeskEntry, DeskState, DiffusionRecord
from i24net.core.notices import (
    HistoryEntry,
    Notice,
    NoticeColour,
    NoticeEvent,
    NoticeState,
)
from i24net.core.wire import Fields, pack, unpack

from .sqlite import SqliteStore, StoreError

__all__ = ["SqliteNoticeStore", "desk_store_for", "notice_store_path"]

# One record is one notice: a few short fields, a history of a handful of events (each
# update and renewal adds one) and up to a few thousand holders. 1 MiB is far beyond that.
MAX_RECORD = 1 << 20
MAX_HISTORY = 4096


def notice_store_path(home: Home, agency: str) -> Path:
    return home.state_dir / f"notices-{agency}.sqlite"


def desk_store_for(home: Home, agency: str) -> SqliteNoticeStore | None:
    """The durable register for ``agency``'s notice desk, or None if it runs no desk."""
    if "notice-authority" not in home.directory().agency(agency).roles:
        return None
    return SqliteNoticeStore(notice_store_path(home, agency))


# -- records ------------------------------------------------------------------------------


def carriage_record(c: Carriage) -> dict[str, Any]:
    return {"label": c.label.marking, "precedence": int(c.precedence),
            "handling": c.handling.names(), "h3": c.handling.h3_text}


def carriage_from(obj: Any, what: str) -> Carriage:
    f = Fields(obj, what)
    label = Label.parse(f.text("label"))
    precedence = Precedence(f.integer("precedence", hi=max(Precedence)))
    handling = HandlingCodes.parse(f.text_list("handling", max_items=8, max_len=4),
                                   f.text("h3", max_len=4096, allow_empty=True))
    f.done()
    return Carriage(label, precedence, handling)


def notice_record(n: Notice) -> dict[str, Any]:
    return {"request_id": n.request_id, "requester": n.requester, "colour": n.colour.value,
            "subject": n.subject, "offence": n.offence, "warrant": n.warrant,
            "state": n.state.value, "number": n.number, "created_ms": n.created_ms,
            "published_ms": n.published_ms, "expires_ms": n.expires_ms,
            "updates": n.updates, "reason": n.reason,
            "history": [[h.at_ms, h.event.value, h.actor] for h in n.history]}


def notice_from(obj: Any, what: str) -> Notice:
    f = Fields(obj, what)
    text = {k: f.text(k, allow_empty=True) for k in ("subject", "offence", "warrant")}
    history = f.raw("history")
    if not isinstance(history, list) or len(history) > MAX_HISTORY:
        raise StoreError(f"{what}: the history is not a list", reason="store.corrupt")
    entries = []
    for item in history:
        if not (isinstance(item, list) and len(item) == 3 and isinstance(item[0], int)
                and isinstance(item[2], str)):
            raise StoreError(f"{what}: a history entry is malformed", reason="store.corrupt")
        entries.append(HistoryEntry(item[0], NoticeEvent(item[1]), item[2]))
    n = Notice(
        request_id=f.text("request_id", max_len=64), requester=f.text("requester", max_len=64),
        colour=NoticeColour(f.text("colour", max_len=16)), **text,
        state=NoticeState(f.text("state", max_len=16)),
        number=f.text("number", max_len=32, optional=True),
        created_ms=f.integer("created_ms"),
        published_ms=f.integer("published_ms", optional=True),
        expires_ms=f.integer("expires_ms", optional=True),
        updates=f.integer("updates"), reason=f.text("reason", max_len=64, allow_empty=True),
        history=tuple(entries))
    f.done()
    return n


def entry_record(e: DeskEntry) -> bytes:
    return pack({"notice": notice_record(e.notice), "carriage": carriage_record(e.carriage),
                 "holders": sorted(e.holders), "notice_id": e.notice_id})


def entry_from(data: bytes, what: str) -> DeskEntry:
    f = Fields(unpack(data, what=what, max_size=MAX_RECORD), what)
    e = DeskEntry(notice_from(f.raw("notice"), what), carriage_from(f.raw("carriage"), what),
                  frozenset(f.text_list("holders")),
                  f.blob("notice_id", max_len=32, optional=True))
    f.done()
    return e


def diffusion_record(d: DiffusionRecord) -> bytes:
    return pack({"sender": d.sender, "recipients": list(d.recipients),
                 "carriage": carriage_record(d.carriage), "received_ms": d.received_ms,
                 "deletion_reason": d.deletion_reason, "deletion_id": d.deletion_id})


def diffusion_from(diffusion_id: bytes, data: bytes, what: str) -> DiffusionRecord:
    f = Fields(unpack(data, what=what, max_size=MAX_RECORD), what)
    d = DiffusionRecord(diffusion_id, f.text("sender", max_len=64),
                        tuple(f.text_list("recipients")),
                        carriage_from(f.raw("carriage"), what), f.integer("received_ms"),
                        f.text("deletion_reason", allow_empty=True),
                        f.blob("deletion_id", max_len=32, optional=True))
    f.done()
    return d


def _decoded(what: str, build: Any, *args: Any) -> Any:
    """Run a record decoder; anything wrong with our own file is ``store.corrupt``."""
    try:
        return build(*args)
    except StoreError:
        raise
    except (I24Error, ValueError, TypeError, KeyError) as exc:
        message = exc.message if isinstance(exc, I24Error) else str(exc)
        raise StoreError(f"{what} is damaged: {message}", reason="store.corrupt") from exc


# -- the store ----------------------------------------------------------------------------

_NOTICE_PUT = (
    "INSERT INTO notices (request_id, number, state, requester, notice_id, created_ms, rev, "
    "record) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (request_id) DO UPDATE SET "
    "number = excluded.number, state = excluded.state, requester = excluded.requester, "
    "notice_id = excluded.notice_id, created_ms = excluded.created_ms, rev = excluded.rev, "
    "record = excluded.record")
_DIFFUSION_PUT = (
    "INSERT INTO diffusions (id, sender, received_ms, ordered, rev, record) "
    "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET sender = excluded.sender, "
    "received_ms = excluded.received_ms, ordered = excluded.ordered, rev = excluded.rev, "
    "record = excluded.record")


class SqliteNoticeStore(SqliteStore):
    """``DeskStore`` on SQLite (see the module docstring)."""

    KIND = "notices"
    SCHEMA = (
        """CREATE TABLE notices (
            request_id TEXT PRIMARY KEY,
            number TEXT UNIQUE,          -- NULL until published; never two alike
            state TEXT NOT NULL,
            requester TEXT NOT NULL,
            notice_id BLOB UNIQUE,       -- the 'notice' message that published it
            created_ms INTEGER NOT NULL,
            rev INTEGER NOT NULL,        -- the revision that last wrote the row
            record BLOB NOT NULL)        -- msgpack: notice with history, carriage, holders""",
        "CREATE INDEX notices_by_state ON notices (state)",
        """CREATE TABLE sequence (
            year INTEGER PRIMARY KEY,
            last INTEGER NOT NULL)       -- the last notice number issued that year""",
        """CREATE TABLE diffusions (
            id BLOB PRIMARY KEY,
            sender TEXT NOT NULL,
            received_ms INTEGER NOT NULL,
            ordered INTEGER NOT NULL,    -- 1 once a deletion order went out
            rev INTEGER NOT NULL,
            record BLOB NOT NULL)        -- msgpack: recipients, carriage, deletion""",
        """CREATE TABLE revision (
            id INTEGER PRIMARY KEY CHECK (id = 0),
            value INTEGER NOT NULL)""",
        "INSERT INTO revision (id, value) VALUES (0, 0)",
    )

    def __init__(self, path: str | os.PathLike[str], **kw: Any) -> None:
        self._held: sqlite3.Connection | None = None
        super().__init__(path, **kw)

    # -- transactions ---------------------------------------------------------------------

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        """Hold the write lock for one read-modify-write (keep it short: no I/O inside)."""
        if self._held is not None:
            raise StoreError(f"{self.path}: exclusive sections do not nest",
                             reason="store.nested")
        with self.transaction("changing the notice register") as conn:
            self._held = conn
            try:
                yield
            finally:
                self._held = None

    @contextmanager
    def _writing(self, doing: str) -> Iterator[sqlite3.Connection]:
        if self._held is not None:
            yield self._held
        else:
            with self.transaction(doing) as conn:
                yield conn

    @contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        """One consistent snapshot for several SELECTs (inside ``exclusive``: its own)."""
        if self._held is not None:
            yield self._held
            return
        with self.snapshot("reading the notice register") as conn:
            yield conn

    # -- DeskStore ------------------------------------------------------------------------

    def revision(self) -> int:
        with self._reading() as conn:
            return int(conn.execute("SELECT value FROM revision").fetchone()[0])

    def load(self) -> DeskState:
        with self._reading() as conn:
            rev = int(conn.execute("SELECT value FROM revision").fetchone()[0])
            notices = conn.execute("SELECT request_id, record FROM notices "
                                   "ORDER BY created_ms, rowid").fetchall()
            sequence = conn.execute("SELECT year, last FROM sequence").fetchall()
            diffusions = conn.execute("SELECT id, record FROM diffusions "
                                      "ORDER BY received_ms, rowid").fetchall()
        entries = tuple(_decoded(f"{self.path}: the record of request {rid}", entry_from,
                                 data, f"notice record {rid}") for rid, data in notices)
        diffs = tuple(_decoded(f"{self.path}: the record of diffusion {did.hex()}",
                               diffusion_from, did, data, f"diffusion record {did.hex()}")
                      for did, data in diffusions)
        return DeskState(rev, entries, {int(y): int(n) for y, n in sequence}, diffs)

    def save(self, entries: Sequence[DeskEntry], sequence: Mapping[int, int],
             diffusions: Sequence[DiffusionRecord]) -> int:
        with self._writing("saving the notice register") as conn:
            rev = int(conn.execute("UPDATE revision SET value = value + 1 "
                                   "RETURNING value").fetchone()[0])
            for e in entries:
                n = e.notice
                conn.execute(_NOTICE_PUT, (n.request_id, n.number, n.state.value,
                                           n.requester, e.notice_id, n.created_ms, rev,
                                           entry_record(e)))
            for year, last in sequence.items():
                # max(): a sequence only moves forward, whatever a stale writer says
                conn.execute("INSERT INTO sequence (year, last) VALUES (?, ?) "
                             "ON CONFLICT (year) DO UPDATE SET last = "
                             "max(last, excluded.last)", (year, last))
            for d in diffusions:
                conn.execute(_DIFFUSION_PUT, (d.diffusion_id, d.sender, d.received_ms,
                                              int(d.ordered), rev, diffusion_record(d)))
        return rev
