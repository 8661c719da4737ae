"""The stores: one behavioural suite over the memory and SQLite implementations, then what
only SQLite does (reopen, SIGKILL durability, read-only readers, schema checks, listings)."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from i24net.core.labels import TLP, Handling, HandlingCodes, Label
from i24net.core.node import InboxItem, MemoryNodeStore, NodeStore, OutboxEntry, OutboxState
from i24net.core.policy import PriorMessage
from i24net.core.router import MemoryRouterStore, RouterStore
from i24net.store import SqliteNodeStore, SqliteRouterStore, StoreError
from i24net.store.node import INBOX_COLUMNS, OUTBOX_COLUMNS

KID = b"\x01" * 8


def mid(n: int) -> bytes:
    return n.to_bytes(16, "big")


def outbox_entry(n: int, **kw: Any) -> OutboxEntry:
    base = OutboxEntry(mid(n), b"raw-" + bytes([n]) * 40, "message", 2, ("FR", "DE", "BE"),
                       1_000 + n, 90_000 + n, subject=f"subject {n}")
    return replace(base, **kw)


def inbox_item(n: int, **kw: Any) -> InboxItem:
    base = InboxItem(mid(n), "FR", "message", "RESTRICTED//EU", 1, f"subject {n}",
                     "text \u00e9\u4e2d\x00 end", {"case": "2024/17", "n": n, "blob": b"\x00\xff",
                     "nested": {"list": [1, None, True, 2.5]}, "none": None},
                     1_000 + n, 2_000 + n)
    return replace(base, **kw)


def prior(n: int, **kw: Any) -> PriorMessage:
    base = PriorMessage(mid(n), "FR", frozenset({"DE", "BE", "GS"}),
                        Label("CONFIDENTIAL", frozenset({"EU", "CT"})),
                        HandlingCodes(frozenset({Handling.H2, Handling.H3}), "no court use"),
                        TLP.AMBER_STRICT, bytes([n]) * 32)
    return replace(base, **kw)


# -- the two implementations ---------------------------------------------------------------

@pytest.fixture(params=["memory", "sqlite"])
def node_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[NodeStore]:
    if request.param == "memory":
        yield MemoryNodeStore()
    else:
        with SqliteNodeStore(tmp_path / "node.sqlite") as store:
            yield store


@pytest.fixture(params=["memory", "sqlite"])
def router_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RouterStore]:
    if request.param == "memory":
        yield MemoryRouterStore()
    else:
        with SqliteRouterStore(tmp_path / "router.sqlite") as store:
            yield store


# -- node: outbox ----------------------------------------------------------------------------

def test_outbox_put_get_round_trips_every_field(node_store: NodeStore) -> None:
    e = outbox_entry(1, state="accepted", reason="why", receipts={"FR": "delivered",
                     "DE": "read"}, attempts=4, next_ms=12_345)
    node_store.outbox_put(e)
    got = node_store.outbox_get(e.msg_id)
    assert got == e
    assert got is not None and isinstance(got.recipients, tuple)
    assert node_store.outbox_get(mid(99)) is None


def test_outbox_put_replaces(node_store: NodeStore) -> None:
    e = outbox_entry(1)
    node_store.outbox_put(e)
    later = replace(e, state="delivered", receipts={"FR": "delivered"}, attempts=2)
    node_store.outbox_put(later)
    assert node_store.outbox_get(e.msg_id) == later


@pytest.mark.parametrize("state", ["refused", "delivered", "expired"])
def test_outbox_active_leaves_out_final_states(node_store: NodeStore, state: str) -> None:
    for n, s in enumerate(["queued", state, "accepted"]):
        node_store.outbox_put(outbox_entry(n, state=s))
    assert [e.msg_id for e in node_store.outbox_active()] == [mid(0), mid(2)]


def test_outbox_active_keeps_first_put_order(node_store: NodeStore) -> None:
    for n in (5, 3, 9):
        node_store.outbox_put(outbox_entry(n))
    node_store.outbox_put(outbox_entry(5, attempts=3))  # an update keeps its place
    node_store.outbox_put(outbox_entry(3, state="delivered"))
    active = node_store.outbox_active()
    assert [e.msg_id for e in active] == [mid(5), mid(9)]
    assert active[0].attempts == 3


# -- node: inbox -----------------------------------------------------------------------------

def test_inbox_put_get_has(node_store: NodeStore) -> None:
    item = inbox_item(1, ref=mid(7))
    assert not node_store.inbox_has(item.msg_id)
    node_store.inbox_put(item)
    assert node_store.inbox_has(item.msg_id)
    assert node_store.inbox_get(item.msg_id) == item
    assert node_store.inbox_get(mid(2)) is None


@pytest.mark.parametrize("ref", [None, b"", mid(3)])
def test_inbox_ref_round_trips(node_store: NodeStore, ref: bytes | None) -> None:
    node_store.inbox_put(inbox_item(1, ref=ref, data={}, text=""))
    got = node_store.inbox_get(mid(1))
    assert got is not None and got.ref == ref and type(got.ref) is type(ref)


DAY = 86_400_000
RETENTION = {"diffusion": 365 * DAY, "alert": 90 * DAY}


def test_inbox_erase_keeps_the_id_and_drops_the_body(node_store: NodeStore) -> None:
    node_store.inbox_put(inbox_item(1, handling="H1,H2"))
    node_store.inbox_erase([mid(1)], "purged", 5_000)
    got = node_store.inbox_get(mid(1))
    assert got == inbox_item(1, handling="H1,H2", subject="", text="", data={},
                             state="purged", erased_ms=5_000)
    assert node_store.inbox_has(mid(1))  # a late copy is still recognised
    node_store.inbox_erase([mid(2)], "purged", 5_000)  # unknown: ignored, not created
    assert not node_store.inbox_has(mid(2))


def test_retention_due_by_kind_and_renewal(node_store: NodeStore) -> None:
    node_store.inbox_put(inbox_item(1, kind="diffusion", received_ms=0))
    node_store.inbox_put(inbox_item(2, kind="alert", received_ms=10))
    node_store.inbox_put(inbox_item(3, kind="message", received_ms=0))  # no rule: kept
    node_store.inbox_put(inbox_item(4, kind="alert", received_ms=0, keep_until_ms=400 * DAY))
    assert node_store.inbox_next_retention(RETENTION) == 90 * DAY + 10
    assert node_store.inbox_retention_due(RETENTION, 90 * DAY + 9, 10) == []
    due = node_store.inbox_retention_due(RETENTION, 366 * DAY, 10)
    assert [i.msg_id for i in due] == [mid(2), mid(1)]  # the earliest first
    assert [i.msg_id for i in node_store.inbox_retention_due(RETENTION, 366 * DAY, 1)] == [
        mid(2)]
    node_store.inbox_erase([mid(2)], "purged", 91 * DAY)
    assert node_store.inbox_next_retention(RETENTION) == 365 * DAY
    node_store.inbox_erase([mid(1)], "purged", 365 * DAY)
    assert node_store.inbox_next_retention(RETENTION) == 400 * DAY  # the renewed alert
    assert node_store.inbox_next_retention({}) is None
    assert node_store.inbox_retention_due({}, 10**15, 10) == []


def test_inbox_set_state(node_store: NodeStore) -> None:
    node_store.inbox_put(inbox_item(1))
    node_store.inbox_set_state(mid(1), "read")
    assert node_store.inbox_get(mid(1)) == inbox_item(1, state="read")
    node_store.inbox_set_state(mid(2), "read")  # unknown: ignored, not created
    assert not node_store.inbox_has(mid(2))


# -- node: sequence numbers ------------------------------------------------------------------

def test_seq_get_put(node_store: NodeStore) -> None:
    assert node_store.seq_get(KID) == (0, set())
    missing = {4, 2, 9}
    node_store.seq_put(KID, 10, missing)
    missing.add(1)  # the store keeps its own copy
    assert node_store.seq_get(KID) == (10, {2, 4, 9})
    got = node_store.seq_get(KID)
    got[1].clear()
    assert node_store.seq_get(KID) == (10, {2, 4, 9})
    node_store.seq_put(KID, 11, set())
    assert node_store.seq_get(KID) == (11, set())
    assert node_store.seq_get(b"\x02" * 8) == (0, set())


# -- router ----------------------------------------------------------------------------------

@pytest.mark.parametrize("tlp", [None, *TLP])
def test_router_record_prior_envelope(router_store: RouterStore, tlp: TLP | None) -> None:
    p = prior(1, tlp=tlp)
    assert router_store.prior(p.id) is None
    assert router_store.envelope(p.id) is None
    router_store.record(p, b"envelope-bytes", 5_000)
    assert router_store.prior(p.id) == p
    assert router_store.envelope(p.id) == b"envelope-bytes"


def test_router_prior_without_caveats_or_handling(router_store: RouterStore) -> None:
    p = prior(2, label=Label("UNCLASSIFIED"), handling=HandlingCodes(), tlp=None,
              recipients=frozenset({"GS"}))
    router_store.record(p, b"e", 1)
    assert router_store.prior(p.id) == p


def test_router_record_again_replaces(router_store: RouterStore) -> None:
    router_store.record(prior(1), b"first", 5_000)
    router_store.record(prior(1, sender="DE"), b"second", 6_000)
    assert router_store.envelope(mid(1)) == b"second"
    got = router_store.prior(mid(1))
    assert got is not None and got.sender == "DE"


def test_router_next_seq_counts_per_recipient(router_store: RouterStore) -> None:
    assert [router_store.next_seq("FR") for _ in range(3)] == [1, 2, 3]
    assert router_store.next_seq("DE") == 1
    assert router_store.next_seq("FR") == 4


def test_the_sqlite_router_store_says_which_counters_moved_and_raises_them(
        tmp_path: Path) -> None:
    from i24net.store import SqliteRouterStore

    with SqliteRouterStore(tmp_path / "router.sqlite") as store:
        store.next_seq("FR")
        store.next_seq("FR")
        store.next_seq("DE")
        assert store.take_numbered() == {"FR": 2, "DE": 1}
        assert store.take_numbered() == {}
        # a copy from elsewhere raises a counter, never lowers one
        store.raise_seqs({"FR": 1, "DE": 7, "US": 3})
        assert (store.seq("FR"), store.seq("DE"), store.seq("US"), store.seq("JP")) == \
            (2, 7, 3, 0)
        assert store.next_seq("DE") == 8 and store.take_numbered() == {"DE": 8}


def test_router_logged_in_seq_order(router_store: RouterStore) -> None:
    for seq in (4, 1, 2):
        router_store.log_delivery("FR", seq, mid(seq), b"frame-%d" % seq)
    router_store.log_delivery("DE", 3, mid(3), b"de-3")
    assert router_store.logged("FR", 1, 5) == [b"frame-1", b"frame-2", b"frame-4"]
    assert router_store.logged("FR", 2, 2) == [b"frame-2"]
    assert router_store.logged("FR", 5, 9) == []
    assert router_store.logged("FR", 3, 1) == []
    assert router_store.logged("DE", 1, 10) == [b"de-3"]
    router_store.log_delivery("FR", 2, mid(2), b"again")  # same (recipient, seq): replaced
    assert router_store.logged("FR", 2, 2) == [b"again"]


def test_router_receipts(router_store: RouterStore) -> None:
    assert router_store.receipted(mid(1)) == set()
    router_store.add_receipt(mid(1), "DE")
    router_store.add_receipt(mid(1), "BE")
    router_store.add_receipt(mid(1), "DE")
    router_store.add_receipt(mid(2), "GS")
    got = router_store.receipted(mid(1))
    assert got == {"DE", "BE"}
    got.add("XX")  # a copy
    assert router_store.receipted(mid(1)) == {"DE", "BE"}


def test_router_prune(router_store: RouterStore) -> None:
    router_store.record(prior(1), b"old", 100)
    router_store.record(prior(2), b"new", 200)
    router_store.add_receipt(mid(1), "DE")
    router_store.add_receipt(mid(2), "DE")
    assert router_store.next_seq("DE") == 1
    assert router_store.prune(150) == 1
    assert router_store.prior(mid(1)) is None and router_store.envelope(mid(1)) is None
    assert router_store.receipted(mid(1)) == set()
    assert router_store.prior(mid(2)) == prior(2)
    assert router_store.receipted(mid(2)) == {"DE"}
    assert router_store.prune(200) == 0  # expiry is exclusive: gone only after it
    assert router_store.next_seq("DE") == 2  # counters are never pruned


def test_router_prune_drops_the_delivery_log(router_store: RouterStore) -> None:
    router_store.record(prior(1), b"old", 100)
    router_store.record(prior(2), b"new", 200)
    router_store.log_delivery("DE", 1, mid(1), b"f1")
    router_store.log_delivery("DE", 2, mid(2), b"f2")
    router_store.prune(150)
    assert router_store.logged("DE", 1, 2) == [b"f2"]


# -- SQLite only: property round trips -------------------------------------------------------

_text = st.text(max_size=40)
_ints = st.integers(min_value=-(2**63), max_value=2**63 - 1)
_leaf = st.none() | st.booleans() | _ints | st.floats(allow_nan=False) | _text | st.binary(
    max_size=40)
_data = st.dictionaries(_text, st.recursive(
    _leaf, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_text, inner,
                                                                        max_size=4),
    max_leaves=12), max_size=6)
_ids = st.binary(min_size=16, max_size=16)
_agencies = st.text("ABCDEFGHIJKLMNOPQRSTUVWXYZ", min_size=2, max_size=6)


def test_column_lists_cover_the_dataclasses() -> None:
    # A new field on OutboxEntry or InboxItem needs a column (and a schema version).
    assert {f.name for f in fields(OutboxEntry)} == set(OUTBOX_COLUMNS) - {"active"}
    assert {f.name for f in fields(InboxItem)} == set(INBOX_COLUMNS)


def test_sqlite_round_trips_arbitrary_entries(tmp_path: Path) -> None:
    with SqliteNodeStore(tmp_path / "node.sqlite") as store:
        @settings(max_examples=60)
        @given(st.builds(OutboxEntry, _ids, st.binary(max_size=200), _text, _ints,
                         st.lists(_agencies, max_size=5).map(tuple), _ints, _ints,
                         st.sampled_from(OutboxState), _text,
                         st.dictionaries(_agencies, _text, max_size=4), _ints, _ints, _text),
               st.builds(InboxItem, _ids, _text, _text, _text, _ints, _text,
                         st.text(max_size=400), _data, _ints, _ints,
                         st.none() | st.binary(max_size=20), _text))
        def check(entry: OutboxEntry, item: InboxItem) -> None:
            store.outbox_put(entry)
            store.inbox_put(item)
            assert store.outbox_get(entry.msg_id) == entry
            assert store.inbox_get(item.msg_id) == item

        check()


def test_sqlite_round_trips_arbitrary_priors(tmp_path: Path) -> None:
    names = st.from_regex(r"\A[A-Z0-9][A-Z0-9_+-]{0,8}\Z")
    handling = st.frozensets(st.sampled_from([Handling.H0, Handling.H1, Handling.H2])).map(
        HandlingCodes) | st.frozensets(st.sampled_from(list(Handling))).map(
        lambda c: HandlingCodes(c | {Handling.H3}, "restricted"))
    with SqliteRouterStore(tmp_path / "router.sqlite") as store:
        @settings(max_examples=60)
        @given(st.builds(PriorMessage, _ids, _agencies, st.frozensets(_agencies, max_size=6),
                         st.builds(Label, names, st.frozensets(names, max_size=3)), handling,
                         st.none() | st.sampled_from(list(TLP)), st.binary(min_size=32,
                                                                           max_size=32)))
        def check(p: PriorMessage) -> None:
            store.record(p, b"env", 1)
            assert store.prior(p.id) == p

        check()


# -- SQLite only: reopen, durability, concurrency --------------------------------------------

def test_router_state_persists_across_reopen(tmp_path: Path) -> None:
    path = tmp_path / "router.sqlite"
    with SqliteRouterStore(path) as store:
        assert [store.next_seq("FR") for _ in range(3)] == [1, 2, 3]
        store.record(prior(1), b"env", 500)
        store.log_delivery("FR", 3, mid(1), b"frame")
        store.add_receipt(mid(1), "DE")
    with SqliteRouterStore(path) as store:
        assert store.next_seq("FR") == 4
        assert store.next_seq("DE") == 1
        assert store.prior(mid(1)) == prior(1)
        assert store.envelope(mid(1)) == b"env"
        assert store.logged("FR", 1, 3) == [b"frame"]
        assert store.receipted(mid(1)) == {"DE"}


def test_node_state_persists_across_reopen(tmp_path: Path) -> None:
    path = tmp_path / "node.sqlite"
    with SqliteNodeStore(path, synchronous="FULL") as store:
        store.outbox_put(outbox_entry(1))
        store.inbox_put(inbox_item(2))
        store.seq_put(KID, 7, {5})
    with SqliteNodeStore(path) as store:
        assert store.outbox_get(mid(1)) == outbox_entry(1)
        assert store.inbox_get(mid(2)) == inbox_item(2)
        assert store.seq_get(KID) == (7, {5})


_KILLED_WRITER = textwrap.dedent("""
    import os, signal, sys
    sys.path[:0] = [{tests!r}]
    from test_store import KID, inbox_item, mid, outbox_entry
    from i24net.store import SqliteNodeStore, SqliteRouterStore
    node = SqliteNodeStore({node!r})
    node.outbox_put(outbox_entry(1))
    node.inbox_put(inbox_item(2))
    node.seq_put(KID, 3, {{2}})
    router = SqliteRouterStore({router!r})
    for _ in range(5):
        router.next_seq("FR")
    router.add_receipt(mid(1), "DE")
    os.kill(os.getpid(), signal.SIGKILL)
""")


def test_writes_survive_sigkill(tmp_path: Path) -> None:
    """What a store returned from is on disk, even if the process dies the next instant."""
    node, router = tmp_path / "node.sqlite", tmp_path / "router.sqlite"
    code = _KILLED_WRITER.format(tests=str(Path(__file__).parent), node=str(node),
                                 router=str(router))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()
    assert (tmp_path / "node.sqlite-wal").exists()  # killed: never checkpointed or closed
    with SqliteNodeStore(node) as store:
        assert store.outbox_get(mid(1)) == outbox_entry(1)
        assert store.inbox_get(mid(2)) == inbox_item(2)
        assert store.seq_get(KID) == (3, {2})
    with SqliteRouterStore(router) as rs:
        assert rs.next_seq("FR") == 6
        assert rs.receipted(mid(1)) == {"DE"}


def test_readonly_reader_beside_the_writer(tmp_path: Path) -> None:
    path = tmp_path / "node.sqlite"
    with SqliteNodeStore(path) as writer:
        writer.inbox_put(inbox_item(1))
        with SqliteNodeStore(path, readonly=True) as reader:
            assert reader.inbox_get(mid(1)) == inbox_item(1)
            writer.inbox_put(inbox_item(2))  # the writer is not blocked by the reader
            writer.outbox_put(outbox_entry(3))
            assert reader.inbox_has(mid(2))  # and the reader sees each commit
            assert reader.counts()["outbox.queued"] == 1
            with pytest.raises(StoreError) as info:
                reader.inbox_set_state(mid(1), "read")
            assert info.value.reason == "store.readonly"
    with SqliteNodeStore(path, readonly=True) as reader:  # and after the writer is gone
        assert len(reader.inbox_list()) == 2


def test_second_writer_waits_for_the_lock(tmp_path: Path) -> None:
    # ``i24net publish`` writes into a running node's outbox: two writers, one file.
    path = tmp_path / "node.sqlite"
    with SqliteNodeStore(path) as daemon, SqliteNodeStore(path) as cli:
        cli.outbox_put(outbox_entry(1))
        assert [e.msg_id for e in daemon.outbox_active()] == [mid(1)]
        blocker = sqlite3.connect(path, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")
        try:
            with SqliteNodeStore(path, busy_timeout_ms=50) as impatient, \
                    pytest.raises(StoreError) as info:
                impatient.outbox_put(outbox_entry(2))
            assert info.value.reason == "store.busy"
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        assert daemon.outbox_get(mid(2)) is None


# -- SQLite only: opening ------------------------------------------------------------------

def test_new_file_is_private(tmp_path: Path) -> None:
    with SqliteNodeStore(tmp_path / "node.sqlite"):
        pass
    assert (tmp_path / "node.sqlite").stat().st_mode & 0o777 == 0o600


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "node.sqlite"
    SqliteNodeStore(path).close()
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE schema_version SET version = ?", (SqliteNodeStore.VERSION + 1,))
    conn.close()
    for readonly in (False, True):
        with pytest.raises(StoreError, match="newer i24net") as info:
            SqliteNodeStore(path, readonly=readonly)
        assert info.value.reason == "store.schema"


def test_a_v1_node_store_is_migrated_by_its_writer(tmp_path: Path) -> None:
    """A store from before the hand-over log: its node migrates it, a reader says how."""
    path = tmp_path / "node.sqlite"
    with SqliteNodeStore(path) as store:
        store.inbox_put(InboxItem(b"m" * 16, "NCB-FR", "message", "UNCLASSIFIED", 3, "s", "",
                                  {}, 1, 2))
        store.outbox_put(OutboxEntry(b"o" * 16, b"raw", "message", 3, ("NCB-DE",), 1, 9,
                                     decided_ms=5))
    with sqlite3.connect(path) as conn:
        conn.execute("DROP TABLE handovers")
        conn.execute("ALTER TABLE outbox DROP COLUMN decided_ms")
        for column in (*V3_INBOX_COLUMNS, *V4_INBOX_COLUMNS):
            conn.execute(f"ALTER TABLE inbox DROP COLUMN {column}")
        conn.execute("UPDATE schema_version SET version = 1")
    conn.close()
    with pytest.raises(StoreError, match="start its node once") as info:
        SqliteNodeStore(path, readonly=True)
    assert info.value.reason == "store.schema"
    with SqliteNodeStore(path) as store:  # migrates, keeping the inbox and the outbox
        assert store.inbox_has(b"m" * 16) and store.handovers() == []
        entry = store.outbox_get(b"o" * 16)
        assert entry is not None and entry.decided_ms == 0  # not recorded before v2
    with SqliteNodeStore(path, readonly=True) as store:
        assert store.handovers() == []
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT version FROM schema_version").fetchone()[0] == 4
    conn.close()


V3_INBOX_COLUMNS = ("handling", "keep_until_ms", "erased_ms")
V4_INBOX_COLUMNS = ("agreement",)


def test_a_v2_node_store_gains_retention_and_loses_the_bodies_of_deleted_items(
        tmp_path: Path) -> None:
    """Version 3 records handling codes, renewals and erasures; a diffusion deleted by order
    under version 2 kept its body, which the migration erases."""
    path = tmp_path / "node.sqlite"
    with SqliteNodeStore(path) as store:
        store.inbox_put(inbox_item(1, kind="diffusion", state="deleted"))
        store.inbox_put(inbox_item(2, kind="diffusion"))
    with sqlite3.connect(path) as conn:
        for column in (*V3_INBOX_COLUMNS, *V4_INBOX_COLUMNS):
            conn.execute(f"ALTER TABLE inbox DROP COLUMN {column}")
        conn.execute("UPDATE schema_version SET version = 2")
    conn.close()
    with SqliteNodeStore(path) as store:
        deleted, kept = store.inbox_get(mid(1)), store.inbox_get(mid(2))
        assert deleted is not None and kept is not None
        assert (deleted.subject, deleted.text, deleted.data, deleted.state) == (
            "", "", {}, "deleted")
        assert deleted.erased_ms == deleted.received_ms
        assert kept.subject == inbox_item(2).subject and kept.erased_ms == 0


def test_a_v3_node_store_gains_the_agreement_column(tmp_path: Path) -> None:
    """Version 4 records the agreement a message crossed organisations under; items
    stored before hold none."""
    path = tmp_path / "node.sqlite"
    with SqliteNodeStore(path) as store:
        store.inbox_put(inbox_item(1))
    with sqlite3.connect(path) as conn:
        conn.execute("ALTER TABLE inbox DROP COLUMN agreement")
        conn.execute("UPDATE schema_version SET version = 3")
    conn.close()
    with SqliteNodeStore(path) as store:
        old = store.inbox_get(mid(1))
        assert old is not None and old.agreement == ""
        store.inbox_put(replace(inbox_item(2), agreement="INTERPOL-EUROPOL"))
        new = store.inbox_get(mid(2))
        assert new is not None and new.agreement == "INTERPOL-EUROPOL"


def test_every_hand_over_is_logged_even_a_repeated_one(tmp_path: Path) -> None:
    """The inbox keeps one row per message; the hand-over log keeps every hand-over, so an
    application consumer can see a message handed over twice."""
    with SqliteNodeStore(tmp_path / "node.sqlite") as store:
        items = [InboxItem(bytes([i]) * 16, "NCB-FR", "message", "UNCLASSIFIED", 3, f"s{i}",
                           "", {}, 1, 10 + i) for i in range(3)]
        for item in (*items, items[1]):
            store.inbox_put(item)
        log = store.handovers()
        assert [(h.seq, h.msg_id, h.subject, h.received_ms) for h in log] == [
            (1, items[0].msg_id, "s0", 10), (2, items[1].msg_id, "s1", 11),
            (3, items[2].msg_id, "s2", 12), (4, items[1].msg_id, "s1", 11)]
        assert store.handovers(after=2, limit=1) == [log[2]]
        assert store.counts()["inbox.total"] == 3


@pytest.mark.parametrize("make", [
    lambda p: SqliteRouterStore(p).close(),
    lambda p: sqlite3.connect(p).execute("CREATE TABLE other (x)").connection.close(),
    lambda p: p.write_bytes(b"not a database" * 100),
])
def test_foreign_files_are_refused(tmp_path: Path, make: Any) -> None:
    path = tmp_path / "node.sqlite"
    make(path)
    with pytest.raises(StoreError) as info:
        SqliteNodeStore(path)
    assert info.value.reason in ("store.schema", "store.corrupt")


def test_opening_errors(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="no node store") as info:
        SqliteNodeStore(tmp_path / "absent.sqlite", readonly=True)
    assert info.value.reason == "store.open"
    assert not (tmp_path / "absent.sqlite").exists()
    with pytest.raises(StoreError) as info:
        SqliteNodeStore(tmp_path / "no-such-dir" / "node.sqlite")
    assert info.value.reason == "store.open"
    with pytest.raises(Exception, match="NORMAL or FULL"):
        SqliteNodeStore(tmp_path / "node.sqlite", synchronous="OFF")


def test_pragmas_and_close(tmp_path: Path) -> None:
    store = SqliteRouterStore(tmp_path / "router.sqlite")
    assert store.rows("PRAGMA journal_mode")[0][0] == "wal"
    assert store.rows("PRAGMA synchronous")[0][0] == 2  # FULL, the default
    store.close()
    store.close()  # idempotent
    with pytest.raises(StoreError) as info:
        store.next_seq("FR")
    assert info.value.reason == "store.closed"
    with SqliteRouterStore(tmp_path / "router.sqlite", synchronous="normal") as again:
        assert again.rows("PRAGMA synchronous")[0][0] == 1  # NORMAL


# -- SQLite only: listings for the CLI -------------------------------------------------------

def test_inbox_list(tmp_path: Path) -> None:
    with SqliteNodeStore(tmp_path / "node.sqlite") as store:
        for n, kind in enumerate(["message", "notice", "message", "diffusion"]):
            store.inbox_put(inbox_item(n, kind=kind, received_ms=100 * n))
        store.inbox_put(inbox_item(9, received_ms=100))  # same time as #1: later put first
        assert [i.msg_id for i in store.inbox_list()] == [mid(3), mid(2), mid(9), mid(1),
                                                         mid(0)]
        assert [i.msg_id for i in store.inbox_list(limit=2)] == [mid(3), mid(2)]
        assert [i.msg_id for i in store.inbox_list(since_ms=200)] == [mid(3), mid(2)]
        assert [i.msg_id for i in store.inbox_list(kinds=["notice", "diffusion"])] == [
            mid(3), mid(1)]
        assert store.inbox_list(kinds=[]) == []
        assert len(store.inbox_list(limit=None)) == 5
        assert store.inbox_list(limit=0) == []
        assert store.inbox_list(limit=1)[0] == inbox_item(3, kind="diffusion",
                                                           received_ms=300)


def test_outbox_list_and_counts(tmp_path: Path) -> None:
    with SqliteNodeStore(tmp_path / "node.sqlite") as store:
        assert store.counts() == {
            "inbox.total": 0, "inbox.new": 0, "outbox.total": 0, "outbox.active": 0,
            "outbox.queued": 0, "outbox.accepted": 0, "outbox.refused": 0,
            "outbox.delivered": 0, "outbox.expired": 0}
        for n, state in enumerate(["queued", "delivered", "accepted", "delivered"]):
            store.outbox_put(outbox_entry(n, state=state))
        store.inbox_put(inbox_item(1))
        store.inbox_put(inbox_item(2, state="read"))
        assert [e.msg_id for e in store.outbox_list()] == [mid(3), mid(2), mid(1), mid(0)]
        assert [e.msg_id for e in store.outbox_list(limit=1)] == [mid(3)]
        counts = store.counts()
        assert counts["outbox.total"] == 4 and counts["outbox.active"] == 2
        assert counts["outbox.delivered"] == 2 and counts["outbox.queued"] == 1
        assert counts["inbox.total"] == 2 and counts["inbox.new"] == 1
        assert counts["inbox.read"] == 1


# -- group commit --------------------------------------------------------------------------------

def test_a_batch_commits_once_and_a_failing_step_rolls_back_alone(tmp_path: Path) -> None:
    path = tmp_path / "node.sqlite"
    with SqliteNodeStore(path) as store:
        with store.batch():
            store.inbox_put(inbox_item(1))
            with pytest.raises(StoreError), store.transaction("a step that fails") as conn:
                conn.execute("INSERT INTO inbox (msg_id) VALUES (?)", (mid(2),))  # NOT NULL
            store.inbox_put(inbox_item(3))
            with store.batch():  # nested: joins the outer one
                store.outbox_put(outbox_entry(4))
            # the batch sees its own writes; another connection does not, yet
            assert store.inbox_has(mid(1)) and store.outbox_get(mid(4)) is not None
            with SqliteNodeStore(path, readonly=True) as reader:
                assert not reader.inbox_has(mid(1))
        with SqliteNodeStore(path, readonly=True) as reader:
            assert reader.inbox_has(mid(1)) and reader.inbox_has(mid(3))
            assert not reader.inbox_has(mid(2))
            assert reader.outbox_get(mid(4)) is not None


def test_a_batch_whose_body_raises_keeps_nothing(tmp_path: Path) -> None:
    with SqliteNodeStore(tmp_path / "node.sqlite") as store:
        with pytest.raises(RuntimeError), store.batch():
            store.inbox_put(inbox_item(1))
            raise RuntimeError("the daemon fails half-way")
        assert not store.inbox_has(mid(1))
        store.inbox_put(inbox_item(2))  # and the store works on
        assert store.inbox_has(mid(2))
