"""The simulator's indexed stores behave like the core's reference stores."""

from __future__ import annotations

from dataclasses import replace

from i24net.core.labels import HandlingCodes, Label
from i24net.core.node import InboxItem, MemoryNodeStore, OutboxEntry
from i24net.core.policy import PriorMessage
from i24net.core.router import MemoryRouterStore
from i24net.sim.stores import SimNodeStore, SimRouterStore


def entry(n: int, *, next_ms: int, expires_ms: int = 10_000, state: str = "queued"
          ) -> OutboxEntry:
    return OutboxEntry(bytes([n]) * 16, b"raw", "message", 3, ("NCB-DE",), 0, expires_ms,
                       state=state, next_ms=next_ms)


def test_the_active_index_follows_retries_and_final_states() -> None:
    s = SimNodeStore()
    assert s.outbox_active() == []
    s.outbox_put(entry(1, next_ms=2_000))
    s.outbox_put(entry(2, next_ms=5_000, expires_ms=3_000))
    s.outbox_put(replace(entry(1, next_ms=2_000), next_ms=6_000, attempts=2))  # retried
    s.outbox_put(replace(entry(2, next_ms=5_000, expires_ms=3_000), state="delivered"))
    assert [(e.msg_id[0], e.next_ms) for e in s.outbox_active()] == [(1, 6_000)]
    ref = MemoryNodeStore()
    for e in s.outbox.values():
        ref.outbox_put(e)
    assert ref.outbox_active() == s.outbox_active()


def test_without_bodies_the_ids_stay_for_deduplication() -> None:
    s = SimNodeStore(keep_bodies=False)
    item = InboxItem(b"i" * 16, "NCB-FR", "message", "RESTRICTED", 3, "subject", "text",
                     {"k": "v"}, 0, 1)
    s.inbox_put(item)
    assert s.inbox_has(item.msg_id) and s.inbox_get(item.msg_id).text == ""
    s.outbox_put(entry(1, next_ms=0, state="delivered"))
    s.outbox_put(entry(2, next_ms=0, state="refused"))  # may still turn accepted
    assert s.outbox[bytes([1]) * 16].raw == b"" and s.outbox[bytes([2]) * 16].raw == b"raw"


def prior(n: int) -> PriorMessage:
    return PriorMessage(bytes([n]) * 16, "NCB-FR", frozenset({"NCB-DE"}),
                        Label("RESTRICTED"), HandlingCodes(), None, b"d" * 32)


def test_router_prune_matches_the_reference_store() -> None:
    sim, ref = SimRouterStore(), MemoryRouterStore()
    for store in (sim, ref):
        for n, expires in ((1, 100), (2, 300), (3, 200)):
            store.record(prior(n), b"env", expires)
            seq = store.next_seq("NCB-DE")
            store.log_delivery("NCB-DE", seq, bytes([n]) * 16, b"frame%d" % n)
            store.add_receipt(bytes([n]) * 16, "NCB-DE")
    for now in (50, 150, 250, 350):
        assert sim.prune(now) == ref.prune(now)
        assert sim.messages == ref.messages and sim.log == ref.log
        assert sim.receipts == ref.receipts
