"""The soak checker against planted faults: each history below is wrong in one way, and the
verdict must fail with the right words (and pass when nothing is wrong)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from i24net.config.home import Home
from i24net.ops.checker import CLASSES, Allowance, check, parse_history
from i24net.ops.history import Consumers, History, judge, record_outcomes
from i24net.store import SqliteNodeStore

A, B, C, X = "NCB-FR", "NCB-DE", "NCB-IT", "NCB-XX"


def mid(n: int) -> str:
    return f"{n:032x}"


def history(*body: dict[str, Any], end: bool = True) -> list[dict[str, Any]]:
    records = [{"op": "begin", "scenario": "test", "t": 0}, *body]
    if end:
        records.append({"op": "end", "t": 99, "submitted": sum(
            r["op"] == "submit" for r in body), "delivered": sum(
            r["op"] == "deliver" for r in body)})
    return records


def submit(n: int, to: tuple[str, ...] = (B,), expect: str = "delivered",
           t: int = 10) -> dict[str, Any]:
    return {"op": "submit", "id": mid(n), "sender": A, "to": list(to), "t": t,
            "expect": expect}


def deliver(n: int, agency: str = B, seq: int = 1, t: int = 20) -> dict[str, Any]:
    return {"op": "deliver", "id": mid(n), "agency": agency, "seq": seq, "t": t}


def outcome(n: int, state: str = "delivered", reason: str = "") -> dict[str, Any]:
    return {"op": "outcome", "id": mid(n), "state": state, "reason": reason, "t": 30}


def good(n: int, to: tuple[str, ...] = (B,)) -> list[dict[str, Any]]:
    return [submit(n, to), *(deliver(n, a) for a in to), outcome(n)]


def test_a_clean_run_passes_with_every_message_delivered_once() -> None:
    v = check(history(*good(1), *good(2, (B, C)), *good(3)))
    assert v.ok, v.failures
    assert v.submitted == 3 and v.counts["delivered"] == 3 and v.deliveries == 4
    assert sum(v.counts.values()) == 3 and set(v.counts) == set(CLASSES)
    assert v.latency_ms == {"p50": 10, "p99": 10, "max": 10}


def test_latency_runs_to_the_last_recipient_and_uses_nearest_rank() -> None:
    body = [submit(1, (B, C)), deliver(1, B, t=15), deliver(1, C, t=40), outcome(1)]
    for n in range(2, 101):  # latencies 2..100 ms, first hand-overs only
        body += [submit(n), deliver(n, t=10 + n), outcome(n)]
    v = check(history(*body))
    assert v.ok, v.failures
    assert v.latency_ms == {"p50": 50, "p99": 99, "max": 100}  # 2..100 and 30
    one = check(history(submit(1), deliver(1, t=17), outcome(1)))
    assert one.latency_ms == {"p50": 7, "p99": 7, "max": 7}


def test_a_submit_without_expect_is_expected_delivered() -> None:
    bare = {k: v for k, v in submit(1).items() if k != "expect"}
    assert check(history(bare, deliver(1), outcome(1))).ok
    v = check(history(bare, outcome(1, "refused", "r")))
    assert not v.ok and v.refused_unexpected == 1
    assert "expected delivered 1" in v.failures[0]


def test_counts_and_the_summary() -> None:
    body = [*good(1)]
    for n in (2, 3):
        body += [submit(n), outcome(n, "refused", "rate")]
    body += [submit(4, expect="refused:rate"), outcome(4, "refused", "rate")]
    body += [submit(5), outcome(5, "refused", "")]
    v = check(history(*body))
    assert (v.refused_expected, v.refused_unexpected) == (1, 3)
    assert v.refusal_reasons == {"rate": 3, "": 1}
    [failure] = v.failures
    assert failure.startswith("refused (unexpected): 3 message(s), by reason (no reason) 1, "
                              "rate 2; expected delivered 3 (")
    summary = v.summary()
    assert summary["ok"] is False and summary["submitted"] == 5
    assert summary["delivered"] == 1 and summary["refused"] == 4
    assert summary["refused_expected"] == 1 and summary["refused_unexpected"] == 3
    assert summary["refusal_reasons"] == {"": 1, "rate": 3}
    assert summary["deliveries"] == 1 and summary["unexpected"] == 0
    assert summary["failures"] == v.failures
    assert summary["ids"] == {"delivered": [mid(1)], "refused": [mid(2), mid(3), mid(4),
                                                                  mid(5)],
                              "refused_unexpected": [mid(2), mid(3), mid(5)]}
    assert json.loads(json.dumps(summary)) == summary


def test_a_failure_quotes_five_ids_and_counts_the_rest() -> None:
    body = [r for n in range(1, 9) for r in (submit(n), outcome(n))]
    [failure] = check(history(*body)).failures
    assert failure == (f"lost: 8 message(s) ({', '.join(mid(n) for n in range(1, 6))}, and "
                       "3 more)")


def test_a_message_submitted_twice_damages_the_history() -> None:
    v = check(history(*good(1), submit(1)))
    assert f"history damaged: message {mid(1)} submitted twice" in v.failures


def test_an_unknown_expectation_damages_the_history() -> None:
    v = check(history(submit(1, expect="deliverd"), deliver(1), outcome(1)))
    assert v.failures[0] == (f"history damaged: message {mid(1)} has the unknown "
                             "expectation 'deliverd'")
    assert not v.ok


def test_a_history_with_two_begin_records_is_damaged() -> None:
    records = history(*good(1))
    v = check([records[0], *records])
    assert v.failures == ["history damaged: more than one begin or end record"]


def test_a_lost_message_fails() -> None:
    v = check(history(*good(1), submit(2), outcome(2)))
    assert not v.ok and v.counts["lost"] == 1 and v.ids["lost"] == [mid(2)]
    assert any(f.startswith("lost: 1 message(s)") and mid(2) in f for f in v.failures)


def test_a_message_missing_at_one_of_its_recipients_is_lost() -> None:
    v = check(history(submit(1, (B, C)), deliver(1, B), outcome(1)))
    assert v.counts["lost"] == 1 and not v.ok


def test_a_duplicate_fails() -> None:
    v = check(history(*good(1), deliver(1, B, seq=2, t=40)))
    assert not v.ok and v.counts["duplicated"] == 1
    assert any(f.startswith("duplicated: 1") for f in v.failures)


def test_an_unexpected_refusal_fails_with_its_reason() -> None:
    v = check(history(*good(1), submit(2), outcome(2, "refused", "rate.limited")))
    assert not v.ok and v.counts["refused"] == 1 and v.refused_unexpected == 1
    assert v.refusal_reasons == {"rate.limited": 1}
    [failure] = v.failures
    assert failure.startswith("refused (unexpected): 1 message(s)")
    assert "rate.limited 1" in failure and "expected delivered 1" in failure


def test_an_all_refused_run_fails() -> None:
    """What a router refusing everything looks like: nothing lost, nothing duplicated, and
    still a failure."""
    body = [r for n in (1, 2, 3) for r in (submit(n), outcome(n, "refused", "policy.x"))]
    v = check(history(*body))
    assert not v.ok and v.counts["refused"] == 3 and v.counts["delivered"] == 0
    assert v.counts["lost"] == v.counts["duplicated"] == 0
    assert any(f.startswith("refused (unexpected): 3") for f in v.failures)


def test_an_expected_refusal_passes_and_only_with_its_reason() -> None:
    body = [submit(1, (X,), "refused:clearance.recipient"),
            outcome(1, "refused", "clearance.recipient")]
    assert check(history(*good(2), *body)).ok
    wrong = [submit(1, (X,), "refused:clearance.recipient"), outcome(1, "refused", "rate")]
    v = check(history(*good(2), *wrong))
    assert not v.ok and v.refused_unexpected == 1
    assert check(history(*good(2), submit(1, (X,), "refused"),
                         outcome(1, "refused", "anything"))).ok
    # a scenario may allow a reason for every message
    allow = Allowance(refusals=frozenset({"rate"}))
    assert check(history(*good(2), submit(1), outcome(1, "refused", "rate")), allow).ok


def test_a_message_expected_refused_but_delivered_is_misdelivered() -> None:
    """A recipient that is not cleared for the label must never see the message."""
    v = check(history(*good(1), submit(2, (X,), "refused:clearance.recipient"),
                      deliver(2, X), outcome(2)))
    assert not v.ok and v.counts["misdelivered"] == 1
    assert any(f.startswith("misdelivered: 1") for f in v.failures)


def test_a_delivery_to_an_agency_not_among_the_recipients_is_misdelivered() -> None:
    v = check(history(*good(1), deliver(1, X, seq=7)))
    assert not v.ok and v.counts["misdelivered"] == 1 and v.counts["delivered"] == 0


def test_a_delivery_never_submitted_is_unexpected() -> None:
    v = check(history(*good(1), deliver(9)))
    assert not v.ok and v.unexpected == 1
    assert any(f.startswith("unexpected: 1 message(s) delivered but never submitted")
               for f in v.failures)


def test_a_message_not_final_is_pending_unless_the_scenario_allows_it() -> None:
    body = [*good(1), submit(2), outcome(2, "sent")]
    v = check(history(*body))
    assert not v.ok and v.counts["pending"] == 1
    assert any(f.startswith("pending: 1") for f in v.failures)
    assert check(history(*body), Allowance(classes=frozenset({"pending"}))).ok


def test_an_expiry_fails_unless_expected() -> None:
    v = check(history(*good(1), submit(2), outcome(2, "expired")))
    assert not v.ok and v.counts["expired"] == 1
    assert check(history(*good(1), submit(2, expect="expired"), outcome(2, "expired"))).ok


def test_expect_any_leaves_the_fate_to_the_scenario_but_not_duplicates_or_losses() -> None:
    body = [submit(1, expect="any"), outcome(1, "refused", "r"), submit(2, expect="any"),
            outcome(2, "sent"), submit(3, expect="any"), deliver(3), outcome(3)]
    assert check(history(*body)).ok
    for bad, cls in (([deliver(1)], "misdelivered"), ([deliver(3, seq=2)], "duplicated")):
        v = check(history(*body, *bad))
        assert not v.ok and v.counts[cls] == 1, v.failures
    v = check(history(submit(4, expect="any"), outcome(4)))
    assert not v.ok and v.counts["lost"] == 1


def test_an_empty_run_fails() -> None:
    v = check(history())
    assert not v.ok and any(f.startswith("nothing submitted") for f in v.failures)


@pytest.mark.parametrize("cut, words", [
    (lambda data: data[:-7], "line 7 is incomplete"),  # cut inside the end record
    (lambda data: data[:data.rindex(b"{")], "no end record"),  # the end record gone
    (lambda data: data.replace(data.splitlines(keepends=True)[2], b""),
     "the end record counts 1 deliver records, the history holds 0"),  # a line cut out
    (lambda data: data.replace(b'"op":"deliver"', b'"op":"deliver",', 1),
     "line 3 is not a complete record"),
    (lambda data: b"", "does not start with a begin record"),
])
def test_a_truncated_history_fails(tmp_path: Path, cut: Any, words: str) -> None:
    path = tmp_path / "history.jsonl"
    with History(path, "test") as h:
        h.submit(bytes.fromhex(mid(1)), A, [B], t=10)
        h.deliver(bytes.fromhex(mid(1)), B, 1, 20)
        h.outcome(bytes.fromhex(mid(1)), "delivered")
        h.submit(bytes.fromhex(mid(2)), A, [B], t=10)
        h.outcome(bytes.fromhex(mid(2)), "refused", "r")
    data = path.read_bytes()
    assert len(data.splitlines()) == 7
    whole = judge(path, Allowance(refusals=frozenset({"r"})))
    assert whole.ok, whole.failures
    path.write_bytes(cut(data))
    v = judge(path, Allowance(refusals=frozenset({"r"})))
    assert not v.ok
    assert any(words in f for f in v.failures), v.failures


def test_parse_history_reads_records_up_to_the_damage() -> None:
    records, problems = parse_history(b'{"op":"begin"}\n[1]\n{"op":"end"}\n')
    assert records == [{"op": "begin"}] and problems == [
        "history damaged: line 2 is not a history record"]


def test_the_consumers_see_every_hand_over_repeats_included(tmp_path: Path) -> None:
    """The application consumer follows the node's hand-over log, not its inbox (one row per
    message) nor its audit log (buffered): a message handed over twice is a duplicate."""
    from i24net.core.node import InboxItem
    from i24net.shell.runtime import node_store_path

    home = Home(tmp_path / "home")
    home.init(_spec(), force=True)
    path = tmp_path / "history.jsonl"
    ids = [bytes([i]) * 16 for i in range(1, 4)]
    hist = History(path, "test")
    consumers = Consumers(home, [B, C], hist)
    assert consumers.poll() == 0  # no store yet: nothing, no error
    node_store_path(home, B).parent.mkdir(parents=True, exist_ok=True)
    with SqliteNodeStore(node_store_path(home, B)) as store, \
            SqliteNodeStore(node_store_path(home, A)) as sender:
        for i in ids:
            hist.submit(i, A, [B])
            item = InboxItem(i, A, "message", "UNCLASSIFIED", 3, "s", "", {}, 1, 2)
            store.inbox_put(item)
            _outbox(sender, i, B)
        hist.flush()
        assert consumers.poll() == 3 and consumers.cursors[B] == 3
        store.inbox_put(InboxItem(ids[0], A, "message", "UNCLASSIFIED", 3, "s", "", {}, 1, 5))
    consumers.stop()  # the last look finds the repeat
    assert record_outcomes(home, [A], hist) == 3
    hist.close()
    v = judge(path)
    assert v.counts["duplicated"] == 1 and v.counts["delivered"] == 2, v.summary()
    assert v.ids["duplicated"] == [ids[0].hex()]
    lines = [json.loads(x) for x in path.read_bytes().splitlines()]
    assert [r["seq"] for r in lines if r["op"] == "deliver"] == [1, 2, 3, 4]


def _outbox(store: SqliteNodeStore, msg_id: bytes, to: str) -> None:
    from i24net.core.node import OutboxEntry

    store.outbox_put(OutboxEntry(msg_id, b"raw", "message", 3, (to,), 1, 10**13, "delivered",
                                 "", {to: "delivered"}, 2, 0, "s"))


def _spec() -> str:
    from i24net.config.presets import preset_toml

    return preset_toml("demo")
