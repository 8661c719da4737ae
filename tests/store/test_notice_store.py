"""The notice desk's durable register: ``SqliteNoticeStore`` and the desk over it.

The store tests persist, reopen and compare. The flow tests run the demo network in memory
(``Net`` from ``tests/core/netfixtures``: real signed envelopes, a router and a node per
agency, frames pumped by hand) with the GS's desk over each ``DeskStore`` — memory and
SQLite — and restart the GS in the middle: a new node machine and a new desk over the same
stores must go on numbering and still cancel what the old one published.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from core.netfixtures import DAY, T0, Net, Rng, header, keys_for

from i24net.core.envelope import Body
from i24net.core.errors import StateError
from i24net.core.labels import HandlingCodes, Label, Precedence
from i24net.core.lifecycle import (
    Carriage,
    DeskEntry,
    DeskStore,
    DiffusionRecord,
    MemoryDeskStore,
    NoticeDesk,
    install_lifecycle,
    order_deletion,
)
from i24net.core.node import NodeMachine
from i24net.core.notices import (
    NoticeColour,
    NoticeEvent,
    NoticeRegistry,
    NoticeState,
    RegistrySnapshot,
    apply,
    request,
)
from i24net.store import StoreError
from i24net.store.notices import SqliteNoticeStore

GS = "GS-LYON"
RED = {"colour": "RED", "subject": "John DOE", "offence": "homicide", "warrant": "W-1"}
CARRIAGE = Carriage(Label("RESTRICTED"), Precedence.PRIORITY,
                    HandlingCodes.parse(["H0", "H3"], "no use in court"))


# -- the store on its own -----------------------------------------------------------------


def published_entry(rid: str = "aa" * 16, number: str = "A-1/11-2023") -> DeskEntry:
    reg = NoticeRegistry(GS)
    reg.request(request_id=rid, requester="NCB-FR", colour=NoticeColour.RED,
                fields={k: v for k, v in RED.items() if k != "colour"}, now_ms=T0)
    notice = reg.review(rid, approve=True, actor=GS, now_ms=T0 + 1)
    assert notice.number == number
    return DeskEntry(notice, CARRIAGE, frozenset({"NCB-DE", "NCB-US"}), b"\x01" * 16)


def test_every_field_survives_a_reopen(tmp_path: Path) -> None:
    path = tmp_path / "notices-GS-LYON.sqlite"
    entry = published_entry()
    diffusion = DiffusionRecord(b"\x02" * 16, "NCB-FR", ("NCB-DE", "EUROPOL"),
                                Carriage(Label("CONFIDENTIAL", frozenset({"EU"}))), T0,
                                "diffusion.article3", b"\x03" * 16)
    with SqliteNoticeStore(path) as store:
        assert store.revision() == 0
        assert store.save([entry], {2023: 1}, [diffusion]) == 1
    with SqliteNoticeStore(path, readonly=True) as store:
        state = store.load()
    assert state.revision == 1
    assert state.entries == (entry,)  # the notice with its history, holders, carriage, id
    assert state.entries[0].notice.history == entry.notice.history
    assert dict(state.sequence) == {2023: 1}
    assert state.diffusions == (diffusion,)


def test_a_sequence_never_moves_back(tmp_path: Path) -> None:
    with SqliteNoticeStore(tmp_path / "n.sqlite") as store:
        store.save([], {2023: 5}, [])
        store.save([], {2023: 3, 2024: 1}, [])  # a stale writer
        assert dict(store.load().sequence) == {2023: 5, 2024: 1}


def test_a_damaged_record_is_a_store_error_not_a_half_read_notice(tmp_path: Path) -> None:
    path = tmp_path / "n.sqlite"
    with SqliteNoticeStore(path) as store:
        store.save([published_entry()], {2023: 1}, [])
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE notices SET record = x'81a3666f6f01'")  # {"foo": 1}
    with SqliteNoticeStore(path) as store, pytest.raises(StoreError) as info:
        store.load()
    assert info.value.reason == "store.corrupt"
    assert "aaaa" in info.value.message


def test_exclusive_sections_do_not_nest(tmp_path: Path) -> None:
    with SqliteNoticeStore(tmp_path / "n.sqlite") as store, store.exclusive():
        with pytest.raises(StoreError) as info, store.exclusive():
            pass
        assert info.value.reason == "store.nested"


def test_restore_refuses_a_register_that_contradicts_itself() -> None:
    entry = published_entry()
    n = entry.notice
    with pytest.raises(StateError) as info:
        NoticeRegistry.restore(RegistrySnapshot(GS, (n,), {}, {2023: 0}))
    assert info.value.reason == "notice.register-inconsistent"  # would issue A-1 again
    with pytest.raises(StateError):
        NoticeRegistry.restore(RegistrySnapshot(GS, (n,), {"bb" * 16: frozenset({"X"})},
                                                {2023: 1}))
    reg = NoticeRegistry.restore(RegistrySnapshot(GS, (n,), {n.request_id: entry.holders},
                                                  {2023: 1}))
    assert reg.by_number("A-1/11-2023") == n and reg.holders(n.request_id) == entry.holders
    assert reg.snapshot() == RegistrySnapshot(GS, (n,), {n.request_id: entry.holders},
                                              {2023: 1})


# -- the desk over each store, in the in-memory network ------------------------------------

StoreFactory = Callable[[], DeskStore]


@pytest.fixture(params=["memory", "sqlite"])
def desk_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreFactory]:
    """``opener()``: the GS's register; called again, it is the same register reopened."""
    if request.param == "memory":
        mem = MemoryDeskStore()
        yield lambda: mem
        return
    opened: list[SqliteNoticeStore] = []

    def opener() -> DeskStore:
        opened.append(SqliteNoticeStore(tmp_path / "notices-GS-LYON.sqlite"))
        return opened[-1]

    yield opener
    for s in opened:
        s.close()


class World:
    """The demo network with the lifecycle installed, and a GS that can be restarted."""

    def __init__(self, open_store: StoreFactory, *, auto_review: bool = False) -> None:
        self.net = Net()
        self.open_store = open_store
        self.auto_review = auto_review
        self.restarts = 0
        for a, node in self.net.nodes.items():
            desk = install_lifecycle(node, auto_review=auto_review,
                                     store=open_store() if a == GS else None)
            if a == GS:
                assert desk is not None
                self.desk = desk

    @property
    def gs(self) -> NodeMachine:
        return self.net.nodes[GS]

    def restart_gs(self) -> None:
        """A new GS process: new machine and desk over the same node store and register."""
        self.restarts += 1
        node = NodeMachine(GS, keys_for(GS), self.net.directory, self.gs.store,
                           random_bytes=Rng(f"gs-restart-{self.restarts}"))
        desk = install_lifecycle(node, auto_review=self.auto_review, store=self.open_store())
        assert desk is not None
        self.net.nodes[GS], self.desk = node, desk

    def send(self, sender: str, to: list[str], kind: str, data: dict[str, str],
             *, lab: str = "RESTRICTED", ref: bytes | None = None) -> str:
        node = self.net.nodes[sender]
        h = header(sender, to, d=node.directory, kind=kind, lab=lab, now=self.net.now,
                   rng=node.random_bytes, ref=ref)
        node.submit(h, Body(f"{kind} from {sender}", "text", data), self.net.now)
        self.net.pump()
        return h.id_hex

    def decisions(self, agency: str) -> list[dict[str, object]]:
        return [i.data for i in self.net.store(agency).inbox.values()
                if i.kind == "notice-decision"]

    def notice_states(self, msg_id: bytes) -> dict[str, str]:
        return {a: self.net.store(a).inbox[msg_id].state for a in self.net.nodes
                if msg_id in self.net.store(a).inbox}


def test_manual_review_then_restart_then_the_owner_cancels(desk_store: StoreFactory) -> None:
    w = World(desk_store)
    rid = w.send("NCB-FR", [GS], "notice-request", RED)
    notice = w.desk.registry.get(rid)
    assert notice.state is NoticeState.UNDER_REVIEW and notice.number is None
    assert w.decisions("NCB-FR") == [{"decision": "under-review", "request": rid}]

    w.net.now += DAY
    events = w.desk.approve(w.gs, rid, w.net.now)  # what 'i24net notice review --approve' runs
    w.net.pump()
    assert [e.kind for e in events] == ["notice-published", "submit", "submit"]
    number = w.desk.registry.get(rid).number
    assert number == "A-1/11-2023"
    nid = w.desk.notice_ids[rid]
    d = w.net.directory
    everyone = {a for a in set(d.agencies) - {GS}
                if d.scale.dominates(d.agencies[a].clearance, Label("RESTRICTED"))}
    assert "NCB-ZA" not in everyone and len(everyone) == 6  # ZA is not cleared for it
    assert w.net.holders(nid) == everyone
    assert w.desk.registry.holders(rid) == everyone
    assert {"decision": "published", "number": number, "request": rid,
            "notice": nid.hex()} in w.decisions("NCB-FR")

    w.restart_gs()  # the old desk's memory is gone; only the stores remain
    assert w.desk.notice_ids == {rid: nid} and w.desk.by_notice == {nid: rid}
    assert w.desk.registry.holders(rid) == everyone

    w.net.now += DAY
    w.send("NCB-FR", [GS], "notice-cancel-request", {"number": number})
    w.net.settle()
    assert w.desk.registry.get(rid).state is NoticeState.CANCELLED
    assert w.notice_states(nid) == {a: "cancelled" for a in everyone}


def test_numbering_continues_across_a_restart(desk_store: StoreFactory) -> None:
    w = World(desk_store, auto_review=True)
    first = w.send("NCB-FR", [GS], "notice-request", RED)
    w.restart_gs()
    second = w.send("NCB-DE", [GS], "notice-request", {**RED, "subject": "Jane ROE"})
    w.restart_gs()
    assert w.desk.registry.get(first).number == "A-1/11-2023"
    assert w.desk.registry.get(second).number == "A-2/11-2023"
    assert w.desk.resolve("A-2/11-2023") == second and w.desk.resolve(second[:10]) == second


def test_a_refused_cancellation_is_answered(desk_store: StoreFactory) -> None:
    w = World(desk_store, auto_review=True)
    rid = w.send("NCB-FR", [GS], "notice-request", RED)
    number = w.desk.registry.get(rid).number
    w.send("NCB-DE", [GS], "notice-cancel-request", {"number": number})
    w.send("NCB-DE", [GS], "notice-cancel-request", {"number": "A-99/11-2023"})
    refused = [d for d in w.decisions("NCB-DE") if d["decision"] == "cancel-refused"]
    assert [d["reason"] for d in refused] == ["notice.not-owner", "notice.unknown"]
    assert w.desk.registry.get(rid).state is NoticeState.PUBLISHED


def test_an_article3_request_is_refused_and_cannot_be_approved(
        desk_store: StoreFactory) -> None:
    w = World(desk_store)
    rid = w.send("NCB-FR", [GS], "notice-request", {**RED, "offence": "political"})
    assert w.desk.registry.get(rid).state is NoticeState.REFUSED
    assert w.decisions("NCB-FR")[0]["reason"] == "article3.political"
    with pytest.raises(StateError) as info:
        w.desk.approve(w.gs, rid, w.net.now)
    assert info.value.reason == "article3.political"
    assert "Article 3" in info.value.message


def test_withdrawing_a_request_under_review_tells_only_the_requester(
        desk_store: StoreFactory) -> None:
    w = World(desk_store)
    rid = w.send("NCB-FR", [GS], "notice-request", RED)
    w.send("NCB-FR", [GS], "notice-cancel-request", {}, ref=bytes.fromhex(rid))
    assert w.desk.registry.get(rid).state is NoticeState.CANCELLED
    assert w.desk.registry.holders(rid) == frozenset()
    assert [d["decision"] for d in w.decisions("NCB-FR")] == ["under-review", "withdrawn"]
    assert not any(i.kind == "notice-cancel" for a in w.net.nodes
                   for i in w.net.store(a).inbox.values())


def test_nobody_cleared_is_refused_before_the_register_changes(
        desk_store: StoreFactory) -> None:
    w = World(desk_store)
    rid = "cc" * 16
    secret = Carriage(Label("SECRET", frozenset({"CT", "FIN"})))  # only the GS may read it
    draft = request(request_id=rid, requester="NCB-FR", colour=NoticeColour.RED,
                    fields={k: v for k, v in RED.items() if k != "colour"}, now_ms=T0)
    draft = apply(draft, NoticeEvent.SUBMIT_FOR_REVIEW, actor=GS, now_ms=T0)
    w.desk.store.save([DeskEntry(draft, secret)], {}, [])
    with pytest.raises(StateError) as info:
        w.desk.approve(w.gs, rid, T0)
    assert info.value.reason == "notice.no-audience"
    assert w.desk.store.load().entries == (DeskEntry(draft, secret),)
    assert w.desk.registry.get(rid) == draft and w.desk.registry.snapshot().sequence == {}
    assert w.gs.pending() == 0  # nothing queued


def test_a_diffusion_recorded_before_a_restart_can_be_ordered_deleted(
        desk_store: StoreFactory) -> None:
    w = World(desk_store)
    did = bytes.fromhex(w.send("NCB-FR", ["NCB-DE", GS], "diffusion", {}))
    w.restart_gs()
    assert w.desk.diffusions[did].recipients == ("NCB-DE",)
    events = order_deletion(w.gs, w.desk, did, w.net.now, "diffusion.article3")
    w.net.settle()
    assert events[0].kind == "deletion-ordered"
    assert w.net.store("NCB-DE").inbox[did].state == "deleted"
    w.restart_gs()
    assert w.desk.diffusions[did].deletion_reason == "diffusion.article3"
    with pytest.raises(StateError) as info:
        w.desk.order_deletion(w.gs, did, w.net.now, "diffusion.again")
    assert info.value.reason == "diffusion.already-ordered"


def test_two_desks_on_one_file_see_each_others_changes(tmp_path: Path) -> None:
    """The daemon's desk and the CLI's desk: separate connections, one register."""
    path = tmp_path / "notices-GS-LYON.sqlite"
    with SqliteNoticeStore(path) as daemon_store, SqliteNoticeStore(path) as cli_store:
        w = World(lambda: daemon_store)
        first = w.send("NCB-FR", [GS], "notice-request", RED)
        second = w.send("NCB-DE", [GS], "notice-request", {**RED, "subject": "Jane ROE"})
        cli = NoticeDesk(GS, cli_store, auto_review=False)
        cli.approve(w.gs, second, w.net.now)  # the CLI approves the second one first
        w.desk.approve(w.gs, first, w.net.now)  # the daemon's stale copy reloads first
        assert cli.registry.get(second).number == "A-1/11-2023"
        assert w.desk.registry.get(first).number == "A-2/11-2023"
        w.net.pump()
        w.send("NCB-DE", [GS], "notice-cancel-request", {"number": "A-1/11-2023"})
        assert cli.refresh() and cli.registry.get(second).state is NoticeState.CANCELLED
