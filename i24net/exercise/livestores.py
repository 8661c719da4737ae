"""Reading the agencies' stores of a live run from beside the running daemons, cheaply.

A live run on the interpol preset has 198 SQLite stores. Opening each one costs a
connection and a schema check (a quarter of a millisecond), and reading a whole outbox
decodes every entry; a settling run asks twice a second which messages are not final,
which read every store each time (50 ms a look at 198 agencies, most of it on stores that
had not changed). ``OutboxWatch`` reads again only the stores whose files changed since it
last read them, and then only their active entries (``outbox_active``, an index).

Every read is read-only (``SqliteNodeStore(readonly=True)``): it takes no write lock and
never waits for a daemon.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from pathlib import Path

from i24net.config.home import Home
from i24net.core.node import OutboxEntry
from i24net.shell.runtime import node_store_path
from i24net.store import SqliteNodeStore, StoreError

# File times come from a coarse clock (a few milliseconds): two commits within one tick,
# the second one not growing the write-ahead log (rewritten from its start after a
# checkpoint), would leave the same time and size. A store changed less than this long ago
# is read again whatever its files say.
RECENT_S = 1.0

Signature = tuple[tuple[int, int, int] | None, ...]


def _signature(path: Path) -> Signature | None:
    """(inode, size, mtime) of the database and of its write-ahead log, where a commit
    writes (a checkpoint writes the database); None while there is no database."""
    out: list[tuple[int, int, int] | None] = []
    for p in (path, path.with_name(path.name + "-wal")):
        try:
            st = os.stat(p)
        except FileNotFoundError:
            if p == path:
                return None
            out.append(None)
            continue
        out.append((st.st_ino, st.st_size, st.st_mtime_ns))
    return tuple(out)


class OutboxWatch:
    """The outbox entries of ``agencies`` that are not final yet, for a caller that asks
    again and again. Each ``pending`` first stats every store's files, then reads the
    active entries of each store that changed since it was last read (or changed within
    ``RECENT_S``) and keeps the others' from before: the stat comes first, so a commit
    made during the read changes the files again and is read at the next look.

    ``reads`` counts the stores read, ``looks`` the calls: the run's figures."""

    def __init__(self, home: Home, agencies: Iterable[str]) -> None:
        self.paths = {a: node_store_path(home, a) for a in sorted(agencies)}
        self._read_at: dict[str, Signature] = {}
        self._active: dict[str, list[OutboxEntry]] = {}
        self.looks = 0
        self.reads = 0

    def pending(self) -> list[OutboxEntry]:
        self.looks += 1
        recent = (time.time() - RECENT_S) * 1e9
        for agency, path in self.paths.items():
            sig = _signature(path)
            if sig is None:
                continue  # its node has not created it yet: nothing sent
            if sig == self._read_at.get(agency) and \
                    max(s[2] for s in sig if s is not None) < recent:
                continue
            try:
                with SqliteNodeStore(path, readonly=True) as store:
                    self._active[agency] = store.outbox_active()
            except StoreError:
                self._read_at.pop(agency, None)  # busy or being created: next look
                continue
            self.reads += 1
            self._read_at[agency] = sig
        return [e for a in self.paths for e in self._active.get(a, ())]

