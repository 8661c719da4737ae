"""``i24net notice ...`` and ``i24net diffusion ...`` through click's CliRunner, no broker.

The CLI writes to the SQLite files of a demo home exactly as it does beside running daemons.
``HomeNet`` stands in for the daemons: the router machine and one node machine per agency
over the home's own keys and node stores (the GS with its desk over
``state/notices-GS-LYON.sqlite``), ticked on the real clock so they pick up what the CLI
queued, with frames moved in memory. ``restart_gs`` swaps in a fresh GS machine and desk
over the same files, as a daemon restart would.
"""

from __future__ import annotations

import json
import os
import re
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from click.testing import Result

from i24net.config.home import Home, now_ms
from i24net.core.lifecycle import NoticeDesk, install_lifecycle
from i24net.core.node import NodeMachine
from i24net.core.router import MemoryRouterStore, RouterMachine
from i24net.shell.runtime import node_store_path
from i24net.store import SqliteNodeStore
from i24net.store.notices import SqliteNoticeStore, notice_store_path

Run = Callable[..., Result]  # the ``run`` fixture (tests/cli/conftest.py)
GS = "GS-LYON"
NUMBER = re.compile(r"A-1/\d\d-\d{4}")


class HomeNet:
    """The home's router and nodes as machines, joined in memory, on the real clock."""

    def __init__(self, path: Path, *, auto_review: bool = False) -> None:
        self.home = Home(path)
        self.d = self.home.directory()
        self.auto_review = auto_review
        self.router = RouterMachine(self.d, self.home.router_keys(), MemoryRouterStore())
        self.stores = {a: SqliteNodeStore(node_store_path(self.home, a))
                       for a in self.d.agencies}
        self.desk_stores: list[SqliteNoticeStore] = []
        self.nodes: dict[str, NodeMachine] = {}
        for a in self.d.agencies:
            self._start(a)

    def _start(self, agency: str) -> None:
        node = NodeMachine(agency, self.home.keys(agency), self.d, self.stores[agency],
                           random_bytes=os.urandom)
        store = None
        if agency == GS:
            store = SqliteNoticeStore(notice_store_path(self.home, GS))
            self.desk_stores.append(store)
        desk = install_lifecycle(node, auto_review=self.auto_review, store=store)
        if desk is not None:
            self.desk: NoticeDesk = desk
        self.nodes[agency] = node

    def restart_gs(self) -> None:
        self._start(GS)

    def pump(self, rounds: int = 3) -> None:
        """Tick every node (picking up the CLI's entries) and move frames until quiet."""
        for _ in range(rounds):
            now = now_ms()
            for node in self.nodes.values():
                node.handle_timer(now)
            wire = [(t, p) for n in self.nodes.values() for t, p, _ in n.pop(10_000)]
            while wire:
                topic, payload = wire.pop(0)
                head, _, agency = topic.rpartition("/")
                if head.endswith("/submit"):
                    self.router.handle(topic, payload, now_ms())
                else:
                    self.nodes[agency].handle(topic, payload, now_ms())
                if not wire:
                    wire = [(t, p) for n in self.nodes.values() for t, p, _ in n.pop(10_000)]
                    wire += [(t, p) for t, p, _ in self.router.pop(now_ms(), 10_000)]

    def inbox(self, agency: str, kind: str) -> list[tuple[bytes, str, dict[str, object]]]:
        return [(i.msg_id, i.state, i.data)
                for i in self.stores[agency].inbox_list(limit=None, kinds=[kind])]

    def close(self) -> None:
        for s in [*self.stores.values(), *self.desk_stores]:
            s.close()


@pytest.fixture
def net(home: Path) -> Iterator[HomeNet]:
    n = HomeNet(home)
    yield n
    n.close()


def ok(result: Result) -> Result:
    assert result.exit_code == 0, (result.output, result.stderr)
    return result


def request(run: Run, home: Path, *extra: str, agency: str = "NCB-FR",
            offence: str = "homicide") -> str:
    out = ok(run("notice", "request", "--queue", "--home", home, "--as", agency, "--colour", "RED",
                 "--subject", "John DOE", "--offence", offence, "--warrant", "W-1", "-q",
                 *extra))
    rid = out.stdout.strip()
    assert re.fullmatch(r"[0-9a-f]{32}", rid)
    return rid


def register(run: Run, home: Path) -> dict[str, dict[str, object]]:
    rows = json.loads(ok(run("notice", "list", "--home", home, "--json")).stdout)
    return {r["request_id"]: r for r in rows}


def gs_outbox(home: Path) -> list[tuple[str, tuple[str, ...], int]]:
    with SqliteNodeStore(node_store_path(Home(home), GS), readonly=True) as s:
        return [(e.kind, e.recipients, e.next_ms) for e in reversed(s.outbox_list(None))]


# -- request ------------------------------------------------------------------------------


def test_request_queues_a_notice_request_for_the_gs(run: Run, home: Path) -> None:
    result = ok(run("notice", "request", "--queue", "--home", home, "--as", "NCB-FR", "--colour", "red",
                    "--subject", "John DOE", "--offence", "homicide", "--warrant", "W-1"))
    rid = re.search(r"request ([0-9a-f]{32})", result.stdout)
    assert rid, result.stdout
    with SqliteNodeStore(node_store_path(Home(home), "NCB-FR"), readonly=True) as s:
        entry = s.outbox_get(bytes.fromhex(rid[1]))
    assert entry is not None
    assert (entry.kind, entry.recipients, entry.next_ms) == ("notice-request", (GS,), 0)


def test_an_incomplete_red_request_is_a_usage_error(run: Run, home: Path) -> None:
    result = run("notice", "request", "--queue", "--home", home, "--as", "NCB-FR", "--colour", "RED",
                 "--subject", "John DOE", "--offence", "homicide")
    assert result.exit_code == 2 and "warrant" in result.stderr


def test_a_request_wait_reports_the_publication(run: Run, home: Path) -> None:
    stop = threading.Event()

    def daemons() -> None:  # SQLite connections belong to the thread that opened them
        n = HomeNet(home, auto_review=True)
        try:
            while not stop.is_set():
                n.pump(rounds=1)
                stop.wait(0.05)
        finally:
            n.close()

    t = threading.Thread(target=daemons, name="home-net")
    t.start()
    try:
        result = ok(run("notice", "request", "--queue", "--home", home, "--as", "NCB-FR", "--colour",
                        "RED", "--subject", "John DOE", "--offence", "homicide",
                        "--warrant", "W-1", "--wait", "20"))
    finally:
        stop.set()
        t.join()
    assert "published as notice A-1/" in result.stdout


def test_a_request_wait_without_daemons_times_out(run: Run, home: Path) -> None:
    result = run("notice", "request", "--queue", "--home", home, "--as", "NCB-FR", "--colour", "RED",
                 "--subject", "John DOE", "--offence", "homicide", "--warrant", "W-1",
                 "--wait", "0.3")
    assert result.exit_code == 4 and "not delivered yet" in result.stderr


# -- manual review, end to end -----------------------------------------------------------


def test_manual_review_approve_restart_and_owner_cancel(run: Run, home: Path,
                                                        net: HomeNet) -> None:
    rid = request(run, home)
    net.pump()
    assert register(run, home)[rid]["state"] == "under-review"
    assert [d["decision"] for _, _, d in net.inbox("NCB-FR", "notice-decision")] == [
        "under-review"]

    out = ok(run("notice", "review", "--home", home, "--as", GS, rid[:8], "--approve"))
    assert "published notice A-1/" in out.stdout
    kinds = gs_outbox(home)
    cleared = tuple(sorted(set(net.d.agencies) - {GS}))  # OFFICIAL-USE: everyone
    assert ("notice", cleared, 0) in kinds and ("notice-decision", ("NCB-FR",), 0) in kinds
    entry = register(run, home)[rid]
    number = str(entry["number"])
    assert entry["state"] == "published" and NUMBER.fullmatch(number)
    assert entry["holders"] == list(cleared)

    net.pump()
    held = json.loads(ok(run("notice", "list", "--home", home, "--as", "NCB-DE",
                             "--json")).stdout)
    assert [(h["number"], h["state"]) for h in held] == [(number, "new")]

    net.restart_gs()  # a new desk over the same register
    out = ok(run("notice", "cancel", "--queue", "--home", home, "--as", "NCB-FR", number))
    assert "notice-cancel-request" in out.stdout
    net.pump()
    assert register(run, home)[rid]["state"] == "cancelled"
    for agency in cleared:
        assert [s for _, s, _ in net.inbox(agency, "notice")] == ["cancelled"], agency


def test_refuse_sends_the_reason_to_the_requester(run: Run, home: Path,
                                                  net: HomeNet) -> None:
    rid = request(run, home)
    net.pump()
    ok(run("notice", "review", "--home", home, "--as", GS, rid, "--refuse",
           "Insufficient data"))
    assert register(run, home)[rid]["reason"] == "insufficient-data"
    net.pump()
    decisions = [d for _, _, d in net.inbox("NCB-FR", "notice-decision")]
    assert {"decision": "refused", "reason": "insufficient-data", "request": rid} in decisions


def test_an_article3_request_cannot_be_approved(run: Run, home: Path, net: HomeNet) -> None:
    result = run("notice", "request", "--queue", "--home", home, "--as", "NCB-FR", "--colour", "RED",
                 "--subject", "John DOE", "--offence", "political", "--warrant", "W-1")
    assert result.exit_code == 0 and "will refuse it" in result.stderr
    net.pump()
    rid = next(iter(register(run, home)))
    result = run("notice", "review", "--home", home, "--as", GS, rid, "--approve")
    assert result.exit_code == 3
    assert "Article 3" in result.stderr and "article3.political" in result.stderr


def test_only_the_notice_authority_reviews(run: Run, home: Path, net: HomeNet) -> None:
    rid = request(run, home)
    net.pump()
    result = run("notice", "review", "--home", home, "--as", "NCB-FR", rid, "--approve")
    assert result.exit_code == 3 and "notice.not-authority" in result.stderr
    result = run("diffusion", "non-compliant", "--home", home, "--as", "NCB-DE", "00",
                 "--reason", "x")
    assert result.exit_code == 3


def test_review_usage_errors(run: Run, home: Path, net: HomeNet) -> None:
    rid = request(run, home)
    net.pump()
    assert run("notice", "review", "--home", home, "--as", GS, rid).exit_code == 2
    assert run("notice", "review", "--home", home, "--as", GS, "ffff",
               "--approve").exit_code == 2
    assert run("notice", "review", "--home", home, "--as", GS, rid, "--refuse",
               "[bad]").exit_code == 2
    assert register(run, home)[rid]["state"] == "under-review"


def test_the_authority_cancels_and_every_holder_is_told(run: Run, home: Path,
                                                        net: HomeNet) -> None:
    rid = request(run, home)
    net.pump()
    ok(run("notice", "review", "--home", home, "--as", GS, rid, "--approve"))
    net.pump()
    number = str(register(run, home)[rid]["number"])
    out = ok(run("notice", "cancel", "--home", home, "--as", GS, number, "--reason",
                 "notice.arrested"))
    assert "cancelled" in out.stdout
    assert ("notice-cancel", tuple(sorted(set(net.d.agencies) - {GS})), 0) in gs_outbox(home)
    net.pump()
    assert {s for a in net.d.agencies if a != GS for _, s, _ in net.inbox(a, "notice")} == {
        "cancelled"}
    again = run("notice", "cancel", "--home", home, "--as", GS, number)
    assert again.exit_code == 3 and "notice.illegal-transition" in again.stderr


def test_a_diffusion_found_non_compliant_is_deleted(run: Run, home: Path,
                                                    net: HomeNet) -> None:
    ok(run("publish", "--queue", "--home", home, "--as", "NCB-FR", "--to", "NCB-DE", "--kind",
           "diffusion", "--classification", "RESTRICTED", "--subject", "Wanted",
           "--text", "x"))
    net.pump()
    rows = json.loads(ok(run("diffusion", "list", "--home", home, "--json")).stdout)
    assert [(r["sender"], r["recipients"]) for r in rows] == [("NCB-FR", ["NCB-DE"])]
    did = rows[0]["id"]
    ok(run("diffusion", "non-compliant", "--home", home, "--as", GS, did[:10], "--reason",
           "diffusion.article3"))
    assert ("deletion-order", ("NCB-DE", "NCB-FR"), 0) in gs_outbox(home)
    net.pump()
    assert [s for m, s, _ in net.inbox("NCB-DE", "diffusion")] == ["deleted"]
    again = run("diffusion", "non-compliant", "--home", home, "--as", GS, did, "--reason",
                "diffusion.article3")
    assert again.exit_code == 3 and "diffusion.already-ordered" in again.stderr


# -- refusals in words; who may cancel ----------------------------------------------------


def published(run: Run, home: Path, net: HomeNet) -> tuple[str, str]:
    """A RED notice requested by NCB-FR and published: (request id, number)."""
    rid = request(run, home)
    net.pump()
    ok(run("notice", "review", "--home", home, "--as", GS, rid, "--approve"))
    net.pump()
    return rid, str(register(run, home)[rid]["number"])


def test_a_move_the_state_does_not_allow_is_said_in_words(run: Run, home: Path,
                                                          net: HomeNet) -> None:
    rid, number = published(run, home, net)
    again = run("notice", "review", "--home", home, "--as", GS, rid, "--approve")
    assert again.exit_code == 3
    assert (f"cannot approve notice {number}: it is already published; only a request "
            "under review can be approved (notice.illegal-transition)") in again.stderr
    assert "can't handle event" not in again.stderr and "state=" not in again.stderr
    refuse = run("notice", "review", "--home", home, "--as", GS, rid, "--refuse", "late")
    assert refuse.exit_code == 3 and "only a request under review can be refused" in \
        refuse.stderr
    ok(run("notice", "cancel", "--home", home, "--as", GS, number))
    twice = run("notice", "cancel", "--home", home, "--as", GS, number)
    assert twice.exit_code == 3
    assert f"cannot cancel notice {number}: it is already cancelled (notice.cancelled)" in \
        twice.stderr


def test_a_cancel_by_an_agency_that_did_not_request_the_notice_is_refused(
        run: Run, home: Path, net: HomeNet) -> None:
    _, number = published(run, home, net)
    held = json.loads(ok(run("notice", "list", "--home", home, "--as", "NCB-DE",
                             "--json")).stdout)
    before = gs_outbox(home)
    for target in (number, held[0]["id"][:10]):  # by number, and by the held message's id
        result = run("notice", "cancel", "--queue", "--home", home, "--as", "NCB-DE", target)
        assert result.exit_code == 3, result.output
        assert f"NCB-DE did not request notice {number}" in result.stderr
        assert "(notice.not-owner)" in result.stderr and result.stdout == ""
    with SqliteNodeStore(node_store_path(Home(home), "NCB-DE"), readonly=True) as s:
        assert [e.kind for e in s.outbox_list(None)] == []  # nothing was queued
    assert gs_outbox(home) == before
    assert [r["state"] for r in register(run, home).values()] == ["published"]


def test_the_owners_cancel_waits_for_the_authority(run: Run, home: Path,
                                                   net: HomeNet) -> None:
    _, number = published(run, home, net)
    results: list[Result] = []
    t = threading.Thread(target=lambda: results.append(run(
        "notice", "cancel", "--queue", "--home", home, "--as", "NCB-FR", number,
        "--wait", "20")), name="cli")
    t.start()
    while t.is_alive():  # the daemons, in this thread (their stores are bound to it)
        net.pump(rounds=1)
        t.join(0.05)
    (result,) = results
    assert result.exit_code == 0, (result.output, result.stderr)
    assert f"cancelled {number}" in result.stdout
    assert register(run, home)[next(iter(register(run, home)))]["state"] == "cancelled"


# -- --json on the notice actions ---------------------------------------------------------


def test_notice_actions_print_json(run: Run, home: Path, net: HomeNet) -> None:
    out = ok(run("notice", "request", "--queue", "--home", home, "--as", "NCB-FR", "--colour",
                 "RED", "--subject", "John DOE", "--offence", "homicide", "--warrant", "W-1",
                 "--json"))
    req = json.loads(out.stdout)  # one object, nothing else on stdout
    assert (req["requester"], req["authority"], req["colour"], req["state"]) == (
        "NCB-FR", GS, "RED", "queued")
    assert req["number"] is None and req["screening"] is None
    assert run("notice", "request", "--queue", "--home", home, "--as", "NCB-FR", "--colour",
               "RED", "--subject", "x", "--offence", "homicide", "--warrant", "W-1", "-q",
               "--json").exit_code == 2
    net.pump()

    events = json.loads(ok(run("notice", "review", "--home", home, "--as", GS,
                               req["request"], "--approve", "--json")).stdout)
    kinds = [e["event"] for e in events]
    assert "notice-published" in kinds and "submit" in kinds, kinds
    assert all(set(e) <= {"event", "msg_id", "peer", "reason", "detail"} for e in events)
    net.pump()
    number = str(register(run, home)[req["request"]]["number"])

    results: list[Result] = []
    t = threading.Thread(target=lambda: results.append(run(
        "notice", "cancel", "--queue", "--home", home, "--as", "NCB-FR", number,
        "--wait", "20", "--json")), name="cli")
    t.start()
    while t.is_alive():
        net.pump(rounds=1)
        t.join(0.05)
    (result,) = results
    assert result.exit_code == 0, (result.output, result.stderr)
    cancel = json.loads(result.stdout)
    assert (cancel["target"], cancel["authority"], cancel["state"]) == (number, GS, "cancelled")


def test_a_request_that_times_out_still_prints_its_json(run: Run, home: Path) -> None:
    result = run("notice", "request", "--queue", "--home", home, "--as", "NCB-FR", "--colour",
                 "RED", "--subject", "John DOE", "--offence", "homicide", "--warrant", "W-1",
                 "--wait", "0.3", "--json")
    assert result.exit_code == 4 and "not delivered yet" in result.stderr
    assert json.loads(result.stdout)["state"] == "queued"
