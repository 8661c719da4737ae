"""The outside history of a soak: what its clients did and saw, written durably.

Theory of operation: a soak's judgement must not rest on the system under test telling the
truth about itself (the daemons' audit logs are buffered, and a SIGKILL drops what was not
flushed). So every soak keeps a ``History``, a JSON-lines file the soak's own process
appends to and fsyncs (record format: ``i24net.ops.checker``):

- the feeder records each submit once the submit API has returned, and fsyncs the batch
  before it counts those messages as acknowledged;
- ``Consumers`` is the application of every agency: it follows each node's hand-over log
  (``SqliteNodeStore.handovers``, committed in the same transaction as the inbox row, so a
  node killed right after it stored a message cannot hide it), records every hand-over,
  repeats included, and fsyncs before it moves its cursor on;
- at the end ``record_outcomes`` records what each sender was last told about each of its
  messages (its outbox: delivered, refused with a reason, expired, or not final yet), and
  ``History.close`` writes the ``end`` record with the counts the checker verifies.

``judge`` reads the file back and hands it to ``i24net.ops.checker.check``.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from i24net.config.home import Home, now_ms
from i24net.ops.checker import Allowance, Verdict, check, parse_history
from i24net.shell.runtime import node_store_path
from i24net.store import SqliteNodeStore, StoreError

__all__ = ["Consumers", "History", "judge", "record_outcomes"]


class History:
    """An append-only JSON-lines history; ``flush`` writes and fsyncs what was recorded.

    Thread-safe: the feeder and the consumers record from their own threads.
    """

    def __init__(self, path: str | os.PathLike[str], scenario: str,
                 **about: Any) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.path.open("wb")
        self._lock = threading.Lock()
        self._pending: list[bytes] = []
        self.submitted = 0
        self.delivered = 0
        self._closed = False
        self._add({"op": "begin", "scenario": scenario, "t": now_ms(), **about})
        self.flush()

    def _add(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, sort_keys=True, separators=(",", ":")).encode() + b"\n"
        with self._lock:
            if self._closed:
                raise ValueError(f"the history {self.path} is closed")
            self._pending.append(line)

    def submit(self, msg_id: bytes, sender: str, to: Iterable[str], *, t: int | None = None,
               expect: str = "delivered", **extra: Any) -> None:
        """Record an acknowledged submit (``flush`` before counting it as acknowledged)."""
        with self._lock:
            self.submitted += 1
        self._add({"op": "submit", "id": msg_id.hex(), "sender": sender, "to": sorted(to),
                   "t": now_ms() if t is None else t, "expect": expect, **extra})

    def deliver(self, msg_id: bytes, agency: str, seq: int, t: int) -> None:
        with self._lock:
            self.delivered += 1
        self._add({"op": "deliver", "id": msg_id.hex(), "agency": agency, "seq": seq,
                   "t": t})

    def outcome(self, msg_id: bytes, state: str, reason: str = "") -> None:
        self._add({"op": "outcome", "id": msg_id.hex(), "state": state, "reason": reason,
                   "t": now_ms()})

    def flush(self) -> None:
        """Write what was recorded and fsync it; returns once it is on disk."""
        with self._lock:
            lines, self._pending = self._pending, []
            if lines:
                self._file.write(b"".join(lines))
                self._file.flush()
                os.fsync(self._file.fileno())

    def close(self) -> None:
        """Write the ``end`` record (the counts the checker verifies) and close."""
        if self._closed:
            return
        self._add({"op": "end", "t": now_ms(), "submitted": self.submitted,
                   "delivered": self.delivered})
        self.flush()
        with self._lock:
            self._closed = True
            self._file.close()

    def __enter__(self) -> History:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Consumers:
    """The application of each of ``agencies``: follows its node's hand-over log and
    records every hand-over in ``history``. ``start`` runs it on a thread every
    ``interval`` seconds; ``stop`` takes a last look and returns."""

    def __init__(self, home: Home, agencies: Iterable[str], history: History, *,
                 interval: float = 0.25) -> None:
        self.home = home
        self.agencies = sorted(agencies)
        self.history = history
        self.interval = interval
        self.cursors: dict[str, int] = dict.fromkeys(self.agencies, 0)
        self._stores: dict[str, SqliteNodeStore] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None

    def _store(self, agency: str) -> SqliteNodeStore | None:
        store = self._stores.get(agency)
        if store is None:
            path = node_store_path(self.home, agency)
            if not path.exists():
                return None  # its node has not created it yet
            try:
                store = SqliteNodeStore(path, readonly=True)
            except StoreError:
                return None  # being created or migrated by its node: look again later
            self._stores[agency] = store
        return store

    def poll(self) -> int:
        """Record every hand-over since the last poll, fsync, then move the cursors on.
        Returns how many were recorded."""
        found = 0
        seen: dict[str, int] = {}
        for agency in self.agencies:
            store = self._store(agency)
            if store is None:
                continue
            cursor = self.cursors[agency]
            while True:
                try:
                    batch = store.handovers(after=cursor, limit=2000)
                except StoreError:
                    break  # busy beyond the timeout: next poll
                for h in batch:
                    self.history.deliver(h.msg_id, agency, h.seq, h.received_ms)
                    cursor = h.seq
                found += len(batch)
                if len(batch) < 2000:
                    break
            seen[agency] = cursor
        if found:
            self.history.flush()
        self.cursors.update(seen)  # only once the records are on disk
        return found

    def _close(self) -> None:
        for store in self._stores.values():
            store.close()
        self._stores.clear()

    def _run(self) -> None:
        # SQLite connections belong to the thread that opened them: this thread opens,
        # polls and closes them, the last look included.
        try:
            while not self._stop.wait(self.interval):
                self.poll()
            self.poll()
        except BaseException as exc:  # reported by stop()
            self.error = exc
        finally:
            self._close()

    def start(self) -> Consumers:
        self._thread = threading.Thread(target=self._run, name="consumers", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Take a last look at every log, close the stores; re-raise a thread's error."""
        self._stop.set()
        if self._thread is None:
            try:
                self.poll()
            finally:
                self._close()
        else:
            self._thread.join(timeout=120)
            if self._thread.is_alive():
                raise RuntimeError("the consumers did not stop within 120 s")
        if self.error is not None:
            raise RuntimeError(f"the consumers failed: {self.error}") from self.error


def record_outcomes(home: Home, senders: Iterable[str], history: History,
                    ids: set[bytes] | None = None) -> int:
    """Record what each sender was last told about each message it submitted (or only
    ``ids``); returns how many outcomes were recorded."""
    n = 0
    for agency in sorted(senders):
        path = node_store_path(home, agency)
        if not path.exists():
            continue
        with SqliteNodeStore(path, readonly=True) as store:
            for e in store.outbox_list(limit=None):
                if ids is None or e.msg_id in ids:
                    history.outcome(e.msg_id, e.state, e.reason)
                    n += 1
    history.flush()
    return n


def judge(path: str | os.PathLike[str], allow: Allowance = Allowance()) -> Verdict:
    """The checker's verdict on the history at ``path``."""
    records, problems = parse_history(Path(path).read_bytes())
    return check(records, allow, problems=problems)

