"""In-memory stores for the simulator, indexed for long runs.

Theory of operation: the core's ``MemoryNodeStore`` and ``MemoryRouterStore`` are the
reference implementations; they scan everything they hold (``outbox_active`` walks the whole
outbox, ``prune`` the whole log), which is right for tests and wrong for a run of a million
messages. These subclasses keep the same observable behaviour and add indexes:

- ``SimNodeStore`` keeps the active (non-final) outbox entries apart, so the node machine's
  ``handle_timer`` walks only those (when it runs is the machine's ``next_timer``, as in the
  daemon). With ``keep_bodies=False`` it forgets what a long benchmark never reads again: the text
  and data of inbox items (the id stays, so de-duplication is unchanged) and the envelope
  bytes of outbox entries that can no longer be retried (delivered or expired).
- ``SimRouterStore`` prunes through an expiry heap and a per-message index of its delivery
  log, so pruning costs what it removes.

Durability is the point of both: a simulated crash throws the machine away and keeps the
store, as the SQLite files survive a daemon crash.
"""

from __future__ import annotations

import heapq
from dataclasses import replace

from i24net.core.node import InboxItem, MemoryNodeStore, OutboxEntry
from i24net.core.policy import PriorMessage
from i24net.core.router import MemoryRouterStore


class SimNodeStore(MemoryNodeStore):
    """``MemoryNodeStore`` with an index of the active outbox entries."""

    def __init__(self, *, keep_bodies: bool = True) -> None:
        super().__init__()
        self.keep_bodies = keep_bodies
        self.active: dict[bytes, OutboxEntry] = {}

    def outbox_put(self, entry: OutboxEntry) -> None:
        if entry.final:
            self.active.pop(entry.msg_id, None)
            if not self.keep_bodies and entry.state != "refused":
                # a refused entry may still turn accepted (a late report): keep its bytes
                entry = replace(entry, raw=b"")
        else:
            self.active[entry.msg_id] = entry
        self.outbox[entry.msg_id] = entry

    def outbox_active(self) -> list[OutboxEntry]:
        return list(self.active.values())

    def inbox_put(self, item: InboxItem) -> None:
        if not self.keep_bodies:
            item = replace(item, text="", data={})
        super().inbox_put(item)


class SimRouterStore(MemoryRouterStore):
    """``MemoryRouterStore`` whose ``prune`` walks only what expired."""

    def __init__(self) -> None:
        super().__init__()
        self._expiry: list[tuple[int, bytes]] = []
        self._logged_for: dict[bytes, list[tuple[str, int]]] = {}

    def record(self, prior: PriorMessage, envelope: bytes, expires_ms: int) -> None:
        super().record(prior, envelope, expires_ms)
        heapq.heappush(self._expiry, (expires_ms, prior.id))

    def log_delivery(self, recipient: str, seq: int, msg_id: bytes, frame: bytes) -> None:
        super().log_delivery(recipient, seq, msg_id, frame)
        self._logged_for.setdefault(msg_id, []).append((recipient, seq))

    def prune(self, now_ms: int) -> int:
        n = 0
        heap = self._expiry
        while heap and heap[0][0] < now_ms:
            _, msg_id = heapq.heappop(heap)
            found = self.messages.get(msg_id)
            if found is None or found[2] >= now_ms:
                continue
            del self.messages[msg_id]
            self.receipts.pop(msg_id, None)
            for key in self._logged_for.pop(msg_id, ()):
                self.log.pop(key, None)
            n += 1
        return n
